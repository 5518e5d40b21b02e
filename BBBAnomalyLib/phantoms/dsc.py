"""DSC digital reference object (DRO): a glioma in the MNI152 brain with known perfusion and leakage.

Why: there is no real glioma DSC series with ground truth, so the pipeline, the demo and the
validation sweeps run on this phantom. Every voxel is a partial-volume mixture of compartments
(CSF, GM, WM from the shipped FSL FAST maps; peritumoral edema, enhancing rim and necrotic core from
an ellipsoidal tumor in right deep white matter; pure arterial blood along a tube), each with literature
CBV/CBF. Concentrations add by volume fraction, one linear relaxivity serves artery and tissue alike
(so kH/ρ = 1 and CBV = ∫C/∫Ca for complete bolus passages), and the voxel signal is
S0·exp(-TE·ΔR2*(voxel)) with Rician noise. Within the 90 s window the AIF's steady-state tail makes
∫C/∫Ca 3-4 % lower than CBV (tissue lags the AIF by about one MTT); deconvolution does not have this bias.

Tissue values (ml/100 ml, ml/100 ml/min; MTT = CBV/CBF):
* GM 4.5 / 60 (MTT 4.5 s), WM 2.0 / 22 (5.5 s): the usual normal-brain values (PET, e.g. Leenders et
  al., Brain 1990;113:27-47: GM CBF about 50-60 and WM about 20-25 ml/100 ml/min, CBV about 4-5 vs 2-3;
  the values used by DSC simulation studies since Østergaard et al., MRM 1996).
* enhancing rim 10 / 100 (6 s): high-grade glioma rCBV about 5 x NAWM (Law et al., AJNR 2003;24:1989-1998),
  MTT prolonged by tortuous neovasculature.
* necrotic core 1.0 / 8 (7.5 s): little perfusion; edema 1.8 / 18 (6 s): slightly below WM
  (compression, extracellular water dilution).
* CSF 0. Arterial voxels: pure blood, CBV 100, their ΔR2* is the AIF; CBF and MTT are undefined (0).
Baseline S0 relative to WM (T2*-weighted GRE-EPI ordering CSF > core > edema > GM > rim > WM):
CSF 1.8, core 1.5, edema 1.3, GM 1.15, rim 1.1, WM 1.0, artery 1.2, with S0(WM) = 1000.

Leakage: Boxerman-Schmainda-Weisskoff model, ΔR2* += -K2·∫ΔR̄2*_ref with the reference the noiseless
mean curve of the non-tumor brain (returned as `leakage_reference`); K2 = `leakage`·(enhancing
fraction) + 0.1·`leakage`·(core fraction). Default 0.015 1/s: the uncorrected ∫ΔR2*/∫Ca of the rim is
~19 % below its leakage-free value over the default 90 s scan (asserted in Testing/test_phantom_dsc.py).
K2 is relative to its reference: the mean non-tumor brain curve holds only ~3 % blood, so its integral
is small and the K2 that gives a given bias correspondingly large.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.volume import Acquisition, Volume
from . import dsc_physics as phys
from .anatomy import load_anatomy

S0_WM = 1000.0  # baseline signal of pure white matter (arbitrary units); noise σ = S0_WM / snr
COMPARTMENTS = ("csf", "gm", "wm", "edema", "enhancing", "core")
LABELS = {"background": 0, "csf": 1, "gm": 2, "wm": 3, "edema": 4, "enhancing": 5, "core": 6, "artery": 7}
CORE_LEAKAGE_FRACTION = 0.1  # necrotic-core K2 relative to the enhancing rim's
# artery: a straight tube (MCA-branch-like, ascending posteriorly along the left insula), 2x2 voxels per slice
ARTERY_POINT_MM = np.array([-40.0, -8.0, 30.0])
ARTERY_DIRECTION = np.array([-0.1, -0.3, 1.0])
NAWM_MARGIN_MM = 20.0  # NAWM is at least this far outside the tumor+edema ellipsoid
_CHUNK = 65536  # voxels per signal chunk (fixed: the noise stream depends on it)


def default_tissues() -> dict[str, dict[str, float]]:
    """cbv [ml/100 ml], cbf [ml/100 ml/min], s0 [relative to WM] per compartment (see module docstring)."""
    return {
        "csf": {"cbv": 0.0, "cbf": 0.0, "s0": 1.8},
        "gm": {"cbv": 4.5, "cbf": 60.0, "s0": 1.15},
        "wm": {"cbv": 2.0, "cbf": 22.0, "s0": 1.0},
        "edema": {"cbv": 1.8, "cbf": 18.0, "s0": 1.3},
        "enhancing": {"cbv": 10.0, "cbf": 100.0, "s0": 1.1},
        "core": {"cbv": 1.0, "cbf": 8.0, "s0": 1.5},
        "artery": {"cbv": 100.0, "cbf": 0.0, "s0": 1.2},
    }


@dataclass
class DSCPhantomParameters:
    """Acquisition, physiology and geometry of the DSC DRO; all times in s, lengths in mm.

    snr: S0 of white matter / Rician σ (None or inf = noiseless). te: echo time. tr: repetition
    time (None = frame_interval). bolus_arrival: arrival of the AIF in the artery. tissue_delay: extra
    delay of all tissue vs the AIF; tumor_delay: further delay in the tumor only. dispersion: time
    constant of the exponential vascular dispersion kernel (all tissue, not the artery). leakage: K2 of
    the enhancing rim [1/s]. aif_peak: arterial peak ΔR2* [1/s]; 50 keeps arterial voxels at
    exp(-1.5) = 22 % of S0 at TE 30 ms (above the noise floor, so the AIF is measurable) — with one
    relaxivity for artery and tissue this makes tissue signal drops small (peak: GM ~4 %, WM ~2 %,
    rim ~7 %), the price of kH/ρ = 1 truth; raise it (and accept a saturating artery) for more
    tissue contrast.
    slices: number of axial slices in a slab centred on the tumor, 'all' (whole brain), or a
    (k_start, k_stop) pair of slice indices of the shipped 78-slice grid.
    tissues: overrides merged into :func:`default_tissues` (e.g. {"enhancing": {"cbv": 8.0}}).
    """

    snr: float | None = 50.0
    frame_interval: float = 1.5
    duration: float = 90.0
    bolus_arrival: float = 15.0
    te: float = 0.03
    tr: float | None = None
    tissue_delay: float = 0.0
    tumor_delay: float = 0.0
    dispersion: float = 0.0
    leakage: float = 0.015
    residue: str = "exponential"
    aif_peak: float = 50.0
    slices: int | str | tuple[int, int] = 12
    seed: int = 0
    tumor_center_mm: tuple[float, float, float] = (28.0, -12.0, 30.0)
    tumor_radii_mm: tuple[float, float, float] = (12.0, 15.0, 10.0)
    rim_thickness_mm: float = 4.0
    edema_thickness_mm: float = 6.0
    tissues: dict = field(default_factory=dict)
    dtype: str = "float32"


@dataclass
class DSCPhantom:
    """signal: 4D Volume (times, TE set); truth: cbv [ml/100 ml], cbf [ml/100 ml/min], mtt [s],
    delay [s], k2 [1/s], labels (see LABELS); masks: bool arrays (brain, tumor, enhancing, core, edema,
    nawm, aif, gm, wm, csf); aif: true arterial ΔR2* [1/s] at the frame times; leakage_reference: the
    BSW reference ΔR2* [1/s] the truth K2 refers to."""

    signal: Volume
    truth: dict[str, Volume]
    masks: dict[str, np.ndarray]
    aif: np.ndarray
    leakage_reference: np.ndarray
    params: DSCPhantomParameters

    @property
    def times(self) -> np.ndarray:
        return self.signal.times

    def write(self, out_dir) -> Path:
        """Write signal.nii.gz + signal.json (BIDS EchoTime, VolumeTiming), truth_<map>.nii.gz,
        mask_<name>.nii.gz, aif.tsv (time, AIF and leakage-reference ΔR2*) and phantom.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _save(self.signal.data.astype(np.float32), self.signal.affine, out / "signal.nii.gz", self.signal.frame_interval())
        sidecar = {"EchoTime": self.params.te, "VolumeTiming": [float(t) for t in self.times],
                   "AcquisitionDuration": self.params.frame_interval,
                   "Description": "BBBAnomaly DSC digital reference object (simulated)"}
        (out / "signal.json").write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
        for name, vol in self.truth.items():
            data = vol.data.astype(np.uint8 if name == "labels" else np.float32)
            _save(data, vol.affine, out / f"truth_{name}.nii.gz")
        for name, m in self.masks.items():
            _save(m.astype(np.uint8), self.signal.affine, out / f"mask_{name}.nii.gz")
        rows = ["time_s\taif_delta_r2s_per_s\tleakage_reference_delta_r2s_per_s"]
        rows += [f"{t:.4f}\t{a:.6g}\t{r:.6g}" for t, a, r in zip(self.times, self.aif, self.leakage_reference)]
        (out / "aif.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (out / "phantom.json").write_text(json.dumps(dataclasses.asdict(self.params), indent=1, default=str), encoding="utf-8")
        return out


def _save(data, affine, path, frame_interval=None):
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if frame_interval:
        img.header["pixdim"][4] = frame_interval
    nib.save(img, str(path))


# --- geometry ---------------------------------------------------------------------------------
def _slab(anat_shape, affine, p: DSCPhantomParameters) -> tuple[int, int]:
    nz = anat_shape[2]
    if p.slices == "all":
        return 0, nz
    if isinstance(p.slices, (tuple, list)):
        k0, k1 = int(p.slices[0]), int(p.slices[1])
    else:
        n = int(p.slices)
        kc = (np.linalg.inv(affine) @ np.r_[p.tumor_center_mm, 1.0])[2]
        k0 = int(np.clip(round(kc - n / 2), 0, max(nz - n, 0)))
        k1 = k0 + n
    if not 0 <= k0 < k1 <= nz:
        raise ValueError(f"slices must select a slab within 0..{nz}; got {p.slices!r}")
    return k0, k1


def _tumor_fractions(shape, affine, p: DSCPhantomParameters, supersample: int = 3):
    """Volume fractions (enhancing, core, edema) per voxel from 3^3 sub-voxel samples (smooth edges)."""
    c = np.asarray(p.tumor_center_mm, float)
    r = np.asarray(p.tumor_radii_mm, float)
    r_core = np.maximum(r - p.rim_thickness_mm, 0.0)
    r_edema = r + max(p.edema_thickness_mm, 0.0)
    out = np.zeros((3,) + tuple(shape), dtype=np.float32)
    inv = np.linalg.inv(affine)
    corners = np.array([[sx, sy, sz, 1.0] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    ijk = (inv @ (corners * np.r_[r_edema, 0.0] + np.r_[c, 1.0]).T)[:3].T
    lo = np.clip(np.floor(ijk.min(0)).astype(int) - 1, 0, shape)
    hi = np.clip(np.ceil(ijk.max(0)).astype(int) + 2, 0, shape)
    if np.any(hi <= lo):
        return out
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    off = (np.arange(supersample) + 0.5) / supersample - 0.5
    sub = np.stack(np.meshgrid(off, off, off, indexing="ij"), -1).reshape(-1, 3)
    pts = (grid[:, None, :] + sub[None]).reshape(-1, 3)
    xyz = pts @ affine[:3, :3].T + affine[:3, 3] - c

    def inside(radii):
        if np.any(radii <= 0):
            return np.zeros(len(xyz), bool)
        return ((xyz / radii) ** 2).sum(1) <= 1.0

    tumor, core, edema = inside(r), inside(r_core), inside(r_edema)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    for n, sel in enumerate((tumor & ~core, core, edema & ~tumor)):
        out[(n,) + box] = sel.reshape(len(grid), -1).mean(1).reshape(hi - lo)
    return out


def _artery_mask(brain: np.ndarray, affine) -> np.ndarray:
    """2x2 voxels per axial slice around the artery centreline, where all four lie in the brain."""
    mask = np.zeros(brain.shape, bool)
    inv = np.linalg.inv(affine)
    for k in range(brain.shape[2]):  # a loop over slices (<= 78), not voxels
        z = (affine @ np.array([0.0, 0.0, k, 1.0]))[2]
        p = ARTERY_POINT_MM + (z - ARTERY_POINT_MM[2]) / ARTERY_DIRECTION[2] * ARTERY_DIRECTION
        i, j = np.floor((inv @ np.r_[p, 1.0])[:2]).astype(int)
        if 0 <= i < brain.shape[0] - 1 and 0 <= j < brain.shape[1] - 1 and brain[i:i + 2, j:j + 2, k].all():
            mask[i:i + 2, j:j + 2, k] = True
    return mask


# --- generation -------------------------------------------------------------------------------
def _check(p: DSCPhantomParameters) -> None:
    if not phys.is_residue(p.residue):
        raise ValueError(f"residue must be one of {phys.RESIDUES}, got {p.residue!r}")
    if p.frame_interval <= 0 or p.duration < 2 * p.frame_interval or p.te <= 0:
        raise ValueError("need frame_interval > 0 s, duration >= 2 frames and te > 0 s")
    if p.snr is not None and not p.snr > 0:
        raise ValueError("snr must be > 0 (or None for a noiseless phantom)")
    if min(p.tissue_delay, p.tumor_delay + p.tissue_delay, p.dispersion) < 0:
        raise ValueError("delays and dispersion must be >= 0 s (tissue cannot see the bolus before the artery)")


def _tissue_table(p: DSCPhantomParameters) -> dict[str, dict[str, float]]:
    table = default_tissues()
    for name, values in p.tissues.items():
        if name not in table:
            raise ValueError(f"unknown tissue {name!r}; known: {sorted(table)}")
        table[name] = {**table[name], **values}
    return table


def make_dsc_phantom(params: DSCPhantomParameters | None = None, **overrides) -> DSCPhantom:
    """Build the DSC DRO (deterministic for a given seed). `overrides` replace fields of `params`.

    Cost: one fine-grid convolution per compartment (six), then per voxel a 6-term mixture, the BSW
    term, exp and Rician noise, in fixed chunks of voxels (float32, bounded temporaries).
    """
    p = dataclasses.replace(params or DSCPhantomParameters(), **overrides)
    _check(p)
    tissues = _tissue_table(p)
    dtype = np.dtype(p.dtype)
    anat = load_anatomy()
    k0, k1 = _slab(anat.shape, anat.affine, p)
    affine = anat.affine.copy()
    affine[:3, 3] += affine[:3, 2] * k0
    brain = np.array(anat.brain[:, :, k0:k1])
    shape = brain.shape
    anat_frac = anat.fractions[:, :, k0:k1]
    enh, core, edema = _tumor_fractions(shape, affine, p) * brain
    artery = _artery_mask(brain, affine)
    normal = 1.0 - enh - core - edema
    csf, gm, wm = (anat_frac[..., i] for i in range(3))
    frac = np.stack([csf * (normal + edema), gm * normal, wm * normal, edema * (gm + wm), enh, core], axis=-1)
    frac[artery] = 0.0

    idx = np.flatnonzero(brain)
    fv = frac.reshape(-1, len(COMPARTMENTS))[idx].astype(np.float64)
    art = artery.ravel()[idx].astype(np.float64)

    n_frames = int(round(p.duration / p.frame_interval))
    times = np.arange(n_frames) * p.frame_interval
    aif_fn = lambda t: phys.gamma_variate_aif(t, arrival=p.bolus_arrival, peak=p.aif_peak)  # noqa: E731
    aif = aif_fn(times)

    cbv = np.array([tissues[c]["cbv"] for c in COMPARTMENTS])  # ml/100 ml
    cbf = np.array([tissues[c]["cbf"] for c in COMPARTMENTS])  # ml/100 ml/min
    mtt = np.divide(cbv * 60.0, cbf, out=np.zeros_like(cbv), where=cbf > 0)  # s
    delay = np.full(len(COMPARTMENTS), float(p.tissue_delay))
    delay[[COMPARTMENTS.index("enhancing"), COMPARTMENTS.index("core")]] += p.tumor_delay
    curves = phys.tissue_concentration(times, aif_fn, cbv / 100.0, mtt, delay, p.dispersion, residue=p.residue)

    reference_voxels = (fv[:, 4] + fv[:, 5] == 0) & (art == 0)
    leakage_reference = fv[reference_voxels].mean(axis=0) @ curves
    leak_unit = phys.bsw_leakage(times, leakage_reference, 1.0)  # -∫ref, the term for K2 = 1/s
    k2 = p.leakage * (fv[:, 4] + CORE_LEAKAGE_FRACTION * fv[:, 5])
    s0_comp = np.array([tissues[c]["s0"] for c in COMPARTMENTS])
    s0 = S0_WM * (fv @ s0_comp + art * tissues["artery"]["s0"])

    rng = np.random.default_rng(p.seed)
    sigma = None if p.snr is None or not np.isfinite(p.snr) else S0_WM / p.snr
    data = np.zeros(shape + (n_frames,), dtype=dtype)
    flat = data.reshape(-1, n_frames)
    curves_t, aif_t, leak_t = (a.astype(dtype) for a in (curves, aif, leak_unit))
    for start in range(0, idx.size, _CHUNK):
        c = slice(start, start + _CHUNK)
        dr2 = fv[c].astype(dtype) @ curves_t
        dr2 += art[c, None].astype(dtype) * aif_t
        dr2 += k2[c, None].astype(dtype) * leak_t
        sig = phys.signal_from_delta_r2s(s0[c].astype(dtype), dr2, p.te)
        flat[idx[c]] = sig if sigma is None else phys.add_rician_noise(sig, sigma, rng)

    acq = Acquisition(echo_time=p.te, repetition_time=p.tr or p.frame_interval,
                      description="BBBAnomaly DSC digital reference object (simulated)",
                      extra={"phantom": "dsc_dro", "snr": p.snr, "seed": p.seed})
    signal = Volume(data, affine, times, acq)
    truth = _truth_maps(shape, idx, fv, art, k2, cbv, cbf, delay, tissues, affine)
    masks = _masks(shape, affine, brain, frac, enh, core, artery, p)
    return DSCPhantom(signal, truth, masks, aif, leakage_reference, p)


def _truth_maps(shape, idx, fv, art, k2, cbv, cbf, delay, tissues, affine) -> dict[str, Volume]:
    """Voxel truth of the mixture: CBV and CBF add by fraction, MTT = CBV/CBF (central volume
    theorem), delay is the flow-weighted mean of the compartments' delays."""
    v_cbv = fv @ cbv + art * tissues["artery"]["cbv"]
    v_cbf = fv @ cbf
    has_flow = v_cbf > 0
    v_mtt = np.divide(v_cbv * 60.0, v_cbf, out=np.zeros_like(v_cbv), where=has_flow)
    v_delay = np.divide(fv @ (cbf * delay), v_cbf, out=np.zeros_like(v_cbv), where=has_flow)
    v_label = np.argmax(np.concatenate([fv, art[:, None]], axis=1), axis=1) + 1
    maps = {"cbv": v_cbv, "cbf": v_cbf, "mtt": v_mtt, "delay": v_delay, "k2": k2, "labels": v_label}
    out = {}
    for name, values in maps.items():
        vol = np.zeros(int(np.prod(shape)), dtype=np.uint8 if name == "labels" else np.float32)
        vol[idx] = values
        out[name] = Volume(vol.reshape(shape), affine.copy())
    return out


def _masks(shape, affine, brain, frac, enh, core, artery, p) -> dict[str, np.ndarray]:
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    far_radii = np.asarray(p.tumor_radii_mm) + max(p.edema_thickness_mm, 0.0) + NAWM_MARGIN_MM
    far = (((xyz - np.asarray(p.tumor_center_mm)) / far_radii) ** 2).sum(1).reshape(shape) > 1.0
    part = {name: frac[..., i] for i, name in enumerate(COMPARTMENTS)}
    masks = {
        "brain": brain,
        "tumor": (enh + core >= 0.5) & ~artery,
        "enhancing": (enh >= 0.5) & ~artery,
        "core": (core >= 0.5) & ~artery,
        "edema": part["edema"] >= 0.5,
        "nawm": (part["wm"] >= 0.9) & far & ~artery,
        "aif": artery,
        "gm": part["gm"] >= 0.5,
        "wm": part["wm"] >= 0.5,
        "csf": part["csf"] >= 0.5,
    }
    return {k: np.asarray(v & brain, dtype=bool) for k, v in masks.items()}

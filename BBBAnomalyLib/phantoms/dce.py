"""DCE digital reference object (DRO): a leaky glioma in the MNI152 brain with known Ktrans, ve, vp.

Why: no real glioma DCE series comes with ground truth, so the pipeline, the demo, the RLS weights
and the validation run on this phantom. It shares the DSC phantom's anatomy and tumor geometry
(:mod:`.dsc`: FSL FAST CSF/GM/WM fractions, an ellipsoidal tumor in right deep white matter with
an enhancing rim, a necrotic core and peritumoral edema, an artery along the left insula) and adds
a vein (a tube along the midline, superior-sagittal-sinus-like). Each voxel is a partial-volume
mixture of compartments; concentrations add by volume fraction.

Tissue values (Ktrans [1/min], ve, vp, T10 [s] at 3 T, M0 relative to WM):
* GM 0.001 / 0.10 / 0.040 / 1.6 / 1.2 and WM 0.0005 / 0.10 / 0.015 / 1.1 / 1.0: intact BBB with a
  near-zero transfer constant (Heye et al., NeuroImage Clin 2014: Ktrans ~1e-3 min⁻¹ in normal
  brain), plasma volumes ~4 % and ~1.5 %.
* enhancing rim: Ktrans from 0.02 to 0.3 min⁻¹ in eight angular sectors (so a map has a range to
  follow), ve 0.35, vp 0.06, T10 1.5 s: high-grade glioma values (e.g. Larsson et al., MRM 2009).
* necrotic core 0.02 / 0.6 / 0.01 / 2.0: slow leakage into a large extravascular space.
* edema 0.002 / 0.30 / 0.015 / 1.5; CSF 0 / 0 / 0 / 4.0 (M0 1.4).
* artery: whole blood (vp = 1 - Hct, i.e. Cb = (1 - Hct)·Cp), T10 1.6 s (blood at 3 T); vein: the same
  blood, 6 s later and dispersed (exponential kernel, 4 s), i.e. what a sinus voxel sees.
* small vessels: 2 % of the normal brain voxels (a fixed pattern) hold a partial volume of blood
  (5-50 %), as cortical vessels do at 2 mm. Without them every normal curve would be a faint
  vp·Cp, and an autoencoder trained on normal brain would never have seen a vessel-shaped curve of
  large amplitude (real brains are full of them).
AIF: Parker 2006 population blood curve (``aif="parker"``) arriving at ``bolus_arrival``; the
tissue curves are extended Tofts (:mod:`.dce_physics`), the signal is SPGR with Rician noise.
``truth`` Ktrans/ve/vp of mixed voxels are the fraction-weighted means (exact for Ktrans and vp,
approximate for ve); accuracy is best judged in ``masks['pure']`` voxels (one compartment >= 90 %).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.volume import Acquisition, Volume
from . import dce_physics as phys
from .anatomy import load_anatomy
from .dsc import _artery_mask, _save, _slab, _tumor_fractions

M0_WM = 1000.0  # equilibrium magnetisation of pure WM (arbitrary units); noise σ = baseline WM signal / snr
N_SECTORS = 8
SECTOR_KTRANS = tuple(np.round(np.geomspace(0.02, 0.3, N_SECTORS), 4))  # [1/min]
COMPARTMENTS = ("csf", "gm", "wm", "edema", "core") + tuple(f"rim{i}" for i in range(N_SECTORS)) + ("artery", "vein")
LABELS = {"background": 0, "csf": 1, "gm": 2, "wm": 3, "edema": 4, "enhancing": 5, "core": 6, "artery": 7, "vein": 8}
VEIN_X_MM, VEIN_Y_MM = 0.0, -60.0  # a vertical tube near the midline, posterior (sinus-like)
NAWM_MARGIN_MM = 20.0
SMALL_VESSEL_FRACTION = 0.02  # of the normal brain voxels
SMALL_VESSEL_BLOOD = (0.05, 0.5)  # blood volume fraction range in those voxels
GEOMETRY_SEED = 12345  # the small-vessel pattern does not change with the noise seed
_CHUNK = 65536


def default_tissues(hematocrit: float = 0.42) -> dict[str, dict[str, float]]:
    """ktrans [1/min], ve, vp, t10 [s], m0 (relative to WM) per tissue (see module docstring)."""
    blood = {"ktrans": 0.0, "ve": 0.0, "vp": 1.0 - hematocrit, "t10": 1.6, "m0": 1.1}
    return {
        "csf": {"ktrans": 0.0, "ve": 0.0, "vp": 0.0, "t10": 4.0, "m0": 1.4},
        "gm": {"ktrans": 0.001, "ve": 0.10, "vp": 0.040, "t10": 1.6, "m0": 1.2},
        "wm": {"ktrans": 0.0005, "ve": 0.10, "vp": 0.015, "t10": 1.1, "m0": 1.0},
        "edema": {"ktrans": 0.002, "ve": 0.30, "vp": 0.015, "t10": 1.5, "m0": 1.3},
        "core": {"ktrans": 0.02, "ve": 0.60, "vp": 0.010, "t10": 2.0, "m0": 1.3},
        "rim": {"ktrans": float("nan"), "ve": 0.35, "vp": 0.060, "t10": 1.5, "m0": 1.15},  # Ktrans per sector
        "artery": dict(blood), "vein": dict(blood),
    }


@dataclass
class DCEPhantomParameters:
    """Acquisition, physiology and geometry; times in s, lengths in mm.

    snr: baseline WM signal / Rician σ (None = noiseless). duration / frame_interval: the
    acquisition (3-10 min at 1-10 s per frame in the validation). flip_angle [deg], tr [s],
    relaxivity r1 [1/(s·mM)], hematocrit. tumor_delay: extra bolus delay of the tumor [s].
    slices: axial slab size centred on the tumor, 'all', or (k_start, k_stop).
    dose: the AIF's scale (1 = the population curve). te [s]: simulate the blood's T2* at this echo time (None:
    off, the object as before); blood_r2star: its (linear [1/(s·mM)], quadratic [1/(s·mM²)]) coefficients, None =
    those of ``field_strength`` [T] (:data:`BBBAnomalyLib.dce.aif_t2star.BLOOD_R2STAR`; 3 T where None, as the
    object's T10s); te and field_strength are written into the acquisition's metadata when given."""

    snr: float | None = 40.0
    frame_interval: float = 5.0
    duration: float = 300.0
    bolus_arrival: float = 30.0
    flip_angle: float = 15.0
    tr: float = 0.005
    relaxivity: float = 4.5
    hematocrit: float = 0.42
    aif: str = "parker"
    tumor_delay: float = 0.0
    vein_delay: float = 6.0
    slices: int | str | tuple[int, int] = 12
    seed: int = 0
    tumor_center_mm: tuple[float, float, float] = (28.0, -12.0, 30.0)
    tumor_radii_mm: tuple[float, float, float] = (14.0, 16.0, 12.0)
    rim_thickness_mm: float = 6.0
    edema_thickness_mm: float = 6.0
    tissues: dict = field(default_factory=dict)
    dose: float = 1.0
    te: float | None = None
    field_strength: float | None = None
    blood_r2star: tuple[float, float] | None = None


@dataclass
class DCEPhantom:
    """signal: 4D SPGR Volume (times, flip angle, TR set); truth: ktrans, kep [1/min], ve, vp, t10 [s],
    labels; masks: brain, tumor, enhancing, core, edema, leaky, nawm, aif, vein, vessels, gm, wm, csf,
    pure; aif: plasma Cp [mM] at the frame times; concentration: (x, y, z, T) noiseless Ct [mM]."""

    signal: Volume
    truth: dict[str, Volume]
    masks: dict[str, np.ndarray]
    aif: np.ndarray
    concentration: Volume
    params: DCEPhantomParameters

    @property
    def times(self) -> np.ndarray:
        return self.signal.times

    def write(self, out_dir) -> Path:
        """signal.nii.gz + signal.json (BIDS FlipAngle, RepetitionTime, VolumeTiming), truth_<map>,
        mask_<name>, aif.tsv (time, plasma Cp) and phantom.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        p = self.params
        _save(self.signal.data.astype(np.float32), self.signal.affine, out / "signal.nii.gz", p.frame_interval)
        sidecar = {"FlipAngle": p.flip_angle, "RepetitionTime": p.tr, "VolumeTiming": [float(t) for t in self.times],
                   "Description": "BBBAnomaly DCE digital reference object (simulated)"}
        sidecar.update({key: value for key, value in (("EchoTime", p.te), ("MagneticFieldStrength", p.field_strength))
                        if value is not None})
        (out / "signal.json").write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
        for name, vol in self.truth.items():
            _save(vol.data.astype(np.uint8 if name == "labels" else np.float32), vol.affine, out / f"truth_{name}.nii.gz")
        for name, m in self.masks.items():
            _save(m.astype(np.uint8), self.signal.affine, out / f"mask_{name}.nii.gz")
        rows = ["time_s\tplasma_aif_mM"] + [f"{t:.4f}\t{a:.6g}" for t, a in zip(self.times, self.aif)]
        (out / "aif.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (out / "phantom.json").write_text(json.dumps(dataclasses.asdict(p), indent=1, default=str), encoding="utf-8")
        return out


def _vein_mask(brain: np.ndarray, affine) -> np.ndarray:
    """2x2 voxels per axial slice around a vertical line, where all four lie in the brain."""
    mask = np.zeros(brain.shape, bool)
    inv = np.linalg.inv(affine)
    for k in range(brain.shape[2]):  # a loop over slices, not voxels
        z = (affine @ np.array([0.0, 0.0, k, 1.0]))[2]
        i, j = np.floor((inv @ np.array([VEIN_X_MM, VEIN_Y_MM, z, 1.0]))[:2]).astype(int)
        if 0 <= i < brain.shape[0] - 1 and 0 <= j < brain.shape[1] - 1 and brain[i:i + 2, j:j + 2, k].all():
            mask[i:i + 2, j:j + 2, k] = True
    return mask


def _small_vessels(candidates: np.ndarray) -> np.ndarray:
    """Blood volume fraction per voxel: a fixed random 2 % of the candidates get 5-50 % blood."""
    rng = np.random.default_rng(GEOMETRY_SEED)
    out = np.zeros(candidates.shape, np.float32)
    idx = np.flatnonzero(candidates)
    chosen = rng.choice(idx, int(SMALL_VESSEL_FRACTION * idx.size), replace=False) if idx.size else idx
    out.flat[chosen] = rng.uniform(*SMALL_VESSEL_BLOOD, chosen.size)
    return out


def _sectors(shape, affine, center) -> np.ndarray:
    """Angular sector (0..N_SECTORS-1) of each voxel around the tumor centre in the axial plane."""
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3] - np.asarray(center)
    angle = np.arctan2(xyz[:, 1], xyz[:, 0])
    return (np.floor((angle + np.pi) / (2 * np.pi) * N_SECTORS).astype(int) % N_SECTORS).reshape(shape)


def _tissue_table(p: DCEPhantomParameters) -> dict:
    table = default_tissues(p.hematocrit)
    for name, values in p.tissues.items():
        if name not in table:
            raise ValueError(f"unknown tissue {name!r}; known: {sorted(table)}")
        table[name] = {**table[name], **values}
    return table


def make_dce_phantom(params: DCEPhantomParameters | None = None, **overrides) -> DCEPhantom:
    """Build the DCE DRO (deterministic for a given seed). ``overrides`` replace fields of ``params``."""
    p = dataclasses.replace(params or DCEPhantomParameters(), **overrides)
    if p.frame_interval <= 0 or p.duration < 8 * p.frame_interval:
        raise ValueError("need frame_interval > 0 s and at least 8 frames")
    if p.snr is not None and not p.snr > 0:
        raise ValueError("snr must be > 0 (or None for a noiseless phantom)")
    if not p.dose > 0 or (p.te is not None and not 0 < p.te < 0.1):
        raise ValueError("need dose > 0 and te None or in (0, 0.1) s")
    tissues = _tissue_table(p)
    anat = load_anatomy()
    k0, k1 = _slab(anat.shape, anat.affine, p)
    affine = anat.affine.copy()
    affine[:3, 3] += affine[:3, 2] * k0
    brain = np.array(anat.brain[:, :, k0:k1])
    shape = brain.shape
    frac_anat = anat.fractions[:, :, k0:k1]
    enh, core, edema = _tumor_fractions(shape, affine, p) * brain
    artery = _artery_mask(brain, affine)
    vein = _vein_mask(brain, affine) & ~artery
    normal = 1.0 - enh - core - edema
    csf, gm, wm = (frac_anat[..., i] for i in range(3))
    sector = _sectors(shape, affine, p.tumor_center_mm)
    rims = [enh * (sector == s) for s in range(N_SECTORS)]
    frac = np.stack([csf * (normal + edema), gm * normal, wm * normal, edema * (gm + wm), core, *rims,
                     np.zeros(shape), np.zeros(shape)], axis=-1).astype(np.float32)
    small = _small_vessels(brain & (enh + core + edema == 0) & ~artery & ~vein)
    frac *= (1.0 - small)[..., None]
    frac[..., COMPARTMENTS.index("artery")] += small  # same blood as the artery: no delay at this scale
    vessels = artery | vein
    frac[vessels] = 0.0
    frac[artery, COMPARTMENTS.index("artery")] = 1.0
    frac[vein, COMPARTMENTS.index("vein")] = 1.0

    def prop(key):
        vals = []
        for c in COMPARTMENTS:
            if c.startswith("rim"):
                vals.append(SECTOR_KTRANS[int(c[3:])] if key == "ktrans" else tissues["rim"][key])
            else:
                vals.append(tissues[c][key])
        return np.array(vals, dtype=np.float64)

    ktrans, ve, vp, t10, m0 = (prop(k) for k in ("ktrans", "ve", "vp", "t10", "m0"))
    n_frames = int(round(p.duration / p.frame_interval))
    times = np.arange(n_frames) * p.frame_interval
    cp = phys.plasma_aif(p.aif, p.bolus_arrival, p.hematocrit)
    if p.dose != 1.0:
        cp = _scaled(cp, p.dose)
    delay = np.zeros(len(COMPARTMENTS))
    for c in ("core",) + tuple(f"rim{i}" for i in range(N_SECTORS)):
        delay[COMPARTMENTS.index(c)] = p.tumor_delay
    curves = phys.tissue_concentration(times, cp, ktrans, np.where(ve > 0, ve, 1.0), vp, delay)
    # the vein: the arterial blood curve dispersed by an exponential kernel and delayed
    disp = 4.0
    fine = np.arange(0.0, times[-1] + 0.05, 0.05)
    kernel = np.exp(-fine / disp) * (0.05 / disp)
    venous = np.convolve(cp(fine - p.vein_delay), kernel)[: fine.size] * (1.0 - p.hematocrit)
    curves[COMPARTMENTS.index("vein")] = np.interp(times, fine, venous)

    idx = np.flatnonzero(brain)
    fv = frac.reshape(-1, len(COMPARTMENTS))[idx].astype(np.float64)
    v_t10 = 1.0 / (fv @ (1.0 / t10))  # R1 adds by volume fraction (fast exchange)
    v_m0 = M0_WM * (fv @ m0)
    wm_signal = float(phys.spgr_signal(M0_WM, np.array([1.0 / tissues["wm"]["t10"]]), p.flip_angle, p.tr)[0])
    sigma = None if p.snr is None or not np.isfinite(p.snr) else wm_signal / p.snr
    rng = np.random.default_rng(p.seed)
    blood_loss = _blood_t2star(p, fv, curves)  # None without te
    data = np.zeros(shape + (n_frames,), np.float32)
    conc = np.zeros(shape + (n_frames,), np.float32)
    flat, flat_c = data.reshape(-1, n_frames), conc.reshape(-1, n_frames)
    for start in range(0, idx.size, _CHUNK):  # chunks of voxels bound the temporaries
        c = slice(start, start + _CHUNK)
        ct = fv[c] @ curves
        r1 = 1.0 / v_t10[c, None] + p.relaxivity * ct
        sig = phys.spgr_signal(v_m0[c], r1, p.flip_angle, p.tr)
        if blood_loss is not None:
            sig = sig * blood_loss[c]
        sig = sig.astype(np.float32)
        flat[idx[c]] = sig if sigma is None else phys.add_rician_noise(sig, sigma, rng)
        flat_c[idx[c]] = ct
    acq = Acquisition(repetition_time=p.tr, flip_angle=p.flip_angle, echo_time=p.te, field_strength=p.field_strength,
                      description="BBBAnomaly DCE digital reference object (simulated)",
                      extra={"phantom": "dce_dro", "snr": p.snr, "seed": p.seed})
    signal = Volume(data, affine, times, acq)
    truth_values = {"ktrans": fv @ ktrans, "ve": fv @ ve, "vp": fv @ vp, "t10": v_t10}
    truth_values["kep"] = np.divide(truth_values["ktrans"], truth_values["ve"],
                                    out=np.zeros(idx.size), where=truth_values["ve"] > 1e-6)
    label_of = np.array([LABELS["csf"], LABELS["gm"], LABELS["wm"], LABELS["edema"], LABELS["core"]]
                        + [LABELS["enhancing"]] * N_SECTORS + [LABELS["artery"], LABELS["vein"]])
    truth_values["labels"] = label_of[np.argmax(fv, axis=1)]
    truth = {}
    for name, values in truth_values.items():
        vol = np.zeros(int(np.prod(shape)), np.uint8 if name == "labels" else np.float32)
        vol[idx] = values
        truth[name] = Volume(vol.reshape(shape), affine.copy())
    pure = np.zeros(int(np.prod(shape)), bool)
    pure[idx] = fv.max(axis=1) >= 0.9
    masks = _masks(shape, affine, brain, frac, enh, core, edema, artery, vein, truth["ktrans"].data, p)
    masks["small_vessels"] = (small >= 0.25) & brain
    masks["vessels"] = masks["vessels"] | masks["small_vessels"]
    masks["pure"] = pure.reshape(shape) & brain
    return DCEPhantom(signal, truth, masks, cp(times), Volume(conc, affine.copy(), times), p)


def _scaled(cp, dose: float):
    return lambda t_s: dose * cp(t_s)


def _blood_t2star(p: DCEPhantomParameters, fv: np.ndarray, curves: np.ndarray) -> np.ndarray | None:
    """exp(-TE·Σ f·ΔR2*(Cb)) per brain voxel and frame over its blood compartments (artery, small vessels, vein), or
    None where ``p.te`` is None. curves: (compartments, T) concentrations; a blood compartment's is whole blood's."""
    if p.te is None:
        return None
    from ..dce.aif_t2star import blood_delta_r2star, blood_r2star_coefficients

    coefficients = p.blood_r2star if p.blood_r2star is not None else blood_r2star_coefficients(p.field_strength)
    rate = np.zeros((fv.shape[0], curves.shape[1]))
    for name in ("artery", "vein"):
        k = COMPARTMENTS.index(name)
        rate += fv[:, k, None] * blood_delta_r2star(curves[k], coefficients)[None, :]
    return np.exp(-p.te * rate)


def _masks(shape, affine, brain, frac, enh, core, edema, artery, vein, ktrans, p) -> dict[str, np.ndarray]:
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    far_radii = np.asarray(p.tumor_radii_mm) + max(p.edema_thickness_mm, 0.0) + NAWM_MARGIN_MM
    far = (((xyz - np.asarray(p.tumor_center_mm)) / far_radii) ** 2).sum(1).reshape(shape) > 1.0
    vessels = artery | vein
    masks = {
        "brain": brain,
        "tumor": (enh + core >= 0.5) & ~vessels,
        "enhancing": (enh >= 0.5) & ~vessels,
        "core": (core >= 0.5) & ~vessels,
        "edema": (edema >= 0.5) & ~vessels,
        "leaky": (ktrans >= 0.01) & ~vessels,  # tumor voxels whose Ktrans is at least half the lowest sector's
        "nawm": (frac[..., COMPARTMENTS.index("wm")] >= 0.9) & far & ~vessels,
        "aif": artery,
        "vein": vein,
        "vessels": vessels,
        "gm": frac[..., COMPARTMENTS.index("gm")] >= 0.5,
        "wm": frac[..., COMPARTMENTS.index("wm")] >= 0.5,
        "csf": frac[..., COMPARTMENTS.index("csf")] >= 0.5,
    }
    return {k: np.asarray(v & brain, dtype=bool) for k, v in masks.items()}

"""Session 24: the DCE pipeline on view-shared series (Siemens TWIST, GE DISCO, keyhole / Philips 4D-TRAK).

The DCE reference object (``make_dce_phantom``, 4 slices, seed 1, noiseless) is re-acquired by
:func:`BBBAnomalyLib.phantoms.dce_viewshare.view_shared` with complex noise per acquisition, once fully sampled and
once view-shared with the SAME noise draws and the same stated frame times, and each series goes through ``run_dce``
(extended Tofts, the object's brain mask and true T10 map; the same function ``bbbanomaly dce`` calls: ``--cli``
repeats a few rows through the command line and prints both) with the drawn arterial mask, ``--aif auto`` and the
Parker AIF. Per row: rim (enhancing) Ktrans / ve / vp ROI means (% from the truth's mean over the rim), NAWM
Ktrans and vp means (absolute), rim r of Ktrans with the true Ktrans, the AIF peak (% from the true plasma peak)
and its arrival (the 10 % rise, s, against the truth's), for ``auto`` the share of the chosen voxels inside the
drawn artery, and with the mask the RLS map (``--rls bundled``, the default weights ``dce-rls-world``): its rim r
with the true Ktrans and its leaky-vs-not AUC (issue 14's metrics). ``d`` columns: view-shared minus fully sampled.

    OMP_NUM_THREADS=1 python scripts/validate_dce_viewshare.py                  # the sweep (about 4 min on one core)
    OMP_NUM_THREADS=1 python scripts/validate_dce_viewshare.py --quick         # 6 rows
    OMP_NUM_THREADS=1 python scripts/validate_dce_viewshare.py --seed 2 --held  # the held-apart rows
    OMP_NUM_THREADS=1 python scripts/validate_dce_viewshare.py --ring           # streaks around the artery
    OMP_NUM_THREADS=1 python scripts/validate_dce_viewshare.py --deblur         # an oracle AIF deblurring
    OMP_NUM_THREADS=1 python scripts/validate_dce_viewshare.py --cli            # a few rows through the CLI
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from BBBAnomalyLib.core.errors import InputError  # noqa: E402
from BBBAnomalyLib.core.volume import Volume  # noqa: E402
from BBBAnomalyLib.dce.parameters import DCEParameters  # noqa: E402
from BBBAnomalyLib.dce.pipeline import run_dce  # noqa: E402
from BBBAnomalyLib.metrics import pearson_r, roc_auc  # noqa: E402
from BBBAnomalyLib.phantoms.dce import make_dce_phantom  # noqa: E402
from BBBAnomalyLib.phantoms.dce_viewshare import (ViewSharing, describe, sampling_regions, sharing_kernel,  # noqa: E402
                                                  view_shared)

SCHEMES = [ViewSharing("twist", 0.2, 3), ViewSharing("twist", 0.1, 5), ViewSharing("twist", 0.25, 2),
           ViewSharing("disco", 0.15, 4), ViewSharing("disco", 0.1, 3), ViewSharing("keyhole", 0.2),
           ViewSharing("twist", 0.2, 3, (1, 2))]
HELD = [ViewSharing("twist", 0.15, 4), ViewSharing("disco", 0.2, 3, pattern_seed=3), ViewSharing("twist", 0.1, 3),
        ViewSharing("keyhole", 0.1, keyhole_reference="first")]


def arrival(curve: np.ndarray, times: np.ndarray) -> float:
    """Time of the first 10 % rise (linear between frames), from the first frames' level to the peak."""
    base = float(np.mean(curve[:3]))
    level = base + 0.1 * (float(curve.max()) - base)
    k = int(np.argmax(curve >= level))
    if k == 0:
        return float(times[0])
    c0, c1 = curve[k - 1], curve[k]
    return float(times[k - 1] + (level - c0) / (c1 - c0) * (times[k] - times[k - 1]))


def run_one(ph, kind: str, rls: bool):
    params = DCEParameters(rls="bundled" if rls else "none", aif_auto=kind == "auto",
                           population_aif="parker" if kind == "parker" else None)
    t10 = Volume(ph.truth["t10"].data, ph.signal.affine)
    try:
        return run_dce(ph.signal, params, aif_mask=ph.masks["aif"] if kind == "mask" else None,
                       brain_mask=ph.masks["brain"], tumor_mask=ph.masks["tumor"] if rls else None, t10_map=t10), None
    except InputError as exc:
        return None, str(exc)


def metrics(ph, res, kind: str) -> dict:
    m, truth = ph.masks, ph.truth
    rim, nawm = m["enhancing"], m["nawm"]
    k = res.maps["ktrans"].data
    out = {f"{name} rim %": 100 * (float(res.maps[name].data[rim].mean()) / float(truth[name].data[rim].mean()) - 1)
           for name in ("ktrans", "ve", "vp")}
    out["ktrans NAWM"] = float(k[nawm].mean())
    out["vp NAWM"] = float(res.maps["vp"].data[nawm].mean())
    out["r rim"] = pearson_r(k, truth["ktrans"].data, rim)
    out["AIF peak %"] = 100 * (float(res.aif.max()) / float(ph.aif.max()) - 1)
    out["AIF arrival s"] = arrival(res.aif, res.times) - arrival(ph.aif, ph.times)
    if kind == "auto" and res.aif_mask is not None:
        chosen = res.aif_mask
        out["auto in artery"] = float((chosen & m["aif"]).sum() / max(chosen.sum(), 1))
        out["auto voxels"] = int(chosen.sum())
    if "rls" in res.maps:
        tissue = m["brain"] & ~m["vessels"]
        v = res.maps["rls"].data
        out["RLS r rim"] = pearson_r(v, truth["ktrans"].data, rim)
        out["RLS AUC"] = roc_auc(m["leaky"][tissue], v[tissue])
    out["warnings"] = [w[:140] for w in res.report["warnings"] if not w.startswith("ve was not determined")]
    return out


def rows(schemes, dts, snrs, seed: int, kinds, slices: int, log=print) -> list[dict]:
    table = []
    for dt in dts:
        clean = make_dce_phantom(slices=slices, snr=None, frame_interval=dt, seed=seed)
        for snr in snrs:
            full = view_shared(clean, None, snr=snr, seed=seed)
            reference = {}
            for sharing in [None, *schemes]:
                ph = full if sharing is None else view_shared(clean, sharing, snr=snr, seed=seed)
                for kind in kinds:
                    res, refused = run_one(ph, kind, rls=kind == "mask")
                    row = {"dt": dt, "snr": snr, "scheme": describe(sharing), "aif": kind}
                    if refused:
                        row["refused"] = refused
                    else:
                        row.update(metrics(ph, res, kind))
                        if sharing is None:
                            reference[kind] = row
                        elif kind in reference:
                            for key in ("ktrans rim %", "vp rim %", "ve rim %", "AIF peak %", "AIF arrival s",
                                        "r rim", "RLS r rim", "RLS AUC"):
                                if key in row and key in reference[kind]:
                                    row["d " + key] = row[key] - reference[kind][key]
                    table.append(row)
                    log(_line(row))
    return table


def _line(row: dict) -> str:
    if "refused" in row:
        return f"{row['dt']:g} s SNR {row['snr']} {row['scheme']:<28} {row['aif']:<6} REFUSED: {row['refused']}"
    parts = [f"{row['dt']:g} s SNR {row['snr']} {row['scheme']:<28} {row['aif']:<6}"]
    for key, fmt in (("ktrans rim %", "Kt {:+.1f}"), ("d ktrans rim %", "(d {:+.1f})"), ("ve rim %", "ve {:+.1f}"),
                     ("vp rim %", "vp {:+.1f}"), ("d vp rim %", "(d {:+.1f})"), ("ktrans NAWM", "KtNAWM {:.4f}"),
                     ("vp NAWM", "vpNAWM {:.4f}"), ("r rim", "r {:.3f}"), ("AIF peak %", "peak {:+.1f}"),
                     ("d AIF peak %", "(d {:+.1f})"), ("AIF arrival s", "arr {:+.2f}"),
                     ("auto in artery", "inArt {:.2f}"), ("auto voxels", "n {}"),
                     ("RLS r rim", "RLSr {:.3f}"), ("RLS AUC", "AUC {:.3f}")):
        if key in row:
            parts.append(fmt.format(row[key]))
    if row.get("warnings"):
        parts.append(f"W{len(row['warnings'])}")
    return " ".join(parts)


def cli_check(seed: int, slices: int, log=print) -> None:
    """A few rows through ``bbbanomaly dce`` itself: the same numbers as run_dce (a check of the harness)."""
    clean = make_dce_phantom(slices=slices, snr=None, frame_interval=4.0, seed=seed)
    for sharing in (None, ViewSharing("twist", 0.1, 5)):
        ph = view_shared(clean, sharing, snr=40.0, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            ph.write(tmp)
            for kind, args in (("mask", ["--aif-mask", f"{tmp}/mask_aif.nii.gz"]), ("auto", ["--aif", "auto"]),
                               ("parker", ["--population-aif", "parker"])):
                out = Path(tmp) / f"out_{kind}"
                cmd = [sys.executable, "-m", "BBBAnomalyLib", "dce", f"{tmp}/signal.nii.gz", "--mask",
                       f"{tmp}/mask_brain.nii.gz", "--t10", f"{tmp}/truth_t10.nii.gz", "--rls", "none",
                       "--out", str(out), "--quiet", *args]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    log(f"CLI {describe(sharing)} {kind}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
                    continue
                import nibabel as nib

                k = np.asarray(nib.load(out / "ktrans.nii.gz").dataobj)
                rim = ph.masks["enhancing"]
                api, _ = run_one(ph, kind, rls=False)
                log(f"CLI {describe(sharing):<18} {kind:<6} rim Ktrans mean CLI {k[rim].mean():.5f} "
                    f"run_dce {api.maps['ktrans'].data[rim].mean():.5f}; warnings "
                    f"{len(json.loads((out / 'report.json').read_text())['warnings'])}")


def periphery_share(clean, sharing: ViewSharing, mask: np.ndarray) -> float:
    """The share of ``mask``'s mean enhancement (the bolus peak frame less the first) that its periphery B carries:
    the oracle e of obs = (1 - e)·s + e·W s. Exact for the noiseless object (the transform is linear)."""
    peak = int(np.argmax(clean.signal.data[mask].mean(0)))
    change = (clean.signal.data[..., peak] - clean.signal.data[..., 0]).astype(np.complex128)
    axes = sharing.phase_axes
    labels = sampling_regions(tuple(change.shape[a] for a in axes), sharing)
    labels = np.broadcast_to(labels.reshape([change.shape[a] if a in axes else 1 for a in range(3)]), change.shape)
    outer = np.fft.ifftn(np.where(labels >= 0, np.fft.fftn(change, axes=axes), 0), axes=axes).real
    return float(outer[mask].sum() / change[mask].real.sum())


def deblurred(ph, clean, sharing: ViewSharing):
    """The series with each arterial voxel's curve deblurred by the known sharing kernel and the oracle e (a
    measurement of what a correction could do at best; not offered by the pipeline)."""
    e = periphery_share(clean, sharing, ph.masks["aif"])
    n = ph.signal.data.shape[-1]
    blend = (1.0 - e) * np.eye(n) + e * sharing_kernel(n, sharing)
    data = ph.signal.data.copy()
    rows = data[ph.masks["aif"]].astype(np.float64)
    data[ph.masks["aif"]] = np.linalg.solve(blend, rows.T).T.astype(np.float32)
    signal = Volume(data, ph.signal.affine, ph.signal.times, ph.signal.acquisition)
    return type(ph)(signal, ph.truth, ph.masks, ph.aif, ph.concentration, ph.params), e


def ring_rows(schemes, dts, seed: int, slices: int, log=print) -> None:
    """Streaks at the artery: the peak enhancement of the voxels 1-2 voxels around it (in-plane), shared against
    fully sampled, beside the artery's own (noiseless)."""
    from scipy import ndimage

    for dt in dts:
        clean = make_dce_phantom(slices=slices, snr=None, frame_interval=dt, seed=seed)
        artery = clean.masks["aif"]
        ring = ndimage.binary_dilation(artery, np.ones((5, 5, 1), bool)) & ~artery & clean.masks["brain"]
        full = clean.signal.data
        peak = int(np.argmax(full[artery].mean(0)))
        for sharing in schemes:
            shared = view_shared(clean, sharing, snr=None).signal.data
            rel = lambda d, m: (d[m][:, peak] - d[m][:, 0])  # noqa: E731
            a = rel(shared, artery).mean() / rel(full, artery).mean()
            change = np.abs(rel(shared, ring) - rel(full, ring)) / rel(full, artery).mean()
            log(f"{dt:g} s {describe(sharing):<28} artery peak enhancement x{a:.3f}; ring (1-2 voxels) |change| "
                f"median {100 * np.median(change):.1f} % max {100 * change.max():.1f} % of the artery's enhancement; "
                f"periphery share e {periphery_share(clean, sharing, artery):.2f}")


def deblur_rows(schemes, dts, snrs, seed: int, slices: int, log=print) -> list[dict]:
    table = []
    for dt in dts:
        clean = make_dce_phantom(slices=slices, snr=None, frame_interval=dt, seed=seed)
        for snr in snrs:
            full = view_shared(clean, None, snr=snr, seed=seed)
            ref = metrics(full, run_one(full, "mask", rls=False)[0], "mask")
            for sharing in schemes:
                ph = view_shared(clean, sharing, snr=snr, seed=seed)
                fixed, e = deblurred(ph, clean, sharing)
                for label, series in (("shared", ph), ("deblurred", fixed)):
                    res, refused = run_one(series, "mask", rls=False)
                    row = {"dt": dt, "snr": snr, "scheme": describe(sharing), "aif": f"mask {label}", "e": e}
                    if refused:
                        row["refused"] = refused
                    else:
                        row.update(metrics(series, res, "mask"))
                        for key in ("ktrans rim %", "vp rim %", "ve rim %", "AIF peak %"):
                            row["d " + key] = row[key] - ref[key]
                    table.append(row)
                    log(_line(row) + f" e {e:.2f}")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--held", action="store_true", help="the held-apart schemes (HELD) at 3 and 5 s")
    parser.add_argument("--cli", action="store_true", help="only the command-line check")
    parser.add_argument("--dts", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument("--snrs", type=float, nargs="+", default=[40.0, 20.0])
    parser.add_argument("--kinds", nargs="+", default=["mask", "auto", "parker"])
    parser.add_argument("--deblur", action="store_true", help="the oracle AIF deblurring (drawn mask only)")
    parser.add_argument("--ring", action="store_true", help="streaks around the artery (noiseless)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.cli:
        cli_check(args.seed, args.slices)
        return 0
    if args.ring:
        ring_rows(SCHEMES, args.dts, args.seed, args.slices)
        return 0
    if args.deblur:
        table = deblur_rows([s for s in SCHEMES if s.scheme != "keyhole"], args.dts, args.snrs, args.seed, args.slices)
    elif args.quick:
        table = rows(SCHEMES[:2], [4.0], [40.0], args.seed, args.kinds, args.slices)
    elif args.held:
        table = rows(HELD, [3.0, 5.0], [30.0], args.seed, args.kinds, args.slices)
    else:
        table = rows(SCHEMES, args.dts, args.snrs, args.seed, args.kinds, args.slices)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

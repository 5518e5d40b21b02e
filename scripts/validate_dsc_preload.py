"""Session 24: DSC acquired after a preload (or after the DCE series, whose dose is the preload).

Builds the DSC reference object with and without a preload (BBBAnomalyLib/phantoms/dsc_preload.py: a full or quarter
dose 3, 5 or 8 min before the bolus; the rim's extravascular T2* share 0.5 or 0), runs `bbbanomaly dsc` on each
(through the command line's own entry point, in this process: the object's arterial mask and `--aif auto`; oSVD and
PHAE; BSW leakage correction and none) and prints per run: exit code (and the refusal's line), ROI-mean CBV/CBF in GM,
WM and the enhancing rim against truth, the rim/NAWM rCBV ratio against truth, the mean fitted K2 in the rim, and the
warnings that are not the ordinary run's. Also the series-kind margins of each series' brain-mean curve.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python scripts/validate_dsc_preload.py [--quick] [--json out.json]

About 8 min on one core (--quick: SNR 50, seed 2, oSVD and PHAE with the arterial mask: 1 min).

    .venv/bin/python scripts/validate_dsc_preload.py --kinds

instead measures the shape rules for ΔR2* input and dual-echo ratios (perfusion/series_kind.py,
check_dsc_concentration_curve): their quantities on session 23's ordinary DSC settings, given as ΔR2* and as a
dual-echo pair, and which rule fires on series of the wrong kind (session 23's, as ΔR2* and as echo pairs; a DCE
concentration series; a signal series given as ΔR2*; ΔR2* with its sign reversed; swapped echoes). About 2 min.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from BBBAnomalyLib.cli import main as cli_main  # noqa: E402
from BBBAnomalyLib.perfusion import series_kind as sk  # noqa: E402
from BBBAnomalyLib.phantoms.dsc_preload import Preload, make_preloaded_dsc_phantom, preload_terms  # noqa: E402

PRELOADS = {  # name -> Preload (None: the ordinary object)
    "none": None,
    "full 5 min": Preload(1.0, 5.0),
    "full 3 min": Preload(1.0, 3.0),
    "full 8 min": Preload(1.0, 8.0),
    "quarter 5 min": Preload(0.25, 5.0),
    "full 5 min, T2* share 0": Preload(1.0, 5.0, t2s_share=0.0),
}
RUNS = [("osvd", "mask", "bsw"), ("osvd", "mask", "none"), ("osvd", "auto", "bsw"),
        ("phae", "mask", "bsw"), ("phae", "mask", "none"), ("phae", "auto", "bsw")]


def margins(phantom) -> dict:
    """The series-kind rules' quantities on the brain-mean curve (scripts/series_kind_measure.py's)."""
    curve = phantom.signal.data[phantom.masks["brain"]].astype(np.float64).mean(axis=0)
    n, skip = curve.size, 1
    s = sk.curve_shape(curve, skip, skip + max(3, n // 10), "drop")
    drop, rise = float(s.drop.max()), float(s.rise[max(3, n // 10):].max())
    tail = float(np.median(s.drop[-max(1, s.drop.size // 4):]))
    return {"drop_sd": round(drop / s.sigma, 1), "rise_over_drop": round(rise / drop, 3),
            "tail_over_drop": round(tail / drop, 3), "level_drift_pct": round(100 * (np.median(curve[-5:]) /
                                                                                      np.median(curve[1:6]) - 1), 3)}


def decomposition(preload: Preload) -> dict:
    """Noiseless: each preload term's share of the uncorrected ∫ΔR2* (baseline frames [1, 10) subtracted, as the
    pipeline does) of the rim, GM and the arterial mask, relative to the ordinary object's; and the rim's CBV bias
    as ∫C/∫Ca (the AIF's change divides)."""
    from scipy.integrate import trapezoid

    clean, p, idx, terms = preload_terms(preload)
    times, base = clean.times, slice(1, 10)
    flat = clean.signal.data.reshape(-1, times.size)[idx].astype(np.float64)
    ordinary = -np.log(flat / flat[:, base].mean(axis=1, keepdims=True)) / p.te
    out = {}
    for roi in ("enhancing", "gm", "aif"):
        rows = clean.masks[roi].ravel()[idx]
        area = trapezoid(ordinary[rows].mean(axis=0), times)
        for name, term in terms.items():
            curve = term[rows].mean(axis=0)
            out[f"{roi}:{name}"] = round(100 * trapezoid(curve - curve[base].mean(), times) / area, 2)
    for roi in ("enhancing", "gm"):
        tissue = 1 + sum(out[f"{roi}:{n}"] for n in terms) / 100
        artery = 1 + sum(out[f"aif:{n}"] for n in terms) / 100
        out[f"{roi}:cbv_bias_pct"] = round(100 * (tissue / artery - 1), 2)
    return out


def run_one(folder: Path, method: str, aif: str, leakage: str) -> tuple[int, str, dict | None]:
    args = ["dsc", str(folder / "signal.nii.gz"), "--mask", str(folder / "mask_brain.nii.gz"),
            "--nawm-mask", str(folder / "mask_nawm.nii.gz"), "--tumor-mask", str(folder / "mask_tumor.nii.gz"),
            "--kh", "1", "--density", "1", "--method", method, "--leakage-correction", leakage,
            "--out", str(folder / f"out_{method}_{aif}_{leakage}"), "--overwrite"]
    args += ["--aif-mask", str(folder / "mask_aif.nii.gz")] if aif == "mask" else ["--aif", "auto"]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli_main(args)
    if rc != 0:
        return rc, err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "", None
    return rc, "", json.loads((folder / f"out_{method}_{aif}_{leakage}" / "report.json").read_text())


def roi_means(folder: Path, out: str, phantom) -> dict:
    import nibabel as nib

    def load(name):
        return np.asarray(nib.load(str(folder / out / f"{name}.nii.gz")).dataobj)

    cbv_name = "cbv_corrected" if (folder / out / "cbv_corrected.nii.gz").exists() else "cbv"
    cbv, cbf = load(cbv_name), load("cbf")
    m = phantom.masks
    row = {}
    for roi, mask in (("gm", m["gm"]), ("wm", m["wm"]), ("rim", m["enhancing"])):
        row[f"cbv_{roi}"] = float(cbv[mask].mean())
        row[f"cbf_{roi}"] = float(cbf[mask].mean())
    row["rim_nawm_rcbv"] = float(cbv[m["enhancing"]].mean() / cbv[m["nawm"]].mean())
    if (folder / out / "k2.nii.gz").exists():
        row["k2_rim"] = float(load("k2")[m["enhancing"]].mean())
    return row


def truth_means(phantom) -> dict:
    cbv, cbf, m = phantom.truth["cbv"].data, phantom.truth["cbf"].data, phantom.masks
    row = {}
    for roi, mask in (("gm", m["gm"]), ("wm", m["wm"]), ("rim", m["enhancing"])):
        row[f"cbv_{roi}"] = float(cbv[mask].mean())
        row[f"cbf_{roi}"] = float(cbf[mask].mean())
    row["rim_nawm_rcbv"] = float(cbv[m["enhancing"]].mean() / cbv[m["nawm"]].mean())
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--snr", type=float, nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--kinds", action="store_true", help="part 2: the ΔR2* and dual-echo shape rules")
    a = parser.parse_args()
    if a.kinds:
        return kinds()
    snrs = a.snr or ([50.0] if a.quick else [50.0, 20.0])
    runs = [r for r in RUNS if r[1] == "mask" and r[2] == "bsw"] if a.quick else RUNS
    results = []
    for name, preload in PRELOADS.items():
        if preload is not None:
            parts = decomposition(preload)
            results.append({"decomposition": name, **parts})
            print(f"noiseless decomposition, preload {name} (% of the ordinary uncorrected area): {parts}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for snr in snrs:
            ordinary_warnings = {}
            for name, preload in PRELOADS.items():
                phantom = make_preloaded_dsc_phantom(preload or Preload(dose_fraction=0.0), snr=snr, seed=a.seed)
                folder = Path(tmp) / f"snr{snr:g}_{name.replace(' ', '_').replace(',', '')}"
                phantom.write(folder)
                truth = truth_means(phantom)
                shape = margins(phantom)
                print(f"\n== SNR {snr:g}, preload {name}: series-kind margins {shape}", flush=True)
                print("   truth " + " ".join(f"{k} {v:.3g}" for k, v in truth.items()), flush=True)
                for method, aif, leakage in runs:
                    rc, refusal, report = run_one(folder, method, aif, leakage)
                    label = f"{method} {aif} {leakage}"
                    row = {"snr": snr, "preload": name, "method": method, "aif": aif, "leakage": leakage, "rc": rc,
                           "margins": shape, "truth": truth}
                    if rc != 0:
                        row["refusal"] = refusal
                        print(f"   {label}: REFUSED (exit {rc}): {refusal[:200]}", flush=True)
                    else:
                        values = roi_means(folder, f"out_{method}_{aif}_{leakage}", phantom)
                        short = [re.sub(r"[-0-9.]+", "#", w)[:70] for w in report["warnings"]]
                        if name == "none":
                            ordinary_warnings[label] = set(short)
                        new = [w for w in short if w not in ordinary_warnings.get(label, set())]
                        row.update(values=values, new_warnings=new, baseline=report["baseline"]["baseline_frames"])
                        rel = " ".join(f"{k} {v:.3g}({v / truth[k]:.2f}x)" for k, v in values.items() if k in truth)
                        extra = f" k2_rim {values['k2_rim']:.4f}" if "k2_rim" in values else ""
                        print(f"   {label}: {rel}{extra} baseline {row['baseline']} new warnings {new}", flush=True)
                    results.append(row)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


# --- part 2: ΔR2* input and dual-echo ratios checked by shape ----------------------------------------------------
ORDINARY = ([dict(snr=snr) for snr in (5, 10, 20, 50, 100, None)]
            + [dict(frame_interval=fi, snr=20) for fi in (0.5, 1.0, 2.0, 3.0)]
            + [dict(duration=d, snr=20) for d in (45.0, 60.0, 180.0)]
            + [dict(te=te, snr=20) for te in (0.02, 0.045, 0.08)]
            + [dict(bolus_arrival=b, snr=20) for b in (4.0, 40.0)]
            + [dict(leakage=k, snr=20) for k in (0.0, 0.05, -0.01)]
            + [{"snr": 20, **e} for e in (dict(tissue_delay=6.0), dict(tissue_delay=12.0), dict(dispersion=2.0),
                                          dict(aif_peak=100.0), dict(aif_peak=30.0, snr=5), dict(slices=4, snr=5),
                                          dict(residue="gamma"), dict(seed=3, snr=10), dict(seed=4, snr=50, frame_interval=1.0),
                                          dict(frame_interval=1.0, duration=180.0, bolus_arrival=5.0),
                                          dict(frame_interval=0.5, duration=120.0, bolus_arrival=5.0),
                                          dict(frame_interval=2.0, duration=180.0, bolus_arrival=6.0),
                                          dict(frame_interval=1.0, duration=120.0, bolus_arrival=3.0))])


def user_delta_r2s(signal: np.ndarray, te: float, stop: int) -> np.ndarray:
    """ΔR2* = -ln(S/S0)/TE as another tool would hand it over (S0: the mean of frames [1, stop))."""
    s = np.maximum(signal.astype(np.float64), 1e-3)
    s0 = s[..., 1:stop].mean(axis=-1, keepdims=True)
    return -np.log(s / s0) / te


def echo_pair(s0: np.ndarray, delta: np.ndarray, te1: float, te2: float, snr, rng, swap=False):
    """Two echoes of a series whose ΔR2* is ``delta`` (the second at 0.6 x the first's S0); Rician noise."""
    echoes = [s0[..., None] * np.exp(-te * delta) * (1.0 if k == 0 else 0.6) for k, te in enumerate((te1, te2))]
    if snr:
        sigma = 1000.0 / snr
        echoes = [np.hypot(e + rng.normal(0, sigma, e.shape), rng.normal(0, sigma, e.shape)) for e in echoes]
    return echoes[::-1] if swap else echoes


def kind_margins(curve: np.ndarray, skip: int = 1, dual: bool = False) -> str:
    n = curve.size
    s = sk.curve_shape(curve, skip, skip + max(3, n // 10), "rise")
    rise, dip = float(s.rise.max()), float(s.drop[max(3, n // 10):].max())
    tail = float(np.median(s.rise[-max(1, s.rise.size // 4):]))
    a, z = sk.alternating_part(curve[skip:])
    largest = max(rise, float(s.drop.max()))
    ep = max(len(sk.episodes(x)) if s.stands_out(x) else 0 for x in (s.rise, s.drop))
    try:
        sk.check_dsc_concentration_curve(curve, skip, dual_echo=dual)
        fired = "-"
    except Exception as exc:  # InputError: the rule's line
        fired = "FIRED: " + str(exc)[:120]
    return (f"alt z {z:5.1f} |a|/largest {abs(a) / largest if largest else 0:.3f} rise/sd {rise / s.sigma if s.sigma else np.inf:7.1f} "
            f"dip/rise {dip / rise if rise > 0 else np.inf:5.2f} tail/rise {tail / rise if rise > 0 else np.inf:5.2f} episodes {ep} | {fired}")


def kinds() -> int:
    from BBBAnomalyLib.dsc.conversion import dual_echo_detection_curve
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    rng = np.random.default_rng(0)
    fired = total = 0
    for setting in ORDINARY:
        kw = {"slices": 6, **setting}
        p = make_dsc_phantom(**kw)
        brain = p.masks["brain"]
        stop = max(3, int(p.params.bolus_arrival / p.params.frame_interval))
        conc = user_delta_r2s(p.signal.data[brain], p.params.te, stop).mean(axis=0)
        clean = make_dsc_phantom(**{**kw, "snr": None}).signal.data[brain]
        delta = user_delta_r2s(clean, p.params.te, stop)
        s0 = clean[:, 1:stop].mean(axis=1)
        e1, e2 = echo_pair(s0, delta, p.params.te / 2, 1.5 * p.params.te, setting.get("snr"), rng)
        dual = dual_echo_detection_curve(e1, e2, p.params.te / 2, 1.5 * p.params.te)
        for label, curve, is_dual in (("ΔR2*", conc, False), ("dual echo", dual, True)):
            line = kind_margins(curve, 1, is_dual)
            total += 1
            fired += "FIRED" in line
            print(f"ordinary {label} {setting}: {line}", flush=True)
    print(f"ordinary: fired on {fired} of {total}", flush=True)

    spec = __import__("importlib.util").util.spec_from_file_location(
        "series_kind_series", str(Path(__file__).resolve().parent / "series_kind_series.py"))
    series = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(series)
    dsc = make_dsc_phantom(slices=4, snr=50, seed=1)
    brain = dsc.masks["brain"]
    for name, vol in series.unusual().items():
        conc = user_delta_r2s(vol.data[brain], 0.03, 4).mean(axis=0)
        print(f"wrong kind, as ΔR2*: {name}: {kind_margins(conc)}", flush=True)
    dce = make_dce_phantom(slices=4, snr=40, seed=1)
    print(f"wrong kind: the DCE object's concentration (mM) as ΔR2*: "
          f"{kind_margins(dce.concentration.data[dce.masks['brain']].astype(np.float64).mean(axis=0))}")
    print(f"wrong kind: the DSC signal given as ΔR2*: {kind_margins(dsc.signal.data[brain].astype(np.float64).mean(axis=0))}")
    conc = user_delta_r2s(dsc.signal.data[brain], 0.03, 9)
    print(f"wrong kind: ΔR2* with its sign reversed: {kind_margins(-conc.mean(axis=0))}")
    for cut in (12, 14, 40):
        print(f"wrong kind: DSC ΔR2* starting at {dsc.times[cut]:.0f} s: {kind_margins(conc[:, cut:].mean(axis=0))}")
    clean = make_dsc_phantom(slices=4, snr=None, seed=1).signal.data[brain]
    delta = user_delta_r2s(clean, 0.03, 9)
    s0 = clean[:, 1:9].mean(axis=1)
    gm = dsc.masks["gm"][brain].astype(float)
    pairs = {"swapped echoes": (s0, delta, True),
             "BOLD 2 % blocks": (s0, np.repeat(-np.log(1 + 0.02 * gm[:, None] * ((np.arange(100) * 2.0 // 20) % 2)[None, :]) / 0.03, 1, axis=0), False),
             "static (no contrast)": (s0, np.zeros((s0.size, 60)), False),
             "ASL or diffusion (M0 changes cancel in the ratio)": (s0, np.zeros((s0.size, 60)), False),
             "DSC starting at 21 s": (s0, delta[:, 14:], False)}
    for name, (base, d, swap) in pairs.items():
        e1, e2 = echo_pair(base, d, 0.015, 0.045, 50, rng, swap=swap)
        if name.startswith("ASL"):
            label = 1.0 - 0.01 * (np.arange(60) % 2)
            e1, e2 = e1 * label, e2 * label
        curve = dual_echo_detection_curve(e1, e2, 0.015, 0.045)
        print(f"wrong kind, dual echo: {name}: {kind_margins(curve, 1, True)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

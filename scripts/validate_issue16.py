"""Numbers for docs/validation.md ("DCE: two-compartment models, T1 mapping, population and automatic AIFs").

    python scripts/validate_issue16.py [--json docs/figures/issue16_validation.json]   (~3 min on 2 busy cores)

Everything here is simulated or an OSIPI reference; no real DCE series exists in this project.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from BBBAnomalyLib.dce.exchange import ExchangeModel, exchange_curves
from BBBAnomalyLib.perfusion.population_aif import georgiou_aif, mcgrath_aif, parker_aif
from BBBAnomalyLib.t1map.vfa import fit_vfa_linear, fit_vfa_nonlinear

DATA = Path(__file__).resolve().parents[1] / "Testing" / "Data" / "osipi"
csv.field_size_limit(1 << 28)
TOL = {"vp": (0.025, 0.0), "ve": (0.05, 0.0), "fp": (5.0, 0.1), "ps": (0.005, 0.1), "delay": (1.0, 0.0)}


def osipi_exchange() -> dict:
    out = {}
    for name, uptake in (("2cxm_sd_0.001_delay_0", False), ("2cxm_sd_0.001_delay_5", False),
                         ("2cum_sd_0.0025_delay_0", True), ("2cum_sd_0.0025_delay_5", True)):
        with gzip.open(DATA / f"{name}.csv.gz", "rt", newline="") as f:
            rows = list(csv.DictReader(f))
        series = lambda r, k: np.array(r[k].split(), float)  # noqa: E731
        t, cp = series(rows[0], "t"), series(rows[0], "cp_aif")
        y = np.stack([series(r, "C_t") for r in rows])
        delayed = name.endswith("_5")
        names = ["vp", "fp", "ps"] + ([] if uptake else ["ve"]) + (["delay"] if delayed else [])
        ref = {k: np.array([float(r["arterial_delay" if k == "delay" else k]) for r in rows]) for k in names}
        entry = {}
        for label, iterations in (("linear only", 0), ("linear + LM", 40)):
            start = time.perf_counter()
            fit = ExchangeModel(cp, t, uptake=uptake, max_delay=8.0 if delayed else 0.0, delay_step=0.5,
                                iterations=iterations).fit(y)
            seconds = time.perf_counter() - start
            ok = np.ones(len(rows), bool)
            errors = {}
            for k in names:
                est = getattr(fit, k)
                atol, rtol = TOL[k]
                ok &= np.abs(est - ref[k]) <= atol + rtol * np.abs(ref[k])
                errors[k] = float(np.mean(np.abs(est - ref[k])))
            entry[label] = {"passed": int(ok.sum()), "cases": len(rows), "mean_abs_error": errors,
                            "seconds": round(seconds, 3)}
        out[name] = entry
    return out


def own_objects(n: int = 500) -> dict:
    """Parker AIF from 30 s, tissue 4 s later; Fp 0.1-1 /min, PS 0.02-0.2 /min, ve 0.1-0.5, vp 0.02-0.1."""
    out = {}
    rng = np.random.default_rng(7)
    truth = {"fp": rng.uniform(0.1, 1.0, n), "ps": rng.uniform(0.02, 0.2, n), "ve": rng.uniform(0.1, 0.5, n),
             "vp": rng.uniform(0.02, 0.1, n)}
    for model, uptake in (("2cxm", False), ("2cum", True)):
        for dt in (1.0, 2.0, 5.0):
            t = np.arange(0, 300.0 + dt / 2, dt)
            aif = parker_aif(t / 60, delay=0.5) / 0.58
            late = np.interp(t - 4.0, t, aif, left=0.0)
            clean = exchange_curves(late, t / 60, truth["fp"], truth["ps"], truth["ve"], truth["vp"], uptake=uptake)
            for noise in (0.0, 0.005, 0.02):
                y = clean + noise * np.random.default_rng(11).standard_normal(clean.shape)
                start = time.perf_counter()
                fit = ExchangeModel(aif, t, uptake=uptake, max_delay=8.0).fit(y)
                seconds = time.perf_counter() - start
                row = {}
                for k in ("fp", "ps", "vp") + (() if uptake else ("ve",)):
                    est = fit.fp / 100 if k == "fp" else getattr(fit, k)
                    rel = est / truth[k] - 1
                    row[k] = {"median_abs_rel_error": float(np.median(np.abs(rel))), "median_bias": float(np.median(rel))}
                row["delay_within_1s"] = float(np.mean(np.abs(fit.delay - 4.0) <= 1.0))
                row["ms_per_voxel"] = round(1000 * seconds / n, 3)
                out[f"{model} dt={dt:g}s noise={noise:g}mM"] = row
    return out


def t1_brain() -> dict:
    with open(DATA / "t1_brain_data.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fa = np.stack([np.array(r["FA"].split(), float) for r in rows])
    s = np.stack([np.array(r["s"].split(), float) for r in rows])
    tr = float(rows[0]["TR"].split()[0])
    ref = np.array([float(r["R1"]) for r in rows])
    out = {}
    for fit in (fit_vfa_linear, fit_vfa_nonlinear):
        _, r1 = fit(s, fa, tr)
        rel = r1 / ref - 1
        out[fit.__name__] = {"passed": int(np.sum(np.abs(r1 - ref) <= 0.05 + 0.05 * ref)), "cases": len(rows),
                             "median_abs_rel_error": float(np.median(np.abs(rel))),
                             "max_abs_rel_error": float(np.max(np.abs(rel)))}
    return out


def population_aifs() -> dict:
    out = {}
    for name, fn, file, seconds in (("parker", parker_aif, "ParkerAIF_ref.csv", False),
                                    ("georgiou", georgiou_aif, "GeorgiouAIF_ref.csv", False),
                                    ("mcgrath", mcgrath_aif, "preclinicalAIF_ref.csv", True),
                                    ("mcgrath (delays)", mcgrath_aif, "preclinicalAIF_ref_delay.csv", True)):
        groups = defaultdict(list)
        with open(DATA / file, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                groups[r["label"]].append((float(r["time"]), float(r["Cb"]), float(r.get("delay") or 0)))
        worst = 0.0
        for values in groups.values():
            t, cb, d = np.array(values).T
            scale = 60.0 if seconds else 1.0
            worst = max(worst, float(np.max(np.abs(fn(t / scale, delay=d[0] / scale) - cb))))
        out[name] = {"labels": len(groups), "max_abs_error_mM": worst}
    return out


def auto_aif(seeds=(101, 102, 103)) -> dict:
    from BBBAnomalyLib.dce import DCEParameters, run_dce
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    out = {}
    for seed in seeds:
        ph = make_dce_phantom(snr=40, slices=12, seed=seed)
        enh = ph.masks["enhancing"] & ph.masks["pure"]
        truth = np.median(ph.truth["ktrans"].data[enh])
        row = {}
        for label, kw, mask in (("auto", {"aif_auto": True}, None), ("drawn mask", {}, ph.masks["aif"]),
                                ("parker population", {"population_aif": "parker"}, None)):
            r = run_dce(ph.signal, DCEParameters(rls="none", **kw), aif_mask=mask, brain_mask=ph.masks["brain"],
                        t10_map=ph.truth["t10"])
            entry = {"aif_peak_ratio": float(r.aif.max() / ph.aif.max()),
                     "rim_ktrans_ratio": float(np.median(r.maps["ktrans"].data[enh]) / truth)}
            if label == "auto":
                entry["voxels"] = int(r.aif_mask.sum())
                entry["in_artery"] = int((r.aif_mask & ph.masks["aif"]).sum())
            row[label] = entry
        out[f"seed {seed}"] = row
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    results = {"osipi_exchange": osipi_exchange(), "own_objects": own_objects(), "t1_brain": t1_brain(),
               "population_aifs": population_aifs(), "auto_aif": auto_aif()}
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

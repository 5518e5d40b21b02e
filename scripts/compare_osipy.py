"""Side by side with osipy (PyPI `osipy` 0.1.4) on the OSIPI 2CXM/2CUM reference objects and the
OSIPI in vivo brain VFA data: cases within OSIPI's tolerances and run time, same inputs, same machine.

Run it with a Python >= 3.12 environment that has osipy (never needed by the tests):

    python3.12 -m venv /tmp/osipy-venv && /tmp/osipy-venv/bin/pip install osipy==0.1.4
    /tmp/osipy-venv/bin/python scripts/compare_osipy.py

This project's functions used here import numpy only, so they run in that environment too.
"""

from __future__ import annotations

import csv
import gzip
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / "Testing" / "Data" / "osipi"
csv.field_size_limit(1 << 28)
TOL = {"vp": (0.025, 0.0), "ve": (0.05, 0.0), "fp": (5.0, 0.1), "ps": (0.005, 0.1), "delay": (1.0, 0.0)}


def _load(name):
    with gzip.open(DATA / f"{name}.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    series = lambda r, k: np.array(r[k].split(), float)  # noqa: E731
    return rows, series(rows[0], "t"), series(rows[0], "cp_aif"), np.stack([series(r, "C_t") for r in rows])


def _passed(estimates: dict, rows, names) -> int:
    ok = np.ones(len(rows), bool)
    for k in names:
        ref = np.array([float(r["arterial_delay" if k == "delay" else k]) for r in rows])
        atol, rtol = TOL[k]
        ok &= np.abs(np.asarray(estimates[k], float) - ref) <= atol + rtol * np.abs(ref)
    return int(ok.sum())


def ours(name, uptake, delayed, t, cp, y):
    from BBBAnomalyLib.dce.exchange import ExchangeModel

    fit = ExchangeModel(cp, t, uptake=uptake, max_delay=8.0 if delayed else 0.0, delay_step=0.5).fit(y)
    return {"fp": fit.fp, "ps": fit.ps, "ve": fit.ve, "vp": fit.vp, "delay": fit.delay}


def theirs(name, uptake, delayed, t, cp, y):
    from osipy.dce.fitting import fit_model

    result = fit_model("2cum" if uptake else "2cxm", y[:, None, None, :], cp, t, fit_delay=delayed)
    maps = {k.lower(): np.asarray(getattr(v, "values", v), float).ravel() for k, v in result.parameter_maps.items()}
    # osipy reports PS in ml/100 ml/min; OSIPI's reference PS is in 1/min
    out = {"fp": maps["fp"], "ps": maps["ps"] / 100.0, "vp": maps["vp"], "ve": maps.get("ve", np.zeros(len(y)))}
    for key in ("delay", "arterial_delay", "t_delay", "delay_s"):
        if key in maps:
            out["delay"] = maps[key]
    return out


def t1_brain():
    from osipy.dce.t1_mapping import compute_t1_vfa

    from BBBAnomalyLib.t1map.vfa import fit_vfa_linear, fit_vfa_nonlinear

    with open(DATA / "t1_brain_data.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fa = np.stack([np.array(r["FA"].split(), float) for r in rows])
    s = np.stack([np.array(r["s"].split(), float) for r in rows])
    tr = float(rows[0]["TR"].split()[0])
    ref = np.array([float(r["R1"]) for r in rows])
    lines = []
    for method in ("linear", "nonlinear"):
        fit = fit_vfa_linear if method == "linear" else fit_vfa_nonlinear
        start = time.perf_counter()
        _, r1 = fit(s, fa[0], tr)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        res = compute_t1_vfa(method=method, signal=s[:, None, None, :], flip_angles=fa[0], tr=tr * 1000.0)
        theirs_s = time.perf_counter() - start
        t1 = np.asarray(res.t1_map.values, float).ravel() / 1000.0  # osipy: T1 in ms
        r1_theirs = 1.0 / t1
        for who, r1_, sec in (("bbbanomaly", r1, ours_s), ("osipy", r1_theirs, theirs_s)):
            passed = int(np.sum(np.abs(r1_ - ref) <= 0.05 + 0.05 * ref))
            lines.append(f"| T1 VFA {method} (brain, 76 voxels) | {who} | {passed}/76 | "
                         f"{np.nanmedian(np.abs(r1_ / ref - 1)):.2e} | {sec:.3f} |")
    return lines


def main():
    print("| reference object | library | within OSIPI tolerance | median abs rel. error (T1) | seconds |")
    print("|---|---|---|---|---|")
    for name, uptake in (("2cxm_sd_0.001_delay_0", False), ("2cxm_sd_0.001_delay_5", False),
                         ("2cum_sd_0.0025_delay_0", True), ("2cum_sd_0.0025_delay_5", True)):
        rows, t, cp, y = _load(name)
        delayed = name.endswith("_5")
        names = ["vp", "fp", "ps"] + ([] if uptake else ["ve"]) + (["delay"] if delayed else [])
        for who, fn in (("bbbanomaly", ours), ("osipy", theirs)):
            start = time.perf_counter()
            try:
                est = fn(name, uptake, delayed, t, cp, y)
                passed = f"{_passed(est, rows, [n for n in names if n in est])}/{len(rows)}"
                if delayed and "delay" not in est:
                    passed += " (no delay map)"
            except Exception as exc:  # report, do not hide, what the peer does with this input
                passed = f"error: {type(exc).__name__}: {str(exc)[:80]}"
            print(f"| {name} | {who} | {passed} | | {time.perf_counter() - start:.2f} |")
    for line in t1_brain():
        print(line)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Accuracy of the DSC perfusion pipeline on the DSC digital reference object (simulated data).

What it measures
----------------
Every deconvolution method of ``run_dsc`` -- sSVD, cSVD, oSVD with the simulation oscillation-index
target 0.035 *and* the in-vivo default 0.095, Tikhonov -- is run on the DSC phantom of
``BBBAnomalyLib.phantoms.dsc`` (``make_dsc_phantom``) with its own truth maps, using what a user
would give: the phantom's arterial mask as the AIF, its brain mask, its NAWM mask (for rCBV) and
its tumor mask (excluded from the BSW reference). kH = 1 and density = 1, because the phantom's
truth is unit-less ml/100 ml (one relaxivity for artery and tissue).

Per tissue (GM, WM and the enhancing tumor rim, the phantom's >= 50 % partial-volume masks):
  * relative bias of CBF, CBV and MTT, two ways: the ratio of means (the bias of an ROI
    average, ``100·(mean est / mean truth - 1)``) and the voxelwise mean relative error
    (``100·mean((est - truth)/truth)``);
  * CBV without (``cbv``) and with (``cbv_corrected``) BSW leakage correction -- in the rim this
    is the key leakage number;
and over all brain voxels except the arterial ones, Lin's concordance correlation (CCC) of each
map with its truth (MTT: voxels with truth CBF > 0).

Sweeps (noise realisations: ``--seeds`` seeds, reported as mean ± sd across seeds):
  main        SNR None (noiseless, one realisation) / 100 / 50 / 20 / 10  x  frame interval 1.0 / 1.5 / 2.0 s
  delay       tissue delay 0..4 s at frame interval 1.5 s (noiseless and SNR 50): sSVD's delay sensitivity
  dispersion  vascular dispersion time constant 0..3 s (SNR 50)
  leakage     BSW K2 of the rim 0..2 x the phantom default (SNR 50), with and without correction
The phantom defaults (duration 90 s, TE 30 ms, exponential residue, 12-slice slab) hold elsewhere.

Outputs
-------
  OUT/dsc_validation.md     the tables (markdown), ready to paste into docs/validation.md
  OUT/dsc_validation.json   every number: one record per (phantom, method, correction) run,
                            the aggregated tables, the settings, the machine and the run time
  FIGURES/dsc_bias_vs_snr.png   CBF / CBV bias vs SNR per method (frame interval 1.5 s)
  FIGURES/dsc_maps_snr50.png    truth vs estimate maps, one slice through the tumor, SNR 50
  FIGURES/dsc_sweeps.png        CBF bias vs delay and dispersion; rim CBV vs leakage
  (FIGURES = docs/figures for the full sweep, OUT/figures with --quick; see --figures)

Examples
--------
  python scripts/validate_dsc.py                      # full sweep (about 1.5-2 min on 2 cores)
  python scripts/validate_dsc.py --quick --out /tmp/v # reduced sweep (under a minute)
  python scripts/validate_dsc.py --jobs 1 --seeds 5   # one process, more noise realisations

Everything here is simulated: see docs/validation.md for what the phantom does and does not model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

from BBBAnomalyLib.core.report import machine_description  # noqa: E402

#: label -> DSCParameters overrides
METHODS = {
    "sSVD": {"method": "ssvd"},
    "cSVD": {"method": "csvd"},
    "oSVD 0.035": {"method": "osvd", "osvd_oi_target": 0.035},
    "oSVD 0.095": {"method": "osvd", "osvd_oi_target": 0.095},
    "Tikhonov": {"method": "tikhonov"},
}
TISSUES = ("gm", "wm", "enhancing")
TISSUE_NAMES = {"gm": "GM", "wm": "WM", "enhancing": "rim"}
FULL = dict(snrs=[None, 100, 50, 20, 10], intervals=[1.0, 1.5, 2.0], delays=[0.0, 1.0, 2.0, 3.0, 4.0],
            dispersions=[0.0, 1.0, 2.0, 3.0], leakage_scales=[0.0, 0.5, 1.0, 1.5, 2.0])
QUICK = dict(snrs=[None, 50, 10], intervals=[1.5], delays=[0.0, 2.0, 4.0], dispersions=[0.0, 2.0],
             leakage_scales=[0.0, 1.0, 2.0])
SWEEP_SNR = 50.0  # SNR of the delay / dispersion / leakage sweeps
SWEEP_INTERVAL = 1.5  # frame interval of the sweeps [s] (the phantom default)
MAP_SNR, MAP_INTERVAL, MAP_SEED = 50.0, 1.5, 0  # the run shown in the map figure
S0_WM = 1000.0  # the phantom's white-matter baseline signal: noise σ = S0_WM / snr (phantoms.dsc docstring)


# --- one phantom, all methods -------------------------------------------------------------------
def phantom_key(cfg: dict) -> tuple:
    return tuple(sorted(cfg.items()))


def pre_aif_baseline(params) -> tuple[int, int]:
    """Baseline frames [1, k) with every frame strictly before the phantom's AIF arrival: what a user
    would type as ``--baseline-frames`` after looking at the arterial curve."""
    stop = int(np.ceil(params.bolus_arrival / params.frame_interval - 1e-9))
    return (1, max(stop, 3))


def contrast(ph) -> dict:
    """Noiseless peak signal drop and peak ΔR2* of the mean curve of each tissue and of the artery."""
    te = ph.params.te
    out = {}
    for name in TISSUES + ("aif",):
        curve = ph.signal.data[ph.masks[name]].mean(axis=0, dtype=np.float64)
        base = curve[1:pre_aif_baseline(ph.params)[1]].mean()
        drop = 1.0 - curve.min() / base
        out[name] = {"s0": float(base), "peak_signal_drop": float(drop), "peak_delta_r2s": float(-np.log(1 - drop) / te)}
    return out


def evaluate(cfg: dict, variants, keep_maps: bool = False) -> dict:
    """Build one phantom (cfg: make_dsc_phantom overrides) and run every method on it, once per
    variant (correction 'bsw'/'none', baseline 'auto'/'pre-aif').

    Returns {"config", "phantom_s", "runs": [record, ...], ...; "maps" when keep_maps}.
    """
    from BBBAnomalyLib import metrics
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    t0 = time.perf_counter()
    ph = make_dsc_phantom(**cfg)
    phantom_s = time.perf_counter() - t0
    m = ph.masks
    truth = {k: ph.truth[k].data for k in ("cbv", "cbf", "mtt")}
    tissue = {t: m[t] & ~m["aif"] for t in TISSUES}
    ccc_mask = m["brain"] & ~m["aif"]
    mtt_mask = ccc_mask & (truth["cbf"] > 0)
    runs, maps = [], {}
    for correction, baseline in sorted(variants):
        for label, overrides in METHODS.items():
            params = DSCParameters(kh=1.0, density=1.0, leakage_correction=correction,
                                   baseline_frames=pre_aif_baseline(ph.params) if baseline == "pre-aif" else None,
                                   **overrides)
            t1 = time.perf_counter()
            res = run_dsc(ph.signal, params, aif_mask=m["aif"], brain_mask=m["brain"], nawm_mask=m["nawm"],
                          tumor_mask=m["tumor"])
            seconds = time.perf_counter() - t1
            est = {k: v.data for k, v in res.maps.items()}
            fit = res.extras["fit"]
            reg = np.zeros(m["brain"].shape, np.float32)
            reg[res.brain_mask] = fit.regularisation
            unmet = np.zeros(m["brain"].shape, bool)
            unmet[res.brain_mask] = fit.unmet
            at_edge = (reg >= 0.999) if overrides["method"] == "tikhonov" else unmet
            rec = {"method": label, "correction": correction, "baseline": baseline, "seconds": seconds,
                   "baseline_frames": res.report["baseline"]["baseline_frames"],
                   "warnings": res.report["warnings"], "tissues": {}, "ccc": {},
                   "regularisation_gm": {"median": float(np.median(reg[tissue["gm"]])),
                                         "fraction_at_limit": float(at_edge[tissue["gm"]].mean())}}
            pairs = [("cbf", "cbf"), ("cbv", "cbv"), ("mtt", "mtt")]
            if "cbv_corrected" in est:
                pairs.append(("cbv_corrected", "cbv"))
            for t in TISSUES:
                rec["tissues"][t] = {
                    name: {"rom": 100.0 * (metrics.ratio_of_means(est[name], truth[ref], tissue[t]) - 1.0),
                           "voxelwise": metrics.relative_bias(est[name], truth[ref], tissue[t])}
                    for name, ref in pairs}
                rec["tissues"][t]["tmax_mean_s"] = float(est["tmax"][tissue[t]].mean())
                rec["tissues"][t]["k2_mean"] = float(est["k2"][tissue[t]].mean()) if "k2" in est else None
            for name, ref in pairs:
                rec["ccc"][name] = metrics.lin_ccc(est[name], truth[ref], mtt_mask if name == "mtt" else ccc_mask)
            runs.append(rec)
            if keep_maps and correction == "bsw" and baseline == "auto":
                maps[label] = {k: est[k] for k in ("cbf", "cbv", "cbv_corrected", "mtt", "k2") if k in est}
    out = {"config": cfg, "phantom_s": phantom_s, "runs": runs, "n_voxels": int(m["brain"].sum()),
           "n_frames": int(ph.signal.n_frames), "pre_aif_baseline": list(pre_aif_baseline(ph.params)),
           "n_tissue": {t: int(tissue[t].sum()) for t in TISSUES}}
    if cfg.get("snr") is None:
        out["contrast"] = contrast(ph)
    if keep_maps:
        out["maps"] = maps
        out["truth"] = truth
        out["masks"] = {k: m[k] for k in ("brain", "enhancing", "aif")}
    return out


CONTROL_THRESHOLDS = (0.2, 0.1, 0.05, 0.02, 0.01)


def threshold_control(intervals) -> list[dict]:
    """Noiseless, leakage-free phantom: the pipeline's own ΔR2* curves (``keep_curves``) deconvolved
    with sSVD and cSVD at decreasing truncation thresholds. If the CBF underestimation is regularisation
    (the low-pass filtering of a residue that jumps at t = 0), it must shrink as the threshold goes to 0
    on noiseless data; an implementation error would not."""
    from BBBAnomalyLib import metrics
    from BBBAnomalyLib.dsc import DeconvolutionModel, DSCParameters, run_dsc
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    rows = []
    for dt in intervals:
        ph = make_dsc_phantom(snr=None, frame_interval=dt, leakage=0.0)
        m = ph.masks
        res = run_dsc(ph.signal, DSCParameters(method="csvd", kh=1.0, density=1.0, leakage_correction="none"),
                      aif_mask=m["aif"], brain_mask=m["brain"], keep_curves=True)
        for t in TISSUES:
            sel = m[t] & ~m["aif"]
            curves = res.delta_r2s.data[sel]
            truth = ph.truth["cbf"].data[sel]
            for method in ("ssvd", "csvd"):
                for thr in CONTROL_THRESHOLDS:
                    model = DeconvolutionModel(res.aif, dt, method, ssvd_threshold=thr, csvd_threshold=thr)
                    cbf = 6000.0 * model.fit(curves).cbf
                    rows.append({"frame_interval": dt, "tissue": t, "method": method, "threshold": thr,
                                 "cbf_rom": 100.0 * (metrics.ratio_of_means(cbf, truth) - 1.0)})
    return rows


def _init_worker():
    try:  # one BLAS thread per process: the processes use the cores, not BLAS threads
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


# --- the plan -----------------------------------------------------------------------------------
AUTO = ("bsw", "auto")  # the pipeline defaults: BSW on, baseline detected from the brain-mean curve


def plan(grid: dict, seeds: list[int]) -> tuple[dict, dict]:
    """Unique phantom configs (key -> (cfg, set of variants)) and, per sweep, the keys it reads."""
    configs: dict[tuple, list] = {}
    sweeps: dict[str, list] = {"main": [], "delay": [], "dispersion": [], "leakage": []}

    def add(sweep, variants=(AUTO,), **cfg):
        base = {"snr": None, "frame_interval": SWEEP_INTERVAL, "tissue_delay": 0.0, "dispersion": 0.0,
                "leakage": DEFAULT_LEAKAGE, "seed": 0}
        base.update(cfg)
        key = phantom_key(base)
        configs.setdefault(key, [base, set()])[1].update(variants)
        sweeps[sweep].append(key)

    def seeds_for(snr):
        return [0] if snr is None else seeds

    both_baselines = (AUTO, ("bsw", "pre-aif"))
    for dt in grid["intervals"]:
        for snr in grid["snrs"]:
            for s in seeds_for(snr):
                add("main", snr=snr, frame_interval=dt, seed=s)
    for delay in grid["delays"]:
        for snr in (None, SWEEP_SNR):
            for s in seeds_for(snr):
                add("delay", both_baselines, snr=snr, tissue_delay=delay, seed=s)
    for disp in grid["dispersions"]:
        for s in seeds:
            add("dispersion", both_baselines, snr=SWEEP_SNR, dispersion=disp, seed=s)
    for scale in grid["leakage_scales"]:
        for snr in (None, SWEEP_SNR):
            for s in seeds_for(snr):
                add("leakage", (AUTO, ("none", "auto")), snr=snr, leakage=scale * DEFAULT_LEAKAGE, seed=s)
    return {k: (v[0], frozenset(v[1])) for k, v in configs.items()}, sweeps


def _default_leakage() -> float:
    from BBBAnomalyLib.phantoms.dsc import DSCPhantomParameters

    return float(DSCPhantomParameters().leakage)


DEFAULT_LEAKAGE = _default_leakage()


# --- aggregation --------------------------------------------------------------------------------
def _ms(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def aggregate(results: dict, keys: list, group_fields: tuple, correction="bsw", baseline="auto") -> list[dict]:
    """Mean ± sd across seeds of every number, grouped by the phantom fields in group_fields and method."""
    groups: dict[tuple, list] = {}
    for key in dict.fromkeys(keys):  # unique, in order
        res = results[key]
        cfg = res["config"]
        for rec in res["runs"]:
            if rec["correction"] != correction or rec["baseline"] != baseline:
                continue
            g = tuple(cfg[f] for f in group_fields) + (rec["method"],)
            groups.setdefault(g, []).append(rec)
    rows = []
    for g, recs in groups.items():
        row = {f: v for f, v in zip(group_fields, g[:-1])}
        row["method"] = g[-1]
        row["correction"] = correction
        row["baseline"] = baseline
        row["n_seeds"] = len(recs)
        row["tissues"] = {
            t: {name: {kind: _ms(r["tissues"][t][name][kind] for r in recs) for kind in ("rom", "voxelwise")}
                for name in recs[0]["tissues"][t] if isinstance(recs[0]["tissues"][t][name], dict)}
            for t in TISSUES}
        for t in TISSUES:
            row["tissues"][t]["tmax_mean_s"] = _ms(r["tissues"][t]["tmax_mean_s"] for r in recs)
        row["ccc"] = {name: _ms(r["ccc"][name] for r in recs) for name in recs[0]["ccc"]}
        row["seconds"] = _ms(r["seconds"] for r in recs)
        row["regularisation_gm"] = {k: _ms(r["regularisation_gm"][k] for r in recs)
                                    for k in ("median", "fraction_at_limit")}
        rows.append(row)
    return rows


# --- tables -------------------------------------------------------------------------------------
def fmt(ms: dict, digits=1, sd=True) -> str:
    if ms["mean"] is None:
        return "n/a"
    if not sd or ms["n"] < 2:
        return f"{ms['mean']:+.{digits}f}"
    return f"{ms['mean']:+.{digits}f} ± {ms['sd']:.{digits}f}"


def fmt_ccc(ms: dict) -> str:
    if ms["mean"] is None:
        return "n/a"
    return f"{ms['mean']:.3f}" + (f" ± {ms['sd']:.3f}" if ms["n"] > 1 else "")


def snr_label(snr) -> str:
    return "∞ (noiseless)" if snr is None else f"{snr:g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _snr_order(snr):
    return -np.inf if snr is None else -snr


def _order(r):
    return list(METHODS).index(r["method"])


def tables(agg: dict, meta: dict) -> str:
    out = [f"<!-- generated by scripts/validate_dsc.py ({meta['mode']}): {meta['command']} -->", ""]
    main = sorted(agg["main"], key=lambda r: (r["frame_interval"], _snr_order(r["snr"]), _order(r)))
    seeds = meta["seeds"]
    out += [f"All numbers are % bias, mean ± sd over {len(seeds)} noise seed(s) (noiseless rows: one "
            "realisation). RoM = ratio of means (bias of the ROI average); vox = voxelwise mean relative "
            "error. CCC = Lin's concordance over all non-arterial brain voxels. Pipeline defaults (BSW on, "
            "baseline detected automatically) unless a column says otherwise.", ""]

    if meta.get("contrast"):
        c = meta["contrast"]
        out += ["### Contrast of the phantom (noiseless mean curves) and per-frame CNR", "",
                "CNR = peak signal drop / noise σ (σ = 1000/SNR for every voxel).", ""]
        rows = []
        for name in TISSUES + ("aif",):
            x = c[name]
            drop = x["peak_signal_drop"] * x["s0"]
            rows.append([TISSUE_NAMES.get(name, "artery (AIF)"), f"{100 * x['peak_signal_drop']:.1f} %",
                         f"{x['peak_delta_r2s']:.2f}"]
                        + [f"{drop / sigma:.1f}" for sigma in meta["noise_sigma"].values()])
        out += [table(["tissue", "peak signal drop", "peak ΔR2* (1/s)"]
                      + [f"CNR @ SNR {k}" for k in meta["noise_sigma"]], rows), ""]

    for key, heading in (("cbf", "CBF bias (%) per method, SNR and frame interval"),
                         ("mtt", "MTT bias (%) per method (MTT = BSW-corrected CBV / CBF)")):
        out += [f"### {heading}", ""]
        rows = []
        for r in main:
            t = r["tissues"]
            rows.append([f"{r['frame_interval']:g}", snr_label(r["snr"]), r["method"]]
                        + [fmt(t[x][key][k]) for x in TISSUES for k in ("rom", "voxelwise")]
                        + [fmt_ccc(r["ccc"][key])])
        out += [table(["Δt (s)", "SNR", "method", "GM RoM", "GM vox", "WM RoM", "WM vox", "rim RoM", "rim vox", "CCC"],
                      rows), ""]

    out += ["### CBV bias (%), without and with BSW leakage correction", "",
            "CBV = ∫C/∫Ca does not involve the deconvolution, so it is the same for every method "
            "(shown once, from the cSVD run).", ""]
    rows = []
    for r in main:
        if r["method"] != "cSVD":
            continue
        t = r["tissues"]
        rows.append([f"{r['frame_interval']:g}", snr_label(r["snr"])]
                    + [fmt(t[x][name]["rom"]) for x in TISSUES for name in ("cbv", "cbv_corrected")]
                    + [fmt(t["enhancing"]["cbv"]["voxelwise"]), fmt(t["enhancing"]["cbv_corrected"]["voxelwise"]),
                       fmt_ccc(r["ccc"]["cbv"]), fmt_ccc(r["ccc"]["cbv_corrected"])])
    out += [table(["Δt (s)", "SNR", "GM", "GM BSW", "WM", "WM BSW", "rim", "rim BSW", "rim vox", "rim BSW vox",
                   "CCC", "CCC BSW"], rows), ""]

    out += [f"### Regularisation chosen in GM (Δt {SWEEP_INTERVAL:g} s)", "",
            "Median threshold (fraction of σmax; Tikhonov: λ/σmax) over GM voxels, and the fraction of GM "
            "voxels at the limit of the search (oSVD: no threshold met the OI target; Tikhonov: λ at the top "
            "of the GCV grid, σmax).", ""]
    rows = []
    for r in main:
        if r["frame_interval"] != SWEEP_INTERVAL:
            continue
        g = r["regularisation_gm"]
        rows.append([snr_label(r["snr"]), r["method"], f"{g['median']['mean']:.3f}",
                     f"{100 * g['fraction_at_limit']['mean']:.0f} %"])
    out += [table(["SNR", "method", "median threshold / λ", "at limit"], rows), ""]

    def sweep_rows(name, field, extra):
        pre = {(r["snr"], r[field], r["method"]): r for r in agg[name + "_pre_aif"]}
        rows = []
        for r in sorted(agg[name], key=lambda r: (_snr_order(r["snr"]), r[field], _order(r))):
            p = pre[(r["snr"], r[field], r["method"])]
            t, tp = r["tissues"], p["tissues"]
            rows.append([snr_label(r["snr"]), f"{r[field]:g}", r["method"],
                         fmt(t["gm"]["cbf"]["rom"]), fmt(tp["gm"]["cbf"]["rom"]), fmt(tp["wm"]["cbf"]["rom"]),
                         fmt(tp["enhancing"]["cbf"]["rom"]), fmt(t["gm"]["cbv"]["rom"]), fmt(tp["gm"]["cbv"]["rom"])]
                        + extra(t, tp))
        return rows

    out += [f"### Delay sweep (Δt {SWEEP_INTERVAL:g} s): CBF and CBV bias (RoM %), Tmax", "",
            "`auto` = the pipeline's baseline detection (on the brain-mean curve); `pre-AIF` = "
            f"`baseline_frames` ending before the AIF arrival (frames {meta['pre_aif_baseline']}). "
            "The true Tmax of an exponential residue is the delay.", ""]
    out += [table(["SNR", "delay (s)", "method", "GM CBF auto", "GM CBF pre-AIF", "WM CBF pre-AIF",
                   "rim CBF pre-AIF", "GM CBV auto", "GM CBV pre-AIF", "GM Tmax pre-AIF (s)"],
                  sweep_rows("delay", "tissue_delay", lambda t, tp: [fmt(tp["gm"]["tmax_mean_s"], 2)])), ""]

    out += [f"### Dispersion sweep (SNR {SWEEP_SNR:g}, Δt {SWEEP_INTERVAL:g} s): CBF, CBV, MTT bias (RoM %)", "",
            "The truth CBF and MTT are those of the tissue without the dispersion kernel (the usual convention: "
            "dispersion is an error source, not physiology).", ""]
    out += [table(["SNR", "dispersion (s)", "method", "GM CBF auto", "GM CBF pre-AIF", "WM CBF pre-AIF",
                   "rim CBF pre-AIF", "GM CBV auto", "GM CBV pre-AIF", "GM MTT pre-AIF"],
                  sweep_rows("dispersion", "dispersion", lambda t, tp: [fmt(tp["gm"]["mtt"]["rom"])])), ""]

    out += [f"### Leakage sweep (Δt {SWEEP_INTERVAL:g} s): rim CBV and CBF bias (RoM %)", "",
            f"K2 of the rim = scale × {DEFAULT_LEAKAGE:g} 1/s. CBV is method-independent (cSVD run shown); "
            "rim CBF per method as `with BSW / without`.", ""]
    by = {}
    for r in agg["leakage"] + agg["leakage_off"]:
        by[(r["snr"], r["leakage"], r["method"], r["correction"])] = r
    rows = []
    for snr, leak in sorted({k[:2] for k in by}, key=lambda k: (_snr_order(k[0]), k[1])):
        c = by[(snr, leak, "cSVD", "bsw")]["tissues"]
        cells = [snr_label(snr), f"{leak / DEFAULT_LEAKAGE:g}", fmt(c["enhancing"]["cbv"]["rom"]),
                 fmt(c["enhancing"]["cbv_corrected"]["rom"]), fmt(c["gm"]["cbv_corrected"]["rom"]),
                 fmt(c["wm"]["cbv_corrected"]["rom"])]
        for method in METHODS:
            on = by[(snr, leak, method, "bsw")]["tissues"]["enhancing"]["cbf"]["rom"]
            off = by[(snr, leak, method, "none")]["tissues"]["enhancing"]["cbf"]["rom"]
            cells.append(f"{fmt(on, sd=False)} / {fmt(off, sd=False)}")
        rows.append(cells)
    out += [table(["SNR", "leakage ×", "rim CBV", "rim CBV BSW", "GM CBV BSW", "WM CBV BSW"]
                  + [f"rim CBF {m}" for m in METHODS], rows), ""]

    if agg.get("threshold_control"):
        ctrl = agg["threshold_control"]
        out += ["### Control: CBF bias (RoM %) vs truncation threshold, noiseless and leakage-free", "",
                "The pipeline's own ΔR2* curves and AIF, deconvolved with the threshold given (fraction of σmax) "
                "instead of the defaults (sSVD 0.2, cSVD 0.1).", ""]
        rows = []
        for dt in sorted({r["frame_interval"] for r in ctrl}):
            for method in ("ssvd", "csvd"):
                for t in TISSUES:
                    vals = {r["threshold"]: r["cbf_rom"] for r in ctrl
                            if r["frame_interval"] == dt and r["method"] == method and r["tissue"] == t}
                    rows.append([f"{dt:g}", {"ssvd": "sSVD", "csvd": "cSVD"}[method], TISSUE_NAMES[t]]
                                + [f"{vals[thr]:+.1f}" for thr in CONTROL_THRESHOLDS])
        out += [table(["Δt (s)", "method", "tissue"] + [f"thr {thr:g}" for thr in CONTROL_THRESHOLDS], rows), ""]

    out += ["### Run time", ""]
    rows = []
    for m in METHODS:
        r = next((r for r in main if r["method"] == m and r["frame_interval"] == SWEEP_INTERVAL
                  and r["snr"] == SWEEP_SNR), None)
        if r is not None:
            rows.append([m, f"{r['seconds']['mean']:.2f}"])
    out += [table(["method", f"run_dsc seconds, {meta['n_voxels']} brain voxels × {meta['n_frames']} frames "
                   f"(SNR {SWEEP_SNR:g}, Δt {SWEEP_INTERVAL:g} s, mean over seeds)"], rows), ""]
    out += [f"Whole script: {meta['wall_s']:.0f} s wall-clock for {meta['n_phantoms']} phantoms and "
            f"{meta['n_runs']} pipeline runs, {meta['jobs']} worker process(es) on {meta['machine']}; "
            f"phantom build {meta['phantom_build_s']['mean']:.2f} s each.", ""]
    return "\n".join(out)


# --- figures ------------------------------------------------------------------------------------
def figures(agg: dict, maps_result: dict, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    colors = dict(zip(METHODS, ("tab:red", "tab:blue", "tab:green", "tab:olive", "tab:purple")))

    # 1) bias vs SNR
    main = [r for r in agg["main"] if r["frame_interval"] == SWEEP_INTERVAL]
    snrs = sorted({r["snr"] for r in main}, key=lambda s: np.inf if s is None else s)
    finite = [s for s in snrs if s is not None]
    xpos = {s: (s if s is not None else (max(finite) * 2.5 if finite else 1.0)) for s in snrs}
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), constrained_layout=True)
    for ax, tissue in zip(axes[:3], TISSUES):
        for method in METHODS:
            rs = sorted((r for r in main if r["method"] == method), key=lambda r: xpos[r["snr"]])
            x = [xpos[r["snr"]] for r in rs]
            y = [r["tissues"][tissue]["cbf"]["rom"]["mean"] for r in rs]
            e = [r["tissues"][tissue]["cbf"]["rom"]["sd"] or 0.0 for r in rs]
            ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=3, label=method, color=colors[method])
        ax.set_title(f"CBF bias, {TISSUE_NAMES[tissue]}")
    ax = axes[3]
    for method in METHODS:
        rs = sorted((r for r in main if r["method"] == method), key=lambda r: xpos[r["snr"]])
        x = [xpos[r["snr"]] for r in rs]
        for tissue, style in (("gm", "-"), ("wm", "--")):
            y = [r["tissues"][tissue]["cbv"]["rom"]["mean"] for r in rs]
            ax.plot(x, y, style, marker="o", ms=3, color=colors[method], alpha=0.8)
    rs = sorted((r for r in main if r["method"] == "cSVD"), key=lambda r: xpos[r["snr"]])
    x = [xpos[r["snr"]] for r in rs]
    for name, style, lab in (("cbv", ":", "rim, uncorrected"), ("cbv_corrected", "-.", "rim, BSW")):
        y = [r["tissues"]["enhancing"][name]["rom"]["mean"] for r in rs]
        e = [r["tissues"]["enhancing"][name]["rom"]["sd"] or 0.0 for r in rs]
        ax.errorbar(x, y, yerr=e, fmt=style, marker="s", ms=4, capsize=3, color="k", label=lab)
    ax.plot([], [], "-", color="gray", label="GM (all methods)")
    ax.plot([], [], "--", color="gray", label="WM (all methods)")
    ax.set_title("CBV bias (method-independent)")
    ax.legend(fontsize=7, loc="upper right")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks([xpos[s] for s in snrs])
        ax.set_xticklabels(["∞" if s is None else f"{s:g}" for s in snrs])
        ax.set_xlabel("SNR (S0 of WM / σ)")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel("bias of ROI mean (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"DSC phantom (simulated), Δt {SWEEP_INTERVAL:g} s: bias vs SNR, mean ± sd over seeds")
    path = fig_dir / "dsc_bias_vs_snr.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # 2) maps, one slice through the tumor
    if maps_result is not None:
        truth, est, masks = maps_result["truth"], maps_result["maps"], maps_result["masks"]
        k = int(np.argmax(masks["enhancing"].sum(axis=(0, 1))))
        brain = masks["brain"][:, :, k]

        def sl(a):
            return np.rot90(np.where(brain, a[:, :, k], np.nan))

        cols = ["truth"] + list(METHODS)
        fig, axes = plt.subplots(3, len(cols), figsize=(2.2 * len(cols) + 0.8, 8.2))
        fig.subplots_adjust(left=0.01, right=0.91, bottom=0.1, top=0.91, wspace=0.03, hspace=0.32)

        def right_colorbar(im, ax, label):
            box = ax.get_position()
            cax = fig.add_axes([box.x1 + 0.01, box.y0 + 0.1 * box.height, 0.01, 0.8 * box.height])
            fig.colorbar(im, cax=cax, label=label)

        def below_colorbar(im, ax, label):
            cax = ax.inset_axes([0.1, -0.1, 0.8, 0.05])
            fig.colorbar(im, cax=cax, orientation="horizontal", label=label)

        for row, (name, unit, vmax) in enumerate((("cbf", "CBF (ml/100 ml/min)", 100.0), ("mtt", "MTT (s)", 12.0))):
            for col, label in enumerate(cols):
                ax = axes[row, col]
                im = ax.imshow(sl(truth[name] if label == "truth" else est[label][name]), cmap="magma", vmin=0, vmax=vmax)
                ax.set_title(f"{name.upper()} {label}", fontsize=8)
            right_colorbar(im, axes[row, -1], unit)
        panels = [("CBV truth", truth["cbv"], "magma", (0, 12)),
                  ("CBV uncorrected", est["cSVD"]["cbv"], "magma", (0, 12)),
                  ("CBV BSW-corrected", est["cSVD"]["cbv_corrected"], "magma", (0, 12)),
                  ("CBV uncorrected − truth", est["cSVD"]["cbv"] - truth["cbv"], "RdBu_r", (-4, 4)),
                  ("CBV BSW − truth", est["cSVD"]["cbv_corrected"] - truth["cbv"], "RdBu_r", (-4, 4)),
                  ("K2 (1/s)", est["cSVD"].get("k2", np.zeros_like(truth["cbv"])), "RdBu_r", (-0.03, 0.03))]
        ims = []
        for col, (title, data, cmap, (lo, hi)) in enumerate(panels[: len(cols)]):
            ax = axes[2, col]
            ims.append(ax.imshow(sl(data), cmap=cmap, vmin=lo, vmax=hi))
            ax.set_title(title, fontsize=8)
        below_colorbar(ims[1], axes[2, 1], "CBV (ml/100 ml)")
        below_colorbar(ims[3], axes[2, 3], "CBV error (ml/100 ml)")
        right_colorbar(ims[-1], axes[2, -1], "K2 (1/s)")
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        fig.suptitle(f"DSC phantom (simulated), SNR {MAP_SNR:g}, Δt {MAP_INTERVAL:g} s, seed {MAP_SEED}, slab slice {k}: "
                     "truth vs estimates (BSW on; CBV from the cSVD run; the artery shows CBV 100)", fontsize=10)
        path = fig_dir / "dsc_maps_snr50.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)

    # 3) sweeps
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.3), constrained_layout=True)

    def curve(ax, rows, field, getter, **kw):
        rows = sorted(rows, key=lambda r: r[field])
        if rows:
            ax.errorbar([r[field] for r in rows], [getter(r)["mean"] for r in rows],
                        yerr=[getter(r)["sd"] or 0.0 for r in rows], marker="o", ms=3, capsize=2, **kw)

    ax = axes[0]
    for method in METHODS:
        for snr, style in ((None, "--"), (SWEEP_SNR, "-")):
            curve(ax, [r for r in agg["delay_pre_aif"] if r["method"] == method and r["snr"] == snr], "tissue_delay",
                  lambda r: r["tissues"]["gm"]["cbf"]["rom"], fmt=style, color=colors[method],
                  label=method if snr == SWEEP_SNR else None)
    ax.set_title(f"GM CBF vs tissue delay, pre-AIF baseline\n(solid SNR {SWEEP_SNR:g}, dashed noiseless)", fontsize=10)
    ax.set_xlabel("tissue delay (s)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, style, lab in (("delay", "-", "automatic baseline (pipeline default)"), ("delay_pre_aif", "--", "pre-AIF baseline")):
        for snr, marker in ((None, "s"), (SWEEP_SNR, "o")):
            rows = sorted((r for r in agg[name] if r["method"] == "cSVD" and r["snr"] == snr), key=lambda r: r["tissue_delay"])
            ax.errorbar([r["tissue_delay"] for r in rows], [r["tissues"]["gm"]["cbv"]["rom"]["mean"] for r in rows],
                        yerr=[r["tissues"]["gm"]["cbv"]["rom"]["sd"] or 0.0 for r in rows], fmt=style, marker=marker,
                        ms=4, capsize=2, label=f"{lab}, SNR {snr_label(snr)}")
    ax.set_title("GM CBV vs tissue delay: the baseline window", fontsize=10)
    ax.set_xlabel("tissue delay (s)")
    ax.legend(fontsize=7)
    ax = axes[2]
    for method in METHODS:
        curve(ax, [r for r in agg["dispersion_pre_aif"] if r["method"] == method], "dispersion",
              lambda r: r["tissues"]["gm"]["cbf"]["rom"], color=colors[method], label=method)
    ax.set_title(f"GM CBF vs dispersion (SNR {SWEEP_SNR:g}, pre-AIF baseline)", fontsize=10)
    ax.set_xlabel("dispersion time constant (s)")
    ax = axes[3]
    for snr, marker in ((None, "s"), (SWEEP_SNR, "o")):
        rows = sorted((r for r in agg["leakage"] if r["method"] == "cSVD" and r["snr"] == snr), key=lambda r: r["leakage"])
        x = [r["leakage"] / DEFAULT_LEAKAGE for r in rows]
        for name, style, lab in (("cbv", "-", "rim, uncorrected"), ("cbv_corrected", "--", "rim, BSW")):
            ax.errorbar(x, [r["tissues"]["enhancing"][name]["rom"]["mean"] for r in rows],
                        yerr=[r["tissues"]["enhancing"][name]["rom"]["sd"] or 0.0 for r in rows], fmt=style,
                        marker=marker, ms=4, capsize=2, label=f"{lab}, SNR {snr_label(snr)}")
    ax.set_title("rim CBV vs leakage", fontsize=10)
    ax.set_xlabel(f"rim K2 / phantom default ({DEFAULT_LEAKAGE:g} 1/s)")
    ax.legend(fontsize=7)
    for ax in axes:
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel("bias of ROI mean (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("DSC phantom (simulated): sweeps at Δt 1.5 s, mean ± sd over seeds")
    path = fig_dir / "dsc_sweeps.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


# --- main ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="validate_dsc.py",
        description=__doc__.split("Outputs")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Outputs" + __doc__.split("Outputs", 1)[1],
    )
    p.add_argument("--quick", action="store_true",
                   help="reduced sweep: 1 seed, SNR ∞/50/10, Δt 1.5 s only, 3 delays, 2 dispersions, 3 leakage levels")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="noise realisations per noisy setting (default 3; --quick uses 1 unless given)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="worker processes, one BLAS thread each (default: 2, or 1 on a 1-core machine)")
    p.add_argument("--out", type=Path, default=Path("dsc_validation"), metavar="DIR",
                   help="where dsc_validation.md and dsc_validation.json go (default ./dsc_validation)")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR",
                   help="where the PNG figures go (default: docs/figures of this checkout for the full sweep, "
                        "OUT/figures with --quick, so a quick run never replaces the documented figures)")
    p.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        p.error("--seeds and --jobs must be at least 1")
    if args.quick and "--seeds" not in (argv if argv is not None else sys.argv[1:]):
        args.seeds = 1
    if args.figures is None:
        args.figures = args.out / "figures" if args.quick else ROOT / "docs" / "figures"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    grid = QUICK if args.quick else FULL
    seeds = list(range(args.seeds))
    configs, sweeps = plan(grid, seeds)
    keys = list(configs)
    print(f"{len(keys)} phantoms x {len(METHODS)} methods ({'quick' if args.quick else 'full'} sweep, "
          f"{args.jobs} process(es))", flush=True)

    results = {}
    map_cfg = {"snr": MAP_SNR, "frame_interval": MAP_INTERVAL, "tissue_delay": 0.0, "dispersion": 0.0,
               "leakage": DEFAULT_LEAKAGE, "seed": MAP_SEED}
    map_key = phantom_key(map_cfg)
    map_variants = configs.get(map_key, (None, frozenset({AUTO})))[1]
    _init_worker()  # the main process too: idle BLAS threads spinning next to the workers cost a lot
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init_worker) as pool:
            futures = {k: pool.submit(evaluate, configs[k][0], configs[k][1]) for k in keys if k != map_key}
            map_future = pool.submit(evaluate, map_cfg, map_variants, True)
            for i, (k, fut) in enumerate(futures.items(), 1):
                results[k] = fut.result()
                if i % 20 == 0:
                    print(f"  {i}/{len(futures)} phantoms done ({time.perf_counter() - t_start:.0f} s)", flush=True)
            maps_result = results[map_key] = map_future.result()
    else:
        maps_result = results[map_key] = evaluate(map_cfg, map_variants, keep_maps=True)
        for i, k in enumerate(keys, 1):
            if k != map_key:
                results[k] = evaluate(configs[k][0], configs[k][1])
            if i % 20 == 0:
                print(f"  {i}/{len(keys)} phantoms done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    agg = {
        "main": aggregate(results, sweeps["main"], ("snr", "frame_interval")),
        "delay": aggregate(results, sweeps["delay"], ("snr", "tissue_delay")),
        "delay_pre_aif": aggregate(results, sweeps["delay"], ("snr", "tissue_delay"), baseline="pre-aif"),
        "dispersion": aggregate(results, sweeps["dispersion"], ("snr", "dispersion")),
        "dispersion_pre_aif": aggregate(results, sweeps["dispersion"], ("snr", "dispersion"), baseline="pre-aif"),
        "leakage": aggregate(results, sweeps["leakage"], ("snr", "leakage")),
        "leakage_off": aggregate(results, sweeps["leakage"], ("snr", "leakage"), correction="none"),
    }
    contrast_by_dt = {res["config"]["frame_interval"]: res["contrast"] for k, res in results.items()
                      if "contrast" in res and k in set(sweeps["main"])}
    agg["threshold_control"] = threshold_control(grid["intervals"])
    compute_s = time.perf_counter() - t_start
    written = [] if args.no_figures else figures(agg, maps_result, args.figures)
    wall_s = time.perf_counter() - t_start

    n_runs = sum(len(r["runs"]) for k, r in results.items() if k in configs)
    meta = {
        "mode": "quick" if args.quick else "full",
        "command": "python scripts/validate_dsc.py" + (" --quick" if args.quick else "")
                   + (f" --seeds {args.seeds}" if args.seeds != (1 if args.quick else 3) else "")
                   + (f" --jobs {args.jobs}" if args.jobs != 2 else ""),
        "seeds": seeds, "jobs": args.jobs, "grid": grid, "sweep_snr": SWEEP_SNR, "sweep_interval": SWEEP_INTERVAL,
        "default_leakage": DEFAULT_LEAKAGE, "methods": METHODS, "machine": machine_description(),
        "n_phantoms": len(configs), "n_runs": n_runs, "compute_s": compute_s, "wall_s": wall_s,
        "phantom_build_s": _ms(r["phantom_s"] for r in results.values()),
        "n_voxels": maps_result["n_voxels"], "n_tissue_voxels": maps_result["n_tissue"],
        "n_frames": maps_result["n_frames"], "pre_aif_baseline": maps_result["pre_aif_baseline"],
        "versions": _versions(),
        "contrast": contrast_by_dt.get(SWEEP_INTERVAL, next(iter(contrast_by_dt.values()), None)),
        "noise_sigma": {f"{snr:g}": S0_WM / snr for snr in grid["snrs"] if snr is not None},
        "simulated": True,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    md = tables(agg, meta)
    (args.out / "dsc_validation.md").write_text(md + "\n", encoding="utf-8")
    records = []
    for k, res in results.items():
        if k not in configs:
            continue
        for rec in res["runs"]:
            records.append({"phantom": res["config"], "phantom_s": res["phantom_s"], **rec})
    payload = {"meta": meta, "aggregated": agg, "records": records,
               "figures": [str(p) for p in written]}
    (args.out / "dsc_validation.json").write_text(json.dumps(payload, indent=1, default=_json_default) + "\n", encoding="utf-8")
    print(md)
    print(f"wrote {args.out / 'dsc_validation.md'}, {args.out / 'dsc_validation.json'}"
          + "".join(f", {p}" for p in written))
    print(f"run time: {wall_s:.1f} s wall-clock ({compute_s:.1f} s of phantoms and pipeline runs)")
    return 0


def _versions() -> dict:
    import scipy

    out = {"numpy": np.__version__, "scipy": scipy.__version__}
    try:
        import BBBAnomalyLib

        out["BBBAnomalyLib"] = BBBAnomalyLib.__version__
    except Exception:  # noqa: BLE001
        pass
    return out


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""PHAE (``run_dsc(method="phae")``) next to oSVD and Tikhonov on simulated DSC data: accuracy and grading.

Parts (all simulated; see docs/validation.md, section "DSC: PHAE"):
  accuracy   the DSC reference object (``make_dsc_phantom``, 12-slice slab, Δt 1.5 s, default leakage with
             BSW correction), SNR None / 50 / 20 / 10, ``--seeds`` noise realisations: % bias of the ROI
             mean (ratio of means) of CBF, corrected CBV and MTT in GM, WM and the enhancing rim, and Lin's
             CCC of CBF over the brain, for oSVD (OI 0.035 and 0.095), Tikhonov, PHAE and PHAE --adapt.
  changes    what each change past the seed buys, measured: delay sweep (tissue delay 0/2/4 s: MTT bias
             and Tmax), leakage (PHAE with and without BSW correction, rim), protocols (Δt 1.0/2.0 s,
             60/120 s), and an oracle experiment on noiseless curves that fits the decoder alone by grid
             search, with and without the delay output and with the seed's vs the area amplitude.
  grading    the seed's experiment on simulated cohorts: ``--patients`` patients, half low-grade-like
             and half high-grade-like (solid tumor, rCBF drawn from overlapping log-normal ranges, see
             COHORT), each one phantom whose noise is re-drawn at SNR 50/40/30/20/10; the tumor/NAWM CBF
             ratio per method; ROC AUC with 95 % bootstrap CI and the Youden cut-off per SNR; the AUC of
             the *true* ratio is the cohort's own separability.

Outputs: OUT/phae_validation.md (tables), OUT/phae_validation.json (every number), and
FIGURES/phae_auc_vs_snr.png (FIGURES = docs/figures, or OUT/figures with --quick).

  python scripts/validate_phae.py                 # full run (about 15 min on 2 cores)
  python scripts/validate_phae.py --quick --out /tmp/p
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from BBBAnomalyLib import metrics  # noqa: E402
from BBBAnomalyLib.dsc import DSCParameters, run_dsc  # noqa: E402
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom  # noqa: E402
from BBBAnomalyLib.core.report import machine_description  # noqa: E402

METHODS = {
    "oSVD 0.035": {"method": "osvd", "osvd_oi_target": 0.035},
    "oSVD 0.095": {"method": "osvd", "osvd_oi_target": 0.095},
    "Tikhonov": {"method": "tikhonov"},
    "PHAE": {"method": "phae", "device": "cpu"},
    # --adapt is refused for supervised weights such as the default (issue 14, round 6): shown with the self-supervised ones
    "PHAE-sim adapt": {"method": "phae", "device": "cpu", "phae_adapt": True, "phae_weights": "dsc-phae-sim"},
}
GRADING_METHODS = ("oSVD 0.095", "Tikhonov", "PHAE")
TISSUES = {"gm": "GM", "wm": "WM", "enhancing": "rim"}
#: Simulated cohorts. rCBF of the tumor (tumor / NAWM CBF): log-normal, LGG median 1.3, HGG median 2.6,
#: σ(log) 0.35: overlapping as in the literature (Hakyemez et al., Clin Radiol 2005;60:493-502: rCBF
#: differs between grades with overlap; Law et al., AJNR 2003: rCBV cut-off 1.75 with sensitivity 95 %,
#: specificity 57 %). Tumor MTT 4-8 s; HGG leak more (BSW K2 0.005-0.03 1/s vs 0-0.005).
COHORT = {"lgg": {"rcbf_median": 1.3, "k2": (0.0, 0.005)}, "hgg": {"rcbf_median": 2.6, "k2": (0.005, 0.03)},
          "rcbf_log_sd": 0.35, "tumor_mtt_s": (4.0, 8.0)}


def run(ph, overrides, **kw):
    m = ph.masks
    params = DSCParameters(kh=1.0, density=1.0, **overrides)
    t0 = time.perf_counter()
    res = run_dsc(ph.signal, params, aif_mask=m["aif"], brain_mask=m["brain"], nawm_mask=m["nawm"],
                  tumor_mask=m["tumor"], **kw)
    return res, time.perf_counter() - t0


def accuracy_record(ph, res) -> dict:
    m, truth = ph.masks, {k: ph.truth[k].data for k in ("cbv", "cbf", "mtt")}
    est = {k: v.data for k, v in res.maps.items()}
    rec = {}
    for t in TISSUES:
        mask = m[t] & ~m["aif"]
        rec[t] = {name: 100.0 * (metrics.ratio_of_means(est[name], truth[ref], mask) - 1.0)
                  for name, ref in (("cbf", "cbf"), ("cbv_corrected", "cbv"), ("mtt", "mtt")) if name in est}
        rec[t]["tmax"] = float(est["tmax"][mask].mean())
    brain = m["brain"] & ~m["aif"]
    rec["ccc_cbf"] = metrics.lin_ccc(est["cbf"], truth["cbf"], brain)
    rec["ccc_mtt"] = metrics.lin_ccc(est["mtt"], truth["mtt"], brain & (truth["cbf"] > 0))
    if "phae" in res.report:
        rec["adaptation"] = res.report["phae"].get("adaptation")
    return rec


def part_accuracy(snrs, seeds, log) -> list[dict]:
    rows = []
    for snr in snrs:
        for seed in (seeds if snr is not None else [0]):
            ph = make_dsc_phantom(snr=snr, seed=seed)
            for label, ov in METHODS.items():
                if label == "PHAE-sim adapt" and seed != seeds[0]:
                    continue  # adaptation costs ~10-40 s per run: one realisation per SNR
                res, sec = run(ph, ov)
                rows.append({"snr": snr, "seed": seed, "method": label, "seconds": sec, **accuracy_record(ph, res)})
            log(f"accuracy SNR {snr} seed {seed} done")
    return rows


def part_changes(seeds, log) -> dict:
    out = {"delay": [], "leakage": [], "protocol": []}
    for delay in (0.0, 2.0, 4.0):
        for seed in seeds:
            ph = make_dsc_phantom(snr=50, seed=seed, tissue_delay=delay)
            for label in ("oSVD 0.095", "Tikhonov", "PHAE"):
                res, _ = run(ph, METHODS[label])
                out["delay"].append({"delay": delay, "seed": seed, "method": label, **accuracy_record(ph, res)})
    log("delay sweep done")
    for seed in seeds:
        ph = make_dsc_phantom(snr=50, seed=seed)
        for corr in ("bsw", "none"):
            res, _ = run(ph, {**METHODS["PHAE"], "leakage_correction": corr})
            out["leakage"].append({"correction": corr, "seed": seed, **accuracy_record(ph, res)})
    log("leakage done")
    for dt, dur in ((1.0, 90.0), (2.0, 90.0), (1.5, 60.0), (1.5, 120.0)):
        for seed in seeds:
            ph = make_dsc_phantom(snr=50, seed=seed, frame_interval=dt, duration=dur)
            for label in ("oSVD 0.095", "PHAE"):
                res, _ = run(ph, METHODS[label])
                out["protocol"].append({"frame_interval": dt, "duration": dur, "seed": seed, "method": label,
                                        **accuracy_record(ph, res)})
    log("protocols done")
    out["oracle"] = oracle_decoder()
    return out


def oracle_decoder() -> list[dict]:
    """Fit the decoder alone (grid search over MTT and delay, no network) to noiseless mean curves of
    the reference object's GM/WM/rim, at tissue delay 0 and 3 s: the forward model's own bias."""
    import torch

    from BBBAnomalyLib.dsc.phae import physics

    rows = []
    for delay in (0.0, 3.0):
        ph = make_dsc_phantom(snr=None, leakage=0.0, tissue_delay=delay, residue="exponential")
        res, _ = run(ph, {"method": "csvd", "leakage_correction": "none"}, keep_curves=True)
        dt = float(res.times[1] - res.times[0])
        aif = torch.as_tensor(res.aif[None].astype(np.float64))
        mtts = np.geomspace(0.5, 30.0, 400) / dt
        for use_delay in (False, True):
            delays = np.linspace(0.0, 6.0, 61) / dt if use_delay else np.zeros(1)
            mm, dd = (v.ravel() for v in np.meshgrid(mtts, delays, indexing="ij"))
            for amplitude in ("seed", "area"):
                for t in TISSUES:
                    mask = ph.masks[t] & ~ph.masks["aif"]
                    c = res.delta_r2s.data[mask].mean(axis=0).astype(np.float64)
                    curves = torch.as_tensor(np.repeat(c[None], mm.size, axis=0))
                    fitted, flow = physics.decode(curves, aif, torch.as_tensor(mm), torch.as_tensor(dd), amplitude)
                    best = int(torch.argmin((fitted - curves).abs().mean(dim=1)))
                    truth_cbf = ph.truth["cbf"].data[mask].mean() / 6000.0
                    truth_mtt = 60 * ph.truth["cbv"].data[mask].mean() / ph.truth["cbf"].data[mask].mean()
                    rows.append({"tissue_delay": delay, "delay_output": use_delay, "amplitude": amplitude,
                                 "tissue": t, "mtt_bias": 100 * (mm[best] * dt / truth_mtt - 1),
                                 "cbf_bias": 100 * (float(flow[best]) / dt / truth_cbf - 1),
                                 "delay_fit": float(dd[best] * dt)})
    return rows


# --- held-out simulated curves (the model card's metrics) ------------------------------------------
def part_heldout(log) -> list[dict]:
    """MTT / CBF / delay errors of the bundled weights on simulated cases never seen in training
    (seed 12345; training used seed 0), per SNR, with the tissue gain fixed to 1 (the reference
    object's contrast, the hard end) and 4 (in-vivo-like contrast)."""
    from BBBAnomalyLib.dsc.phae import PHAEModel
    from BBBAnomalyLib.dsc.phae.simulate import simulate_cases

    rows = []
    for gain in (1.0, 4.0):
        for snr in (100.0, 50.0, 20.0, 10.0):
            cases = simulate_cases(20, 500, seed=12345, snr=snr, tissue_gain=(gain, gain))
            e_mtt, e_cbf, e_delay = [], [], []
            for c in cases:
                fit = PHAEModel(c.aif, c.frame_interval, device="cpu").fit(c.curves, keep_curves=False, domain_check=False)
                e_mtt.append(np.log(np.clip(fit.mtt, 1e-3, None) / c.truth["mtt"]))
                e_cbf.append(np.log(np.clip(fit.cbf, 1e-6, None) / c.truth["cbf"]))
                e_delay.append(fit.tmax - c.truth["delay"])
            e_mtt, e_cbf, e_delay = (np.concatenate(v) for v in (e_mtt, e_cbf, e_delay))
            truth_mtt = np.concatenate([c.truth["mtt"] for c in cases])
            rows.append({"gain": gain, "snr": snr, "n": int(e_mtt.size),
                         "mtt_median_error_pct": float(100 * np.expm1(np.median(e_mtt))),
                         "mtt_median_abs_error_pct": float(100 * np.expm1(np.median(np.abs(e_mtt)))),
                         "mtt_log_pearson_r": float(np.corrcoef(np.log(truth_mtt), np.log(truth_mtt) + e_mtt)[0, 1]),
                         "cbf_median_error_pct": float(100 * np.expm1(np.median(e_cbf))),
                         "cbf_median_abs_error_pct": float(100 * np.expm1(np.median(np.abs(e_cbf)))),
                         "delay_median_abs_error_s": float(np.median(np.abs(e_delay)))})
        log(f"held-out gain {gain} done")
    return rows


# --- grading ---------------------------------------------------------------------------------------
def patient(i: int, n: int, leakage_scale: float = 1.0):
    """Phantom overrides of patient i (deterministic) and its label (1 = high-grade-like)."""
    rng = np.random.default_rng(1000 + i)
    hgg = int(i % 2 == 1)
    group = COHORT["hgg" if hgg else "lgg"]
    wm_cbf, wm_cbv = rng.uniform(18, 26), rng.uniform(1.7, 2.4)
    rcbf = group["rcbf_median"] * np.exp(COHORT["rcbf_log_sd"] * rng.standard_normal())
    tumor_cbf = rcbf * wm_cbf
    tumor_cbv = tumor_cbf * rng.uniform(*COHORT["tumor_mtt_s"]) / 60.0
    radii = tuple(float(v) for v in rng.uniform(8, 13, 3))
    cfg = dict(tissues={"wm": {"cbf": wm_cbf, "cbv": wm_cbv},
                        "gm": {"cbf": rng.uniform(50, 70), "cbv": rng.uniform(4.0, 5.0)},
                        "enhancing": {"cbf": tumor_cbf, "cbv": tumor_cbv}},
               tumor_radii_mm=radii, rim_thickness_mm=30.0, edema_thickness_mm=float(rng.uniform(2, 8)),
               leakage=float(rng.uniform(*group["k2"])) * leakage_scale, tumor_delay=float(rng.uniform(0, 2)),
               tissue_delay=float(rng.uniform(0, 1)), dispersion=float(rng.uniform(0, 1.5)),
               bolus_arrival=float(rng.uniform(10, 20)), slices=6)
    return cfg, hgg, rcbf


def part_grading(n_patients: int, snrs, log, leakage_scale: float = 1.0) -> dict:
    ratios = {snr: {m: [] for m in GRADING_METHODS} for snr in snrs}
    labels, truth = [], []
    seconds = {m: [] for m in GRADING_METHODS}
    for i in range(n_patients):
        cfg, hgg, _ = patient(i, n_patients, leakage_scale)
        labels.append(hgg)
        for snr in snrs:
            ph = make_dsc_phantom(snr=snr, seed=i, **cfg)
            tumor, nawm = ph.masks["tumor"] & ~ph.masks["aif"], ph.masks["nawm"]
            if snr == snrs[0]:
                truth.append(float(ph.truth["cbf"].data[tumor].mean() / ph.truth["cbf"].data[nawm].mean()))
            for label in GRADING_METHODS:
                res, sec = run(ph, METHODS[label])
                cbf = res.maps["cbf"].data
                ratios[snr][label].append(float(cbf[tumor].mean() / cbf[nawm].mean()))
                seconds[label].append(sec)
        log(f"patient {i + 1}/{n_patients} done")
    labels = np.array(labels)
    table = []
    for snr in snrs:
        for label in GRADING_METHODS + ("truth",):
            scores = np.array(truth if label == "truth" else ratios[snr][label])
            auc = metrics.roc_auc(labels, scores)
            ci = metrics.bootstrap_ci(metrics.roc_auc, labels, scores, n=2000, seed=0)
            yc = metrics.youden_cutoff(labels, scores)
            table.append({"snr": snr, "method": label, "auc": auc, "ci": [ci.low, ci.high], "cutoff": yc.threshold,
                          "sensitivity": yc.sensitivity, "specificity": yc.specificity,
                          "median_ratio_lgg": float(np.median(scores[labels == 0])),
                          "median_ratio_hgg": float(np.median(scores[labels == 1]))})
    return {"labels": labels.tolist(), "true_ratio": truth,
            "ratios": {str(s): r for s, r in ratios.items()}, "table": table,
            "run_seconds_median": {m: float(np.median(v)) for m, v in seconds.items()}}


# --- tables and figure -----------------------------------------------------------------------------
def _mean_sd(values):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    return (float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0) if v.size else (np.nan, 0.0)


def fmt(values, digits=1):
    m, s = _mean_sd(values)
    return f"{m:+.{digits}f}" + (f" ± {s:.{digits}f}" if s else "")


def tables(res: dict) -> str:
    out = []
    acc = res.get("accuracy", [])
    if acc:
        out += ["#### Accuracy on the DSC reference object (Δt 1.5 s, BSW on; % bias of the ROI mean, mean ± sd over seeds)",
                "", "| SNR | method | CBF GM | CBF WM | CBF rim | CBV GM | CBV rim | MTT GM | MTT WM | MTT rim | CCC CBF | s/run |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for snr in dict.fromkeys(r["snr"] for r in acc):
        for label in METHODS:
            rs = [r for r in acc if r["snr"] == snr and r["method"] == label]
            if not rs:
                continue
            cell = lambda t, k: fmt([r[t][k] for r in rs])  # noqa: E731
            out.append(f"| {snr if snr else 'none'} | {label} | {cell('gm', 'cbf')} | {cell('wm', 'cbf')} | "
                       f"{cell('enhancing', 'cbf')} | {cell('gm', 'cbv_corrected')} | {cell('enhancing', 'cbv_corrected')} | "
                       f"{cell('gm', 'mtt')} | {cell('wm', 'mtt')} | {cell('enhancing', 'mtt')} | "
                       f"{_mean_sd([r['ccc_cbf'] for r in rs])[0]:.2f} | {_mean_sd([r['seconds'] for r in rs])[0]:.1f} |")
    ch = res.get("changes")
    if ch:
        out += ["", "#### Delay sweep (SNR 50): MTT bias (%) and mean Tmax (s) in GM", "",
                "| tissue delay | method | MTT GM | MTT WM | CBF GM | Tmax GM |", "|---|---|---|---|---|---|"]
        for d in dict.fromkeys(r["delay"] for r in ch["delay"]):
            for label in ("oSVD 0.095", "Tikhonov", "PHAE"):
                rs = [r for r in ch["delay"] if r["delay"] == d and r["method"] == label]
                out.append(f"| {d:g} s | {label} | {fmt([r['gm']['mtt'] for r in rs])} | {fmt([r['wm']['mtt'] for r in rs])} "
                           f"| {fmt([r['gm']['cbf'] for r in rs])} | {_mean_sd([r['gm']['tmax'] for r in rs])[0]:.2f} |")
        out += ["", "#### PHAE with and without BSW leakage correction (SNR 50, rim, % bias)", "",
                "| correction | CBF rim | CBV rim (corrected) | MTT rim |", "|---|---|---|---|"]
        for corr in ("bsw", "none"):
            rs = [r for r in ch["leakage"] if r["correction"] == corr]
            cbv_key = "cbv_corrected" if corr == "bsw" else None
            cbv = fmt([r["enhancing"][cbv_key] for r in rs]) if cbv_key else "(not computed)"
            out.append(f"| {corr} | {fmt([r['enhancing']['cbf'] for r in rs])} | {cbv} | {fmt([r['enhancing']['mtt'] for r in rs])} |")
        out += ["", "#### Other protocols (SNR 50): % bias in GM / WM", "",
                "| Δt, duration | method | CBF GM | CBF WM | MTT GM | MTT WM |", "|---|---|---|---|---|---|"]
        for key in dict.fromkeys((r["frame_interval"], r["duration"]) for r in ch["protocol"]):
            for label in ("oSVD 0.095", "PHAE"):
                rs = [r for r in ch["protocol"] if (r["frame_interval"], r["duration"]) == key and r["method"] == label]
                out.append(f"| {key[0]:g} s, {key[1]:g} s | {label} | {fmt([r['gm']['cbf'] for r in rs])} | "
                           f"{fmt([r['wm']['cbf'] for r in rs])} | {fmt([r['gm']['mtt'] for r in rs])} | {fmt([r['wm']['mtt'] for r in rs])} |")
        out += ["", "#### Oracle decoder fit (noiseless mean curves, exponential-residue truth, grid search)", "",
                "| tissue delay | delay output | amplitude | MTT bias GM / WM / rim (%) | CBF bias GM / WM / rim (%) | fitted delay GM (s) |",
                "|---|---|---|---|---|---|"]
        orc = ch["oracle"]
        for key in dict.fromkeys((r["tissue_delay"], r["delay_output"], r["amplitude"]) for r in orc):
            rs = {r["tissue"]: r for r in orc if (r["tissue_delay"], r["delay_output"], r["amplitude"]) == key}
            out.append(f"| {key[0]:g} s | {'yes' if key[1] else 'no (seed)'} | {key[2]} | "
                       + " / ".join(f"{rs[t]['mtt_bias']:+.0f}" for t in TISSUES) + " | "
                       + " / ".join(f"{rs[t]['cbf_bias']:+.0f}" for t in TISSUES) + f" | {rs['gm']['delay_fit']:.1f} |")
    ho = res.get("heldout")
    if ho:
        out += ["", "#### Held-out simulated curves (20 cases x 500 curves per row; not seen in training)", "",
                "| tissue gain | SNR | MTT median error | MTT median abs. error | r(log MTT) | CBF median error | "
                "CBF median abs. error | delay median abs. error |", "|---|---|---|---|---|---|---|---|"]
        for r in ho:
            out.append(f"| {r['gain']:g} | {r['snr']:g} | {r['mtt_median_error_pct']:+.0f} % | "
                       f"{r['mtt_median_abs_error_pct']:.0f} % | {r['mtt_log_pearson_r']:.2f} | "
                       f"{r['cbf_median_error_pct']:+.0f} % | {r['cbf_median_abs_error_pct']:.0f} % | "
                       f"{r['delay_median_abs_error_s']:.2f} s |")
    gr = res.get("grading")
    if gr:
        n = len(gr["labels"])
        out += ["", f"#### Grading: tumor/NAWM CBF ratio, {n} simulated patients ({sum(gr['labels'])} high-grade-like)", "",
                "| SNR | method | AUC (95 % CI) | Youden cut-off | sensitivity | specificity | median ratio LGG / HGG |",
                "|---|---|---|---|---|---|---|"]
        for r in gr["table"]:
            out.append(f"| {r['snr']} | {r['method']} | {r['auc']:.2f} ({r['ci'][0]:.2f}-{r['ci'][1]:.2f}) | "
                       f"{r['cutoff']:.2f} | {100 * r['sensitivity']:.0f} % | {100 * r['specificity']:.0f} % | "
                       f"{r['median_ratio_lgg']:.2f} / {r['median_ratio_hgg']:.2f} |")
    return "\n".join(out) + "\n"


def figure(gr: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for k, label in enumerate(GRADING_METHODS + ("truth",)):
        rows = [r for r in gr["table"] if r["method"] == label]
        snr = np.array([r["snr"] for r in rows], float) + (k - 1.5) * 0.6
        auc = np.array([r["auc"] for r in rows])
        err = np.array([[r["auc"] - r["ci"][0], r["ci"][1] - r["auc"]] for r in rows]).T
        style = dict(color="0.5", ls=":") if label == "truth" else {}
        ax.errorbar(snr, auc, yerr=err, marker="o", capsize=3, label=label if label != "truth" else "true ratio", **style)
    ax.set_xlabel("SNR (white-matter baseline / noise σ)")
    ax.set_ylabel("ROC AUC, LGG- vs HGG-like (95 % CI)")
    ax.set_title("Grading by tumor/NAWM CBF ratio, simulated cohort")
    ax.invert_xaxis()
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def update_card(res: dict) -> None:
    """Put the measured numbers into the bundled weights' model card (sha256 recomputed)."""
    from BBBAnomalyLib import weights
    from BBBAnomalyLib.dsc.phae import DEFAULT_WEIGHTS

    card = weights.entry(DEFAULT_WEIGHTS)
    m = card.setdefault("metrics", {})
    m["where"] = "scripts/validate_phae.py; tables in docs/validation.md (section DSC: PHAE)"
    if "heldout" in res:
        m["heldout_simulated"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                                  for r in res["heldout"]]
    if "accuracy" in res:
        rows = [r for r in res["accuracy"] if r["method"] == "PHAE"]
        m["reference_object_rom_bias_pct"] = {
            str(snr): {f"{k}_{t}": round(float(np.mean([r[t][k] for r in rows if r["snr"] == snr])), 1)
                       for t in ("gm", "wm", "enhancing") for k in ("cbf", "mtt")}
            for snr in dict.fromkeys(r["snr"] for r in rows)}
    if "grading" in res:
        m["grading_auc"] = {f"{r['method']} SNR {r['snr']}": [round(r["auc"], 3), [round(v, 3) for v in r["ci"]]]
                            for r in res["grading"]["table"]}
    weights.write_entry(card, weights.WEIGHTS_DIR / card["file"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "validation_output")
    ap.add_argument("--figures", type=Path, help="figure folder (default docs/figures; OUT/figures with --quick)")
    ap.add_argument("--quick", action="store_true", help="1 seed, SNR 50/10, 8 patients")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--parts", nargs="+", default=["world", "heldout", "accuracy", "changes", "grading"],
                    choices=["world", "heldout", "accuracy", "changes", "grading"])
    ap.add_argument("--world-weights", nargs="+", default=["dsc-phae-sim", "dsc-phae-world", "dsc-phae-grid"],
                    help="PHAE weights compared in the held-apart part 'world' (scripts/phae_world.py); .pt paths "
                         "(e.g. other training seeds) are scored but not timed")
    ap.add_argument("--timed-weights", nargs="+", default=None,
                    help="weights (names or .pt) timed on the whole brain beside oSVD (default: the bundled names of "
                         "--world-weights)")
    ap.add_argument("--update-card", action="store_true",
                    help="write the held-out and reference-object numbers into the bundled model card")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grading-snrs", type=float, nargs="+", help="SNRs of the grading part (default 50 40 30 20 10)")
    ap.add_argument("--grading-leakage-scale", type=float, default=1.0,
                    help="scale the cohort's tumor leakage (0 = none: tests whether leakage drives the AUCs)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    seeds = list(range(1 if args.quick else args.seeds))
    snrs = [None, 50, 10] if args.quick else [None, 50, 20, 10]
    grading_snrs = args.grading_snrs or ([50, 10] if args.quick else [50, 40, 30, 20, 10])
    patients = 8 if args.quick else args.patients
    fig_dir = args.figures or (args.out / "figures" if args.quick else ROOT / "docs" / "figures")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = lambda s: print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True)  # noqa: E731
    res = {"machine": machine_description(), "seeds": seeds}
    if "world" in args.parts:
        from phae_world import part_world

        res["world"] = part_world(args.world_weights, quick=args.quick, log=log, timed=args.timed_weights)
    if "heldout" in args.parts:
        res["heldout"] = part_heldout(log)
    if "accuracy" in args.parts:
        res["accuracy"] = part_accuracy(snrs, seeds, log)
    if "changes" in args.parts:
        res["changes"] = part_changes(seeds, log)
    if "grading" in args.parts:
        res["grading"] = part_grading(patients, grading_snrs, log, args.grading_leakage_scale)
        res["grading"]["leakage_scale"] = args.grading_leakage_scale
        if len(grading_snrs) > 1:
            res["figure"] = str(figure(res["grading"], fig_dir / "phae_auc_vs_snr.png"))
    res["seconds"] = time.perf_counter() - t0
    (args.out / "phae_validation.json").write_text(json.dumps(res, indent=1, default=float), encoding="utf-8")
    text = tables(res)
    if "world" in res:
        from phae_world import world_tables

        text = world_tables(res["world"]) + "\n" + text
    (args.out / "phae_validation.md").write_text(text, encoding="utf-8")
    print(text)
    if args.update_card:
        update_card(res)
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

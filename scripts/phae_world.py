"""Held-apart validation of PHAE against oSVD and a trivial baseline (the `world` part of validate_phae.py).

Nothing here is used in training: the curves come from ``phantoms.dsc_curves.HELD_APART`` (Georgiou
population AIF — a family the training never sees — with gamma-kernel dispersion of the measured AIF)
and from an OSIPI-style reference object built here (14 tissue curves, concentration input, kH = ρ = 1,
Georgiou AIF in mM, exponential residue, Δt 1 s, 120 frames), with seeds >= 10_000.

Methods on the *same* curves: PHAE (given weights), oSVD (``dsc.deconvolution``, OI 0.095 and 0.035),
and the trivial baseline CBF = CBV / 4.5 s (the geometric middle of the MTT prior: a map that only
knows the blood volume).
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from BBBAnomalyLib import metrics
from BBBAnomalyLib.dsc.deconvolution import DeconvolutionModel
from BBBAnomalyLib.phantoms import dsc_curves as dc
from BBBAnomalyLib.perfusion.population_aif import georgiou_aif, parker_aif

#: ROI-like tissue classes of the sweep: CBF [ml/100 g/min], CBV [ml/100 ml], delay [s]
SWEEP_TISSUES = {"GM": (60.0, 4.0, 0.0), "WM": (22.0, 2.6, 0.5), "tumor": (110.0, 6.0, 0.0),
                 "hypoperfused": (15.0, 3.5, 3.0), "early": (70.0, 3.0, -1.5)}
TRIVIAL_MTT_S = 4.5
OSVD = {"oSVD 0.095": 0.095, "oSVD 0.035": 0.035}


def _methods(curves, aif, dt, phae_model_factory):
    """{method: (cbf [1/s], fit_error or None, seconds, tmax [s] or None, SD of log CBF or None)} on the same
    curves; phae_model_factory: one factory (method "PHAE") or {label: factory} (methods "PHAE <label>")."""
    out = {}
    for name, oi in OSVD.items():
        t = time.perf_counter()
        fit = DeconvolutionModel(aif, dt, "osvd", oi_target=oi).fit(curves)
        out[name] = (fit.cbf, None, time.perf_counter() - t, fit.tmax, None)
    factories = phae_model_factory if isinstance(phae_model_factory, dict) else {"": phae_model_factory}
    for label, factory in factories.items():
        t = time.perf_counter()
        with warnings.catch_warnings():  # the sweeps leave the training domain on purpose (noiseless curves)
            warnings.filterwarnings("ignore", message=".*outside the range the PHAE weights", category=UserWarning)
            fit = factory(aif, dt).fit(curves, keep_curves=False)
        out[f"PHAE {label}".strip()] = (fit.cbf, fit.fit_error, time.perf_counter() - t, getattr(fit, "tmax", None),
                                        getattr(fit, "cbf_uncertainty", None))
    cbv = np.trapezoid(curves, dx=dt, axis=1) / np.trapezoid(aif, dx=dt)
    out["trivial CBV/4.5 s"] = (cbv / TRIVIAL_MTT_S, None, 0.0, None, None)
    return out


def _tissue_rows(tissues: dict, n_per_tissue: int):
    """(names, per-curve parameter rows (n, 3), per-curve tissue labels) for ``n_per_tissue`` curves of each tissue."""
    names = list(tissues)
    return (names, np.repeat(np.array([tissues[k] for k in names]), n_per_tissue, axis=0),
            np.repeat(names, n_per_tissue))


#: the reference tissue of the sweep's ratios (normal-appearing white matter, as rCBF maps use)
RATIO_REFERENCE = "WM"


def sweep(phae_model_factory, snrs=(10, 20, 50, 100), gains=(4.0, 1.0), frame_intervals=(1.0, 1.6, 2.2),
          n_per_tissue=300, cases=3, residue=None, log=print, settings=None, seed_base=10_000) -> list[dict]:
    """ROI-mean CBF bias per tissue, CCC over all curves, per SNR / gain / frame interval.

    residue: None draws each curve's residue from the generator's four families (the sweep as validated); a name
    (e.g. "exponential", dsc_physics.residue) gives every curve that shape (issue 14, round 12: the miss by shape);
    a tuple of names draws each curve's shape from those (round 13: mixes without the flat-topped shapes); a dict
    {tissue: name} gives each tissue class its own shape (round 14: a tumour's shape unlike the rest of the case).
    settings: the generator (default ``dc.HELD_APART``). ``dev_sweep`` runs the same tissue classes on
    the *training* generator with other seeds: what a recipe may be chosen on, never the held-apart set."""
    settings = dc.HELD_APART if settings is None else settings
    # ΔR2* input on the dev sweep (the held-apart preset has no concentration input and draws as before)
    extra = {} if settings is dc.HELD_APART else {"concentration_input": False}
    by_tissue = residue if isinstance(residue, dict) else None  # {tissue: shape}: tissues of different shapes
    if by_tissue is not None:
        residue = None
        if set(by_tissue) != set(SWEEP_TISSUES):
            raise ValueError(f"a residue per tissue needs every tissue of the sweep: {', '.join(SWEEP_TISSUES)}")
    if residue is not None and not isinstance(residue, str):  # a mix of shapes: each curve draws one of them
        settings, residue = dc.replace(settings, residues=tuple(residue)), None
    rows = []
    for gain in gains:
        for dt in frame_intervals:
            for snr in snrs:
                per = {}
                for c in range(cases):
                    rng = np.random.default_rng(seed_base + 97 * c + int(10 * dt) + int(snr) * 1000 + int(gain) * 7)
                    # one AIF per case, all tissue classes in it (as in one patient)
                    names = list(SWEEP_TISSUES)
                    par = np.repeat(np.array([SWEEP_TISSUES[k] for k in names]), n_per_tissue, axis=0)
                    cc = dc.simulate_curve_case(rng, len(par), settings, frame_interval=dt, **extra,
                                                n_frames=int(round(90.0 / dt)), snr=float(snr), tissue_gain=gain,
                                                mtt=60.0 * par[:, 1] / par[:, 0], cbv=par[:, 1] / 100.0,
                                                delay=par[:, 2], residue=residue if by_tissue is None else
                                                np.repeat([by_tissue[k] for k in names], n_per_tissue))
                    curves, aif, truth = cc.curves, cc.aif, cc.truth["cbf"]
                    labels = list(np.repeat(names, n_per_tissue))
                    res = _methods(curves, aif, dt, phae_model_factory)
                    labels_a = np.array(labels)
                    for m, (cbf, err, sec, tmax, log_sd) in res.items():
                        d = per.setdefault(m, {"bias": {k: [] for k in SWEEP_TISSUES}, "ccc": [], "s": 0.0,
                                               "err_corr": [], "offset": [], "tmax": {k: [] for k in SWEEP_TISSUES},
                                               "ratio": {k: [] for k in SWEEP_TISSUES if k != RATIO_REFERENCE},
                                               "coverage": []})
                        logs = []
                        for k in SWEEP_TISSUES:
                            sel = labels_a == k
                            d["bias"][k].append(100.0 * (np.mean(cbf[sel]) / np.mean(truth[sel]) - 1.0))
                            if k != RATIO_REFERENCE:  # what an rCBF map reads: the ROI over the case's own WM
                                d["ratio"][k].append(metrics.ratio_bias(cbf, truth, sel, labels_a == RATIO_REFERENCE))
                            logs.append(np.log(max(np.mean(cbf[sel]) / np.mean(truth[sel]), 1e-3)))
                            if tmax is not None:  # the ROI-mean Tmax minus the tissue's true delay [s]
                                d["tmax"][k].append(float(np.mean(tmax[sel]) - SWEEP_TISSUES[k][2]))
                        # the case's offset: the geometric mean of its five tissues' ROI ratios (one AIF per case)
                        d["offset"].append(100.0 * (np.exp(np.mean(logs)) - 1.0))
                        d["ccc"].append(metrics.lin_ccc(6000 * truth, 6000 * cbf))
                        d["s"] += sec
                        if log_sd is not None:  # the uncertainty map's calibration (issue 14, round 11)
                            d["coverage"].append(metrics.log_interval_coverage(cbf, truth, log_sd))
                        if err is not None:
                            from scipy.stats import spearmanr

                            d["err_corr"].append(float(spearmanr(err, np.abs(np.log(np.maximum(cbf, 1e-6) / truth)))[0]))
                for m, d in per.items():
                    row = {"gain": gain, "dt": dt, "snr": snr, "method": m, "ccc": float(np.mean(d["ccc"])),
                           "seconds": d["s"], **{f"bias_{k}": float(np.mean(v)) for k, v in d["bias"].items()},
                           "case_offsets": [float(v) for v in d["offset"]],
                           **{f"ratio_bias_{k}": float(np.mean(v)) for k, v in d["ratio"].items()},
                           **({f"uncertainty_{q}": float(np.mean([c[q] for c in d["coverage"]]))
                               for q in ("coverage", "coverage_all", "informative", "nonpositive")}
                              if d["coverage"] else {}),
                           # of the curves with CBF <= 0, the share the map marks uninformative (SD >= 100 %),
                           # weighted by each case's count; absent where no curve had CBF <= 0
                           **({"uncertainty_nonpositive_flagged": float(
                               sum(c["nonpositive"] * c["nonpositive_flagged"] for c in d["coverage"] if c["nonpositive"])
                               / sum(c["nonpositive"] for c in d["coverage"]))}
                              if any(c["nonpositive"] for c in d["coverage"]) else {}),
                           **{f"tmax_error_{k}": float(np.mean(v)) for k, v in d["tmax"].items() if v}}
                    if d["err_corr"]:
                        row["rho_fit_error_abs_log_error"] = float(np.mean(d["err_corr"]))
                    rows.append(row)
                    log(f"gain {gain} dt {dt} SNR {snr} {m}: CCC {row['ccc']:.2f} "
                        + " ".join(f"{k} {row['bias_' + k]:+.0f}%" for k in SWEEP_TISSUES))
    return rows


def dev_sweep(phae_model_factory, log=print, cases=3, n_per_tissue=200, families=None, kernels=None,
              gains=(4.0, 2.0), snrs=(20, 50)) -> list[dict]:
    """The sweep's tissue classes on the TRAINING generator (gamma / Parker AIFs, exponential dispersion;
    leakage-free like the curves the pipeline hands PHAE after BSW correction), seeds from 50_000 (training
    seeds are small integers): where a training recipe may be chosen, never on the held-apart set.
    ``families`` / ``kernels``: other training-side AIF families / dispersion kernels (e.g. one family a
    variant was trained without: a dev-held-out family; never Georgiou or the gamma kernel). ``gains`` /
    ``snrs``: the tissue gains and SNRs of the rows (default 4, 2 and 20, 50; gain 1 is the low-CNR regime of the
    project's own phantom, a GM signal drop of a few per cent: issue 14, round 6)."""
    gains, snrs = tuple(float(g) for g in gains), tuple(snrs)
    if not gains or not snrs or min(gains) <= 0 or min(snrs) <= 0:
        raise ValueError("the dev sweep's gains and SNRs must be positive")
    settings = dc.replace(dc.TRAINING, leaky_fraction=0.0)
    if families:
        if "georgiou" in families:
            raise ValueError("the Georgiou AIF is the held-apart family, not a dev family")
        settings = dc.replace(settings, aif_families=tuple(families))
    if kernels:
        if "gamma" in kernels:
            raise ValueError("the gamma dispersion kernel is the held-apart one, not a dev kernel")
        settings = dc.replace(settings, aif_dispersion_kernel=tuple(kernels))
    return sweep(phae_model_factory, snrs=snrs, gains=gains, frame_intervals=(1.2, 2.0), cases=cases,
                 n_per_tissue=n_per_tissue, log=log, settings=settings, seed_base=50_000)


# --- OSIPI-style DSC reference object --------------------------------------------------------
#: 14 (CBF ml/100 g/min, CBV ml/100 ml) pairs: MTT 2-12 s, CBV 1-10 ml/100 ml
OBJECT_TISSUES = [(10, 1.5), (15, 2.0), (20, 2.0), (20, 4.0), (30, 3.0), (35, 5.0), (40, 2.5), (50, 4.0),
                  (60, 4.0), (60, 8.0), (75, 5.0), (90, 6.0), (100, 10.0), (120, 6.0)]


def reference_object(snr: float | None = None, dt: float = 1.0, n_frames: int = 120, seed: int = 20_000,
                     voxels: int = 100, aif: str = "georgiou", residue: str = "exponential"):
    """(curves (14·voxels, T) in mM, AIF (T,) mM, dt, true CBF, true CBV, labels); concentration input.
    ``aif="parker"``: the same object on the Parker AIF, a training family (the dev object, ``dev --object``).
    ``residue``: every tissue's capillary residue (dsc_physics names, e.g. "gamma3", "box"; issue 14, round 14:
    the object under the transit shapes of the held-apart sweep and of published DSC objects); the same noise
    draws for every shape."""
    times = np.arange(n_frames) * dt
    arrival = 12.0
    if aif not in ("georgiou", "parker"):
        raise ValueError(f"the reference object's AIF is georgiou (held apart) or parker (dev), not {aif!r}")
    shape = georgiou_aif if aif == "georgiou" else parker_aif
    aif_fn = lambda t: shape(np.asarray(t, float) / 60.0, delay=arrival / 60.0)  # noqa: E731  [mM]
    from BBBAnomalyLib.phantoms import dsc_physics as phys

    cbf = np.repeat([p[0] for p in OBJECT_TISSUES], voxels).astype(float)
    cbv = np.repeat([p[1] for p in OBJECT_TISSUES], voxels).astype(float)
    mtt = 60.0 * cbv / cbf
    conc = phys.tissue_concentration(times, aif_fn, cbv / 100.0, mtt, 0.0, 0.0, residue=residue)
    aif = aif_fn(times)
    if snr is not None:
        rng = np.random.default_rng(seed)
        sigma = 0.04 * aif.max() / snr  # SNR relative to a blood-volume-sized (4 % of the AIF peak) signal
        conc = conc + sigma * rng.standard_normal(conc.shape)
    labels = np.repeat(np.arange(len(OBJECT_TISSUES)), voxels)
    return conc.astype(np.float32), aif.astype(np.float32), dt, cbf, cbv, labels


# --- the part and its tables ------------------------------------------------------------------
OBJECT_SNRS = (None, 50, 20)
OBJECT_TIMINGS = ((1.0, 120), (1.5, 80), (2.0, 60))  # frame interval [s], frames


def part_world(weights=("dsc-phae-sim", "dsc-phae-world", "dsc-phae-grid"), quick=False, log=print,
               timed=None) -> dict:
    """Held-apart sweep and OSIPI-style object for oSVD, the trivial baseline and PHAE with each weights, all on
    the same curves. ``timed``: the weights whose whole-brain time is measured beside oSVD (default: the bundled
    names among ``weights``; a .pt path is labelled by its folder and file)."""
    from BBBAnomalyLib.dsc.phae import PHAEModel

    from pathlib import Path

    def label(w):  # a bundled name as is; a path by its folder and file (e.g. seed runs: s1/dsc-phae-world)
        p = Path(w)
        return f"{p.parent.name}/{p.stem}" if p.suffix == ".pt" else str(w)

    res = {"weights": list(weights)}
    factories = {label(w): (lambda aif, dt, w=w: PHAEModel(aif, dt, weights=w)) for w in weights}
    res["sweep"] = sweep(factories, snrs=(20, 50) if quick else (10, 20, 50, 100),
                         gains=(4.0,) if quick else (4.0, 1.0), frame_intervals=(1.6,) if quick else (1.0, 1.6, 2.2),
                         n_per_tissue=100 if quick else 200, cases=1 if quick else 2, log=log)
    res["object"] = {}
    for dt, frames in OBJECT_TIMINGS[:1] if quick else OBJECT_TIMINGS:
        for snr in OBJECT_SNRS:
            key = f"dt {dt:g} s, {frames} frames, SNR {'none' if snr is None else snr}"
            res["object"][key] = _score_object_timing(factories, snr, dt, frames, reference_object)
            log(f"object {key}: " + ", ".join(f"{m} {v['within']}/14 med {v['cbf_median_abs_error_pct']:.1f}%"
                                              for m, v in res["object"][key].items()))
    if not quick:
        # the wall time of the bundled weights (files given by path are extra training seeds: accuracy only)
        res["timing"] = whole_brain_timing(tuple(timed) if timed is not None
                                           else tuple(w for w in weights if Path(w).suffix != ".pt"))
        log(f"whole brain: {res['timing']}")
    return res


def _score_object_timing(factory, snr, dt, frames, curves_fn):
    curves, aif, dt, cbf_t, cbv_t, labels = curves_fn(snr, dt=dt, n_frames=frames)
    res = _methods(curves, aif, dt, factory)
    cbv = 100.0 * np.trapezoid(curves, dx=dt, axis=1) / np.trapezoid(aif, dx=dt)
    t_cbf = np.array([p[0] for p in OBJECT_TISSUES], float)
    t_cbv = np.array([p[1] for p in OBJECT_TISSUES], float)
    out = {}
    for m, (cbf, _, sec, _tmax, _sd) in res.items():
        cbf_m = np.array([np.mean(6000.0 * cbf[labels == i]) for i in range(len(OBJECT_TISSUES))])
        cbv_m = np.array([np.mean(cbv[labels == i]) for i in range(len(OBJECT_TISSUES))])
        err = cbf_m - t_cbf
        ok = (np.abs(err) <= 15.0 + 0.10 * t_cbf) & (np.abs(cbv_m - t_cbv) <= 1.0 + 0.10 * t_cbv)
        out[m] = {"within": int(ok.sum()), "within_strict_15pct": int((np.abs(err) <= 0.15 * t_cbf).sum()),
                  "cbf_median_abs_error_pct": float(np.median(np.abs(err) / t_cbf) * 100.0),
                  "cbf_median_error_pct": float(np.median(err / t_cbf) * 100.0),
                  "cbf_estimates": [round(float(v), 1) for v in cbf_m], "seconds": sec}
    return out


#: the capillary transit shapes the object is scored under (round 14): the exponential it was built with, the sweep's
#: other three, and two gamma shapes nothing draws
OBJECT_RESIDUES = ("exponential", "lorentzian", "gamma1.5", "gamma", "gamma8", "box")


def object_by_residue(phae_model_factory, residues=OBJECT_RESIDUES, timings=OBJECT_TIMINGS, snrs=OBJECT_SNRS,
                      log=print) -> dict:
    """The OSIPI-style object (held-apart Georgiou AIF) with every tissue's residue of one shape, per shape:
    {residue: {setting: {method: scores}}} as the world part scores the object (``_score_object_timing``). The same
    noise draws for every shape, so the shapes differ only in the curves' form."""
    from functools import partial

    res = {}
    for residue in residues:
        res[residue] = {}
        for dt, frames in timings:
            for snr in snrs:
                key = f"dt {dt:g} s, {frames} frames, SNR {'none' if snr is None else snr}"
                res[residue][key] = _score_object_timing(phae_model_factory, snr, dt, frames,
                                                         partial(reference_object, residue=residue))
        log(f"object, {residue}: " + ", ".join(
            f"{m} {min(v[m]['within'] for v in res[residue].values())}-"
            f"{max(v[m]['within'] for v in res[residue].values())}/14" for m in next(iter(res[residue].values()))))
    return res


def object_by_residue_table(res: dict) -> str:
    """Markdown: per residue shape and method, tissues within the object's tolerance (worst-best of its settings),
    settings with >= 13/14, and the CBF median error (signed, and |.|) over the settings."""
    lines = ["| residue | method | tissues within tolerance (worst–best) | settings with ≥ 13/14 | CBF median error | "
             "CBF median \\|error\\| |", "|---|---|---|---|---|---|"]
    for residue, settings in res.items():
        for m in next(iter(settings.values())):
            within = [v[m]["within"] for v in settings.values()]
            med = [v[m]["cbf_median_error_pct"] for v in settings.values()]
            mabs = [v[m]["cbf_median_abs_error_pct"] for v in settings.values()]
            lines.append(f"| {residue} | {m} | {min(within)}–{max(within)}/14 | {sum(w >= 13 for w in within)}/"
                         f"{len(within)} | {min(med):+.1f}…{max(med):+.1f} % | {min(mabs):.1f}–{max(mabs):.1f} % |")
    return "\n".join(lines)


def world_summary(res: dict, reference: str = "oSVD 0.095") -> dict:
    """Per method, the issue's checks over the whole run: object within-tolerance range and settings with the CBF
    median |error| <= the reference's; sweep rows with CCC >= the reference's; ROI-mean CBF bias range at SNR >= 20
    (gain 4 and gain 1), with GM's range and the rows where all five tissues are within ±15 %."""
    out = {}
    methods = list(dict.fromkeys(r["method"] for r in res["sweep"]))
    ref_ccc = {(r["gain"], r["dt"], r["snr"]): r["ccc"] for r in res["sweep"] if r["method"] == reference}
    for m in methods:
        rows = [r for r in res["sweep"] if r["method"] == m]
        d = {"ccc_rows_ge_reference": f"{sum(r['ccc'] >= ref_ccc[(r['gain'], r['dt'], r['snr'])] for r in rows)}/{len(rows)}",
             "ccc_range": [min(r["ccc"] for r in rows), max(r["ccc"] for r in rows)]}
        for gain in sorted({r["gain"] for r in rows}, reverse=True):
            sel = [r for r in rows if r["gain"] == gain and r["snr"] >= 20]
            b = np.array([[r["bias_" + k] for k in SWEEP_TISSUES] for r in sel])
            # each row's common factor (geometric mean of the five tissues' ratios: a per-case offset) and what is
            # left within the row (the tissues' spread around it: shrinkage toward the prior shows here)
            ratio = np.maximum(1.0 + b / 100.0, 1e-3)
            offset = np.exp(np.log(ratio).mean(axis=1, keepdims=True))
            within = 100.0 * (ratio / offset - 1.0)
            d[f"bias_gain{gain:g}"] = {"range": [float(b.min()), float(b.max())],
                                       "gm_range": [float(b[:, 0].min()), float(b[:, 0].max())],
                                       "rows_within_15": f"{int((np.abs(b) <= 15).all(axis=1).sum())}/{len(sel)}",
                                       "worst_abs": float(np.abs(b).max()),
                                       "row_offset_range": [float(100 * (offset.min() - 1)), float(100 * (offset.max() - 1))],
                                       "within_row_range": [float(within.min()), float(within.max())],
                                       "rows_within_15_after_offset": f"{int((np.abs(within) <= 15).all(axis=1).sum())}/{len(sel)}"}
        obj = [v[m] for v in res["object"].values() if m in v]
        if obj:
            ref = [v[reference] for v in res["object"].values()]
            d["object_within"] = [min(o["within"] for o in obj), max(o["within"] for o in obj)]
            d["object_median_abs_error"] = [min(o["cbf_median_abs_error_pct"] for o in obj),
                                            max(o["cbf_median_abs_error_pct"] for o in obj)]
            d["object_settings_error_le_reference"] = (
                f"{sum(o['cbf_median_abs_error_pct'] <= r['cbf_median_abs_error_pct'] for o, r in zip(obj, ref))}/{len(obj)}")
        out[m] = d
    return out


def summary_table(res: dict) -> str:
    s = world_summary(res)
    lines = ["| method | object within (9 settings) | CBF median abs. error | settings with error <= oSVD 0.095's | "
             "CCC rows >= oSVD 0.095's | CCC | bias SNR >= 20, gain 4 (GM) | rows within ±15 % | gain 4: row offsets "
             "(geometric mean of the 5 tissues) | gain 4: within-row spread | gain 4: rows within ±15 % after the offset | "
             "bias SNR >= 20, gain 1 | rows within ±15 % |", "|---" * 13 + "|"]
    for m, d in s.items():
        g4, g1 = d.get("bias_gain4", {}), d.get("bias_gain1", {})
        rng = lambda v, f="{:+.0f}": f"{f.format(v[0])}…{f.format(v[1])}"  # noqa: E731
        lines.append(
            f"| {m} | {rng(d['object_within'], '{}') + '/14' if 'object_within' in d else ''} | "
            f"{rng(d['object_median_abs_error'], '{:.1f}') + ' %' if 'object_median_abs_error' in d else ''} | "
            f"{d.get('object_settings_error_le_reference', '')} | {d['ccc_rows_ge_reference']} | "
            f"{rng(d['ccc_range'], '{:.2f}')} | "
            + (f"{rng(g4['range'])} % ({rng(g4['gm_range'])} %) | {g4['rows_within_15']} | {rng(g4['row_offset_range'])} % | "
               f"{rng(g4['within_row_range'])} % | {g4['rows_within_15_after_offset']} | " if g4 else "| | | | | ")
            + (f"{rng(g1['range'])} % | {g1['rows_within_15']} |" if g1 else "| |"))
    return "\n".join(lines)


def world_tables(res: dict) -> str:
    lines = ["#### Held-apart sweep (Georgiou AIF, gamma-dispersed measured AIF; 5 tissue classes x 200 curves x 2 cases "
             "per row): CBF bias of the ROI mean (%) and Lin's CCC over all curves", "",
             "| tissue gain | Δt (s) | SNR | method | " + " | ".join(SWEEP_TISSUES) + " | CCC | ρ(fit error, abs log error) |",
             "|---" * (6 + len(SWEEP_TISSUES)) + "|"]
    for r in res["sweep"]:
        lines.append(f"| {r['gain']:g} | {r['dt']:g} | {r['snr']} | {r['method']} | "
                     + " | ".join(f"{r['bias_' + k]:+.0f}" for k in SWEEP_TISSUES)
                     + f" | {r['ccc']:.2f} | {r.get('rho_fit_error_abs_log_error', float('nan')):.2f} |")
    lines += ["", "#### OSIPI-style DSC object (14 tissues, concentration input, kH = ρ = 1, Georgiou AIF, exponential "
              "residue): tissues within tolerance (CBF 15 ml/100 g/min + 10 %, CBV 1 ml/100 ml + 10 %), within a strict "
              "15 % on CBF, and the median |CBF error|", "",
              "| object | method | within | within 15 % | CBF median abs. error | CBF median error |",
              "|---|---|---|---|---|---|"]
    for key, methods in res["object"].items():
        for m, v in methods.items():
            lines.append(f"| {key} | {m} | {v['within']}/14 | {v['within_strict_15pct']}/14 | "
                         f"{v['cbf_median_abs_error_pct']:.1f} % | {v['cbf_median_error_pct']:+.1f} % |")
    if "timing" in res:
        t = res["timing"]
        lines += ["", f"#### Whole brain, same run ({t['brain_voxels']:,} voxels x {t['frames']} frames; deconvolution step "
                  f"only, {t.get('threads', '?')} thread(s) for every method, median over interleaved rounds; 1-min load "
                  f"{t.get('load_1min_before', '?')} before, {t.get('load_1min_after', '?')} after)", "",
                  "| method | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in t.items() if k.startswith(("oSVD", "PHAE"))]
    if any(r["snr"] >= 20 for r in res["sweep"]):
        lines += ["", "#### Summary of the checks above (generated: scripts/phae_world.py: world_summary)", "",
                  summary_table(res)]
    return "\n".join(lines) + "\n"


def whole_brain_timing(weights=("dsc-phae-sim", "dsc-phae-world"), repeats: int = 5, frames: int = 60,
                       threads: int | None = None, round8: bool = False) -> dict:
    """Seconds for the deconvolution step on every brain curve of the whole-brain reference object
    (MNI152 2 mm, ~262k voxels, Δt 1.5 s), oSVD and each PHAE weights, one process, with the same number of
    threads for both (oSVD's chunk workers = torch's threads = ``threads``, default torch's current count).
    One warm-up each, then ``repeats`` rounds that run every method once in turn (so that a change of the
    machine's load hits all alike); the median per method, and the 1-minute load average before and after.
    round8: also each weights with issue 14 round 8's steps as run_dsc runs them by default (the pooled delay, then
    the S0-guided pooling of the curves: "PHAE W + pooling"; the guide from the object's baseline signal)."""
    import os
    import statistics

    import torch

    from BBBAnomalyLib.dsc import DSCParameters, run_dsc
    from BBBAnomalyLib.dsc.phae import PHAEModel
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    threads = int(threads or torch.get_num_threads())
    torch.set_num_threads(threads)
    ph = make_dsc_phantom(snr=50, slices="all", frame_interval=1.5, duration=frames * 1.5, seed=0)
    res = run_dsc(ph.signal, DSCParameters(), aif_mask=ph.masks["aif"], brain_mask=ph.masks["brain"], keep_curves=True)
    curves = np.ascontiguousarray(res.delta_r2s.data[res.brain_mask])
    aif, dt = res.aif, float(res.times[1] - res.times[0])
    brain, voxel_sizes, base = res.brain_mask, ph.signal.voxel_sizes, res.extras["baseline"]
    guide = None
    if round8:
        from BBBAnomalyLib.perfusion.guided_pooling import GuidedPooling, baseline_guide

        guide = baseline_guide(np.asarray(ph.signal.data)[brain], slice(base.first, base.stop))
    del ph, res

    fits = {"oSVD": (lambda m=DeconvolutionModel(aif, dt, "osvd", workers=threads): m.fit(curves))}
    for w in weights:
        key = f"{Path(w).parent.name}/{Path(w).stem}" if str(w).endswith(".pt") else str(w)
        fits[f"PHAE {key}"] = (lambda m=PHAEModel(aif, dt, weights=w, device="cpu"): m.fit(curves))
        if round8:
            def pooled(m=PHAEModel(aif, dt, weights=w, device="cpu")):
                delays = m.pooled_delays(curves, brain, voxel_sizes)[0]
                return m.fit(curves, delay_shift=delays, pooling=GuidedPooling(brain, *guide, voxel_sizes))
            fits[f"PHAE {key} + pooling"] = pooled
    runs = {k: [] for k in fits}
    load_before = os.getloadavg()[0]
    for fn in fits.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in fits.items():
            t = time.perf_counter()
            fn()
            runs[k].append(time.perf_counter() - t)
    out = {"brain_voxels": int(curves.shape[0]), "frames": frames, "threads": threads,
           "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2)}
    out.update({k: statistics.median(v) for k, v in runs.items()})
    return out


def dev_summary(rows: list[dict], gain: float | None = None, snr: float | None = None) -> dict:
    """Per method: mean |ROI bias| over rows x tissues, the bias range, rows with every tissue within ±15 %,
    mean CCC (the dev-sweep table of docs/validation.md); ``gain`` / ``snr``: only the rows with that tissue
    gain / SNR."""
    rows = [r for r in rows if (gain is None or r["gain"] == gain) and (snr is None or r["snr"] == snr)]
    out = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        b = np.array([[r["bias_" + k] for k in SWEEP_TISSUES] for r in rs])
        out[m] = {"mean_abs_bias_pct": float(np.mean(np.abs(b))), "bias_range_pct": [float(b.min()), float(b.max())],
                  "rows_within_15": f"{int((np.abs(b) <= 15).all(axis=1).sum())}/{len(rs)}",
                  "ccc_mean": float(np.mean([r["ccc"] for r in rs])),
                  "bias_by_tissue_pct": {k: float(np.mean(b[:, i])) for i, k in enumerate(SWEEP_TISSUES)}}
        if all(f"tmax_error_{k}" in r for r in rs for k in SWEEP_TISSUES):  # mean ROI Tmax - true delay [s]
            out[m]["tmax_error_by_tissue_s"] = {k: float(np.mean([r[f"tmax_error_{k}"] for r in rs]))
                                                for k in SWEEP_TISSUES}
        off = np.array([v for r in rs for v in r.get("case_offsets", [])])
        if off.size:  # per-case offsets (geometric mean of the five tissues' ratios in one case)
            out[m].update({"case_offset_range_pct": [float(off.min()), float(off.max())],
                           "case_offset_mean_abs_pct": float(np.mean(np.abs(off))),
                           "case_offset_sd_pct": float(np.std(off))})
    return out


@contextlib.contextmanager
def undispersed_measured_aif():
    """Within the block the curve generator leaves the *measured* AIF undispersed: the same random draws (so the
    same tissue curves, noise, tau drawn and ignored), only the AIF differs. An oracle for splitting the held-apart
    sweep's miss into what the AIF's dispersion causes and what it does not (issue 14, round 11)."""
    original = dc._dispersed
    dc._dispersed = lambda values, dt_fine, tau, kernel: values
    try:
        yield
    finally:
        dc._dispersed = original


def training_log_cbf_prior(cases: int = 60, curves: int = 256, seed: int = 5) -> tuple[float, float]:
    """Mean and SD of log CBF [1/s] over the wide training generator's truth (the network's prior)."""
    rng = np.random.default_rng(seed)
    logs = np.concatenate([np.log(dc.simulate_curve_case(rng, curves, dc.TRAINING_WIDE).truth["cbf"])
                           for _ in range(cases)])
    return float(logs.mean()), float(logs.std())


class Deshrunk:
    """PHAE with its log-CBF shrinkage undone analytically (a check, not a shipped option; issue 14, round 11).

    For a Gaussian prior N(mu0, s0^2) on log CBF and a Gaussian likelihood, the posterior's SD s and mean m give the
    likelihood's own estimate x = mu0 + (m - mu0) / (1 - s^2 / s0^2); the factor is capped at ``max_factor`` where
    s approaches s0. CBF <= 0 is left as it is."""

    def __init__(self, aif, dt, prior: tuple[float, float], weights=None, max_factor: float = 2.0):
        from BBBAnomalyLib.dsc.phae import PHAEModel

        self.model, self.prior, self.max_factor = PHAEModel(aif, dt, weights=weights), prior, max_factor

    def fit(self, curves, keep_curves=False):
        from types import SimpleNamespace

        fit = self.model.fit(curves, keep_curves=False)
        mu0, s0 = self.prior
        cbf, positive = fit.cbf.astype(np.float64), fit.cbf > 0
        factor = 1.0 / np.clip(1.0 - (fit.cbf_uncertainty / s0) ** 2, 1.0 / self.max_factor, 1.0)
        cbf[positive] = np.exp(mu0 + (np.log(cbf[positive]) - mu0) * factor[positive])
        return SimpleNamespace(cbf=cbf, fit_error=None, tmax=fit.tmax, cbf_uncertainty=None)


#: issue 14, round 12: the residue shapes of the residue check. The first four are the families both generators draw
#: (and the training saw); gamma1.5 and gamma8 (transit-time shapes 1.5 and 8) no generator draws: shapes nothing was
#: trained on, between the exponential (shape 1) and the drawn gamma (3), and between that and the box
CHECK_RESIDUES = ("exponential", "lorentzian", "gamma", "box", "gamma1.5", "gamma8")


def residue_check(phae_model_factory, residues=CHECK_RESIDUES, settings=None, snrs=(None, 50), gain=4.0,
                  frame_intervals=(1.0, 1.6, 2.2), cases=2, n_per_tissue=100, seed_base=30_000,
                  vascular_dispersion: float | None = None) -> list[dict]:
    """ROI-mean CBF bias per residue shape: every curve of a row has the same residue, the sweep's five tissue
    classes, no tissue dispersion (its own, physical bias is measured elsewhere), one AIF per case.
    settings: the generator (default ``dc.HELD_APART``; ``dc.TRAINING_WIDE`` restricted to leakage-free ΔR2*
    input for the dev reading). snr None = noiseless (SNR 10^5 on the signal).
    vascular_dispersion β [s]: instead, the generator's vascular dispersion exp(-t/β)/β fixed at β, and the biases
    over the curves that got it (the generator disperses half of them): how the same network reads a curve whose
    flat look comes from transport, not from the capillary bed."""
    disp = (0.0, 0.0) if vascular_dispersion is None else (float(vascular_dispersion),) * 2
    settings = dc.replace(dc.HELD_APART if settings is None else settings, tissue_dispersion=disp,
                          leaky_fraction=0.0, concentration_input_fraction=0.0)
    names, par, labels = _tissue_rows(SWEEP_TISSUES, n_per_tissue)
    rows = []
    for residue in residues:
        for snr in snrs:
            per, cover = {}, {}
            for dt in frame_intervals:
                for c in range(cases):
                    # the same seed for every residue: the same AIFs and noise draws, only the shape differs
                    rng = np.random.default_rng(seed_base + 97 * c + int(10 * dt) + (0 if snr is None else int(snr)))
                    cc = dc.simulate_curve_case(rng, len(par), settings, frame_interval=dt,
                                                n_frames=int(round(90.0 / dt)), snr=1e5 if snr is None else float(snr),
                                                tissue_gain=gain, mtt=60.0 * par[:, 1] / par[:, 0], cbv=par[:, 1] / 100.0,
                                                delay=par[:, 2], residue=residue, concentration_input=False)
                    use = cc.truth["dispersion"] > 0 if vascular_dispersion is not None else np.ones(len(par), bool)
                    for m, (cbf, _err, _sec, _tmax, log_sd) in _methods(cc.curves, cc.aif, dt, phae_model_factory).items():
                        per.setdefault(m, []).append([100.0 * (np.mean(cbf[use & (labels == k)])
                                                               / np.mean(cc.truth["cbf"][use & (labels == k)]) - 1.0)
                                                      for k in names])
                        if log_sd is not None:  # does the uncertainty map's 95 % interval still hold the truth?
                            cover.setdefault(m, []).append(metrics.log_interval_coverage(cbf[use], cc.truth["cbf"][use],
                                                                                         log_sd[use])["coverage"])
            for m, b in per.items():
                b = np.array(b)
                rows.append({"residue": residue, "snr": snr, "gain": gain, "method": m,
                             **({"vascular_dispersion_s": vascular_dispersion} if vascular_dispersion is not None else {}),
                             **{f"bias_{k}": float(b[:, i].mean()) for i, k in enumerate(names)},
                             "mean_abs_bias": float(np.abs(b.mean(axis=0)).mean()),
                             **({"uncertainty_coverage": float(np.mean(cover[m]))} if m in cover else {}),
                             "range": [float(b.min()), float(b.max())]})
    return rows


def residue_table(rows: list[dict]) -> str:
    lines = ["| residue | SNR | method | " + " | ".join(SWEEP_TISSUES) + " | mean abs | range over cases |",
             "|---" * (5 + len(SWEEP_TISSUES)) + "|"]
    for r in rows:
        lines.append(f"| {r['residue']} | {'none' if r['snr'] is None else r['snr']:} | {r['method']} | "
                     + " | ".join(f"{r['bias_' + k]:+.0f} %" for k in SWEEP_TISSUES)
                     + f" | {r['mean_abs_bias']:.1f} % | {r['range'][0]:+.0f}…{r['range'][1]:+.0f} % |")
    return "\n".join(lines)


#: card names of the shapes residue_check reads (the keys dsc/phae/systematic.py knows)
CARD_SHAPES = {"exponential": "exponential", "lorentzian": "lorentzian", "gamma1.5": "gamma_k1.5 (never drawn)",
               "gamma": "gamma_k3", "gamma8": "gamma_k8 (never drawn)", "box": "box"}


def residue_card_metric(res: dict, method: str) -> dict:
    """The model card's ``cbf_bias_by_residue_shape_round12`` for one method of a ``residues`` run (``res`` as its
    --out JSON holds it): per shape the held-apart ROI-mean bias averaged over the five tissues, noiseless and at
    SNR 50; the GM bias of dispersed exponential curves at β 1 and 2 s, noiseless. What dsc/phae/systematic.py turns
    into the report's ROI caveat, so computed here, never typed."""
    def tissue_mean(row):
        return round(float(np.mean([row["bias_" + k] for k in SWEEP_TISSUES])))

    rows = [r for r in res["held-apart"] if r["method"] == method]
    by_shape = {}
    for residue, key in CARD_SHAPES.items():
        got = {r["snr"]: tissue_mean(r) for r in rows if r["residue"] == residue}
        if None in got and 50 in got:
            by_shape[key] = [got[None], got[50]]
    dispersion = {}
    for beta in (1, 2):
        for r in res.get(f"held-apart, vascular dispersion {beta} s", []):
            if r["method"] == method and r["residue"] == "exponential" and r["snr"] is None:
                dispersion[f"beta_{beta}s"] = round(float(r["bias_GM"]))
    return {"measured_on": "held-apart generator (Georgiou AIF, gamma-dispersed measured AIF), the sweep's 5 tissue "
                           "classes, gain 4, dt 1/1.6/2.2 s, every curve with one residue shape, no vascular dispersion; "
                           "scripts/phae_world.py residues",
            "mean_roi_bias_pct_noiseless_snr50": by_shape,
            "vascular_dispersion_exponential_gm_pct_noiseless": dispersion}


#: the held-apart sweep by residue shape (issue 14, round 12): the generator's mix as validated, then each shape alone
SWEEP_RESIDUES = (None, "exponential", "lorentzian", "gamma1.5", "gamma", "box")


def sweep_by_residue(phae_model_factory, residues=SWEEP_RESIDUES, snrs=(20, 50, 100), gains=(4.0, 1.0),
                     frame_intervals=(1.0, 1.6, 2.2), n_per_tissue=200, cases=2,
                     seed_bases=(10_000, 20_000, 40_000)) -> dict:
    """The held-apart sweep once per residue shape, with the world part's draws (seed base 10 000, SNR >= 20) and
    the same rows drawn again from other seeds (``seed_bases``: 2 cases per row are few, and one case's AIF moves a
    whole row); per shape, gain and method over all of them: rows with every tissue within ±15 % (absolute and as a
    ratio to WM), the bias ranges and the mean CCC."""
    out = {}
    for residue in residues:
        rows = [dict(r, seed_base=base) for base in seed_bases
                for r in sweep(phae_model_factory, snrs=snrs, gains=gains, frame_intervals=frame_intervals,
                               n_per_tissue=n_per_tissue, cases=cases, residue=residue, log=lambda s: None,
                               seed_base=base)]
        summary = {}
        for gain in gains:
            for m in dict.fromkeys(r["method"] for r in rows):
                rs = [r for r in rows if r["method"] == m and r["gain"] == gain]
                b = np.array([[r["bias_" + k] for k in SWEEP_TISSUES] for r in rs])
                rb = np.array([[r["ratio_bias_" + k] for k in SWEEP_TISSUES if k != RATIO_REFERENCE] for r in rs])
                summary[f"gain {gain:g} {m}"] = {
                    "rows_within_15": f"{int((np.abs(b) <= 15).all(axis=1).sum())}/{len(rs)}",
                    "bias_range_pct": [float(b.min()), float(b.max())], "mean_abs_bias_pct": float(np.abs(b).mean()),
                    "ratio_rows_within_15": f"{int((np.abs(rb) <= 15).all(axis=1).sum())}/{len(rs)}",
                    "ratio_range_pct": [float(rb.min()), float(rb.max())],
                    "ccc_mean": float(np.mean([r["ccc"] for r in rs])),
                    "rows_within_15_per_seed_base": {
                        str(base): f"{int((np.abs(b[[r['seed_base'] == base for r in rs]]) <= 15).all(axis=1).sum())}"
                                   f"/{sum(r['seed_base'] == base for r in rs)}" for base in seed_bases},
                    # per tissue: where one tissue has another shape than the rest (round 14), its own range
                    "bias_range_by_tissue_pct": {k: [float(b[:, i].min()), float(b[:, i].max())]
                                                 for i, k in enumerate(SWEEP_TISSUES)},
                    # and its ratio to WM (round 15: the ratio a reader takes when WM's transit differs from it)
                    "ratio_range_by_tissue_pct": {k: [float(rb[:, i].min()), float(rb[:, i].max())]
                                                  for i, k in enumerate(t for t in SWEEP_TISSUES
                                                                        if t != RATIO_REFERENCE)}}
        key = ("mix" if residue is None else residue if isinstance(residue, str)
               else ", ".join(f"{k} {v}" for k, v in residue.items()) if isinstance(residue, dict)
               else "mix of " + "+".join(residue))
        out[key] = {"rows": rows, "summary": summary}
    return out


def sweep_by_residue_table(res: dict) -> str:
    lines = ["| residue | gain | method | rows within ±15 % (per seed set) | bias range | mean abs bias | ratio-to-WM rows "
             "within ±15 % | ratio range | CCC |", "|---" * 9 + "|"]
    for residue, v in res.items():
        for key, s_ in v["summary"].items():
            if "0.035" in key or "trivial" in key:
                continue
            gain, method = key.split(" ", 2)[1], key.split(" ", 2)[2]
            per = ", ".join(s_["rows_within_15_per_seed_base"].values())
            lines.append(f"| {residue} | {gain} | {method} | {s_['rows_within_15']} ({per}) | {s_['bias_range_pct'][0]:+.0f}…"
                         f"{s_['bias_range_pct'][1]:+.0f} % | {s_['mean_abs_bias_pct']:.1f} % | {s_['ratio_rows_within_15']} | "
                         f"{s_['ratio_range_pct'][0]:+.0f}…{s_['ratio_range_pct'][1]:+.0f} % | {s_['ccc_mean']:.2f} |")
    return "\n".join(lines)


def residue_figure(res: dict, path, snr=50, methods=("oSVD 0.095", "PHAE dsc-phae-wide")) -> None:
    """Bar chart: the ROI-mean CBF bias (mean over the five tissue classes, with their range) per residue shape on the
    held-apart generator at ``snr``, beside the dispersed curves' (``residues`` part output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # from the heavy-tailed Lorentzian through gamma transit-time shapes k = 1 (exponential) ... 8 to plug flow (box)
    order = ("lorentzian", "exponential", "gamma1.5", "gamma", "gamma8", "box")
    names = {"lorentzian": "Lorentzian", "exponential": "exponential\n(gamma k = 1)", "gamma1.5": "gamma k = 1.5\n(never drawn)",
             "gamma": "gamma k = 3", "gamma8": "gamma k = 8\n(never drawn)", "box": "box\n(plug flow)"}
    groups = [("held-apart", r) for r in order] + [
        (f"held-apart, vascular dispersion {b:g} s", "exponential") for b in (1.0, 2.0)]
    labels = [names[r] if key == "held-apart" else f"exponential +\ntransport β = {key.split()[-2]} s" for key, r in groups]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=120)
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        means, lo, hi = [], [], []
        for key, residue in groups:
            row = next((r for r in res.get(key, []) if r["residue"] == residue and r["snr"] == snr and r["method"] == m),
                       None)
            b = [row[f"bias_{k}"] for k in SWEEP_TISSUES] if row else [np.nan]
            means.append(np.mean(b)), lo.append(np.mean(b) - np.min(b)), hi.append(np.max(b) - np.mean(b))
        x = np.arange(len(groups)) + (j - (len(methods) - 1) / 2) * width
        ax.bar(x, means, width, yerr=[lo, hi], capsize=2, label=m.replace("PHAE ", "PHAE (") + (")" if "PHAE" in m else ""))
    ax.axhspan(-15, 15, color="0.9", zorder=0, label="±15 %")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(np.arange(len(groups)), labels, fontsize=8)
    ax.set_ylabel("ROI-mean CBF bias (%)")
    ax.set_title(f"CBF bias by the capillary residue's shape (held-apart AIF, SNR {snr}, tissue gain 4); bars: mean of "
                 "five tissues, whiskers: their range", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def trust_summary(rows: list[dict]) -> dict:
    """Per method and tissue gain (rows at SNR >= 20): the ROI-ratio biases against WM (what an rCBF map reads)
    beside the absolute ROI biases, the rows with every tissue within ±15 % for each, and for methods with an
    uncertainty map its calibration (coverage of the 95 % interval over informative curves, their share, the
    share of CBF <= 0) over all SNRs (issue 14, round 11)."""
    ratio_keys = [k for k in SWEEP_TISSUES if k != RATIO_REFERENCE]
    out = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        d = {}
        for gain in sorted({r["gain"] for r in rows}, reverse=True):
            rs = [r for r in rows if r["method"] == m and r["gain"] == gain and r["snr"] >= 20]
            if not rs:
                continue
            b = np.array([[r["bias_" + k] for k in SWEEP_TISSUES] for r in rs])
            q = np.array([[r["ratio_bias_" + k] for k in ratio_keys] for r in rs])
            d[f"gain{gain:g}"] = {"abs_range": [float(b.min()), float(b.max())],
                                  "abs_rows_within_15": f"{int((np.abs(b) <= 15).all(axis=1).sum())}/{len(rs)}",
                                  "ratio_range": [float(q.min()), float(q.max())],
                                  "ratio_rows_within_15": f"{int((np.abs(q) <= 15).all(axis=1).sum())}/{len(rs)}",
                                  "ratio_mean_by_tissue": {k: float(np.mean(q[:, i])) for i, k in enumerate(ratio_keys)}}
        cov = [r for r in rows if r["method"] == m and "uncertainty_coverage" in r]
        if cov:
            for gain in sorted({r["gain"] for r in cov}, reverse=True):
                rg = [r for r in cov if r["gain"] == gain]
                d.setdefault(f"gain{gain:g}", {})["uncertainty"] = {
                    q: [float(min(r["uncertainty_" + q] for r in rg)), float(max(r["uncertainty_" + q] for r in rg))]
                    for q in ("coverage", "coverage_all", "informative", "nonpositive")}
                flagged = [r["uncertainty_nonpositive_flagged"] for r in rg if "uncertainty_nonpositive_flagged" in r]
                if flagged:
                    d[f"gain{gain:g}"]["uncertainty"]["nonpositive_flagged"] = [float(min(flagged)), float(max(flagged))]
        out[m] = d
    return out


def trust_tables(rows: list[dict], title: str) -> str:
    """Markdown: per row the ratio biases and the uncertainty map's calibration, then the summary."""
    ratio_keys = [k for k in SWEEP_TISSUES if k != RATIO_REFERENCE]
    lines = [f"##### {title}: ROI-ratio bias against the case's own WM (%), and the uncertainty map's calibration", "",
             "| tissue gain | Δt (s) | SNR | method | " + " | ".join(f"{k}/WM" for k in ratio_keys)
             + " | 95 % interval holds truth (informative curves) | informative (SD < 100 %) | CBF <= 0 | "
               "of those, marked uninformative |",
             "|---" * (8 + len(ratio_keys)) + "|"]
    pct = lambda r, k: f"{100 * r[k]:.0f} %" if k in r else "—"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['gain']:g} | {r['dt']:g} | {r['snr']:g} | {r['method']} | "
                     + " | ".join(f"{r['ratio_bias_' + k]:+.0f}" for k in ratio_keys)
                     + f" | {pct(r, 'uncertainty_coverage')} | {pct(r, 'uncertainty_informative')} | "
                       f"{pct(r, 'uncertainty_nonpositive')} | {pct(r, 'uncertainty_nonpositive_flagged')} |")
    summ = trust_summary(rows)
    lines += ["", f"Summary ({title}; rows at SNR >= 20; the calibration over all SNRs):", "",
              "| method | tissue gain | absolute ROI bias | rows within ±15 % | ratio-to-WM bias | rows within ±15 % | "
              "mean ratio bias GM / tumor / hypoperfused / early | 95 % interval coverage | informative | CBF <= 0 | "
              "CBF <= 0 marked uninformative |",
              "|---" * 11 + "|"]
    rng = lambda v, f="{:+.0f}": f"{f.format(v[0])}…{f.format(v[1])}"  # noqa: E731
    for m, d in summ.items():
        for g, v in d.items():
            if "abs_range" not in v:
                continue
            u = v.get("uncertainty")
            lines.append(f"| {m} | {g[4:]} | {rng(v['abs_range'])} % | {v['abs_rows_within_15']} | "
                         f"{rng(v['ratio_range'])} % | {v['ratio_rows_within_15']} | "
                         + " / ".join(f"{x:+.0f}" for x in v["ratio_mean_by_tissue"].values()) + " % | "
                         + (f"{rng([100 * x for x in u['coverage']], '{:.0f}')} % | "
                            f"{rng([100 * x for x in u['informative']], '{:.0f}')} % | "
                            f"{rng([100 * x for x in u['nonpositive']], '{:.0f}')} % | "
                            + (f"{rng([100 * x for x in u['nonpositive_flagged']], '{:.0f}')} % |"
                               if "nonpositive_flagged" in u else "— |") if u else "— | — | — | — |"))
    return "\n".join(lines) + "\n"


#: the delay check's tissues (CBF ml/100 g/min, CBV ml/100 ml), each at every fixed delay of the check
DELAY_TISSUES = {"GM": (60.0, 4.0), "WM": (22.0, 2.6), "tumor": (110.0, 6.0)}


def delay_check(phae_model_factory, delays=(0.0, 2.0, 4.0), gains=(4.0, 1.0), snrs=(20, 50), frame_interval=1.5,
                duration=90.0, cases=3, n_per_tissue=200, settings=None, seed_base=60_000, log=print) -> list[dict]:
    """Tmax error and ROI-mean CBF bias at FIXED tissue delays on the training-side generator (default
    ``TRAINING_WIDE`` without leakage, ΔR2* input), seeds from 60_000 (never training seeds; issue 14, round 7).
    Per (gain, SNR, case) one AIF and one noise draw serve every delay (the same seed), so rows at different
    delays differ only in the delay. Rows: gain, snr, delay, method, per tissue the ROI-mean CBF bias [%], the
    mean and median Tmax minus the true delay [s], and the CCC over the row's curves."""
    settings = dc.replace(dc.TRAINING_WIDE, leaky_fraction=0.0) if settings is None else settings
    names, par, labels = _tissue_rows(DELAY_TISSUES, n_per_tissue)
    rows = []
    for gain in gains:
        for snr in snrs:
            for delay in delays:
                per = {}
                for c in range(cases):
                    rng = np.random.default_rng(seed_base + 101 * c + int(snr) * 1000 + int(gain) * 7)
                    cc = dc.simulate_curve_case(rng, len(par), settings, frame_interval=frame_interval,
                                                n_frames=int(round(duration / frame_interval)), snr=float(snr),
                                                tissue_gain=float(gain), concentration_input=False,
                                                mtt=60.0 * par[:, 1] / par[:, 0], cbv=par[:, 1] / 100.0,
                                                delay=float(delay))
                    truth = cc.truth["cbf"]
                    for m, (cbf, _err, _sec, tmax, _sd) in _methods(cc.curves, cc.aif, frame_interval,
                                                               phae_model_factory).items():
                        d = per.setdefault(m, {"bias": {k: [] for k in names}, "tmax_mean": {k: [] for k in names},
                                               "tmax_median": {k: [] for k in names}, "ccc": []})
                        d["ccc"].append(metrics.lin_ccc(6000 * truth, 6000 * cbf))
                        for k in names:
                            sel = labels == k
                            d["bias"][k].append(100.0 * (np.mean(cbf[sel]) / np.mean(truth[sel]) - 1.0))
                            if tmax is not None:
                                d["tmax_mean"][k].append(float(np.mean(tmax[sel])) - delay)
                                d["tmax_median"][k].append(float(np.median(tmax[sel])) - delay)
                for m, d in per.items():
                    row = {"gain": gain, "snr": snr, "delay": delay, "method": m, "ccc": float(np.mean(d["ccc"])),
                           **{f"bias_{k}": float(np.mean(v)) for k, v in d["bias"].items()},
                           **{f"tmax_error_{k}": float(np.mean(v)) for k, v in d["tmax_mean"].items() if v},
                           **{f"tmax_median_error_{k}": float(np.mean(v)) for k, v in d["tmax_median"].items() if v}}
                    rows.append(row)
                    log(f"gain {gain:g} SNR {snr} delay {delay:g} s {m}: CCC {row['ccc']:.2f} "
                        + " ".join(f"{k} {row['bias_' + k]:+.0f}%"
                                   + (f" Tmax {row['tmax_error_' + k]:+.2f}s" if 'tmax_error_' + k in row else "")
                                   for k in names))
    return rows


def main(argv=None) -> int:
    """``python scripts/phae_world.py dev --weights W [W ...]``: the dev sweep (training generator, other seeds)
    for choosing a recipe or a training seed; never the held-apart sets."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("part", choices=["dev", "delay", "trust", "residues", "object"],
                    help="dev: the dev sweep; delay: delay_check (fixed tissue delays --delays on TRAINING_WIDE); "
                         "trust: ratios to WM and the uncertainty map's calibration on the held-apart sweep (the "
                         "world part's rows) and on the dev sweep (--gains, --snrs); residues: the ROI bias per "
                         "residue shape (residue_check), noiseless and at SNR 50, on the training generator (dev) "
                         "and the held-apart one, including two gamma shapes no generator draws; object: the "
                         "OSIPI-style object (held-apart AIF, 9 timings/SNRs) once per residue shape (--residues)")
    ap.add_argument("--delays", type=float, nargs="+", default=[0.0, 2.0, 4.0],
                    help="delay: the fixed tissue delays [s] (default 0 2 4)")
    ap.add_argument("--weights", nargs="+", required=True, help="bundled names or .pt paths")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--curves", type=int, default=150, help="curves per tissue class and case")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--families", nargs="+", default=None,
                    help="AIF families of the dev generator (default: TRAINING's gamma and parker); e.g. a family a "
                         "variant was trained without")
    ap.add_argument("--kernels", nargs="+", default=None, help="dispersion kernels of the dev generator (default: exponential)")
    ap.add_argument("--gains", type=float, nargs="+", default=[4.0, 2.0],
                    help="tissue gains of the dev rows (default 4 2; 1 = the low-CNR regime, a GM drop of a few per cent)")
    ap.add_argument("--snrs", type=float, nargs="+", default=[20, 50], help="SNRs of the dev rows (default 20 50)")
    ap.add_argument("--deshrink", action="store_true",
                    help="trust: also each weights with its log-CBF shrinkage undone analytically (Deshrunk: a check)")
    ap.add_argument("--undispersed-aif", action="store_true",
                    help="trust: also the held-apart cases with the measured AIF left undispersed (an oracle: what the "
                         "AIF's dispersion accounts for)")
    ap.add_argument("--by-residue-sweep", action="store_true",
                    help="residues: also the held-apart sweep (SNR 20-100, gains 4 and 1) once per residue shape "
                         "(sweep_by_residue; ~1 min per weights)")
    ap.add_argument("--mix", nargs="+", metavar="SHAPES", default=None,
                    help="residues: only the held-apart sweep (gain 4, SNR 20-100, three seed sets) with each curve's "
                         "residue drawn from a mix, one mix per comma-separated list, e.g. exponential,lorentzian,gamma1.5")
    ap.add_argument("--tumour-shape", nargs="+", metavar="SHAPE", default=None,
                    help="residues: only the held-apart sweep (gain 4, SNR 20-100, three seed sets) with every tissue "
                         "exponential (or --background-shape) but the tumour, once per SHAPE (a case whose tumour's "
                         "transit differs from the rest)")
    ap.add_argument("--background-shape", nargs="+", metavar="SHAPE", default=["exponential"],
                    help="with --tumour-shape: the residue of every tissue but the tumour (default exponential; e.g. box "
                         "for near-plug-flow normal tissue beside a heterogeneous tumour). Several: every pair of "
                         "background and tumour shape, and with --out a figure of the tumour/WM ratio's bias per pair")
    ap.add_argument("--update-cards", action="store_true",
                    help="residues: write each bundled weights' per-shape ROI bias into its model card "
                         "(metrics.cbf_bias_by_residue_shape_round12: the report's ROI caveat, dsc/phae/systematic.py); "
                         "with --tumour-shape and several --background-shape, the tumour/WM ratio's bias by pair "
                         "(metrics.tumour_wm_ratio_bias_by_shape_pair_round15)")
    ap.add_argument("--told-shape", choices=["estimate", "truth"], default="estimate",
                    help="object, for weights told the transit shape (train_phae_world.py --shape-code): the case's best "
                         "shape by shape_evidence (estimate, what a user gets) or each object's true shape (truth: an "
                         "oracle, what the network reads when the shape is right; issue 14, round 16)")
    ap.add_argument("--residues", nargs="+", default=list(OBJECT_RESIDUES), metavar="SHAPE",
                    help="object: the residue shapes (default: " + " ".join(OBJECT_RESIDUES) + "; gamma<k> for any k >= 1)")
    ap.add_argument("--object", action="store_true",
                    help="also the OSIPI-style object on the Parker AIF (a training family: the dev object), 9 settings")
    args = ap.parse_args(argv)
    import torch

    from BBBAnomalyLib.dsc.phae import PHAEModel

    torch.set_num_threads(args.threads)
    label = lambda w: f"{Path(w).parent.name}/{Path(w).stem}" if str(w).endswith(".pt") else str(w)  # noqa: E731
    factories = {label(w): (lambda aif, dt, w=w: PHAEModel(aif, dt, weights=w)) for w in args.weights}
    if args.part == "delay":
        return _main_delay(args, factories)
    if args.part == "trust":
        return _main_trust(args, factories)
    if args.part == "object":
        return _main_object(args, factories)
    if args.part == "residues" and args.tumour_shape:
        return _main_tumour_shape(args, factories)
    if args.part == "residues" and args.mix:
        from BBBAnomalyLib.phantoms.dsc_physics import is_residue

        mixes = [tuple(m.split(",")) for m in args.mix]
        bad = [name for mix in mixes for name in mix if not is_residue(name)]
        if bad:
            print(f"error: unknown residue shape(s) {', '.join(bad)}: use exponential, lorentzian, gamma, box or "
                  "gamma<k> (k >= 1)", file=sys.stderr)
            return 2
        res = sweep_by_residue(factories, residues=[None, *mixes], gains=(4.0,))
        print("held-apart sweep (gain 4, SNR 20-100) by mix of residue shapes:\n\n" + sweep_by_residue_table(res))
        if args.out:
            args.out.write_text(json.dumps(res, indent=1), encoding="utf-8")
        return 0
    if args.part == "residues":
        res = {"dev (TRAINING_WIDE)": residue_check(factories, settings=dc.TRAINING_WIDE),
               "held-apart": residue_check(factories)}
        for title, rows in res.items():
            print(f"\n{title}, tissue gain 4, no tissue dispersion:\n\n" + residue_table(rows))
        for beta in (1.0, 2.0):
            key = f"held-apart, vascular dispersion {beta:g} s"
            res[key] = residue_check(factories, residues=("exponential", "gamma1.5"), vascular_dispersion=beta)
            print(f"\n{key} (the dispersed curves), tissue gain 4:\n\n" + residue_table(res[key]))
        if args.update_cards:
            _update_cards(res, args.weights)
        if args.by_residue_sweep:
            res["held-apart sweep by residue"] = sweep_by_residue(factories)
            print("\nheld-apart sweep (SNR 20-100) by residue shape:\n\n" + sweep_by_residue_table(res["held-apart sweep by residue"]))
        if args.out:
            args.out.write_text(json.dumps(res, indent=1), encoding="utf-8")
            residue_figure(res, args.out.with_suffix(".png"))
        return 0
    try:
        rows = dev_sweep(factories, log=lambda s: None, cases=args.cases, n_per_tissue=args.curves,
                         families=args.families, kernels=args.kernels, gains=args.gains,
                         snrs=[int(v) if float(v).is_integer() else v for v in args.snrs])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = dev_summary(rows)
    by_gain_snr = {f"gain {g:g} SNR {n:g}": dev_summary(rows, gain=g, snr=n)
                   for g in dict.fromkeys(r["gain"] for r in rows) for n in dict.fromkeys(r["snr"] for r in rows)}
    for m, v in summary.items():
        print(f"{m}: mean |bias| {v['mean_abs_bias_pct']:.1f} %, range {v['bias_range_pct'][0]:+.0f}..."
              f"{v['bias_range_pct'][1]:+.0f} %, rows within ±15 % {v['rows_within_15']}, CCC {v['ccc_mean']:.2f}, "
              f"case offsets {v['case_offset_range_pct'][0]:+.0f}...{v['case_offset_range_pct'][1]:+.0f} % "
              f"(mean |.| {v['case_offset_mean_abs_pct']:.1f}, SD {v['case_offset_sd_pct']:.1f})")
    if len(by_gain_snr) > 1:
        for key, summ in by_gain_snr.items():
            print(f"  {key}: " + "; ".join(f"{m} mean |bias| {v['mean_abs_bias_pct']:.1f} % ({v['bias_range_pct'][0]:+.0f}..."
                                           f"{v['bias_range_pct'][1]:+.0f}), CCC {v['ccc_mean']:.2f}"
                                           for m, v in summ.items()))
    for key, summ in (by_gain_snr if len(by_gain_snr) > 1 else {"all rows": summary}).items():
        for m, v in summ.items():
            if "tmax_error_by_tissue_s" in v:  # the delayed classes: hypoperfused +3 s, early -1.5 s, WM +0.5 s
                print(f"  {key} {m}: " + ", ".join(f"{k} {v['bias_by_tissue_pct'][k]:+.0f} % / Tmax "
                                                   f"{v['tmax_error_by_tissue_s'][k]:+.2f} s" for k in SWEEP_TISSUES))
    obj = {}
    if args.object:
        from functools import partial

        for dt, frames in OBJECT_TIMINGS:
            for snr in OBJECT_SNRS:
                key = f"dt {dt:g} s, {frames} frames, SNR {'none' if snr is None else snr}"
                obj[key] = _score_object_timing(factories, snr, dt, frames, partial(reference_object, aif="parker"))
        for m in dict.fromkeys(m for v in obj.values() for m in v):
            within = [v[m]["within"] for v in obj.values()]
            med = [v[m]["cbf_median_error_pct"] for v in obj.values()]
            print(f"dev object (Parker AIF) {m}: within {min(within)}-{max(within)}/14, CBF median error "
                  f"{min(med):+.1f}...{max(med):+.1f} %")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary, "by_gain_snr": by_gain_snr, "object": obj},
                                       indent=1), encoding="utf-8")
    return 0


def shape_pairs(factories, tumour_shapes, background_shapes, **kw) -> dict:
    """The held-apart sweep (gain 4, SNR 20-100, three seed sets) once per pair of shapes: every tissue but the tumour
    of the background's shape, the tumour of its own. {background: {tumour: sweep_by_residue entry}} (round 15: the
    tumour/WM ratio a reader takes when normal tissue and tumour differ in capillary transit)."""
    out = {}
    for bg in background_shapes:
        cases = [{k: (shape if k == "tumor" else bg) for k in SWEEP_TISSUES} for shape in tumour_shapes]
        res = sweep_by_residue(factories, residues=cases, gains=(4.0,), **kw)
        out[bg] = dict(zip(tumour_shapes, res.values()))
    return out


def shape_pair_ratios(pairs: dict, method: str) -> dict:
    """Per pair: the tumour/WM ratio's bias over the rows of ``method`` (mean, mean |.|, range, rows within ±15 %)."""
    out = {}
    for bg, by_tumour in pairs.items():
        for tumour, v in by_tumour.items():
            rb = np.array([r["ratio_bias_tumor"] for r in v["rows"] if r["method"] == method])
            out[(bg, tumour)] = {"mean_pct": float(rb.mean()), "mean_abs_pct": float(np.abs(rb).mean()),
                                 "range_pct": [float(rb.min()), float(rb.max())],
                                 "within_15": f"{int((np.abs(rb) <= 15).sum())}/{len(rb)}"}
    return out


#: transit shapes from the most heterogeneous to the most homogeneous (round 15's pairs are read in this order)
HOMOGENEITY_ORDER = ("lorentzian", "exponential", "gamma1.5", "gamma", "gamma8", "box")


def shape_pair_card_metric(pairs: dict, method: str) -> dict:
    """The card's ``tumour_wm_ratio_bias_by_shape_pair_round15`` (systematic.CARD_RATIO_METRIC) for one method of a pair run: the range of the
    pairs' mean tumour/WM ratio bias where tumour and the rest share a shape, where the tumour's transit is more
    homogeneous than the rest's, and where it is less (HOMOGENEITY_ORDER). Computed, never typed."""
    ratios = shape_pair_ratios(pairs, method)
    groups = {"same_shape": [], "tumour_more_homogeneous": [], "tumour_less_homogeneous": []}
    for (bg, tumour), v in ratios.items():
        step = HOMOGENEITY_ORDER.index(tumour) - HOMOGENEITY_ORDER.index(bg)
        key = "same_shape" if step == 0 else "tumour_more_homogeneous" if step > 0 else "tumour_less_homogeneous"
        groups[key].append(v["mean_pct"])
    return {"measured_on": "held-apart sweep (Georgiou AIF, gamma-dispersed measured AIF), gain 4, SNR 20/50/100, "
                           "dt 1/1.6/2.2 s, three seed sets; every tissue but the tumour of one shape, the tumour of "
                           f"another, shapes {', '.join(dict.fromkeys(b for b, _ in ratios))}; "
                           "scripts/phae_world.py residues --tumour-shape ... --background-shape ...",
            "mean_ratio_bias_pct": {k: [round(min(v)), round(max(v))] for k, v in groups.items() if v}}


def _update_ratio_cards(pairs: dict, weights) -> None:
    """Each bundled weights' card gets its own shape_pair_card_metric (systematic.py reads it)."""
    from BBBAnomalyLib.dsc.phae.systematic import CARD_RATIO_METRIC

    def put(metrics, w):
        metrics[CARD_RATIO_METRIC] = shape_pair_card_metric(pairs, f"PHAE {w}")

    _write_cards(weights, put, "tumour/WM ratio bias by pair of shapes")


def shape_pair_figure(pairs: dict, path, methods=("oSVD 0.095", "PHAE dsc-phae-wide")) -> None:
    """Heat maps, one per method: the mean bias of the tumour/WM CBF ratio per (normal tissue's shape, tumour's shape)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bgs = list(pairs)
    tumours = list(next(iter(pairs.values())))
    names = {"exponential": "exponential", "gamma": "gamma k 3", "box": "plug flow"}
    name = lambda r: names.get(r, r.replace("gamma", "gamma k "))  # noqa: E731
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods) + 1.4, 3.4), dpi=120, squeeze=False,
                             layout="constrained")
    for i_ax, (ax, m) in enumerate(zip(axes[0], methods)):
        r = shape_pair_ratios(pairs, m)
        grid = np.array([[r[(bg, t)]["mean_pct"] for t in tumours] for bg in bgs])
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-60, vmax=60)
        for i, bg in enumerate(bgs):
            for j, t in enumerate(tumours):
                ax.text(j, i, f"{grid[i, j]:+.0f} %\n{r[(bg, t)]['within_15']}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(tumours)), [name(t) for t in tumours], fontsize=7, rotation=20)
        ax.set_yticks(range(len(bgs)), [name(b) for b in bgs] if i_ax == 0 else [], fontsize=7)
        ax.set_xlabel("tumour's residue", fontsize=8)
        if i_ax == 0:
            ax.set_ylabel("every other tissue's residue", fontsize=8)
        ax.set_title(m, fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8).set_label("mean bias of tumour/WM CBF (%)", fontsize=8)
    fig.suptitle("tumour/WM CBF ratio by transit shape (held-apart sweep, gain 4, SNR 20-100; text: mean bias, rows "
                 "within ±15 %)", fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _main_tumour_shape(args, factories) -> int:
    from BBBAnomalyLib.phantoms.dsc_physics import is_residue

    bad = [name for name in [*args.tumour_shape, *args.background_shape] if not is_residue(name)]
    if bad:
        print(f"error: unknown residue shape(s) {', '.join(bad)}: use exponential, lorentzian, gamma, box or "
              "gamma<k> (k >= 1)", file=sys.stderr)
        return 2
    if args.update_cards and (len(set(args.background_shape)) < 2 or len(set(args.tumour_shape)) < 2):
        print("error: --update-cards with --tumour-shape needs two or more shapes in both --tumour-shape and "
              "--background-shape (the pairs the card's ratio ranges are read from)", file=sys.stderr)
        return 2
    pairs = shape_pairs(factories, args.tumour_shape, args.background_shape)
    for bg, by_tumour in pairs.items():
        print(f"held-apart sweep (gain 4, SNR 20-100), every tissue {bg} but the tumour:\n")
        print("| tumour's shape | method | tumour bias range | other tissues' bias range | tumour/WM ratio bias range "
              "| rows within ±15 % |\n|---|---|---|---|---|---|")
        for shape, v in by_tumour.items():
            for key, s_ in v["summary"].items():
                if "0.035" in key or "trivial" in key:
                    continue
                t = s_["bias_range_by_tissue_pct"]["tumor"]
                rest = [x for k, r in s_["bias_range_by_tissue_pct"].items() if k != "tumor" for x in r]
                r = s_["ratio_range_by_tissue_pct"]["tumor"]
                print(f"| {shape} | {key.split(' ', 2)[2]} | {t[0]:+.0f}…{t[1]:+.0f} % | {min(rest):+.0f}…{max(rest):+.0f} % "
                      f"| {r[0]:+.0f}…{r[1]:+.0f} % | {s_['rows_within_15']} |")
        print()
    methods = [m for m in dict.fromkeys(r["method"] for v in next(iter(pairs.values())).values() for r in v["rows"])
               if "0.035" not in m and "trivial" not in m]
    print("tumour/WM CBF ratio, mean bias (mean |bias|; rows within ±15 %) per pair of shapes:\n")
    print("| other tissues | tumour | " + " | ".join(methods) + " |\n|---|---|" + "---|" * len(methods))
    ratios = {m: shape_pair_ratios(pairs, m) for m in methods}
    for bg, by_tumour in pairs.items():
        for t in by_tumour:
            print(f"| {bg} | {t} | " + " | ".join(f"{ratios[m][(bg, t)]['mean_pct']:+.0f} % "
                                                   f"({ratios[m][(bg, t)]['mean_abs_pct']:.0f} %; "
                                                   f"{ratios[m][(bg, t)]['within_15']})" for m in methods) + " |")
    if args.update_cards:
        _update_ratio_cards(pairs, args.weights)
    if args.out:
        import json

        # rows of the methods the tables show, with their numbers (to 1e-3) and not the per-case lists: the file stays
        # small enough to keep beside the docs; the summaries keep every method
        for by_t in pairs.values():
            for v in by_t.values():
                v["rows"] = [{k: (round(x, 3) if isinstance(x, float) else x) for k, x in r.items()
                              if k in ("method", "gain", "dt", "snr", "seed_base", "ccc") or k.startswith("bias_")
                              or k.startswith("ratio_bias_")}
                             for r in v["rows"] if r["method"] in methods]
        # one background keeps round 14's layout ({"GM exponential, ..., tumor box": entry}); several nest by background
        res = pairs if len(pairs) > 1 else {
            ", ".join(f"{k} {t if k == 'tumor' else bg}" for k in SWEEP_TISSUES): v
            for bg, by_t in pairs.items() for t, v in by_t.items()}
        args.out.write_text(json.dumps(res, separators=(",", ":")), encoding="utf-8")
        if len(pairs) > 1:
            shape_pair_figure(pairs, args.out.with_suffix(".png"),
                              methods=[m for m in methods if m.startswith("oSVD 0.095") or m.startswith("PHAE")])
    return 0


def _main_object(args, factories) -> int:
    import json

    from BBBAnomalyLib.phantoms.dsc_physics import is_residue

    bad = [r for r in args.residues if not is_residue(r)]
    if bad:
        print(f"error: unknown residue shape(s) {', '.join(bad)}: use exponential, lorentzian, gamma, box or "
              "gamma<k> (k >= 1)", file=sys.stderr)
        return 2
    if args.told_shape == "truth":  # round 16: a shape-told network is given each object's true shape (an oracle)
        from BBBAnomalyLib.dsc.phae import PHAEModel

        res = {}
        for r in args.residues:
            told = "exponential" if r == "lorentzian" else r  # the Lorentzian codes as the exponential
            oracle = {f"{label} told {told}": (lambda aif, dt, w=w, told=told: PHAEModel(aif, dt, weights=w,
                                                                                              transit_shape=told))
                      for label, w in zip(factories, args.weights)}
            res.update(object_by_residue(oracle, residues=(r,), log=lambda s: None))
    else:
        res = object_by_residue(factories, residues=tuple(args.residues), log=lambda s: None)
    print("OSIPI-style object (Georgiou AIF; dt 1/1.5/2 s; noiseless, SNR 50, 20) by residue shape:\n\n"
          + object_by_residue_table(res))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


def _update_cards(res: dict, weights) -> None:
    """Each bundled weights' card gets its own residue_card_metric (other keys of the metric, e.g. round 12's sweep
    rows of the default, are kept)."""
    def put(metrics, w):
        metrics.setdefault("cbf_bias_by_residue_shape_round12", {}).update(residue_card_metric(res, f"PHAE {w}"))

    _write_cards(weights, put, "ROI bias by residue shape")


def _write_cards(weights, put, said: str) -> None:
    """put(card["metrics"], name) on each bundled weights' card, written back in its own indentation; .pt paths are
    skipped: their cards are not the bundled ones."""
    import json

    from BBBAnomalyLib.weights import read_card

    for w in weights:
        if str(w).endswith(".pt"):
            print(f"{w}: not a bundled name, card left alone")
            continue
        _, path = read_card(w)
        card_path = Path(path).with_suffix(".json")
        raw = card_path.read_text(encoding="utf-8")
        card = json.loads(raw)
        put(card.setdefault("metrics", {}), w)
        card_path.write_text(json.dumps(card, indent=2 if raw.startswith('{\n  "') else 1, ensure_ascii=False) + "\n",
                             encoding="utf-8")
        print(f"{card_path.name}: {said} written")


def _main_trust(args, factories) -> int:
    """Issue 14, round 11: the held-apart sweep exactly as validate_phae.py --parts world runs it (Georgiou AIF,
    gamma-dispersed measured AIF; gains 4 and 1, Δt 1 / 1.6 / 2.2 s, SNR 10-100, 2 cases x 200 curves per
    tissue) and the dev sweep (training generator, other seeds), printed as ratio and calibration tables."""
    import json

    if not args.gains or not args.snrs or min(args.gains) <= 0 or min(args.snrs) <= 0:
        print("error: the trust check's gains and SNRs must be positive", file=sys.stderr)
        return 2
    if args.deshrink:
        prior = training_log_cbf_prior()
        print(f"training prior of log CBF: mean {prior[0]:.3f}, SD {prior[1]:.3f}\n")
        factories = {**factories, **{f"{k} deshrunk": (lambda aif, dt, w=w: Deshrunk(aif, dt, prior, weights=w))
                                     for k, w in zip(list(factories), args.weights)}}
    held = sweep(factories, snrs=(10, 20, 50, 100), gains=(4.0, 1.0), frame_intervals=(1.0, 1.6, 2.2),
                 n_per_tissue=200, cases=2, log=lambda s: None)
    dev = dev_sweep(factories, log=lambda s: None, cases=args.cases, n_per_tissue=args.curves, gains=args.gains,
                    snrs=[int(v) if float(v).is_integer() else v for v in args.snrs])
    print(trust_tables(held, "Held-apart sweep (Georgiou AIF, gamma-dispersed measured AIF)"))
    print(trust_tables(dev, "Dev sweep (training generator, seeds from 50 000)"))
    result = {"held_apart": held, "dev": dev, "held_apart_summary": trust_summary(held), "dev_summary": trust_summary(dev)}
    if args.undispersed_aif:
        with undispersed_measured_aif():
            oracle = sweep(factories, snrs=(10, 20, 50, 100), gains=(4.0, 1.0), frame_intervals=(1.0, 1.6, 2.2),
                           n_per_tissue=200, cases=2, log=lambda s: None)
        result.update({"held_apart_undispersed_aif": oracle, "held_apart_undispersed_aif_summary": trust_summary(oracle)})
        print("##### The same held-apart cases with the measured AIF left undispersed (oracle), rows at SNR >= 20\n")
        print("| method | tissue gain | measured AIF | absolute ROI bias | rows within ±15 % | case offsets (mean) | "
              "ratio-to-WM bias | rows within ±15 % |\n" + "|---" * 8 + "|")
        for m in dict.fromkeys(r["method"] for r in held):
            for gain in (4.0, 1.0):
                for label, rows in (("dispersed (held-apart)", held), ("undispersed (oracle)", oracle)):
                    rs = [r for r in rows if r["method"] == m and r["gain"] == gain and r["snr"] >= 20]
                    if not rs:
                        continue
                    v = trust_summary(rs)[m][f"gain{gain:g}"]
                    off = np.array([o for r in rs for o in r["case_offsets"]])
                    print(f"| {m} | {gain:g} | {label} | {v['abs_range'][0]:+.0f}…{v['abs_range'][1]:+.0f} % | "
                          f"{v['abs_rows_within_15']} | {off.min():+.0f}…{off.max():+.0f} % ({off.mean():+.0f}) | "
                          f"{v['ratio_range'][0]:+.0f}…{v['ratio_range'][1]:+.0f} % | {v['ratio_rows_within_15']} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


def _main_delay(args, factories) -> int:
    import json

    if not args.gains or not args.snrs or min(args.gains) <= 0 or min(args.snrs) <= 0:
        print("error: the delay check's gains and SNRs must be positive", file=sys.stderr)
        return 2
    rows = delay_check(factories, delays=tuple(args.delays), gains=tuple(args.gains),
                       snrs=tuple(int(v) if float(v).is_integer() else v for v in args.snrs), cases=args.cases,
                       n_per_tissue=args.curves, log=lambda s: None)
    print("| gain | SNR | delay (s) | method | " + " | ".join(f"{k} CBF bias / Tmax error" for k in DELAY_TISSUES)
          + " | CCC |")
    print("|---" * (5 + len(DELAY_TISSUES)) + "|")
    for r in rows:
        print(f"| {r['gain']:g} | {r['snr']:g} | {r['delay']:g} | {r['method']} | "
              + " | ".join(f"{r['bias_' + k]:+.0f} %" + (f" / {r['tmax_error_' + k]:+.2f} s" if 'tmax_error_' + k in r
                                                          else "") for k in DELAY_TISSUES) + f" | {r['ccc']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

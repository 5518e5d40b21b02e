"""How well can one DSC tissue curve tell its capillary transit shape, and what does not knowing it cost CBF?

Issue 14, round 15. Every learned PHAE of rounds 12-15 reads gamma k 3 and plug-flow tissue high at SNR 20-50 and
exponential tissue right, and oSVD the other way round. Round 12 called the shape "not identifiable per voxel at
these SNRs" from the networks' behaviour. This script puts a number on it that no estimator can beat: the
Cramér-Rao lower bound (CRLB) on log CBF for the OSIPI-style object's tissue curves (phae_world.reference_object:
Georgiou AIF, concentration input, Gaussian noise of SD 0.04·max(AIF)/SNR), once with the transit shape k known and
once with it a free parameter beside CBF, MTT and the delay.

Model: C(t) = CBF·(Ca ⊛ R)(t - delay), R(t) = 1 - P(k, k·t/MTT) (a gamma transit-time distribution of shape k and
mean MTT; k = 1 is the exponential, k -> infinity plug flow), computed by dsc_physics.tissue_concentration.
Parameters θ = (log CBF, log MTT, delay, log k). Fisher information J = AᵀA/σ² with A the Jacobian of the noiseless
frames (central differences, float64); the bound on the SD of any unbiased estimate of log CBF is sqrt((J⁻¹)₀₀).

What the numbers mean for the object (CBF judged on the mean of 100 voxels per tissue): an estimator unbiased for
every shape needs a per-voxel SD of at least the k-free bound, so its 100-voxel mean has at least a tenth of it.
Where the k-free bound is many times the k-known one, a per-voxel estimator that is right for one shape must be
wrong for another unless its spread grows by that factor: the trade-off every prior in rounds 12-15 ran into.

    python scripts/dsc_shape_identifiability.py [--snrs 20 50 200] [--shapes 1 1.5 3 8] [--json OUT]

``--roi`` asks the next question: with 100 voxels that share a shape (a drawn ROI, or one of the object's tissues),
can the shape be told, and what does CBF read under the shape chosen? Each voxel is fitted by maximum likelihood on
a grid of MTT × delay under every candidate shape (CBF in closed form: one matrix product), the ROI's summed residual
picks the shape, and the ROI's CBF is its voxels' mean under that shape. Run noiseless and at the SNRs given, for every
shape, and for exponential and gamma k 3 tissue with transport (vascular) dispersion of 1 and 2 s, which one curve
cannot tell from a more homogeneous transit (round 12).

    python scripts/dsc_shape_identifiability.py --roi --snrs 50 20 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from BBBAnomalyLib.perfusion.population_aif import georgiou_aif  # noqa: E402
from BBBAnomalyLib.phantoms import dsc_physics as phys  # noqa: E402

#: the reference object's bolus arrival [s] and noise scale (phae_world.reference_object)
ARRIVAL_S = 12.0
NOISE_FRACTION_OF_AIF_PEAK = 0.04
#: relative step of the central differences (float64 curves: the derivative's error is ~1e-7 relative)
STEP = 1e-4


def _aif(t):
    return georgiou_aif(np.asarray(t, float) / 60.0, delay=ARRIVAL_S / 60.0)


def tissue_curve(times, cbf_ml: float, mtt_s: float, delay_s: float, k: float) -> np.ndarray:
    """Noiseless concentration curve [mM] of a tissue with CBF [ml/100 g/min], MTT [s], delay [s] and gamma shape k."""
    cbv = cbf_ml / 6000.0 * mtt_s  # blood volume fraction
    return phys.tissue_concentration(times, _aif, cbv, mtt_s, delay_s, 0.0, residue=f"gamma{float(k)!r}")[0]


def jacobian(times, cbf_ml: float, mtt_s: float, k: float, delay_s: float = 0.0) -> np.ndarray:
    """(frames, 4) derivatives of the curve w.r.t. log CBF, log MTT, delay [s], log k. log CBF is exact (the curve is
    linear in CBF at fixed MTT: d C / d log CBF = C); the others are central differences. At k = 1 (the smallest shape
    the gamma family takes) the k column is a one-sided difference."""
    base = tissue_curve(times, cbf_ml, mtt_s, delay_s, k)
    h = STEP
    d_mtt = (tissue_curve(times, cbf_ml, mtt_s * np.exp(h), delay_s, k)
             - tissue_curve(times, cbf_ml, mtt_s * np.exp(-h), delay_s, k)) / (2 * h)
    step_s = 1e-3
    d_delay = (tissue_curve(times, cbf_ml, mtt_s, delay_s + step_s, k)
               - tissue_curve(times, cbf_ml, mtt_s, delay_s - step_s, k)) / (2 * step_s)
    if k * np.exp(-h) >= 1.0:
        d_k = (tissue_curve(times, cbf_ml, mtt_s, delay_s, k * np.exp(h))
               - tissue_curve(times, cbf_ml, mtt_s, delay_s, k * np.exp(-h))) / (2 * h)
    else:
        d_k = (tissue_curve(times, cbf_ml, mtt_s, delay_s, k * np.exp(h)) - base) / h
    return np.stack([base, d_mtt, d_delay, d_k], axis=1)


def crlb_log_cbf(jac: np.ndarray, sigma: float, free=(0, 1, 2, 3)) -> float:
    """Lower bound on the SD of an unbiased estimate of log CBF from one curve with i.i.d. Gaussian noise of SD
    ``sigma``, the parameters ``free`` (column indices of ``jac``; 0 = log CBF must be among them) unknown."""
    a = jac[:, list(free)] / sigma
    info = a.T @ a
    return float(np.sqrt(np.linalg.inv(info)[0, 0]))


def object_bounds(snrs=(20, 50, 200), shapes=(1.0, 1.5, 3.0, 8.0), timings=((1.0, 120), (1.5, 80), (2.0, 60))):
    """Per timing, SNR and shape: the bound (as % SD of CBF) per tissue of the object with k known and with k free."""
    from phae_world import OBJECT_TISSUES

    rows = []
    for dt, frames in timings:
        times = np.arange(frames) * dt
        peak = float(_aif(times).max())
        jacs = {(cbf, cbv, k): jacobian(times, cbf, 60.0 * cbv / cbf, k) for cbf, cbv in OBJECT_TISSUES for k in shapes}
        for snr in snrs:
            sigma = NOISE_FRACTION_OF_AIF_PEAK * peak / snr
            for k in shapes:
                known = [100 * crlb_log_cbf(jacs[(cbf, cbv, k)], sigma, (0, 1, 2)) for cbf, cbv in OBJECT_TISSUES]
                free = [100 * crlb_log_cbf(jacs[(cbf, cbv, k)], sigma) for cbf, cbv in OBJECT_TISSUES]
                rows.append({"dt": dt, "frames": frames, "snr": snr, "k": k, "known_pct": known, "free_pct": free})
    return rows


def table(rows) -> str:
    lines = ["| Δt, frames | SNR | shape k | SD of log CBF, k known (median; range over 14 tissues) | k free | "
             "k free, mean of 100 voxels |", "|---|---|---|---|---|---|"]
    for r in rows:
        kn, fr = np.asarray(r["known_pct"]), np.asarray(r["free_pct"])
        lines.append(f"| {r['dt']:g} s, {r['frames']} | {r['snr']:g} | {r['k']:g} | {np.median(kn):.0f} % "
                     f"({kn.min():.0f}–{kn.max():.0f} %) | {np.median(fr):.0f} % ({fr.min():.0f}–{fr.max():.0f} %) | "
                     f"{np.median(fr) / 10:.0f} % ({fr.min() / 10:.0f}–{fr.max() / 10:.0f} %) |")
    return "\n".join(lines)


# --- can an ROI tell its shape? A grid maximum-likelihood fit under each candidate shape -----------------------
#: the candidate transit shapes an ROI is fitted under (gamma k 1 = exponential ... plug flow)
CANDIDATES = ("exponential", "gamma1.5", "gamma", "gamma8", "box")
MTT_GRID = np.exp(np.linspace(np.log(0.7), np.log(30.0), 64))  # s, 6 % steps
DELAY_GRID = np.arange(-3.0, 5.01, 0.25)  # s


def templates(times, aif_samples, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """(T, M·D) unit-CBF curves on the MTT × delay grid for ``shape``, from the *sampled* AIF (what an estimator
    has), and the (M·D, 2) grid values (MTT, delay)."""
    mtt, delay = np.meshgrid(MTT_GRID, DELAY_GRID, indexing="ij")
    mtt, delay = mtt.ravel(), delay.ravel()
    unit = phys.tissue_concentration(times, np.asarray(aif_samples, float), mtt / 60.0 * 1.0, mtt, delay, 0.0,
                                     residue=shape)  # cbv = MTT/60: CBF 1 ml/ml/min, i.e. curves per unit CBF [1/min]
    return unit.T, np.stack([mtt, delay], axis=1)


def grid_fit(curves: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per curve the least-squares template: (RSS (n,), CBF [ml/ml/min] (n,), template index (n,)). CBF is linear,
    so for each template it is closed-form; the grid search is one matrix product."""
    proj = curves @ unit  # (n, K)
    norm = np.einsum("tk,tk->k", unit, unit)
    cbf = np.maximum(proj, 0.0) / norm  # a flow is not negative
    rss = np.einsum("nt,nt->n", curves, curves)[:, None] - 2 * cbf * proj + cbf ** 2 * norm
    best = np.argmin(rss, axis=1)
    rows = np.arange(len(curves))
    return rss[rows, best], cbf[rows, best], best


#: signal-noise model (``roi_selection(noise="signal")``): the AIF's peak ΔR2* [1/s] and the echo time [s], as the
#: project's own DSC phantom (phantoms/dsc.py: aif_peak 50, te 0.03)
AIF_PEAK_R2S = 50.0
ECHO_TIME_S = 0.03


def _signal_noise(delta_r2s: np.ndarray, snr: float, rng) -> np.ndarray:
    """ΔR2* [1/s] measured through a noisy signal: S/S0 = exp(-TE·ΔR2*) + N(0, 1/SNR), back-converted (clipped at
    1e-3 of S0, as a magnitude image never reaches 0). SNR = S0/σ, the own phantom's definition."""
    sig = np.exp(-ECHO_TIME_S * delta_r2s) + rng.standard_normal(delta_r2s.shape) / snr
    return -np.log(np.clip(sig, 1e-3, None)) / ECHO_TIME_S


def roi_selection(snrs=(None, 50, 20), truths=CANDIDATES, dispersions=(0.0,), timings=((1.0, 120), (2.0, 60)),
                  voxels: int = 100, seed: int = 20_000, noise: str = "concentration") -> list[dict]:
    """The OSIPI-style object's tissues as ROIs of ``voxels`` curves: each ROI is fitted under every candidate shape
    (grid ML per voxel, RSS summed over the ROI), the shape with the least RSS is chosen, and the ROI's CBF is the
    mean of its voxels' CBF under that shape. Returned per (timing, SNR, true shape, transport dispersion): the
    shape chosen in each of the 14 tissues, and the median |CBF error| under the chosen shape and under the
    exponential (a method that assumes it). Same noise model and draws as ``phae_world.reference_object``.

    ``noise="signal"`` (issue 14, round 16): instead, the curves and the AIF become ΔR2* (AIF peak 50 1/s) and are
    measured through a noisy signal (``_signal_noise``, SNR = S0/σ as in the own phantom), so the noise is what a DSC
    pipeline sees (larger at the bolus peak, log-transformed) and the AIF the fits use is measured too, with its own
    noise. CBF is unchanged by the common ΔR2* scale."""
    if noise not in ("concentration", "signal"):
        raise ValueError(f"noise must be 'concentration' or 'signal', not {noise!r}")
    from phae_world import OBJECT_TISSUES

    rows = []
    for dt, frames in timings:
        times = np.arange(frames) * dt
        aif = _aif(times)
        scale = AIF_PEAK_R2S / aif.max()  # concentration -> ΔR2* (noise="signal")
        units = {c: templates(times, aif, c)[0] for c in CANDIDATES} if noise == "concentration" else None
        cbf_t = np.repeat([p[0] for p in OBJECT_TISSUES], voxels).astype(float)
        cbv_t = np.repeat([p[1] for p in OBJECT_TISSUES], voxels).astype(float)
        labels = np.repeat(np.arange(len(OBJECT_TISSUES)), voxels)
        for truth in truths:
            for beta in dispersions:
                clean = phys.tissue_concentration(times, _aif, cbv_t / 100.0, 60.0 * cbv_t / cbf_t, 0.0, beta,
                                                  residue=truth)
                for snr in snrs:
                    curves = clean.copy()
                    roi_units = units
                    if noise == "signal":
                        rng = np.random.default_rng(seed)
                        measured = scale * aif if snr is None else _signal_noise(scale * aif, snr, rng)
                        curves = scale * curves if snr is None else _signal_noise(scale * curves, snr, rng)
                        roi_units = {c: templates(times, measured, c)[0] for c in CANDIDATES}
                    elif snr is not None:
                        sigma = NOISE_FRACTION_OF_AIF_PEAK * aif.max() / snr
                        curves = curves + sigma * np.random.default_rng(seed).standard_normal(curves.shape)
                    fits = {c: grid_fit(curves, roi_units[c]) for c in CANDIDATES}
                    chosen, err_chosen, err_exp = [], [], []
                    for i, (f_true, _) in enumerate(OBJECT_TISSUES):
                        sel = labels == i
                        rss = {c: float(fits[c][0][sel].sum()) for c in CANDIDATES}
                        best = min(rss, key=rss.get)
                        chosen.append(best)
                        # templates are per 1 ml/ml/min: x 100 gives ml/100 g/min
                        err_chosen.append(100 * (100 * fits[best][1][sel].mean() / f_true - 1))
                        err_exp.append(100 * (100 * fits["exponential"][1][sel].mean() / f_true - 1))
                    rows.append({"dt": dt, "frames": frames, "snr": snr, "truth": truth, "dispersion_s": beta, "noise": noise,
                                 "chosen": chosen, "cbf_error_chosen_pct": err_chosen,
                                 "cbf_error_exponential_pct": err_exp})
    return rows


def selection_table(rows) -> str:
    lines = ["| true shape | transport β | Δt | SNR | ROIs choosing it (of 14; others chosen) | CBF error, chosen shape "
             "(median; range) | CBF error, assuming exponential |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        from collections import Counter

        counts = Counter(r["chosen"])
        right = counts.get(r["truth"], 0)
        others = ", ".join(f"{k} {v}" for k, v in counts.most_common() if k != r["truth"])
        ec, ee = np.asarray(r["cbf_error_chosen_pct"]), np.asarray(r["cbf_error_exponential_pct"])
        lines.append(f"| {r['truth']} | {r['dispersion_s']:g} s | {r['dt']:g} s | "
                     f"{'none' if r['snr'] is None else format(r['snr'], 'g')} | {right}{' (' + others + ')' if others else ''} | "
                     f"{np.median(ec):+.0f} % ({ec.min():+.0f}…{ec.max():+.0f}) | "
                     f"{np.median(ee):+.0f} % ({ee.min():+.0f}…{ee.max():+.0f}) |")
    return "\n".join(lines)


# --- the case-level evidence (issue 14, round 16): which shape does a whole case's least-squares fit choose? --------
def case_evidence_rows(snrs_concentration=(None, 50, 20), snrs_signal=(100, 50, 20), own_phantom=True) -> list[dict]:
    """shape_evidence.evidence (both statistics) on (1) the OSIPI-style object (Δt 1.5 s, 80 frames, 14 tissues x 100
    curves) under each shape, with Gaussian noise on concentration and the true AIF, and with noise on the signal of
    the ΔR2* curves and of the AIF (``_signal_noise``); (2) the project's own DSC phantom (exponential residues) as the
    DSC pipeline measures it: its ΔR2* brain curves and automatic AIF (``scripts/phae_own_phantom.py`` settings),
    unweighted and with the echo-time weights. Each row: the chosen shape and the evidence vector."""
    import torch

    from BBBAnomalyLib.dsc.phae.shape_evidence import EVIDENCE_SHAPES, evidence

    def pick(curves, aif, dt, **kw):
        out = {}
        for stat in ("sum", "log"):
            e = evidence(torch.from_numpy(np.ascontiguousarray(curves, np.float32)),
                         torch.from_numpy(np.ascontiguousarray(aif, np.float32)), dt, statistic=stat, **kw)
            out[stat] = {"chosen": EVIDENCE_SHAPES[int(e.argmin())], "evidence": [round(float(v), 6) for v in e]}
        return out

    from phae_world import reference_object

    rows = []
    for truth in CANDIDATES + ("lorentzian",):
        for snr in snrs_concentration:
            c, a, dt, *_ = reference_object(snr, dt=1.5, n_frames=80, residue=truth)
            rows.append({"set": "object", "truth": truth, "noise": "concentration", "snr": snr, **pick(c, a, dt)})
        clean, a, dt, *_ = reference_object(None, dt=1.5, n_frames=80, residue=truth)
        scale = AIF_PEAK_R2S / a.max()
        for snr in snrs_signal:
            rng = np.random.default_rng(20_000)
            rows.append({"set": "object", "truth": truth, "noise": "signal", "snr": snr,
                         **pick(_signal_noise(scale * clean, snr, rng), _signal_noise(scale * a, snr, rng), dt)})
    if own_phantom:
        import phae_own_phantom as own
        from BBBAnomalyLib.dsc.parameters import DSCParameters
        from BBBAnomalyLib.dsc.pipeline import run_dsc

        for setting in own.settings()[::4]:
            phantom, _ = own.make_setting(setting)
            res = run_dsc(phantom.signal, DSCParameters(method="csvd"), aif_mask=phantom.masks.get("aif"),
                          brain_mask=phantom.masks.get("brain"), keep_curves=True)
            curves = res.delta_r2s.data[res.brain_mask]
            dt = float(res.times[1] - res.times[0])
            row = {"set": "own phantom", "truth": "exponential", "noise": "signal", "snr": setting.get("snr"),
                   "setting": setting, **pick(curves, res.aif, dt)}
            row["log, TE-weighted"] = pick(curves, res.aif, dt, echo_time=phantom.params.te)["log"]
            rows.append(row)
    return rows


def case_evidence_table(rows) -> str:
    lines = ["| set | true shape | noise | SNR | chosen: ΣRSS | chosen: geometric mean | chosen: TE-weighted |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        tw = r.get("log, TE-weighted", {}).get("chosen", "")
        snr = "none" if r["snr"] is None else format(r["snr"], "g")
        extra = "" if r["set"] == "object" else f" ({', '.join(f'{k} {v}' for k, v in r['setting'].items() if k != 'snr')})"
        lines.append(f"| {r['set']}{extra} | {r['truth']} | {r['noise']} | {snr} | {r['sum']['chosen']} | "
                     f"{r['log']['chosen']} | {tw} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--snrs", type=float, nargs="+", default=[20, 50, 200])
    ap.add_argument("--shapes", type=float, nargs="+", default=[1.0, 1.5, 3.0, 8.0],
                    help="gamma transit-time shapes k >= 1 (1 = exponential)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--roi", action="store_true",
                    help="instead: can an ROI of 100 voxels tell its shape? Grid maximum likelihood under each candidate "
                         "shape, the least summed residual chosen, for every shape and with transport dispersion "
                         "(roi_selection; ~30 s)")
    ap.add_argument("--signal-noise", action="store_true",
                    help="with --roi: noise on the SIGNAL of ΔR2* curves and of the AIF (S0/σ = SNR, TE 30 ms, AIF peak "
                         "50 1/s: what a DSC pipeline measures) instead of Gaussian noise on concentration with the true "
                         "AIF (issue 14, round 16)")
    ap.add_argument("--case-evidence", action="store_true",
                    help="instead: which shape the whole case's least-squares evidence (dsc/phae/shape_evidence.py) "
                         "chooses, on the object under each noise model and on the own DSC phantom (case_evidence_rows; "
                         "~1 min; issue 14, round 16)")
    args = ap.parse_args(argv)
    bad = [k for k in args.shapes if not k >= 1.0] + [s for s in args.snrs if not s > 0]
    if bad:
        print(f"error: shapes must be >= 1 and SNRs > 0, not {', '.join(f'{v:g}' for v in bad)}", file=sys.stderr)
        return 2
    if args.signal_noise and not args.roi:
        print("error: --signal-noise goes with --roi", file=sys.stderr)
        return 2
    if args.case_evidence:
        rows = case_evidence_rows()
        print(case_evidence_table(rows))
    elif args.roi:
        snrs = (None, *args.snrs)  # noiseless first
        noise = "signal" if args.signal_noise else "concentration"
        rows = roi_selection(snrs=snrs, noise=noise) + roi_selection(snrs=snrs, truths=("exponential", "gamma"),
                                                                     dispersions=(1.0, 2.0), noise=noise)
        print(selection_table(rows))
    else:
        rows = object_bounds(snrs=tuple(args.snrs), shapes=tuple(args.shapes))
        print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

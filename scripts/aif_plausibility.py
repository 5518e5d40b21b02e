"""Round 18: is an AIF arterial? The peak ratio and the first-pass timing, measured per kind of AIF mask.

Every AIF check (the peak ratio of round 17, :func:`BBBAnomalyLib.perfusion.arterial.tissue_peak_ratio`, and the
first-pass lead of round 18, :func:`~BBBAnomalyLib.perfusion.arterial.first_pass_lead`) reads the AIF's mean curve
and the brain's median tissue curve. This script runs the real pipelines (``run_dsc`` / ``run_dce``) on the DSC and
DCE reference objects with real, partial-volume, automatic and wrong AIFs, records the curves the check sees, stops
each run once its AIF is decided (no deconvolution or model fit), and prints per kind of mask the min-max over the
settings of each statistic, and what the checks did. It regenerates the numbers of dsc/aif.py
(``MIN_AIF_TISSUE_LEAD``), dce/aif.py (``check_aif_is_arterial``) and docs/reliability.md:

    python scripts/aif_plausibility.py dsc    # 119 settings x 25 masks (~2-3 min on one core)
    python scripts/aif_plausibility.py dce    # 26 settings x 5 conversions x 26 masks (~2-3 min)
    python scripts/aif_plausibility.py dce --by-mode   # and the DCE table per conversion
    (--save FILE keeps the recorded curves as a pickle)

Statistics (frames are fractional frame indices; each curve above its baseline mean):
* ratio: the AIF's peak over the tissue median's (round 17's check).
* lead: how many of the tissue's bolus spreads the AIF's bolus passes before the tissue median's (round 18's DSC
  check; negative: after). Each bolus is the part of its curve above 25 % of its peak in the tissue's first pass.
* lead_f: the same in frames; lead_s in seconds.
* width: the AIF's full width at half maximum over the tissue median's.
* p2l: the AIF's first-pass peak over the mean of its last 10 % of frames (an artery washes out; a leaky rim keeps
  enhancing); p2l_rel: the same over the tissue median's.

Masks: ``artery`` (the object's arterial mask), ``pv25``/``pv11``/``pv8``/``pv5`` (it widened in-plane so that 25,
11, 8 or 5 % of its voxels are artery), ``region`` (the 11 % mask as an --aif-search region), ``auto`` (the
automatic AIF; DCE with the true T10 map or concentration input only: a scalar T10 is refused with it), and drawn
on the wrong place (40 voxels away from the artery, the first 40 of the tissue's mask or ``s``: spread over it):
``gm``, ``wm``, ``nawm``, ``rim`` (the enhancing rim), ``rim_all`` (all of it), ``csf`` (also 200 voxels),
``edema``, ``core``, ``near`` (a ring 3-4 voxels around the artery), ``sinus_box`` (a 6x6 box on the DCE object's
sagittal-sinus site) and ``vein`` (the DCE object's vein; in the DSC object a tube with the same delayed, dispersed
arterial curve is added for this measurement only).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from BBBAnomalyLib.core.errors import InputError  # noqa: E402
from BBBAnomalyLib.perfusion import arterial  # noqa: E402

REAL = ("artery", "pv25", "pv11", "pv8", "pv5", "region", "auto")


class _Stop(Exception):
    """Raised once the AIF is decided: the rest of the run is not needed."""


_SEEN: list[dict] = []
_ratio = arterial.tissue_peak_ratio


def _recording_ratio(aif, curves, in_aif, baseline, median=None):
    """tissue_peak_ratio, recording what every check reads (the tissue median computed as the checks do)."""
    if median is None:
        median = arterial.tissue_median(curves, in_aif)
    ratio = _ratio(aif, curves, in_aif, baseline, median=median)
    _SEEN.append({"aif": np.array(aif, dtype=np.float64), "median": median, "baseline": baseline, "ratio": ratio})
    return ratio


def _lead(seen) -> float | None:
    if seen["median"] is None:
        return None
    lead = arterial.first_pass_lead(seen["aif"], seen["median"], seen["baseline"])
    return None if lead is None else lead.spreads


# --- masks ---------------------------------------------------------------------------------------------------
def _tissue(masks, name, n=40, spread=False):
    chosen = np.argwhere(masks[name] & ~binary_dilation(masks["aif"], iterations=2))
    if chosen.size == 0:
        return None
    chosen = chosen[np.linspace(0, len(chosen) - 1, min(n, len(chosen))).astype(int)] if spread else chosen[:n]
    out = np.zeros(masks["brain"].shape, bool)
    out[tuple(chosen.T)] = True
    return out


def _sloppy(masks, reach):
    """The arterial mask widened in-plane by ``reach`` voxels (2x2 artery in 4x4, 6x6, 8x8, 10x10)."""
    size = 2 * reach + 1
    return binary_dilation(masks["aif"], structure=np.ones((size, size, 1), bool)) & masks["brain"]


def _near(masks):
    ring = np.ones((3, 3, 1), bool)
    outer = binary_dilation(masks["aif"], structure=ring, iterations=4)
    return outer & ~binary_dilation(masks["aif"], structure=ring, iterations=2) & masks["brain"]


def _sinus_box(masks, affine, half=3):
    from BBBAnomalyLib.phantoms.dce import VEIN_X_MM, VEIN_Y_MM

    inv = np.linalg.inv(affine)
    out = np.zeros(masks["brain"].shape, bool)
    for k in range(out.shape[2]):
        z = (affine @ np.array([0.0, 0.0, k, 1.0]))[2]
        i, j = np.floor((inv @ np.array([VEIN_X_MM, VEIN_Y_MM, z, 1.0]))[:2]).astype(int)
        out[max(i - half + 1, 0):i + half + 1, max(j - half + 1, 0):j + half + 1, k] = True
    return out & masks["brain"]


def masks_of(phantom) -> dict:
    m = phantom.masks
    out = {"artery": m["aif"], "pv25": _sloppy(m, 1), "pv11": _sloppy(m, 2), "pv8": _sloppy(m, 3),
           "pv5": _sloppy(m, 4), "region": _sloppy(m, 2), "auto": None}
    for name, label in (("gm", "gm"), ("wm", "wm"), ("nawm", "nawm"), ("enhancing", "rim"), ("csf", "csf"),
                        ("edema", "edema"), ("core", "core")):
        out[label] = _tissue(m, name)
        out[label + "s"] = _tissue(m, name, spread=True)
    out["csf200"] = _tissue(m, "csf", n=200, spread=True)
    out["rim_all"] = m["enhancing"]
    out["near"] = _near(m)
    out["sinus_box"] = _sinus_box(m, phantom.signal.affine)
    if "vein" in m:
        out["vein"] = m["vein"]
    return {k: v for k, v in out.items() if k == "auto" or (v is not None and v.any())}


def _add_dsc_vein(phantom, delay=6.0, dispersion=4.0):
    """A sagittal-sinus-like tube in the DSC object (the DCE object's vein): blood whose ΔR2* is the arterial curve
    delayed by ``delay`` s and dispersed by an exponential kernel of ``dispersion`` s, S0 and noise as the artery's."""
    from BBBAnomalyLib.phantoms import dsc_physics as phys
    from BBBAnomalyLib.phantoms.dce import _vein_mask
    from BBBAnomalyLib.phantoms.dsc import S0_WM, default_tissues

    p = phantom.params
    vein = _vein_mask(phantom.masks["brain"], phantom.signal.affine) & ~phantom.masks["aif"]
    times = np.asarray(phantom.times)
    fine = np.arange(0.0, times[-1] + 0.05, 0.05)
    kernel = np.exp(-fine / dispersion) * (0.05 / dispersion)
    arterial_curve = phys.gamma_variate_aif(fine - delay, arrival=p.bolus_arrival, peak=p.aif_peak)
    curve = np.interp(times, fine, np.convolve(arterial_curve, kernel)[:fine.size])
    n = int(vein.sum())
    signal = phys.signal_from_delta_r2s(np.full(n, S0_WM * default_tissues()["artery"]["s0"]),
                                        np.tile(curve, (n, 1)), p.te).astype(np.float32)
    if p.snr is not None:
        signal = phys.add_rician_noise(signal, S0_WM / p.snr, np.random.default_rng(99 + p.seed))
    phantom.signal.data[vein] = signal
    phantom.masks["vein"] = vein


# --- runs ----------------------------------------------------------------------------------------------------
def _run(fn, min_lead: float | None = None) -> tuple[str, dict | None, list[dict]]:
    """(what the checks did, the check's inputs that decided it). The pipeline runs with the timing check off, so
    that every look at the AIF is recorded (DSC looks twice when the artery arrives before the brain-mean baseline
    ends); with ``min_lead`` the timing check is then applied to every look, as the pipeline would (refused at the
    first look that fails), and the look with the smallest lead is the one shown."""
    _SEEN.clear()
    try:
        fn()
        status = "accepted"
    except _Stop:
        status = "accepted"
    except InputError as exc:
        text = str(exc)
        status = ("refused: ratio" if "times the brain's median" in text else
                  "refused: no bolus" if "no contrast bolus" in text else "refused: " + text[:60])
    if not _SEEN:
        return status, None, []
    looks = list(_SEEN)
    if min_lead is None or status != "accepted":
        return status, looks[-1], looks
    leads = [(lead, k) for k, seen in enumerate(looks) if (lead := _lead(seen)) is not None]
    if not leads:
        return status, looks[-1], looks
    lead, k = min(leads)
    return ("refused: timing" if lead < min_lead else status), looks[k], looks


def dsc_settings() -> list[dict]:
    out = [dict(seed=seed, snr=snr, frame_interval=fi, tissue_delay=delay, dispersion=disp, slices=4)
           for seed, snr, fi, (delay, disp) in itertools.product((0, 1), (None, 100, 50, 20), (1.0, 1.5, 2.0),
                                                                  ((0, 0), (2, 0), (0, 2), (2, 2)))]
    for snr in (None, 50, 20):
        out.append(dict(seed=3, snr=snr, frame_interval=1.5, vein=True, slices=6))
        out.append(dict(seed=3, snr=snr, frame_interval=2.0, vein=True, slices=6, tissue_delay=2, dispersion=2))
    out += [dict(seed=4, snr=snr, frame_interval=fi, slices=6) for snr in (10, 5) for fi in (1.0, 1.5, 2.0)]
    out += [dict(seed=5, snr=50, frame_interval=2.5, slices=6),
            dict(seed=5, snr=20, frame_interval=2.5, slices=6, tissue_delay=4, dispersion=4),
            dict(seed=5, snr=50, frame_interval=1.0, slices=6, bolus_arrival=6.0, duration=60.0),
            dict(seed=5, snr=50, frame_interval=1.5, slices="all"),
            dict(seed=5, snr=20, frame_interval=1.5, slices="all", tissue_delay=2, dispersion=2)]
    for snr in (50, 20):
        out += [dict(seed=2, snr=snr, frame_interval=1.5, residue="box", slices=6),
                dict(seed=2, snr=snr, frame_interval=1.5, aif_peak=100.0, slices=6),
                dict(seed=2, snr=snr, frame_interval=1.0, aif_peak=20.0, slices=6, tumor_delay=3.0)]
    return out


def dsc_rows(settings) -> list[dict]:
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc
    from BBBAnomalyLib.dsc import pipeline
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    def stop(*args, **kwargs):  # the first step after the AIF is decided
        raise _Stop

    from BBBAnomalyLib.dsc import aif as dsc_aif

    rows = []
    saved, min_lead = pipeline.contrast_to_noise, dsc_aif.MIN_AIF_TISSUE_LEAD
    pipeline.contrast_to_noise = stop
    dsc_aif.MIN_AIF_TISSUE_LEAD = -np.inf  # every look recorded; applied below (_run)
    try:
        for setting in settings:
            setting = dict(setting)
            vein = setting.pop("vein", False)
            phantom = make_dsc_phantom(**setting)
            if vein:
                _add_dsc_vein(phantom)
            for label, mask in masks_of(phantom).items():
                params = DSCParameters(method="csvd", leakage_correction="none", aif_region=label == "region")
                status, seen, looks = _run(lambda: run_dsc(phantom.signal, params, aif_mask=mask,
                                                           brain_mask=phantom.masks["brain"]), min_lead)
                rows.append({"setting": setting, "mask": label, "status": status, "seen": seen, "looks": looks,
                             "times": np.asarray(phantom.times)})
    finally:
        pipeline.contrast_to_noise, dsc_aif.MIN_AIF_TISSUE_LEAD = saved, min_lead
    return rows


DCE_MODES = ("map", "t10_1.4", "t10_0.8", "relative", "concentration")


def dce_settings() -> list[dict]:
    out = [dict(seed=seed, snr=snr, frame_interval=fi, aif=aif, slices=4)
           for seed, snr, fi, aif in itertools.product((0, 1), (50, 20), (2.0, 4.0, 6.0), ("parker", "georgiou"))]
    return out + [dict(seed=2, snr=snr, frame_interval=4.0, tumor_delay=5.0, slices=6) for snr in (50, 20)]


def dce_rows(settings) -> list[dict]:
    from BBBAnomalyLib.dce import DCEParameters, run_dce
    from BBBAnomalyLib.dce import aif as dce_aif
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    def stop(cp, mode, source):  # the plasma-peak check: the first step after a measured AIF is decided
        raise _Stop

    rows = []
    saved = dce_aif.check_plasma_peak
    dce_aif.check_plasma_peak = stop
    try:
        for setting in settings:
            phantom = make_dce_phantom(**setting)
            for mode in DCE_MODES:
                for label, mask in masks_of(phantom).items():
                    if label == "auto" and mode not in ("map", "concentration"):
                        continue
                    kw = dict(rls="none", aif_region=label == "region", aif_auto=label == "auto")
                    series, t10_map = phantom.signal, None
                    if mode == "map":
                        t10_map = phantom.truth["t10"]
                    elif mode.startswith("t10_"):
                        kw["t10"] = float(mode[4:])
                    elif mode == "concentration":
                        series, kw["input_kind"] = phantom.concentration, "concentration"
                    params = DCEParameters(**kw)
                    status, seen, _ = _run(lambda: run_dce(series, params, aif_mask=mask,
                                                           brain_mask=phantom.masks["brain"], t10_map=t10_map))
                    rows.append({"setting": dict(setting, mode=mode), "mask": label, "status": status,
                                 "seen": seen, "times": np.asarray(phantom.times)})
    finally:
        dce_aif.check_plasma_peak = saved
    return rows


# --- statistics ----------------------------------------------------------------------------------------------
def _rise(curve, baseline):
    return curve - curve[baseline].mean()


def _fwhm(rise):
    peak = int(np.argmax(rise))
    level = 0.5 * rise[peak]
    below = np.flatnonzero(rise[:peak + 1] < level)
    up = below[-1] + (level - rise[below[-1]]) / (rise[below[-1] + 1] - rise[below[-1]]) if below.size else 0.0
    after = np.flatnonzero(rise[peak:] < level)
    if after.size:
        k = peak + after[0]
        down = k - 1 + (rise[k - 1] - level) / (rise[k - 1] - rise[k])
    else:
        down = float(rise.size - 1)
    return down - up


def _peak_to_late(rise):
    late = rise[-max(3, rise.size // 10):].mean()
    return rise.max() / late if late > 0 else float("inf")


def statistics(row) -> dict | None:
    seen = row["seen"]
    if seen is None or seen["median"] is None:
        return None
    aif, median, baseline = seen["aif"], seen["median"], seen["baseline"]
    out = {"ratio": seen["ratio"]}
    lead = arterial.first_pass_lead(aif, median, baseline)
    if lead is not None:
        out.update(lead=lead.spreads, lead_f=lead.frames, lead_s=lead.seconds(row["times"]))
    ra, rm = _rise(aif, baseline), _rise(median, baseline)
    out["width"] = _fwhm(ra) / _fwhm(rm)
    out["p2l"] = _peak_to_late(ra)
    out["p2l_rel"] = out["p2l"] / _peak_to_late(rm)
    return out


def table(rows, keys, group=lambda row: row["mask"]) -> None:
    values, statuses = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(int))
    for row in rows:
        statuses[group(row)][row["status"]] += 1
        stats = statistics(row)
        if stats is not None:
            for key in keys:
                if key in stats and stats[key] is not None and np.isfinite(stats[key]):
                    values[group(row)][key].append(stats[key])
    print(f"{'mask':>14} " + " ".join(f"{k:>15}" for k in keys) + "  what the checks did")
    for name in statuses:
        cells = [f"{min(v):.3g}..{max(v):.3g}" if (v := values[name][k]) else "-" for k in keys]
        did = ", ".join(f"{s} {n}" for s, n in sorted(statuses[name].items()))
        print(f"{str(name):>14} " + " ".join(f"{c:>15}" for c in cells) + "  " + did)


def _save(rows, path) -> None:
    if path:
        import pickle

        with open(path, "wb") as f:
            pickle.dump(rows, f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("which", choices=("dsc", "dce"))
    ap.add_argument("--by-mode", action="store_true", help="DCE: one table per conversion")
    ap.add_argument("--save", help="keep the recorded curves (a pickle) for further analysis")
    args = ap.parse_args(argv)
    arterial.tissue_peak_ratio = _recording_ratio
    if args.which == "dsc":
        rows = dsc_rows(dsc_settings())
        _save(rows, args.save)
        keys = ("ratio", "lead", "lead_f", "lead_s", "width", "p2l")
        print("DSC: all runs")
        table(rows, keys)
        print("\nDSC: runs the peak ratio accepted (and the timing check saw)")
        table([r for r in rows if r["mask"] in REAL or r["status"] in ("accepted", "refused: timing")], keys)
    else:
        rows = dce_rows(dce_settings())
        _save(rows, args.save)
        keys = ("ratio", "lead", "lead_f", "width", "p2l", "p2l_rel")
        print("DCE: runs the peak ratio accepted")
        table([r for r in rows if r["status"] == "accepted"], keys)
        if args.by_mode:
            for mode in DCE_MODES:
                print(f"\nDCE, {mode}: runs the peak ratio accepted")
                table([r for r in rows if r["status"] == "accepted" and r["setting"]["mode"] == mode], keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())

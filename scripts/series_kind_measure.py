"""Session 23: the series-kind rules (BBBAnomalyLib/perfusion/series_kind.py) on ordinary DSC/DCE objects (must not fire)
and on the six unusual series (must fire). Margins printed: episodes, rise/drop, tail/drop, max excursion / sigma.
Run: OMP_NUM_THREADS=1 nice -n 5 python scripts/series_kind_measure.py (from the checkout)"""
import sys
import numpy as np
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
from BBBAnomalyLib.phantoms.dce import make_dce_phantom
from BBBAnomalyLib.perfusion import series_kind as sk
from BBBAnomalyLib.dsc.conversion import steady_state_skip
from BBBAnomalyLib.dsc.validation import automatic_brain_mask


def dsc_curve(vol, mask):
    d = vol.data[mask].astype(np.float64).mean(axis=0)
    step = float(np.median(np.diff(vol.times)))
    if step < 0.8:  # oSVD's binning (validation.binned_grid)
        k = max(2, int(round(1.0 / step)))
        d = d[: d.size // k * k].reshape(-1, k).mean(axis=1)
    return d


def margins_dsc(curve, skip=1):
    skip = steady_state_skip(curve, skip)
    n = curve.size
    s = sk.curve_shape(curve, skip, skip + max(3, n // 10), 'drop')
    drop, rise = s.drop.max(), s.rise.max()
    tail = np.median(s.drop[-max(1, s.drop.size // 4):])
    ep = max(len(sk.episodes(s.drop)) if s.stands_out(s.drop) else 0, len(sk.episodes(s.rise)) if s.stands_out(s.rise) else 0)
    try:
        sk.check_dsc_curve(curve, skip); fired = "-"
    except InputError as e:
        fired = "FIRED: " + str(e)[:110]
    a, z = sk.alternation(curve, skip)
    return f"alt {100*a:.3f}% z {z:5.1f} drop/σ {drop / s.sigma:7.1f} rise/drop {rise / drop:5.2f} tail/drop {tail / drop:5.2f} episodes {ep} | {fired}"


def margins_dce(curve):
    n = curve.size
    s = sk.curve_shape(curve, 0, max(2, n // 20), 'rise')
    drop, rise = s.drop.max(), s.rise.max()
    ep = max(len(sk.episodes(s.drop)) if s.stands_out(s.drop) else 0, len(sk.episodes(s.rise)) if s.stands_out(s.rise) else 0)
    try:
        sk.check_dce_curve(curve); fired = "-"
    except InputError as e:
        fired = "FIRED: " + str(e)[:110]
    a, z = sk.alternation(curve, 0)
    return f"alt {100*a:.3f}% z {z:5.1f} rise/σ {rise / s.sigma:7.1f} drop/rise {drop / rise:5.2f} episodes {ep} | {fired}"


which = sys.argv[1] if len(sys.argv) > 1 else "all"
fired = total = 0
if which in ("all", "dsc"):
    settings = []
    for snr in (5, 10, 20, 50, 100, None):
        settings.append(dict(snr=snr))
    for fi in (0.5, 1.0, 2.0, 3.0):
        settings.append(dict(frame_interval=fi, snr=20))
    for dur in (45.0, 60.0, 180.0):
        settings.append(dict(duration=dur, snr=20))
    for te in (0.02, 0.045, 0.08):
        settings.append(dict(te=te, snr=20))
    for ba in (4.0, 40.0):
        settings.append(dict(bolus_arrival=ba, snr=20))
    for lk in (0.0, 0.05, -0.01):
        settings.append(dict(leakage=lk, snr=20))
    for extra in (dict(tissue_delay=6.0), dict(tissue_delay=12.0), dict(dispersion=2.0), dict(aif_peak=100.0),
                  dict(aif_peak=30.0, snr=5), dict(slices="all", snr=20), dict(slices=4, snr=5), dict(residue="gamma"),
                  dict(seed=3, snr=10), dict(seed=4, snr=50, frame_interval=1.0)):
        settings.append({"snr": 20, **extra})
    for extra in (dict(frame_interval=1.0, duration=180.0, bolus_arrival=5.0), dict(frame_interval=1.5, duration=180.0, bolus_arrival=4.0),
                  dict(frame_interval=0.5, duration=120.0, bolus_arrival=5.0), dict(frame_interval=2.0, duration=180.0, bolus_arrival=6.0),
                  dict(frame_interval=1.0, duration=120.0, bolus_arrival=3.0), dict(frame_interval=1.0, duration=180.0, bolus_arrival=5.0, snr=None)):
        settings.append({"snr": 20, **extra})
    for st in settings:
        kw = {"slices": 6, **st}
        try:
            p = make_dsc_phantom(**kw)
        except Exception as e:
            print("DSC", kw, "phantom error", e); continue
        for maskname in ("phantom", "auto"):
            mask = p.masks["brain"] if maskname == "phantom" else automatic_brain_mask(p.signal.data)
            line = margins_dsc(dsc_curve(p.signal, mask))
            total += 1; fired += "FIRED" in line
            print(f"DSC {kw} mask={maskname}: {line}", flush=True)
if which in ("all", "dce"):
    settings = []
    for snr in (10, 20, 40, None):
        settings.append(dict(snr=snr))
    for fi in (1.0, 2.0, 10.0):
        settings.append(dict(frame_interval=fi, snr=20))
    for dur in (120.0, 600.0):
        settings.append(dict(duration=dur, snr=20))
    for ba in (6.0, 120.0):
        settings.append(dict(bolus_arrival=ba, snr=20))
    for extra in (dict(dose=0.5), dict(dose=2.0), dict(te=0.0025), dict(te=0.004, dose=2.0), dict(tumor_delay=10.0),
                  dict(aif="georgiou"), dict(slices="all"), dict(flip_angle=30.0), dict(seed=3, snr=10)):
        settings.append({"snr": 20, **extra})
    for st in settings:
        kw = {"slices": 6, **st}
        try:
            p = make_dce_phantom(**kw)
        except Exception as e:
            print("DCE", kw, "phantom error", e); continue
        for maskname in ("phantom", "auto"):
            mask = p.masks["brain"] if maskname == "phantom" else automatic_brain_mask(p.signal.data)
            line = margins_dce(p.signal.data[mask].astype(np.float64).mean(axis=0))
            total += 1; fired += "FIRED" in line
            print(f"DCE {kw} mask={maskname}: {line}", flush=True)
print(f"ordinary: fired on {fired} of {total}")

# --- the first frames before the steady state (session 19's case), with and without steady_state_skip ---
if which in ("all", "dsc", "steady"):
    for scales in ((1.3,), (1.3, 1.1, 1.03), (2.0,), (1.6, 1.3, 1.15, 1.07, 1.03)):
        for snr in (20, 50):
            p = make_dsc_phantom(slices=6, snr=snr)
            curve = dsc_curve(p.signal, p.masks["brain"])
            curve[:len(scales)] *= np.array(scales)
            for skip_mode in ("steady_state_skip", "--baseline-frames 1 10", "--baseline-frames 6 10"):
                if skip_mode.startswith("steady"):
                    line = margins_dsc(curve)
                else:
                    first, stop = map(int, skip_mode.split()[1:])
                    try:
                        sk.check_dsc_curve(curve, 1, (first, stop)); line = "-"
                    except InputError as e:
                        line = "FIRED: " + str(e)[:110]
                print(f"DSC steady-state {scales} snr {snr} {skip_mode}: {line}", flush=True)

# --- the unusual series: must fire ---
if which in ("all", "unusual"):
    sys.argv = sys.argv[:1]
    import importlib.util
    spec = importlib.util.spec_from_file_location("probe_series", str(Path(__file__).resolve().parent / "series_kind_series.py"))
    ser = importlib.util.module_from_spec(spec); spec.loader.exec_module(ser)
    for name, vol in ser.unusual().items():
        mask = automatic_brain_mask(vol.data)
        curve_dsc = dsc_curve(vol, mask)
        curve_dce = vol.data[mask].astype(np.float64).mean(axis=0)
        print(f"UNUSUAL {name} as DSC: {margins_dsc(curve_dsc)}")
        print(f"UNUSUAL {name} as DCE: {margins_dce(curve_dce)}")

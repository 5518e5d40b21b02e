"""Session 19: DSC on legitimate but unusual acquisitions (docs/reliability.md, "The first frames before the T1
steady state").

Runs ``run_dsc`` (defaults: oSVD) on the DSC reference object (4 slices, seed 1) at SNR 50 and 20 with the arterial
mask and the automatic AIF, for: the default acquisition, an early bolus (4 and 6 s), 45 and 180 s series, TE 20 and
45 ms, an arterial peak of 100 1/s (and with TE 45 ms), frames of 0.5 and 3 s, the first 3 or 5 frames before the T1
steady state (1.3/1.1/1.03x and 1.6 down to 1.03x), and slice timing (slice z acquired z/nz of a frame later). Prints
grey- and white-matter mean CBF and CBV and the warnings, or the refusal. About 3 min on one core:

    OMP_NUM_THREADS=1 python scripts/dsc_unusual_acquisitions.py
"""

import dataclasses

import numpy as np

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

def run(ph, mask=True, params=None, data=None, label=""):
    sig = ph.signal if data is None else dataclasses.replace(ph.signal, data=data)
    try:
        r = run_dsc(sig, params or DSCParameters(), aif_mask=ph.masks["aif"] if mask else None, brain_mask=ph.masks["brain"])
    except InputError as e:
        print(f"{label:55s} {'mask' if mask else 'auto'} REFUSED {str(e)[:150]}", flush=True); return
    gm, wm = ph.masks["gm"], ph.masks["wm"]
    cbf, cbv = r.maps["cbf"].data, r.maps["cbv"].data
    print(f"{label:55s} {'mask' if mask else 'auto'} GM CBF {cbf[gm].mean():6.1f} CBV {cbv[gm].mean():5.2f} WM CBF {cbf[wm].mean():5.1f} CBV {cbv[wm].mean():5.2f} | warn: {[w[:70] for w in r.report['warnings']]}", flush=True)

def main() -> int:
    base = dict(slices=4, seed=1)
    for snr in (50.0, 20.0):
        b = dict(base, snr=snr)
        for name, kw in [("default", {}), ("early bolus 6 s", dict(bolus_arrival=6.0)), ("early bolus 4 s", dict(bolus_arrival=4.0)),
                         ("short 45 s", dict(duration=45.0)), ("long 180 s", dict(duration=180.0)),
                         ("TE 20 ms", dict(te=0.020)), ("TE 45 ms", dict(te=0.045)), ("AIF peak 100", dict(aif_peak=100.0)),
                         ("AIF peak 100 TE 45", dict(aif_peak=100.0, te=0.045)), ("dt 0.5", dict(frame_interval=0.5)), ("dt 3", dict(frame_interval=3.0))]:
            try:
                ph = make_dsc_phantom(**b, **kw)
            except Exception as e:
                print(name, "phantom error", e); continue
            for mask in (True, False):
                run(ph, mask, label=f"SNR {snr:g} {name}")
        # non-steady-state first frames
        ph = make_dsc_phantom(**b)
        for k, f in [(3, (1.3, 1.1, 1.03)), (5, (1.6, 1.3, 1.15, 1.07, 1.03))]:
            d = ph.signal.data.astype(np.float32).copy()
            for i, fac in enumerate(f):
                d[..., i] *= fac
            for mask in (True, False):
                run(ph, mask, data=d, label=f"SNR {snr:g} non-steady first {k} frames")
        # slice timing: slice z acquired at z/nz * dt later (interpolated)
        d = ph.signal.data.astype(np.float32).copy(); nz = d.shape[2]; t = np.asarray(ph.times)
        for z in range(nz):
            off = (z / nz) * (t[1] - t[0])
            sl = d[:, :, z, :]
            d[:, :, z, :] = np.apply_along_axis(lambda c: np.interp(t + off, t, c), -1, sl)
        for mask in (True, False):
            run(ph, mask, data=d, label=f"SNR {snr:g} slice timing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

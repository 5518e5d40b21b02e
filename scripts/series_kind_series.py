"""Session 23: the unusual series built from the project's phantoms (small: 4-6 slices)."""
import numpy as np
from BBBAnomalyLib.core.volume import Volume, Acquisition
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
from BBBAnomalyLib.phantoms.dce import make_dce_phantom


def unusual(seed=0):
    rng = np.random.default_rng(seed)
    dsc = make_dsc_phantom(slices=4, snr=50, seed=1)
    dce = make_dce_phantom(slices=4, snr=40, seed=1)
    s0 = dsc.signal.data[..., 1:8].mean(axis=3)
    brain, gm = dsc.masks["brain"], dsc.masks["gm"]

    def static(n, step, modulate, snr, acq):
        frames = np.repeat(s0[..., None], n, axis=3).astype(np.float64)
        for t in range(n):
            frames[..., t] *= modulate(t)
        sigma = 1000.0 / snr
        noisy = np.sqrt((frames + rng.normal(0, sigma, frames.shape)) ** 2 + rng.normal(0, sigma, frames.shape) ** 2)
        return Volume(noisy.astype(np.float32), dsc.signal.affine, np.arange(n) * step, acq)

    out = {}
    for snr in (20, 50):
        out[f"ASL snr{snr}"] = static(60, 4.0, lambda t: 1.0 - (t % 2) * (0.01 * gm + 0.004 * (brain & ~gm)), snr,
                                      Acquisition(echo_time=0.012))
        out[f"BOLD 2% snr{snr}"] = static(100, 2.0, lambda t: 1.0 + 0.02 * gm * ((t * 2.0 // 20) % 2), snr,
                                          Acquisition(echo_time=0.03))
    out["BOLD 0.5% snr20"] = static(100, 2.0, lambda t: 1.0 + 0.005 * gm * ((t * 2.0 // 20) % 2), 20,
                                    Acquisition(echo_time=0.03))
    out["rest BOLD (no task) snr50"] = static(100, 2.0, lambda t: 1.0, 50, Acquisition(echo_time=0.03))
    adc = np.where(dsc.masks["csf"], 3e-3, 0.8e-3)
    for nb0, nb in ((3, 30), (1, 32), (6, 60)):
        bv = np.r_[np.zeros(nb0), np.full(nb, 1000.0)]
        for with_bvals in (True, False):
            acq = Acquisition(echo_time=0.08, bvals=bv if with_bvals else None,
                              bvecs=np.tile([1.0, 0, 0], (bv.size, 1)) if with_bvals else None)
            out[f"DWI {nb0}b0+{nb} bvals={with_bvals}"] = static(bv.size, 3.0, lambda t, bv=bv: np.exp(-bv[t] * adc), 30, acq)
    d = dsc.signal
    for cut in (12, 14):  # bolus at 15 s: cut at 18 s (mid up-slope) and 21 s (near the minimum)
        out[f"DSC starting at {d.times[cut]:.0f} s"] = Volume(d.data[..., cut:], d.affine, d.times[cut:] - d.times[cut], d.acquisition)
    c = dce.signal
    for at in (40.0, 90.0):
        k = int(np.searchsorted(c.times, at))
        out[f"DCE starting at {at:.0f} s"] = Volume(c.data[..., k:], c.affine, c.times[k:] - c.times[k], c.acquisition)
    out["DCE (T1w) series"] = Volume(c.data, c.affine, c.times, Acquisition(echo_time=0.0025, repetition_time=0.005, flip_angle=15))
    out["DSC (T2*w) series"] = Volume(d.data, d.affine, d.times, Acquisition(echo_time=0.03, repetition_time=1.5, flip_angle=90))
    return out

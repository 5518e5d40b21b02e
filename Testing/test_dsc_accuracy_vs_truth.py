"""Issue 12 item 10 (DSC): each finding checked against the reference object's truth.

* Dual-echo bolus arrival: detected on the T1-free ln(S1/S2), not on the short-TE echo, whose
  signal T1 effects can raise during the bolus (it was reported at 37.5 s here for a bolus at
  64.5 s; the issue saw 15 s).
* Tikhonov 0.3-0.4x and cSVD 1.4-1.5x NAWM CBF on the whole-brain object at SNR 50: the per-frame
  contrast-to-noise ratio there is 1-2 (one relaxivity for artery and tissue keeps tissue signal
  drops at 2-4 %), where GCV smooths towards zero and a fixed threshold passes noise peaks. The
  same code at an adequate CNR lands inside the truncation band of noiseless data; the run now
  reports the CNR and warns below 5.
"""

import numpy as np
import pytest

from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.dsc.pipeline import LOW_CNR
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

UNITLESS = dict(kh=1.0, density=1.0)


def ratio(result, phantom, tissue, name="cbf"):
    m = phantom.masks[tissue] & ~phantom.masks["aif"]
    return result.maps[name].data[m].mean() / phantom.truth[name].data[m].mean()


def test_dual_echo_bolus_arrival_is_detected_on_the_t1_free_echo_ratio():
    phantom = make_dsc_phantom(snr=None, slices=4, leakage=0.0, bolus_arrival=64.5, duration=150.0)
    sig, brain = phantom.signal, phantom.masks["brain"]
    s0 = sig.data[..., 1:30].mean(axis=3, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2s = np.where(s0 > 0, -np.log(np.where(s0 > 0, sig.data / s0, 1.0)) / 0.03, 0.0)
    # Intravascular T1 shortening during the first pass raises both echoes by the same factor;
    # at TE1 = 15 ms it outweighs the T2* drop, so the first echo's signal RISES with the bolus.
    gain = 1.0 + 0.03 * r2s
    rng = np.random.default_rng(0)
    echoes = []
    for amplitude, te in ((1.0, 0.015), (0.6, 0.045)):
        clean = amplitude * s0 * gain * np.exp(-te * r2s)
        echoes.append(sig.with_data((np.abs(clean + rng.normal(0, 5, clean.shape)) * (s0 > 0)).astype(np.float32)))
    params = DSCParameters(echo_time=0.015, second_echo_time=0.045, leakage_correction="none", **UNITLESS)
    res = run_dsc(echoes[0], params, second_echo=echoes[1], aif_mask=phantom.masks["aif"], brain_mask=brain)
    dt = float(sig.times[1] - sig.times[0])
    # The arrival is the first frame the mean curve has risen 10 % of its peak: at most a frame late.
    assert 64.5 <= res.report["baseline"]["bolus_arrival_s"] <= 64.5 + dt
    for tissue in ("gm", "wm"):
        assert ratio(res, phantom, tissue, "cbv") == pytest.approx(1.0, abs=0.06), tissue


@pytest.fixture(scope="module")
def phantoms():
    return {snr: make_dsc_phantom(snr=snr, slices=8, seed=1) for snr in (50, 500)}


def run(phantom, method):
    m = phantom.masks
    return run_dsc(phantom.signal, DSCParameters(method=method, **UNITLESS), aif_mask=m["aif"],
                   brain_mask=m["brain"], nawm_mask=m["nawm"], tumor_mask=m["tumor"])


@pytest.mark.parametrize("method", ["tikhonov", "csvd"])
def test_cbf_bias_is_the_low_contrast_regime_not_the_code(phantoms, method):
    low, adequate = (run(phantoms[snr], method) for snr in (50, 500))
    # SNR 500: per-frame CNR ~15, GM and NAWM CBF inside the noiseless truncation band of SVD and
    # Tikhonov deconvolution of exponential residues at Δt 1.5 s (docs/validation.md: 0.56-0.83).
    assert adequate.report["contrast_to_noise"] > 3 * LOW_CNR
    assert not any("contrast-to-noise" in w for w in adequate.report["warnings"])
    for tissue in ("gm", "nawm"):
        assert 0.5 < ratio(adequate, phantoms[500], tissue) < 0.9, tissue
    # SNR 50: CNR ~1.5, the known biases appear and the run says so.
    assert low.report["contrast_to_noise"] < LOW_CNR
    assert any("contrast-to-noise" in w for w in low.report["warnings"])
    if method == "tikhonov":  # GM 0.39-0.41 of the truth at SNR 50 against 0.67 at SNR 500 (x0.58-0.60; the first,
        # skipped frame's handling moved it by 0.015): the bias appears, with a margin for one noise realisation
        assert ratio(low, phantoms[50], "gm") < 0.7 * ratio(adequate, phantoms[500], "gm")
    else:
        assert ratio(low, phantoms[50], "nawm") > 1.5 * ratio(adequate, phantoms[500], "nawm")

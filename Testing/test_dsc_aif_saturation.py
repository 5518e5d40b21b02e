"""An AIF whose first pass is cut off at the magnitude noise floor (arterial saturation) is found and said: the
absolute maps read high (dsc/aif_saturation.py; docs/reliability.md, session 21)."""

import numpy as np
import pytest

from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.dsc.aif_saturation import MIN_SECONDS, aif_saturation, saturation_hint
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
from BBBAnomalyLib.phantoms.dsc_physics import add_rician_noise

TE = 0.03
TIMES = np.arange(60) * 1.5


def _gamma(peak):
    t = np.clip(TIMES - 15.0, 0, None)
    shape = t ** 3 * np.exp(-t / 1.5)
    return peak * shape / shape.max()


def _voxel_curves(peak, sigma, n=20, seed=0):
    """ΔR2* of n arterial voxels (S0 1000, Rician noise sigma) as the pipeline converts them."""
    rng = np.random.default_rng(seed)
    signal = 1000.0 * np.exp(-TE * _gamma(peak))[None, :].repeat(n, axis=0)
    noisy = add_rician_noise(signal, sigma, rng) if sigma else signal
    s0 = noisy[:, 1:8].mean(axis=1, keepdims=True)
    return -np.log(np.maximum(noisy / s0, 1e-3)) / TE


def test_an_artery_at_the_noise_floor_is_saturated_and_one_above_it_is_not():
    # peak 50/s: S/S0 = 0.22 at the peak, 11 noise SDs above zero at SNR 50: not saturated
    clear = aif_saturation(_voxel_curves(50, 20.0), slice(1, 8), TE, TIMES)
    assert clear.frames.size == 0 and not clear.saturated
    # peak 250/s: S/S0 = 5.5e-4, far under the floor (1.25 SD = 0.025): the peak's frames are saturated
    cut = aif_saturation(_voxel_curves(250, 20.0), slice(1, 8), TE, TIMES)
    assert cut.saturated and cut.seconds >= MIN_SECONDS
    assert np.all((TIMES[cut.frames] > 15) & (TIMES[cut.frames] < 30))  # around the bolus peak (t = 19.5 s)
    assert cut.largest_voxel_share >= 0.9 and cut.lowest_signal_sds < 2  # the floor: 1.25 SDs on average


def test_noiseless_samples_at_the_conversions_clipping_bound_count_as_saturated():
    curves = _voxel_curves(400, 0.0)  # exp(-12) < 1e-3: the conversion clipped these samples
    assert aif_saturation(curves, slice(1, 8), TE, TIMES).saturated
    assert not aif_saturation(_voxel_curves(100, 0.0), slice(1, 8), TE, TIMES).saturated  # exp(-3) = 0.05 > 1e-3


def test_a_peak_near_but_above_the_floor_is_not_flagged_at_low_snr():
    # SNR 10 (S0 1000, SD 100): a 40/s peak leaves S/S0 = 0.30, 3 SDs above zero at its top
    assert not aif_saturation(_voxel_curves(40, 100.0), slice(1, 8), TE, TIMES).saturated


def test_the_same_cut_off_is_counted_in_seconds_not_frames():
    """Frames of 0.75 s cut twice as many frames off the same peak as 1.5 s frames: the rule reads seconds."""
    fine_times = np.arange(120) * 0.75
    t = np.clip(fine_times - 15.0, 0, None)
    shape = t ** 3 * np.exp(-t / 1.5)
    signal = 1000.0 * np.exp(-TE * 250 * shape / shape.max())[None, :].repeat(20, axis=0)
    curves = -np.log(np.maximum(signal / 1000.0, 1e-3)) / TE
    fine = aif_saturation(curves, slice(1, 16), TE, fine_times)
    coarse = aif_saturation(curves[:, ::2], slice(1, 8), TE, fine_times[::2])
    assert fine.frames.size >= 2 * coarse.frames.size - 1
    assert fine.seconds == pytest.approx(coarse.seconds, abs=1.5)


def test_a_refused_drawn_aif_is_told_its_likelier_cause_when_it_saturates():
    curves = _voxel_curves(600, 20.0)
    in_aif = np.ones(len(curves), bool)
    with pytest.raises(InputError, match="looks like tissue.*noise floor for .* s around the bolus peak"):
        with saturation_hint(curves, in_aif, slice(1, 8), TE, TIMES):
            raise InputError("the AIF from --aif-mask looks like tissue or a vein")
    with pytest.raises(InputError, match="^the AIF from --aif-mask looks like tissue or a vein$"):
        with saturation_hint(_voxel_curves(50, 20.0), in_aif, slice(1, 8), TE, TIMES):
            raise InputError("the AIF from --aif-mask looks like tissue or a vein")
    with pytest.raises(InputError, match="^plain$"):  # no TE (concentration input): nothing to add
        with saturation_hint(curves, in_aif, slice(1, 8), None, TIMES):
            raise InputError("plain")


@pytest.fixture(scope="module")
def runs():
    out = {}
    for peak in (50, 400):
        ph = make_dsc_phantom(snr=50, aif_peak=peak, slices=3, seed=0)
        out[peak] = ph, run_dsc(ph.signal, DSCParameters(method="osvd", kh=1.0, density=1.0), aif_mask=ph.masks["aif"],
                                brain_mask=ph.masks["brain"])
    return out


def test_the_pipeline_warns_and_marks_the_absolute_maps_when_its_aif_saturates(runs):
    ph, res = runs[400]
    assert res.aif.max() < 0.6 * ph.aif.max()  # the cut-off the warning is about
    saturation = res.report["aif"]["saturation"]
    assert saturation["saturated_seconds"] >= MIN_SECONDS
    assert any("noise floor in" in w for w in res.report["warnings"])
    for name in ("cbf", "cbv"):
        assert "AIF's peak is cut off" in res.report["maps"][name]["caveat"]


def test_the_pipeline_is_quiet_when_its_aif_does_not_saturate(runs):
    _, res = runs[50]
    assert res.report["aif"]["saturation"]["saturated_frames"] == 0
    assert not any("noise floor in" in w for w in res.report["warnings"])
    assert "caveat" not in res.report["maps"]["cbv"]


def test_a_refused_automatic_aif_is_told_its_likelier_cause_when_it_saturates():
    """At a 600/s arterial peak (SNR 20) the automatic AIF's flat, late, saturated peak is refused as tissue or a
    vein; the line now says the chosen voxels sit at the noise floor (it did not)."""
    from BBBAnomalyLib.core.errors import InputError as Refused

    ph = make_dsc_phantom(snr=20, aif_peak=600, slices=6, seed=0)
    with pytest.raises(Refused, match="automatically chosen AIF.*noise floor for .* s around the bolus peak"):
        run_dsc(ph.signal, DSCParameters(method="osvd", kh=1.0, density=1.0), brain_mask=ph.masks["brain"])

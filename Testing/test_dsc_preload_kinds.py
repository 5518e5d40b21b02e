"""ΔR2* input and dual-echo DSC checked by shape (session 24; session 23 left them unchecked).

The brain-mean ΔR2*-like curve (the input itself, or the dual-echo ratio ln(S̄1/S̄2)/(TE2 - TE1)) of a DSC bolus
rises and comes back. Before, a DSC *signal* series given with --input-kind concentration, ΔR2* with its sign
reversed, a diffusion, ASL or BOLD series converted to ΔR2*, a flat ΔR2* series, swapped echoes and a BOLD echo pair
ran to maps (exit 0) or were refused for the wrong reason; each is now one line naming what it looks like
(perfusion/series_kind.check_dsc_concentration_curve). scripts/validate_dsc_preload.py --kinds measures the margins.
"""

import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

FAST = dict(method="csvd", leakage_correction="none")


@pytest.fixture(scope="module")
def dsc():
    return make_dsc_phantom(snr=50.0, slices=4, seed=1)


@pytest.fixture(scope="module")
def clean():
    return make_dsc_phantom(snr=None, slices=4, seed=1)


def _masks(phantom):
    return dict(aif_mask=phantom.masks["aif"], brain_mask=phantom.masks["brain"])


def _delta(signal: np.ndarray, te: float = 0.03, stop: int = 9) -> np.ndarray:
    """ΔR2* as another tool hands it over: -ln(S/S0)/TE, S0 the mean of frames [1, stop)."""
    s = np.maximum(signal.astype(np.float64), 1e-3)
    return (-np.log(s / s[..., 1:stop].mean(axis=-1, keepdims=True)) / te).astype(np.float32)


def _static(dsc, frames, step, factor, seed=0, snr=50.0):
    """A series without contrast: the pre-bolus image, frame t scaled by factor(t), Rician noise."""
    rng = np.random.default_rng(seed)
    image = dsc.signal.data[..., 1:8].mean(axis=3).astype(np.float64)
    clean = np.stack([image * factor(t) for t in range(frames)], axis=3)
    sigma = 1000.0 / snr
    return np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))


def _conc(dsc, data, step=None):
    times = dsc.signal.times if step is None else np.arange(data.shape[-1]) * step
    return Volume(data.astype(np.float32), dsc.signal.affine, times)


def _run_conc(dsc, volume):
    return run_dsc(volume, DSCParameters(input_kind="concentration", **FAST), **_masks(dsc))


def test_ordinary_delta_r2s_input_runs_and_matches_the_signal_run(dsc):
    from_signal = run_dsc(dsc.signal, DSCParameters(**FAST), keep_curves=True, **_masks(dsc))
    again = _run_conc(dsc, from_signal.delta_r2s)
    gm = dsc.masks["gm"]
    assert again.maps["cbv"].data[gm].mean() == pytest.approx(from_signal.maps["cbv"].data[gm].mean(), rel=0.02)


@pytest.mark.parametrize("case, says", [
    ("signal given as ΔR2*", "falls instead of rising.*leave out --input-kind concentration"),
    ("sign reversed", "falls instead of rising.*sign reversed"),
    ("diffusion as ΔR2*", "rises and does not come back.*bbbanomaly dmri"),
    ("ASL as ΔR2*", "alternates frame by frame.*arterial spin labelling"),
    ("BOLD as ΔR2*", "separate times.*BOLD"),
    ("flat ΔR2*", "no contrast bolus found in the ΔR2\\* series"),
])
def test_a_delta_r2s_series_of_the_wrong_kind_is_named(dsc, case, says):
    gm, brain = dsc.masks["gm"], dsc.masks["brain"]
    if case == "signal given as ΔR2*":
        volume = _conc(dsc, dsc.signal.data)
    elif case == "sign reversed":
        volume = _conc(dsc, -_delta(dsc.signal.data))
    elif case == "diffusion as ΔR2*":  # 3 b=0 and 30 b=1000 s/mm² volumes of 3 s
        b = np.r_[np.zeros(3), np.full(30, 1000.0)]
        adc = np.where(dsc.masks["csf"], 3e-3, 0.8e-3)
        volume = _conc(dsc, _delta(_static(dsc, b.size, 3.0, lambda t: np.exp(-b[t] * adc)), 0.08, 3), 3.0)
    elif case == "ASL as ΔR2*":  # label frames 1 % darker in GM, 0.4 % elsewhere; 4 s per image
        volume = _conc(dsc, _delta(_static(dsc, 60, 4.0, lambda t: 1 - (t % 2) * (0.01 * gm + 0.004 * (brain & ~gm))),
                                   0.012, 4), 4.0)
    elif case == "BOLD as ΔR2*":  # GM 2 % brighter in 20 s blocks, frames of 2 s
        volume = _conc(dsc, _delta(_static(dsc, 100, 2.0, lambda t: 1 + 0.02 * gm * ((t * 2.0 // 20) % 2))), 2.0)
    else:
        volume = _conc(dsc, _delta(_static(dsc, 60, 1.5, lambda t: 1.0)), 1.5)
    with pytest.raises(InputError, match=says):
        _run_conc(dsc, volume)


def _echo_pair(clean, swap=False, delta=None, snr=50.0, seed=3):
    """Two echoes (TE 15 and 45 ms, the second at 0.6 x S0) of the object's ΔR2* (or ``delta``), Rician noise."""
    rng = np.random.default_rng(seed)
    s0 = clean.signal.data[..., 1:9].mean(axis=3, keepdims=True).astype(np.float64)
    delta = _delta(clean.signal.data).astype(np.float64) if delta is None else delta
    echoes = []
    for k, te in enumerate((0.015, 0.045)):
        e = s0 * np.exp(-te * delta) * (1.0 if k == 0 else 0.6)
        sigma = 1000.0 / snr
        e = np.hypot(e + rng.normal(0, sigma, e.shape), rng.normal(0, sigma, e.shape))
        echoes.append(Volume(e.astype(np.float32), clean.signal.affine, np.arange(delta.shape[-1]) * 1.5))
    return echoes[::-1] if swap else echoes


def _run_dual(phantom, echoes):
    return run_dsc(echoes[0], DSCParameters(echo_time=0.015, second_echo_time=0.045, **FAST),
                   second_echo=echoes[1], **_masks(phantom))


def test_an_ordinary_dual_echo_pair_runs(clean):
    result = _run_dual(clean, _echo_pair(clean))
    truth = clean.truth["cbv"].data[clean.masks["gm"]].mean()
    # kH = 0.73, ρ = 1.04 (the defaults) scale the object's kH/ρ = 1 CBV; the window's 3-4 % (phantoms/dsc.py)
    assert result.maps["cbv"].data[clean.masks["gm"]].mean() == pytest.approx(truth * 0.73 / 1.04, rel=0.1)


def test_swapped_echoes_and_a_bold_echo_pair_are_named(clean):
    with pytest.raises(InputError, match="dual-echo DSC series falls instead of rising.*echoes swapped"):
        _run_dual(clean, _echo_pair(clean, swap=True))
    gm = clean.masks["gm"]
    blocks = ((np.arange(100) * 2.0 // 20) % 2)[None, None, None, :]
    bold = -np.log(1 + 0.02 * gm[..., None] * blocks) / 0.03  # GM ΔR2* of a 2 % BOLD change at TE 30 ms
    with pytest.raises(InputError, match="dual-echo DSC series has no single contrast bolus.*BOLD"):
        _run_dual(clean, _echo_pair(clean, delta=np.broadcast_to(bold, gm.shape + (100,))))


def test_a_dsc_series_cut_mid_bolus_run_as_dce_is_named_by_its_echo_and_repetition_times(dsc):
    """Cut to start at 21 s (bolus at 15 s) its signal only recovers, which reads by shape as an enhancement: run as
    DCE it gave Ktrans maps with exit 0 (session 23: fit R² 0.11). Its own metadata (TE 30 ms, TR 1.5 s: a T2*-weighted
    EPI) now say what it is; a T1-weighted series (TE 2.5 ms, TR 5 ms) with the same curves is left to the shape rules."""
    import dataclasses

    from BBBAnomalyLib.dce import DCEParameters, run_dce

    keep = dsc.signal.times >= 21.0
    cut = Volume(dsc.signal.data[..., keep], dsc.signal.affine, dsc.signal.times[keep] - 21.0, dsc.signal.acquisition)
    params = DCEParameters(rls="none", t10=1.4, tr=0.005, flip_angle=15.0)
    with pytest.raises(InputError, match="echo time of 30 ms and a repetition time of 1.5 s.*bbbanomaly dsc"):
        run_dce(cut, params, brain_mask=dsc.masks["brain"])
    spgr = dataclasses.replace(dsc.signal.acquisition, echo_time=0.0025, repetition_time=0.005)
    from BBBAnomalyLib.perfusion.series_kind import check_series_metadata

    check_series_metadata(spgr, "the DCE series")  # no InputError: the metadata of a T1-weighted series
    check_series_metadata(dsc.signal.acquisition, "the DSC series")  # the DSC pipeline's own series passes

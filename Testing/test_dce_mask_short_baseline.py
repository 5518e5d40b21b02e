"""Session 20: the DCE pipeline's drawn arterial mask with an early bolus.

(1) A bolus arriving within the first frame interval: the detected two-frame baseline held the arterial foot (the
mask's AIF read 73 % low, the rim's Ktrans 47 % high, silently); the baseline now ends before the foot.
(2) A drawn mask on <= 2 baseline frames: the mean of per-voxel concentrations reads the AIF peak high (Jensen, up
to +815 % with 1 frame), which pooling cannot fix for partial-volume masks: the run is now warned.
"""

from __future__ import annotations

import numpy as np
import pytest

from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dce.conversion import detect_baseline_frames
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.phantoms.dce import make_dce_phantom


def _phantom(frame_interval, arrival, snr=40.0, seed=0):
    return make_dce_phantom(slices=2, seed=seed, snr=snr, frame_interval=frame_interval, bolus_arrival=arrival,
                            duration=150.0)


def _run_mask(phantom):
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    return run_dce(phantom.signal, DCEParameters(rls="none"), aif_mask=phantom.masks["aif"],
                   brain_mask=phantom.masks["brain"], t10_map=t10)


def _short_warnings(result):
    return [w for w in result.report["warnings"] if "pre-contrast frame(s)" in w and "--aif-mask" in w]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_foot_in_the_second_frame_is_left_out_of_the_baseline(seed):
    # 2 s frames, bolus at 1 s: the arterial signal's second frame is about twice its first
    p = _phantom(2.0, 1.0, snr=20.0, seed=seed)
    artery = p.signal.data[p.masks["aif"]].mean(axis=0, dtype=np.float64)
    brain = p.signal.data[p.masks["brain"]].mean(axis=0, dtype=np.float64)
    assert detect_baseline_frames(artery) == 1
    assert detect_baseline_frames(brain) == 1
    # a clean two-frame baseline (bolus at 6 s of 4 s frames, at 3 s of 2 s frames) is kept whole
    for dt, arrival in ((4.0, 6.0), (2.0, 3.0)):
        q = _phantom(dt, arrival, snr=20.0, seed=seed)
        assert detect_baseline_frames(q.signal.data[q.masks["aif"]].mean(axis=0, dtype=np.float64)) == 2
        assert detect_baseline_frames(q.signal.data[q.masks["brain"]].mean(axis=0, dtype=np.float64)) == 2


def test_noiseless_flat_start_is_no_foot():
    # a curve whose first two frames are equal (rounding aside) keeps both
    curve = np.r_[100.0, 100.0 + 1e-9, 100.0, 400.0, 900.0, 700.0, 600.0 + np.linspace(0, -50, 40)]
    assert detect_baseline_frames(curve) == 2


def test_mask_aif_with_the_bolus_in_the_first_frame_interval():
    p = _phantom(2.0, 1.0)
    result = _run_mask(p)
    assert result.report["conversion"]["baseline_frames"] == 1
    # before: the 2-frame baseline held the foot, the AIF peak read -73 % (now about -8 % at SNR 40)
    peak_error = result.aif.max() / p.aif.max() - 1
    assert peak_error > -0.25
    assert _short_warnings(result)  # one frame: the user is told


def test_drawn_mask_on_short_baselines_is_warned_and_three_frames_are_not():
    short = _run_mask(_phantom(4.0, 6.0))  # 2 baseline frames
    assert short.report["conversion"]["baseline_frames"] == 2
    said = _short_warnings(short)
    assert len(said) == 1 and "2 pre-contrast frame(s)" in said[0]
    ordinary = _run_mask(_phantom(2.0, 5.5))  # 3 baseline frames
    assert ordinary.report["conversion"]["baseline_frames"] == 3
    assert not _short_warnings(ordinary)

"""Head motion during a DSC or DCE series (perfusion/motion.py, session 21): every frame is registered to the first
analysed one, the displacement is reported and warned about, and ``motion_correct='rigid'`` resamples the frames
that moved; a still series is left bit-identical and the bolus is not read as motion.

The moved series are the reference objects with every frame from one on shifted by exactly one voxel (2 mm) in the
plane (``np.roll``: no interpolation in the simulation, so what is measured is the registration and the correction).
"""

import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.registration import RigidFit
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.perfusion.motion import framewise_displacement, motion_step
from BBBAnomalyLib.phantoms.dce import make_dce_phantom
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

STEP_FRAME = 12  # during the DSC bolus (arrival at 15 s = frame 10 of 1.5 s frames); after the DCE one (frame 6)


def _stepped(volume: Volume, first: int) -> Volume:
    """The series with frames [first, end) one voxel (2 mm) further along axis 1 (the head moved forward)."""
    data = volume.data.copy()
    data[..., first:] = np.roll(data[..., first:], 1, axis=1)
    return Volume(data, volume.affine.copy(), volume.times.copy(), volume.acquisition)


@pytest.fixture(scope="module")
def dsc():
    phantom = make_dsc_phantom(slices=8, duration=36.0, seed=3, snr=50.0)
    masks = phantom.masks

    def run(series, correct):
        return run_dsc(series, DSCParameters(kh=1.0, density=1.0, motion_correct=correct), aif_mask=masks["aif"],
                       brain_mask=masks["brain"], nawm_mask=masks["nawm"], tumor_mask=masks["tumor"])

    still = run(phantom.signal, "none")
    return phantom, run, still


def _roi_change(result, reference, masks, name) -> float:
    mask = masks["gm"] & ~masks["aif"]
    return float(result.maps[name].data[mask].mean() / reference.maps[name].data[mask].mean() - 1.0)


def test_a_still_dsc_series_is_left_bit_identical(dsc):
    """The bolus (the T2* drop, the artery's large one) is not read as motion: nothing found over half a voxel
    (the still object reads about 0.2 mm), nothing resampled, no warning, the maps bit-identical with the correction
    on."""
    phantom, run, still = dsc
    corrected = run(phantom.signal, "rigid")
    motion = corrected.report["motion"]
    assert motion["max_displacement_mm"] < 0.5 < motion["warning_threshold_mm"]
    assert motion["frames_resampled"] == [] and motion["frames_over_threshold"] == []
    assert not any(w.startswith("head motion") for w in corrected.report["warnings"])
    for name, volume in still.maps.items():
        assert np.array_equal(volume.data, corrected.maps[name].data), name
    assert len(motion["displacement_mm"]) == phantom.signal.n_frames


def test_a_dsc_step_is_found_warned_and_corrected(dsc):
    phantom, run, still = dsc
    moved = _stepped(phantom.signal, STEP_FRAME)
    before = moved.data.copy()
    plain = run(moved, "detect")
    motion = plain.report["motion"]
    # 2 mm found (a tenth of a voxel either way) in exactly the frames that moved
    assert abs(motion["max_displacement_mm"] - 2.0) < 0.2
    assert motion["frames_over_threshold"] == list(range(STEP_FRAME, phantom.signal.n_frames))
    assert motion["frames_resampled"] == []
    assert max(motion["framewise_displacement_mm"]) == pytest.approx(2.0, abs=0.3)
    warning = next(w for w in plain.report["warnings"] if w.startswith("head motion"))
    assert f"frames {STEP_FRAME}-{phantom.signal.n_frames - 1}" in warning and "--motion-correct rigid" in warning
    uncorrected = abs(_roi_change(plain, still, phantom.masks, "cbv"))
    assert uncorrected > 0.2  # the silent error the step made: GM CBV off by more than a fifth

    fixed = run(moved, "rigid")
    assert fixed.report["motion"]["frames_resampled"] == list(range(STEP_FRAME, phantom.signal.n_frames))
    for name in ("cbv", "cbf"):  # within 5 % of the still series (a cubic resampling of a one-voxel shift)
        assert abs(_roi_change(fixed, still, phantom.masks, name)) < 0.05, name
    assert np.array_equal(moved.data, before)  # the input is never modified


def test_dce_a_still_series_is_untouched_and_a_step_corrected():
    """The DCE enhancement (grey matter 3x its baseline at the peak, the artery 10x) is not read as motion over half a
    voxel (it biases the registration by up to about 0.7 mm on this object): nothing resampled, the maps
    bit-identical; a step after the bolus is found and undone (extended Tofts with the arterial mask)."""
    phantom = make_dce_phantom(slices=8, duration=100.0, seed=3)
    masks = phantom.masks

    def run(series, correct):
        return run_dce(series, DCEParameters(rls="none", motion_correct=correct), aif_mask=masks["aif"],
                       brain_mask=masks["brain"], tumor_mask=masks["tumor"], t10_map=phantom.truth["t10"])

    still, still_corrected = run(phantom.signal, "none"), run(phantom.signal, "rigid")
    assert still_corrected.report["motion"]["frames_resampled"] == []
    assert not any(w.startswith("head motion") for w in still_corrected.report["warnings"])
    for name, volume in still.maps.items():
        assert np.array_equal(volume.data, still_corrected.maps[name].data), name
    moved = _stepped(phantom.signal, STEP_FRAME)
    fixed = run(moved, "rigid")
    assert fixed.report["motion"]["frames_over_threshold"] == list(range(STEP_FRAME, phantom.signal.n_frames))
    assert any(w.startswith("head motion") for w in fixed.report["warnings"])
    rim = masks["enhancing"]

    def change(result, name):
        return float(result.maps[name].data[rim].mean() / still.maps[name].data[rim].mean() - 1.0)

    assert abs(change(fixed, "ktrans")) < 0.05 and abs(change(fixed, "vp")) < 0.05


def test_framewise_displacement_follows_power_2012():
    """FD = |Δtx| + |Δty| + |Δtz| + 50 mm x (|Δα| + |Δβ| + |Δγ|) (radians) between consecutive frames."""
    angle = np.radians(1.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    fits = [RigidFit.identity(), RigidFit(np.eye(3), np.zeros(3), np.array([0.0, 1.2, 1.6])),
            RigidFit(rotation, np.zeros(3), np.array([0.0, 1.2, 1.6]))]
    fd = framewise_displacement(fits)
    np.testing.assert_allclose(fd, [0.0, 2.8, 50.0 * angle], atol=1e-9)


def test_motion_correct_is_checked():
    with pytest.raises(InputError, match="--motion-correct"):
        DSCParameters(motion_correct="affine")
    with pytest.raises(InputError, match="--motion-correct"):
        DCEParameters(motion_correct="yes")


def test_a_series_left_in_its_file_is_corrected_like_one_in_memory(tmp_path):
    """A series read lazily (the DSC command line's way) is registered frame by frame from its file and corrected
    exactly as the same series in memory; the file is not touched."""
    import hashlib

    from scipy import ndimage

    from BBBAnomalyLib.io import read_volume, write_volume

    rng = np.random.default_rng(0)
    shape = (32, 36, 16)
    idx = np.indices(shape)
    centre = np.array(shape)[:, None, None, None] / 2
    inside = np.sqrt((((idx - centre) / np.array([12, 14, 6])[:, None, None, None]) ** 2).sum(axis=0)) < 1
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 2)
    head = (inside * (100 + 30 * texture / texture.std())).astype(np.float32)
    frames = np.repeat(head[..., None], 6, axis=3)
    frames[..., 3:] = np.roll(frames[..., 3:], 1, axis=1)  # 2 mm from frame 3 on
    series = Volume(frames, np.diag([2.0, 2.0, 2.0, 1.0]), np.arange(6) * 1.5)
    path = tmp_path / "series.nii.gz"
    write_volume(series, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    lazy = read_volume(path, lazy=True)
    assert lazy.source is not None
    warnings_lazy, warnings_memory = [], []
    corrected_lazy, _, report = motion_step(lazy, inside, "rigid", 0, warnings_lazy)
    corrected_memory, _, _ = motion_step(read_volume(path), inside, "rigid", 0, warnings_memory)
    assert report["frames_resampled"] == [3, 4, 5] and abs(report["max_displacement_mm"] - 2.0) < 0.2
    # the same frames registered (ITK's threaded sums may differ in their last bits: a thousandth of the ~100 signal)
    np.testing.assert_allclose(corrected_lazy.data, corrected_memory.data, atol=1e-3)
    assert len(warnings_lazy) == len(warnings_memory) == 1
    assert "frames 3-5" in warnings_lazy[0] and "frames 3-5" in warnings_memory[0]
    interior = ndimage.binary_erosion(inside, iterations=2)
    error = np.abs(corrected_lazy.data[..., 4] - head)[interior]
    assert np.median(error) < 1.0  # within 1 % of the ~100 signal: the step is undone
    assert lazy.source is not None  # the caller's series was not read whole into its Volume
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_slab_too_thin_to_register_is_said_not_a_traceback():
    """A 2-slice DSC slab with --motion-correct detect: ITK cannot smooth an axis under 4 voxels; the run goes on
    unchecked and says so (it raised SimpleITK's RuntimeError)."""
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    ph = make_dsc_phantom(snr=50, slices=2, seed=0)
    res = run_dsc(ph.signal, DSCParameters(method="osvd", motion_correct="detect"), aif_mask=ph.masks["aif"],
                  brain_mask=ph.masks["brain"])
    assert "skipped" in res.report["motion"]
    assert any("head motion was not checked" in w for w in res.report["warnings"])

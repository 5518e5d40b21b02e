"""The FLAIR registered to the T1 (`--register`, structural/alignment.py).

A T1 and a FLAIR of one session are not registered: the patient moves between the series (1-3 mm and 1-3 degrees,
sometimes more), and the pipeline read the FLAIR where the files' coordinates put it. Here the patient's motion is
simulated as the real audit does (scripts/t1flair_misregistration.py): the FLAIR keeps its voxels and its affine
becomes ``W @ affine`` for a rigid world motion W, so its anatomy lies W away from the T1's. On the structural
phantom (2 mm, 74 x 92 x 78): ``register="rigid"`` finds the motion and reads the FLAIR's own voxels back through
it (one interpolation), reports it, names a large one, and ``register="none"`` (the default) warns when a quick estimate
finds the pair misaligned; the input is never modified; the option parses and reaches the run.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair

#: The pipeline's cheapest settings: the registration and the FLAIR's use are what is tested.
FAST = dict(steps=1, samples=1, device="cpu", enhancer_weights=None, anomaly_map=False, threads=1)


@pytest.fixture(scope="module")
def phantom():
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    return make_structural_phantom(4, tumor=True)


def _motion(affine, brain, shift_mm, degrees):
    """4x4 world rigid motion: ``degrees`` (x, y, z Euler) about the brain's centre, then ``shift_mm``."""
    centre = (affine @ np.r_[np.argwhere(brain).mean(axis=0), 1.0])[:3]
    w = np.eye(4)
    w[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()
    w[:3, 3] = centre - w[:3, :3] @ centre + np.asarray(shift_mm, float)
    return w


def _max_displacement(w, affine, brain):
    p = np.argwhere(brain) @ affine[:3, :3].T + affine[:3, 3]
    return float(np.linalg.norm(p @ w[:3, :3].T + w[:3, 3] - p, axis=1).max())


#: About 2.5 mm and 2.7 degrees: an ordinary motion between two series.
SHIFT, ANGLES = (1.5, -1.2, 1.6), (2.0, -1.0, 1.5)


def test_a_moved_flair_is_read_back_at_its_own_voxels(phantom):
    """The FLAIR's voxels are the unmoved ones under a moved affine, so the right T1-index -> FLAIR-index map is
    the identity: the registered map must be it to within the registration's error (a sub-voxel fraction; the
    tolerance, 0.25 voxel = 0.5 mm anywhere in the brain, is a fifth of the 2.5-5 mm motion), and the FLAIR it gives
    must then equal the unmoved FLAIR up to the interpolation at that fraction of a voxel. Before the fix the FLAIR
    was read where the files' coordinates put it: 2.5-5 mm away."""
    from BBBAnomalyLib.structural.alignment import align_flair

    t1, flair, brain = phantom.t1, phantom.flair, phantom.brain
    w = _motion(t1.affine, brain, SHIFT, ANGLES)
    moved = Volume(flair.data.copy(), w @ flair.affine)
    warnings = []
    aligned = align_flair(t1, moved, "rigid", None, warnings)
    idx = np.argwhere(brain).astype(float)
    read = idx @ aligned.t1_to_flair[:3, :3].T + aligned.t1_to_flair[:3, 3]
    assert np.abs(read - idx).max() < 0.25
    # the motion found is the motion applied (translation of the brain's centre, world mm; angle; largest shift)
    report = aligned.report
    assert report["method"] == "rigid" and report["applied"] is True
    assert np.allclose(report["translation_mm"], SHIFT, atol=0.5)
    assert report["rotation_deg"] == pytest.approx(np.degrees(Rotation.from_euler("xyz", ANGLES, degrees=True)
                                                              .magnitude()), abs=0.5)
    assert report["max_displacement_mm"] == pytest.approx(_max_displacement(w, t1.affine, brain), abs=0.5)
    # one trilinear interpolation at < 0.25 voxel: the unmoved FLAIR to ~1 % of its brain mean; placed by the files'
    # coordinates alone it is ~20 % off (the anatomy 2.5-5 mm away)
    mean = float(flair.data[brain].mean())
    assert np.abs(aligned.data - flair.data)[brain].mean() < 0.02 * mean
    assert not any("misaligned" in w_ for w_ in warnings)


def test_the_flair_is_interpolated_once(phantom):
    """The world resampling and the rigid motion are composed, so the FLAIR is read once from its own voxels. On a
    FLAIR on its own tilted grid (10 degrees, 2 mm) moved by the same motion, the registered FLAIR read once is
    closer to the world-resampled unmoved FLAIR than one read twice (the registration's resampling of the
    world-resampled copy): each trilinear interpolation at a fractional position averages neighbours."""
    from BBBAnomalyLib.core.registration import resample_rigid
    from BBBAnomalyLib.structural.alignment import align_flair, estimate_motion, registration_mask
    from BBBAnomalyLib.structural.preprocessing import flair_on_t1_grid

    t1, flair, brain = phantom.t1, phantom.flair, phantom.brain
    c = (np.array(flair.data.shape) - 1) / 2.0
    tilt = np.eye(4)
    tilt[:3, :3] = Rotation.from_euler("x", 10, degrees=True).as_matrix()
    tilt[:3, 3] = c - tilt[:3, :3] @ c
    from scipy import ndimage

    tilted = ndimage.affine_transform(flair.data, tilt[:3, :3], tilt[:3, 3], order=3, mode="constant")
    reference = flair_on_t1_grid(t1, Volume(tilted, flair.affine @ tilt), [])  # unmoved, one interpolation
    moved = Volume(tilted, _motion(t1.affine, brain, SHIFT, ANGLES) @ flair.affine @ tilt)
    once = align_flair(t1, moved, "rigid", brain, []).data
    world = flair_on_t1_grid(t1, moved, [])
    fit = estimate_motion(t1, moved, registration_mask(t1.data, brain))
    twice = resample_rigid(world, t1.voxel_sizes, fit)
    inner = ndimage.binary_erosion(brain, iterations=2)
    err_once = np.abs(once - reference)[inner].mean()
    err_twice = np.abs(twice - reference)[inner].mean()
    assert err_once < 0.8 * err_twice, (err_once, err_twice)


def test_a_registered_run_reports_the_motion_and_the_default_warns(phantom, one_torch_thread):
    """run_t1flair with register="rigid" on the moved pair: report["registration"] gives the motion, the maps equal
    the unmoved pair's (the same FLAIR voxels are read) far more closely than without registration, and the
    inputs are not modified. The default ("none") warns that the pair looks misaligned, naming the size."""
    t1, flair, brain, tumour = phantom.t1, phantom.flair, phantom.brain, phantom.seg.data > 0
    w = _motion(t1.affine, brain, SHIFT, ANGLES)
    moved_data, moved_affine = flair.data.copy(), w @ flair.affine
    moved = Volume(moved_data, moved_affine)
    assert T1FlairParameters().register == "none"  # by the rule in docs/reliability.md (session 21)
    runs = {"unmoved": run_t1flair(t1, flair, T1FlairParameters(**FAST), brain_mask=brain, tumor_mask=tumour),
            "registered": run_t1flair(t1, moved, T1FlairParameters(**FAST, register="rigid"), brain_mask=brain,
                                      tumor_mask=tumour),
            "placed": run_t1flair(t1, moved, T1FlairParameters(**FAST), brain_mask=brain, tumor_mask=tumour)}
    assert np.array_equal(moved_data, flair.data) and np.array_equal(moved_affine, w @ flair.affine)
    report = runs["registered"].report
    assert report["registration"]["method"] == "rigid"
    assert report["registration"]["max_displacement_mm"] == pytest.approx(_max_displacement(w, t1.affine, brain),
                                                                          abs=0.5)
    assert report["timings_s"]["registration"] > 0
    base = runs["unmoved"].maps["synthetic_t1gd_enhancing"].data[brain]
    error = {k: np.abs(runs[k].maps["synthetic_t1gd_enhancing"].data[brain] - base).mean()
             for k in ("registered", "placed")}
    assert error["registered"] < 0.3 * error["placed"], error
    # the placed run warns that the quick estimate finds the pair misaligned, naming the size; the registered does not
    placed = [w_ for w_ in runs["placed"].report["warnings"] if "misaligned" in w_]
    assert len(placed) == 1 and "--register rigid" in placed[0], runs["placed"].report["warnings"]
    estimate = runs["placed"].report["registration"]["estimate"]["max_displacement_mm"]
    assert estimate == pytest.approx(_max_displacement(w, t1.affine, brain), abs=1.0)
    assert f"{estimate:.1f} mm" in placed[0]
    assert not any("misaligned" in w_ for w_ in report["warnings"] + runs["unmoved"].report["warnings"])


def test_a_large_motion_is_named_in_a_warning(phantom):
    """6 mm and 6 degrees move the phantom's brain edge by more than LARGE_MOTION_MM: registered, with a warning
    that gives the size; the ordinary motion of the other tests gives none."""
    from BBBAnomalyLib.structural.alignment import LARGE_MOTION_MM, align_flair

    t1, flair, brain = phantom.t1, phantom.flair, phantom.brain
    w = _motion(t1.affine, brain, (4.0, -3.0, 3.0), (4.0, -3.5, 3.0))
    assert _max_displacement(w, t1.affine, brain) > LARGE_MOTION_MM + 1
    warnings = []
    aligned = align_flair(t1, Volume(flair.data, w @ flair.affine), "rigid", brain, warnings)
    found = aligned.report["max_displacement_mm"]
    assert found == pytest.approx(_max_displacement(w, t1.affine, brain), abs=0.5)
    large = [m for m in warnings if "beyond the usual motion" in m]
    assert len(large) == 1 and f"{found:.1f} mm" in large[0], warnings
    ordinary = []
    align_flair(t1, Volume(flair.data, _motion(t1.affine, brain, SHIFT, ANGLES) @ flair.affine), "rigid", brain,
                ordinary)
    assert not any("beyond the usual motion" in m for m in ordinary)


def test_an_aligned_pair_keeps_its_flair_exactly_when_registered(phantom):
    """On an exactly aligned pair the registration finds its own noise (0.02-0.03 voxel): not applied, so the FLAIR
    is not interpolated for nothing and the networks see the images as given."""
    from BBBAnomalyLib.structural.alignment import NEGLIGIBLE_VOXELS, align_flair

    warnings = []
    aligned = align_flair(phantom.t1, phantom.flair, "rigid", None, warnings)
    assert aligned.report["applied"] is False
    assert aligned.report["max_displacement_mm"] < NEGLIGIBLE_VOXELS * 2.0
    assert np.array_equal(aligned.data, phantom.flair.data) and warnings == []


def test_a_thin_slab_is_not_registered_and_says_so(phantom):
    """Ten 2 mm slices leave a rigid registration's out-of-plane rotations unconstrained: the FLAIR is used as placed,
    with a warning naming the extent, instead of a spurious motion."""
    from BBBAnomalyLib.structural.alignment import align_flair

    k = int(np.argmax(phantom.brain.sum(axis=(0, 1))))
    cut = lambda a: np.ascontiguousarray(a[:, :, k - 5:k + 5])
    shift = np.eye(4)
    shift[2, 3] = k - 5
    t1 = Volume(cut(phantom.t1.data), phantom.t1.affine @ shift)
    flair = Volume(cut(phantom.flair.data), phantom.flair.affine @ shift)
    warnings = []
    aligned = align_flair(t1, flair, "rigid", None, warnings)
    assert aligned.report["method"] == "none" and "20 mm" in aligned.report["skipped"]
    assert np.array_equal(aligned.data, flair.data)
    assert len(warnings) == 1 and "not registered" in warnings[0] and "20 mm" in warnings[0], warnings


def test_register_none_on_an_aligned_pair_keeps_the_flair_as_placed(phantom):
    """`none` reads the FLAIR exactly as before the option (same grid: its own voxels) and the quick estimate on
    the aligned pair stays under MISALIGNED_MM, with no warning."""
    from BBBAnomalyLib.structural.alignment import MISALIGNED_MM, align_flair

    warnings = []
    aligned = align_flair(phantom.t1, phantom.flair, "none", None, warnings)
    assert np.array_equal(aligned.data, phantom.flair.data)
    assert aligned.report["estimate"]["max_displacement_mm"] < MISALIGNED_MM
    assert warnings == []


def test_the_parameter_and_the_cli_option(tmp_path, monkeypatch):
    from bad_input_helpers import write_structural_case

    from BBBAnomalyLib.structural import pipeline

    with pytest.raises(InputError, match="register"):
        T1FlairParameters(register="affine")
    assert T1FlairParameters(register="none").to_json()["register"] == "none"
    case = write_structural_case(tmp_path / "in")
    seen = []

    def fake_run(t1, flair, params, **kwargs):
        seen.append(params.register)
        raise InputError("stopped after the parameters")

    monkeypatch.setattr(pipeline, "run_t1flair", fake_run)
    for extra, expected in (([], "none"), (["--register", "none"], "none"), (["--register", "rigid"], "rigid")):
        code = main(["t1flair", "--t1", str(case["t1"]), "--flair", str(case["flair"]), "--out",
                     str(tmp_path / f"out{len(seen)}"), *extra])
        assert code == 2 and seen[-1] == expected


@pytest.mark.shared_data
def test_a_real_flair_moved_by_2_mm_and_2_degrees_is_found(shared_data):
    """TCGA-FG-6692 (co-registered: the ground truth), its FLAIR moved by about 2 mm and 2 degrees: the T1 ->
    FLAIR index map found for the moved FLAIR is the unmoved pair's own (the pair's residual, 0.8-0.9 mm, is the
    same either way) to within 0.5 mm anywhere in the brain."""
    import nibabel as nib

    from BBBAnomalyLib.structural.alignment import align_flair

    folder = shared_data / "brats" / "TCGA-FG-6692"
    t1_img = nib.load(str(folder / "TCGA-FG-6692_t1_bet.nii.gz"))
    flair_data = np.asarray(nib.load(str(folder / "TCGA-FG-6692_fla_bet.nii.gz")).dataobj, np.float32)
    t1 = Volume(np.asarray(t1_img.dataobj, np.float32), np.asarray(t1_img.affine, float))
    brain = t1.data != 0
    w = _motion(t1.affine, brain, (1.2, -1.0, 1.2), (1.5, -1.0, 0.8))
    unmoved = align_flair(t1, Volume(flair_data, t1.affine), "rigid", None, [], threads=2)
    moved = align_flair(t1, Volume(flair_data, w @ t1.affine), "rigid", None, [], threads=2)
    idx = np.argwhere(brain[::4, ::4, ::4]) * 4.0
    a = idx @ unmoved.t1_to_flair[:3, :3].T + unmoved.t1_to_flair[:3, 3]
    b = idx @ moved.t1_to_flair[:3, :3].T + moved.t1_to_flair[:3, 3]
    assert np.linalg.norm(a - b, axis=1).max() < 0.5
    assert unmoved.report["max_displacement_mm"] < 1.5

"""Head motion between the volumes of a diffusion series (dmri/motion.py, `--motion-correct`).

Small phantom patients (4 mm, 1 b0 + 12 directions: the tensor path) moved by known rigid motions with the physics
of a rotated head (the moved volume's signal is the one measured along the rotated direction; as
scripts/dmri_motion.py simulates it). Session 21's audit (docs/reliability.md): uncorrected motion moves RecDiscNet's
map silently; the correction registers each volume rigidly and rotates its gradient direction.
"""

from __future__ import annotations


import numpy as np
import pytest

from BBBAnomalyLib.core.registration import RigidFit, resample_rigid
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.phantoms import dmri_physics as phys
from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

SEED, VOXEL, DIRECTIONS, SNR = 1002, 4.0, 12, 30.0


def rotation(axis, degrees):
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], float)
    k /= np.linalg.norm(axis)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k



@pytest.fixture(scope="module")
def plain():
    return make_dmri_phantom(SEED, voxel_mm=VOXEL, n_directions=DIRECTIONS, snr=1e9, tumor=True)


def acquire(plain, poses) -> Volume:
    """The series with the head at ``poses`` (RigidFit head -> scanner per volume, None = still), Rician noise at
    SNR 30 with one seed (the motion-free series has the same noise)."""
    v = plain.dwi.voxel_sizes
    acq = plain.dwi.acquisition
    a = plain.dwi.affine[:3, :3] / v
    head = acq.bvecs.copy()
    for i, p in enumerate(poses):
        if p is not None:
            head[i] = a @ p.rotation.T @ a.T @ acq.bvecs[i]  # the tissue sees the gradient rotated back
    with phys.gradient_table_as(acq.bvals, head):
        noiseless = make_dmri_phantom(SEED, voxel_mm=VOXEL, n_directions=DIRECTIONS, snr=1e9, tumor=True).dwi.data
    data = noiseless.copy()
    for i, p in enumerate(poses):
        if p is not None:  # out[x] = head(P^-1(x))
            inverse = RigidFit(p.rotation.T, p.center, -p.rotation.T @ p.translation)
            data[..., i] = np.maximum(resample_rigid(noiseless[..., i], v, inverse, order=3), 0)
    data = phys.rician(data, phys.S0["wm"] / SNR, np.random.default_rng(3))
    return Volume(data.astype(np.float32), plain.dwi.affine.copy(), None, acq)


@pytest.fixture(scope="module")
def center(plain):
    return np.argwhere(plain.masks["brain"]).mean(axis=0) * plain.dwi.voxel_sizes


@pytest.fixture(scope="module")
def still(plain):
    return acquire(plain, [None] * (DIRECTIONS + 1))


@pytest.fixture(scope="module")
def moved_poses(center):
    """Volumes 2 and 5 moved by 4 mm and 4 degrees (9.4 mm at the brain's edge: over one 4 mm voxel, warned),
    volume 4 by 1.5 mm / 1.5 degrees (3.4 mm: corrected, not warned), the rest still."""
    poses = [None] * (DIRECTIONS + 1)
    poses[2] = RigidFit(rotation((1, 0.3, 0), 4.0), center, np.array([3.0, -2.0, 1.5]) * 4 / np.sqrt(15.25))
    poses[4] = RigidFit(rotation((0, 0, 1), 1.5), center, np.array([0.0, 1.5, 0.0]))
    poses[5] = RigidFit(rotation((0.2, 1, 0.5), -4.0), center, np.array([-2.0, 0.0, 3.0]) * 4 / np.sqrt(13.0))
    return poses


@pytest.fixture(scope="module")
def moved(plain, moved_poses):
    return acquire(plain, moved_poses)


def run(dwi, mode, brain=None):
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri

    return run_dmri(dwi, DMRIParameters(device="cpu", motion_correct=mode), brain_mask=brain)


@pytest.fixture(scope="module")
def still_runs(still):
    return {mode: run(still, mode) for mode in ("none", "rigid")}


# --- the physics of a rotated head: the b-vectors --------------------------------------------------------------
def test_rotated_bvecs_are_the_directions_the_tissue_saw():
    """A fibre along e in the head; the head rotated by R (array-axis mm) on an LAS grid; the scanner's gradient g.
    The tissue's signal depends on g . (R_world e) = (R_world^T g) . e: the corrected table must hold R_world^T g
    (Leemans & Jones 2009), with R_world = A R A^T for the grid's direction cosines A."""
    from BBBAnomalyLib.dmri.motion import rotated_bvecs

    affine = np.diag([-2.0, 2.0, 2.5, 1.0])  # LAS, anisotropic voxels: A = diag(-1, 1, 1)
    a = np.diag([-1.0, 1.0, 1.0])
    r = rotation((0.3, 1.0, 0.2), 25.0)
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    fits = [None, RigidFit(r, np.zeros(3), np.zeros(3)), RigidFit(r, np.ones(3), np.ones(3)), RigidFit.identity()]
    out = rotated_bvecs(g, fits, affine)
    fibre = rng.normal(size=3)
    fibre /= np.linalg.norm(fibre)
    world_rotation = a @ r @ a.T
    for i in (1, 2):
        assert out[i] @ fibre == pytest.approx(g[i] @ (world_rotation @ fibre), abs=1e-12)
        assert np.linalg.norm(out[i]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(out[0], g[0])  # no fit: as given
    np.testing.assert_allclose(out[3], g[3], atol=1e-15)
    assert not np.allclose(out[1], g[1], atol=0.05)  # 25 degrees is not nothing


# --- detection ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moved_runs(moved):
    return {mode: run(moved, mode) for mode in ("none", "rigid")}


def test_estimate_finds_the_moved_volumes(plain, moved_runs, moved_poses):
    """The largest displacement of each volume (report['motion']) within a quarter voxel (1 mm at 4 mm) of the
    truth; the moved volumes resampled; the b0 is the reference."""
    brain = plain.masks["brain"]
    v = plain.dwi.voxel_sizes
    motion = moved_runs["rigid"].report["motion"]
    truth = np.array([0.0 if p is None else p.displacement_mm(brain, v).max() for p in moved_poses])
    assert truth[[2, 5]].min() > 4.0 and 3.0 < truth[4] < 4.0
    np.testing.assert_allclose(motion["largest_displacement_mm"], truth, atol=0.25 * VOXEL)
    assert {2, 4, 5} <= set(motion["resampled_volumes"])
    assert motion["largest_displacement_mm"][0] == 0.0 and motion["translation_mm"][0] == [0.0, 0.0, 0.0]
    assert motion["apply_threshold_mm"] == pytest.approx(0.15 * VOXEL)


# --- the pipeline ----------------------------------------------------------------------------------------------
def test_motion_free_series_gives_the_same_map_with_correction_on(still_runs):
    """Nothing moved: nothing is resampled, the map is bit-identical to --motion-correct none's."""
    none, rigid = still_runs["none"], still_runs["rigid"]
    assert none.report["motion"] is None
    motion = rigid.report["motion"]
    assert motion["applied"] is False and motion["resampled_volumes"] == []
    assert motion["max_displacement_mm"] < motion["apply_threshold_mm"] == pytest.approx(0.15 * VOXEL)
    assert len(motion["largest_displacement_mm"]) == DIRECTIONS + 1
    for name in none.maps:
        np.testing.assert_array_equal(rigid.maps[name].data, none.maps[name].data)
    assert not any("moved" in w for w in rigid.report["warnings"])


def test_moved_series_is_corrected_and_warned(plain, moved, moved_poses, moved_runs, still_runs):
    """Moved volumes: the corrected map is closer to the motion-free one than the uncorrected map; the report
    lists the displacement and the resampled volumes; a warning names the largest displacement and the volumes;
    the input series and its table are not modified (the runs had the module's series; made again here)."""
    again = acquire(plain, moved_poses)
    off, on = moved_runs["none"], moved_runs["rigid"]
    np.testing.assert_array_equal(moved.data, again.data)  # the series the runs read, unchanged
    np.testing.assert_array_equal(moved.acquisition.bvecs, again.acquisition.bvecs)
    assert on.extras["signal"].data is not moved.data  # the corrected copy was analysed
    brain = still_runs["none"].brain_mask
    reference = still_runs["none"].maps["anomaly"].data[brain]

    def r(result):
        return np.corrcoef(result.maps["anomaly"].data[brain], reference)[0, 1]

    assert 1 - r(on) < 0.5 * (1 - r(off)), (r(on), r(off))  # the disagreement with the motion-free map halved
    motion = on.report["motion"]
    assert motion["applied"] is True and {2, 4, 5} <= set(motion["resampled_volumes"])
    assert motion["worst_volume"] in (2, 5) and motion["max_displacement_mm"] > 4.0
    warned = [w for w in on.report["warnings"] if "head moved" in w]
    assert len(warned) == 1 and "2 volume(s) moved more than 4 mm (one voxel): 2, 5." in warned[0]
    assert "registered rigidly" in warned[0]
    assert off.report["motion"] is None  # none: no estimate, no warning (the old behaviour)


def test_correction_without_rotating_the_bvecs_is_worse(plain, center):
    """Leemans & Jones: a rotated head also rotates the directions. With every volume rotated by 8 degrees about
    the same axis (a series moved after its b0), the corrected map with the table rotated is closer to the
    motion-free one than the same resampled series read with the scanner's table."""
    # (checked through the module's two halves: corrected_series with and without the rotation)
    from BBBAnomalyLib.dmri.motion import MotionEstimate, corrected_series

    poses = [None] + [RigidFit(rotation((0.3, 0.2, 1.0), 8.0), center, np.zeros(3))] * DIRECTIONS
    series = acquire(plain, poses)
    n = DIRECTIONS + 1
    estimate = MotionEstimate(list(poses), np.zeros(n), np.r_[0.0, np.full(n - 1, 10.0)], np.zeros(n), VOXEL)
    estimate.fits[0] = RigidFit.identity(center)
    fixed = corrected_series(series, estimate, series.acquisition.bvecs)
    unrotated = Volume(fixed.data, fixed.affine, None, series.acquisition)
    still = acquire(plain, [None] * n)
    brain = plain.masks["brain"]
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri

    def anomaly(dwi):
        return run_dmri(dwi, DMRIParameters(device="cpu", motion_correct="none"), brain_mask=brain).maps["anomaly"].data

    reference = anomaly(still)
    inside = brain & (reference >= 0)
    with_rotation = np.corrcoef(anomaly(fixed)[inside], reference[inside])[0, 1]
    without = np.corrcoef(anomaly(unrotated)[inside], reference[inside])[0, 1]
    assert with_rotation > without, (with_rotation, without)


def test_cli_option_and_bad_value(tmp_path):
    from BBBAnomalyLib.cli import build_parser
    from BBBAnomalyLib.core.errors import InputError
    from BBBAnomalyLib.dmri import DMRIParameters

    args = build_parser().parse_args(["dmri", "x.nii.gz", "--motion-correct", "none"])
    assert args.motion_correct == "none"
    assert DMRIParameters(motion_correct=args.motion_correct).motion_correct.value == "none"
    with pytest.raises(InputError, match="(?i)motion"):
        DMRIParameters(motion_correct="affine")

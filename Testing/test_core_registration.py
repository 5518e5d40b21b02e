"""core.registration: the shared rigid registration (SimpleITK, mutual information) finds a known motion, also
across a contrast change, and its resampling follows the transform convention the callers rely on."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from BBBAnomalyLib.core.registration import RigidFit, register_rigid, resample_rigid

VOXEL = np.array([2.0, 2.0, 3.0])


@pytest.fixture(scope="module")
def head():
    """An ellipsoidal 'head' with smooth internal texture (so that rotation is observable)."""
    rng = np.random.default_rng(0)
    shape = (48, 56, 40)
    idx = np.indices(shape)
    centre = np.array(shape)[:, None, None, None] / 2
    radii = np.array([20, 24, 16])[:, None, None, None]
    inside = np.sqrt((((idx - centre) / radii) ** 2).sum(axis=0)) < 1
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    return inside, inside * (100 + 30 * texture / texture.std())


def _known_motion(shape):
    rotation = Rotation.from_euler("xyz", [3, -2, 4], degrees=True).as_matrix()
    return RigidFit(rotation, np.array(shape) / 2 * VOXEL, np.array([2.5, -3.0, 1.5]))


def _residual_mm(true_motion, fit, mask):
    """How far T_true(T_fit(x)) lands from x: 0 when the fit undoes the motion exactly."""
    points = np.argwhere(mask) * VOXEL
    return np.linalg.norm(true_motion.apply(fit.apply(points)) - points, axis=1)


def test_resampling_follows_the_transform_convention():
    """out[x] = moving(T(x)): a pure translation by one voxel along axis 0 reads the next voxel."""
    moving = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    shift = RigidFit(np.eye(3), np.zeros(3), np.array([VOXEL[0], 0.0, 0.0]))
    out = resample_rigid(moving, VOXEL, shift)
    np.testing.assert_allclose(out[:-1], moving[1:], atol=1e-4)
    assert np.all(out[-1] == 0)  # outside the moving image: the fill value
    np.testing.assert_allclose(resample_rigid(moving, VOXEL, RigidFit.identity()), moving, atol=1e-5)


def test_identical_images_give_the_identity(head):
    inside, image = head
    fit = register_rigid(image, image, VOXEL, mask=inside)
    assert _residual_mm(RigidFit.identity(), fit, inside).max() < 0.2  # a tenth of the 2 mm voxel


def test_a_known_motion_is_undone(head):
    inside, image = head
    motion = _known_motion(image.shape)
    moved = resample_rigid(image, VOXEL, motion)  # moved[x] = image(T(x))
    fit = register_rigid(image, moved, VOXEL, mask=inside)
    assert _residual_mm(motion, fit, inside).max() < 0.25  # the motion itself moves voxels by up to ~6 mm
    realigned = resample_rigid(moved, VOXEL, fit)
    core = ndimage.binary_erosion(inside, iterations=4)
    assert np.abs(realigned[core] - image[core]).mean() < 0.1 * np.abs(moved[core] - image[core]).mean()


def test_a_known_motion_is_undone_across_a_contrast_change(head):
    """Mutual information: the moving image is a non-linear, inverted function of the fixed one (like FLAIR vs
    T1, or a frame at the bolus peak vs a baseline frame)."""
    inside, image = head
    motion = _known_motion(image.shape)
    moved = resample_rigid(image, VOXEL, motion)
    other_contrast = np.where(moved > 1, 1000.0 / (moved + 20.0), 0.0)
    fit = register_rigid(image, other_contrast, VOXEL, mask=inside)
    assert _residual_mm(motion, fit, inside).max() < 1.0  # half a voxel
    assert fit.rotation_deg == pytest.approx(np.degrees(Rotation.from_matrix(motion.rotation).magnitude()), abs=0.5)


def test_bad_arguments_are_refused(head):
    inside, image = head
    with pytest.raises(ValueError, match="one shape"):
        register_rigid(image, image[:-1], VOXEL)
    with pytest.raises(ValueError, match="non-empty"):
        register_rigid(image, image, VOXEL, mask=np.zeros(image.shape, bool))


def test_an_image_thinner_than_four_voxels_is_refused_not_a_traceback_from_itk():
    from BBBAnomalyLib.core.registration import can_register

    thin = np.ones((20, 20, 3), np.float32)
    assert not can_register(thin.shape) and can_register((20, 20, 4))
    with pytest.raises(ValueError, match="at least 4 voxels along every axis"):
        register_rigid(thin, thin, VOXEL)

"""Where N4's fitted log field is evaluated (structural/bias_field.py: evaluate_log_field, session 22).

N4 is fitted on the brain's box shrunk by a whole factor per axis. ITK's ``GetLogBiasFieldAsImage(reference)``
lays the B-spline over the reference grid's first-to-last voxel centres, so evaluating it on the full-resolution
box (sessions 20-22) stretched and shifted the fitted field (the shrunk grid's centres span less than the box):
0.03-0.06 log units off on TCGA-FG-6692. The field is now evaluated over the shrunk grid's own span and linearly
interpolated onto the image. Here, on the shipped MNI anatomy with a known smooth field: at the fit grid's points
the evaluated field is N4's own (its corrected output on the shrunk grid), and between them it stays within the
linear-interpolation bound of the exact B-spline.
"""

from __future__ import annotations

import numpy as np
import pytest

from BBBAnomalyLib.structural import bias_field


def _image(step: int, shape=None):
    """A T1-like anatomy image (CSF/GM/WM fractions x (0.3, 0.62, 1), 2 % noise) times a smooth field (a ±15 %
    ramp across, a 10 % quadratic bowl front to back, in the log), on the 2 mm MNI grid taken every ``step``
    voxels and cropped to ``shape``; (image, brain)."""
    from BBBAnomalyLib.phantoms.anatomy import load_anatomy

    anatomy = load_anatomy()
    cut = (slice(None, None, step),) * 3
    fractions, brain = anatomy.fractions[cut], anatomy.brain[cut]
    if shape is not None:
        fractions, brain = fractions[:shape[0], :shape[1], :shape[2]], brain[:shape[0], :shape[1], :shape[2]]
    clean = fractions @ np.array([0.30, 0.62, 1.00], np.float32)
    clean = clean + np.random.default_rng(0).normal(0.0, 0.02, clean.shape)
    x = np.linspace(-1.0, 1.0, brain.shape[2])[None, None, :]
    y = np.linspace(-1.0, 1.0, brain.shape[1])[None, :, None]
    field = np.exp(0.15 * x + 0.1 * y ** 2)
    return np.where(brain, clean * field, 0.0).astype(np.float32), brain


def _fit(data, brain, voxel_mm, fit_spacing_mm):
    """N4 fitted as n4_log_field fits it; (filter, sitk image, shrunk image, shrunk mask, factors in x, y, z)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(data)
    image.SetSpacing([float(v) for v in voxel_mm][::-1])
    mask = sitk.GetImageFromArray((brain & (data > 0)).astype(np.uint8))
    mask.CopyInformation(image)
    factors = bias_field.shrink_factors(voxel_mm, fit_spacing_mm)[::-1]
    small, small_mask = sitk.Shrink(image, factors), sitk.Shrink(mask, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(bias_field.ITERATIONS))
    n4.SetConvergenceThreshold(bias_field.CONVERGENCE)
    n4.SetNumberOfThreads(1)
    corrected = n4.Execute(small, small_mask)
    return n4, image, small, small_mask, corrected, factors


def test_the_field_at_the_fit_grids_points_is_the_one_n4_fitted():
    """4 mm voxels, fitted at 8 mm (factor 2), every axis an odd number of voxels: the shrunk grid's centres then
    fall on the image's voxels 1, 3, 5, ... N4's own correction on the shrunk grid (input / output) is the field it
    fitted; the evaluated field at those voxels must be it up to float32 rounding (ITK evaluates the B-spline in
    float32 from 4^3 control points per voxel, a different sum on a different grid: 1e-4 log units; measured 2e-5).
    The full-resolution evaluation of sessions 20-22 stretched it over the box: off by ~1e-2 here."""
    import SimpleITK as sitk

    data, brain = _image(2, shape=(37, 45, 39))
    voxel = (4.0, 4.0, 4.0)
    n4, image, small, small_mask, corrected, factors = _fit(data, brain, voxel, 8.0)
    assert factors == [2, 2, 2] and all(n % 2 == 1 for n in data.shape)
    nodes = (sitk.GetArrayFromImage(small_mask) > 0) & (sitk.GetArrayFromImage(small) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):  # the background's 0 / 0: not in ``nodes``
        fitted = np.log(sitk.GetArrayFromImage(small) / sitk.GetArrayFromImage(corrected))
    at_nodes = (slice(1, None, 2),) * 3  # the image's voxels at the shrunk grid's centres
    for field in (bias_field.evaluate_log_field(n4, image, small, factors),
                  bias_field.n4_log_field(data, brain & (data > 0), voxel, 8.0, threads=1)):
        error = np.abs(field[at_nodes] - fitted)[nodes]
        print(f"at the fit grid's points: max |d log field| {error.max():.2e}")
        assert error.max() < 1e-4, error.max()


def test_between_the_fit_grids_points_the_field_is_within_the_interpolation_bound():
    """The production setting: 1 mm voxels (the 2 mm anatomy read as 1 mm), fitted at 4 mm (factor 4), so the
    field is evaluated every 2 mm over the shrunk grid's span and linearly interpolated. Trilinear interpolation
    on a grid of spacing h is off by at most sum_i h^2 / 8 max |d2f/dx_i^2|; the exact B-spline (evaluated over
    the same span every 0.5 mm, which holds every image voxel since the shrunk grid's offsets are multiples of
    half a voxel) gives the curvatures. Every brain voxel inside the span must be within that bound (measured
    about half of it); the brain voxels beyond it (the box's edge: nearest value) are few (0.01-0.05 % on the
    real cases)."""
    import SimpleITK as sitk

    data, brain = _image(1)
    box = bias_field.brain_box(brain)  # as correct() crops it: the brain MARGIN voxels from the box's edge
    data, brain = data[box], brain[box]
    voxel = (1.0, 1.0, 1.0)
    n4, image, small, small_mask, corrected, factors = _fit(data, brain, voxel, 4.0)
    assert factors == [4, 4, 4]
    field = bias_field.evaluate_log_field(n4, image, small, factors)
    reference = sitk.Image([8 * (n - 1) + 1 for n in small.GetSize()], sitk.sitkFloat32)
    reference.SetOrigin(small.GetOrigin())
    reference.SetSpacing([0.5, 0.5, 0.5])
    exact = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(reference)).astype(np.float64)
    offset = np.array([round(2 * v) for v in small.GetOrigin()[::-1]])
    voxels = np.argwhere(brain)
    where = 2 * voxels - offset  # image voxel i sits at index 2 i - 2 origin of the 0.5-voxel grid
    inside = np.all((where >= 0) & (where < np.array(exact.shape)), axis=1)
    assert inside.mean() > 0.95  # 0.98: the anatomy's brain reaches its array's edge (the margin is clipped)
    error = np.abs(field[tuple(voxels[inside].T)] - exact[tuple(where[inside].T)])
    h = 2.0  # the evaluation grid's spacing in voxels (factor 4 / 2)
    curvature = sum(np.abs(np.diff(exact, 2, axis=a)).max() / 0.5 ** 2 for a in range(3))
    bound = h ** 2 / 8.0 * curvature + 1e-4  # + float32 rounding (as above)
    print(f"between the points: max |d log field| {error.max():.2e}, p99 {np.percentile(error, 99):.2e}, "
          f"bound {bound:.2e}")
    assert error.max() < bound, (error.max(), bound)


@pytest.mark.parametrize("method", ["n4", "n4-lesion-out"])
def test_the_corrected_image_is_the_input_over_the_evaluated_field(method):
    """correct_pair divides exactly that field out (scaled to a geometric mean of 1 over the fit voxels) and
    keeps the voxels outside the brain: the corrected image's log ratio to the input is the evaluated field up
    to a constant, to float32 rounding."""
    data, brain = _image(2)
    voxel = (4.0, 4.0, 4.0)
    t1, flair, report = bias_field.correct_pair(data, data, brain, voxel, method, [], threads=1, fit_spacing_mm=8.0)
    box = bias_field.brain_box(brain)
    fit_mask = brain[box] & (data[box] > 0)
    if method == "n4-lesion-out":
        exclude, _ = bias_field.lesion_estimate(data, brain, voxel, threads=1, fit_spacing_mm=8.0)
        fit_mask &= ~exclude[box]
    field = bias_field.n4_log_field(data[box], fit_mask, voxel, 8.0, threads=1)
    positive = (brain & (data > 0))[box]
    removed = np.log(data[box][positive] / t1[box][positive]) - field[positive]
    assert np.ptp(removed) < 1e-4, np.ptp(removed)
    np.testing.assert_array_equal(t1[~brain], data[~brain])
    assert report["t1"]["method"] == method

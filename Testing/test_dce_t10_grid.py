"""A T10 map or VFA series on another grid than the DCE series (another resolution or field of view) is read at
the series' voxels from its measured voxels (core.resampling), with a report warning; voxels it does not cover are
refused in one line, not filled with a made-up T10."""

import json

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dce.validation import check_t10_map, check_t10_values
from BBBAnomalyLib.t1map.vfa import spgr_signal


def _coarse_grid(affine, shape, factor=(2, 2, 1)):
    """A grid whose voxels each cover factor[i] voxels of (affine, shape): same corner, larger voxels."""
    f = np.asarray(factor, float)
    coarse = affine.copy()
    coarse[:3, :3] = affine[:3, :3] * f[None, :]
    coarse[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((f - 1) / 2)
    return coarse, tuple(int(np.ceil(n / k)) for n, k in zip(shape, factor))


def _world(affine, shape):
    ijk = np.indices(shape).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).T.reshape(shape + (3,))


def test_a_t10_map_on_a_coarser_rotated_grid_is_read_at_the_series_voxels():
    """A T10 field linear in world position is reproduced exactly by trilinear interpolation inside the map; the
    map here has 2x2 mm voxels, its own origin and its axes stored in another order (as a sagittal file might)."""
    series_affine = np.diag([1.0, 1.0, 2.0, 1.0])
    series_affine[:3, 3] = [-10.0, -8.0, -4.0]
    shape = (20, 16, 5)
    series = Volume(np.ones(shape + (6,), np.float32), series_affine, times=np.arange(6.0))
    coarse, coarse_shape = _coarse_grid(series_affine, shape, (2, 2, 1))

    def field(world):
        return 1.2 + 0.01 * world[..., 0] - 0.005 * world[..., 1] + 0.02 * world[..., 2]

    # store the map with its array axes permuted (z, x, y): same world positions, another voxel order
    permuted = coarse[:, [2, 0, 1, 3]]
    data = np.transpose(field(_world(coarse, coarse_shape)), (2, 0, 1))
    warnings = []
    values = check_t10_map(Volume(data, permuted), series, warnings)
    truth = field(_world(series_affine, shape))
    interior = (slice(1, -1), slice(1, -1), slice(None))  # the map's voxel centres enclose these series voxels
    np.testing.assert_allclose(values[interior], truth[interior], rtol=1e-12, atol=1e-12)
    assert np.isfinite(values).all()  # the outermost half-voxel rim is covered too
    assert np.abs(values - truth).max() < 0.01 * 2  # the rim: one coarse voxel's change of the field at most
    assert len(warnings) == 1 and "resampled onto it" in warnings[0]


def test_series_voxels_outside_the_maps_field_of_view_are_refused_not_filled():
    series_affine = np.eye(4)
    shape = (30, 10, 4)
    series = Volume(np.ones(shape + (6,), np.float32), series_affine, times=np.arange(6.0))
    half = np.full((10, 10, 4), 1.4)  # covers x = 0..9 mm of the series' 0..29 mm
    values = check_t10_map(Volume(half, np.eye(4)), series, [])
    assert np.isfinite(values[:10]).all() and np.isnan(values[10:]).all()  # the map's field of view ends at x = 9
    with pytest.raises(InputError, match="outside the T10 map's field of view"):
        check_t10_values(values.ravel())
    with pytest.raises(InputError, match="does not overlap"):
        far = np.eye(4)
        far[:3, 3] = 1000.0
        check_t10_map(Volume(half, far), series, [])


def test_a_map_on_the_series_grid_is_taken_as_it_is():
    series = Volume(np.ones((4, 4, 3, 6), np.float32), np.eye(4), times=np.arange(6.0))
    data = np.random.default_rng(0).uniform(0.8, 2.0, (4, 4, 3))
    warnings = []
    np.testing.assert_array_equal(check_t10_map(Volume(data, np.eye(4)), series, warnings), data)
    assert warnings == []


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    tmp = tmp_path_factory.mktemp("dce_t10_grid")
    ph = make_dce_phantom(snr=None, slices=3, seed=5)
    ph.write(tmp / "ph")
    return tmp, ph


def test_dce_takes_a_vfa_series_acquired_on_a_coarser_grid(phantom):
    """`dce --vfa` with the VFA series at 2x the in-plane voxel size: its T1 is fitted on its own grid and read at
    the DCE voxels. With one T10 everywhere the result must equal `--t10` with that value; before, the run was
    refused ("not on the DCE grid")."""
    tmp, ph = phantom
    affine = nib.load(tmp / "ph" / "signal.nii.gz").affine
    coarse, coarse_shape = _coarse_grid(affine, ph.truth["t10"].data.shape, (2, 2, 1))
    angles, tr, t10 = [2.0, 5.0, 15.0], 0.005, 1.4
    s = spgr_signal(np.full(int(np.prod(coarse_shape)), 1000.0), np.full(int(np.prod(coarse_shape)), 1 / t10),
                    angles, tr).reshape(coarse_shape + (3,))
    nib.save(nib.Nifti1Image(s.astype(np.float32), coarse), tmp / "vfa_coarse.nii.gz")
    brain = ph.masks["brain"]
    common = [str(tmp / "ph" / "signal.nii.gz"), "--aif-mask", str(tmp / "ph" / "mask_aif.nii.gz"),
              "--mask", str(tmp / "ph" / "mask_brain.nii.gz"), "--rls", "none", "--quiet"]
    assert main(["dce", *common, "--vfa", str(tmp / "vfa_coarse.nii.gz"), "--vfa-flip-angles", "2", "5", "15",
                 "--vfa-tr", str(tr), "--out", str(tmp / "with_vfa")]) == 0
    assert main(["dce", *common, "--t10", str(t10), "--out", str(tmp / "with_t10")]) == 0
    a = nib.load(tmp / "with_vfa" / "ktrans.nii.gz").get_fdata()[brain]
    b = nib.load(tmp / "with_t10" / "ktrans.nii.gz").get_fdata()[brain]
    # the VFA fit recovers 1.4 s to its solver's tolerance; Ktrans follows T10 about linearly
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    report = json.loads((tmp / "with_vfa" / "report.json").read_text())
    assert report["t10_from_vfa"]["grid"].startswith("VFA grid")
    assert any("T10 map is not on the DCE series grid" in w for w in report["warnings"])

"""A mask saved in another orientation (round 17's user audit): the same voxels stored with the axes reversed or
permuted, as another tool may write them, are read exactly; anything else that is not the input's grid is still
refused in one line."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.io import read_mask

AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 3.0, -72], [0, 0, 0, 1]])  # LAS storage


@pytest.fixture
def reference():
    return Volume(np.zeros((9, 11, 5, 3), np.float32), AFFINE, times=np.arange(3.0))


@pytest.fixture
def mask():
    rng = np.random.default_rng(0)
    return rng.random((9, 11, 5)) > 0.7


def test_the_same_voxels_in_another_storage_order_are_read_exactly(reference, mask, tmp_path):
    image = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
    for name, ornt in (("ras", nib.orientations.axcodes2ornt(("R", "A", "S"))),
                       ("lps_flipped", nib.orientations.axcodes2ornt(("L", "P", "S"))),
                       ("permuted", nib.orientations.axcodes2ornt(("S", "R", "P")))):
        transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(AFFINE), ornt)
        other = image.as_reoriented(transform)
        assert not np.allclose(other.affine, AFFINE)  # stored differently from the series
        path = tmp_path / f"{name}.nii.gz"
        nib.save(other, str(path))
        np.testing.assert_array_equal(read_mask(str(path), reference, name), mask)


@pytest.mark.parametrize("change, words", [
    (lambda a: a + np.diag([0, 0, 0, 0]) + np.pad([[2.0], [0], [0]], ((0, 1), (3, 0))), ("origin 2 mm apart",)),
    (lambda a: a + np.pad([[1.0], [0], [0]], ((0, 1), (3, 0))), ("origin 1 mm apart",)),  # half a voxel
])
def test_a_shifted_grid_is_still_refused(reference, mask, change, words):
    with pytest.raises(InputError) as err:
        read_mask(Volume(mask.astype(np.uint8), change(AFFINE.copy())), reference, "tumor")
    assert all(w in str(err.value) for w in words) and "not on the input's voxel grid" in str(err.value)


def test_a_flipped_grid_that_covers_other_voxels_is_refused(reference, mask):
    flipped = AFFINE.copy()
    flipped[:3, 1] *= -1  # reversed along j but not moved to the other end: other voxels
    with pytest.raises(InputError, match="not on the input's voxel grid"):
        read_mask(Volume(mask.astype(np.uint8), flipped), reference, "tumor")

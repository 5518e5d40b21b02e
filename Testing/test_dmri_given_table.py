"""A DWI given its own gradient table (--bval/--bvec) is read with that table even where a stale x.bval/x.bvec of
another export lies beside the image (session 23: the sibling's count refused the run before the user's table was
read, so a corrected table could not be used)."""

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.dmri.dwi_io import read_dwi

DIRECTIONS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.7071, 0.7071, 0], [0.7071, 0, 0.7071], [0, 0.7071, 0.7071]])


def _write_table(stem, bvals, bvecs):
    np.savetxt(f"{stem}.bval", np.asarray(bvals, float)[None, :], fmt="%g")
    np.savetxt(f"{stem}.bvec", np.asarray(bvecs, float).T, fmt="%.6f")


@pytest.fixture
def dwi_with_stale_table(tmp_path):
    """b0 + 6 directions at b = 1000, with a sibling table written for 8 volumes (the export with its trace image)."""
    data = np.random.default_rng(0).uniform(50, 100, (4, 4, 3, 7)).astype(np.float32)
    image = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(image))
    _write_table(tmp_path / "dwi", [0] + [1000] * 7, np.vstack([[0, 0, 0], DIRECTIONS, [0, 0, 0]]))
    _write_table(tmp_path / "fixed", [0] + [1000] * 6, np.vstack([[0, 0, 0], DIRECTIONS]))
    return image, tmp_path


def test_a_given_table_replaces_a_stale_sibling_table(dwi_with_stale_table):
    image, folder = dwi_with_stale_table
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    volume = read_dwi(image, folder / "fixed.bval", folder / "fixed.bvec")
    assert volume.n_frames == 7
    np.testing.assert_array_equal(volume.acquisition.bvals, [0] + [1000] * 6)
    assert volume.acquisition.bvecs.shape == (7, 3)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing beside it touched


def test_the_stale_sibling_table_alone_is_still_refused_in_one_line(dwi_with_stale_table):
    image, _ = dwi_with_stale_table
    with pytest.raises(InputError, match="8 b-values but the image has 7 volumes"):
        read_dwi(image)

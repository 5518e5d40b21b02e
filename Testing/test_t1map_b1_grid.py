"""A B1 map on its own (coarser, offset) grid, as B1 maps are acquired: resampled onto the VFA grid from its measured
voxels (it used to be refused: "resample it onto the VFA series grid first"); one-line refusals where it does not
cover the fitted voxels or is in a scanner's raw units."""

import json

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.t1map.inputs import VFASeries
from BBBAnomalyLib.t1map.pipeline import run_t1map
from BBBAnomalyLib.t1map.vfa import spgr_signal

ANGLES, TR = np.array([2.0, 5.0, 12.0]), 0.005
SHAPE, VOXEL = (30, 34, 14), np.array([2.0, 2.0, 4.0])
HEAD_RADII = np.array([25.0, 30.0, 24.0])


def _grid(shape, voxel, shift=(0.0, 0.0, 0.0)):
    affine = np.diag(list(voxel) + [1.0])
    affine[:3, 3] = -np.asarray(voxel) * (np.asarray(shape) - 1) / 2 + np.asarray(shift)
    ijk = np.argwhere(np.ones(shape, bool))
    return affine, (affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T


def _b1_field(world):  # smooth, 0.8-1.2, varying on tens of mm as a transmit field does
    return 1.0 + 0.2 * np.tanh(world[:, 0] / 30.0) * np.cos(world[:, 2] / 25.0) + 0.05 * world[:, 1] / 30.0


def _head(world, radii):
    return ((world / radii) ** 2).sum(axis=1) < 1


@pytest.fixture(scope="module")
def case():
    affine, world = _grid(SHAPE, VOXEL)
    head = _head(world, HEAD_RADII)
    t1 = np.where(head, 1.0 + 0.3 * np.sin(world[:, 0] / 6.0), 0.0)
    signal = np.zeros((len(world), ANGLES.size))
    signal[head] = spgr_signal(np.full(head.sum(), 1000.0), 1 / t1[head], ANGLES[None] * _b1_field(world[head])[:, None],
                               TR)
    vfa = VFASeries(Volume(signal.reshape(SHAPE + (3,)), affine), ANGLES, TR)
    # the B1 map: 4 x 4 x 6 mm, its field of view shifted by a few mm, 0 outside its own (2 mm smaller) head mask
    b1_shape, b1_voxel = (16, 18, 11), np.array([4.0, 4.0, 6.0])
    b1_affine, b1_world = _grid(b1_shape, b1_voxel, shift=(3.0, -2.0, 1.0))
    b1 = np.where(_head(b1_world, HEAD_RADII - 2.0), _b1_field(b1_world), 0.0).reshape(b1_shape)
    return vfa, head.reshape(SHAPE), t1.reshape(SHAPE), Volume(b1, b1_affine)


def test_a_coarser_offset_b1_map_is_resampled_from_its_measured_voxels(case):
    vfa, head, t1, b1 = case
    got = run_t1map(vfa, b1=b1, mask=head)
    error = got.maps["t1"].data[head] / t1[head] - 1
    # Noiseless: what is left is the trilinear error of a smooth field (T1 ~ B1^2 at these angles), largest where an
    # edge voxel took its nearest measured value (up to 10 mm away, field gradient ~0.7 %/mm). Without the map the
    # field's own +-20 % gives T1 errors of tens of per cent.
    assert abs(np.median(error)) < 0.005 and np.percentile(np.abs(error), 90) < 0.02 and np.abs(error).max() < 0.15
    without = run_t1map(vfa, mask=head).maps["t1"].data[head] / t1[head] - 1
    assert np.percentile(np.abs(without), 90) > 0.15
    assert any("resampled onto it" in w and "nearest measured value" in w for w in got.report["warnings"])
    assert got.report["b1"]["median"] == pytest.approx(np.median(_b1_field(_grid(SHAPE, VOXEL)[1])[head.ravel()]),
                                                       abs=0.01)


def test_a_b1_map_that_misses_part_of_the_head_is_refused_in_one_line(case):
    vfa, head, _, b1 = case
    cut = b1.data.copy()
    cut[:, :, 7:] = 0.0  # its top slabs not measured
    with pytest.raises(InputError, match=r"no measured value near \d+ of the \d+ voxels fitted.*--mask"):
        run_t1map(vfa, b1=Volume(cut, b1.affine), mask=head)


def test_a_siemens_b1_map_in_its_own_units_is_refused_with_the_conversion(case):
    vfa, head, _, b1 = case
    with pytest.raises(InputError, match="divide it by 800"):
        run_t1map(vfa, b1=Volume(b1.data * 800.0, b1.affine), mask=head)


def test_t1map_command_takes_a_b1_file_on_another_grid(case, tmp_path):
    vfa, head, t1, b1 = case
    nib.save(nib.Nifti1Image(vfa.signals.data.astype(np.float32), vfa.signals.affine), tmp_path / "vfa.nii.gz")
    nib.save(nib.Nifti1Image(b1.data.astype(np.float32), b1.affine), tmp_path / "b1.nii.gz")
    nib.save(nib.Nifti1Image(head.astype(np.uint8), vfa.signals.affine), tmp_path / "head.nii.gz")
    out = tmp_path / "t1"
    assert main(["t1map", str(tmp_path / "vfa.nii.gz"), "--flip-angles", "2", "5", "12", "--tr", str(TR),
                 "--b1", str(tmp_path / "b1.nii.gz"), "--mask", str(tmp_path / "head.nii.gz"), "--out", str(out),
                 "--quiet"]) == 0
    fitted = nib.load(out / "t1.nii.gz").get_fdata()
    assert np.median(np.abs(fitted[head] / t1[head] - 1)) < 0.01
    assert any("resampled" in w for w in json.loads((out / "report.json").read_text())["warnings"])

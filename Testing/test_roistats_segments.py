"""Regions chosen inside a label file: a Slicer segmentation (.seg.nrrd written here by Slicer's own storage node from
the slicer-core wheel) holding "tumor" and "nawm" used to be taken whole ("nonzero = inside"): given as both --roi and
--reference it gave a tumour/NAWM ratio of exactly 1, exit 0. Now a segment is chosen by name (--roi-label,
--reference-label), a file of several segments is refused as a mask without one, a label map given whole is noted,
and identical ROI and reference masks are refused."""

import json

import nibabel as nib
import numpy as np
import pytest
import slicer
import vtk
from vtk.util import numpy_support

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.io import read_mask, read_volume

SHAPE = (12, 10, 6)  # x, y, z
SPACING, ORIGIN = (2.0, 2.0, 3.0), (-10.0, 5.0, 2.0)


def _tumor_and_nawm():
    tumor = np.zeros(SHAPE, np.uint8)
    tumor[4:8, 3:6, 2:4] = 1
    nawm = np.zeros(SHAPE, np.uint8)
    nawm[1:3, 1:3, 1:3] = 1
    return tumor, nawm


def _image(array):
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*SHAPE)
    image.SetSpacing(*SPACING)
    image.SetOrigin(*ORIGIN)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    flat = np.ascontiguousarray(array.transpose(2, 1, 0)).ravel()  # VTK's x-fastest order
    image.GetPointData().GetScalars().DeepCopy(numpy_support.numpy_to_vtk(flat, deep=1, array_type=vtk.VTK_UNSIGNED_CHAR))
    return image


def _write_seg_nrrd(path, segments: dict, reference_geometry: bool = True):
    """A .seg.nrrd as Slicer writes it: vtkMRMLSegmentationStorageNode over binary-labelmap segments (overlapping
    segments go to separate layers: a 4D file). Without a reference geometry Slicer crops the file to the segments."""
    slicer.mrmlScene = scene = slicer.vtkMRMLScene()
    converter = slicer.vtkSegmentationConverter
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.GetSegmentation().SetSourceRepresentationName(converter.GetBinaryLabelmapRepresentationName())
    if reference_geometry:
        node.GetSegmentation().SetConversionParameter(converter.GetReferenceImageGeometryParameterName(),
                                                      converter.SerializeImageGeometry(_image(np.zeros(SHAPE, np.uint8))))
    for name, array in segments.items():
        image = _image(array)
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.AddRepresentation(converter.GetBinaryLabelmapRepresentationName(), image)
        node.GetSegmentation().AddSegment(segment, name)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1
    scene.Clear(True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segments")
    tumor, nawm = _tumor_and_nawm()
    _write_seg_nrrd(folder / "regions.seg.nrrd", {"tumor": tumor, "nawm": nawm})
    _write_seg_nrrd(folder / "layers.seg.nrrd", {"tumor": tumor, "nawm_and_tumor": np.maximum(nawm, tumor)})
    _write_seg_nrrd(folder / "tumor_only.seg.nrrd", {"tumor": tumor})
    _write_seg_nrrd(folder / "cropped.seg.nrrd", {"tumor": tumor, "nawm": nawm}, reference_geometry=False)
    grid = read_volume(folder / "regions.seg.nrrd")
    cbv = np.random.default_rng(0).uniform(1.0, 2.0, SHAPE) + 3.0 * tumor  # tumour mean ~4.5, NAWM ~1.5
    nib.save(nib.Nifti1Image(cbv.astype(np.float32), grid.affine), folder / "cbv.nii.gz")
    nib.save(nib.Nifti1Image((tumor + 2 * nawm).astype(np.int16), grid.affine), folder / "labels.nii.gz")
    return folder, grid, cbv, tumor.astype(bool), nawm.astype(bool)


def _stats(capsys, folder, *args):
    code = main(["roi-stats", str(folder / "cbv.nii.gz"), *args, "--json", "-"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_a_segment_is_chosen_by_name_from_slicers_file(files, capsys):
    folder, _, cbv, tumor, nawm = files
    seg = str(folder / "regions.seg.nrrd")
    code, stats, _ = _stats(capsys, folder, "--roi", seg, "--roi-label", "tumor", "--reference", seg,
                            "--reference-label", "NAWM")  # names match case-insensitively when unambiguous
    assert code == 0
    entry = stats["maps"]["cbv"]
    assert entry["roi"]["n_voxels"] == tumor.sum() and entry["reference"]["n_voxels"] == nawm.sum()
    assert entry["ratio_mean"] == pytest.approx(cbv[tumor].mean() / cbv[nawm].mean(), rel=1e-5)


def test_a_file_of_several_segments_is_refused_as_one_mask_naming_them(files, capsys):
    folder, grid, *_ = files
    seg = str(folder / "regions.seg.nrrd")
    code, _, err = _stats(capsys, folder, "--roi", seg, "--reference", seg)
    assert code == 2 and "'tumor', 'nawm'" in err and "--roi-label" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(InputError, match="holding 2 segments"):  # every pipeline's mask options read it the same way
        read_mask(seg, grid, "tumor-mask")
    assert read_mask(str(folder / "tumor_only.seg.nrrd"), grid, "tumor-mask").sum() == files[3].sum()


def test_overlapping_segments_in_layers_are_read_by_name(files):
    folder, grid, _, tumor, nawm = files
    both = read_mask(str(folder / "layers.seg.nrrd"), grid, "reference", "nawm_and_tumor")
    assert np.array_equal(both, tumor | nawm)
    assert np.array_equal(read_mask(str(folder / "layers.seg.nrrd"), grid, "roi", "tumor"), tumor)
    with pytest.raises(InputError, match="no segment 'edema'; its segments are 'tumor', 'nawm_and_tumor'"):
        read_mask(str(folder / "layers.seg.nrrd"), grid, "roi", "edema")


def test_a_label_map_takes_a_value_or_notes_that_it_took_every_label(files, capsys):
    folder, _, cbv, tumor, nawm = files
    labels = str(folder / "labels.nii.gz")
    code, stats, _ = _stats(capsys, folder, "--roi", labels, "--roi-label", "1", "--reference", labels,
                            "--reference-label", "2")
    assert code == 0 and stats["maps"]["cbv"]["ratio_mean"] == pytest.approx(cbv[tumor].mean() / cbv[nawm].mean(),
                                                                              rel=1e-5)
    assert stats["mask_notes"] == []
    code, stats, _ = _stats(capsys, folder, "--roi", labels)
    assert code == 0 and stats["maps"]["cbv"]["roi"]["n_voxels"] == (tumor | nawm).sum()
    assert stats["mask_notes"] == ["the roi mask holds labels 1, 2: every nonzero voxel was taken; --roi-label VALUE "
                                   "chooses one"]
    code, _, err = _stats(capsys, folder, "--roi", labels, "--roi-label", "4")
    assert code == 2 and "no voxel with label 4; its labels are 1, 2" in err


def test_the_same_voxels_as_roi_and_reference_are_refused(files, capsys):
    folder, *_ = files
    labels = str(folder / "labels.nii.gz")
    code, _, err = _stats(capsys, folder, "--roi", labels, "--reference", labels)
    assert code == 2 and "the same" in err and "every ratio would be 1" in err
    code, _, err = _stats(capsys, folder, "--roi", labels, "--reference-label", "2")
    assert code == 2 and "--reference-label needs --reference" in err


def test_a_segmentation_slicer_cropped_to_its_segments_is_placed_on_the_input(files):
    """Without a reference geometry Slicer writes the file cropped to its segments' extent: the same voxel lattice,
    a smaller block (it was refused as "not on the input's voxel grid")."""
    folder, grid, _, tumor, nawm = files
    cropped = read_volume(folder / "cropped.seg.nrrd")
    assert cropped.data.shape != grid.spatial_shape  # really cropped by Slicer's writer
    assert np.array_equal(read_mask(str(folder / "cropped.seg.nrrd"), grid, "roi", "tumor"), tumor)
    assert np.array_equal(read_mask(str(folder / "cropped.seg.nrrd"), grid, "reference", "nawm"), nawm)


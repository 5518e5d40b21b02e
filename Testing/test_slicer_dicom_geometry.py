"""The grid Slicer gives a DICOM series against the library reader's (session 23), for the panel's DICOM hand-over.

A dual-echo DSC series loaded by Slicer's DICOM module is handed to the worker as its DICOM files
(app/mrml/dicom_source.py): the maps come back on the grid ``io.dicom`` reads from the files, and are imported onto
the node's grid, which Slicer computed. What Slicer computes, read in its source (Slicer/Slicer
Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py, Modules/Scripted/DICOMLib/DICOMUtils.py,
Libs/vtkITK/vtkITKArchetypeImageSeriesReader.cxx, Libs/MRML/Core/vtkMRMLVolumeNode.cxx; fedorov/MultiVolumeImporter
MultiVolumeImporterPlugin.py), each frame of the sequence being one scalar-volume load:

* files sorted by (ImagePositionPatient - first file's) . (row x column of the first file's ImageOrientationPatient)
  (``DICOMUtils.getSortedImageFiles``), read by ITK's ImageSeriesReader through GDCM with ForceOrthogonalDirection
  off (``loadFilesWithSeriesReader``): origin = the first file's IPP, in-plane axes = IOP's row and column cosines
  with PixelSpacing[1] and [0], slice axis = (last IPP - first IPP) / (n - 1) (norm = spacing, direction kept:
  a gantry tilt stays sheared; SliceThickness is not used), then LPS -> RAS (x, y negated);
* a left-handed result has its slices reversed (``setVolumeNodeProperties``; never for this sort order);
* ``AcquisitionModeling``: where a slice corner from the DICOM header differs from the grid's by more than 1e-3 mm
  a grid "acquisition transform" is added, which MultiVolumeImporterPlugin hardens into each frame
  (``vtkMRMLVolumeNode::ApplyNonLinearTransform``: resampled onto the warped volume's bounding box).

:func:`slicer_ijk_to_ras` is that arithmetic; the real reader is Slicer's ``vtkITKArchetypeImageSeriesScalarReader``
(in slicer-core), used exactly as the plugin uses it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from test_io_dicom_round17 import _keep_locale, frames, write_images  # noqa: F401  (autouse: the writer's locale)

from BBBAnomalyLib import InputError
from BBBAnomalyLib.app import handover, mrml
from BBBAnomalyLib.app.mrml.map_grid import SUBVOXEL_TOL, onto_node_grid
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.io import read_dicom_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
CORNER_EPSILON_MM = 1e-3  # DICOMScalarVolumePlugin.AcquisitionModeling(cornerEpsilon=1e-3)


def _rotation(axis, degrees) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.deg2rad(degrees) * np.asarray(axis, float)).as_matrix()


OBLIQUE_18 = _rotation((0, 0, 1), 18) @ _rotation((1, 0, 0), 18)
TILT = np.deg2rad(20)


def _decimals(tag: str, ndigits: int, significant: bool = False):
    """An ``extra`` for write_images: the tag's numbers rewritten with fewer decimals (or significant digits)."""
    def rewrite(tags, t, k):
        values = np.array(tags[tag].split("\\"), float)
        tags[tag] = "\\".join(f"{v:.{ndigits}g}" if significant else f"{v:.{ndigits}f}" for v in values)
    return rewrite


def _thickness(tags, t, k):
    tags["0018|0050"] = "3"  # slices 3 mm thick, 4 mm apart (a gap)


CASES = {  # write_images arguments; every frame holds the same positions
    "axial": dict(),
    "oblique 18 degrees": dict(axes=(OBLIQUE_18[:, 0], OBLIQUE_18[:, 1]), dz=3.3),
    "gantry tilt 20 degrees": dict(axes=(np.array([1.0, 0, 0]), np.array([0, np.cos(TILT), np.sin(TILT)])),
                                   step=np.array([0, 0, 5.0])),
    "coronal (LPS to RAS flips)": dict(axes=(np.array([1.0, 0, 0]), np.array([0, 0, -1.0])), dz=4.0),
    "sagittal": dict(axes=(np.array([0, 1.0, 0]), np.array([0, 0, -1.0])), dz=4.0),
    "gap: thickness 3, step 4": dict(dz=4.0, extra=_thickness),
    "anisotropic pixels": dict(spacing=(0.8984375, 1.2), dz=5.5),
    "oblique, IPP with 3 decimals": dict(axes=(OBLIQUE_18[:, 0], OBLIQUE_18[:, 1]), dz=3.3, ipp_decimals=3),
    "oblique, IPP with 6 significant digits": dict(axes=(OBLIQUE_18[:, 0], OBLIQUE_18[:, 1]), dz=3.3,
                                                   extra=_decimals("0020|0032", 6, significant=True)),
    "oblique, IOP with 6 decimals": dict(axes=(OBLIQUE_18[:, 0], OBLIQUE_18[:, 1]), dz=3.3,
                                         extra=_decimals("0020|0037", 6)),
}


def _header(path) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    numbers = {tag: np.array(reader.GetMetaData(tag).split("\\"), float) for tag in ("0020|0032", "0020|0037",
                                                                                        "0028|0030")}
    numbers["frame"] = int(reader.GetMetaData("0020|0100")) if reader.HasMetaDataKey("0020|0100") else 1
    numbers["size"] = reader.GetSize()[:2]
    return numbers


def first_frame(folder: Path) -> list[Path]:
    """The files of the first frame (a frame of the sequence is one scalar-volume load in Slicer)."""
    return [p for p in sorted(folder.iterdir()) if _header(p)["frame"] == 1]


def _sorted_files(files) -> list:
    """DICOMUtils.getSortedImageFiles: distance from the first file along its row x column."""
    reference = _header(files[0])
    axis = np.cross(reference["0020|0037"][:3], reference["0020|0037"][3:])
    return sorted(files, key=lambda f: float((_header(f)["0020|0032"] - reference["0020|0032"]) @ axis))


def slicer_ijk_to_ras(files) -> tuple[np.ndarray, float]:
    """(IJKToRAS, largest slice-corner error [mm]) of Slicer's scalar-volume load of ``files``, as arithmetic."""
    files = _sorted_files(files)
    heads = [_header(f) for f in files]
    iop, pixel = heads[0]["0020|0037"], heads[0]["0028|0030"]
    first, last = heads[0]["0020|0032"], heads[-1]["0020|0032"]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * pixel[1], iop[3:] * pixel[0]  # PixelSpacing is (between rows, between columns)
    lps[:3, 2] = (last - first) / (len(files) - 1)  # ITK ImageSeriesReader: first-to-last over n - 1
    lps[:3, 3] = first
    ijk_to_ras = LPS_TO_RAS @ lps
    if np.linalg.det(ijk_to_ras[:3, :3]) < 0:  # setVolumeNodeProperties reverses a left-handed volume's slices
        ijk_to_ras[:3, 3] += ijk_to_ras[:3, 2] * (len(files) - 1)
        ijk_to_ras[:3, 2] *= -1
        heads = heads[::-1]
    return ijk_to_ras, _corner_error(ijk_to_ras, heads)


def _corner_error(ijk_to_ras, heads) -> float:
    """AcquisitionModeling: slice corners from each file's header against the grid's (RAS)."""
    columns, rows = heads[0]["size"]
    worst = 0.0
    for k, h in enumerate(heads):
        position, iop, pixel = h["0020|0032"], h["0020|0037"], h["0028|0030"]
        for c in (0, 1):
            for r in (0, 1):
                corner = position + c * columns * pixel[1] * iop[:3] + r * rows * pixel[0] * iop[3:]
                want = LPS_TO_RAS[:3, :3] @ corner
                got = (ijk_to_ras @ [c * columns, r * rows, k, 1])[:3]
                worst = max(worst, float(np.abs(want - got).max()))
    return worst


def slicer_loaded_node(files, harden_regularisation: bool = True):
    """A volume node as DICOMScalarVolumePlugin.load ("GDCM" reader approach) makes it from ``files``, with the
    acquisition transform it adds where corners differ by more than 1e-3 mm hardened (as MultiVolumeImporterPlugin
    does for every frame). Returns (node, largest corner error before regularisation)."""
    files = _sorted_files(files)
    reader = slicer.vtkITKArchetypeImageSeriesScalarReader()
    reader.SetArchetype(str(files[0]))
    for f in files:
        reader.AddFileName(str(f))
    reader.SetSingleFile(0)
    reader.SetOutputScalarTypeToNative()
    reader.SetDesiredCoordinateOrientationToNative()
    reader.SetUseNativeOriginOn()
    reader.SetDICOMImageIOApproachToGDCM()
    reader.Update()
    change = vtk.vtkImageChangeInformation()
    change.SetInputConnection(reader.GetOutputPort())
    change.SetOutputSpacing(1, 1, 1)
    change.SetOutputOrigin(0, 0, 0)
    change.Update()
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "frame")
    node.SetAndObserveImageData(change.GetOutputDataObject(0))
    node.SetRASToIJKMatrix(reader.GetRasToIjkMatrix())
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    assert slicer.vtkMRMLVolumeNode.IsIJKCoordinateSystemRightHanded(matrix)  # no slice reversal with this sort
    ijk_to_ras = mrml.common.ijk_to_ras(node)
    heads = [_header(f) for f in files]
    error = _corner_error(ijk_to_ras, heads)
    if error > CORNER_EPSILON_MM and harden_regularisation:  # AcquisitionModeling.gridTransformFromCorners
        columns, rows, slices = node.GetImageData().GetDimensions()
        grid = vtk.vtkImageData()
        grid.SetOrigin(*node.GetOrigin())
        grid.SetDimensions(2, 2, slices)
        spacing = node.GetSpacing()
        grid.SetSpacing(spacing[0] * columns, spacing[1] * rows, spacing[2])
        grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
        transform = slicer.vtkOrientedGridTransform()
        directions = vtk.vtkMatrix4x4()
        node.GetIJKToRASDirectionMatrix(directions)
        transform.SetGridDirectionMatrix(directions)
        transform.SetDisplacementGridData(grid)
        transform_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLGridTransformNode", "acquisition transform")
        transform_node.SetAndObserveTransformToParent(transform)
        node.SetAndObserveTransformNodeID(transform_node.GetID())
        displacements = slicer.util.arrayFromGridTransform(transform_node)
        for k, h in enumerate(heads):
            for r in (0, 1):
                for c in (0, 1):
                    want = LPS_TO_RAS[:3, :3] @ (h["0020|0032"] + c * columns * h["0028|0030"][1] * h["0020|0037"][:3]
                                                 + r * rows * h["0028|0030"][0] * h["0020|0037"][3:])
                    displacements[k][r][c] = want - (ijk_to_ras @ [c * columns, r * rows, k, 1])[:3]
        transform.Modified()
        node.HardenTransform()  # MultiVolumeImporterPlugin.load: "Harden the acquisition transform if there is any"
        slicer.mrmlScene.RemoveNode(transform_node)
    return node, error


@pytest.fixture
def scene():
    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(True)


def _dims(node) -> tuple:
    return tuple(node.GetImageData().GetDimensions())


@pytest.mark.parametrize("case", list(CASES))
def test_slicer_and_the_library_give_a_regular_series_the_same_grid(case, scene, tmp_path):
    """Origin, spacing (in-plane and the slice step) and direction agree to float rounding, or to the rounding of
    IOP's decimals where GDCM uses the cosines as written: far inside the import's 1e-3 mm, for every geometry a
    scanner writes with >= 3 decimals (or >= 6 significant digits) in ImagePositionPatient."""
    folder = tmp_path / "series"
    write_images(folder, frames(nx=12, ny=10, nz=6, nt=2), **CASES[case])
    library = read_dicom_series(folder).affine
    files = first_frame(folder)
    arithmetic, corner_error = slicer_ijk_to_ras(files)
    node, reader_corner_error = slicer_loaded_node(files)
    reader = mrml.common.ijk_to_ras(node)
    # Slicer adds no acquisition transform: the node's grid is the reader's
    assert corner_error < CORNER_EPSILON_MM, corner_error
    assert _dims(node) == (12, 10, 6)
    # the arithmetic read from Slicer's source is what its reader does (double rounding; IOP normalised by GDCM:
    # a cosine written with d decimals is off unit length by < 10^-d, times a spacing <= 5.5 mm)
    iop_rounding = 1e-6 * 5.5 if "IOP" in case else 1e-7 * 5.5
    assert np.abs(arithmetic - reader).max() < iop_rounding, np.abs(arithmetic - reader).max()
    assert corner_error == pytest.approx(reader_corner_error, abs=iop_rounding * 12)  # 12 columns to the corner
    assert np.abs(library - reader).max() < iop_rounding, np.abs(library - reader).max()
    # the origin is the first slice's position, to the last bit (both take the header's number)
    assert np.abs(library[:3, 3] - reader[:3, 3]).max() < 1e-9
    spacing = np.linalg.norm(reader[:3, :3], axis=0)
    assert np.allclose(spacing, np.linalg.norm(library[:3, :3], axis=0), rtol=iop_rounding, atol=0)
    if case.startswith("gap"):  # the slice step, not SliceThickness
        assert spacing[2] == pytest.approx(4.0, abs=1e-9)
    if case.startswith("gantry"):  # the tilt kept as a shear by both
        normal = np.cross(reader[:3, 0], reader[:3, 1])
        cosine = abs(reader[:3, 2] @ normal) / (spacing[2] * np.linalg.norm(normal))
        assert cosine == pytest.approx(np.cos(TILT), abs=1e-9)
    # so the import's check passes as it is
    assert np.allclose(library, reader, atol=1e-3)


def _oblique_two_decimals(tmp_path) -> Path:
    """ImagePositionPatient with 2 decimals on an oblique series: in-plane corners off a straight line by
    ~6e-3 mm, which the library accepts (< 0.01 mm) and Slicer regularises."""
    folder = tmp_path / "ipp2"
    write_images(folder, frames(nx=12, ny=10, nz=6, nt=2), axes=(OBLIQUE_18[:, 0], OBLIQUE_18[:, 1]), dz=3.3,
                 ipp_decimals=2)
    return folder


def _write_run(folder: Path, maps: dict, affine) -> None:
    """A finished run's output as the worker writes it for the panel (report.json, one .npy per map)."""
    folder.mkdir(parents=True)
    for name, data in maps.items():
        handover.write_volume(Volume(data, affine), folder / f"{name}.npy")
    (folder / "report.json").write_text(json.dumps({"pipeline": "dsc", "maps": {n: {"unit": ""} for n in maps},
                                                    "warnings": []}))


def test_a_regularised_series_moves_slicers_grid_by_micrometres(scene, tmp_path):
    """Pins the one case found: the hardened acquisition transform resamples the frame onto a box one column and
    row larger, its origin moved a few micrometres (MultiVolumeImporterPlugin hardens it in every frame)."""
    folder = _oblique_two_decimals(tmp_path)
    library = read_dicom_series(folder).affine
    node, corner_error = slicer_loaded_node(first_frame(folder))
    assert CORNER_EPSILON_MM < corner_error < 0.01
    regularised = mrml.common.ijk_to_ras(node)
    grown = np.subtract(_dims(node), (12, 10, 6))
    assert grown.max() == 1 and grown.min() == 0, _dims(node)  # a column (or row) more
    shift = np.abs(regularised[:3, 3] - library[:3, 3]).max()
    assert 1e-3 < shift < 1e-2, shift
    assert np.abs(regularised[:3, :3] - library[:3, :3]).max() < 1e-6
    # without regularisation (the setting "none") the grid is the library's
    plain, _ = slicer_loaded_node(first_frame(folder), harden_regularisation=False)
    assert _dims(plain) == (12, 10, 6) and np.allclose(mrml.common.ijk_to_ras(plain), library, atol=1e-6)


def test_maps_on_the_library_grid_are_placed_on_a_regularised_nodes_grid(scene, tmp_path, caplog):
    """The import refused these maps ("not on the grid") after the whole run; now each map voxel goes to the node
    voxel of the same index (a few micrometres apart), the column and row the node has beyond them are 0, and the
    log and the run's warnings say so."""
    folder = _oblique_two_decimals(tmp_path)
    library = read_dicom_series(folder)
    node, _ = slicer_loaded_node(first_frame(folder))
    cbv = np.arange(12 * 10 * 6, dtype=np.float32).reshape(12, 10, 6) + 1
    _write_run(tmp_path / "out", {"cbv": cbv, "mtt": 2 * cbv}, library.affine)
    with caplog.at_level(logging.WARNING, logger="BBBAnomalyLib"):
        outputs = mrml.import_results(tmp_path / "out", node, "regularised")
    dims = _dims(node)
    assert dims != (12, 10, 6)
    for name, want in (("cbv", cbv), ("mtt", 2 * cbv)):
        got = np.swapaxes(slicer.util.arrayFromVolume(outputs.map_nodes[name]), 0, 2)  # (i, j, k)
        assert got.shape == dims
        assert np.array_equal(got[:12, :10, :6], want)
        assert not got[12:].any() and not got[:, 10:].any() and not got[:, :, 6:].any()
        assert np.allclose(mrml.common.ijk_to_ras(outputs.map_nodes[name]), mrml.common.ijk_to_ras(node), atol=0)
    notes = [w for w in outputs.report["warnings"] if "placed on the input voxel of the same index" in w]
    assert len(notes) == 1 and f"12 x 10 x 6 voxels against {' x '.join(map(str, dims))}" in notes[0], notes
    assert sum("same index" in r.getMessage() for r in caplog.records) == 1  # one line for the run's maps


def test_maps_a_voxel_fraction_or_more_away_are_still_refused(scene, tmp_path):
    """Never misplace a map: a grid more than SUBVOXEL_TOL voxel away, or two voxels larger, is refused as before."""
    folder = tmp_path / "axial"
    write_images(folder, frames(nx=12, ny=10, nz=6, nt=2))
    library = read_dicom_series(folder)
    node, _ = slicer_loaded_node(first_frame(folder))
    cbv = np.ones((12, 10, 6), np.float32)
    for n, shift_voxels in enumerate((SUBVOXEL_TOL * 1.5, 0.5)):
        moved = library.affine.copy()
        moved[:3, 3] += moved[:3, 0] * shift_voxels
        _write_run(tmp_path / f"moved{n}", {"cbv": cbv}, moved)
        with pytest.raises(InputError, match="not on the grid"):
            mrml.import_results(tmp_path / f"moved{n}", node, "moved")
    _write_run(tmp_path / "smaller", {"cbv": cbv[:10]}, library.affine)
    with pytest.raises(InputError, match="not on the grid"):
        mrml.import_results(tmp_path / "smaller", node, "smaller")
    # the same grid: placed as it is, no note
    _write_run(tmp_path / "same", {"cbv": cbv}, library.affine)
    outputs = mrml.import_results(tmp_path / "same", node, "same")
    assert outputs.report["warnings"] == []


def test_onto_node_grid_keeps_the_map_itself_on_the_same_grid():
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    array = np.zeros((4, 5, 6), np.float32)
    placed, note = onto_node_grid(array, affine, (6, 5, 4), affine + 5e-4)
    assert placed is array and note is None
    rotated = affine.copy()
    rotated[:3, :3] = _rotation((0, 0, 1), 2) @ affine[:3, :3]  # 2 degrees: 0.2 voxel at the far corner
    assert onto_node_grid(array, affine, (6, 5, 4), rotated) == (None, None)

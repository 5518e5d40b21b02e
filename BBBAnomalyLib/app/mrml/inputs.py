"""Scene nodes -> library data: the inputs of a run and the regions (masks) the panel uses.

* :func:`describe_input` reads what the panel shows about an input (kind, shape, frame times,
  TE/TR/flip angle) from node attributes only, without touching voxels;
* :func:`volume_from_node`: a sequence, sequence proxy, MultiVolume, DWI or scalar volume node ->
  :class:`~BBBAnomalyLib.core.volume.Volume` with world geometry, frame times and acquisition;
* :func:`mask_from_region`: markups ROI, segment or labelmap -> boolean mask on an input's grid.

Geometry: a node's IJKToRAS maps (i, j, k) to RAS; arrays from Slicer are (k, j, i) and are
transposed to the library's (x, y, z) = (i, j, k). Linear parent transforms are applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.errors import InputError
from ...core.volume import Acquisition, Volume
from .common import _array, _array_to_matrix, _matrix_to_array, _scratch_nodes, _slicer, ijk_to_ras, world_affine

def find_sequence(node):
    """(sequence node, browser node or None) behind ``node``: itself, or the sequence whose proxy it is."""
    slicer = _slicer()
    if node.IsA("vtkMRMLSequenceNode"):
        return node, None
    scene = node.GetScene() or slicer.mrmlScene
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
        if browser.IsProxyNodeID(node.GetID()):
            sequence = browser.GetSequenceNode(node)
            if sequence is not None:
                return sequence, browser
    return None, None


def _attributes(*nodes) -> dict:
    """Attributes of the nodes (first node wins), as a header-like dict for io.nrrd."""
    out: dict[str, str] = {}
    for node in nodes:
        if node is None:
            continue
        for name in node.GetAttributeNames() or ():
            out.setdefault(name, node.GetAttribute(name))
    return out


def _sequence_times(sequence) -> np.ndarray | None:
    from ...io._common import TIME_UNITS

    n = sequence.GetNumberOfDataNodes()
    if sequence.GetIndexType() != sequence.NumericIndex:
        return None
    try:
        values = np.array([float(sequence.GetNthIndexValue(i)) for i in range(n)])
    except ValueError:
        return None
    unit = (sequence.GetIndexUnit() or "").strip().lower()
    name = (sequence.GetIndexName() or "").strip().lower()
    if unit in TIME_UNITS:
        return values * TIME_UNITS[unit]
    if not unit and "time" in name:
        return values
    return None


@dataclass
class InputInfo:
    """What the panel shows about an input and pre-fills in its acquisition fields (SI units)."""

    kind: str  # "sequence", "multivolume", "dwi", "scalar"
    name: str
    shape: tuple
    frames: int
    times: np.ndarray | None
    acquisition: Acquisition

    @property
    def frame_interval(self) -> float | None:
        if self.times is None or self.times.size < 2:
            return None
        return float(np.median(np.diff(self.times)))

    def summary(self) -> str:
        text = f"{self.kind}, {' x '.join(str(s) for s in self.shape)}"
        if self.frames > 1:
            dt = self.frame_interval
            text += f", {self.frames} frames" + (f" every {dt:.3g} s" if dt else ", frame times unknown")
        return text


def _input_parts(node):
    """(kind, sequence, geometry node, attribute nodes, frame count) of an input node."""
    sequence, browser = find_sequence(node)
    if sequence is not None:
        if sequence.GetNumberOfDataNodes() == 0:
            raise InputError(f"sequence '{sequence.GetName()}' is empty")
        first = sequence.GetNthDataNode(0)
        if not first.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"sequence '{sequence.GetName()}' holds {first.GetClassName()} items, not volumes")
        geometry = node if node.IsA("vtkMRMLVolumeNode") else first
        return "sequence", sequence, geometry, (sequence, node, first), sequence.GetNumberOfDataNodes()
    if not node.IsA("vtkMRMLVolumeNode"):
        raise InputError(f"'{node.GetName()}' ({node.GetClassName()}) is not a volume")
    image = node.GetImageData()
    if image is None:
        raise InputError(f"volume '{node.GetName()}' has no image data")
    components = image.GetNumberOfScalarComponents()
    if node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        return "dwi", None, node, (node,), components
    if node.IsA("vtkMRMLMultiVolumeNode") or node.GetAttribute("MultiVolume.NumberOfFrames") is not None:
        return "multivolume", None, node, (node,), components
    if components > 1:
        raise InputError(f"'{node.GetName()}' is a {components}-component (vector/colour) volume, not a series; "
                         "load 4D data as a volume sequence")
    return "scalar", None, node, (node,), 1


def describe_input(node) -> InputInfo:
    """Kind, shape, frames, frame times and acquisition of an input, without reading its voxels."""
    from ...io.nrrd import metadata_from_fields

    kind, sequence, geometry, attribute_nodes, frames = _input_parts(node)
    times, acq = metadata_from_fields(_attributes(*attribute_nodes), frames if frames > 1 else 0, node.GetName())
    if sequence is not None and _sequence_times(sequence) is not None:
        times = _sequence_times(sequence)
    if kind == "dwi":
        acq.bvals, acq.bvecs = _dwi_gradients(node)
    dims = geometry.GetImageData().GetDimensions() if geometry.GetImageData() else (0, 0, 0)
    shape = tuple(dims) + ((frames,) if frames > 1 else ())
    return InputInfo(kind, node.GetName(), shape, frames, times, acq)


def _dwi_gradients(node):
    bvals = np.array([node.GetBValue(i) for i in range(node.GetNumberOfGradients())], np.float64)
    gradients = np.array([node.GetDiffusionGradient(i) for i in range(node.GetNumberOfGradients())], np.float64)
    import vtk

    frame = vtk.vtkMatrix4x4()
    node.GetMeasurementFrameMatrix(frame)
    rotation = _matrix_to_array(frame)[:3, :3]
    return bvals, gradients @ rotation.T  # measurement frame -> RAS


def node_arrays(node) -> tuple[str, list | np.ndarray]:
    """The voxels of an input node as they are in memory, without copying: ``("tkji", [frames])``
    for a sequence (one (k, j, i) view per item), ``("kjic", array)`` for a DWI or MultiVolume
    node, ``("kji", array)`` for a scalar volume (see :mod:`BBBAnomalyLib.app.handover`)."""
    slicer = _slicer()
    kind, sequence, _, _, frames = _input_parts(node)
    if sequence is not None:
        parts = []
        for i in range(frames):
            item = sequence.GetNthDataNode(i)
            if item.GetImageData() is None:
                raise InputError(f"frame {i} of '{sequence.GetName()}' has no image data")
            part = slicer.util.arrayFromVolume(item)
            if parts and part.shape != parts[0].shape:
                raise InputError(f"frame {i} of '{sequence.GetName()}' has shape {part.shape[::-1]}, frame 0 "
                                 f"{parts[0].shape[::-1]}; all frames of a series must share one grid")
            parts.append(part)
        return "tkji", parts
    if node.GetImageData() is None:
        raise InputError(f"volume '{node.GetName()}' has no image data; load or compute it first")
    array = slicer.util.arrayFromVolume(node)
    return ("kjic" if array.ndim == 4 else "kji"), array


def _library_shape(axes: str, parts) -> tuple:
    if axes == "tkji":
        return tuple(parts[0].shape[::-1]) + (len(parts),)
    if axes == "kjic":
        return tuple(parts.shape[2::-1]) + (parts.shape[3],)
    return tuple(parts.shape[::-1])


def node_header(node, *, frame_interval: float | None = None, times=None, acquisition: dict | None = None,
                arrays=None) -> Volume:
    """The input's grid, frame times and acquisition as a :class:`Volume` whose voxels are not read
    (a zero-strided read-only stand-in of the input's shape and type): what a run checks before
    anything is written. Arguments as for :func:`volume_from_node`; ``arrays``: the node's
    :func:`node_arrays`, when already taken. A node loaded from DICOM gets the header facts the library's DICOM
    reader keeps in ``acquisition.extra`` (the contrast given, spin or gradient echo: :mod:`.dicom_header`), read
    from its files, as ``bbbanomaly FOLDER`` would have them."""
    from ...io.timing import override_times
    from .dicom_header import with_header_facts

    info = describe_input(node)
    _, _, geometry, _, _ = _input_parts(node)
    axes, parts = arrays or node_arrays(node)
    dtype = (parts[0] if axes == "tkji" else parts).dtype
    stand_in = np.broadcast_to(np.zeros((), dtype), _library_shape(axes, parts))
    acq = with_header_facts(info.acquisition, node)
    for name, value in (acquisition or {}).items():
        if value is not None:
            if not hasattr(acq, name):
                raise InputError(f"unknown acquisition field {name!r}")
            setattr(acq, name, value)
    volume = Volume(stand_in, world_affine(node, geometry), info.times if stand_in.ndim == 4 else None, acq)
    if stand_in.ndim == 4 and (frame_interval is not None or times is not None):
        volume = override_times(volume, times, frame_interval, node.GetName())
    return volume


def volume_from_node(node, *, frame_interval: float | None = None, times=None,
                     acquisition: dict | None = None) -> Volume:
    """A :class:`Volume` (world geometry, frame times, acquisition) from a scene node.

    node: a sequence node, a scalar volume that is a sequence's proxy (a 4D DICOM series loaded
    in Slicer), a MultiVolume or DWI node, or a plain scalar volume (3D).
    frame_interval / times: override the times found in the node (seconds).
    acquisition: override Acquisition fields in SI units, e.g. {"echo_time": 0.03}.
    The voxels are copied into the library's (x, y, z[, t]) order; the panel's runs hand the
    node's memory to the worker as it is instead (:func:`node_arrays`, :mod:`..handover`).
    """
    arrays = node_arrays(node)
    header = node_header(node, frame_interval=frame_interval, times=times, acquisition=acquisition, arrays=arrays)
    axes, parts = arrays
    if axes == "tkji":
        data = np.stack([np.swapaxes(part, 0, 2) for part in parts], axis=-1)
    elif axes == "kjic":
        data = np.ascontiguousarray(parts.transpose(2, 1, 0, 3))
    else:
        data = np.ascontiguousarray(parts.T)
    return Volume(data, header.affine, header.times, header.acquisition)


def reference_grid(node) -> tuple[Volume, object]:
    """(an empty 3D Volume with the input's grid, the node carrying its geometry): what masks
    and voxel lookups need, without reading a 4D series."""
    _, _, geometry, _, _ = _input_parts(node)
    dims = geometry.GetImageData().GetDimensions()
    return Volume(np.zeros(tuple(dims), np.uint8), world_affine(node, geometry)), geometry


def masks_on_input(node, regions: dict) -> dict:
    """{label: boolean mask on the grid of input ``node``} for {label: ROI / (segmentation, id) / labelmap}."""
    reference, geometry = reference_grid(node)
    return {label: mask_from_region(region, reference, geometry, label) for label, region in regions.items()}


# --- regions ---------------------------------------------------------------------------------
def mask_from_roi(roi_node, reference: Volume, name: str = "ROI") -> np.ndarray:
    """Voxels of ``reference`` whose centres lie inside a markups ROI box (any orientation)."""
    if roi_node.GetROIType() != roi_node.ROITypeBox:
        raise InputError(f"{name} '{roi_node.GetName()}' is not a box ROI")
    if roi_node.GetNumberOfControlPoints() == 0:
        raise InputError(f"{name} '{roi_node.GetName()}' has not been placed yet; place it on the image")
    half = 0.5 * np.array(roi_node.GetSize(), np.float64)
    object_to_world = _matrix_to_array(roi_node.GetObjectToWorldMatrix())
    world_to_ijk = np.linalg.inv(reference.affine)
    corners = np.array([[sx, sy, sz, 1.0] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * np.r_[half, 1.0]
    ijk = (world_to_ijk @ object_to_world @ corners.T)[:3].T
    shape = np.array(reference.spatial_shape)
    low = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, shape)
    mask = np.zeros(reference.spatial_shape, bool)
    if np.any(high <= low):
        raise InputError(f"{name} '{roi_node.GetName()}' lies outside the volume; move it onto the image "
                         "(e.g. onto an artery for the AIF)")
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij"), -1).reshape(-1, 3)
    world = reference.affine @ np.c_[grid, np.ones(len(grid))].T
    local = (np.linalg.inv(object_to_world) @ world)[:3].T
    inside = np.all(np.abs(local) <= half + 1e-6, axis=1)
    mask[tuple(grid[inside].T)] = True
    if not mask.any():
        raise InputError(f"{name} '{roi_node.GetName()}' contains no voxel centre of the volume; make it larger or "
                         "move it onto the image")
    return mask


def mask_from_segment(segmentation_node, segment_id: str, reference: Volume, geometry_node,
                      name: str = "segment") -> np.ndarray:
    """A segment as a mask on the reference grid (Slicer resamples the segment onto it)."""
    import vtk

    slicer = _slicer()
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSegment(segment_id) is None:
        by_name = segmentation.GetSegmentIdBySegmentName(segment_id)
        if not by_name:
            raise InputError(f"{name}: segmentation '{segmentation_node.GetName()}' has no segment '{segment_id}'")
        segment_id = by_name
    label = segmentation.GetSegment(segment_id).GetName()
    with _scratch_nodes() as scene:
        # A scalar volume with the reference grid tells Slicer where to resample the segment.
        grid = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "__bbbanomaly_reference__")
        slicer.util.updateVolumeFromArray(grid, np.zeros(reference.spatial_shape[::-1], np.uint8))
        grid.SetIJKToRASMatrix(_array_to_matrix(ijk_to_ras(geometry_node)))
        parent = geometry_node.GetParentTransformNode()
        if parent is not None:
            grid.SetAndObserveTransformNodeID(parent.GetID())
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__bbbanomaly_segment__")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, grid):
            raise InputError(f"{name}: could not export segment '{label}' onto the input grid")
        mask = _array(labelmap) != 0
    if mask.shape != reference.spatial_shape:
        raise InputError(f"{name}: segment '{label}' exported with shape {mask.shape}, expected {reference.spatial_shape}")
    if not mask.any():
        raise InputError(f"{name}: segment '{label}' is empty on the input grid; draw it on this image "
                         "(Segment Editor with the input as source volume)")
    return mask


def mask_from_region(region, reference: Volume, geometry_node, name: str = "region") -> np.ndarray:
    """A mask from a markups ROI node, a (segmentation node, segment id or name) pair, or a labelmap node."""
    if isinstance(region, tuple):
        return mask_from_segment(region[0], region[1], reference, geometry_node, name)
    if region.IsA("vtkMRMLMarkupsROINode"):
        return mask_from_roi(region, reference, name)
    if region.IsA("vtkMRMLSegmentationNode"):
        segmentation = region.GetSegmentation()
        if segmentation.GetNumberOfSegments() != 1:
            raise InputError(f"{name}: segmentation '{region.GetName()}' has {segmentation.GetNumberOfSegments()} "
                             "segments; pick one")
        return mask_from_segment(region, segmentation.GetNthSegmentID(0), reference, geometry_node, name)
    if region.IsA("vtkMRMLLabelMapVolumeNode") or region.IsA("vtkMRMLScalarVolumeNode"):
        from ...io import read_mask

        labels = Volume(_array(region), world_affine(region))
        return read_mask(labels, reference, name)
    raise InputError(f"{name}: '{region.GetName()}' ({region.GetClassName()}) is not a ROI, segment or labelmap")



def ras_to_voxel(volume: Volume, ras) -> tuple[int, int, int]:
    """Nearest voxel (i, j, k) of a world RAS point."""
    ijk = np.linalg.inv(volume.affine) @ np.r_[np.asarray(ras, np.float64)[:3], 1.0]
    return tuple(int(v) for v in np.rint(ijk[:3]))


def voxel_in_grid(volume: Volume, ras) -> tuple[int, int, int] | None:
    """The voxel under a RAS point, or None when the point lies outside the grid (e.g. a crosshair
    that was never placed sits at the origin, often outside the image)."""
    ijk = ras_to_voxel(volume, ras)
    if all(0 <= v < s for v, s in zip(ijk, volume.spatial_shape)):
        return ijk
    return None

"""The bridge between Slicer's MRML scene and the library (the only module that imports slicer).

Everything the Slicer panel does with nodes lives here, as plain functions, so that it runs
(and is tested in CI) with the ``slicer-core`` wheel, without the Slicer application or qt:

* inputs:  :func:`volume_from_node` (sequence, sequence proxy, MultiVolume, DWI or scalar volume
  -> :class:`Volume` with geometry, frame times and TE/TR/flip angle from the node attributes),
  :func:`describe_input`, :func:`mask_from_region` (markups ROI, segment or labelmap -> mask);
* a run:   :func:`prepare_job` writes the inputs of a :class:`RunRequest` to files and returns a
  :class:`~BBBAnomalyLib.jobs.Job` for a runner; nothing is added to the scene;
* outputs: :func:`import_results` (maps -> volume nodes with the input's geometry, colour tables,
  window/level, in a subject-hierarchy folder), :func:`show_overlay`, :func:`ratio_table`,
  :func:`curve_plot`.

Geometry: a node's IJKToRAS maps (i, j, k) to RAS; arrays from Slicer are (k, j, i) and are
transposed to the library's (x, y, z) = (i, j, k). Linear parent transforms are applied to the
geometry used for computing; output nodes get the input's own IJKToRAS and parent transform, so
their geometry is the input's exactly.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .volume import Acquisition, Volume

ATTRIBUTE_PREFIX = "BBBAnomaly."
RUN_FOLDER_ATTRIBUTE = ATTRIBUTE_PREFIX + "RunFolder"


def _slicer():
    try:
        import slicer
    except ImportError as exc:  # pragma: no cover - message for people running outside Slicer
        raise ImportError("BBBAnomalyLib.mrml needs Slicer's MRML layer: run inside 3D Slicer, "
                          "or `pip install slicer-core`") from exc
    if getattr(slicer, "mrmlScene", None) is None:
        raise RuntimeError("slicer.mrmlScene is not set; with slicer-core, set slicer.mrmlScene = slicer.vtkMRMLScene()")
    return slicer


def _matrix_to_array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _array_to_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


# --- geometry --------------------------------------------------------------------------------
def ijk_to_ras(node) -> np.ndarray:
    """The node's own IJKToRAS (without parent transforms)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return _matrix_to_array(matrix)


def to_world(node) -> np.ndarray:
    """4x4 parent-transform-to-world matrix of a node (identity when untransformed)."""
    import vtk

    transform = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(f"'{node.GetName()}' is under a non-linear transform; harden it first "
                         "(Data module: right-click the transform, 'Harden transform')")
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _matrix_to_array(matrix)


def world_affine(node, geometry_node=None) -> np.ndarray:
    """Voxel (i, j, k) -> world RAS of ``geometry_node`` (default ``node``), parent transform of ``node``."""
    return to_world(node) @ ijk_to_ras(geometry_node or node)


def _array(volume_node) -> np.ndarray:
    """Voxel array in (i, j, k[, component]) order, copied (never a view of the node's data)."""
    slicer = _slicer()
    arr = slicer.util.arrayFromVolume(volume_node)
    if arr is None:
        raise InputError(f"volume '{volume_node.GetName()}' has no image data")
    return np.ascontiguousarray(np.swapaxes(arr, 0, 2))


# --- inputs ----------------------------------------------------------------------------------
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
    from .io._common import TIME_UNITS

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
    from .io.nrrd import metadata_from_fields

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


def volume_from_node(node, *, frame_interval: float | None = None, times=None,
                     acquisition: dict | None = None) -> Volume:
    """A :class:`Volume` (world geometry, frame times, acquisition) from a scene node.

    node: a sequence node, a scalar volume that is a sequence's proxy (a 4D DICOM series loaded
    in Slicer), a MultiVolume or DWI node, or a plain scalar volume (3D).
    frame_interval / times: override the times found in the node (seconds).
    acquisition: override Acquisition fields in SI units, e.g. {"echo_time": 0.03}.
    """
    from .io.timing import override_times

    info = describe_input(node)
    kind, sequence, geometry, _, frames = _input_parts(node)
    if sequence is not None:
        arrays = []
        for i in range(frames):
            item = sequence.GetNthDataNode(i)
            arr = _array(item)
            if arrays and arr.shape != arrays[0].shape:
                raise InputError(f"frame {i} of '{sequence.GetName()}' has shape {arr.shape}, frame 0 {arrays[0].shape}; "
                                 "all frames of a series must share one grid")
            arrays.append(arr)
        data = np.stack(arrays, axis=-1)
    else:
        data = _array(node)
    acq = info.acquisition
    for name, value in (acquisition or {}).items():
        if value is not None:
            if not hasattr(acq, name):
                raise InputError(f"unknown acquisition field {name!r}")
            setattr(acq, name, value)
    volume = Volume(data, world_affine(node, geometry), info.times if data.ndim == 4 else None, acq)
    if data.ndim == 4 and (frame_interval is not None or times is not None):
        volume = override_times(volume, times, frame_interval, node.GetName())
    return volume


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


@contextlib.contextmanager
def _scratch_nodes():
    """Remove every node added to the scene inside the block (temporary labelmaps, their display
    and colour nodes), so that reading a segment leaves the scene as it was."""
    scene = _slicer().mrmlScene
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield scene
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(node)


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
        from .io import read_mask

        labels = Volume(_array(region), world_affine(region))
        return read_mask(labels, reference, name)
    raise InputError(f"{name}: '{region.GetName()}' ({region.GetClassName()}) is not a ROI, segment or labelmap")


# --- a run -----------------------------------------------------------------------------------
@dataclass
class RunRequest:
    """What the panel collected: pipeline, nodes per input key, parameters, acquisition overrides."""

    pipeline: str
    inputs: dict  # key -> node, or (segmentation node, segment id) for regions
    parameters: dict = field(default_factory=dict)
    acquisition: dict = field(default_factory=dict)  # SI values: frame_interval, echo_time, repetition_time, flip_angle

    def main_node(self):
        from .pipelines import get_pipeline

        spec = get_pipeline(self.pipeline)
        return next(self.inputs[s.key] for s in spec.inputs if s.positional)


def prepare_job(request: RunRequest, work_dir: str | Path):
    """Write the request's inputs to ``work_dir`` as NRRD and return ``(job, reference Volume)``.

    Checks what can be checked before a run starts (missing inputs, a 3D volume where a series is
    needed, a region outside the image) and raises InputError with the fix; the scene is left as
    it was either way.
    """
    from .io import write_volume
    from .jobs import Job
    from .pipelines import InputRole, get_pipeline

    spec = get_pipeline(request.pipeline)
    if not spec.available:
        raise InputError(f"{spec.label}: {spec.unavailable}")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    acquisition = {k: v for k, v in request.acquisition.items() if k != "frame_interval" and v is not None}
    files, reference, geometry_node = {}, None, None
    for s in spec.inputs:
        node = request.inputs.get(s.key)
        if node is None:
            if s.required:
                raise InputError(f"{spec.label} needs a {s.label}: select one in the Inputs section")
            continue
        if s.role is InputRole.REGION:
            continue
        volume = volume_from_node(node, frame_interval=request.acquisition.get("frame_interval"),
                                  acquisition=acquisition)
        if s.role in (InputRole.SERIES, InputRole.DWI) and not volume.is_4d:
            raise InputError(f"'{node.GetName()}' is a single 3D volume; the {spec.label} pipeline needs a 4D "
                             f"{s.label.lower()} (a volume sequence, MultiVolume or 4D volume)")
        if s.role is InputRole.SERIES and volume.times is None:
            raise InputError(f"the frame times of '{node.GetName()}' are unknown; enter the frame interval "
                             "in the Acquisition section")
        if s.role is InputRole.SCALAR and volume.is_4d:
            raise InputError(f"'{node.GetName()}' is 4D; the {s.label} must be a single 3D volume")
        if reference is None:
            reference, geometry_node = volume, _input_parts(node)[2]
        files[s.key] = str(write_volume(volume, work_dir / f"{s.key}.nrrd"))
    for s in spec.inputs:
        region = request.inputs.get(s.key)
        if s.role is not InputRole.REGION or region is None or not s.passed_to_run:
            continue
        mask = mask_from_region(region, reference, geometry_node, s.label)
        files[s.key] = str(write_volume(Volume(mask.astype(np.uint8), reference.affine), work_dir / f"{s.key}.nrrd"))
    parameters = dict(request.parameters)
    aif = request.inputs.get("aif_mask")
    if aif is not None and not isinstance(aif, tuple) and aif.IsA("vtkMRMLMarkupsROINode"):
        parameters.update(spec.extra.get("roi_aif_parameters", {}))  # e.g. DSC: choose the arteries in the box
    job = Job(spec.name, files, parameters, str(work_dir / "output"))
    return job, reference


# --- outputs ---------------------------------------------------------------------------------
@dataclass
class RunOutputs:
    folder_item: int
    map_nodes: dict  # map name -> vtkMRMLScalarVolumeNode, in the pipeline's order
    report: dict


def _subject_hierarchy():
    slicer = _slicer()
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)


def run_folders(run_name: str) -> list[int]:
    """Subject-hierarchy folders created for runs called ``run_name``."""
    import vtk

    sh = _subject_hierarchy()
    children = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), children, True)
    return [children.GetId(i) for i in range(children.GetNumberOfIds())
            if sh.GetItemAttribute(children.GetId(i), RUN_FOLDER_ATTRIBUTE) == run_name]


def remove_run(folder_item: int) -> None:
    """Remove a run's folder and every node in it."""
    import vtk

    scene = _slicer().mrmlScene
    sh = _subject_hierarchy()
    children = vtk.vtkIdList()
    sh.GetItemChildren(folder_item, children, True)
    for i in range(children.GetNumberOfIds()):
        node = sh.GetItemDataNode(children.GetId(i))
        if node is None:
            continue
        count = node.GetNumberOfDisplayNodes() if hasattr(node, "GetNumberOfDisplayNodes") else 0
        for display in [node.GetNthDisplayNode(d) for d in range(count)]:
            scene.RemoveNode(display)
        scene.RemoveNode(node)
    sh.RemoveItem(folder_item, False, True)


def import_results(output_dir: str | Path, input_node, run_name: str, replace: bool = False) -> RunOutputs:
    """Load a finished run's maps as volume nodes in a subject-hierarchy folder called ``run_name``.

    Each node is named "<input> <map>", has the input's IJKToRAS and parent transform, a colour
    table and window/level suited to the map, and the map's unit as an attribute. With
    ``replace`` an earlier run of the same name is removed first; otherwise the folder gets a
    numbered name and earlier runs are kept.
    """
    from .display import map_display
    from .io import read_volume

    slicer = _slicer()
    output_dir = Path(output_dir)
    with open(output_dir / "report.json", encoding="utf-8") as fh:
        report = json.load(fh)
    kind, _, geometry, _, _ = _input_parts(input_node)
    reference_affine = world_affine(input_node, geometry)
    maps = {}
    for name in report["maps"]:
        path = next((p for p in (output_dir / f"{name}.nrrd", output_dir / f"{name}.nii.gz") if p.is_file()), None)
        if path is None:
            raise InputError(f"the run in {output_dir} has no file for map '{name}'")
        volume = read_volume(path)
        if volume.is_4d or volume.spatial_shape != tuple(geometry.GetImageData().GetDimensions()) \
                or not np.allclose(volume.affine, reference_affine, atol=1e-3):
            raise InputError(f"map '{name}' is not on the grid of '{input_node.GetName()}'; it cannot be overlaid")
        maps[name] = volume
    if replace:
        for item in run_folders(run_name):
            remove_run(item)
    folder_name = run_name
    existing = {_subject_hierarchy().GetItemName(i) for i in run_folders(run_name)}
    number = 2
    while folder_name in existing:
        folder_name, number = f"{run_name} ({number})", number + 1
    sh = _subject_hierarchy()
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), folder_name)
    sh.SetItemAttribute(folder, RUN_FOLDER_ATTRIBUTE, run_name)
    sh.SetItemAttribute(folder, ATTRIBUTE_PREFIX + "OutputDir", str(output_dir))
    scene = slicer.mrmlScene
    local = _array_to_matrix(ijk_to_ras(geometry))
    parent = input_node.GetParentTransformNode()
    nodes = {}
    for name, volume in maps.items():
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(f"{input_node.GetName()} {name}"))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.swapaxes(volume.data.astype(np.float32), 0, 2)))
        node.SetIJKToRASMatrix(local)
        if parent is not None:
            node.SetAndObserveTransformNodeID(parent.GetID())
        unit = report.get("maps", {}).get(name, {}).get("unit", "") if isinstance(report.get("maps"), dict) else ""
        node.SetAttribute(ATTRIBUTE_PREFIX + "Map", name)
        node.SetAttribute(ATTRIBUTE_PREFIX + "Unit", unit)
        node.SetAttribute(ATTRIBUTE_PREFIX + "Pipeline", str(report.get("pipeline", "")))
        node.CreateDefaultDisplayNodes()
        style = map_display(name, volume.data)
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(style.colour_node_id)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(style.window_min, style.window_max)
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, folder)
        else:  # without Slicer's subject-hierarchy plugins (slicer-core) nodes get no item by themselves
            sh.CreateItem(folder, node)
        nodes[name] = node
    return RunOutputs(folder, nodes, report)


def show_overlay(background_node, foreground_node, opacity: float = 0.5) -> int:
    """Show ``foreground_node`` over ``background_node`` in every slice view; returns the view count."""
    slicer = _slicer()
    scene = slicer.mrmlScene
    count = scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(count):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if background_node is not None:
            composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(foreground_node.GetID() if foreground_node is not None else None)
        composite.SetForegroundOpacity(float(opacity))
    return count


def set_overlay_opacity(opacity: float) -> None:
    scene = _slicer().mrmlScene
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").SetForegroundOpacity(float(opacity))


def _table(name: str, table_node=None):
    slicer = _slicer()
    if table_node is None:
        table_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName(name))
    else:
        table_node.RemoveAllColumns()
    return table_node


def _add_column(table_node, name: str, values, kind: str = "double"):
    import vtk

    array = vtk.vtkStringArray() if kind == "string" else vtk.vtkDoubleArray()
    array.SetName(name)
    for v in values:
        array.InsertNextValue(str(v) if kind == "string" else (np.nan if v is None else float(v)))
    table_node.AddColumn(array)
    return array


def ratio_table(map_nodes: dict, roi_mask: np.ndarray, reference_mask: np.ndarray | None = None,
                roi_name: str = "tumor", reference_name: str = "NAWM", table_node=None, name: str = "ROI ratios"):
    """A table node: per map, mean/median/sd/volume in the ROI (and reference) and the ROI/reference
    ratios of the means and medians, computed as `bbbanomaly roi-stats` does. Returns (node, stats)."""
    from .roistats import roi_statistics

    maps = {key: volume_from_node(node) for key, node in map_nodes.items()}
    stats = roi_statistics(maps, roi_mask, reference_mask, roi_name, reference_name)
    table = _table(name, table_node)
    entries = stats["maps"]
    _add_column(table, "map", list(entries), "string")
    _add_column(table, "unit", [map_nodes[k].GetAttribute(ATTRIBUTE_PREFIX + "Unit") or "" for k in entries], "string")
    labels = [roi_name] + ([reference_name] if reference_mask is not None else [])
    for label in labels:
        for stat in ("mean", "median", "sd", "volume_ml"):
            _add_column(table, f"{label} {stat}", [e[label][stat] for e in entries.values()])
    if reference_mask is not None:
        _add_column(table, f"{roi_name}/{reference_name} mean", [e["ratio_mean"] for e in entries.values()])
        _add_column(table, f"{roi_name}/{reference_name} median", [e["ratio_median"] for e in entries.values()])
    return table, stats


def ras_to_voxel(volume: Volume, ras) -> tuple[int, int, int]:
    """Nearest voxel (i, j, k) of a world RAS point."""
    ijk = np.linalg.inv(volume.affine) @ np.r_[np.asarray(ras, np.float64)[:3], 1.0]
    return tuple(int(v) for v in np.rint(ijk[:3]))


def curve_plot(curves, regions: dict, voxel=None, chart_node=None, name: str = "BBBAnomaly curves"):
    """A plot chart of the reference curves (AIF), the mean curve of each region and, for a voxel
    (i, j, k), its curve, each with the model's fitted curve (dashed). Returns (chart, table, plotted labels)."""
    slicer = _slicer()
    scene = slicer.mrmlScene
    columns: dict[str, np.ndarray] = dict(curves.reference)
    series_styles = {label: ("solid", label) for label in curves.reference}
    rows = dict(regions)
    for label, mask in rows.items():
        mean = curves.mean(mask)
        if mean is None:
            continue
        for curve_label, values in mean.items():
            column = label if curve_label == "measured" else f"{label} ({curve_label})"
            columns[column] = values
            series_styles[column] = ("solid" if curve_label == "measured" else "dash", column)
    if voxel is not None:
        voxel = tuple(int(v) for v in voxel)
        single = curves.voxel(voxel)
        if single is not None:
            for curve_label, values in single.items():
                column = f"voxel {tuple(voxel)}" + ("" if curve_label == "measured" else f" ({curve_label})")
                columns[column] = values
                series_styles[column] = ("solid" if curve_label == "measured" else "dash", column)
    table = _table(name + " table")
    _add_column(table, "time (s)", curves.times)
    for column, values in columns.items():
        _add_column(table, column, values)
    if chart_node is None:
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    chart_node.RemoveAllPlotSeriesNodeIDs()
    chart_node.SetTitle(name)
    chart_node.SetXAxisTitle("time (s)")
    chart_node.SetYAxisTitle(curves.unit)
    styles = {"solid": slicer.vtkMRMLPlotSeriesNode.LineStyleSolid, "dash": slicer.vtkMRMLPlotSeriesNode.LineStyleDash}
    for column, (style, label) in series_styles.items():
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(label))
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("time (s)")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetLineStyle(styles[style])
        chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart_node, table, list(columns)


# --- putting library data into a scene (demo phantom, tests, self-test) -----------------------
def add_volume_node(volume: Volume, name: str, labelmap: bool = False):
    """A 3D Volume as a new scalar (or labelmap) volume node with its geometry."""
    slicer = _slicer()
    if volume.is_4d:
        raise InputError("add_volume_node takes a 3D volume; use add_series for 4D")
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = slicer.mrmlScene.AddNewNodeByClass(cls, name)
    _fill_volume_node(node, volume.data, volume.affine)
    node.CreateDefaultDisplayNodes()
    return node


def _fill_volume_node(node, data: np.ndarray, affine: np.ndarray) -> None:
    slicer = _slicer()
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.swapaxes(np.asarray(data), 0, 2)))
    node.SetIJKToRASMatrix(_array_to_matrix(affine))


def add_series(volume: Volume, name: str):
    """A 4D Volume as a volume sequence with a browser and a proxy node, as Slicer loads 4D DICOM.

    The sequence index is the frame time in seconds; TE/TR/flip angle are stored as the DICOM
    MultiVolume attributes (ms, deg) that Slicer's importer writes. Returns (sequence, browser, proxy).
    """
    slicer = _slicer()
    if not volume.is_4d:
        raise InputError("add_series takes a 4D volume")
    scene = slicer.mrmlScene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name + " sequence"))
    times = volume.times if volume.times is not None else np.arange(volume.n_frames, dtype=np.float64)
    sequence.SetIndexName("time" if volume.times is not None else "frame")
    sequence.SetIndexUnit("s" if volume.times is not None else "")
    sequence.SetIndexType(sequence.NumericIndex)
    for t in range(volume.n_frames):
        frame = slicer.vtkMRMLScalarVolumeNode()
        _fill_volume_node(frame, volume.data[..., t], volume.affine)
        sequence.SetDataNodeAtValue(frame, f"{times[t]:.6g}")
    acq = volume.acquisition
    for attribute, value, scale in (("EchoTime", acq.echo_time, 1e3), ("RepetitionTime", acq.repetition_time, 1e3),
                                    ("FlipAngle", acq.flip_angle, 1.0)):
        if value is not None:
            sequence.SetAttribute(f"MultiVolume.DICOM.{attribute}", f"{value * scale:.6g}")
    if not scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):  # plain slicer-core scenes lack it
        scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(name + " browser"))
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    proxy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    _fill_volume_node(proxy, volume.data[..., 0], volume.affine)
    proxy.CreateDefaultDisplayNodes()
    browser.AddProxyNode(proxy, sequence, False)
    return sequence, browser, proxy


def add_segmentation(masks: dict, reference: Volume, name: str = "Segmentation"):
    """Boolean masks on the reference grid as one segmentation node, one segment per mask name
    (masks may overlap, e.g. a tumor inside a brain mask). Returns (segmentation node, {mask name: segment id})."""
    slicer = _slicer()
    scene = slicer.mrmlScene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    segmentation.CreateDefaultDisplayNodes()
    seg = segmentation.GetSegmentation()
    ids = {}
    for key, mask in masks.items():
        before = {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())}
        with _scratch_nodes():  # one labelmap per mask, so overlapping masks stay whole
            labelmap = add_volume_node(Volume(np.asarray(mask, np.uint8), reference.affine), "__bbbanomaly_labels__",
                                       labelmap=True)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
                raise InputError(f"could not convert the mask '{key}' to a segment")
        added = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())
                 if seg.GetNthSegmentID(i) not in before]
        if len(added) != 1:
            raise InputError(f"the mask '{key}' is empty; nothing to add as a segment")
        seg.GetSegment(added[0]).SetName(key)
        ids[key] = added[0]
    return segmentation, ids


def add_roi(center, size, name: str = "AIF ROI"):
    """An axis-aligned markups ROI box (RAS centre and size in mm)."""
    slicer = _slicer()
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenter(*[float(v) for v in center])
    roi.SetSize(*[float(v) for v in size])
    return roi


def roi_around(mask: np.ndarray, affine: np.ndarray, name: str = "AIF ROI", margin_mm: float = 1.0):
    """An axis-aligned ROI just enclosing the voxel centres of ``mask`` (plus ``margin_mm``)."""
    idx = np.argwhere(mask)
    world = (affine @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    low, high = world.min(axis=0), world.max(axis=0)
    return add_roi((low + high) / 2, high - low + margin_mm, name)


def load_dsc_demo(slices: int = 8, snr: float = 50.0, seed: int = 0) -> dict:
    """The DSC digital reference object in the scene, ready for the panel: the series as a volume
    sequence, an AIF ROI on its artery, and a segmentation with tumor and NAWM segments.
    Returns {"series": proxy node, "aif_roi": ROI node, "segmentation": node, "segments": {name: id}, "phantom": ...}."""
    from .phantoms.dsc import make_dsc_phantom

    phantom = make_dsc_phantom(snr=snr, slices=slices, seed=seed)
    _, _, proxy = add_series(phantom.signal, "DSC demo")
    roi = roi_around(phantom.masks["aif"], phantom.signal.affine, "DSC demo AIF")
    segmentation, ids = add_segmentation({"tumor": phantom.masks["tumor"], "nawm": phantom.masks["nawm"]},
                                         phantom.signal, "DSC demo segments")
    return {"series": proxy, "aif_roi": roi, "segmentation": segmentation, "segments": ids, "phantom": phantom}

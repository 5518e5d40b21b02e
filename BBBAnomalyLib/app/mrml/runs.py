"""A run from the scene: the panel's request -> job files, and the finished run's maps -> nodes.

* :func:`prepare_job` hands the inputs of a :class:`RunRequest` to the worker as raw arrays in the
  nodes' own memory order (:mod:`BBBAnomalyLib.app.handover`: each frame copied once, straight
  to the file; no stacking, transposing or compression in the GUI thread) and returns a
  :class:`~BBBAnomalyLib.app.jobs.Job` for a runner; nothing is added to the scene;
* :func:`import_results` loads the maps as volume nodes with the input's geometry, in a
  subject-hierarchy folder, each shown readably (:mod:`.views`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from ...core.volume import Volume
from .common import (
    ATTRIBUTE_PREFIX, RUN_FOLDER_ATTRIBUTE, _array_to_matrix, _slicer, _subject_hierarchy, ijk_to_ras, world_affine
)
from .inputs import _input_parts, mask_from_region, node_arrays, node_header
from .map_grid import log_note, onto_node_grid


@dataclass
class RunRequest:
    """What the panel collected: pipeline, nodes per input key, parameters, acquisition overrides."""

    pipeline: str
    inputs: dict  # key -> node, or (segmentation node, segment id) for regions
    parameters: dict = field(default_factory=dict)
    acquisition: dict = field(default_factory=dict)  # SI values: frame_interval, echo_time, repetition_time, flip_angle

    def main_node(self):
        from ..pipelines import get_pipeline

        spec = get_pipeline(self.pipeline)
        return next(self.inputs[s.key] for s in spec.inputs if s.positional)


def write_job_input(volume: Volume, path: Path) -> Path:
    """A job input as *uncompressed* NRRD, read back by the worker with ``io.read_volume`` (for
    scripts that build jobs from Volumes; the panel hands its nodes' memory over as raw arrays,
    :func:`prepare_job`).

    Why not ``io.write_volume``: it gzips NRRD (right for results a user keeps), which took 17 s
    for a 256x256x24x60 series in the GUI thread; these files live for one run and are deleted
    after it. Same writer otherwise (geometry, frame times, TE/TR/flip angle), so the worker reads
    exactly what the library would.
    """
    from ...io.nrrd import write_nrrd

    path = Path(path)
    write_nrrd(volume, path, compress=False)
    return path


def prepare_job(request: RunRequest, work_dir: str | Path):
    """Write the request's inputs to ``work_dir`` and return ``(job, reference)``.

    Images go as raw arrays in the nodes' memory order (``<key>.npy`` + ``<key>.json``, see
    :mod:`BBBAnomalyLib.app.handover`), regions as masks on the first image's grid; the job asks
    for the panel's output (``output_format="arrays"``). ``reference`` is a Volume with the first
    image's grid (its voxels are not read). Checks what can be checked before a run starts (missing
    inputs, a 3D volume where a series is needed, a region outside the image) and raises InputError
    with the fix; the scene is left as it was either way. ``work_dir`` must be absolute (the job's
    output folder is inside it).
    """
    from .. import handover
    from ..jobs import Job
    from ..pipelines import InputRole, get_pipeline

    spec = get_pipeline(request.pipeline)
    if not spec.available:
        raise InputError(f"{spec.label}: {spec.unavailable}")
    check_companions(spec, request)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    files, reference, geometry_node, headers = {}, None, None, {}
    parameters = dict(request.parameters)
    for s in spec.inputs:
        node = request.inputs.get(s.key)
        if node is None:
            if s.required:
                raise InputError(f"{spec.label} needs a {s.label}: select one in the Inputs section")
            continue
        if s.role is InputRole.REGION:
            continue
        folder = _dual_echo_folder(spec, request, s.key, node, work_dir, parameters)
        if folder is not None:  # Slicer mixed the series' two echoes: the worker reads them from its DICOM files
            reference, geometry_node = node_header(node), _input_parts(node)[2]
            files[s.key] = str(folder)
            continue
        arrays = node_arrays(node)  # views of the node's memory: nothing is copied yet
        volume = node_header(node, frame_interval=request.acquisition.get("frame_interval"),
                             acquisition=_acquisition_of(spec, request, s.key), arrays=arrays)
        companion = headers.get(s.same_grid_as) if s.same_grid_as else None
        if companion is not None and (
                not volume.same_grid(companion) or volume.is_4d != companion.is_4d
                or (volume.is_4d and volume.n_frames != companion.n_frames)):
            main = spec.input(s.same_grid_as)
            raise InputError(f"the {s.label} '{node.GetName()}' ({_shape_text(volume)}) is not on the grid of the "
                             f"{main.label} '{request.inputs[main.key].GetName()}' ({_shape_text(companion)}) with "
                             "its frame count; choose the other echo of that same acquisition")
        headers[s.key] = volume
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
        files[s.key] = str(handover.write_arrays(work_dir / f"{s.key}.npy", arrays[1], arrays[0], volume.affine,
                                                 volume.times, volume.acquisition))
    for s in spec.inputs:
        region = request.inputs.get(s.key)
        if s.role is not InputRole.REGION or region is None or not s.passed_to_run:
            continue
        mask = mask_from_region(region, reference, geometry_node, s.label)
        files[s.key] = str(handover.write_volume(Volume(mask, reference.affine), work_dir / f"{s.key}.npy"))
    aif = request.inputs.get("aif_mask")
    if aif is not None and not isinstance(aif, tuple) and aif.IsA("vtkMRMLMarkupsROINode"):
        parameters.update(spec.extra.get("roi_aif_parameters", {}))  # e.g. DSC: choose the arteries in the box
    job = Job(spec.name, files, parameters, str(work_dir / "output"), output_format="arrays")
    return job, reference


def _acquisition_of(spec, request: RunRequest, key: str) -> dict:
    """The acquisition values the panel has for input ``key`` (SI units, as Acquisition fields): those the spec
    gives to that input (``of_input``: TE2 is the second echo's echo time); the main inputs get the rest."""
    named = {a.name: a for a in spec.acquisition}
    companion = bool(spec.input(key).same_grid_as)
    out = {}
    for name, value in request.acquisition.items():
        a = named.get(name)
        if name == "frame_interval" or value is None:
            continue
        if a is not None and a.of_input:
            if a.of_input == key:
                out[a.acquisition_field] = value
        elif not companion:  # TE of the series is not the second echo's
            out[a.acquisition_field if a is not None else name] = value
    return out


def check_companions(spec, request: RunRequest) -> None:
    """One line for a companion series chosen wrongly: a TE2 without its series, or the series itself chosen as its
    own second echo (the ratio of a series to itself is no ΔR2*)."""
    for a in spec.acquisition:
        if a.of_input and request.acquisition.get(a.name) is not None and request.inputs.get(a.of_input) is None:
            if _holds_both_echoes(spec, request):  # the panel filled TE2 from the series' own DICOM headers
                continue
            raise InputError(f"a {a.label} was entered but no {spec.input(a.of_input).label} series was chosen: choose "
                             "it in the Inputs section, or set the time back to unknown")
    for s in spec.inputs:
        node, main = request.inputs.get(s.key), request.inputs.get(s.same_grid_as) if s.same_grid_as else None
        if node is not None and main is not None and node is main:
            raise InputError(f"the {s.label} is '{node.GetName()}', the {spec.input(s.same_grid_as).label} itself; "
                             "choose the other echo's series")


def companion_problems(spec, inputs: dict) -> list[str]:
    """What the Apply button says about a companion series (the second echo) before a run, from the nodes'
    attributes and sizes only (no voxel is read): not the series itself, the series' grid size and frame count."""
    from .inputs import describe_input

    problems = []
    for s in spec.inputs:
        node = inputs.get(s.key)
        main = inputs.get(s.same_grid_as) if s.same_grid_as else None
        if node is None or main is None:
            continue
        label = spec.input(s.same_grid_as).label
        if node is main:
            problems.append(f"{s.label}: the other echo's series, not the {label} itself")
            continue
        try:
            mine, theirs = describe_input(node), describe_input(main)
        except InputError as exc:
            problems.append(f"{s.label}: {exc}")
            continue
        if mine.shape != theirs.shape:
            sizes = [" x ".join(map(str, info.shape[:3])) + (f", {info.frames} frames" if info.frames > 1 else "")
                     for info in (mine, theirs)]
            problems.append(f"{s.label} with the grid and frames of the {label} ('{node.GetName()}' is {sizes[0]}; "
                            f"'{main.GetName()}' {sizes[1]})")
    return problems


def _holds_both_echoes(spec, request: RunRequest) -> bool:
    """Whether the series is a node Slicer loaded from a DICOM series holding two echoes (its files give both)."""
    split = spec.extra.get("echoes_in_folder")
    node = request.inputs.get(split[0]) if split else None
    if node is None:
        return False
    from .dicom_source import dicom_echoes_of

    echoes = dicom_echoes_of(node)
    return echoes is not None and len(echoes.echo_times_ms) == 2


def _shape_text(volume: Volume) -> str:
    return " x ".join(str(n) for n in volume.spatial_shape) + (f", {volume.n_frames} frames" if volume.is_4d else "")


def _dual_echo_folder(spec, request: RunRequest, key: str, node, work_dir: Path, parameters: dict):
    """For a series Slicer loaded from a DICOM series holding two echoes (:mod:`.dicom_source`), with no second
    echo chosen: the series' files in a folder of their own (the job's input; the worker splits the echoes as
    ``bbbanomaly dsc FOLDER`` does) and the panel's TE/TE2, if typed, as the run's echo times. None otherwise."""
    split = spec.extra.get("echoes_in_folder")
    if not split or key != split[0]:
        return None
    from .dicom_source import dicom_echoes_of, link_series

    echoes = dicom_echoes_of(node)
    if echoes is None:
        return None
    if request.inputs.get(split[1]) is not None:
        raise InputError(f"'{node.GetName()}' already holds both echoes of its DICOM series (TE "
                         f"{' and '.join(f'{te:g}' for te in echoes.echo_times_ms)} ms); leave the "
                         f"{spec.input(split[1]).label} empty")
    if len(echoes.echo_times_ms) > 2:
        raise InputError(f"'{node.GetName()}' comes from a DICOM series with {len(echoes.echo_times_ms)} echo times; "
                         "DSC takes one echo or two: export the two echoes to use as a series of their own")
    named = {a.name: a for a in spec.acquisition}
    typed = [request.acquisition.get(name) for name in split[2:]]
    if typed[0] is not None and typed[1] is not None:  # two typed echo times replace the headers', as two --te do
        parameters[split[2]], parameters[split[3]] = typed
    elif typed[1] is not None:
        raise InputError(f"'{node.GetName()}' holds two echoes: give both echo times or neither "
                         f"({named[split[3]].label} was entered alone)")
    return link_series(echoes, work_dir / f"{key}_dicom")


@dataclass
class RunOutputs:
    folder_item: int
    map_nodes: dict  # map name -> vtkMRMLScalarVolumeNode, in the pipeline's order
    report: dict
    output_dir: str = ""


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

    The maps are those the run's report lists (whatever the pipeline produced, in its order).
    Each node is named "<input> <map>", has the input's IJKToRAS and parent transform, the map's
    unit as an attribute, and a readable display (:func:`.views.apply_map_display`: colour table,
    window preset, zero transparent, colour legend with the unit). With ``replace`` an earlier run
    of the same name is removed first; otherwise the folder gets a numbered name.
    """
    from ...io import read_volume
    from ..handover import read_slicer_array
    from .views import apply_map_display

    slicer = _slicer()
    output_dir = Path(output_dir)
    with open(output_dir / "report.json", encoding="utf-8") as fh:
        report = json.load(fh)
    _, _, geometry, _, _ = _input_parts(input_node)
    reference_affine = world_affine(input_node, geometry)
    dims = tuple(geometry.GetImageData().GetDimensions())
    maps = {}  # name -> (k, j, i) array, as updateVolumeFromArray takes it
    for name in report["maps"]:
        path = next((p for p in (output_dir / f"{name}.npy", output_dir / f"{name}.nrrd", output_dir / f"{name}.nii.gz")
                     if p.is_file()), None)
        if path is None:
            raise InputError(f"the run in {output_dir} has no file for map '{name}'")
        if path.suffix == ".npy":  # the worker's hand-over: already in Slicer's order, float32
            array, affine = read_slicer_array(path)
        else:
            volume = read_volume(path)
            affine = volume.affine
            array = None if volume.is_4d else np.ascontiguousarray(np.swapaxes(volume.data.astype(np.float32), 0, 2))
        # a sub-voxel difference (Slicer regularised the DICOM slice positions) is placed voxel by voxel, with a note
        array, note = onto_node_grid(array, affine, dims, reference_affine) if array is not None else (None, None)
        if array is None:
            raise InputError(f"map '{name}' is not on the grid of '{input_node.GetName()}'; it cannot be overlaid")
        if note:
            log_note(note, input_node.GetName(), report)
        maps[name] = array
    if replace:
        for item in run_folders(run_name):
            remove_run(item)
    sh = _subject_hierarchy()
    existing = {sh.GetItemName(i) for i in run_folders(run_name)}
    folder_name, number = run_name, 2
    while folder_name in existing:
        folder_name, number = f"{run_name} ({number})", number + 1
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), folder_name)
    sh.SetItemAttribute(folder, RUN_FOLDER_ATTRIBUTE, run_name)
    sh.SetItemAttribute(folder, ATTRIBUTE_PREFIX + "OutputDir", str(output_dir))
    scene = slicer.mrmlScene
    local = _array_to_matrix(ijk_to_ras(geometry))
    parent = input_node.GetParentTransformNode()
    units = report["maps"] if isinstance(report.get("maps"), dict) else {}
    nodes = {}
    for name, array in maps.items():
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(f"{input_node.GetName()} {name}"))
        slicer.util.updateVolumeFromArray(node, array.astype(np.float32, copy=False))
        node.SetIJKToRASMatrix(local)
        if parent is not None:
            node.SetAndObserveTransformNodeID(parent.GetID())
        entry = units.get(name) if isinstance(units.get(name), dict) else {}
        unit = entry.get("unit", "")
        caveat = entry.get("caveat")  # what an ROI mean of this map keeps that no per-voxel map shows
        node.SetAttribute(ATTRIBUTE_PREFIX + "Map", name)
        node.SetAttribute(ATTRIBUTE_PREFIX + "Unit", unit)
        if isinstance(caveat, str) and caveat:
            node.SetAttribute(ATTRIBUTE_PREFIX + "Caveat", caveat)
        node.SetAttribute(ATTRIBUTE_PREFIX + "Pipeline", str(report.get("pipeline", "")))
        node.SetAttribute(ATTRIBUTE_PREFIX + "OutputDir", str(output_dir))
        node.SetAttribute(ATTRIBUTE_PREFIX + "InputNodeID", input_node.GetID())  # the overlay's background
        node.SetAttribute(ATTRIBUTE_PREFIX + "RunName", folder_name)
        apply_map_display(node, name, array, unit)
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, folder)
        else:  # without Slicer's subject-hierarchy plugins (slicer-core) nodes get no item by themselves
            sh.CreateItem(folder, node)
        nodes[name] = node
    return RunOutputs(folder, nodes, report, str(output_dir))

"""Dual-echo DSC from Slicer (session 23): the spec's Second echo input and TE2, the worker on a dual-echo DICOM
folder, the MRML bridge with two echo sequences, and a series Slicer's DICOM import mixed from a dual-echo DICOM
series (what MultiVolumeImporterPlugin makes of it, rebuilt here from its source: see app/mrml/dicom_source.py).

Each run is compared with `bbbanomaly dsc` on the same data (the command line is the reference). The data are the
session-22 dual-echo DICOM series (Testing/test_io_dicom_echoes.py: 16x16x4 voxels, 20 frames, TE 15 and 45 ms,
one series whose images alternate the two echoes), so the whole file takes seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from test_io_dicom_echoes import TE_MS, dual_echo_signal, write_dual_echo
from test_io_dicom_round17 import _keep_locale  # noqa: F401  (autouse: the writer's locale)

from BBBAnomalyLib import InputError
from BBBAnomalyLib.app import mrml
from BBBAnomalyLib.app.jobs import InProcessRunner, Job
from BBBAnomalyLib.app.pipelines import get_pipeline
from BBBAnomalyLib.app.runners import WorkerProcess
from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.io import write_volume
from BBBAnomalyLib.io.dicom_echoes import read_dicom_echoes

MAPS = ("cbv", "cbf", "mtt", "tmax", "cbv_corrected", "k2")


@pytest.fixture(scope="module")
def dual_echo(tmp_path_factory):
    """(DICOM folder, [echo 1, echo 2] as the library reads them, the two echoes as NIfTI files, CLI reports)."""
    root = tmp_path_factory.mktemp("dual_echo_panel")
    folder = root / "dsc_dicom"
    write_dual_echo(folder, dual_echo_signal())
    echoes = read_dicom_echoes(folder)
    files = []
    for n, echo in enumerate(echoes, start=1):
        write_volume(echo, root / f"e{n}.nii.gz")
        files.append(str(root / f"e{n}.nii.gz"))
    return folder, echoes, files, root


def cli_maps(args, out: Path) -> tuple[dict, dict]:
    """({map: array}, report) of `bbbanomaly dsc ARGS` (automatic AIF and brain mask, as the panel's defaults)."""
    if not (out / "report.json").is_file():
        assert cli_main(["dsc", *args, "--out", str(out), "--quiet", "--format", "nrrd"]) == 0
    report = json.loads((out / "report.json").read_text())
    return {name: sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}.nrrd"))).T for name in MAPS}, report


def job_maps(output_dir) -> dict:
    from BBBAnomalyLib.app.handover import read_volume as read_handover

    return {name: read_handover(Path(output_dir) / f"{name}.npy").data for name in MAPS}


def assert_same_maps(got: dict, want: dict, exact: bool) -> None:
    for name in MAPS:
        a, b = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
        assert a.shape == b.shape and np.any(b != 0), name
        if exact:  # one reader, one pipeline, the same float32 maps
            assert np.array_equal(a, b), (name, np.abs(a - b).max())
        else:  # the same int16 voxels by two routes: float32 rounding of the maps at most
            assert np.allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max()), (name, np.abs(a - b).max())


# --- the spec ---------------------------------------------------------------------------------------
def test_the_dsc_spec_declares_a_second_echo_and_its_echo_time():
    dsc = get_pipeline("dsc")
    echo = dsc.input("second_echo")
    assert echo.same_grid_as == "series" and not echo.required and not echo.positional and echo.passed_to_run
    assert [s.key for s in dsc.inputs if s.same_grid_as] == ["second_echo"]
    for name in ("dce", "dmri", "t1flair"):
        assert not any(s.same_grid_as for s in get_pipeline(name).inputs)
    te2 = next(a for a in dsc.acquisition if a.name == "second_echo_time")
    assert (te2.of_input, te2.acquisition_field, te2.display_unit) == ("second_echo", "echo_time", "ms")
    series, other = object(), object()
    signal = {"input_kind": "signal"}
    # one echo: no TE2 asked for
    assert dsc.missing({"series": series}, {"frame_interval": 1.5, "echo_time": 0.015}, signal) == []
    # a second echo without TE2: TE2 is missing; with it, ready
    assert dsc.missing({"series": series, "second_echo": other}, {"frame_interval": 1.5, "echo_time": 0.015},
                       signal) == ["Second echo time (TE2) (ms)"]
    assert dsc.missing({"series": series, "second_echo": other},
                       {"frame_interval": 1.5, "echo_time": 0.015, "second_echo_time": 0.045}, signal) == []
    # TE2 without a second echo: one line naming what to do
    missing = dsc.missing({"series": series}, {"frame_interval": 1.5, "echo_time": 0.015, "second_echo_time": 0.045},
                          signal)
    assert len(missing) == 1 and "Second echo" in missing[0] and "choose its series" in missing[0]
    # concentration input needs neither echo time
    assert dsc.missing({"series": series, "second_echo": other}, {"frame_interval": 1.5},
                       {"input_kind": "concentration"}) == []


# --- the worker on a dual-echo DICOM folder -------------------------------------------------------------------
def test_a_job_on_a_dual_echo_dicom_folder_runs_dual_echo_like_the_command_line(dual_echo, tmp_path):
    """The worker path refused the folder (one Volume cannot hold two echoes); now its maps are the command line's,
    bit for bit, and its report says where the second echo came from, as the command line's does."""
    folder, _, _, root = dual_echo
    want, cli_report = cli_maps([str(folder), "--motion-correct", "none"], root / "cli_folder")
    job = Job("dsc", {"series": str(folder)}, {}, str(tmp_path / "out"), output_format="arrays")
    runner = WorkerProcess(job, tmp_path / "job.json").start()  # the panel's worker process, as Slicer starts it
    events = runner.wait(timeout=180)
    assert events[-1]["event"] == "done", events[-1]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in ("echo_time_s", "second_echo_time_s", "second_echo_source"):
        assert report["input"][key] == cli_report["input"][key], key
    assert report["input"]["second_echo_time_s"] == pytest.approx(TE_MS[1] * 1e-3)
    assert_same_maps(job_maps(tmp_path / "out"), want, exact=True)


def test_dual_echo_folder_conflicts_in_a_job_are_one_line(dual_echo, tmp_path):
    folder, _, files, _ = dual_echo
    cases = [({"series": str(folder), "second_echo": files[1]}, {}, ("both echoes", "leave out", "second_echo")),
             ({"series": str(folder)}, {"echo_time": 0.015}, ("dual-echo", "15", "45", "give both"))]
    for n, (inputs, parameters, words) in enumerate(cases):
        out = tmp_path / f"out{n}"
        events = InProcessRunner(Job("dsc", inputs, parameters, str(out), output_format="arrays")).start().poll()
        error = events[-1]
        assert error["event"] == "error" and error["kind"] == "input", error
        assert "\n" not in error["message"] and all(w in error["message"] for w in words), error["message"]
        assert not out.exists()
    # two echo times replace the headers', as two --te do
    out = tmp_path / "given"
    done = InProcessRunner(Job("dsc", {"series": str(folder)}, {"echo_time": 0.016, "second_echo_time": 0.046},
                               str(out), output_format="arrays")).start().poll()[-1]
    assert done["event"] == "done", done
    given = json.loads((out / "report.json").read_text())["input"]
    assert (given["echo_time_s"], given["second_echo_time_s"]) == pytest.approx((0.016, 0.046))


# --- the MRML bridge: two echo sequences ---------------------------------------------------------------------
@pytest.fixture
def scene():
    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(True)


def run_request(request, work_dir):
    job, _ = mrml.prepare_job(request, work_dir)
    events = InProcessRunner(job).start().poll()
    assert events[-1]["event"] == "done", events[-1]
    return job, events[-1]


def test_two_echo_sequences_from_the_panel_give_the_command_lines_dual_echo_maps(dual_echo, scene, tmp_path):
    folder, echoes, files, root = dual_echo
    want, _ = cli_maps([files[0], "--second-echo", files[1], "--te", "0.015", "0.045", "--motion-correct", "none"],
                       root / "cli_files")
    _, _, first = mrml.add_series(echoes[0], "echo 1")
    _, _, second = mrml.add_series(echoes[1], "echo 2")
    # TE and TE2 as the panel has them: read from each node's own attributes, so each goes to its own echo
    assert mrml.describe_input(first).acquisition.echo_time == pytest.approx(0.015)
    assert mrml.describe_input(second).acquisition.echo_time == pytest.approx(0.045)
    request = mrml.RunRequest("dsc", {"series": first, "second_echo": second}, {"motion_correct": "none"},
                              {"frame_interval": 1.5, "echo_time": 0.015, "second_echo_time": 0.045})
    job, done = run_request(request, tmp_path / "run")
    header = json.loads(Path(job.inputs["second_echo"]).with_suffix(".json").read_text())
    assert header["acquisition"]["echo_time"] == pytest.approx(0.045)  # TE2, not the series' TE
    report = json.loads((Path(done["output_dir"]) / "report.json").read_text())
    assert report["input"]["second_echo_time_s"] == pytest.approx(0.045)
    assert_same_maps(job_maps(done["output_dir"]), want, exact=False)
    # the second echo's TE2 typed in the panel replaces a missing attribute (and only the second echo's)
    second.SetAttribute("MultiVolume.DICOM.EchoTime", "")
    mrml.find_sequence(second)[0].SetAttribute("MultiVolume.DICOM.EchoTime", "")
    job, _ = mrml.prepare_job(mrml.RunRequest("dsc", {"series": first, "second_echo": second}, {},
                                              {"echo_time": 0.015, "second_echo_time": 0.05}), tmp_path / "typed")
    heads = {k: json.loads(Path(job.inputs[k]).with_suffix(".json").read_text())["acquisition"]["echo_time"]
             for k in ("series", "second_echo")}
    assert heads == pytest.approx({"series": 0.015, "second_echo": 0.05})


def test_a_second_echo_that_does_not_match_the_series_is_one_line(dual_echo, scene, tmp_path):
    from BBBAnomalyLib.core.volume import Volume

    _, echoes, _, _ = dual_echo
    dsc = get_pipeline("dsc")
    _, _, first = mrml.add_series(echoes[0], "echo 1")
    short = Volume(echoes[1].data[..., :-1], echoes[1].affine, echoes[1].times[:-1], echoes[1].acquisition)
    _, _, fewer = mrml.add_series(short, "echo 2 short")
    moved = echoes[1].affine.copy()
    moved[:3, 3] += 4.0
    _, _, shifted = mrml.add_series(Volume(echoes[1].data, moved, echoes[1].times, echoes[1].acquisition), "shifted")
    acquisition = {"frame_interval": 1.5, "echo_time": 0.015, "second_echo_time": 0.045}
    # before Apply (attributes and sizes): the frame count
    problems = mrml.companion_problems(dsc, {"series": first, "second_echo": fewer})
    assert len(problems) == 1 and "19 frames" in problems[0] and "20 frames" in problems[0], problems
    assert "itself" in mrml.companion_problems(dsc, {"series": first, "second_echo": first})[0]
    assert mrml.companion_problems(dsc, {"series": first, "second_echo": shifted}) == []  # sizes agree ...
    for node, words in ((fewer, ("19 frames", "20 frames", "other echo")), (shifted, ("not on the grid",)),
                        (first, ("itself",))):
        with pytest.raises(InputError) as refused:  # ... the position is checked at Apply
            mrml.prepare_job(mrml.RunRequest("dsc", {"series": first, "second_echo": node}, {}, acquisition),
                             tmp_path / node.GetName())
        assert "\n" not in str(refused.value) and all(w in str(refused.value) for w in words), str(refused.value)
    with pytest.raises(InputError, match="Second echo time .* was entered but no Second echo series"):
        mrml.prepare_job(mrml.RunRequest("dsc", {"series": first}, {}, acquisition), tmp_path / "te2_alone")


# --- a series Slicer's DICOM import made of the dual-echo DICOM series -----------------------------------------
def _headers(path: str) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return {k: reader.GetMetaData(k).strip() for k in reader.GetMetaDataKeys()}


def _tm_ms(value: str) -> float:  # MultiVolumeImporterPlugin.tm2ms
    whole, _, fraction = value.partition(".")
    return (int(whole[0:2]) * 3600 + int(whole[2:4]) * 60 + int(whole[4:6]) + float("0." + (fraction or "0"))) * 1e3


def slicer_loaded_sequence(folder: Path, strategy: str, affine: np.ndarray):
    """The volume sequence MultiVolumeImporterPlugin loads from ``folder`` (fedorov/MultiVolumeImporter,
    MultiVolumeImporterPlugin.py): ``examineFilesIPPInstanceNumber`` ("instance") or ``examineFilesIPPAcqTime``
    ("acquisition"): files grouped by ImagePositionPatient, keyed by InstanceNumber or AcquisitionTime within a
    position (a later file of the same key replaces the earlier), frame f = the f-th key of every position; loaded
    as a sequence indexed "0".."N-1" (IndexName and IndexUnit empty) carrying the MultiVolume node's attributes,
    FrameFileList included, and EchoTime/RepetitionTime/FlipAngle of the last frame's first file."""
    files = sorted(str(p) for p in folder.iterdir())
    by_position: dict = {}
    for path in files:
        tags = _headers(path)
        key = int(tags["0020|0013"]) if strategy == "instance" else _tm_ms(tags["0008|0032"])
        by_position.setdefault(tags["0020|0032"], {})[key] = path
    positions = list(by_position)
    n_frames = len(by_position[positions[0]])
    ordered = [None] * (n_frames * len(positions))
    for p, position in enumerate(positions):
        for t, key in enumerate(sorted(by_position[position])):
            ordered[t * len(positions) + p] = by_position[position][key]
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    frames = []
    for t in range(n_frames):  # each frame's files sorted by position along the slice normal (as the scalar plugin)
        frame_files = ordered[t * len(positions):(t + 1) * len(positions)]
        along = [float(np.dot(np.array(_headers(f)["0020|0032"].split("\\"), float) * lps_to_ras, normal))
                 for f in frame_files]
        frames.append(np.stack([sitk.GetArrayFromImage(sitk.ReadImage(frame_files[i]))[0].T
                                for i in np.argsort(along)], axis=-1))
    scene = slicer.mrmlScene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"1: MR perf - {n_frames} frames Volume Sequence")
    sequence.SetIndexName("")
    sequence.SetIndexUnit("")
    last = _headers(ordered[(n_frames - 1) * len(positions)])
    repetition = float(last["0018|0080"])
    attributes = {"MultiVolume.FrameLabels": ",".join(str(repetition * f) for f in range(n_frames)),
                  "MultiVolume.FrameIdentifyingDICOMTagName": "Time" if strategy == "instance" else "AcquisitionTime",
                  "MultiVolume.NumberOfFrames": str(n_frames), "MultiVolume.FrameIdentifyingDICOMTagUnits": "ms",
                  "MultiVolume.FrameFileList": ",".join(ordered), "MultiVolume.DICOM.EchoTime": last["0018|0081"],
                  "MultiVolume.DICOM.RepetitionTime": last["0018|0080"], "MultiVolume.DICOM.FlipAngle": last["0018|1314"]}
    return (*sequence_with_proxy(sequence, attributes, frames, affine), ordered)


def sequence_with_proxy(sequence, attributes: dict, frames, affine: np.ndarray):
    """(sequence, proxy): ``sequence`` given the MultiVolume ``attributes`` and one scalar volume per frame of
    ``frames``, with a browser and a proxy volume node, as MultiVolumeImporterPlugin leaves a loaded series (shared
    with test_panel_header_facts.py)."""
    scene = slicer.mrmlScene
    for name, value in attributes.items():
        sequence.SetAttribute(name, value)
    for t, data in enumerate(frames):
        frame = slicer.vtkMRMLScalarVolumeNode()
        mrml.samples._fill_volume_node(frame, data, affine)
        sequence.SetDataNodeAtValue(frame, str(t))
    if not scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):
        scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", sequence.GetName() + " browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    proxy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", sequence.GetName())
    mrml.samples._fill_volume_node(proxy, frames[0], affine)
    browser.AddProxyNode(proxy, sequence, False)
    return sequence, proxy


@pytest.mark.parametrize("strategy", ["instance", "acquisition"])
def test_a_sequence_slicer_mixed_from_a_dual_echo_series_runs_dual_echo_from_its_files(dual_echo, scene, tmp_path,
                                                                                      strategy):
    """What a user gets from Slicer's DICOM module: the echoes interleaved in 40 frames (InstanceNumber), or 20
    frames that keep one image of each echo pair (AcquisitionTime). Either one, run as a DSC series, was read as a
    single echo: frames of both echoes as one curve, or echo 2 alone. The bridge finds the DICOM series behind it
    (two echo times in its headers) and hands over its files: the maps are `bbbanomaly dsc FOLDER`'s, bit for bit."""
    folder, echoes, _, root = dual_echo
    sequence, proxy, ordered = slicer_loaded_sequence(folder, strategy, echoes[0].affine)
    if strategy == "instance":  # the plugin's frames alternate the echoes (the writer numbers them so)
        assert sequence.GetNumberOfDataNodes() == 40 and _headers(ordered[0])["0018|0081"] == "15"
        assert _headers(ordered[4])["0018|0081"] == "45"
    else:  # one image of each (position, acquisition time) pair: the later file, echo 2 here
        assert sequence.GetNumberOfDataNodes() == 20 and {_headers(f)["0018|0081"] for f in ordered} == {"45"}
    found = mrml.dicom_echoes_of(proxy)
    assert found is not None and found.echo_times_ms == [15.0, 45.0] and len(found.series_files()) == 160
    assert "2 echoes (TE 15 and 45 ms)" in found.summary()
    want, _ = cli_maps([str(folder), "--motion-correct", "none"], root / "cli_folder_defaults")
    request = mrml.RunRequest("dsc", {"series": proxy}, {"motion_correct": "none"},
                              {"echo_time": 0.015, "second_echo_time": 0.045})
    job, done = run_request(request, tmp_path / "run")
    assert Path(job.inputs["series"]).is_dir() and len(os.listdir(job.inputs["series"])) == 160
    report = json.loads((Path(done["output_dir"]) / "report.json").read_text())
    assert "second echo of the DICOM folder" in report["input"]["second_echo_source"]
    assert_same_maps(job_maps(done["output_dir"]), want, exact=True)
    # the maps land on the node's grid
    outputs = mrml.import_results(done["output_dir"], proxy, "dual echo")
    assert set(MAPS) <= set(outputs.map_nodes)
    # a second echo chosen beside it is refused in one line (the node already holds both)
    _, _, other = mrml.add_series(echoes[1], "echo 2")
    with pytest.raises(InputError, match="already holds both echoes .* leave the Second echo empty"):
        mrml.prepare_job(mrml.RunRequest("dsc", {"series": proxy, "second_echo": other}, {},
                                         {"echo_time": 0.015, "second_echo_time": 0.045}), tmp_path / "both")


def test_a_single_echo_dicom_sequence_is_handed_over_as_before(dual_echo, scene, tmp_path):
    """A sequence loaded from a one-echo DICOM series keeps the ordinary hand-over (its arrays)."""
    folder, echoes, _, root = dual_echo
    single = root / "single_echo"
    if not single.exists():
        single.mkdir()
        for path in folder.iterdir():
            if _headers(str(path))["0018|0081"] == "15":
                os.symlink(path, single / path.name)
    _, proxy, _ = slicer_loaded_sequence(single, "instance", echoes[0].affine)
    assert mrml.dicom_echoes_of(proxy) is None
    job, _ = mrml.prepare_job(mrml.RunRequest("dsc", {"series": proxy}, {}, {"frame_interval": 1.5,
                                                                             "echo_time": 0.015}), tmp_path / "run")
    assert job.inputs["series"].endswith(".npy")


def test_the_multivolume_format_is_found_through_slicers_dicom_database(dual_echo, scene, tmp_path, monkeypatch):
    """With MultiVolume chosen as the import format the plugin removes ``MultiVolume.FrameFileList`` after loading
    and keeps ``DICOM.instanceUIDs``; the files are then found with ``slicer.dicomDatabase.fileForInstance`` (as
    DICOMUtils.loadByInstanceUID does). The database here is a stand-in that answers from the files' own UIDs."""
    folder, echoes, _, root = dual_echo
    sequence, _, ordered = slicer_loaded_sequence(folder, "instance", echoes[0].affine)
    frames = np.stack([slicer.util.arrayFromVolume(sequence.GetNthDataNode(t))
                       for t in range(sequence.GetNumberOfDataNodes())], axis=-1)
    mv = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "1: MR perf - 40 frames MultiVolume by Time")
    slicer.util.updateVolumeFromArray(mv, np.ascontiguousarray(frames))
    mv.SetIJKToRASMatrix(mrml._array_to_matrix(echoes[0].affine))
    for name in sequence.GetAttributeNames():
        if name != "MultiVolume.FrameFileList":
            mv.SetAttribute(name, sequence.GetAttribute(name))
    by_uid = {_headers(f)["0008|0018"]: f for f in ordered}
    mv.SetAttribute("DICOM.instanceUIDs", " ".join(by_uid))
    assert mrml.describe_input(mv).kind == "multivolume"
    assert mrml.dicom_echoes_of(mv) is None  # no database (slicer-core): nothing to look the files up in
    monkeypatch.setattr(slicer, "dicomDatabase", type("Database", (), {"fileForInstance": staticmethod(
        lambda uid: by_uid.get(uid, ""))})(), raising=False)
    found = mrml.dicom_echoes_of(mv)
    assert found is not None and found.echo_times_ms == [15.0, 45.0] and found.node_frames == 40
    want, _ = cli_maps([str(folder), "--motion-correct", "none"], root / "cli_folder_defaults")
    job, done = run_request(mrml.RunRequest("dsc", {"series": mv}, {"motion_correct": "none"}, {}), tmp_path / "run")
    assert Path(job.inputs["series"]).is_dir()
    assert_same_maps(job_maps(done["output_dir"]), want, exact=True)

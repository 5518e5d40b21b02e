"""What a DICOM series' header says reaches a run started from the Slicer panel (session 23).

``bbbanomaly dce FOLDER`` keeps the Contrast/Bolus tags in ``acquisition.extra["contrast_bolus"]`` (and the
sequence type in ``["sequence"]``), and the DCE run warns where the stated dose is not the population AIF's. The
panel hands a series over as its node's voxels and attributes, which hold none of that: the same data run from the
panel lost the dose check without a word. The MRML bridge now reads those facts from the node's DICOM files
(``app/mrml/dicom_header.py``). Each run here is compared with the command line's on the same folder.

The series is a small DCE DICOM series with the contrast tags of a half dose (3.75 ml gadobutrol, 75 kg:
Testing/test_dce_header_dose.py), loaded as Slicer's DICOM module loads it (MultiVolumeImporterPlugin's frame-tag
strategy, rebuilt from its source: a volume sequence carrying ``MultiVolume.FrameFileList``), so the file takes
seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from bad_input_helpers import dce_signal
from test_dce_header_dose import HALF, HALF_RECORD, write_dicom
from test_io_dicom_round17 import _keep_locale  # noqa: F401  (autouse: the writer's locale)
from test_panel_dual_echo import _headers, sequence_with_proxy

from BBBAnomalyLib.app import handover, mrml
from BBBAnomalyLib.app.header_hints import parameter_hints
from BBBAnomalyLib.app.jobs import InProcessRunner
from BBBAnomalyLib.app.pipelines import get_pipeline
from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.io import read_dicom_series

#: the panel's DCE run, as the command line's `--t10 1.4 --rls none` (quick, a population AIF)
PARAMETERS = {"rls": "none", "t10": 1.4}
CLI = ["--t10", "1.4", "--rls", "none"]


@pytest.fixture(scope="module")
def dce_dicom(tmp_path_factory):
    """(the DICOM folder, the series as the library reads it, the command line's report on it)."""
    root = tmp_path_factory.mktemp("header_facts")
    folder = write_dicom(root / "dce_dicom", dce_signal(), HALF)
    out = root / "cli"
    assert cli_main(["dce", str(folder), *CLI, "--out", str(out), "--quiet"]) == 0
    return folder, read_dicom_series(folder), json.loads((out / "report.json").read_text(encoding="utf-8"))


def slicer_loaded_dce(folder: Path, affine: np.ndarray):
    """(sequence, proxy, frame files) as MultiVolumeImporterPlugin loads a DCE series as a volume sequence
    (fedorov/MultiVolumeImporter 144b2e4, ``initMultiVolumes`` and ``load``): files grouped by TriggerTime (0018,1060,
    the first of its frame tags; float values, sorted), ``MultiVolume.FrameFileList`` the files frame by frame,
    ``MultiVolume.FrameLabels`` the TriggerTime values in ms, EchoTime/RepetitionTime/FlipAngle of the last frame's
    first file; each frame loaded by the scalar-volume plugin (slices sorted along the normal); the sequence indexed
    "0".."N-1" with IndexName and IndexUnit empty, carrying the MultiVolume node's attributes."""
    by_time: dict = {}
    for path in sorted(str(p) for p in folder.iterdir()):
        by_time.setdefault(float(_headers(path)["0018|1060"]), []).append(path)
    times = sorted(by_time)
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    frames = []
    for t in times:
        along = [float(np.dot(np.array(_headers(f)["0020|0032"].split("\\"), float) * lps_to_ras, normal))
                 for f in by_time[t]]
        frames.append(np.stack([sitk.GetArrayFromImage(sitk.ReadImage(by_time[t][i]))[0].T
                                for i in np.argsort(along)], axis=-1))
    ordered = [f for t in times for f in by_time[t]]
    scene = slicer.mrmlScene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"5: DCE - {len(times)} frames Volume Sequence")
    sequence.SetIndexName("")
    sequence.SetIndexUnit("")
    last = _headers(by_time[times[-1]][0])
    attributes = {"MultiVolume.FrameLabels": ",".join(str(t) for t in times),
                  "MultiVolume.FrameIdentifyingDICOMTagName": "TriggerTime",
                  "MultiVolume.NumberOfFrames": str(len(times)), "MultiVolume.FrameIdentifyingDICOMTagUnits": "ms",
                  "MultiVolume.FrameFileList": ",".join(ordered), "MultiVolume.DICOM.EchoTime": last["0018|0081"],
                  "MultiVolume.DICOM.RepetitionTime": last["0018|0080"],
                  "MultiVolume.DICOM.FlipAngle": last["0018|1314"]}
    return (*sequence_with_proxy(sequence, attributes, frames, affine), ordered)


@pytest.fixture
def scene():
    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(True)


def job_header(job, key="series") -> dict:
    return json.loads(handover.header_path(job.inputs[key]).read_text(encoding="utf-8"))


def header_dose_warnings(report) -> list[str]:
    return [w for w in report["warnings"] if "DICOM header states" in w]


def run_job(job) -> dict:
    done = InProcessRunner(job).start().poll()[-1]
    assert done["event"] == "done", done
    return json.loads((Path(done["output_dir"]) / "report.json").read_text(encoding="utf-8"))


# --- the bridge ------------------------------------------------------------------------------------------------
def test_the_bridge_reads_the_facts_the_library_reader_keeps(dce_dicom, scene):
    """From the node's files, by the reader's own functions: the same records as `read_dicom_series` keeps."""
    folder, series, _ = dce_dicom
    sequence, proxy, _ = slicer_loaded_dce(folder, series.affine)
    want = {key: series.acquisition.extra[key] for key in ("contrast_bolus", "sequence")
            if key in series.acquisition.extra}
    assert want["contrast_bolus"] == HALF_RECORD
    for node in (proxy, sequence):
        assert mrml.dicom_header_facts(node) == want
    # the node's own attributes hold none of it (what describe_input, and the old hand-over, saw)
    assert "contrast_bolus" not in mrml.describe_input(proxy).acquisition.extra
    assert mrml.node_header(proxy).acquisition.extra["contrast_bolus"] == HALF_RECORD


def test_every_reader_of_the_list_is_applied_as_the_library_reader_applies_it(scene, tmp_path):
    """A series whose header also names its pulse sequence (spin-echo EPI: io/sequence_type, which DSC reads): the
    node's facts and the job's acquisition hold the same records as ``read_dicom_series``'s, one per reader."""
    folder = write_dicom(tmp_path / "se", dce_signal(n_frames=6),
                         {**HALF, "0018|0020": "EP\\SE", "0018|0024": "*epse2d1_128"})
    series = read_dicom_series(folder)
    _, proxy, _ = slicer_loaded_dce(folder, series.affine)
    facts = mrml.dicom_header_facts(proxy)
    assert set(facts) == {"contrast_bolus", "sequence"} and facts["sequence"]["echo"] == "spin_echo"
    assert facts == {key: series.acquisition.extra[key] for key in facts}
    job, _ = mrml.prepare_job(mrml.RunRequest("dce", {"series": proxy}, dict(PARAMETERS), {}), tmp_path / "run")
    extra = job_header(job)["acquisition"]["extra"]
    assert {key: extra[key] for key in facts} == facts


def test_a_dce_run_from_the_panel_warns_about_the_stated_dose_as_the_command_line(dce_dicom, scene, tmp_path):
    """The sequence Slicer loads from the folder, run through prepare_job and the worker: the job's acquisition
    carries the tags, and the report has the command line's ``aif.header_dose`` and its warning, word for word."""
    folder, series, cli_report = dce_dicom
    _, proxy, _ = slicer_loaded_dce(folder, series.affine)
    job, _ = mrml.prepare_job(mrml.RunRequest("dce", {"series": proxy}, dict(PARAMETERS), {}), tmp_path / "run")
    header = job_header(job)
    assert header["acquisition"]["extra"]["contrast_bolus"] == HALF_RECORD
    assert np.allclose(header["times"], series.times)  # the same frames, at the same times
    report = run_job(job)
    assert report["aif"]["header_dose"] == cli_report["aif"]["header_dose"]
    assert report["aif"]["header_dose"]["dose_mmol_per_kg"] == 0.05 and report["aif"]["header_dose"]["warned"]
    warned = header_dose_warnings(report)
    assert warned == header_dose_warnings(cli_report) and len(warned) == 1 and "--dose 0.05" in warned[0]
    # the field strength, which a node does not carry, read from the files too: the agent's r1 is the one at 3 T
    assert header["acquisition"]["field_strength"] == 3.0
    assert report["conversion"]["header_relaxivity"] == cli_report["conversion"]["header_relaxivity"]
    assert report["conversion"]["header_relaxivity"]["field_strength_t"] == 3.0
    # the suggested dose, given in the panel's field, is used and the header no longer warned about
    job, _ = mrml.prepare_job(mrml.RunRequest("dce", {"series": proxy}, {**PARAMETERS, "dose": 0.05}, {}),
                              tmp_path / "dosed")
    dosed = run_job(job)
    assert dosed["aif"]["dose"]["dose_mmol_per_kg"] == 0.05 and dosed["aif"]["header_dose"]["differs_by"] == 0.0
    assert header_dose_warnings(dosed) == []


def test_a_multivolume_finds_its_files_through_slicers_dicom_database(dce_dicom, scene, monkeypatch):
    """With MultiVolume chosen as the import format the plugin removes the file list and keeps DICOM.instanceUIDs:
    the first, middle and last files come from ``slicer.dicomDatabase.fileForInstance`` (a stand-in answering from
    the files' own UIDs; slicer-core has no database)."""
    folder, series, _ = dce_dicom
    sequence, _, ordered = slicer_loaded_dce(folder, series.affine)
    frames = np.stack([slicer.util.arrayFromVolume(sequence.GetNthDataNode(t))
                       for t in range(sequence.GetNumberOfDataNodes())], axis=-1)
    mv = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "5: DCE - 30 frames MultiVolume by TriggerTime")
    slicer.util.updateVolumeFromArray(mv, np.ascontiguousarray(frames))
    mv.SetIJKToRASMatrix(mrml._array_to_matrix(series.affine))
    for name in sequence.GetAttributeNames():
        if name != "MultiVolume.FrameFileList":
            mv.SetAttribute(name, sequence.GetAttribute(name))
    by_uid = {_headers(f)["0008|0018"]: f for f in ordered}
    mv.SetAttribute("DICOM.instanceUIDs", " ".join(by_uid))
    assert mrml.dicom_header_facts(mv) == {}  # no database: nothing to look the files up in, and no error
    monkeypatch.setattr(slicer, "dicomDatabase", type("Database", (), {"fileForInstance": staticmethod(
        lambda uid: by_uid.get(uid, ""))})(), raising=False)
    assert mrml.dicom_header_facts(mv)["contrast_bolus"] == HALF_RECORD
    assert mrml.node_header(mv).acquisition.extra["contrast_bolus"] == HALF_RECORD


def _job_bytes(job) -> dict:
    return {name: Path(path).read_bytes() for name, path in job.inputs.items()} | {
        name + ".json": handover.header_path(path).read_bytes() for name, path in job.inputs.items()}


def test_nodes_without_readable_dicom_files_hand_over_what_they_did(dce_dicom, scene, tmp_path):
    """A node not loaded from DICOM, one whose files have gone, and one whose listed files are not DICOM: no fact
    added, no error, and the job's inputs bit-identical to those of the same node with no file list."""
    folder, series, _ = dce_dicom
    sequence, proxy, ordered = slicer_loaded_dce(folder, series.affine)
    request = mrml.RunRequest("dce", {"series": proxy}, dict(PARAMETERS), {})
    sequence.RemoveAttribute("MultiVolume.FrameFileList")
    plain, _ = mrml.prepare_job(request, tmp_path / "plain")
    assert "contrast_bolus" not in job_header(plain)["acquisition"].get("extra", {})
    expected = _job_bytes(plain)
    gone = tmp_path / "gone"
    shutil.copytree(folder, gone)
    sequence.SetAttribute("MultiVolume.FrameFileList", ",".join(str(gone / Path(f).name) for f in ordered))
    assert mrml.dicom_header_facts(proxy)["contrast_bolus"] == HALF_RECORD  # (while the copy is there)
    (gone / Path(ordered[len(ordered) // 2]).name).unlink()  # one file of the series deleted
    assert mrml.dicom_header_facts(proxy) == {}
    assert _job_bytes(mrml.prepare_job(request, tmp_path / "gone_job")[0]) == expected
    unreadable = tmp_path / "notes"
    unreadable.mkdir()
    for f in ordered:
        (unreadable / Path(f).name).write_text("not a DICOM file")
    sequence.SetAttribute("MultiVolume.FrameFileList", ",".join(str(unreadable / Path(f).name) for f in ordered))
    assert mrml.dicom_header_facts(proxy) == {}
    assert _job_bytes(mrml.prepare_job(request, tmp_path / "unreadable_job")[0]) == expected
    # a series added from a Volume (the samples, a script): what the library's own acquisition says, nothing more
    _, _, added = mrml.add_series(series, "added")
    assert mrml.dicom_header_facts(added) == {}
    job, _ = mrml.prepare_job(mrml.RunRequest("dce", {"series": added}, dict(PARAMETERS), {}), tmp_path / "added")
    assert job_header(job)["acquisition"] == mrml.describe_input(added).acquisition.to_json()


# --- what the panel shows ---------------------------------------------------------------------------------------
def test_the_dose_hint_says_the_stated_dose_and_what_use_fills_in():
    hints = parameter_hints("dce", {"contrast_bolus": HALF_RECORD})
    assert list(hints) == ["dose", "relaxivity"]  # (gadobutrol, but no field strength: no r1; session 24)
    hint = hints["dose"]
    assert hint.text == "header: 0.05 mmol/kg (3.75 ml gadobutrol, 75 kg)" and hint.value == 0.05
    assert "3.75 ml (ContrastBolusTotalDose) x 1 mmol/ml (gadobutrol) / 75 kg (PatientWeight)" in hint.details
    assert "not applied by itself" in hint.details
    # tags that define no dose: said why, nothing to fill in
    none = parameter_hints("dce", {"contrast_bolus": {"agent": "Gadovist", "volume_ml": 7.5}})["dose"]
    assert none.value is None and none.text.startswith("header: no dose (") and "PatientWeight" in none.text
    # no tags, or another pipeline: no hint
    assert parameter_hints("dce", {}) == {} and parameter_hints("dce", None) == {}
    assert parameter_hints("dsc", {"contrast_bolus": HALF_RECORD}) == {}
    # the value fits the field it fills (the DCE dose: 3 decimals, 0-0.3)
    spec = next(p for p in get_pipeline("dce").parameters if p.name == "dose")
    assert spec.minimum < hint.value <= spec.maximum and round(hint.value, spec.decimals) == hint.value


def test_the_dmri_pipeline_says_which_dwi_it_can_use():
    """The clinical 3-direction/trace DWI and the ADC map are refused by the run (session 23): the panel's
    description and the DWI input's tooltip say so before a user picks one."""
    dmri = get_pipeline("dmri")
    for text in (dmri.description, dmri.input("dwi").tooltip):
        assert "6 gradient directions" in text and "ADC map" in text and "3-direction" in text, text

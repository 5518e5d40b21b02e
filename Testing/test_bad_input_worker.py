"""Bad jobs for the worker: every path and value of a job file is checked before anything runs.

Issue 12 items 2 and 6: a ``suffix`` of ``/../../../x.nii.gz`` escaped the output folder, a
relative ``output_dir`` was resolved against the worker's working folder, ``overwrite: true``
deleted a patient folder, and jobs with a list for ``inputs``, a wrong-typed parameter or
``torch_threads: -1`` ended in tracebacks. Each case must give one ``error`` event of kind
"input", no traceback, nothing written, and inputs byte-identical.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from BBBAnomalyLib.app.jobs import InProcessRunner, Job
from BBBAnomalyLib.core.errors import InputError

from bad_input_helpers import tree_hashes, write_dsc_case

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def case(tmp_path):
    return write_dsc_case(tmp_path / "patient")


def job_dict(case: dict, out: Path, **changes) -> dict:
    job = {"pipeline": "dsc", "inputs": {"series": str(case["series"]), "aif_mask": str(case["aif"]),
                                         "brain_mask": str(case["mask"])},
           "parameters": {"method": "ssvd"}, "output_dir": str(out), "overwrite": False, "suffix": ".nrrd",
           "save_curves": False, "torch_threads": None}
    job.update(changes)
    return job


def run_worker(job: dict, folder: Path) -> list[dict]:
    """``python -m BBBAnomalyLib.app.worker JOB.json`` as the panel starts it; returns its JSON events."""
    job_file = folder / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "BBBAnomalyLib.app.worker", str(job_file)], capture_output=True,
                          text=True, cwd=folder, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert "Traceback" not in proc.stdout
    return events, proc.returncode, proc.stderr


BAD_JOBS = {
    "suffix escapes the folder": ({"suffix": "/../../../x.nii.gz"}, "suffix"),
    "relative output folder": ({"output_dir": "relative/out"}, "absolute"),
    "relative input": ({"inputs": {"series": "signal.nii.gz"}}, "absolute"),
    "inputs as a list": ({"inputs": ["/a/b.nii.gz"]}, "inputs"),
    "missing input file": ({"inputs": {"series": "/nonexistent/series.nrrd"}}, "does not exist"),
    "unknown input name": ({"inputs": {"sereis": "INPUT"}}, "no input named"),
    "wrong-typed parameter": ({"parameters": {"method": "ssvd", "kh": "high"}}, "must be a number"),
    "unknown parameter": ({"parameters": {"methd": "ssvd"}}, "unknown"),
    "negative torch threads": ({"torch_threads": -1}, "torch_threads"),
    "overwrite not a bool": ({"overwrite": "yes"}, "overwrite"),
    "unknown job field": ({"priority": 3}, "unknown field"),
    "no output folder": ({"output_dir": ""}, "output folder"),
}


@pytest.mark.parametrize("name", list(BAD_JOBS))
def test_worker_refuses_a_bad_job_in_one_line(name, case, tmp_path):
    changes, keyword = BAD_JOBS[name]
    changes = json.loads(json.dumps(changes).replace("INPUT", str(case["series"])))
    out = tmp_path / "out"
    before = tree_hashes(tmp_path / "patient")
    events, code, _ = run_worker(job_dict(case, out, **changes), tmp_path)
    final = events[-1]
    assert final["event"] == "error" and final["kind"] == "input", events
    assert keyword in final["message"], final["message"]
    assert "\n" not in final["message"] and "Traceback" not in final["message"]
    assert code == 2
    assert not out.exists() and not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "relative").exists()
    assert tree_hashes(tmp_path / "patient") == before


def test_worker_overwrite_never_deletes_a_patient_folder(case, tmp_path):
    """The issue's report: a job with overwrite: true pointed at the patient's folder (series and a PDF)."""
    patient = tmp_path / "patient"
    (patient / "report.pdf").write_bytes(b"%PDF-1.4")
    before = tree_hashes(patient)
    events, code, _ = run_worker(job_dict(case, patient, overwrite=True), tmp_path)
    assert events[-1]["event"] == "error" and "holds the input" in events[-1]["message"]
    assert tree_hashes(patient) == before and code == 2
    other = tmp_path / "other_folder_of_the_user"
    other.mkdir()
    (other / "scan.dcm").write_bytes(b"DICM")
    events, code, _ = run_worker(job_dict(case, other, overwrite=True), tmp_path)
    assert events[-1]["event"] == "error" and "did not write" in events[-1]["message"]
    assert (other / "scan.dcm").read_bytes() == b"DICM"


def test_a_good_job_writes_curves_inside_the_all_or_nothing_folder(case, tmp_path):
    out = tmp_path / "out"
    events = InProcessRunner(Job(**job_dict(case, out, save_curves=True))).start().poll()
    assert events[-1]["event"] == "done", events[-1]
    from BBBAnomalyLib.core.outputs import foreign_entries

    assert (out / "curves.npz").exists() and foreign_entries(out) == []  # listed in the manifest


def test_job_objects_are_checked_when_made(case, tmp_path):
    with pytest.raises(InputError, match="absolute"):
        Job("dsc", {"series": str(case["series"])}, {}, "out")
    with pytest.raises(InputError, match="suffix"):
        Job("dsc", {"series": str(case["series"])}, {}, str(tmp_path / "o"), suffix="../x.nrrd")
    job = Job("dsc", {"series": str(case["series"])}, {}, str(tmp_path / "o"))
    job.suffix = "/../../x.nrrd"  # changed after it was made: run_job checks again
    event = InProcessRunner(job).start().poll()[-1]
    assert event["event"] == "error" and "suffix" in event["message"]

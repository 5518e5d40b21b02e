"""Jobs from the panel (round 15's audit of the job interface): the curves folder of an "arrays" job is checked with
the maps' before any work, bad values and unusable paths are one input error, a relative weights path is refused,
and the in-process runner reports what it cannot handle as an event instead of raising into Slicer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from BBBAnomalyLib.app.jobs import InProcessRunner, Job, curves_dir, run_job
from BBBAnomalyLib.core.errors import InputError

from bad_input_helpers import tree_hashes, write_dsc_case
from test_bad_input_worker import job_dict


@pytest.fixture
def case(tmp_path):
    return write_dsc_case(tmp_path / "patient")


def _arrays_job(case, out: Path, **changes) -> Job:
    return Job(**job_dict(case, out, output_format="arrays", save_curves=True, **changes))


def test_a_user_folder_where_the_curves_go_stops_the_job_before_any_map_is_written(case, tmp_path):
    out = tmp_path / "out"
    user = curves_dir(out)
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    events = []
    with pytest.raises(InputError, match="out.curves"):
        run_job(_arrays_job(case, out), emit=events.append)
    assert events == [] and not out.exists()  # refused before the work: no maps published, then a failed job
    assert (user / "notes.txt").read_text() == "mine"


def test_an_input_inside_the_curves_folder_is_never_replaced_even_with_overwrite(case, tmp_path):
    """An earlier job whose output folder happens to be named like our curves folder, with an input moved into
    it: overwrite used to replace the folder (and the input) because the curves claim had no inputs to protect."""
    out = tmp_path / "out"
    earlier = curves_dir(out)
    run_job(Job(**job_dict(case, earlier)))
    brain = earlier / "brain_mask.nrrd"
    assert brain.is_file()
    before = tree_hashes(earlier)
    job = _arrays_job(case, out, overwrite=True,
                      inputs={"series": str(case["series"]), "aif_mask": str(case["aif"]), "brain_mask": str(brain)})
    with pytest.raises(InputError, match="holds the input"):
        run_job(job)
    assert tree_hashes(earlier) == before and not out.exists()


def test_an_arrays_job_still_writes_its_maps_and_curves(case, tmp_path):
    out = tmp_path / "out"
    events = []
    done = run_job(_arrays_job(case, out), emit=events.append)
    assert [e["event"] for e in events] == ["maps"]
    assert done["curves"] == str(curves_dir(out.resolve())) and Path(done["curves"]).is_dir()


@pytest.mark.parametrize("changes, words", [
    ({"parameters": {"method": "ssvd", "kh": 10 ** 400}}, ("kh", "number")),
    ({"output_dir": "/tmp/out\u0000x"}, ("cannot be used", "null byte")),
    ({"output_dir": "/tmp/" + "a" * 300}, ("output_dir", "cannot be used")),
    ({"inputs": {"series": "/tmp/" + "a" * 300 + ".nii.gz"}}, ("series", "cannot be used")),
    ({"inputs": {"series": "/dev/null"}}, ("series", "not a file or a folder")),
    ({"parameters": {"method": "phae", "phae_weights": "weights/dsc-phae-fast.pt"}}, ("phae_weights", "absolute")),
], ids=["huge-number", "nul-in-output", "long-output", "long-input", "device-input", "relative-weights"])
def test_bad_job_values_and_paths_are_one_input_error(case, tmp_path, changes, words):
    with pytest.raises(InputError) as err:
        run_job(Job(**job_dict(case, tmp_path / "out", **changes)))
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not (tmp_path / "out").exists()


def test_a_symlink_loop_as_the_output_folder_is_one_input_error(case, tmp_path):
    (tmp_path / "o1").symlink_to(tmp_path / "o2")
    (tmp_path / "o2").symlink_to(tmp_path / "o1")
    with pytest.raises(InputError, match="cannot be used"):
        run_job(Job(**job_dict(case, tmp_path / "o1" / "out")))


def test_a_job_file_nested_too_deeply_is_one_input_error(tmp_path):
    path = tmp_path / "job.json"
    path.write_text('{"pipeline": "dsc", "inputs": {}, "parameters": {"kh": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    with pytest.raises(InputError, match="nested too deeply"):
        Job.load(path)


def test_the_in_process_runner_reports_an_unexpected_error_as_an_event(case, tmp_path, monkeypatch, capsys):
    """The panel's foreground path: whatever breaks inside the run reaches it as an error event (the worker's
    kind "internal"), never as an exception into Slicer's GUI code; the traceback goes to the Python console."""
    import BBBAnomalyLib.app.jobs as jobs

    def broken(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(jobs, "read_job_input", broken)
    runner = InProcessRunner(Job(**job_dict(case, tmp_path / "out"))).start()
    assert runner.poll()[-1] == {"event": "error", "kind": "internal", "message": "ZeroDivisionError: division by zero"}
    assert "Traceback" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_worker_process_reports_the_same_bad_value_as_an_input_error(case, tmp_path):
    from test_bad_input_worker import run_worker

    events, code, _ = run_worker(job_dict(case, tmp_path / "out", parameters={"method": "ssvd", "kh": 10 ** 400}),
                                 tmp_path)
    assert code == 2 and events[-1]["event"] == "error" and events[-1]["kind"] == "input"
    assert "kh" in events[-1]["message"] and json.dumps(events[-1]).count("Traceback") == 0

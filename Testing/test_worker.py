"""The background worker as the panel runs it: a child process, JSON-line events, Cancel."""

from __future__ import annotations

import io
import json
import sys as _sys
from pathlib import Path as _Path
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from BBBAnomalyLib.io import write_volume
from BBBAnomalyLib.app.jobs import InProcessRunner, Job, WorkerProcess
from BBBAnomalyLib.app.pipelines import PIPELINES, get_pipeline
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.app.worker import JsonLinePrinter

_sys.path.insert(0, str(_Path(__file__).resolve().parent))  # slicer_standins (the stand-in launcher)


def test_worker_process_runs_a_job_and_reports_json_lines(dsc_files, tmp_path):
    job = Job("dsc", {"series": str(dsc_files / "signal.nii.gz"), "aif_mask": str(dsc_files / "mask_aif.nii.gz")},
              {"method": "ssvd"}, str(tmp_path / "out"))
    worker = WorkerProcess(job, tmp_path / "job.json").start()
    events = worker.wait(timeout=300)
    assert worker.finished and events[-1]["event"] == "done", (events[-1], worker.log_file.read_text(encoding="utf-8"))
    assert events[0]["event"] == "started" and events[0]["pid"] == worker.worker_pid == worker.pid
    # the worker runs below the GUI's priority, so that Slicer's views stay responsive during the run
    if hasattr(os, "nice"):
        assert events[0]["priority"] == f"nice {min(os.nice(0) + 5, 19)}", events[0]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(0.0 <= e["fraction"] <= 1.0 for e in progress) and progress[-1]["fraction"] == 1.0
    out = tmp_path / "out"
    assert events[-1]["maps"] == ["cbv", "cbv_corrected", "cbf", "mtt", "tmax", "k2"]
    for name in events[-1]["maps"]:
        assert (out / f"{name}.nrrd").is_file()
    assert (out / "curves.npz").is_file() and json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert Job.load(tmp_path / "job.json") == job


def test_worker_reports_a_bad_input_as_one_message(dsc_files, tmp_path):
    job = Job("dsc", {"series": str(dsc_files / "mask_aif.nii.gz")}, {}, str(tmp_path / "out"))
    events = WorkerProcess(job, tmp_path / "job.json").start().wait(timeout=120)
    final = events[-1]
    assert final["event"] == "error" and final["kind"] == "input"
    assert "3D" in final["message"] and "Traceback" not in final["message"]
    assert not (tmp_path / "out").exists()


def test_worker_internal_error_points_to_the_log(tmp_path):
    (tmp_path / "job.json").write_text("{not json", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "BBBAnomalyLib.app.worker", str(tmp_path / "job.json")],
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    event = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 2 and event["event"] == "error" and "cannot read job file" in event["message"]


def test_cancel_stops_the_worker_and_leaves_no_output(dsc_phantom, tmp_path):
    # A series long enough (the 6-slice phantom repeated to 48 slices, Tikhonov) that Cancel
    # arrives mid-run.
    signal = dsc_phantom.signal
    big = Volume(np.tile(signal.data, (1, 1, 8, 1)), signal.affine, signal.times, signal.acquisition)
    series = write_volume(big, tmp_path / "series.nrrd")
    job = Job("dsc", {"series": str(series)}, {"method": "tikhonov"}, str(tmp_path / "job" / "output"))
    (tmp_path / "job").mkdir()
    worker = WorkerProcess(job, tmp_path / "job" / "job.json").start()
    seen = []
    deadline = time.monotonic() + 120
    while not any(e["event"] == "progress" and e["fraction"] >= 0.1 for e in seen):
        seen += worker.poll()
        assert time.monotonic() < deadline and not worker.finished, seen
        time.sleep(0.02)
    worker.cancel()
    events = worker.wait(timeout=60)
    assert events[-1]["event"] == "cancelled"
    assert not (tmp_path / "job" / "output").exists()
    assert not [p for p in (tmp_path / "job").iterdir() if p.name.startswith(".output")]  # no partial folder


def test_in_process_runner_gives_the_same_events(dsc_files, tmp_path):
    job = Job("dsc", {"series": str(dsc_files / "signal.nii.gz")}, {"method": "ssvd"}, str(tmp_path / "out"),
              save_curves=False)
    runner = InProcessRunner(job).start()
    events = runner.poll()
    assert runner.finished and events[-1]["event"] == "done" and runner.poll() == []
    assert not (tmp_path / "out" / "curves.npz").exists()
    bad = InProcessRunner(Job("dsc", {"series": str(dsc_files / "signal.nii.gz")}, {"method": "fourier"},
                              str(tmp_path / "bad"))).start().poll()[-1]
    assert bad["event"] == "error" and "fourier" in bad["message"]


def test_json_line_printer_limits_the_rate_but_keeps_new_messages():
    stream = io.StringIO()
    printer = JsonLinePrinter(stream, min_interval=10.0)
    for i in range(100):
        printer(i / 200, "deconvolving")
    printer(0.6, "computing maps")
    printer(1.0, "computing maps")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["message"] for e in lines] == ["deconvolving", "computing maps", "computing maps"]


def test_pipeline_registry_matches_the_parameter_classes():
    for spec in PIPELINES.values():
        assert spec.label and spec.description and any(s.positional and s.required for s in spec.inputs)
        if not spec.available:
            assert spec.unavailable
            continue
        defaults = spec.default_parameters()
        assert set(defaults) == {p.name for p in spec.parameters}
        params = spec.make_parameters(defaults)
        for p in spec.parameters:
            if p.choices:
                assert str(getattr(getattr(params, p.name), "value", getattr(params, p.name))) in dict(p.choices)
    with pytest.raises(Exception, match="unknown pipeline"):
        get_pipeline("pet")


def test_apply_stays_disabled_until_the_run_has_what_it_needs():
    dsc = get_pipeline("dsc")
    series = object()
    assert dsc.missing({}, {}) == ["DSC series", "Frame interval (s)", "Echo time (TE) (ms)"]
    assert dsc.missing({"series": series}, {"frame_interval": 1.5, "echo_time": 0.03}) == []
    assert dsc.missing({"series": series}, {"frame_interval": 1.5}, {"input_kind": "concentration"}) == []
    assert dsc.missing({"series": series, "aif_mask": None}, {"frame_interval": 1.5, "echo_time": 0.03},
                       chosen_regions=("aif_mask",)) == ["AIF region (or choose Automatic)"]
    dce = get_pipeline("dce")
    ready = {"frame_interval": 3.0}
    assert dce.missing({"series": series}, ready, {"t10": None}) == []  # relative enhancement needs no TR
    assert dce.missing({"series": series}, ready, {"t10": 1.4}) == ["Repetition time (TR) (ms)", "Flip angle (deg)"]
    assert dce.missing({"series": series}, ready, {"t10": 1.4, "input_kind": "concentration"}) == []
    assert dsc.torch_needed({"method": "phae"}) and not dsc.torch_needed({"method": "osvd"})


# --- Cancel inside Slicer (issue 13, defect 3) --------------------------------------------------------
def _slow_dsc_job(dsc_phantom, tmp_path):
    """A run long enough that Cancel arrives mid-run: the 6-slice phantom repeated to 48 slices, Tikhonov."""
    signal = dsc_phantom.signal
    big = Volume(np.tile(signal.data, (1, 1, 8, 1)), signal.affine, signal.times, signal.acquisition)
    series = write_volume(big, tmp_path / "series.nrrd")
    (tmp_path / "job").mkdir()
    return Job("dsc", {"series": str(series)}, {"method": "tikhonov"}, str(tmp_path / "job" / "output"))


def test_cancel_ends_the_worker_under_a_launcher_that_forwards_no_signal(dsc_phantom, tmp_path):
    """Inside Slicer the worker runs under PythonSlicer, the CTK launcher: it starts python-real as
    its child and forwards no signal. Cancel must end that child (and the launcher), and pass on
    nothing the worker says afterwards."""
    from slicer_standins import make_launcher

    from BBBAnomalyLib.core.processes import pid_alive as _pid_alive

    launcher = make_launcher(tmp_path / "bin")
    worker = WorkerProcess(_slow_dsc_job(dsc_phantom, tmp_path), tmp_path / "job" / "job.json", python=str(launcher))
    worker.start()
    seen = []
    deadline = time.monotonic() + 120
    while not any(e["event"] == "progress" and e["fraction"] >= 0.1 for e in seen):
        seen += worker.poll()
        assert time.monotonic() < deadline and not worker.finished, seen
        time.sleep(0.02)
    assert worker.worker_pid is not None and worker.worker_pid != worker.pid  # python-real is the launcher's child
    worker.cancel()
    events = worker.wait(timeout=30)
    assert [e["event"] for e in events] == ["cancelled"]
    assert not _pid_alive(worker.worker_pid) and not _pid_alive(worker.pid)
    assert not (tmp_path / "job" / "output").exists()


FINISHES_AFTER_SIGTERM = """
import json, signal, sys, time, os
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker busy in C code: SIGTERM changes nothing
print(json.dumps({"event": "started", "pid": os.getpid()}), flush=True)
time.sleep(1.0)
print(json.dumps({"event": "progress", "fraction": 1.0, "message": "writing maps"}), flush=True)
print(json.dumps({"event": "done", "output_dir": sys.argv[1], "maps": ["cbv"], "warnings": []}), flush=True)
"""


def test_nothing_after_cancel_reaches_the_panel_not_even_done(tmp_path):
    """Cancel is final: a worker that finishes anyway (its 'done' arrives after Cancel) is reported
    as cancelled, so the panel imports nothing."""
    series = write_volume(Volume(np.zeros((2, 2, 2, 3), np.float32), np.eye(4), np.arange(3.0)), tmp_path / "s.nrrd")
    job = Job("dsc", {"series": str(series)}, {}, str(tmp_path / "out"))
    worker = WorkerProcess(job, tmp_path / "job.json",
                           command=[sys.executable, "-c", FINISHES_AFTER_SIGTERM, str(tmp_path / "out")]).start()
    deadline, events = time.monotonic() + 30, []
    while not events:
        events += worker.poll()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [e["event"] for e in events] == ["started"]
    worker.cancel()
    assert [e["event"] for e in worker.wait(timeout=30)] == ["cancelled"]
    assert worker.poll() == []


def test_the_worker_starts_without_a_console_window_and_in_its_own_process_group():
    """Defect 8 (a console window on every run on Windows) and the group that Cancel signals.
    The Windows branch is checked by its flags here; it runs only on Windows."""
    import subprocess as sp

    from BBBAnomalyLib.app.runners import CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, popen_options

    windows = popen_options("nt")
    assert windows["creationflags"] & CREATE_NO_WINDOW and windows["creationflags"] & CREATE_NEW_PROCESS_GROUP
    if hasattr(sp, "STARTUPINFO"):
        assert windows["startupinfo"].wShowWindow == 0
    assert popen_options("posix") == {"start_new_session": True}


# --- the warm worker and the panel's hand-over (issue 17) ---------------------------------------------
def _array_job(dsc_phantom, folder, **fields):
    """The 6-slice phantom handed over as the panel does it: raw frames + header, arrays out."""
    from BBBAnomalyLib.app import handover

    signal = dsc_phantom.signal
    folder.mkdir(parents=True, exist_ok=True)
    frames = [np.ascontiguousarray(signal.data[..., t].T) for t in range(signal.n_frames)]  # Slicer's (k, j, i)
    series = handover.write_arrays(folder / "series.npy", frames, "tkji", signal.affine, signal.times,
                                   signal.acquisition)
    aif = handover.write_volume(Volume(dsc_phantom.masks["aif"], signal.affine), folder / "aif_mask.npy")
    return Job("dsc", {"series": str(series), "aif_mask": str(aif)}, {"method": "ssvd"}, str(folder / "output"),
               output_format="arrays", **fields)


def test_arrays_output_holds_the_same_maps_uncompressed_and_complete(dsc_phantom, tmp_path):
    """The panel's output format: the maps of the pipeline's own files, bit for bit, as raw arrays
    in Slicer's order, with the report and the masks, listed in the manifest; then the curves,
    memory-mappable, in a complete folder of their own."""
    from BBBAnomalyLib.app import handover
    from BBBAnomalyLib.app.curves import CurveSet, curves_in
    from BBBAnomalyLib.core.outputs import foreign_entries
    from BBBAnomalyLib.io import read_volume

    job = _array_job(dsc_phantom, tmp_path / "panel")
    events = InProcessRunner(job).start().poll()
    done = events[-1]
    assert done["event"] == "done", done
    # the maps are announced, complete, before the curves are written (the panel shows them at once)
    maps = next(e for e in events if e["event"] == "maps")
    assert events.index(maps) == len(events) - 2 and maps["maps"] == done["maps"]
    assert done["curves"] == str(curves_in(tmp_path / "panel" / "output")) and foreign_entries(_Path(done["curves"])) == []
    files = Job(job.pipeline, job.inputs, job.parameters, str(tmp_path / "files"))  # the NRRD files of the same run
    assert InProcessRunner(files).start().poll()[-1]["event"] == "done"
    out = tmp_path / "panel" / "output"
    assert not [p for p in out.rglob("*") if p.suffix in (".gz", ".nrrd", ".npz")] and foreign_entries(out) == []
    for name in done["maps"]:
        array, affine = handover.read_slicer_array(out / f"{name}.npy")
        expected = read_volume(tmp_path / "files" / f"{name}.nrrd")
        np.testing.assert_array_equal(array, expected.data.T)  # (k, j, i), as updateVolumeFromArray takes it
        np.testing.assert_allclose(affine, expected.affine, atol=1e-9)
    np.testing.assert_array_equal(handover.read_volume(out / "aif_mask.npy").data,
                                  read_volume(tmp_path / "files" / "aif_mask.nrrd").data)
    lazy, packed = CurveSet.load(curves_in(out)), CurveSet.load(curves_in(tmp_path / "files"))
    assert isinstance(lazy.measured, np.memmap) and lazy.measured.dtype == np.float32
    voxel = tuple(np.argwhere(lazy.mask)[len(np.argwhere(lazy.mask)) // 2])
    for label, curve in lazy.voxel(voxel).items():  # float16 in curves.npz: its rounding, nothing more
        np.testing.assert_allclose(packed.voxel(voxel)[label], curve, rtol=2 ** -10, atol=1e-6)
    with pytest.raises(Exception, match="output_format"):
        Job("dsc", job.inputs, {}, str(tmp_path / "x"), output_format="zip")


def test_a_warm_worker_imports_first_then_runs_one_job_and_exits(dsc_phantom, tmp_path):
    from BBBAnomalyLib.app.runners import WorkerProcess as Runner

    (tmp_path / "warm").mkdir()
    worker = Runner.warm(tmp_path / "warm", preload="dsc")
    deadline = time.monotonic() + 120
    while worker.ready is None:
        assert time.monotonic() < deadline and worker.poll() == [], worker.log_file.read_text(encoding="utf-8")
        time.sleep(0.02)
    # imported before there was a job: the pipeline's modules and those its run imports (torch only
    # for the pipelines that need it: not for DSC's classic methods)
    assert {"SimpleITK", "BBBAnomalyLib.dsc.pipeline", "BBBAnomalyLib.app.handover",
            "BBBAnomalyLib.perfusion.arterial_auto"} <= set(worker.ready["modules"])
    assert "torch" not in worker.ready["modules"]
    assert worker.idle and worker.worker_pid == worker.ready["pid"] == worker.pid and worker.prestarted
    job = _array_job(dsc_phantom, tmp_path / "warm")
    worker.submit(job)
    assert not worker.idle
    with pytest.raises(RuntimeError):
        worker.submit(job)  # one job per worker
    events = worker.wait(timeout=300)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-2:] == ["maps", "done"], events[-1]
    assert (tmp_path / "warm" / "output" / "cbv.npy").is_file()
    worker._proc.wait(timeout=30)
    assert worker._proc.returncode == 0


def test_a_warm_worker_that_is_not_needed_ends_and_one_that_ended_is_not_used(tmp_path):
    from BBBAnomalyLib.app.runners import WorkerGone
    from BBBAnomalyLib.app.runners import WorkerProcess as Runner
    from BBBAnomalyLib.core.processes import pid_alive as _pid_alive

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # the panel (or Slicer) has gone: stdin ends, the worker exits without a run
    gone = Runner.warm(tmp_path / "a")
    gone._proc.stdin.close()
    assert gone._proc.wait(timeout=60) == 0
    job = Job("dsc", {"series": str(tmp_path / "a")}, {}, str(tmp_path / "a" / "output"))
    with pytest.raises(WorkerGone):
        gone.submit(job)
    assert gone.job is None and not (tmp_path / "a" / "job.json").exists()
    # discarded while idle (the module closed): its process ends
    idle = Runner.warm(tmp_path / "b")
    deadline = time.monotonic() + 60
    while idle.worker_pid is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    idle.discard()
    assert [e["event"] for e in idle.wait(timeout=30)] == ["cancelled"]
    assert not _pid_alive(idle.worker_pid)


def test_cancel_ends_a_warm_worker_under_the_launcher(dsc_phantom, tmp_path):
    """Warm or not, the job runs in python-real, the launcher's child, which CTK's launcher
    signals nothing to: Cancel ends both (the process group), and nothing after it is passed on."""
    from slicer_standins import make_launcher

    from BBBAnomalyLib.app.runners import WorkerProcess as Runner
    from BBBAnomalyLib.core.processes import pid_alive as _pid_alive

    launcher = make_launcher(tmp_path / "bin")
    job = _slow_dsc_job(dsc_phantom, tmp_path)
    worker = Runner.warm(tmp_path / "job", python=str(launcher), preload="dsc")
    deadline = time.monotonic() + 120
    while worker.ready is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert worker.worker_pid != worker.pid  # python-real under the launcher said it is ready
    worker.submit(job)
    seen = []
    while not any(e["event"] == "progress" and e["fraction"] >= 0.1 for e in seen):
        seen += worker.poll()
        assert time.monotonic() < deadline and not worker.finished, seen
        time.sleep(0.02)
    worker.cancel()
    assert [e["event"] for e in worker.wait(timeout=30)] == ["cancelled"]
    assert not _pid_alive(worker.worker_pid) and not _pid_alive(worker.pid)
    assert not (tmp_path / "job" / "output").exists()


@pytest.mark.parametrize("pipeline", ["dsc", "dce"])
def test_a_job_run_frees_its_own_copy_of_the_series(pipeline, dsc_files, tmp_path, monkeypatch):
    """The series a job reads is the run's own, so DSC and DCE jobs ask the run to free it once the
    curves are gathered (consume_input, issue 17's memory bound); the maps are still written whole."""
    from BBBAnomalyLib.app.jobs import run_job

    spec = get_pipeline(pipeline)
    module_name, function = spec.runner.split(":")
    module = __import__(module_name, fromlist=[function])
    original, seen = getattr(module, function), {}

    def recording(series, *args, **kwargs):
        seen.update(kwargs, series=series)
        return original(series, *args, **kwargs)

    monkeypatch.setattr(module, function, recording)
    if pipeline == "dsc":
        inputs = {"series": str(dsc_files / "signal.nii.gz"), "aif_mask": str(dsc_files / "mask_aif.nii.gz")}
    else:  # a DCE series (a DSC series is refused by DCE as a bolus that drops: perfusion/series_kind.py)
        from BBBAnomalyLib.phantoms.dce import make_dce_phantom

        case = make_dce_phantom(snr=40, slices=4, seed=0).write(tmp_path / "dce_case")
        inputs = {"series": str(case / "signal.nii.gz")}
    done = run_job(Job(pipeline, inputs, {}, str(tmp_path / "out"), save_curves=False))
    assert seen["consume_input"] is True
    assert seen["series"].data is None  # freed by the run, not merely asked to be
    assert done["event"] == "done" and set(done["maps"]) <= {p.name.split(".")[0] for p in (tmp_path / "out").iterdir()}

"""A cancel (Ctrl-C, SIGTERM: the panel's Cancel) that lands while a result folder is being put in place.

Round 15's audit: if it came after the new folder was renamed into place, the run said "cancelled" (the CLI:
"nothing was written") although the new results had replaced the previous ones, which stayed in a hidden
``.<out>.old-<pid>`` folder. Now the renames hold the signal: arriving there it puts the previous folder back and
nothing changes; arriving while the previous results are removed it cancels after the new ones are complete, and
the CLI, the worker and the runner say where."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from BBBAnomalyLib.core import outputs
from BBBAnomalyLib.core.errors import CancelledError

from bad_input_helpers import dsc_signal, save_nifti, tree_hashes


def _publish(out: Path, text: str, overwrite: bool = False) -> None:
    with outputs.atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "a.txt").write_text(text)


def _signal_on_rename_into(monkeypatch, out: Path, sig: int) -> None:
    """The signal arrives just after the new folder was renamed to ``out`` (the worst moment before this fix)."""
    real = Path.rename

    def rename(self, target):
        result = real(self, target)
        if Path(target) == out and ".partial-" in self.name:
            os.kill(os.getpid(), sig)
        return result

    monkeypatch.setattr(Path, "rename", rename)


def _signal_while_removing_the_previous(monkeypatch, sig: int) -> None:
    real = shutil.rmtree

    def rmtree(path, *a, **kw):
        if ".old-" in Path(path).name:
            os.kill(os.getpid(), sig)
        return real(path, *a, **kw)

    monkeypatch.setattr(outputs.shutil, "rmtree", rmtree)


def _hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_cancel_during_the_renames_puts_the_previous_results_back(tmp_path, monkeypatch, sig):
    out = tmp_path / "out"
    _publish(out, "old")
    before, published = tree_hashes(out), len(outputs.PUBLISHED)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    _signal_on_rename_into(monkeypatch, out, sig)
    with pytest.raises(CancelledError, match="nothing was written"):
        _publish(out, "new", overwrite=True)
    assert tree_hashes(out) == before and (out / "a.txt").read_text() == "old"
    assert _hidden_siblings(out) == []  # no .out.old-<pid>, no partial folder, no lock
    assert len(outputs.PUBLISHED) == published
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_a_cancel_during_a_first_publication_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "fresh"
    _signal_on_rename_into(monkeypatch, out, signal.SIGTERM)
    with pytest.raises(CancelledError, match="nothing was written"):
        _publish(out, "new")
    assert not out.exists() and _hidden_siblings(out) == []


def test_a_cancel_while_the_previous_results_go_comes_after_the_new_ones_are_complete(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _publish(out, "old")
    _signal_while_removing_the_previous(monkeypatch, signal.SIGTERM)
    with pytest.raises(CancelledError, match="after the results were complete"):
        _publish(out, "new", overwrite=True)
    assert (out / "a.txt").read_text() == "new" and outputs.changed_entries(out) == []
    assert _hidden_siblings(out) == []  # the previous results are gone, not left hidden
    assert outputs.PUBLISHED[-1] == out


def test_without_a_cancel_nothing_is_held_back(tmp_path):
    out = tmp_path / "out"
    _publish(out, "old")
    _publish(out, "new", overwrite=True)
    assert (out / "a.txt").read_text() == "new" and _hidden_siblings(out) == []
    assert outputs.PUBLISHED[-1] == out


def _series(tmp_path: Path) -> Path:
    data, te = dsc_signal()
    import json

    return save_nifti(tmp_path / "dsc.nii.gz", data, dt=1.5, sidecar=json.dumps({"EchoTime": te}))


def test_the_cli_says_nothing_was_written_only_when_nothing_was(tmp_path, monkeypatch, capsys):
    from BBBAnomalyLib.cli import main

    series, out = _series(tmp_path), tmp_path / "run"
    assert main(["dsc", str(series), "--out", str(out), "--quiet"]) == 0
    before = tree_hashes(out)
    with monkeypatch.context() as m:
        _signal_on_rename_into(m, out, signal.SIGINT)
        capsys.readouterr()
        assert main(["dsc", str(series), "--out", str(out), "--overwrite", "--quiet"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["bbbanomaly dsc: cancelled; nothing was written"]
    assert tree_hashes(out) == before and _hidden_siblings(out) == []
    with monkeypatch.context() as m:
        _signal_while_removing_the_previous(m, signal.SIGTERM)
        assert main(["dsc", str(series), "--out", str(out), "--overwrite", "--quiet"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bbbanomaly dsc: cancelled after these results were complete: {out}"]
    assert outputs.changed_entries(out) == [] and _hidden_siblings(out) == []


def test_the_runner_names_a_folder_the_worker_completed_after_cancel(tmp_path):
    """Cancel stays final (nothing else reaches the panel), but the final event names what is already complete."""
    from BBBAnomalyLib.app.runners import WorkerProcess

    worker = WorkerProcess(None, tmp_path / "job.json")
    worker._cancelled, events = True, []
    for event in ({"event": "progress", "fraction": 0.9, "message": "x"},
                  {"event": "cancelled", "published": [str(tmp_path / "out")]},
                  {"event": "_exit", "code": 130}):
        worker._take(event, events)
    assert events == [{"event": "cancelled", "published": [str(tmp_path / "out")]}]
    plain = WorkerProcess(None, tmp_path / "job2.json")
    plain._cancelled, events = True, []
    for event in ({"event": "cancelled"}, {"event": "_exit", "code": 130}):
        plain._take(event, events)
    assert events == [{"event": "cancelled"}]


def test_a_progress_line_is_written_whole():
    """The console's progress line goes out in one write with its newline: with print()'s two writes, a Ctrl-C or
    SIGTERM handled between them glued "cancelled; nothing was written" to the progress line, where a reader (and
    test_interruption.py, under OpenBLAS's SandyBridge kernel's timing) no longer saw it."""
    from BBBAnomalyLib.core.progress import ConsolePrinter

    class Recording:
        def __init__(self):
            self.writes = []

        def write(self, text):
            self.writes.append(text)

        def flush(self):
            pass

    stream = Recording()
    printer = ConsolePrinter(stream=stream)
    printer(0.1, "reading")
    printer(0.5, "deconvolving")
    assert len(stream.writes) == 2
    assert all(w.startswith("[") and w.endswith(")\n") and w.count("\n") == 1 for w in stream.writes)


def test_a_handler_installed_outside_python_is_left_alone(tmp_path, monkeypatch):
    """In an application embedding Python (Slicer) a signal's handler may be a C one: getsignal() says None and
    signal.signal() could not put it back. Such a signal is not held; publishing works as before."""
    real_getsignal, real_signal = signal.getsignal, signal.signal
    touched = []

    def getsignal(sig):
        return None if sig == signal.SIGINT else real_getsignal(sig)

    def set_signal(sig, handler):
        touched.append(sig)
        return real_signal(sig, handler)

    monkeypatch.setattr(signal, "getsignal", getsignal)
    monkeypatch.setattr(signal, "signal", set_signal)
    out = tmp_path / "out"
    _publish(out, "old")
    _publish(out, "new", overwrite=True)
    assert (out / "a.txt").read_text() == "new" and _hidden_siblings(out) == []
    assert signal.SIGINT not in touched and signal.SIGTERM in touched

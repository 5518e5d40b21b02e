"""The user's files are never deleted or overwritten; outputs are claimed before the work.

Issue 12 items 1, 7 and 8: ``--overwrite`` once replaced a whole folder holding the input and a
PDF; the output check ran only after the computation; two concurrent runs both "succeeded".
Each test here fails on the old ``outputs.atomic_output_dir``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from BBBAnomalyLib import InputError
from BBBAnomalyLib.core import outputs
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.outputs import MANIFEST, atomic_output_dir, claim_output_dir

from bad_input_helpers import error_lines, tree_hashes, write_dsc_case

REPO = Path(__file__).resolve().parents[1]


def dsc_argv(files: dict, out: Path, *extra: str) -> list[str]:
    return ["dsc", str(files["series"]), "--aif-mask", str(files["aif"]), "--mask", str(files["mask"]),
            "--method", "ssvd", "--out", str(out), "--quiet", *extra]


@pytest.fixture
def case(tmp_path):
    return write_dsc_case(tmp_path / "case")


def test_overwrite_refuses_a_folder_holding_the_input(tmp_path, capsys):
    """The issue's reproduction: input copied into d/, then --out d --overwrite."""
    d = tmp_path / "d"
    files = write_dsc_case(d)
    (d / "report.pdf").write_bytes(b"%PDF-1.4 the patient's report")
    before = tree_hashes(d)
    assert main(dsc_argv(files, d, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "holds the input" in err and "Traceback" not in err
    assert tree_hashes(d) == before


def test_overwrite_refuses_folders_with_foreign_files_and_old_outputs_without_a_manifest(case, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(dsc_argv(case, out)) == 0
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["program"] == "bbbanomaly" and "cbf.nii.gz" in manifest["files"]
    (out / "notes.txt").write_text("the user's notes", encoding="utf-8")  # the user adds a file
    assert main(dsc_argv(case, out, "--overwrite")) == 2
    assert "did not write (notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text(encoding="utf-8") == "the user's notes"
    (out / "notes.txt").unlink()
    (out / MANIFEST).unlink()  # a folder from a version without manifests, or not ours at all
    assert main(dsc_argv(case, out, "--overwrite")) == 2
    assert (out / "cbf.nii.gz").exists()


def test_overwrite_replaces_our_own_folder_whole(case, tmp_path):
    out = tmp_path / "out"
    assert main(dsc_argv(case, out, "--nawm-mask", str(case["nawm"]))) == 0
    assert (out / "rcbv.nii.gz").exists()
    assert main(dsc_argv(case, out, "--overwrite")) == 0  # no NAWM this time: no rcbv
    assert not (out / "rcbv.nii.gz").exists(), "a stale map of the previous run survived"
    assert outputs.foreign_entries(out) == []


def test_the_output_is_checked_before_any_computation(case, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_text("x", encoding="utf-8")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the pipeline ran although its output folder was refused")

    monkeypatch.setattr("BBBAnomalyLib.dsc.pipeline.run_dsc", must_not_run)
    monkeypatch.setattr("BBBAnomalyLib.io.read_volume", must_not_run)
    assert main(dsc_argv(case, out)) == 2
    assert "already exists" in capsys.readouterr().err


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _fake_owner(path: Path, pid: int) -> None:
    import socket

    path.write_text(json.dumps({"program": "bbbanomaly", "pid": pid, "host": socket.gethostname()}), encoding="utf-8")


def test_a_folder_being_written_by_another_run_is_refused_until_that_run_is_gone(case, tmp_path, capsys):
    out = tmp_path / "out"
    other = _sleeper()
    try:
        _fake_owner(tmp_path / ".out.bbbanomaly-lock", other.pid)
        assert main(dsc_argv(case, out)) == 2
        assert "another bbbanomaly run is writing" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
    assert main(dsc_argv(case, out)) == 0  # its owner died: the stale lock is taken over
    assert not (tmp_path / ".out.bbbanomaly-lock").exists()


def test_stale_partials_of_dead_runs_are_cleaned_and_nothing_else(case, tmp_path):
    out = tmp_path / "out"
    dead = _sleeper()
    dead.kill()
    dead.wait()
    alive = _sleeper()
    try:
        stale = tmp_path / ".out.partial-dead"
        stale.mkdir()
        _fake_owner(stale / ".bbbanomaly-partial", dead.pid)
        (stale / "cbf.nii.gz").write_bytes(b"half")
        running = tmp_path / ".out.partial-alive"
        running.mkdir()
        _fake_owner(running / ".bbbanomaly-partial", alive.pid)
        foreign = tmp_path / ".out.partial-notours"
        foreign.mkdir()
        (foreign / "data").write_text("someone else's", encoding="utf-8")
        assert main(dsc_argv(case, out)) == 0
        assert not stale.exists()
        assert running.exists() and foreign.exists()
    finally:
        alive.kill()
        alive.wait()


def test_two_concurrent_runs_without_overwrite_never_both_succeed(case, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "BBBAnomalyLib", *dsc_argv(case, out)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "Traceback" not in refused and ("another bbbanomaly run" in refused or "already exists" in refused)
    assert outputs.foreign_entries(out) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_published_folders_follow_the_umask(case, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert main(dsc_argv(case, out)) == 0
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o755  # was 0700 (tempfile.mkdtemp's)


def test_a_failed_write_is_one_line_and_leaves_nothing(case, tmp_path, monkeypatch, capsys):
    """A full disk (ENOSPC) while writing the maps: exit 2, one line, no partial folder."""
    import errno

    from BBBAnomalyLib import io as bio

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bio, "write_volume", full_disk)
    out = tmp_path / "out"
    assert main(dsc_argv(case, out)) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "No space left on device" in err and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_an_unwritable_destination_is_refused_before_the_work(case, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder", encoding="utf-8")
    assert main(dsc_argv(case, blocker / "out")) == 2  # its parent is a file: mkdir fails
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err
    assert blocker.read_text(encoding="utf-8") == "a file, not a folder"


def test_claims_in_the_library(tmp_path):
    out = tmp_path / "res"
    with claim_output_dir(out) as claim:
        assert claim.lock.exists()
        claim.add_writer(lambda folder: (folder / "extra.txt").write_text("x", encoding="utf-8"))
        with atomic_output_dir(out) as tmp:
            (tmp / "map.txt").write_text("m", encoding="utf-8")
    assert not claim.lock.exists()
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "extra.txt", "map.txt"]
    with pytest.raises(InputError, match="already exists"):
        claim_output_dir(out)
    with pytest.raises(InputError, match="holds the input"):
        claim_output_dir(tmp_path, overwrite=True, inputs=[str(out / "map.txt")])
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(InputError, match="symbolic link"):
        claim_output_dir(link, overwrite=True)
    # An error inside the write removes the partial folder and keeps the old result.
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "half.txt").write_text("h", encoding="utf-8")
            raise RuntimeError("boom")
    assert (out / "map.txt").exists() and not (out / "half.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".res.")]


def test_a_folder_changed_during_the_run_is_not_replaced(tmp_path):
    out = tmp_path / "res"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("a", encoding="utf-8")
    with pytest.raises(InputError, match="did not write"):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("b", encoding="utf-8")
            (out / "added-meanwhile.txt").write_text("user", encoding="utf-8")  # while we computed
    assert (out / "a.txt").read_text(encoding="utf-8") == "a"
    assert (out / "added-meanwhile.txt").exists()
    time.sleep(0)  # nothing pending

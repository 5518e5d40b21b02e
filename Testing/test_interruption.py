"""Interrupted runs leave the complete output or nothing (issue 12 item 7).

A real ``python -m BBBAnomalyLib dsc`` is interrupted with SIGINT (Ctrl-C), SIGTERM (a scheduler
or the panel's Cancel) and SIGKILL at several points of its run. After SIGINT/SIGTERM it exits 130
with one line and nothing written; after SIGKILL a hidden partial folder may remain, which the
next run on the same destination removes (its owner is dead). In every case the output folder is
either absent or complete (its manifest lists exactly what is there), and the inputs are unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from BBBAnomalyLib.core.outputs import MANIFEST, foreign_entries

from bad_input_helpers import error_lines, tree_hashes

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 12-slice DSC phantom: a run takes about a second of work after start-up."""
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    folder = tmp_path_factory.mktemp("interrupt_case")
    make_dsc_phantom(snr=100, slices=12, seed=1).write(folder)
    return folder


def start(case: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "BBBAnomalyLib", "dsc", str(case / "signal.nii.gz"), "--aif-mask",
            str(case / "mask_aif.nii.gz"), "--method", "osvd", "--out", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                            # UTF-8 both ends, whatever locale an earlier test left behind ("ΔR2*" in progress)
                            env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
                                     PYTHONIOENCODING="utf-8"))


def wait_for(proc: subprocess.Popen, message: str) -> list[str]:
    """Read the progress lines (stderr) until one contains ``message``."""
    seen = []
    while True:
        line = proc.stderr.readline()
        if not line:
            return seen
        seen.append(line)
        if message in line:
            return seen


def assert_complete_or_absent(out: Path) -> str:
    if not out.exists():
        return "absent"
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert foreign_entries(out) == []
    assert {"cbf.nii.gz", "report.json", "aif.csv"} <= set(manifest["files"])
    for name in manifest["files"]:
        assert (out / name.rstrip("/")).exists(), f"{name} listed but missing"
    return "complete"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", ["checking the input", "leakage correction", "deconvolving", "done"])
def test_sigint_and_sigterm_leave_nothing_or_everything(case, tmp_path, sig, point):
    before = tree_hashes(case)
    out = tmp_path / "out"
    proc = start(case, out)
    seen = wait_for(proc, point)
    assert seen and point in seen[-1], seen
    proc.send_signal(sig)
    rest_out, rest_err = proc.communicate(timeout=120)
    state = assert_complete_or_absent(out)
    if proc.returncode == 130:
        assert state == "absent"
        lines = error_lines(rest_err)
        assert lines == [lines[0]] and "cancelled; nothing was written" in lines[0], rest_err
        assert "Traceback" not in rest_err
    else:  # the signal came after the folder was published
        assert proc.returncode == 0 and state == "complete", (proc.returncode, rest_err)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "a partial folder was left"
    assert tree_hashes(case) == before


@pytest.mark.parametrize("delay", [0.5, 1.5, 2.5])
def test_sigkill_leaves_nothing_or_everything_and_the_next_run_cleans_up(case, tmp_path, delay):
    out = tmp_path / "out"
    proc = start(case, out)
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=60)
    state = assert_complete_or_absent(out)
    if state == "absent":
        rerun = start(case, out)
        rerun.communicate(timeout=300)
        assert rerun.returncode == 0 and assert_complete_or_absent(out) == "complete"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], sorted(os.listdir(tmp_path))


def test_a_kill_in_the_middle_of_the_write_is_cleaned_by_the_next_claim(tmp_path):
    """Deterministic: the process dies (SIGKILL) after writing half of its files."""
    out = tmp_path / "res"
    code = ("import os, signal\n"
            "from BBBAnomalyLib.core.outputs import atomic_output_dir\n"
            f"with atomic_output_dir({str(out)!r}) as tmp:\n"
            "    (tmp / 'cbf.nii.gz').write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".res.")]
    assert leftovers  # the partial folder and the lock of the dead run
    from BBBAnomalyLib.core.outputs import atomic_output_dir

    with atomic_output_dir(out) as tmp:
        (tmp / "cbf.nii.gz").write_bytes(b"whole")
    assert (out / "cbf.nii.gz").read_bytes() == b"whole"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".res.")]

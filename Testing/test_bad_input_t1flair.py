"""`bbbanomaly t1flair` on bad input: exit 2, one line naming the problem and the fix, no traceback,
nothing written, inputs untouched (issue 12). Every case is refused before a model is loaded."""

from __future__ import annotations

import numpy as np
import pytest
from bad_input_helpers import (assert_refused, run_subprocess, save_nifti, save_nifti_raw_affine, structural_pair,
                               write_structural_case)

AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])


@pytest.fixture
def case(tmp_path):
    return write_structural_case(tmp_path / "in")


def _file(case, name, data, affine=AFFINE, raw=False):
    path = case["t1"].parent / name
    return str(save_nifti_raw_affine(path, data, affine) if raw else save_nifti(path, data, affine))


T1, FLAIR = structural_pair()
CASES = [
    ("complex-t1", lambda c: ["--t1", _file(c, "cx.nii.gz", T1.astype(np.complex64)), "--flair", c["flair"]],
     ("complex", "magnitude")),
    ("nan-affine-flair", lambda c: ["--t1", c["t1"], "--flair", _file(c, "f.nii.gz", FLAIR, np.full((4, 4), np.nan), True)],
     ("NaN", "affine", "f.nii.gz")),
    ("zero-scale-t1", lambda c: ["--t1", _file(c, "z.nii.gz", T1, np.diag([1.0, 1.0, 0.0, 1.0]), True), "--flair", c["flair"]],
     ("zero voxel size", "z.nii.gz")),
    ("4d-t1", lambda c: ["--t1", _file(c, "t4.nii.gz", np.stack([T1, T1], -1)), "--flair", c["flair"]], ("4D", "3D")),
    ("brain-mask-on-another-grid", lambda c: ["--t1", c["t1"], "--flair", c["flair"], "--mask",
                                              _file(c, "m.nii.gz", np.ones((12, 12, 8), np.uint8))],
     ("not on the input's voxel grid", "12x12x8 vs 24x24x8")),
    ("threads-negative", lambda c: ["--t1", c["t1"], "--flair", c["flair"], "--threads", "-2"], ("--threads",)),
    ("steps-zero", lambda c: ["--t1", c["t1"], "--flair", c["flair"], "--steps", "0"], ("--steps",)),
    ("size-not-multiple-of-8", lambda c: ["--t1", c["t1"], "--flair", c["flair"], "--size", "30"], ("--size", "8")),
]


@pytest.mark.parametrize("extra, keywords", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_t1flair_refuses_bad_input(case, tmp_path, capsys, extra, keywords):
    out = tmp_path / "out"
    assert_refused(["t1flair", *[str(a) for a in extra(case)], "--out", str(out)], capsys, case["t1"].parent, out,
                   keywords)


def test_the_refusals_need_no_traceback_in_a_real_process(case, tmp_path):
    """What a user's shell shows (docs/reliability.md §3): one line on stderr, exit 2, nothing written."""
    for name in ("4d-t1", "brain-mask-on-another-grid"):
        extra = dict((c[0], c[1]) for c in CASES)[name](case)
        done = run_subprocess(["t1flair", *[str(a) for a in extra], "--out", str(tmp_path / "out"), "--quiet"], tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "out").exists()

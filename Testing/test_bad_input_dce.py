"""`bbbanomaly dce` on bad input: exit 2, one line naming the problem and the fix, no traceback,
nothing written, inputs untouched (issue 12); and the per-case RLS that skips only its own map when
there is too little brain to train on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bad_input_helpers import (SHAPE, assert_refused, dce_signal, run_subprocess, save_nifti,
                               save_nifti_raw_affine, write_dce_case)

from BBBAnomalyLib.cli import main


@pytest.fixture
def case(tmp_path):
    return write_dce_case(tmp_path / "in")


def _variant(case, name, data, **kw):
    return str(save_nifti(case["series"].parent / name, data, **kw))


CASES = [
    ("max-delay-nan", ["--max-delay", "nan"], ("--max-delay", "nan", "seconds")),
    ("max-delay-inf", ["--max-delay", "inf"], ("--max-delay", "inf")),
    ("max-delay-1e6", ["--max-delay", "1e6"], ("--max-delay", "at most 60")),
    ("max-delay-negative", ["--max-delay", "-1"], ("--max-delay", "[0, 60]")),
    ("threads-negative", ["--threads", "-2"], ("--threads", "-2")),
    ("threads-zero", ["--threads", "0"], ("--threads",)),
    ("relaxivity-nan", ["--relaxivity", "nan"], ("--relaxivity", "4.5")),
    ("hematocrit-above-1", ["--hematocrit", "1.5"], ("--hematocrit", "0.42")),
    ("t10-nan", ["--t10", "nan"], ("--t10", "seconds")),
    ("t10-in-ms", ["--t10", "1400"], ("--t10", "ms")),
    ("flip-angle-100", ["--flip-angle", "100"], ("--flip-angle", "degrees")),
    ("tr-nan", ["--tr", "nan"], ("--tr", "seconds")),
    ("rls-epochs-zero", ["--rls-epochs", "0"], ("--rls-epochs",)),
    ("baseline-frames-beyond", ["--baseline-frames", "1000"], ("--baseline-frames 1000", "30 frames", "at most 26")),
    ("frame-interval-1e9", ["--frame-interval", "1e9"], ("--frame-interval", "1e+09 s apart")),
    ("frame-interval-ms", ["--frame-interval", "5000"], ("5000 s apart", "milliseconds", "--frame-interval 5")),
    ("negative-signal", lambda c: [_variant(c, "neg.nii.gz", -dce_signal(), dt=5.0)], ("positive signal", "--mask")),
    ("negative-signal-with-mask", lambda c: [_variant(c, "neg.nii.gz", -dce_signal(), dt=5.0), "--mask", c["mask"]],
     ("negative", "pre-contrast signal", "--mask")),
    ("complex-series", lambda c: [_variant(c, "cx.nii.gz", dce_signal().astype(np.complex64), dt=5.0)],
     ("complex", "magnitude")),
    ("zero-scale-affine", lambda c: [str(save_nifti_raw_affine(c["series"].parent / "flat.nii.gz", dce_signal(),
                                                               np.diag([0.0, 2.0, 3.0, 1.0]), dt=5.0))],
     ("zero voxel size", "fix the header")),
    ("singular-affine", lambda c: [str(save_nifti_raw_affine(c["series"].parent / "sing.nii.gz", dce_signal(),
                                                             np.array([[2, 2, 0, 0], [0, 0, 0, 0], [0, 0, 3, 0],
                                                                       [0, 0, 0, 1.0]]), dt=5.0))],
     ("singular", "fix the header")),
    # a map on another grid is read at the series' voxels (session 21); one that leaves brain voxels uncovered is not
    ("t10-map-not-covering-the-brain", lambda c: [c["series"], "--t10",
                                                  _variant(c, "t10.nii.gz", np.ones((8, 8, 3), np.float32)),
                                                  "--flip-angle", "15", "--tr", "0.005"],
     ("analysed voxels lie outside the T10 map's field of view", "--mask")),
    ("aif-mask-on-another-grid", lambda c: [c["series"], "--aif-mask", _variant(c, "aif2.nii.gz", np.ones((10, 10, 4), np.uint8))],
     ("not on the input's voxel grid", "10x10x4 vs 10x10x3")),
    ("nan-series", lambda c: [_variant(c, "nan.nii.gz", np.full(SHAPE + (30,), np.nan, np.float32), dt=5.0)],
     ("no voxels with signal", "NaN")),
]


@pytest.mark.parametrize("extra, keywords", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_dce_refuses_bad_input(case, tmp_path, capsys, extra, keywords):
    args = [str(a) for a in (extra(case) if callable(extra) else [case["series"], *extra])]
    out = tmp_path / "out"
    assert_refused(["dce", *args, "--rls", "none", "--out", str(out)], capsys, case["series"].parent, out, keywords)


def test_no_traceback_reaches_a_real_process(case, tmp_path):
    for argv in (["--max-delay", "inf"], ["--threads", "-2"]):
        done = run_subprocess(["dce", str(case["series"]), *argv, "--out", str(tmp_path / "out"), "--quiet"], tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_per_case_rls_with_few_voxels_still_gives_the_classic_maps(tmp_path, capsys):
    """A user who wanted Ktrans gets it: the learned map is skipped and the report says why."""
    case = write_dce_case(tmp_path / "in")
    small = np.zeros(SHAPE, np.uint8)
    small[2:6, 2:6, 1] = 1  # 16 voxels: too few to train the per-case autoencoder on
    mask = save_nifti(tmp_path / "in" / "small.nii.gz", small)
    out = tmp_path / "out"
    code = main(["dce", str(case["series"]), "--mask", str(mask), "--rls", "case", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (out / "ktrans.nii.gz").exists() and not (out / "rls.nii.gz").exists()
    report = json.loads((out / "report.json").read_text())
    assert "only 16 normal-appearing brain voxels" in report["rls"]["skipped"]
    assert any("RLS map was skipped" in w and "classic maps were made" in w for w in report["warnings"])
    assert "warning: the RLS map was skipped" in capsys.readouterr().out


def test_the_delay_grid_is_bounded_in_the_library_too():
    """`import BBBAnomalyLib` gets the same refusal as the CLI, before a grid is built."""
    from BBBAnomalyLib.dce import DCEParameters
    from BBBAnomalyLib.core.errors import InputError

    for bad in (float("nan"), float("inf"), 1e6, "six"):
        with pytest.raises(InputError, match="--max-delay"):
            DCEParameters(max_delay=bad)
    assert DCEParameters(max_delay=60).max_delay == 60.0

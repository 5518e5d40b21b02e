"""`bbbanomaly dmri` on bad input: exit 2, one line naming the problem and the fix, no traceback,
nothing written, inputs untouched (issue 12)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from bad_input_helpers import assert_refused, dwi_signal, run_subprocess, save_nifti, save_nifti_raw_affine, write_dwi_case


@pytest.fixture
def case(tmp_path):
    return write_dwi_case(tmp_path / "in")


def _variant(case, name, data, affine=None, raw_affine=None):
    """A DWI variant with the case's bval/bvec beside it (FSL naming), in the case's folder."""
    folder = case["series"].parent
    path = folder / f"{name}.nii.gz"
    if raw_affine is not None:
        save_nifti_raw_affine(path, data, raw_affine)
    else:
        save_nifti(path, data, *(() if affine is None else (affine,)))
    shutil.copy(case["bval"], folder / f"{name}.bval")
    shutil.copy(case["bvec"], folder / f"{name}.bvec")
    return str(path)


def _constant():
    data = dwi_signal()[0]
    return np.repeat(data[..., :1], data.shape[3], axis=3)  # every volume the b0


def _unweighted():
    data = dwi_signal(adc=1e-6)[0]  # b = 1000 in the table, but the signal does not attenuate
    return data


CASES = [
    ("constant-dwi", lambda c: [_variant(c, "const", _constant())], ("equals the b0", "no diffusion contrast")),
    ("no-diffusion-weighting", lambda c: [_variant(c, "flat", _unweighted())], ("b0 signal", "b-values", "DWI")),
    ("singular-affine", lambda c: [_variant(c, "sing", dwi_signal()[0], raw_affine=np.diag([2.0, 0.0, 2.0, 1.0]))],
     ("zero voxel size", "fix the header")),
    ("nan-affine", lambda c: [_variant(c, "nan", dwi_signal()[0], raw_affine=np.full((4, 4), np.nan))],
     ("NaN", "affine")),
    ("complex-dwi", lambda c: [_variant(c, "cx", dwi_signal()[0].astype(np.complex64))], ("complex", "magnitude")),
    ("3d-input", lambda c: [_variant(c, "b0", dwi_signal()[0][..., 0])], ("3D", "4D")),
    ("bval-count", lambda c: [c["series"], "--bval", _short_bval(c), "--bvec", c["bvec"]], ("b-values", "31 volumes")),
    ("mask-on-another-grid", lambda c: [c["series"], "--mask", _other_grid_mask(c)],
     ("not on the input's voxel grid", "shape 6x6x6 vs 12x12x8")),
    ("threshold-value-nan", lambda c: [c["series"], "--threshold-value", "nan"], ("--threshold-value",)),
]


def _short_bval(case):
    path = case["series"].parent / "short.bval"
    path.write_text(" ".join(["0"] + ["1000"] * 20) + "\n")
    return str(path)


def _other_grid_mask(case):
    return str(save_nifti(case["series"].parent / "grid.nii.gz", np.ones((6, 6, 6), np.uint8)))


@pytest.mark.parametrize("extra, keywords", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_dmri_refuses_bad_input(case, tmp_path, capsys, extra, keywords):
    args = [str(a) for a in extra(case)]
    out = tmp_path / "out"
    line = assert_refused(["dmri", *args, "--out", str(out)], capsys, case["series"].parent, out, keywords)
    if "affine" in keywords or "zero voxel size" in keywords:
        assert "bvec" not in line  # the geometry is at fault, not the gradient file


def test_constant_dwi_refusal_in_a_real_process(case, tmp_path):
    done = run_subprocess(["dmri", _variant(case, "const", _constant()), "--out", str(tmp_path / "out"), "--quiet"],
                          tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "no diffusion contrast" in done.stderr

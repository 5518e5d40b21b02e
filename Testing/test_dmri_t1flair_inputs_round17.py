"""Round 17's user audit of `bbbanomaly dmri` and `bbbanomaly t1flair` inputs: the dmri mistakes that gave a misleading
line or a silent hole in the map (docs/reliability.md §3). The t1flair mistakes tried (T1/FLAIR swapped, a T1c as T1,
no skull stripping, 5 mm slices, a FLAIR on another grid, 0-1 / 0-4095 / int16 scales, 4D) were already refused,
warned or handled right, so none is here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bad_input_helpers import assert_refused, dwi_signal, save_nifti, write_dwi_case

from BBBAnomalyLib.cli import main


@pytest.fixture
def case(tmp_path):
    return write_dwi_case(tmp_path / "in")


def _run(argv, capsys):
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured


def test_bvals_in_ms_per_um2_are_named_as_units(case, tmp_path, capsys):
    # b = 1.0 for 1000 s/mm²: every volume fell under the b0 threshold and the line said "this acquisition has b = 0"
    folder = case["series"].parent
    bval = folder / "ms.bval"
    bval.write_text(" ".join(f"{b / 1000:g}" for b in np.loadtxt(case["bval"])) + "\n")
    line = assert_refused(["dmri", str(case["series"]), "--bval", str(bval), "--bvec", str(case["bvec"]),
                           "--out", str(tmp_path / "out")], capsys, folder, tmp_path / "out",
                          ("s/mm²", "multiply", "1000"))
    assert "has b = 0" not in line


def test_nan_b0_voxels_left_out_of_the_automatic_mask_are_warned(case, tmp_path, capsys):
    # NaN voxels (all volumes) inside the head: the automatic mask dropped them, their map was 0, no word of it
    data = dwi_signal()[0]
    data[4:7, 4:7, 3:5, :] = np.nan
    folder = case["series"].parent
    save_nifti(folder / "dwi.nii.gz", data)
    out = tmp_path / "out"
    _run(["dmri", str(case["series"]), "--out", str(out), "--quiet"], capsys)
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("NaN or infinite b0" in w and "18 voxels" in w for w in warnings), warnings


def test_non_unit_bvecs_are_warned(case, tmp_path, capsys):
    np.savetxt(case["bvec"], np.loadtxt(case["bvec"]) * 2.0, fmt="%.6f")
    out = tmp_path / "out"
    _run(["dmri", str(case["series"]), "--out", str(out), "--quiet"], capsys)
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("not unit vectors" in w and "2.00" in w for w in warnings), warnings


def test_negative_diffusion_weighted_samples_are_warned(case, tmp_path, capsys):
    # an intensity offset (or a signed image): the negative samples were clipped to S/S0 = 0 without a word
    data = dwi_signal()[0]
    data[..., 1:] -= 300.0
    save_nifti(case["series"], data)
    out = tmp_path / "out"
    _run(["dmri", str(case["series"]), "--out", str(out), "--quiet"], capsys)
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("are negative" in w and "magnitude" in w for w in warnings), warnings

"""Real diffusion data (dipy's crops, copied in Testing/Data/dmri): the 64-direction b = 1000 crop runs
through preprocessing and both bundled models; the 25-direction b = 2000 acquisition is refused."""

import json
from pathlib import Path

import numpy as np
import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.dmri import DMRIParameters, read_dwi, run_dmri
from BBBAnomalyLib.core.errors import InputError

DATA = Path(__file__).resolve().parent / "Data" / "dmri"


@pytest.fixture(scope="module")
def real64():
    return read_dwi(DATA / "small_64D.nii.gz")  # dipy's FSL bval/bvec beside it (b0 bvec is NaN)


@pytest.mark.parametrize("model", ["vae", "recdisc"])
def test_real_64_direction_crop_runs_with_sensible_ranges(real64, model):
    before = real64.data.copy()
    result = run_dmri(real64, DMRIParameters(model=model, device="cpu"))
    assert np.array_equal(real64.data, before)
    rep = result.report
    assert rep["input"]["unique_directions"] == 64 and rep["input"]["sh_order"] == 6
    assert 985 < rep["input"]["shell_b"] < 1005 and rep["input"]["b0_volumes"] == 1
    brain = result.brain_mask
    assert brain.sum() == 8 ** 3  # the whole 10³ crop (no background in it), eroded by one voxel
    assert any("no dark background" in w for w in rep["warnings"])
    anomaly = result.maps["anomaly"].data[brain]
    att = result.maps["mean_attenuation"].data[brain]
    assert np.isfinite(anomaly).all() and anomaly.min() >= 0
    assert anomaly.max() <= 1.0  # RMS residual of S/S0 in [0, 1], or a probability
    assert 0.0 < att.min() and att.max() <= 1.0 and 0.3 < np.median(att) < 0.6  # brain S/S0 at b = 1000
    for vol in result.maps.values():
        assert np.array_equal(vol.affine, real64.affine)
    curves = result.curves()
    assert np.isfinite(curves.measured).all() and np.isfinite(next(iter(curves.fitted.values()))).all()


def test_cli_on_the_real_crop(tmp_path, capsys):
    out = tmp_path / "real"
    rc = main(["dmri", str(DATA / "small_64D.nii.gz"), "--bval", str(DATA / "small_64D.bval"),
               "--bvec", str(DATA / "small_64D.bvec"), "--out", str(out), "--threshold", "otsu", "--quiet"])
    assert rc == 0
    assert {"anomaly.nii.gz", "anomaly_mask.nii.gz", "report.json"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["pipeline"] == "dmri" and report["threshold"]["method"] == "otsu"
    assert "written to" in capsys.readouterr().out


def test_b2000_25_direction_acquisition_is_refused_clearly(tmp_path, capsys):
    dwi = read_dwi(DATA / "small_25.nii.gz")
    assert dwi.n_frames == 26
    with pytest.raises(InputError, match=r"no shell near b = 1000.*b = 0, 2000"):
        run_dmri(dwi, DMRIParameters(device="cpu"))
    rc = main(["dmri", str(DATA / "small_25.nii.gz"), "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2 and not (tmp_path / "x").exists()
    assert "b ≈ 1000" in capsys.readouterr().err


def test_mismatched_gradient_table_is_refused(tmp_path, capsys):
    rc = main(["dmri", str(DATA / "small_64D.nii.gz"), "--bval", str(DATA / "small_25.bval"),
               "--bvec", str(DATA / "small_25.bvec"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "26 b-values but the DWI has 65 volumes" in capsys.readouterr().err

"""Bad numbers that used to pass or to fail late (audit, round 15): dual-echo DSC with equal or
swapped echo times (0/0 in the conversion: a leaked RuntimeWarning, then a misleading baseline
error), NaN/inf VFA flip angles (`t1map` exit 0 with every map 0), a 4D file as the B1 map (frame 0
of the VFA series taken as B1: T1 10x off, exit 0) and `dce --b1` without `--vfa` (silently
ignored). Each must end in exit 2 and one line on stderr, with no traceback and no warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from bad_input_helpers import (AFFINE, SHAPE, assert_refused, brain_mask, dsc_signal, run_subprocess, save_nifti,
                               write_dce_case, write_dsc_case)

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.errors import InputError

VFA_ANGLES = (2.0, 5.0, 12.0)
VFA_TR = 0.005
VFA_T1 = 1.2


def refused(argv, capsys, inputs, out, keywords) -> str:
    """assert_refused, and no Python warning on the way: pytest swallows warnings raised in-process,
    so a leaked RuntimeWarning would not show in capsys; record them instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = assert_refused([str(a) for a in argv], capsys, inputs, out, keywords)
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    assert "warning" not in line.lower(), line
    return line


def vfa_signal(scale: float = 1000.0) -> np.ndarray:
    """(x, y, z, 3) noise-free SPGR signals of T1 = 1.2 s at 2, 5, 12 degrees, zero background."""
    a = np.deg2rad(VFA_ANGLES)
    e = np.exp(-VFA_TR / VFA_T1)
    data = np.zeros(SHAPE + (len(a),), np.float32)
    data[brain_mask()] = scale * np.sin(a) * (1 - e) / (1 - e * np.cos(a))
    return data


@pytest.fixture
def vfa(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return {"vfa": save_nifti(folder / "vfa.nii.gz", vfa_signal()),
            "b1": save_nifti(folder / "b1.nii.gz", np.ones(SHAPE, np.float32)),
            "b1_one_volume": save_nifti(folder / "b1_4d1.nii.gz", np.ones(SHAPE + (1,), np.float32)),
            "b1_percent": save_nifti(folder / "b1_pct.nii.gz", np.full(SHAPE, 100.0, np.float32)),
            "b1_ambiguous": save_nifti(folder / "b1_x5.nii.gz", np.full(SHAPE, 5.0, np.float32))}


# --- dual-echo DSC: TE2 must be longer than TE1 ----------------------------------------------------
@pytest.fixture
def dsc(tmp_path):
    return write_dsc_case(tmp_path / "in")


@pytest.mark.parametrize("te, keywords", [
    (["0.03", "0.03"], ("TE1=0.03", "TE2=0.03", "--te TE1 TE2", "TE1 < TE2")),
    (["0.045", "0.015"], ("TE1=0.045", "TE2=0.015", "--second-echo")),
], ids=["equal", "swapped"])
def test_dual_echo_dsc_refuses_echo_times_that_do_not_increase(dsc, tmp_path, capsys, te, keywords):
    out = tmp_path / "out"
    refused(["dsc", dsc["series"], "--second-echo", dsc["series"], "--aif-mask", dsc["aif"],
             "--frame-interval", "1.5", "--te", *te, "--out", out], capsys, dsc["series"].parent, out, keywords)


def test_dual_echo_times_from_the_files_are_checked_too(dsc, tmp_path, capsys):
    """No --te: both TEs come from the sidecars (EchoTime 0.03 in each), which the parameters never
    see; the pipeline's own check must refuse them before the conversion divides by 0."""
    out = tmp_path / "out"
    refused(["dsc", dsc["series"], "--second-echo", dsc["series"], "--aif-mask", dsc["aif"],
             "--frame-interval", "1.5", "--out", out], capsys, dsc["series"].parent, out,
            ("TE1=0.03", "TE2=0.03", "--te TE1 TE2"))


def test_dual_echo_times_are_refused_in_the_library():
    """The worker and Python callers: the parameters, run_dsc with TEs from the acquisition, and the
    conversion functions called directly all refuse, without a RuntimeWarning first."""
    from BBBAnomalyLib.core.volume import Acquisition, Volume
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc
    from BBBAnomalyLib.dsc.conversion import dual_echo_detection_curve

    with pytest.raises(InputError, match="TE1=0.03 s and TE2=0.03 s"):
        DSCParameters(echo_time=0.03, second_echo_time=0.03)
    assert DSCParameters(echo_time=0.015, second_echo_time=0.045).second_echo_time == 0.045
    data, te = dsc_signal()
    times = np.arange(data.shape[3]) * 1.5
    echo = Volume(data, AFFINE, times, Acquisition(echo_time=te))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning before the refusal fails the test
        with pytest.raises(InputError, match="TE1=0.03 s and TE2=0.03 s"):
            run_dsc(echo, DSCParameters(), brain_mask=brain_mask(), second_echo=echo)
        with pytest.raises(InputError, match="longer than the first"):
            dual_echo_detection_curve(np.ones((4, 10)), np.ones((4, 10)), 0.03, 0.03)


def test_the_audit_command_shows_one_line_in_a_real_process(dsc, tmp_path):
    """What the user's shell showed: the RuntimeWarning and its source line, then a wrong error."""
    done = run_subprocess(["dsc", str(dsc["series"]), "--second-echo", str(dsc["series"]), "--aif-mask",
                           str(dsc["aif"]), "--frame-interval", "1.5", "--te", "0.03", "0.03", "--out",
                           str(tmp_path / "out"), "--quiet"], tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "pre-bolus" not in lines[0] and "TE1 < TE2" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


# --- t1map: non-finite flip angles and TR, a 4D B1 map ---------------------------------------------
@pytest.mark.parametrize("extra, keywords", [
    (["--flip-angles", "nan", "5", "12", "--tr", "0.005"], ("flip angles [nan, 5.0, 12.0]", "finite", "(0, 90)",
                                                            "--flip-angles")),
    (["--flip-angles", "2", "inf", "12", "--tr", "0.005"], ("inf", "finite", "(0, 90)")),
    (["--flip-angles", "2", "5", "12", "--tr", "nan"], ("TR = nan", "--tr", "seconds")),
    (["--flip-angles", "2", "5", "12", "--tr", "inf"], ("TR = inf", "--tr", "seconds")),
], ids=["angle-nan", "angle-inf", "tr-nan", "tr-inf"])
def test_t1map_refuses_non_finite_flip_angles_and_tr(vfa, tmp_path, capsys, extra, keywords):
    out = tmp_path / "out"
    refused(["t1map", vfa["vfa"], *extra, "--out", out], capsys, vfa["vfa"].parent, out, keywords)


@pytest.mark.parametrize("b1, keywords", [
    ("vfa", ("B1 map", "shape (10, 10, 3, 3)", "3D", "--b1")),
    ("b1_ambiguous", ("B1 map", "median", "5", "about 1", "about 100")),
], ids=["4d-vfa-as-b1", "neither-relative-nor-percent"])
def test_t1map_refuses_a_b1_map_that_is_not_one(vfa, tmp_path, capsys, b1, keywords):
    out = tmp_path / "out"
    refused(["t1map", vfa["vfa"], "--flip-angles", *map(str, VFA_ANGLES), "--tr", str(VFA_TR), "--b1", vfa[b1],
             "--out", out], capsys, vfa["vfa"].parent, out, keywords)


@pytest.mark.parametrize("b1", ["b1", "b1_one_volume", "b1_percent"])
def test_t1map_still_takes_real_b1_maps(vfa, tmp_path, capsys, b1):
    """A 3D map, a 4D file with one volume, and a percent map all give the true T1 (1.2 s)."""
    import json

    out = tmp_path / "out"
    assert main(["t1map", str(vfa["vfa"]), "--flip-angles", *map(str, VFA_ANGLES), "--tr", str(VFA_TR),
                 "--b1", str(vfa[b1]), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["t1"]["median"] == pytest.approx(VFA_T1, rel=1e-3)
    assert report["b1"]["median"] == pytest.approx(1.0)


# --- dce: the same VFA checks, and --b1 without --vfa -----------------------------------------------
@pytest.fixture
def dce(tmp_path, vfa):
    return {**write_dce_case(tmp_path / "in"), **vfa}


DCE_BASE = ["--flip-angle", "15", "--tr", "0.005", "--rls", "none"]


@pytest.mark.parametrize("extra, keywords", [
    (["--vfa", "{vfa}", "--vfa-flip-angles", "nan", "5", "12", "--vfa-tr", "0.005"],
     ("flip angles [nan, 5.0, 12.0]", "finite", "--vfa-flip-angles")),
    (["--vfa", "{vfa}", "--vfa-flip-angles", "2", "5", "12", "--vfa-tr", "nan"], ("TR = nan", "--vfa-tr")),
    (["--vfa", "{vfa}", "--vfa-flip-angles", "2", "5", "12", "--vfa-tr", "0.005", "--b1", "{vfa}"],
     ("B1 map", "shape (10, 10, 3, 3)", "3D")),
    (["--t10", "1.4", "--b1", "{b1}"], ("--b1", "belong to --vfa", "add --vfa")),
    (["--t10", "1.4", "--vfa-tr", "0.005"], ("--vfa-tr", "belong to --vfa")),
    (["--t10", "1.4", "--vfa-flip-angles", "2", "5", "12"], ("--vfa-flip-angles", "belong to --vfa")),
], ids=["vfa-angle-nan", "vfa-tr-nan", "vfa-b1-4d", "b1-without-vfa", "vfa-tr-without-vfa",
        "vfa-angles-without-vfa"])
def test_dce_refuses_bad_vfa_and_b1_options(dce, tmp_path, capsys, extra, keywords):
    out = tmp_path / "out"
    extra = [a.format(**{k: str(v) for k, v in dce.items()}) for a in extra]
    refused(["dce", dce["series"], "--aif-mask", dce["aif"], *DCE_BASE, *extra, "--out", out], capsys,
            dce["series"].parent, out, keywords)


# --- values from the files' metadata get the options' ranges (round 15, after the audit) -----------------------
@pytest.mark.parametrize("sidecar, keywords", [
    ('{"FlipAngle": 120, "RepetitionTime": 0.005}', ("flip angle in the input's metadata", "(0, 90)", "--flip-angle")),
    ('{"FlipAngle": 15, "RepetitionTime": 1.5}', ("TR in the input's metadata", "(0, 1)", "--tr")),
], ids=["flip-120", "tr-1.5"])
def test_dce_checks_the_flip_angle_and_tr_its_file_gives(dce, tmp_path, capsys, sidecar, keywords):
    """A sidecar's 120 degrees is a valid flip angle for some sequence (the reader takes it) but no DCE SPGR one:
    with a T10 the conversion would give meaningless concentrations, so the file's value gets --flip-angle's range."""
    series = dce["series"]
    series.with_name(series.name.replace(".nii.gz", ".json")).write_text(sidecar)
    out = tmp_path / "out"
    refused(["dce", series, "--aif-mask", dce["aif"], "--t10", "1.4", "--rls", "none", "--out", out], capsys,
            series.parent, out, keywords)


@pytest.mark.parametrize("fields, keywords", [
    ('{"echo_time": "abc"}', ("echo_time", "BBBAnomaly.Acquisition", "must be a number")),
    ('{"echo_time": -0.03}', ("echo_time", "(0, 1)")),
    ('{"echo_time": 0.03, "echo_times": 5}', ("echo_times", "list")),
    ('{"echo_time": 0.03, "flip_angle": true}', ("flip_angle", "must be a number")),
    ('["not", "an", "object"]', ("BBBAnomaly.Acquisition", "JSON object")),
], ids=["te-text", "te-negative", "echo-times-number", "flip-true", "not-an-object"])
def test_an_nrrd_acquisition_field_is_checked_like_a_sidecar(dsc, tmp_path, capsys, fields, keywords):
    import SimpleITK as sitk

    from BBBAnomalyLib.io import read_volume, write_volume

    path = tmp_path / "in" / "signal.nrrd"
    write_volume(read_volume(dsc["series"]), path)
    img = sitk.ReadImage(str(path))
    img.SetMetaData("BBBAnomaly.Acquisition", fields)
    sitk.WriteImage(img, str(path))
    out = tmp_path / "out"
    refused(["dsc", path, "--aif-mask", dsc["aif"], "--frame-interval", "1.5", "--out", out], capsys,
            path.parent, out, keywords)


def test_an_empty_out_is_refused_not_replaced_by_the_default_folder(dsc, tmp_path, capsys, monkeypatch):
    """`--out "$UNSET"` used to write to <input>_dsc/ in the current folder without a word."""
    monkeypatch.chdir(tmp_path)
    refused(["dsc", dsc["series"], "--aif-mask", dsc["aif"], "--frame-interval", "1.5", "--out", ""], capsys,
            dsc["series"].parent, tmp_path / "signal_dsc", ("--out is empty", "leave --out out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]

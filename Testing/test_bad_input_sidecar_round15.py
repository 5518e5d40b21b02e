"""Bad JSON sidecars, empty DICOM folders and empty FSL b-value files (audit, round 15).

A sidecar value of the wrong type (a string, a list of strings, an object, JSON true, NaN) used to
be a traceback or, for true, a TE of 1 s; an impossible value (TE -0.03, TR -0.005, a flip angle of
0 or 720) ran with nonsense that `--te`/`--tr`/`--flip-angle` would have refused. A folder with no
DICOM files printed ITK's three-line warning before the error, an empty .bval file numpy's
UserWarning. Each must end in exit 2 and one line on stderr naming the file and the field, with no
traceback and no warning.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from bad_input_helpers import assert_refused, save_nifti, write_dce_case, write_dsc_case, write_dwi_case

from BBBAnomalyLib.io import read_volume


def refused(argv, capture, inputs, out, keywords) -> str:
    """assert_refused, and no Python warning on the way (pytest swallows warnings raised in-process,
    so a leaked UserWarning would not show on the captured stderr: record them instead).
    ``capture``: capsys, or capfd where the message could come from C++ (ITK) straight to fd 2."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = assert_refused([str(a) for a in argv], capture, inputs, out, keywords)
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    assert "warning" not in line.lower() and "traceback" not in line.lower(), line
    return line


# --- sidecar values of the wrong type or out of range -----------------------------------------------
# (id, sidecar text, key words of the message besides the sidecar's name)
DSC_SIDECARS = [
    ("te-string", '{"EchoTime": "abc"}', ("EchoTime", "must be a number", "'abc'", "--te")),
    ("tr-string", '{"EchoTime": 0.03, "RepetitionTime": "x"}', ("RepetitionTime", "must be a number")),
    ("te-list-of-strings", '{"EchoTime": ["a", 0.03]}', ("EchoTime", "must be a number", "'a'")),
    ("te1-string", '{"EchoTime1": "a", "EchoTime2": 0.04}', ("EchoTime1", "must be a number")),
    ("flip-string", '{"EchoTime": 0.03, "FlipAngle": "big"}', ("FlipAngle", "must be a number", "degrees")),
    ("volume-timing-strings", '{"EchoTime": 0.03, "VolumeTiming": ["a"]}',
     ("VolumeTiming", "list of finite frame onsets", "--frame-interval")),
    ("volume-timing-object", '{"EchoTime": 0.03, "VolumeTiming": {"a": 1}}', ("VolumeTiming", "list")),
    ("volume-timing-nan", json.dumps({"EchoTime": 0.03, "VolumeTiming": [float("nan")] * 40}),
     ("VolumeTiming", "finite")),
    ("own-string", '{"EchoTime": 0.03, "BBBAnomaly": "x"}', ("BBBAnomaly", "JSON object")),
    ("own-echo-times-number", '{"EchoTime": 0.03, "BBBAnomaly": {"echo_times": 5}}',
     ("BBBAnomaly.echo_times", "list of echo times")),
    ("own-extra-number", '{"EchoTime": 0.03, "BBBAnomaly": {"extra": 5}}', ("BBBAnomaly.extra", "JSON object")),
    # JSON true: float(True) is 1, a TE of 1 s that gave a map of nonsense
    ("te-true", '{"EchoTime": true}', ("EchoTime", "must be a number", "got true")),
    ("te-nan", '{"EchoTime": NaN}', ("EchoTime", "finite number in (0, 1)", "nan")),
    # the range of --te, which refuses -0.03 too
    ("te-negative", '{"EchoTime": -0.03}', ("EchoTime", "(0, 1)", "-0.03", "seconds", "--te")),
    ("te-in-ms", '{"EchoTime": 30}', ("EchoTime", "(0, 1)", "30 ms")),
    ("te-list-negative", '{"EchoTime": [-0.015, 0.045]}', ("EchoTime", "-0.015")),
]


@pytest.mark.parametrize("sidecar, keywords", [c[1:] for c in DSC_SIDECARS], ids=[c[0] for c in DSC_SIDECARS])
def test_dsc_refuses_a_bad_sidecar(tmp_path, capsys, sidecar, keywords):
    case = write_dsc_case(tmp_path / "in")
    (tmp_path / "in" / "signal.json").write_text(sidecar)
    out = tmp_path / "out"
    line = refused(["dsc", case["series"], "--aif-mask", case["aif"], "--frame-interval", "1.5", "--out", out],
                   capsys, tmp_path / "in", out, ("signal.json", *keywords))
    assert "correct it" in line or "correct or delete" in line, line  # the fix, not only the fault


DCE_SIDECARS = [
    ("flip-nan", '{"FlipAngle": NaN, "RepetitionTime": 0.005}', ("FlipAngle", "finite number", "nan")),
    ("flip-negative", '{"FlipAngle": -15, "RepetitionTime": 0.005}', ("FlipAngle", "-15", "--flip-angle")),
    ("flip-zero", '{"FlipAngle": 0, "RepetitionTime": 0.005}', ("FlipAngle", "got 0")),
    ("flip-720", '{"FlipAngle": 720, "RepetitionTime": 0.005}', ("FlipAngle", "(0, 180]", "720")),
    ("flip-true", '{"FlipAngle": true, "RepetitionTime": 0.005}', ("FlipAngle", "got true")),
    ("tr-negative", '{"FlipAngle": 15, "RepetitionTime": -0.005}', ("RepetitionTime", "-0.005", "--tr")),
    ("tr-excitation-nan", '{"FlipAngle": 15, "RepetitionTimeExcitation": NaN}', ("RepetitionTimeExcitation", "nan")),
    ("field-string", '{"FlipAngle": 15, "RepetitionTime": 0.005, "MagneticFieldStrength": "3T"}',
     ("MagneticFieldStrength", "'3T'", "tesla")),
]


@pytest.mark.parametrize("sidecar, keywords", [c[1:] for c in DCE_SIDECARS], ids=[c[0] for c in DCE_SIDECARS])
def test_dce_refuses_a_bad_sidecar(tmp_path, capsys, sidecar, keywords):
    case = write_dce_case(tmp_path / "in")
    (tmp_path / "in" / "dce.json").write_text(sidecar)
    out = tmp_path / "out"
    refused(["dce", case["series"], "--aif-mask", case["aif"], "--t10", "1.4", "--out", out],
            capsys, tmp_path / "in", out, ("dce.json", *keywords))


def test_good_sidecars_still_read(tmp_path):
    """The checks must not refuse real sidecars of other inputs: a spin-echo's flip angle of 90-180 degrees
    and TR of seconds (DSC, DWI, FLAIR), integer values, every echo listed, a per-volume list (left unknown)."""
    path = save_nifti(tmp_path / "se.nii.gz", np.ones((4, 4, 2, 4), np.float32), sidecar=json.dumps({
        "EchoTime": [0.015, 0.045], "RepetitionTime": 1.55, "FlipAngle": 120, "MagneticFieldStrength": 3,
        "VolumeTiming": [0, 2, 4, 6], "BBBAnomaly": {"extra": {"k": 1}}}))
    acq = read_volume(path).acquisition
    assert (acq.echo_time, acq.echo_times, acq.repetition_time, acq.flip_angle, acq.field_strength) == (
        0.015, (0.015, 0.045), 1.55, 120.0, 3.0)
    assert acq.extra == {"k": 1}
    np.testing.assert_array_equal(read_volume(path).times, [0.0, 2.0, 4.0, 6.0])
    (tmp_path / "se.json").write_text(json.dumps({"EchoTime1": 0.015, "EchoTime2": 0.045, "FlipAngle": [90, 180],
                                                  "RepetitionTimeExcitation": 0.004, "RepetitionTime": 9.0}))
    acq = read_volume(path).acquisition
    assert acq.echo_times == (0.015, 0.045) and acq.flip_angle is None and acq.repetition_time == 0.004


# --- a folder without DICOM files -------------------------------------------------------------------
def _empty_folder(root):
    folder = root / "in" / "no_dicom"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not a DICOM file\n")
    return folder


# (id, function of (DSC case, DCE case, folder) -> arguments; out is added unless the command has none)
EMPTY_DICOM = [
    ("dsc-series", lambda s, d, f: ["dsc", f, "--te", "0.03", "--frame-interval", "1.5", "--aif-mask", s["aif"]]),
    ("dsc-aif-mask", lambda s, d, f: ["dsc", s["series"], "--aif-mask", f, "--frame-interval", "1.5"]),
    ("dce-series", lambda s, d, f: ["dce", f, "--aif-mask", d["aif"], "--frame-interval", "5"]),
    ("t1flair-t1", lambda s, d, f: ["t1flair", "--t1", f, "--flair", d["mask"]]),
    ("roi-stats-map", lambda s, d, f: ["roi-stats", f, "--roi", d["mask"]]),
    ("roi-stats-roi", lambda s, d, f: ["roi-stats", d["mask"], "--roi", f]),
]


@pytest.mark.parametrize("argv", [c[1] for c in EMPTY_DICOM], ids=[c[0] for c in EMPTY_DICOM])
def test_a_folder_without_dicom_files_gives_one_line(tmp_path, capfd, argv):
    # capfd, not capsys: ITK's "No Series were found" warning is written by C++ straight to fd 2
    dsc, dce = write_dsc_case(tmp_path / "in" / "dsc"), write_dce_case(tmp_path / "in" / "dce")
    folder = _empty_folder(tmp_path)
    args = argv(dsc, dce, folder)
    out = tmp_path / "out"
    if args[0] != "roi-stats":
        args += ["--out", out]
    line = refused(args, capfd, tmp_path / "in", out, ("no DICOM series", str(folder)))
    assert "GDCMSeriesFileNames" not in line


def test_dicom_warnings_are_shown_again_after_the_probe(tmp_path):
    """The probe silences ITK's warnings for itself only: a user's (or Slicer's) setting is restored."""
    import SimpleITK as sitk

    from BBBAnomalyLib.io.dicom import list_series

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    try:
        for setting in (True, False):
            sitk.ProcessObject.SetGlobalWarningDisplay(setting)
            assert list_series(_empty_folder(tmp_path / str(setting))) == []
            assert sitk.ProcessObject.GetGlobalWarningDisplay() == setting
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


# --- an empty FSL b-value file ----------------------------------------------------------------------
def test_dmri_with_an_empty_bval_file_gives_one_line(tmp_path, capsys):
    case = write_dwi_case(tmp_path / "in")
    empty = tmp_path / "in" / "empty.bval"
    empty.write_text("")
    out = tmp_path / "out"
    refused(["dmri", case["series"], "--bval", empty, "--bvec", case["bvec"], "--out", out], capsys,
            tmp_path / "in", out, ("empty.bval", "0 b-values", "31 volumes"))


def test_dmri_with_an_empty_bval_file_beside_the_nifti_gives_one_line(tmp_path, capsys):
    case = write_dwi_case(tmp_path / "in")
    case["bval"].write_text("")  # dwi.bval, found beside dwi.nii.gz by the NIfTI reader
    out = tmp_path / "out"
    refused(["dmri", case["series"], "--out", out], capsys, tmp_path / "in", out,
            ("dwi.bval", "0 b-values", "31 volumes"))

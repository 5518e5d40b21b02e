"""The contrast dose a DICOM series states, checked against the population AIF's (session 23).

BBBAnomalyLib/io/dicom_contrast.py keeps the Contrast/Bolus tags and PatientWeight in ``acquisition.extra``;
BBBAnomalyLib/dce/stated_dose.py turns them into mmol/kg where that is well defined and, with a population AIF and no
``--dose``, warns with the exact ``--dose`` to pass where the stated dose differs from the assumed 0.1 mmol/kg by more
than 20 % (the rule set before measuring). The header's dose is offered, never applied: the maps are bit-identical
with or without the tags; a given --dose wins; a measured AIF is unaffected. The DICOM series are written slice by
slice with SimpleITK/GDCM, as in test_io_dicom.py."""

from __future__ import annotations

import json
import locale

import numpy as np
import pytest
import SimpleITK as sitk
from bad_input_helpers import assert_refused, dce_signal, write_dce_case

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.volume import Acquisition, Volume
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.dce.stated_dose import WARN_ABOVE, stated_dose
from BBBAnomalyLib.io import read_dicom_series
from BBBAnomalyLib.io.dicom_contrast import EXTRA_KEY
from BBBAnomalyLib.phantoms.dce import make_dce_phantom

UID_ROOT = "1.2.826.0.1.3680043.2.1125.23"
#: a half dose, as the header of a split-dose protocol states it: 3.75 ml of gadobutrol (1.0 M) for 75 kg
HALF = {"0018|0010": "Gadovist", "0018|1041": "3.75", "0018|1044": "3.75", "0018|1048": "GADOLINIUM",
        "0018|1049": "157.25", "0010|1030": "75"}
HALF_RECORD = {"agent": "Gadovist", "volume_ml": 3.75, "total_dose_ml": 3.75, "ingredient": "GADOLINIUM",
               "ingredient_concentration_mg_per_ml": 157.25, "patient_weight_kg": 75.0}
#: small and noiseless: the maps with and without the tags can be compared bit for bit
SMALL = {"slices": 2, "seed": 0, "duration": 150.0, "frame_interval": 5.0, "snr": None}


@pytest.fixture(autouse=True)
def _keep_locale():
    """GDCM's DICOM writer leaves the process in the C locale: put it back after each test (as test_io_dicom.py)."""
    before = locale.setlocale(locale.LC_ALL, None)
    yield
    locale.setlocale(locale.LC_ALL, before)


def write_dicom(folder, data, contrast=None, per_frame=None, dt=5.0):
    """data (x, y, z, t) -> one int16 MR image per slice and frame, axial, 2 x 2 x 3 mm, 5 s frames, SPGR
    (flip 15 degrees, TR 5 ms), with the ``contrast`` tags in every image (``per_frame(t)``: the tags of frame t)."""
    folder.mkdir(parents=True, exist_ok=True)
    values = np.rint(np.asarray(data, np.float64) * 10).astype(np.int16)
    instance = 0
    for t in range(values.shape[3]):
        for k in range(values.shape[2]):
            instance += 1
            img = sitk.GetImageFromArray(np.ascontiguousarray(values[:, :, k, t].T)[None])
            img.SetSpacing((2.0, 2.0, 1.0))
            tags = {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|103e": "DCE",
                    "0020|000d": f"{UID_ROOT}.1", "0020|000e": f"{UID_ROOT}.2", "0008|0018": f"{UID_ROOT}.3.{instance}",
                    "0020|0013": str(instance), "0020|0032": f"0\\0\\{3.0 * k:.1f}", "0020|0037": "1\\0\\0\\0\\1\\0",
                    "0020|0100": str(t + 1), "0018|1060": f"{1000 * dt * t:.0f}", "0018|0081": "2",
                    "0018|0080": "5", "0018|1314": "15", "0018|0087": "3",
                    **(contrast or {}), **(per_frame(t) if per_frame else {})}
            for key, value in tags.items():
                img.SetMetaData(key, value)
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            writer.SetFileName(str(folder / f"im{instance:04d}.dcm"))
            writer.Execute(img)
    return folder


# --- the reader ------------------------------------------------------------------------------------------------
def test_reader_keeps_the_contrast_tags(tmp_path):
    series = read_dicom_series(write_dicom(tmp_path / "dcm", dce_signal(n_frames=8), HALF))
    assert series.acquisition.extra[EXTRA_KEY] == HALF_RECORD
    assert series.acquisition.flip_angle == 15 and series.data.shape == (10, 10, 3, 8)


def test_series_without_the_tags_gains_nothing(tmp_path):
    """An ordinary series' acquisition is what it was: no key at all (not an empty record)."""
    series = read_dicom_series(write_dicom(tmp_path / "dcm", dce_signal(n_frames=8)))
    assert EXTRA_KEY not in series.acquisition.extra


def test_tags_that_differ_between_images_state_no_dose(tmp_path):
    """The first frames say 7.5 ml and the last 3.75 ml: the series states no one volume, so no dose."""
    folder = write_dicom(tmp_path / "dcm", dce_signal(n_frames=8), {**HALF, "0018|1044": ""},
                         per_frame=lambda t: {"0018|1041": "7.5" if t < 4 else "3.75"})
    record = read_dicom_series(folder).acquisition.extra[EXTRA_KEY]
    assert record["differs"] == {"volume_ml": ["7.5", "3.75"]} and "volume_ml" not in record
    stated = stated_dose(record)
    assert stated["dose_mmol_per_kg"] is None and "ContrastBolusVolume" in stated["why_not"]


# --- the arithmetic --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("record, dose", [
    ({"agent": "Gadovist 1.0", "total_dose_ml": 7.5, "patient_weight_kg": 75}, 0.1),  # 7.5 mmol / 75 kg
    ({"agent": "GADOBUTROL", "volume_ml": 3.0, "patient_weight_kg": 60}, 0.05),
    ({"agent": "Dotarem", "volume_ml": 15, "patient_weight_kg": 60}, 0.125),  # a fixed 15 ml of a 0.5 M agent
    ({"agent": "MultiHance", "volume_ml": 10, "ingredient_concentration_mg_per_ml": 529, "patient_weight_kg": 100},
     0.05),  # the label's mg/ml of the agent agrees with its 0.5 M
    ({"agent": "ProHance", "volume_ml": 14, "ingredient": "GADOLINIUM", "ingredient_concentration_mg_per_ml": 78.6,
      "patient_weight_kg": 70}, 0.1),  # mg of gadolinium per ml agrees too
    ({"ingredient": "GADOLINIUM", "volume_ml": 8, "ingredient_concentration_mg_per_ml": 157.25,
      "patient_weight_kg": 80}, 0.1),  # no agent named: the gadolinium content alone
    ({"agent": "Gd-DTPA-BMA", "volume_ml": 12, "patient_weight_kg": 80}, 0.075),  # gadodiamide, not gadopentetate
    ({"agent": "Eovist", "volume_ml": 10, "patient_weight_kg": 100}, 0.025),  # 0.25 M
])
def test_dose_from_the_tags(record, dose):
    stated = stated_dose(record)
    assert stated["dose_mmol_per_kg"] == pytest.approx(dose, rel=1e-9) and "why_not" not in stated
    assert "PatientWeight" in stated["from"]


@pytest.mark.parametrize("record, words", [
    ({"agent": "contrast", "volume_ml": 15, "patient_weight_kg": 75}, ("'contrast'", "not one whose")),
    ({"agent": "Gadovist", "volume_ml": 15}, ("no PatientWeight", "15 mmol")),
    ({"agent": "Gadovist", "volume_ml": 15, "patient_weight_kg": 0}, ("no PatientWeight",)),
    ({"agent": "Gadovist"}, ("no ContrastBolusTotalDose",)),
    ({"agent": "Gadovist", "volume_ml": 15, "patient_weight_kg": 75, "ingredient": "GADOLINIUM",
      "ingredient_concentration_mg_per_ml": 78.6}, ("differ",)),  # a 0.5 M gadobutrol, or a wrong tag: not guessed
    ({"agent": "Dotarem", "volume_ml": 15, "patient_weight_kg": 75, "ingredient_concentration_mg_per_ml": 604.72},
     ("neither",)),
    ({"agent": "Gadovist / Dotarem", "volume_ml": 15, "patient_weight_kg": 75}, ("2 agents",)),
    ({"agent": "Gadovist", "volume_ml": 5, "total_dose_ml": 7.5, "patient_weight_kg": 75}, ("less than",)),
    ({"agent": "Gadovist", "volume_ml": 40, "patient_weight_kg": 75}, ("0.533", "outside")),
    ({"ingredient": "IODINE", "volume_ml": 80, "patient_weight_kg": 75}, ("not a gadolinium agent",)),
    ({"ingredient": "GADOLINIUM", "volume_ml": 8, "ingredient_concentration_mg_per_ml": 604.72,
      "patient_weight_kg": 80}, ("more than any agent",)),
    ({"agent": "Gadovist", "volume_ml": 7.5, "patient_weight_kg": 75, "unreadable": {"volume_ml": "7,5"}},
     ("'7,5'", "not a number")),
    ({"agent": "Gadovist", "volume_ml": "7.5", "patient_weight_kg": 75}, ("ContrastBolusVolume", "not a number")),
    ({"ingredient": "GADOLINIUM", "volume_ml": 7.5, "patient_weight_kg": 75}, ("names no agent",)),
])
def test_no_dose_where_the_tags_do_not_define_one(record, words):
    stated = stated_dose(record)
    assert stated["dose_mmol_per_kg"] is None
    assert all(w in stated["why_not"] for w in words), stated["why_not"]


# --- the run ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def half_dose():
    return make_dce_phantom(**SMALL, dose=0.5)


def _with_header(phantom, record):
    extra = {EXTRA_KEY: record} if record is not None else {}
    return Volume(phantom.signal.data.copy(), phantom.signal.affine, phantom.signal.times,
                  Acquisition(flip_angle=phantom.signal.acquisition.flip_angle,
                              repetition_time=phantom.signal.acquisition.repetition_time, extra=extra))


def _run(phantom, record, aif_mask=None, **params):
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    return run_dce(_with_header(phantom, record), DCEParameters(rls="none", **params), aif_mask=aif_mask,
                   brain_mask=phantom.masks["brain"], t10_map=t10)


@pytest.fixture(scope="module")
def runs(half_dose):
    return {"plain": _run(half_dose, None), "half": _run(half_dose, HALF_RECORD)}


def test_a_half_dose_header_is_warned_with_the_dose_to_pass(runs):
    warning = [w for w in runs["half"].report["warnings"] if "DICOM header states" in w]
    assert len(warning) == 1
    assert "0.05 mmol/kg" in warning[0] and "--dose 0.05" in warning[0] and "-50 %" in warning[0]
    assert "3.75 ml" in warning[0] and "gadobutrol" in warning[0] and "75 kg" in warning[0]
    entry = runs["half"].report["aif"]["header_dose"]
    assert entry["dose_mmol_per_kg"] == 0.05 and entry["used"] is False and entry["warned"] is True
    assert entry["differs_by"] == -0.5 and entry["compared_with"]["dose_mmol_per_kg"] == 0.1
    assert entry["tags"] == HALF_RECORD


def test_the_header_does_not_change_the_maps(runs):
    """Offered, not applied: the maps and the AIF are those of the same series without the tags, bit for bit, and
    the report differs by the header's entry and its warning only."""
    plain, half = runs["plain"], runs["half"]
    assert plain.maps.keys() == half.maps.keys()
    for name, volume in plain.maps.items():
        assert np.array_equal(half.maps[name].data, volume.data), name
    assert np.array_equal(half.aif, plain.aif)
    assert "header_dose" not in plain.report["aif"] and half.report["aif"]["dose"] == plain.report["aif"]["dose"]
    assert [w for w in half.report["warnings"] if "DICOM header" not in w] == plain.report["warnings"]


def test_a_given_dose_wins(half_dose):
    """--dose given: used, the header compared with it (no warning), the maps those of --dose alone."""
    given = _run(half_dose, {**HALF_RECORD, "volume_ml": 7.5, "total_dose_ml": 7.5}, dose=0.05)  # header: 0.1
    alone = _run(half_dose, None, dose=0.05)
    assert not any("DICOM header" in w for w in given.report["warnings"])
    entry = given.report["aif"]["header_dose"]
    assert entry["used"] is False and entry["compared_with"] == {"dose_mmol_per_kg": 0.05, "source": "--dose"}
    assert entry["differs_by"] == 1.0 and "--dose 0.05 was used" in entry["note"]
    for name, volume in alone.maps.items():
        assert np.array_equal(given.maps[name].data, volume.data), name


@pytest.mark.parametrize("volume_ml, warned", [(8.625, False), (9.375, True), (6.375, False), (5.625, True)])
def test_the_twenty_per_cent_rule(half_dose, volume_ml, warned):
    """0.115 and 0.085 mmol/kg (+-15 %, a standard dose rounded) are recorded only; 0.125 and 0.075 (+-25 %) warned."""
    record = {**HALF_RECORD, "volume_ml": volume_ml, "total_dose_ml": volume_ml,
              "ingredient_concentration_mg_per_ml": 157.25}
    run = _run(half_dose, record)
    entry = run.report["aif"]["header_dose"]
    assert entry["dose_mmol_per_kg"] == pytest.approx(volume_ml / 75, rel=1e-6)
    assert (abs(entry["differs_by"]) > WARN_ABOVE) is warned
    assert any("DICOM header states" in w for w in run.report["warnings"]) is warned
    assert entry.get("warned", False) is warned


def test_a_measured_aif_is_unaffected(half_dose):
    """A drawn AIF carries the dose itself: the header's dose is recorded (with why it is not used), not warned, and
    the maps are those without the tags."""
    run = _run(half_dose, HALF_RECORD, aif_mask=half_dose.masks["aif"])
    plain = _run(half_dose, None, aif_mask=half_dose.masks["aif"])
    entry = run.report["aif"]["header_dose"]
    assert entry["dose_mmol_per_kg"] == 0.05 and entry["used"] is False and "measured AIF" in entry["note"]
    assert "compared_with" not in entry and not any("DICOM header" in w for w in run.report["warnings"])
    assert "dose" not in run.report["aif"]
    for name, volume in plain.maps.items():
        assert np.array_equal(run.maps[name].data, volume.data), name


def test_a_header_without_a_dose_says_why_and_warns_nothing(half_dose):
    run = _run(half_dose, {"agent": "Gadovist"})
    entry = run.report["aif"]["header_dose"]
    assert entry["dose_mmol_per_kg"] is None and "no ContrastBolusTotalDose" in entry["why_not"]
    assert not any("DICOM header" in w for w in run.report["warnings"])


# --- the command line on a DICOM folder ------------------------------------------------------------------------
def test_cli_on_a_dicom_folder_warns_and_records(tmp_path, capsys):
    folder = write_dicom(tmp_path / "dcm", dce_signal(), HALF)
    out = tmp_path / "out"
    code = main(["dce", str(folder), "--t10", "1.4", "--rls", "none", "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    entry = report["aif"]["header_dose"]
    assert entry["dose_mmol_per_kg"] == 0.05 and entry["used"] is False and entry["warned"] is True
    assert any("--dose 0.05" in w for w in report["warnings"]) and "--dose 0.05" in printed.out
    # the suggested option, given, is taken and the header no longer warned about
    again = tmp_path / "again"
    code = main(["dce", str(folder), "--t10", "1.4", "--rls", "none", "--dose", "0.05", "--out", str(again),
                 "--quiet"])
    assert code == 0
    report = json.loads((again / "report.json").read_text(encoding="utf-8"))
    assert report["aif"]["dose"]["dose_mmol_per_kg"] == 0.05 and report["aif"]["header_dose"]["differs_by"] == 0.0
    assert not any("DICOM header" in w for w in report["warnings"])



def test_dose_header_applies_the_stated_dose(tmp_path, capsys):
    """--dose header (the user's explicit choice): the header's 0.05 mmol/kg scales the AIF, exactly as --dose 0.05;
    the report says where the dose came from and that the header's was used."""
    folder = write_dicom(tmp_path / "dcm", dce_signal(), HALF)
    runs = {}
    for name, dose in (("header", "header"), ("number", "0.05")):
        out = tmp_path / name
        code = main(["dce", str(folder), "--t10", "1.4", "--rls", "none", "--dose", dose, "--out", str(out), "--quiet"])
        assert code == 0, capsys.readouterr().err
        runs[name] = out
    report = json.loads((runs["header"] / "report.json").read_text(encoding="utf-8"))
    assert report["aif"]["dose"]["dose_mmol_per_kg"] == 0.05 and "--dose header" in report["aif"]["dose"]["source"]
    assert report["aif"]["header_dose"]["used"] is True and report["parameters"]["dose"] == 0.05
    assert report["configuration"]["options"]["dose"] == "header"  # a rerun reads the header again
    assert not any("DICOM header" in w for w in report["warnings"])
    from BBBAnomalyLib.io import read_volume
    for name in ("ktrans", "vp", "ve"):
        assert np.array_equal(read_volume(runs["header"] / f"{name}.nii.gz").data,
                              read_volume(runs["number"] / f"{name}.nii.gz").data), name


@pytest.mark.parametrize("contrast, words", [
    (None, ("--dose header", "no contrast dose", "--dose MMOL_PER_KG")),  # no tags at all
    ({"0018|0010": "Gadovist", "0010|1030": "75"},
     ("--dose header", "no ContrastBolusTotalDose", "--dose MMOL_PER_KG")),
])
def test_dose_header_is_refused_where_the_header_defines_none(tmp_path, capsys, contrast, words):
    folder = write_dicom(tmp_path / "dcm", dce_signal(n_frames=12), contrast)
    assert_refused(["dce", str(folder), "--t10", "1.4", "--rls", "none", "--dose", "header", "--out",
                    str(tmp_path / "out")], capsys, folder, tmp_path / "out", words)


def test_dose_header_with_a_measured_aif_is_refused(tmp_path, capsys):
    case = write_dce_case(tmp_path / "in")
    assert_refused(["dce", str(case["series"]), "--aif-mask", str(case["aif"]), "--dose", "header", "--rls", "none",
                    "--out", str(tmp_path / "out")], capsys, case["series"].parent, tmp_path / "out",
                   ("--dose", "measured AIF", "leave out --dose"))

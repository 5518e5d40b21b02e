"""The contrast dose behind the DCE population AIF (session 22, BBBAnomalyLib/dce/aif_dose.py, ``--dose``).

The Parker population AIF is the curve of 0.1 mmol/kg. On the DCE object made at half that dose the population AIF
read Ktrans, vp and ve half the truth and nothing let the user say the dose; ``--dose 0.05`` scales the curve by
dose / model dose and gives back the full-dose object's maps. The default (no --dose) is the published curve, bit
for bit; a bad dose is refused in one line (exit 2); the report records the dose used and, without --dose, says
which dose was assumed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bad_input_helpers import assert_refused, write_dce_case

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.perfusion.population_aif import plasma_population_aif
from BBBAnomalyLib.phantoms.dce import make_dce_phantom

#: small and noiseless: the half-dose object differs from the full-dose one by the dose alone
SMALL = {"slices": 2, "seed": 0, "duration": 150.0, "frame_interval": 5.0, "snr": None}


def _parker(phantom, **params):
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    return run_dce(phantom.signal, DCEParameters(rls="none", population_aif="parker", **params),
                   brain_mask=phantom.masks["brain"], t10_map=t10)


@pytest.fixture(scope="module")
def objects():
    full = make_dce_phantom(**SMALL)
    half = make_dce_phantom(**SMALL, dose=0.5)
    return full, half, _parker(full)


def _leaky(phantom):
    """The voxels whose Ktrans is well determined: the tumour's rim and core (Ktrans >= 0.02 /min)."""
    return phantom.masks["brain"] & (phantom.truth["ktrans"].data >= 0.02)


def test_dose_recovers_the_full_dose_maps_on_a_half_dose_object(objects):
    """The half-dose object has half the tissue concentration of the full-dose one, voxel by voxel (noiseless, the
    conversion exact: same T10, flip angle and TR). The AIF scaled by 0.05/0.1 makes the fit the same problem times
    one half, so Ktrans, vp and ve come back as the full-dose object's maps; what is left is float32 rounding of the
    signal and its conversion at half the concentration (1e-7 relative each, raised by the conversion's gain: 1e-5
    measured on ve, the least determined): 1e-3 per voxel bounds it with a wide margin. Without --dose the same
    object reads them half (exactly, for the same reason): that is the error (-47 to -52 % with noise,
    scripts/dce_dose.py)."""
    full, half, at_full = objects
    given = _parker(half, dose=0.05)
    plain = _parker(half)
    leaky = _leaky(full)
    for name in ("ktrans", "vp", "ve"):
        reference = at_full.maps[name].data[leaky]
        np.testing.assert_allclose(given.maps[name].data[leaky], reference, rtol=1e-3, atol=1e-6, err_msg=name)
        assert np.median(plain.maps[name].data[leaky]) == pytest.approx(0.5 * np.median(reference), rel=1e-3), name
    # kep = Ktrans / ve does not depend on the AIF's scale: it is the same either way
    kep = at_full.maps["kep"].data[leaky]
    assert np.median(plain.maps["kep"].data[leaky]) == pytest.approx(np.median(kep), rel=1e-3)
    np.testing.assert_allclose(given.aif, 0.5 * at_full.aif, rtol=1e-12)
    # against the truth: the rim and core within the few per cent the Parker fit has at its own dose (+2 % here)
    truth = half.truth["ktrans"].data[leaky]
    assert np.median(given.maps["ktrans"].data[leaky]) == pytest.approx(np.median(truth), rel=0.06)


def test_default_is_the_published_curve_bit_for_bit(objects):
    """No --dose: the AIF is Parker's curve itself (not multiplied by anything), and --dose 0.1 (the model's own)
    gives bit-identical maps."""
    full, _, at_full = objects
    placed = at_full.report["aif"]["population_delay_s"]
    published = plasma_population_aif("parker", full.times / 60.0, 0.42, delay=placed / 60.0)
    assert np.array_equal(at_full.aif, published)
    own = _parker(full, dose=0.1)
    for name, volume in at_full.maps.items():
        assert np.array_equal(own.maps[name].data, volume.data), name
    assert own.report["aif"]["dose"]["given"] and not at_full.report["aif"]["dose"]["given"]


def test_report_records_the_dose_and_says_which_was_assumed(objects):
    """``report["aif"]["dose"]``: the model's dose, the dose used, whether given, the scale; without --dose a note
    (not a warning) naming the assumed dose. A measured AIF with a dose given: a warning that it was not used."""
    full, half, at_full = objects
    record = at_full.report["aif"]["dose"]
    assert record["model"] == "parker" and record["model_dose_mmol_per_kg"] == 0.1
    assert record["dose_mmol_per_kg"] == 0.1 and record["scale"] == 1.0 and record["given"] is False
    assert "0.1 mmol/kg" in record["note"] and "--dose" in record["note"]
    assert not any("dose" in w for w in at_full.report["warnings"])
    given = _parker(half, dose=0.05).report["aif"]["dose"]
    assert given == {"model": "parker", "model_dose_mmol_per_kg": 0.1, "dose_mmol_per_kg": 0.05, "given": True,
                     "scale": 0.5}
    t10 = Volume(half.truth["t10"].data, half.signal.affine)
    measured = run_dce(half.signal, DCEParameters(rls="none", dose=0.05), aif_mask=half.masks["aif"],
                       brain_mask=half.masks["brain"], t10_map=t10)
    assert "dose" not in measured.report["aif"]
    assert any("--dose 0.05 mmol/kg was not used" in w for w in measured.report["warnings"])


@pytest.mark.parametrize("value, keywords", [
    ("15", ("--dose", "mmol/kg", "looks like a volume in ml")),
    ("0.5", ("--dose", "[0.01, 0.3]", "ml")),
    ("0", ("--dose", "[0.01, 0.3]", "mmol/kg")),
    ("nan", ("--dose", "mmol/kg")),
])
def test_bad_dose_is_refused_in_one_line(tmp_path, capsys, value, keywords):
    case = write_dce_case(tmp_path / "in")
    assert_refused(["dce", str(case["series"]), "--dose", value, "--rls", "none", "--out", str(tmp_path / "out")],
                   capsys, case["series"].parent, tmp_path / "out", keywords)


def test_dose_with_a_measured_aif_is_refused_on_the_command_line(tmp_path, capsys):
    case = write_dce_case(tmp_path / "in")
    assert_refused(["dce", str(case["series"]), "--aif-mask", str(case["aif"]), "--dose", "0.05", "--rls", "none",
                    "--out", str(tmp_path / "out")], capsys, case["series"].parent, tmp_path / "out",
                   ("--dose", "measured AIF", "leave out --dose"))


def test_cli_writes_the_dose_into_the_report(tmp_path, capsys):
    case = write_dce_case(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["dce", str(case["series"]), "--mask", str(case["mask"]), "--population-aif", "parker",
                 "--dose", "0.05", "--rls", "none", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["aif"]["dose"]["dose_mmol_per_kg"] == 0.05 and report["aif"]["dose"]["given"] is True
    assert report["parameters"]["dose"] == 0.05


def test_the_panel_offers_the_dose():
    from BBBAnomalyLib.app.pipelines import DCE

    spec = {p.name: p for p in DCE.parameters}["dose"]
    assert spec.optional and spec.advanced and spec.maximum == 0.3
    assert DCE.default_parameters()["dose"] is None


def test_the_default_population_aif_warning_names_its_dose(objects):
    """With no AIF at all the run already warns that Parker was used; it now says Parker's dose and --dose."""
    full = objects[0]
    t10 = Volume(full.truth["t10"].data, full.signal.affine)
    default = run_dce(full.signal, DCEParameters(rls="none"), brain_mask=full.masks["brain"], t10_map=t10)
    line = next(w for w in default.report["warnings"] if "no AIF mask given" in w)
    assert "0.1 mmol/kg" in line and "--dose" in line
    given = run_dce(full.signal, DCEParameters(rls="none", dose=0.1), brain_mask=full.masks["brain"], t10_map=t10)
    assert not any("mmol/kg" in w for w in given.report["warnings"] if "no AIF mask given" in w)

"""The relaxivity of the agent a DICOM series names, checked against the r1 the run converts with (session 23).

BBBAnomalyLib/dce/stated_relaxivity.py takes the published r1 of the agent named in ContrastBolusAgent /
ContrastBolusIngredient (matched as dce/stated_dose.py matches it) at the series' MagneticFieldStrength and, with a
population AIF, SPGR concentrations and the default r1, warns with the exact ``--relaxivity`` to pass where the two
differ by more than 15 % (the rule set before measuring). The r1 is offered, never applied: the maps are
bit-identical with or without the agent's name; a given --relaxivity wins; a measured AIF (which cancels the r1) is
recorded only. The DICOM series are written as in test_dce_header_dose.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bad_input_helpers import assert_refused, dce_signal
from test_dce_header_dose import write_dicom

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.volume import Acquisition, Volume
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.dce.stated_relaxivity import DEFAULT_R1, WARN_ABOVE, header_relaxivity, report_entry
from BBBAnomalyLib.io.dicom_contrast import EXTRA_KEY
from BBBAnomalyLib.phantoms.dce import make_dce_phantom

#: small and noiseless: the maps with and without the agent's name can be compared bit for bit
SMALL = {"slices": 2, "seed": 0, "duration": 150.0, "frame_interval": 5.0, "snr": None}
GADOTERATE_15 = 3.32  # /s/mM, human plasma at 1.5 T (Szomolanyi et al. 2019)


def _acquisition(record, field=1.5, **kw):
    return Acquisition(field_strength=field, extra={EXTRA_KEY: record} if record is not None else {}, **kw)


# --- the table and the matching --------------------------------------------------------------------------------
def test_the_default_is_the_parameters_default():
    assert DEFAULT_R1 == DCEParameters().relaxivity


@pytest.mark.parametrize("record, field, agent, r1", [
    ({"agent": "Dotarem"}, 1.5, "gadoterate meglumine", 3.32),
    ({"agent": "GADOTERIC ACID 0.5 MMOL/ML"}, 2.89, "gadoterate meglumine", 3.00),  # Siemens' 2.89 T is 3 T
    ({"agent": "Gadovist", "patient_weight_kg": 75}, 3.0, "gadobutrol", 4.97),
    ({"ingredient": "MultiHance"}, 1.5, "gadobenate dimeglumine", 6.2),  # named in the ingredient
    ({"agent": "Gd-DTPA-BMA"}, 3.0, "gadodiamide", 3.9),  # gadodiamide, not gadopentetate
    ({"agent": "ProHance"}, 7.0, "gadoteridol", 3.21),
])
def test_the_agents_r1_at_the_series_field(record, field, agent, r1):
    stated = header_relaxivity(_acquisition(record, field))
    assert stated["agent"] == agent and stated["r1"] == r1 and "why_not" not in stated


@pytest.mark.parametrize("record, field, words", [
    ({"agent": "Dotarem"}, None, ("no MagneticFieldStrength",)),
    ({"agent": "Dotarem"}, 1.0, ("near 1 T",)),  # r1 rises towards low fields: nothing guessed
    ({"agent": "contrast"}, 1.5, ("'contrast'", "not an agent")),
    ({"agent": "Gadovist / Dotarem"}, 1.5, ("2 agents",)),
    ({"agent": "Elucirem"}, 1.5, ("high-relaxivity",)),
    ({"agent": "Dotarem", "differs": {"ingredient": ["GADOLINIUM", "IODINE"]}}, 1.5, ("different agents",)),
])
def test_no_r1_where_the_header_does_not_define_one(record, field, words):
    stated = header_relaxivity(_acquisition(record, field))
    assert stated["r1"] is None and all(w in stated["why_not"] for w in words), stated["why_not"]


@pytest.mark.parametrize("record", [None, {}, {"patient_weight_kg": 75.0}, {"volume_ml": 15.0}])
def test_a_header_naming_no_agent_gains_nothing(record):
    """A series without an agent tag (most carry PatientWeight) has no r1 entry at all."""
    assert header_relaxivity(_acquisition(record)) is None


@pytest.mark.parametrize("agent, field, warned", [
    ("ProHance", 1.5, True),   # 3.80: -15.6 %
    ("Omniscan", 3.0, False),  # 3.9: -13.3 %
    ("MultiHance", 3.0, True),  # 5.4: +20 %
    ("Gadovist", 3.0, False),  # 4.97: +10.4 %
    ("Magnevist", 1.5, False),  # 4.3: -4.4 %
])
def test_the_fifteen_per_cent_rule(agent, field, warned):
    """Both sides of the rule, above and below the default, with the table's own values."""
    warnings = []
    entry = report_entry(_acquisition({"agent": agent}, field), DCEParameters(), "spgr", "parker", warnings)
    assert (abs(entry["differs_by"]) > WARN_ABOVE) is warned
    assert entry.get("warned", False) is warned and bool(warnings) is warned
    if warned:
        assert f"--relaxivity {entry['r1']:g}" in warnings[0]


def test_every_agent_whose_dose_is_known_has_an_r1_or_a_caveat():
    """The agents dce/stated_dose.py matches are the ones whose r1 is looked up: none falls through unsaid."""
    from BBBAnomalyLib.dce.stated_dose import AGENTS
    from BBBAnomalyLib.dce.stated_relaxivity import HIGH_RELAXIVITY, R1_BY_AGENT

    assert {agent.name for agent in AGENTS} == set(R1_BY_AGENT) | set(HIGH_RELAXIVITY)


def test_a_high_relaxivity_agent_is_warned_without_a_number():
    warnings = []
    entry = report_entry(_acquisition({"agent": "Vueway"}, 3.0), DCEParameters(), "spgr", "parker", warnings)
    assert entry["agent"] == "gadopiclenol" and entry["r1"] is None and entry["warned"] is True
    assert "2-3 times too high" in warnings[0] and "--relaxivity" in warnings[0]


def test_no_field_strength_warns_where_every_field_is_off():
    """Gadoterate is 3.32 / 3.00 / 2.84 at 1.5 / 3 / 7 T: below the default by more than 15 % at every field, so the
    missing field strength does not hide it; gadobutrol (4.78 / 4.97 / 3.83) is not off at every field."""
    warnings = []
    entry = report_entry(_acquisition({"agent": "Dotarem"}, None), DCEParameters(), "spgr", "parker", warnings)
    assert entry["warned"] is True and "no MagneticFieldStrength" in warnings[0] and "3.32 at 1.5 T" in warnings[0]
    warnings = []
    entry = report_entry(_acquisition({"agent": "Gadovist"}, None), DCEParameters(), "spgr", "parker", warnings)
    assert "warned" not in entry and not warnings


@pytest.mark.parametrize("mode", ["relative", "concentration"])
def test_no_r1_used_no_warning(mode):
    warnings = []
    entry = report_entry(_acquisition({"agent": "Dotarem"}), DCEParameters(), mode, "parker", warnings)
    assert not warnings and "no r1 was used" in entry["note"]


# --- the run ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gadoterate():
    """The DCE object made with gadoterate's r1 at 1.5 T."""
    return make_dce_phantom(**SMALL, relaxivity=GADOTERATE_15)


def _run(phantom, record, field=1.5, aif_mask=None, **params):
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    series = Volume(phantom.signal.data.copy(), phantom.signal.affine, phantom.signal.times,
                    _acquisition(record, field, flip_angle=phantom.signal.acquisition.flip_angle,
                                 repetition_time=phantom.signal.acquisition.repetition_time))
    return run_dce(series, DCEParameters(rls="none", **params), aif_mask=aif_mask,
                   brain_mask=phantom.masks["brain"], t10_map=t10)


@pytest.fixture(scope="module")
def runs(gadoterate):
    return {"plain": _run(gadoterate, None), "named": _run(gadoterate, {"agent": "Dotarem"}),
            "right": _run(gadoterate, None, relaxivity=GADOTERATE_15)}


def test_the_agent_is_warned_with_the_r1_to_pass(runs):
    warning = [w for w in runs["named"].report["warnings"] if "published r1" in w]
    assert len(warning) == 1
    assert "gadoterate" in warning[0] and "1.5 T" in warning[0] and "--relaxivity 3.32" in warning[0]
    assert "-26 %" in warning[0] and "Szomolanyi" in warning[0]
    entry = runs["named"].report["conversion"]["header_relaxivity"]
    assert entry["r1"] == GADOTERATE_15 and entry["used"] is False and entry["warned"] is True
    assert entry["differs_by"] == round(GADOTERATE_15 / 4.5 - 1, 4)
    assert entry["compared_with"] == {"r1": 4.5, "source": "the default r1"}


def test_the_warning_is_the_maps_error(runs, gadoterate):
    """With the Parker AIF the maps read r1 agent / r1 used times those at the right r1 (the noiseless object: the
    SPGR inversion gives ΔR1 exactly and the fit is linear in the tissue's concentration)."""
    rim = gadoterate.masks["enhancing"]
    for name in ("ktrans", "vp"):
        ratio = np.median(runs["named"].maps[name].data[rim]) / np.median(runs["right"].maps[name].data[rim])
        assert ratio == pytest.approx(GADOTERATE_15 / 4.5, rel=1e-3), name


def test_the_header_does_not_change_the_maps(runs):
    """Offered, not applied: the maps and the AIF are those of the same series without the agent's name, bit for
    bit; the report differs by the entry and its warning only."""
    plain, named = runs["plain"], runs["named"]
    assert plain.maps.keys() == named.maps.keys()
    for name, volume in plain.maps.items():
        assert np.array_equal(named.maps[name].data, volume.data), name
    assert np.array_equal(named.aif, plain.aif)
    assert "header_relaxivity" not in plain.report["conversion"]
    assert [w for w in named.report["warnings"] if "published r1" not in w] == plain.report["warnings"]


def test_a_given_relaxivity_wins(gadoterate, runs):
    """--relaxivity given (any value but the default): used, the header compared with it, no warning."""
    given = _run(gadoterate, {"agent": "Dotarem"}, relaxivity=4.0)
    alone = _run(gadoterate, None, relaxivity=4.0)
    assert not any("published r1" in w for w in given.report["warnings"])
    entry = given.report["conversion"]["header_relaxivity"]
    assert entry["compared_with"] == {"r1": 4.0, "source": "--relaxivity"}
    assert "--relaxivity 4 was used" in entry["note"]
    for name, volume in alone.maps.items():
        assert np.array_equal(given.maps[name].data, volume.data), name
    right = _run(gadoterate, {"agent": "Dotarem"}, relaxivity=GADOTERATE_15)
    assert right.report["conversion"]["header_relaxivity"]["differs_by"] == 0.0
    for name, volume in runs["right"].maps.items():
        assert np.array_equal(right.maps[name].data, volume.data), name


def test_a_measured_aif_is_recorded_only_and_cancels_the_r1(gadoterate):
    """A drawn AIF is converted with the same r1 as the tissue: no warning, a note; and the wrong r1 moves its Ktrans
    by float32 rounding only (the exact arithmetic cancels it; measured: at most 2e-5 on the 6-slice object)."""
    wrong = _run(gadoterate, {"agent": "Dotarem"}, aif_mask=gadoterate.masks["aif"])
    right = _run(gadoterate, None, aif_mask=gadoterate.masks["aif"], relaxivity=GADOTERATE_15)
    entry = wrong.report["conversion"]["header_relaxivity"]
    assert "measured AIF" in entry["note"] and "warned" not in entry
    assert not any("published r1" in w for w in wrong.report["warnings"])
    brain = gadoterate.masks["brain"]
    a, b = wrong.maps["ktrans"].data[brain], right.maps["ktrans"].data[brain]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


# --- the command line on a DICOM folder ------------------------------------------------------------------------
DOTAREM = {"0018|0010": "Dotarem"}  # (write_dicom's series is at 3 T: gadoterate's 3.00)


def test_cli_warns_and_the_suggested_relaxivity_removes_it(tmp_path, capsys):
    folder = write_dicom(tmp_path / "dcm", dce_signal(), DOTAREM)
    out = tmp_path / "out"
    code = main(["dce", str(folder), "--t10", "1.4", "--rls", "none", "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    entry = report["conversion"]["header_relaxivity"]
    assert entry["r1"] == 3.0 and entry["field_strength_t"] == 3.0 and entry["warned"] is True
    assert "--relaxivity 3 " in printed.out and any("--relaxivity 3 " in w for w in report["warnings"])
    again = tmp_path / "again"
    assert main(["dce", str(folder), "--t10", "1.4", "--rls", "none", "--relaxivity", "3", "--out", str(again),
                 "--quiet"]) == 0
    report = json.loads((again / "report.json").read_text(encoding="utf-8"))
    assert report["parameters"]["relaxivity"] == 3.0 and report["conversion"]["header_relaxivity"]["differs_by"] == 0
    assert not any("published r1" in w for w in report["warnings"])


def test_relaxivity_header_applies_the_agents_r1(tmp_path, capsys):
    """--relaxivity header: gadoterate's 3.00 at 3 T, exactly as --relaxivity 3; the report says so and the rerun
    configuration keeps 'header'."""
    folder = write_dicom(tmp_path / "dcm", dce_signal(), DOTAREM)
    outs = {}
    for name, value in (("header", "header"), ("number", "3")):
        outs[name] = tmp_path / name
        code = main(["dce", str(folder), "--t10", "1.4", "--rls", "none", "--relaxivity", value, "--out",
                     str(outs[name]), "--quiet"])
        assert code == 0, capsys.readouterr().err
    report = json.loads((outs["header"] / "report.json").read_text(encoding="utf-8"))
    entry = report["conversion"]["header_relaxivity"]
    assert report["parameters"]["relaxivity"] == 3.0 and entry["used"] is True
    assert "--relaxivity header" in entry["note"] and entry["compared_with"]["source"] == "--relaxivity header"
    assert report["configuration"]["options"]["relaxivity"] == "header"
    assert not any("published r1" in w for w in report["warnings"])
    from BBBAnomalyLib.io import read_volume
    for name in ("ktrans", "vp", "ve"):
        assert np.array_equal(read_volume(outs["header"] / f"{name}.nii.gz").data,
                              read_volume(outs["number"] / f"{name}.nii.gz").data), name


@pytest.mark.parametrize("contrast, words", [
    (None, ("--relaxivity header", "names no contrast agent", "--relaxivity R1")),
    ({"0018|0010": "contrast"}, ("--relaxivity header", "'contrast'", "--relaxivity R1")),
    ({"0018|0010": "Dotarem", "0018|0087": "1"}, ("--relaxivity header", "near 1 T", "3.32 at 1.5 T")),
])
def test_relaxivity_header_is_refused_where_the_header_defines_none(tmp_path, capsys, contrast, words):
    folder = write_dicom(tmp_path / "dcm", dce_signal(n_frames=12), contrast)
    assert_refused(["dce", str(folder), "--t10", "1.4", "--rls", "none", "--relaxivity", "header", "--out",
                    str(tmp_path / "out")], capsys, folder, tmp_path / "out", words)

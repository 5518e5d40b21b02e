"""The default r1 told apart from an r1 the user chose (session 24).

Before, ``--relaxivity`` defaulted to 4.5 and ``dce/stated_relaxivity.py`` took any run at 4.5 for the default: a
user who passed ``--relaxivity 4.5`` on purpose (having checked the agent) was warned that "the default 4.5" was
used and told to pass another r1, and the report said the r1 came from "the default r1". Now the default is None,
resolved once by ``DCEParameters`` (the field then holds the 4.5 converted with, ``relaxivity_given`` whether it
was chosen), as the dose (``--dose``: None = the population AIF's own dose) already was. The maps do not change:
the default and a given 4.5 convert with the same float.

The series: a small DCE DICOM series naming Dotarem (gadoterate, 3.32 /s/mM at 1.5 T) at 1.5 T, `--t10 1.4 --rls
none` with the Parker population AIF (where the r1 does not cancel).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from bad_input_helpers import dce_signal
from test_dce_header_dose import write_dicom
from test_io_dicom_round17 import _keep_locale  # noqa: F401  (autouse: the writer's locale)

from BBBAnomalyLib.app.pipelines import get_pipeline
from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.core.volume import Acquisition
from BBBAnomalyLib.dce.parameters import DEFAULT_RELAXIVITY, DCEParameters
from BBBAnomalyLib.dce.stated_relaxivity import DEFAULT_R1, report_entry
from BBBAnomalyLib.io import read_volume

CLI = ["--t10", "1.4", "--rls", "none", "--quiet", "--format", "nrrd"]
MAPS = ("ktrans", "ve", "vp", "kep", "fit_r2", "delay")
#: Dotarem (0.5 M) at 1.5 T, 7.5 ml for 75 kg: the header states 0.05 mmol/kg
HALF_DOTAREM_15 = {"0018|0010": "Dotarem", "0018|1041": "7.5", "0010|1030": "75", "0018|0087": "1.5"}


def _dotarem(field=1.5) -> Acquisition:
    return Acquisition(field_strength=field, extra={"contrast_bolus": {"agent": "Dotarem"}})


def test_the_default_is_resolved_once_and_a_given_value_is_a_choice():
    default, given = DCEParameters(), DCEParameters(relaxivity=4.5)
    assert DEFAULT_R1 == DEFAULT_RELAXIVITY == 4.5
    assert default.relaxivity == given.relaxivity == 4.5 and isinstance(default.relaxivity, float)
    assert default.relaxivity_given is False and given.relaxivity_given is True
    # the run's private copy (core.checks.parameters: dataclasses.replace) keeps what was decided
    assert dataclasses.replace(default).relaxivity_given is False and dataclasses.replace(given).relaxivity_given
    assert DCEParameters(relaxivity=3.0).relaxivity_given is True
    assert DCEParameters(relaxivity=3.0, relaxivity_given=False).relaxivity_given is True  # another number is chosen
    assert default.to_json()["relaxivity"] == 4.5 and default.to_json()["relaxivity_given"] is False
    # the panel's worker builds the parameters from the job's values: its "unknown" is None
    dce = get_pipeline("dce")
    assert dce.make_parameters({"relaxivity": None}).relaxivity_given is False
    assert dce.make_parameters({"relaxivity": 4.5}).relaxivity_given is True
    assert dce.default_parameters()["relaxivity"] is None  # the panel's field starts at "unknown"


def test_a_given_default_value_is_compared_not_warned_about():
    warnings = []
    entry = report_entry(_dotarem(), DCEParameters(), "spgr", "parker", warnings)
    assert entry["warned"] is True and len(warnings) == 1 and "the default 4.5" in warnings[0]
    assert entry["compared_with"] == {"r1": 4.5, "source": "the default r1"}
    warnings = []
    entry = report_entry(_dotarem(), DCEParameters(relaxivity=4.5), "spgr", "parker", warnings)
    assert warnings == [] and "warned" not in entry
    assert entry["compared_with"] == {"r1": 4.5, "source": "--relaxivity"}
    assert "--relaxivity 4.5 was used" in entry["note"] and entry["differs_by"] == round(3.32 / 4.5 - 1, 4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (maps, report, output folder)} of `bbbanomaly dce` on one DICOM series naming Dotarem at 1.5 T and
    stating a half dose: without --relaxivity/--dose, with --relaxivity 4.5, with --dose 0.1, and the rerun of the
    first from its report."""
    root = tmp_path_factory.mktemp("relaxivity_default")
    folder = write_dicom(root / "dcm", dce_signal(), HALF_DOTAREM_15)
    out = {}
    for name, extra in (("default", []), ("given", ["--relaxivity", "4.5"]), ("dose", ["--dose", "0.1"])):
        assert cli_main(["dce", str(folder), *CLI, *extra, "--out", str(root / name)]) == 0
    assert cli_main(["rerun", str(root / "default" / "report.json"), "--out", str(root / "rerun"), "--quiet"]) == 0
    for name in ("default", "given", "dose", "rerun"):
        report = json.loads((root / name / "report.json").read_text(encoding="utf-8"))
        out[name] = ({m: read_volume(root / name / f"{m}.nrrd").data for m in MAPS}, report, root / name)
    return out


def _r1_warnings(report) -> list[str]:
    return [w for w in report["warnings"] if "published r1" in w]


def test_the_command_line_tells_a_given_45_from_the_default(runs):
    (default_maps, default, _), (given_maps, given, _) = runs["default"], runs["given"]
    assert len(_r1_warnings(default)) == 1 and "--relaxivity 3.32" in _r1_warnings(default)[0]
    assert _r1_warnings(given) == []
    assert given["conversion"]["header_relaxivity"]["compared_with"]["source"] == "--relaxivity"
    assert default["parameters"]["relaxivity"] == given["parameters"]["relaxivity"] == 4.5
    assert (default["parameters"]["relaxivity_given"], given["parameters"]["relaxivity_given"]) == (False, True)
    for name in MAPS:  # the same r1, the same float32 maps
        assert np.any(default_maps[name] != 0) and np.array_equal(default_maps[name], given_maps[name]), name
    # what `bbbanomaly rerun` replays: the default stays the default (None), and the rerun warns as the run did
    assert default["configuration"]["options"]["relaxivity"] is None
    assert given["configuration"]["options"]["relaxivity"] == 4.5
    rerun_maps, rerun, _ = runs["rerun"]
    assert _r1_warnings(rerun) == _r1_warnings(default) and rerun["parameters"]["relaxivity_given"] is False
    assert all(np.array_equal(rerun_maps[name], default_maps[name]) for name in MAPS)


def test_the_dose_had_no_such_ambiguity(runs):
    """--dose defaults to None (the population AIF's own 0.1): a given 0.1 is compared with the header's 0.05, not
    warned about; the default is warned about. (Passes before session 24 too: the check that --dose needed no fix.)"""
    default, dose = runs["default"][1], runs["dose"][1]
    assert default["aif"]["header_dose"]["warned"] is True
    assert "warned" not in dose["aif"]["header_dose"] and dose["aif"]["header_dose"]["compared_with"] == {
        "dose_mmol_per_kg": 0.1, "source": "--dose"}
    assert not [w for w in dose["warnings"] if "DICOM header states" in w]
    assert all(np.array_equal(runs["dose"][0][name], runs["default"][0][name]) for name in MAPS)

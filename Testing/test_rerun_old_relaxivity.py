"""`bbbanomaly rerun` of a DCE report written before the default r1 was told from a given one (session 24).

Since session 24 ``--relaxivity`` defaults to None (DEFAULT_RELAXIVITY 4.5, resolved by DCEParameters) and a given
4.5 is a choice: the agent a DICOM header names is compared with it, not warned about. A report written before then
recorded ``relaxivity: 4.5`` in its configuration whether the user gave it or not (it was the default), and its
parameters hold no ``relaxivity_given``. Replayed as recorded, that 4.5 became a chosen r1 and the rerun lost the
header-relaxivity warning the recorded run had given. The rerun now replays such a 4.5 as the default; a report from
after the change (``relaxivity_given`` recorded) is replayed word for word.

The series: test_dce_relaxivity_default.py's, a small DCE DICOM series naming Dotarem (3.32 /s/mM) at 1.5 T.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from bad_input_helpers import dce_signal
from test_dce_header_dose import write_dicom
from test_dce_relaxivity_default import CLI, HALF_DOTAREM_15, MAPS
from test_io_dicom_round17 import _keep_locale  # noqa: F401  (autouse: the writer's locale)

from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.io import read_volume
from BBBAnomalyLib.rerun_command import build_args, load_configuration


def _old_style(report: dict) -> dict:
    """What a version before session 24 wrote for the same run: the default recorded as 4.5, no relaxivity_given."""
    old = json.loads(json.dumps(report))
    assert old["configuration"]["options"]["relaxivity"] is None
    old["configuration"]["options"]["relaxivity"] = 4.5
    del old["parameters"]["relaxivity_given"]
    return old


def _r1_warnings(report) -> list[str]:
    return [w for w in report["warnings"] if "published r1" in w]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (maps, report)}: the run without --relaxivity ("default"), with --relaxivity 4.5 ("given"), and the
    reruns of the given run's report, of an old-style copy of the default's and of an old-style copy of the given
    run's (which then cannot be told from the default: before session 24 nothing recorded the difference)."""
    root = tmp_path_factory.mktemp("rerun_relaxivity")
    folder = write_dicom(root / "dcm", dce_signal(), HALF_DOTAREM_15)
    for name, extra in (("default", []), ("given", ["--relaxivity", "4.5"])):
        assert cli_main(["dce", str(folder), *CLI, *extra, "--out", str(root / name)]) == 0
    reports = {n: json.loads((root / n / "report.json").read_text(encoding="utf-8")) for n in ("default", "given")}
    (root / "old").mkdir()
    (root / "old" / "report.json").write_text(json.dumps(_old_style(reports["default"])), encoding="utf-8")
    for name, report in (("rerun_given", root / "given" / "report.json"), ("rerun_old", root / "old" / "report.json")):
        assert cli_main(["rerun", str(report), "--out", str(root / name), "--quiet"]) == 0
    out = {}
    for name in ("default", "given", "rerun_given", "rerun_old"):
        report = json.loads((root / name / "report.json").read_text(encoding="utf-8"))
        out[name] = ({m: read_volume(root / name / f"{m}.nrrd").data for m in MAPS}, report)
    out["paths"] = root
    return out


def test_an_old_report_replays_its_45_as_the_default(runs):
    (default_maps, default), (old_maps, old) = runs["default"], runs["rerun_old"]
    assert len(_r1_warnings(default)) == 1 and "--relaxivity 3.32" in _r1_warnings(default)[0]
    assert _r1_warnings(old) == _r1_warnings(default)  # the header's r1 is warned about, as the recorded run did
    assert old["parameters"]["relaxivity_given"] is False
    assert old["conversion"]["header_relaxivity"]["compared_with"]["source"] == "the default r1"
    assert old["configuration"]["options"]["relaxivity"] is None
    assert all(np.array_equal(old_maps[m], default_maps[m]) for m in MAPS)  # the same r1: the same maps


def test_a_new_report_replays_a_given_45_as_given(runs):
    (given_maps, given), (again_maps, again) = runs["given"], runs["rerun_given"]
    assert _r1_warnings(given) == _r1_warnings(again) == []
    assert again["parameters"]["relaxivity_given"] is True
    assert again["conversion"]["header_relaxivity"]["compared_with"]["source"] == "--relaxivity"
    assert again["configuration"]["options"]["relaxivity"] == 4.5
    assert all(np.array_equal(again_maps[m], given_maps[m]) for m in MAPS)


def test_only_an_old_dce_reports_default_value_is_replaced(runs, tmp_path, capsys):
    """The rule, option by option: only a dce report without relaxivity_given, and only its 4.5; the rerun says so."""
    given = runs["given"][1]
    cases = {  # report -> the relaxivity the rerun's namespace gets
        "new_given": (given, 4.5),
        "old_default": (_old_style(runs["default"][1]), None),
        "old_other": (_old_style(runs["default"][1]), 3.0),
        "old_header": (_old_style(runs["default"][1]), "header"),
    }
    cases["old_other"][0]["configuration"]["options"]["relaxivity"] = 3.0
    cases["old_header"][0]["configuration"]["options"]["relaxivity"] = "header"
    for name, (report, expected) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(report), encoding="utf-8")
        config = load_configuration(path)
        assert build_args(config, out=str(tmp_path / f"out_{name}")).relaxivity == expected, name
        assert bool(config["notes"]) is (name == "old_default"), name
    # the rerun of an old report says that its 4.5 is replayed as the default (--quiet too, as the versions warning)
    old = runs["paths"] / "old" / "report.json"
    capsys.readouterr()
    assert cli_main(["rerun", str(old), "--out", str(tmp_path / "said"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "note: the report predates" in printed and "replayed as the default r1" in printed

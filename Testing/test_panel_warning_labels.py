"""The panel's warnings name its fields beside the command line's flags (session 24, BBBAnomalyLib/app/flag_labels.py).

The library's warnings are written for the command line: "run again with --relaxivity 3.32", "give --dose for another
dose". The panel showed them as they are, to a user who sets the same things in its fields. Now its log and status line
follow such a flag (and its value) with the label of the field that sets it, "(panel: Relaxivity r1, Advanced
section)"; a flag the panel has no field for (--population-aif) is left alone, and the report keeps the command line's
words. Which field a flag sets is read from the command's parser and the pipeline's spec.

The warnings are those of a real `bbbanomaly dce` run on a small DICOM series naming Dotarem at 1.5 T and stating a
half dose (test_dce_relaxivity_default.py's); they reach the panel through its own ``onRunDone`` (no worker process:
the run's loading is stood in for, its warnings are the command line's).
"""

from __future__ import annotations

import copy
import json
import time
from types import SimpleNamespace

import pytest
from bad_input_helpers import dce_signal
from test_dce_header_dose import write_dicom
from test_dce_relaxivity_default import CLI, HALF_DOTAREM_15
from test_io_dicom_round17 import _keep_locale  # noqa: F401  (autouse: the writer's locale)
from test_slicer_widget import panel  # noqa: F401  (fixture)

import slicer_standins as standins
from BBBAnomalyLib.app.flag_labels import FIELD_OF_DEST, FIELD_OF_VALUE, flag_fields, panel_fields, with_panel_labels
from BBBAnomalyLib.app.pipelines import PIPELINES
from BBBAnomalyLib.cli import build_parser
from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.config import leaf_parser

R1 = "run again with --relaxivity 3.32 (panel: Relaxivity r1, Advanced section) (or --relaxivity header;"
DOSE = "run again with --dose 0.05 (panel: Contrast dose (mmol/kg), Advanced section) (the header's dose"
PARKER = "(--population-aif parker), the curve of 0.1 mmol/kg: give --dose (panel: Contrast dose (mmol/kg), Advanced"


@pytest.fixture(scope="module")
def cli_warnings(tmp_path_factory):
    """The warnings of `bbbanomaly dce FOLDER --t10 1.4 --rls none` on the Dotarem series (no --relaxivity, --dose)."""
    root = tmp_path_factory.mktemp("warning_labels")
    folder = write_dicom(root / "dcm", dce_signal(), HALF_DOTAREM_15)
    assert cli_main(["dce", str(folder), *CLI, "--out", str(root / "run")]) == 0
    return json.loads((root / "run" / "report.json").read_text(encoding="utf-8"))["warnings"]


def test_a_flag_is_followed_by_the_field_that_sets_it(cli_warnings):
    labelled = [with_panel_labels("dce", w) for w in cli_warnings]
    assert any(R1 in w for w in labelled) and any(DOSE in w for w in labelled) and any(PARKER in w for w in labelled)
    assert not any("(panel:" in w for w in cli_warnings)  # the report: the command line's words
    for before, after in zip(cli_warnings, labelled):  # nothing but the labels added
        assert after.replace(" (panel: Relaxivity r1, Advanced section)", "").replace(
            " (panel: Contrast dose (mmol/kg), Advanced section)", "") == before
        assert after.count("(panel:") == len({f for f in ("--relaxivity", "--dose") if f in before})  # first only
    assert "--population-aif parker)" in with_panel_labels("dce", "x (--population-aif parker)")  # no such field
    # a value-dependent field, a flag without a value, numbers after a flag that takes several, another pipeline
    assert with_panel_labels("dce", "use --aif auto or --aif-mask") == (
        "use --aif auto (panel: Automatic AIF) or --aif-mask (panel: AIF region)")
    assert with_panel_labels("dsc", "use --aif auto; give --te 0.015 0.045.") == (
        "use --aif auto; give --te 0.015 0.045 (panel: Echo time (TE)).")
    assert with_panel_labels("dmri", "--no-opening") == "--no-opening (panel: 3³ opening, Advanced section)"
    assert with_panel_labels("dce", "--t10s or --t10") == "--t10s or --t10 (panel: T10 (s))"  # whole flags only
    assert with_panel_labels("no-such-pipeline", "give --dose 0.1") == "give --dose 0.1"


def test_every_mapped_flag_names_a_field_the_panel_has():
    """The exceptions to "destination = field name" name a real option and a real field (they cannot go stale)."""
    parser = build_parser()
    dests = {name: {a.dest for a in leaf_parser(parser, [name])._actions} for name in PIPELINES}
    fields = {name: panel_fields(name) for name in PIPELINES}
    for dest, field in FIELD_OF_DEST.items():
        assert any(dest in dests[p] and field in fields[p] for p in PIPELINES), (dest, field)
    for (dest, _), field in FIELD_OF_VALUE.items():
        assert any(dest in dests[p] and field in fields[p] for p in PIPELINES), (dest, field)
    for name in PIPELINES:
        labels = {label for _, by_value in flag_fields(name).values() for label in by_value.values()}
        assert labels <= set(fields[name].values()), name
    assert "--population-aif" not in flag_fields("dce") and "--relaxivity" in flag_fields("dce")


def test_the_panel_shows_the_labels_in_its_log_and_status_only(panel, cli_warnings, monkeypatch):  # noqa: F811
    module, widget, slicer = panel
    ui = widget.ui
    standins.SLOT_ERRORS.clear()
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ktrans")
    node.SetAttribute("BBBAnomaly.RunName", "labels")
    report = {"warnings": list(cli_warnings)}
    outputs = SimpleNamespace(map_nodes={"ktrans": node}, report=report, output_dir="")
    monkeypatch.setattr(widget.logic, "finishRun", lambda *args, **kwargs: outputs)
    runner = SimpleNamespace(cancelled=False, finished=False)
    monkeypatch.setattr(widget, "runner", runner)
    monkeypatch.setattr(widget, "runRequest", SimpleNamespace(pipeline="dce"))
    monkeypatch.setattr(widget, "lastRun", None)
    widget.runStarted = time.monotonic()
    ui.logTextEdit.clear()
    event = {"event": "done", "warnings": list(cli_warnings)}
    original = copy.deepcopy(event)
    widget.onRunDone(runner, event)
    log, status = ui.logTextEdit.toPlainText(), ui.statusLabel.text
    for text in (R1, DOSE, PARKER):
        assert text in log and text in status, text
    assert status.startswith("Done in") and status.count("\nWarning: ") == len(cli_warnings)
    assert event == original and report["warnings"] == cli_warnings  # the run's words stay the command line's
    assert standins.SLOT_ERRORS == []


def test_a_refusal_names_the_field_in_the_status_log_and_dialog(panel, monkeypatch):  # noqa: F811
    """A run refused in one line ("give --t10 ..."): the panel's status, log and error dialog follow the flag with its
    field, as for warnings; the worker's event keeps the command line's words."""
    module, widget, slicer = panel
    ui = widget.ui
    standins.SLOT_ERRORS.clear()
    line = "the AIF peaks at 1.05e+03 mM: give a T10 map or --t10, or draw --aif-mask on a large artery"
    event = {"event": "error", "message": line}
    runner = SimpleNamespace(poll=lambda: [event], finished=False, cancelled=False)
    monkeypatch.setattr(widget, "runner", runner)
    monkeypatch.setattr(widget, "runRequest", SimpleNamespace(pipeline="dce"))
    ui.logTextEdit.clear()
    dialogs = len(standins.DIALOGS)
    widget.onPoll()
    want = "give a T10 map or --t10 (panel: T10 (s)), or draw --aif-mask (panel: AIF region) on a large artery"
    assert want in ui.statusLabel.text and want in ui.logTextEdit.toPlainText()
    assert any(want in str(d) for d in standins.DIALOGS[dialogs:]), standins.DIALOGS[dialogs:]
    assert event["message"] == line and standins.SLOT_ERRORS == []

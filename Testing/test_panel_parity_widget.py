"""The panel's parity with the command line, driven as a user drives it (the stand-in widgets of
Testing/slicer_standins.py, which follow PythonQt's rules, over a real slicer-core scene; session 24): the DCE
Relaxivity field shows the r1 of the agent the DICOM header names, with a Use button, and a run through the
background worker with it has the maps of `bbbanomaly dce FOLDER --relaxivity header`. One worker run serves
every assert (the worker process is the slow part)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from test_panel_header_facts import CLI, slicer_loaded_dce
from test_panel_header_facts_widget import fresh_scene
from test_panel_parity import GADOTERATE_15, MAPS, dotarem, job_maps, relaxivity_warnings  # noqa: F401  (fixture)
from test_slicer_widget import apply_and_wait, panel, select  # noqa: F401  (fixture)

import slicer_standins as standins
from BBBAnomalyLib.app import mrml
from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.io import read_volume, write_volume


def test_the_relaxivity_field_offers_the_headers_r1_and_use_gives_the_command_lines_maps(panel, dotarem):
    module, widget, slicer = panel
    ui = widget.ui
    fresh_scene(slicer)
    standins.SLOT_ERRORS.clear()
    folder, series, _, (header_maps, header_report, printed) = dotarem
    _, proxy, _ = slicer_loaded_dce(folder, series.affine)

    select(ui.pipelineSelector, "dce")
    r1 = widget.parameterWidgets["relaxivity"]
    row, label, use = widget.headerHintRows["relaxivity"]
    tooltip, default = r1.toolTip, widget.parameterValues()["relaxivity"]
    ui.inputSelector.setCurrentNode(proxy)
    assert row.visible and use.visible
    assert label.text == "header: 3.32 /s/mM (gadoterate meglumine at 1.5 T)"
    assert "Szomolanyi" in r1.toolTip and r1.toolTip.startswith(tooltip)
    assert "Relaxivity r1 (Advanced section): header: 3.32 /s/mM" in ui.inputInfoLabel.text
    assert widget.parameterValues()["relaxivity"] == default  # offered, not applied

    use.click()  # the user takes the header's r1: the field, the request and the scene's parameter node have it
    assert r1.value == GADOTERATE_15
    assert widget.collectRequest().parameters["relaxivity"] == pytest.approx(GADOTERATE_15)
    assert '"relaxivity": 3.32' in widget._parameterNode.GetParameter("dce.Parameters")

    # a run as the command line's (--t10 1.4 --rls none, the population AIF)
    select(ui.aifSourceSelector, "auto")
    select(ui.deviceSelector, "cpu")
    select(widget.parameterWidgets["rls"], "none")
    widget.parameterWidgets["aif_auto"].checked = False
    widget.parameterWidgets["t10"].value = float(CLI[1])
    apply_and_wait(widget)
    assert ui.statusLabel.text.startswith("Done in"), (ui.statusLabel.text, ui.logTextEdit.toPlainText())
    report = widget.lastRun["outputs"].report
    assert report["parameters"]["relaxivity"] == header_report["parameters"]["relaxivity"] == GADOTERATE_15
    assert relaxivity_warnings(report) == relaxivity_warnings(header_report) == []
    got = job_maps(widget.lastRun["outputs"].output_dir)
    for name in MAPS:
        assert np.array_equal(got[name], header_maps[name]), (name, np.abs(got[name] - header_maps[name]).max())

    # 4. what the command line printed after the same run (its summary: the AIF, the medians) is in the panel's log
    log = ui.logTextEdit.toPlainText()
    lines = printed.splitlines()
    summary = [lines[0].split(" written to ")[0]] + [line.rstrip() for line in lines[1:] if line.strip()
                                                     and not line.strip().startswith(("maps:", "warning:"))]
    assert len(summary) >= 3 and "AIF: parker" in printed
    assert all(line in log for line in summary), (summary, log)

    # 3. the ROI ratio table: the notes `bbbanomaly roi-stats` prints under the same table are beside it
    reference, _ = mrml.reference_grid(proxy)
    tumor, nawm = np.zeros(reference.spatial_shape, bool), np.zeros(reference.spatial_shape, bool)
    tumor[1:4, 1:9, :], nawm[6:9, 1:9, :] = True, True  # (the artery is at x = 4)
    segmentation, ids = mrml.add_segmentation({"tumor": tumor, "nawm": nawm}, reference, "regions")
    for selector, key in ((ui.tumorSegmentSelector, "tumor"), (ui.nawmSegmentSelector, "nawm")):
        selector.setCurrentNode(segmentation)
        selector.setCurrentSegmentID(ids[key])
    ui.ratiosButton.click()
    names, rows = mrml.table_rows(widget.ratioTableNode)
    cli_notes = roi_stats_notes(folder.parent / "header", tumor, nawm)  # (the fixture's --relaxivity header run)
    ratio_notes = [n for n in cli_notes if n.startswith("note: ratio n/a for ")]
    log = ui.logTextEdit.toPlainText()
    for note in cli_notes:  # a map's caveat is said in the panel's words (the table's caveat column has it too)
        name, _, caveat = note.removeprefix("note: ").partition(": ")
        assert note in log or (name in MAPS and f"Read the ROI mean of {name} with care: {caveat}" in log), note
    assert ratio_notes and len(cli_notes) > len(ratio_notes)  # (both kinds were checked)
    why = dict(zip((r[0] for r in rows), (r[names.index("ratio note")] for r in rows)))
    for note in ratio_notes:  # the table says it too, in the row of the map whose ratio is n/a
        name = note.split(" of ", 1)[1].split(":", 1)[0]
        assert note.removeprefix("note: ratio n/a for ") in why[name], (note, why)
    assert standins.SLOT_ERRORS == []


def roi_stats_notes(out, tumor, nawm) -> list[str]:
    """The "note:" lines of `bbbanomaly roi-stats` on the command line's maps in ``out`` with these masks."""
    affine = read_volume(out / "ktrans.nrrd").affine
    for name, mask in (("tumor", tumor), ("nawm", nawm)):
        write_volume(Volume(mask.astype(np.uint8), affine), out.parent / f"{name}.nii.gz")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(["roi-stats", *(str(out / f"{m}.nrrd") for m in MAPS),
                         "--roi", str(out.parent / "tumor.nii.gz"), "--reference", str(out.parent / "nawm.nii.gz"),
                         "--roi-name", "tumor", "--reference-name", "NAWM"]) == 0
    return [line for line in printed.getvalue().splitlines() if line.startswith("note:")]


def test_the_relaxivity_field_starts_at_the_default_and_an_old_scenes_45_comes_back_as_it(panel):
    """The field's "unknown" is the default r1 (None to the worker: DCEParameters resolves it, and the header's agent
    is warned about); a 4.5 typed is a choice, kept as such in the scene. A scene saved before session 24 stored the
    default as 4.5 (and no format): it comes back as the default, so its runs warn as they did."""
    module, widget, slicer = panel
    ui = widget.ui
    fresh_scene(slicer)
    standins.SLOT_ERRORS.clear()
    select(ui.pipelineSelector, "dce")
    widget.buildParameterWidgets(widget.currentSpec())  # the form as built (the test above left 3.32 in the scene)
    r1 = widget.parameterWidgets["relaxivity"]
    assert widget.parameterValues()["relaxivity"] is None and r1.value == r1.minimum
    assert r1.specialValueText == "unknown" and "unknown = the default 4.5" in r1.toolTip
    r1.value = 4.5  # chosen
    node = widget._parameterNode
    assert widget.parameterValues()["relaxivity"] == 4.5 and node.GetParameter("dce.ParametersFormat") == "2"
    assert '"relaxivity": 4.5' in node.GetParameter("dce.Parameters")
    widget.restoreChoices()  # this session's scene: the 4.5 stays a choice
    assert widget.parameterValues()["relaxivity"] == 4.5
    node.UnsetParameter("dce.ParametersFormat")  # as a scene saved before session 24 holds it
    widget.restoreChoices()
    assert widget.parameterValues()["relaxivity"] is None and r1.value == r1.minimum
    stored = node.GetParameter("dce.Parameters").replace('"relaxivity": 4.5', '"relaxivity": 3.32')
    node.SetParameter("dce.Parameters", stored)  # (an old scene's other r1 was a choice: kept)
    widget.restoreChoices()
    assert widget.parameterValues()["relaxivity"] == GADOTERATE_15
    assert standins.SLOT_ERRORS == []

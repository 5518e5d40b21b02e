"""The dose a DICOM series states, in the Slicer panel, driven as a user drives it (the stand-in widgets of
Testing/slicer_standins.py, which follow PythonQt's rules, over a real slicer-core scene; session 23): the DCE
Contrast dose field shows the header's dose under it with a Use button, and a run through the background worker
warns about it as `bbbanomaly dce FOLDER` does."""

from __future__ import annotations

import pytest
from test_panel_header_facts import CLI, dce_dicom, header_dose_warnings, slicer_loaded_dce  # noqa: F401  (fixture)
from test_slicer_widget import apply_and_wait, panel, select  # noqa: F401  (fixture)

import slicer_standins as standins
from BBBAnomalyLib.app import mrml


def fresh_scene(slicer):
    slicer.mrmlScene.Clear(False)
    standins.new_scene(slicer)


def test_the_dose_field_shows_the_headers_dose_and_a_run_warns_as_the_command_line(panel, dce_dicom):
    module, widget, slicer = panel
    ui = widget.ui
    fresh_scene(slicer)
    standins.SLOT_ERRORS.clear()
    folder, series, cli_report = dce_dicom
    _, proxy, _ = slicer_loaded_dce(folder, series.affine)
    _, _, plain = mrml.add_series(series.__class__(series.data, series.affine, series.times), "no header")

    select(ui.pipelineSelector, "dce")
    dose = widget.parameterWidgets["dose"]
    row, label, use = widget.headerHintRows["dose"]
    tooltip = dose.toolTip
    ui.inputSelector.setCurrentNode(plain)  # no DICOM files: no hint
    assert not row.visible and dose.toolTip == tooltip and "header" not in ui.inputInfoLabel.text

    ui.inputSelector.setCurrentNode(proxy)
    assert row.visible and use.visible
    assert label.text == "header: 0.05 mmol/kg (3.75 ml gadobutrol, 75 kg)"
    assert "ContrastBolusTotalDose" in dose.toolTip and dose.toolTip.startswith(tooltip)
    assert "Contrast dose (mmol/kg) (Advanced section): header: 0.05 mmol/kg" in ui.inputInfoLabel.text
    assert dose.value == dose.minimum  # offered, not applied: still "unknown"

    # a run as the command line's (--t10 1.4 --rls none): the report's header_dose and warning are the CLI's
    select(ui.aifSourceSelector, "auto")
    select(ui.deviceSelector, "cpu")
    select(widget.parameterWidgets["rls"], "none")
    widget.parameterWidgets["aif_auto"].checked = False
    widget.parameterWidgets["t10"].value = float(CLI[1])
    apply_and_wait(widget)
    assert ui.statusLabel.text.startswith("Done in"), (ui.statusLabel.text, ui.logTextEdit.toPlainText())
    report = widget.lastRun["outputs"].report
    assert report["aif"]["header_dose"] == cli_report["aif"]["header_dose"]
    warned = header_dose_warnings(cli_report)
    assert header_dose_warnings(report) == warned and len(warned) == 1
    # the command line's words, each flag followed by the panel field that sets it (app/flag_labels.py, session 24)
    from BBBAnomalyLib.app.flag_labels import with_panel_labels

    assert "warning: " + with_panel_labels("dce", warned[0]) in ui.logTextEdit.toPlainText()
    assert "(panel: Contrast dose (mmol/kg)" in with_panel_labels("dce", warned[0])

    use.click()  # the user takes the header's dose: the field, the request and the scene's parameter node have it
    assert dose.value == 0.05
    assert widget.collectRequest().parameters["dose"] == pytest.approx(0.05)
    assert '"dose": 0.05' in widget._parameterNode.GetParameter("dce.Parameters")

    # another pipeline has no such field; back to DCE the hint is shown again for the same input
    select(ui.pipelineSelector, "dsc")
    assert widget.headerHintRows == {}
    select(ui.pipelineSelector, "dce")
    assert widget.headerHintRows["dose"][0].visible
    ui.inputSelector.setCurrentNode(None)
    assert not widget.headerHintRows["dose"][0].visible
    assert standins.SLOT_ERRORS == []

"""Dual-echo DSC in the Slicer panel, driven as a user drives it (the stand-in widgets of Testing/slicer_standins.py,
which follow PythonQt's rules, over a real slicer-core scene): the Second echo row and the TE2 field, the messages
that keep Apply disabled, and two runs through the background worker (two echo sequences; a sequence Slicer's
DICOM import mixed from a dual-echo DICOM series) whose maps are `bbbanomaly dsc`'s on the same data (session 23).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_panel_dual_echo import MAPS, cli_maps, dual_echo, slicer_loaded_sequence  # noqa: F401  (fixture)
from test_slicer_widget import apply_and_wait, panel, select  # noqa: F401  (fixture)

import slicer_standins as standins
from BBBAnomalyLib.app import mrml
from BBBAnomalyLib.core.volume import Volume


def fresh_scene(slicer):
    slicer.mrmlScene.Clear(False)
    standins.new_scene(slicer)


def node_map(node) -> np.ndarray:
    import slicer

    return np.swapaxes(slicer.util.arrayFromVolume(node), 0, 2).astype(np.float64)


def assert_maps_equal(outputs, want, exact):
    for name in MAPS:
        got, ref = node_map(outputs.map_nodes[name]), np.asarray(want[name], np.float64)
        if exact:
            assert np.array_equal(got, ref), (name, np.abs(got - ref).max())
        else:
            assert np.allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max()), (name, np.abs(got - ref).max())


def test_the_second_echo_row_and_te2_follow_the_pipeline_and_the_choices(panel, dual_echo):
    module, widget, slicer = panel
    ui = widget.ui
    fresh_scene(slicer)
    standins.SLOT_ERRORS.clear()
    _, echoes, _, _ = dual_echo
    _, _, first = mrml.add_series(echoes[0], "echo 1")
    _, _, second = mrml.add_series(echoes[1], "echo 2")
    short = Volume(echoes[1].data[..., :-1], echoes[1].affine, echoes[1].times[:-1], echoes[1].acquisition)
    _, _, fewer = mrml.add_series(short, "echo 2 short")

    select(ui.pipelineSelector, "t1flair")
    assert not ui.secondEchoSelector.visible and not ui.secondEchoTimeSpinBox.visible
    select(ui.pipelineSelector, "dsc")
    assert ui.secondEchoSelector.visible and ui.secondEchoLabel.text == "Second echo:"
    assert "dual-echo" in ui.secondEchoSelector.toolTip
    ui.inputSelector.setCurrentNode(first)
    assert ui.echoTimeSpinBox.value == 15.0
    assert not ui.secondEchoTimeSpinBox.visible  # no second echo: no TE2 field
    assert ui.applyButton.enabled, ui.applyButton.toolTip

    ui.secondEchoSelector.setCurrentNode(second)  # TE2 from the node's attributes, shown
    assert ui.secondEchoTimeSpinBox.visible and ui.secondEchoTimeSpinBox.value == 45.0
    assert ui.applyButton.enabled, ui.applyButton.toolTip
    request = widget.collectRequest()
    assert request.inputs["second_echo"] is second and request.inputs["series"] is first
    assert request.acquisition["second_echo_time"] == pytest.approx(0.045)

    ui.secondEchoTimeSpinBox.value = 0.0  # unknown: asked for
    assert not ui.applyButton.enabled and "Second echo time (TE2) (ms)" in ui.applyButton.toolTip
    ui.secondEchoTimeSpinBox.value = 45.0
    ui.secondEchoSelector.setCurrentNode(fewer)  # another frame count: said before Apply
    assert not ui.applyButton.enabled
    assert "19 frames" in ui.applyButton.toolTip and "20 frames" in ui.applyButton.toolTip, ui.applyButton.toolTip
    ui.secondEchoSelector.setCurrentNode(first)
    assert not ui.applyButton.enabled and "itself" in ui.applyButton.toolTip

    ui.secondEchoSelector.setCurrentNode(None)  # no second echo: TE2 back to unknown and hidden
    assert ui.secondEchoTimeSpinBox.value == 0.0 and not ui.secondEchoTimeSpinBox.visible
    assert ui.applyButton.enabled, ui.applyButton.toolTip
    ui.secondEchoTimeSpinBox.value = 45.0  # a TE2 typed (e.g. by a script) without its series: one message
    assert not ui.applyButton.enabled and "a Second echo time (TE2) was entered" in ui.applyButton.toolTip

    # the choice is kept in the parameter node (saved with the scene)
    ui.secondEchoTimeSpinBox.value = 0.0
    ui.secondEchoSelector.setCurrentNode(second)
    assert widget._parameterNode.GetNodeReference("SecondEcho") is second
    select(ui.pipelineSelector, "t1flair")
    assert not ui.secondEchoSelector.visible and "second_echo" not in widget.collectRequest().inputs
    select(ui.pipelineSelector, "dsc")
    assert ui.secondEchoSelector.currentNode() is second
    assert standins.SLOT_ERRORS == []


def test_a_user_runs_dual_echo_dsc_from_two_echo_sequences(panel, dual_echo):
    module, widget, slicer = panel
    ui = widget.ui
    fresh_scene(slicer)
    standins.SLOT_ERRORS.clear()
    _, echoes, files, root = dual_echo
    want, _ = cli_maps([files[0], "--second-echo", files[1], "--te", "0.015", "0.045", "--motion-correct", "none"],
                       root / "cli_files")
    _, _, first = mrml.add_series(echoes[0], "echo 1")
    _, _, second = mrml.add_series(echoes[1], "echo 2")
    select(ui.pipelineSelector, "dsc")
    select(ui.aifSourceSelector, "auto")
    select(ui.deviceSelector, "cpu")
    ui.inputSelector.setCurrentNode(first)
    ui.secondEchoSelector.setCurrentNode(second)
    select(widget.parameterWidgets["method"], "osvd")
    apply_and_wait(widget)
    assert ui.statusLabel.text.startswith("Done in"), (ui.statusLabel.text, ui.logTextEdit.toPlainText())
    assert "dual-echo: TE 15 and 45 ms" in ui.logTextEdit.toPlainText()
    outputs = widget.lastRun["outputs"]
    assert outputs.report["input"]["second_echo_time_s"] == pytest.approx(0.045)
    assert_maps_equal(outputs, want, exact=False)
    assert standins.SLOT_ERRORS == []


def test_a_user_runs_a_sequence_slicer_mixed_from_a_dual_echo_dicom_series(panel, dual_echo):
    module, widget, slicer = panel
    ui = widget.ui
    fresh_scene(slicer)
    standins.SLOT_ERRORS.clear()
    folder, echoes, _, root = dual_echo
    want, _ = cli_maps([str(folder), "--motion-correct", "none"], root / "cli_folder_defaults")
    _, proxy, _ = slicer_loaded_sequence(folder, "instance", echoes[0].affine)
    select(ui.pipelineSelector, "dsc")
    select(ui.aifSourceSelector, "auto")
    select(ui.deviceSelector, "cpu")
    select(widget.parameterWidgets["method"], "osvd")
    ui.secondEchoSelector.setCurrentNode(None)
    ui.inputSelector.setCurrentNode(proxy)
    info = ui.inputInfoLabel.text
    assert "2 echoes (TE 15 and 45 ms)" in info and "dual-echo" in info and "leave Second echo empty" in info, info
    assert (ui.echoTimeSpinBox.value, ui.secondEchoTimeSpinBox.value) == (15.0, 45.0)  # from the headers
    assert ui.secondEchoTimeSpinBox.visible
    assert ui.applyButton.enabled, ui.applyButton.toolTip
    apply_and_wait(widget)
    assert ui.statusLabel.text.startswith("Done in"), (ui.statusLabel.text, ui.logTextEdit.toPlainText())
    log = ui.logTextEdit.toPlainText()
    assert "dual-echo: TE 15 and 45 ms (the second echo of the DICOM folder's series" in log, log
    assert_maps_equal(widget.lastRun["outputs"], want, exact=True)
    # the links to the DICOM files went with the run's other inputs; the files themselves stay
    links = widget.lastRun["runner"].job.inputs["series"]
    assert links.endswith("series_dicom") and not os.path.exists(links)
    assert len(list(folder.iterdir())) == 160
    assert standins.SLOT_ERRORS == []

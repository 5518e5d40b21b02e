"""How maps look in the slice views: colour, window, transparency, legend, overlay.

Every map node gets a colour table and window suited to the map (:mod:`BBBAnomalyLib.app.display`),
a lower threshold so that zero (not analysed, outside the brain) is transparent, and a colour
legend titled with the map's name and unit (Slicer's ``vtkMRMLColorLegendDisplayNode``, added
as ``vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode`` does in the Colors module).
"""

from __future__ import annotations

import numpy as np

from .common import _slicer

#: A legend's title for each unit the pipelines report ("ratio" and "" need no unit).
_UNITLESS = ("", "ratio", "a.u.")


def legend_title(name: str, unit: str) -> str:
    return name if (unit or "") in _UNITLESS else f"{name} ({unit})"


def apply_map_display(node, name: str, data: np.ndarray, unit: str = ""):
    """Colour table, window preset, zero-transparent threshold and colour legend of a map node.
    Returns the legend display node (None where the scene cannot make one)."""
    from ..display import map_display

    slicer = _slicer()
    style = map_display(name, data)
    display = node.GetDisplayNode()
    if display is None:
        # What vtkMRMLScalarVolumeNode::CreateDefaultDisplayNodes does, but with the automatic
        # window/level off before the display observes the image: vtkMRMLScalarVolumeDisplayNode::
        # CalculateAutoLevels returns at once then, instead of a histogram of every map (~15 ms each).
        display = node.GetScene().AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
        display.AutoWindowLevelOff()
        display.AutoThresholdOff()
        display.SetAndObserveColorNodeID(style.colour_node_id)
        node.SetAndObserveDisplayNodeID(display.GetID())
    display.SetAndObserveColorNodeID(style.colour_node_id)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(style.window_min, style.window_max)
    if style.threshold_min is not None:
        display.AutoThresholdOff()
        display.SetThreshold(style.threshold_min, max(float(np.nanmax(data)) if np.size(data) else 1.0,
                                                      style.window_max) + 1.0)
        display.ApplyThresholdOn()
    else:
        display.ApplyThresholdOff()
    node.SetAttribute("BBBAnomaly.WindowPreset", "1" if style.preset else "0")
    scene = node.GetScene()
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):  # the Colors module registers it in Slicer
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(display)
    if legend is None:
        return None
    legend.SetTitleText(legend_title(name, unit))
    legend.SetLabelFormat("%.3g")
    legend.SetVisibility(False)  # shown for the map that is overlaid (show_overlay)
    return legend


def legend_of(node):
    """The colour legend display node of a map node, or None."""
    if node is None:
        return None
    for i in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(i)
        if display is not None and display.IsA("vtkMRMLColorLegendDisplayNode"):
            return display
    return None


def show_overlay(background_node, foreground_node, opacity: float = 0.5, legend_nodes=()) -> int:
    """Show ``foreground_node`` over ``background_node`` in every slice view; returns the view count.

    The foreground's colour legend is shown and the legends of ``legend_nodes`` (the other maps
    of the run) are hidden, so exactly one legend, the overlaid map's, is on screen.
    """
    slicer = _slicer()
    scene = slicer.mrmlScene
    count = scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(count):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if background_node is not None:
            composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(foreground_node.GetID() if foreground_node is not None else None)
        composite.SetForegroundOpacity(float(opacity))
    for other in legend_nodes:
        legend = legend_of(other)
        if legend is not None:
            legend.SetVisibility(other is foreground_node)
    legend = legend_of(foreground_node)
    if legend is not None:
        legend.SetVisibility(True)
    return count


def set_overlay_opacity(opacity: float) -> None:
    scene = _slicer().mrmlScene
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").SetForegroundOpacity(float(opacity))

"""Tables and plots: the ROI ratio table and the curve chart, and their export to files.

One chart and one table are reused for every curve the user asks for (a click, a segment): the
old series nodes are removed first, so clicking around does not fill the scene. Every series
gets its own colour from a fixed palette (a plot series is black unless told otherwise;
``slicer.util.plot`` calls ``SetUniqueColor`` for the same reason), and model curves are dashed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .common import ATTRIBUTE_PREFIX, _slicer, node_alive

#: Okabe-Ito and Tableau colours (RGB 0-1), distinct for colour-blind readers first; none is black.
PALETTE = (
    (0.84, 0.15, 0.16), (0.00, 0.45, 0.70), (0.00, 0.62, 0.45), (0.90, 0.62, 0.00), (0.80, 0.47, 0.65),
    (0.34, 0.71, 0.91), (0.84, 0.37, 0.00), (0.58, 0.40, 0.74), (0.55, 0.34, 0.29), (0.50, 0.50, 0.50),
    (0.74, 0.74, 0.13), (0.09, 0.75, 0.81),
)
CURVE_TABLE_REFERENCE = "BBBAnomalyCurveTable"


def _table(name: str, table_node=None):
    slicer = _slicer()
    if table_node is None or not node_alive(table_node):
        table_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName(name))
    else:
        table_node.RemoveAllColumns()
    return table_node


def _add_column(table_node, name: str, values, kind: str = "double"):
    import vtk

    array = vtk.vtkStringArray() if kind == "string" else vtk.vtkDoubleArray()
    array.SetName(name)
    for v in values:
        array.InsertNextValue(str(v) if kind == "string" else (np.nan if v is None else float(v)))
    table_node.AddColumn(array)
    return array


def map_caveats(map_nodes: dict) -> dict:
    """{key: caveat} of the map nodes whose run's report says what their ROI mean keeps that no per-voxel map shows
    (the ``BBBAnomaly.Caveat`` attribute the bridge sets, e.g. PHAE CBF's bias by capillary transit shape)."""
    found = {key: node.GetAttribute(ATTRIBUTE_PREFIX + "Caveat") for key, node in map_nodes.items()}
    return {key: caveat for key, caveat in found.items() if caveat}


def ratio_table(map_nodes: dict, roi_mask: np.ndarray, reference_mask: np.ndarray | None = None,
                roi_name: str = "tumor", reference_name: str = "NAWM", table_node=None, name: str = "ROI ratios"):
    """A table node: per map, mean/median/sd/volume in the ROI (and reference) and the ROI/reference
    ratios of the means and medians, computed as `bbbanomaly roi-stats` does, a "ratio note" column saying why a ratio
    is n/a (where one is), and a caveat column where a map's run says what its ROI mean keeps that no per-voxel map
    shows. Returns (node, stats); ``roistats.table_notes(stats)`` are roi-stats' notes under its table."""
    from ...roistats import roi_statistics
    from .inputs import volume_from_node

    maps = {key: volume_from_node(node) for key, node in map_nodes.items()}
    caveats = map_caveats(map_nodes)
    stats = roi_statistics(maps, roi_mask, reference_mask, roi_name, reference_name, caveats=caveats)
    table = _table(name, table_node)
    entries = stats["maps"]
    _add_column(table, "map", list(entries), "string")
    _add_column(table, "unit", [map_nodes[k].GetAttribute(ATTRIBUTE_PREFIX + "Unit") or "" for k in entries], "string")
    labels = [roi_name] + ([reference_name] if reference_mask is not None else [])
    for label in labels:
        for stat in ("mean", "median", "sd", "volume_ml"):
            _add_column(table, f"{label} {stat}", [e[label][stat] for e in entries.values()])
    if reference_mask is not None:
        _add_column(table, f"{roi_name}/{reference_name} mean", [e["ratio_mean"] for e in entries.values()])
        _add_column(table, f"{roi_name}/{reference_name} median", [e["ratio_median"] for e in entries.values()])
        if any(e.get("ratio_warnings") for e in entries.values()):  # why a ratio is n/a (roi-stats' "note: ratio n/a")
            _add_column(table, "ratio note", ["; ".join(e.get("ratio_warnings", [])) for e in entries.values()],
                        "string")
    if any(e.get("caveat") for e in entries.values()):  # e.g. PHAE CBF's bias by capillary transit shape
        _add_column(table, "caveat", [e.get("caveat", "") for e in entries.values()], "string")
    return table, stats


def table_rows(table_node) -> tuple[list[str], list[list[str]]]:
    """(column names, rows as strings) of a table node."""
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    rows = [[table.GetValue(r, c).ToString() for c in range(len(names))] for r in range(table.GetNumberOfRows())]
    return names, rows


def export_table(table_node, path: str | Path) -> Path:
    """Write a table node as CSV (comma-separated, a header row), as the user names the file."""
    path = Path(path)
    names, rows = table_rows(table_node)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        writer.writerows(rows)
    return path


def _remove_series(chart_node) -> None:
    scene = _slicer().mrmlScene
    ids = [chart_node.GetNthPlotSeriesNodeID(i) for i in range(chart_node.GetNumberOfPlotSeriesNodes())]
    chart_node.RemoveAllPlotSeriesNodeIDs()
    for series_id in ids:
        series = scene.GetNodeByID(series_id)
        if series is not None:
            scene.RemoveNode(series)


def curve_plot(curves, regions: dict, voxel=None, chart_node=None, name: str = "BBBAnomaly curves"):
    """One chart of the reference curves (AIF), the mean curve of each region and, for a voxel
    (i, j, k), its curve, each with the model's fitted curves (dashed). Every series has its own
    colour. A live ``chart_node`` from an earlier call is reused with its table, its old series
    removed. Returns (chart, table, plotted labels)."""
    slicer = _slicer()
    scene = slicer.mrmlScene
    columns: dict[str, np.ndarray] = dict(curves.reference)
    fitted = {label: False for label in curves.reference}
    for label, mask in dict(regions).items():
        mean = curves.mean(mask)
        if mean is None:
            continue
        for curve_label, values in mean.items():
            column = label if curve_label == "measured" else f"{label} ({curve_label})"
            columns[column], fitted[column] = values, curve_label != "measured"
    if voxel is not None:
        voxel = tuple(int(v) for v in voxel)
        single = curves.voxel(voxel)
        if single is not None:
            for curve_label, values in single.items():
                column = f"voxel {voxel}" + ("" if curve_label == "measured" else f" ({curve_label})")
                columns[column], fitted[column] = values, curve_label != "measured"
    if chart_node is None or not node_alive(chart_node):
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
        table = None
    else:
        table = chart_node.GetNodeReference(CURVE_TABLE_REFERENCE)
        _remove_series(chart_node)
    table = _table(name + " table", table)
    chart_node.SetNodeReferenceID(CURVE_TABLE_REFERENCE, table.GetID())
    _add_column(table, "time (s)", curves.times)
    for column, values in columns.items():
        _add_column(table, column, values)
    chart_node.SetTitle(name)
    chart_node.SetXAxisTitle("time (s)")
    chart_node.SetYAxisTitle(curves.unit)
    for index, column in enumerate(columns):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(column))
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("time (s)")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash if fitted[column]
                            else slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
        series.SetColor(*PALETTE[index % len(PALETTE)])
        chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart_node, table, list(columns)

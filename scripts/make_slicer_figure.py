"""Render what the Slicer panel produces, from real MRML nodes (slicer-core, no Slicer app).

Loads the DSC sample case into a scene as the panel's "Load sample data" button does, runs DSC
(oSVD) through the same job code, imports the maps as volume nodes, builds the ROI-ratio table node
and the curve plot nodes, and draws what the nodes say: the overlay with its window, its lower
threshold (values below it transparent) and its colour legend's title; the plot series with their
own colours and line styles on the chart's one axis (no rescaling); the table's cells. This is not
a screenshot of the Slicer application (that needs Slicer) and is never listed as one; the colour
table is approximated by matplotlib's "jet" (ColdToHotRainbow's files are not in slicer-core).

    python scripts/make_slicer_figure.py --out docs/figures/slicer_outputs.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/figures/slicer_outputs.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import slicer

    from BBBAnomalyLib.app import mrml
    from BBBAnomalyLib.app.curves import CurveSet, curves_in
    from BBBAnomalyLib.app.jobs import InProcessRunner

    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    demo = mrml.load_sample("dsc", slices=8, snr=50)
    series_node = demo.inputs["series"]
    regions = {"tumor": demo.inputs["tumor_mask"], "NAWM": demo.inputs["nawm_mask"]}
    request = mrml.RunRequest("dsc", demo.inputs, {"method": "osvd"})
    with tempfile.TemporaryDirectory() as work:
        job, _ = mrml.prepare_job(request, work)
        event = InProcessRunner(job).start().poll()[-1]
        assert event["event"] == "done", event
        outputs = mrml.import_results(job.output_dir, series_node, "DSC demo DSC perfusion (osvd)")
        masks = mrml.masks_on_input(series_node, regions)
        table, stats = mrml.ratio_table(outputs.map_nodes, masks["tumor"], masks["NAWM"])
        curves = CurveSet.load(curves_in(job.output_dir))
        voxel = tuple(int(v) for v in np.argwhere(masks["tumor"])[len(np.argwhere(masks["tumor"])) // 2])
        chart, plot_table, labels = mrml.curve_plot(curves, masks, voxel)

        def array(node):
            return np.swapaxes(slicer.util.arrayFromVolume(node), 0, 2)

        background = array(series_node)
        cbv_node = outputs.map_nodes["cbv_corrected"]
        cbv = array(cbv_node)
        display = cbv_node.GetDisplayNode()
        z = int(np.argmax(masks["tumor"].sum(axis=(0, 1))))
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1, 1.3, 1.25]})
        ax = axes[0]
        ax.imshow(np.flipud(background[:, :, z].T), cmap="gray")  # radiological: patient right on the left
        hidden = cbv[:, :, z].T < display.GetLowerThreshold() if display.GetApplyThreshold() else np.zeros_like(cbv[:, :, z].T, bool)
        overlay = np.ma.masked_where(hidden, cbv[:, :, z].T)
        im = ax.imshow(np.flipud(overlay), cmap="jet", alpha=0.5,
                       vmin=display.GetWindowLevelMin(), vmax=display.GetWindowLevelMax())
        fig.colorbar(im, ax=ax, fraction=0.046, label=mrml.legend_of(cbv_node).GetTitleText())
        ax.set_title("overlay node over the input (opacity 0.5)")
        ax.axis("off")
        ax = axes[1]
        times = slicer.util.arrayFromTableColumn(plot_table, "time (s)")
        for i in range(chart.GetNumberOfPlotSeriesNodes()):
            series = chart.GetNthPlotSeriesNode(i)
            column = series.GetYColumnName()
            style = "--" if series.GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleDash else "-"
            values = slicer.util.arrayFromTableColumn(plot_table, column)
            ax.plot(times, values, style, color=series.GetColor(), label=series.GetName())
        ax.set_xlabel(chart.GetXAxisTitle())
        ax.set_ylabel(chart.GetYAxisTitle())
        ax.set_title("plot chart node: AIF, segment means, a voxel, oSVD fits (dashed)")
        ax.legend(fontsize=7)
        ax = axes[2]
        ax.axis("off")
        names = [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())]
        columns = ["tumor mean", "NAWM mean", "tumor/NAWM mean"]
        index = {table.GetColumnName(c): c for c in range(table.GetNumberOfColumns())}
        cells = [[f"{float(table.GetCellText(r, index[c])):.3g}" for c in columns] for r in range(len(names))]
        t = ax.table(cellText=cells, rowLabels=names, colLabels=columns, loc="center")
        t.scale(1, 1.4)
        ax.set_title("table node: ROI ratios")
        fig.suptitle("Not a Slicer screenshot: the MRML nodes of a panel run on the DSC sample, drawn with matplotlib")
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=90)
        print(f"wrote {args.out}; tumor/NAWM corrected CBV {stats['maps']['cbv_corrected']['ratio_mean']:.2f}")


if __name__ == "__main__":
    main()

"""Render what the Slicer panel produces, from real MRML nodes (slicer-core, no Slicer app).

Loads the DSC demo phantom into a scene exactly as the panel's "Load DSC demo phantom" button
does, runs DSC (oSVD) through the same job/worker code, imports the maps as volume nodes, builds
the ROI-ratio table node and the curve plot nodes, and draws them: the CBV overlay with the
window/level the node got, the plot's curves, and the table. This is not a screenshot of the
Slicer application (that needs Slicer); every number in it comes from the nodes.

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

    from BBBAnomalyLib import mrml
    from BBBAnomalyLib.curves import CurveSet
    from BBBAnomalyLib.jobs import InProcessRunner

    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    demo = mrml.load_dsc_demo(slices=8, snr=50)
    regions = {"tumor": (demo["segmentation"], demo["segments"]["tumor"]),
               "NAWM": (demo["segmentation"], demo["segments"]["nawm"])}
    request = mrml.RunRequest("dsc", {"series": demo["series"], "aif_mask": demo["aif_roi"],
                                      "nawm_mask": regions["NAWM"], "tumor_mask": regions["tumor"]},
                              {"method": "osvd"})
    with tempfile.TemporaryDirectory() as work:
        job, _ = mrml.prepare_job(request, work)
        event = InProcessRunner(job).start().poll()[-1]
        assert event["event"] == "done", event
        outputs = mrml.import_results(job.output_dir, demo["series"], "DSC demo DSC perfusion (osvd)")
        masks = mrml.masks_on_input(demo["series"], regions)
        table, stats = mrml.ratio_table(outputs.map_nodes, masks["tumor"], masks["NAWM"])
        curves = CurveSet.load(Path(job.output_dir) / "curves.npz")
        voxel = tuple(int(v) for v in np.argwhere(masks["tumor"])[len(np.argwhere(masks["tumor"])) // 2])
        chart, plot_table, labels = mrml.curve_plot(curves, masks, voxel)

        def array(node):
            return np.swapaxes(slicer.util.arrayFromVolume(node), 0, 2)

        background = array(demo["series"])
        cbv_node = outputs.map_nodes["cbv_corrected"]
        cbv = array(cbv_node)
        display = cbv_node.GetDisplayNode()
        z = int(np.argmax(masks["tumor"].sum(axis=(0, 1))))
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1, 1.3, 1.25]})
        ax = axes[0]
        ax.imshow(np.flipud(background[:, :, z].T), cmap="gray")  # radiological: patient right on the left
        overlay = np.ma.masked_where(cbv[:, :, z].T == 0, cbv[:, :, z].T)
        im = ax.imshow(np.flipud(overlay), cmap="jet", alpha=0.5,
                       vmin=display.GetWindowLevelMin(), vmax=display.GetWindowLevelMax())
        fig.colorbar(im, ax=ax, fraction=0.046, label=f"{cbv_node.GetName()} ({cbv_node.GetAttribute('BBBAnomaly.Unit')})")
        ax.set_title("overlay node over the input (opacity 0.5)")
        ax.axis("off")
        ax = axes[1]
        times = slicer.util.arrayFromTableColumn(plot_table, "time (s)")
        for i in range(chart.GetNumberOfPlotSeriesNodes()):
            series = chart.GetNthPlotSeriesNode(i)
            column = series.GetYColumnName()
            style = "--" if series.GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleDash else "-"
            values = slicer.util.arrayFromTableColumn(plot_table, column)
            if column == "AIF":
                values = values / 10
                column = "AIF / 10"
            ax.plot(times, values, style, label=column)
        ax.set_xlabel(chart.GetXAxisTitle())
        ax.set_ylabel(chart.GetYAxisTitle())
        ax.set_title("plot chart node: AIF, segment means, a voxel, oSVD fits")
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
        fig.suptitle("BBBAnomaly panel outputs on the DSC demo phantom (MRML nodes from slicer-core, drawn with matplotlib)")
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=90)
        print(f"wrote {args.out}; tumor/NAWM corrected CBV {stats['maps']['cbv_corrected']['ratio_mean']:.2f}")


if __name__ == "__main__":
    main()

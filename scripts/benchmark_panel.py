"""What the Slicer panel adds to a run: writing the inputs, the worker process, loading the maps.

A whole-brain DSC phantom (MNI152, 74x92x78, 60 frames) is put in a slicer-core scene as a volume
sequence, with an AIF ROI and NAWM/tumor segments, and run the way the panel runs it:
`mrml.prepare_job` (raw NRRD job inputs) -> `WorkerProcess` (a child `python -m BBBAnomalyLib.app.worker`)
-> `import_results` (map nodes with colour legends); then the ratio table and the curve plot. The
same run in-process (`run_dsc`) gives the baseline. "Apply to maps" is what a user waits for between
pressing Apply and seeing the maps: prepare_job + worker + import_results. The row "inputs as gzip
NRRD" is the GUI-thread cost the panel had before it wrote raw NRRD (issue 13, defect 6).

    python scripts/benchmark_panel.py [--method osvd] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="osvd")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import slicer

    from BBBAnomalyLib.app import mrml
    from BBBAnomalyLib.app.curves import CurveSet
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc
    from BBBAnomalyLib.io import write_volume
    from BBBAnomalyLib.app.jobs import WorkerProcess
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
    from BBBAnomalyLib.core.report import machine_description

    phantom = make_dsc_phantom(snr=50, slices="all", seed=0)
    rows = {k: [] for k in ("in-process run_dsc", "prepare_job (raw NRRD inputs, GUI thread)",
                            "inputs as gzip NRRD (before, GUI thread)", "worker run (child process)",
                            "import_results (map nodes, GUI thread)", "Apply to maps", "ratio table", "curve plot",
                            "panel total")}
    for _ in range(args.repeats):
        slicer.mrmlScene = slicer.vtkMRMLScene()
        slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        _, _, proxy = mrml.add_series(phantom.signal, "DSC")
        roi = mrml.roi_around(phantom.masks["aif"], phantom.signal.affine)
        segmentation, ids = mrml.add_segmentation({"tumor": phantom.masks["tumor"], "nawm": phantom.masks["nawm"]},
                                                  phantom.signal)
        t = time.perf_counter()
        run_dsc(phantom.signal, DSCParameters(method=args.method, aif_region=True),
                aif_mask=mrml.mask_from_roi(roi, phantom.signal),
                nawm_mask=phantom.masks["nawm"], tumor_mask=phantom.masks["tumor"], keep_curves=True)
        rows["in-process run_dsc"].append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as work:
            start = time.perf_counter()
            request = mrml.RunRequest("dsc", {"series": proxy, "aif_mask": roi,
                                              "nawm_mask": (segmentation, ids["nawm"]),
                                              "tumor_mask": (segmentation, ids["tumor"])}, {"method": args.method})
            job, _ = mrml.prepare_job(request, work)
            rows["prepare_job (raw NRRD inputs, GUI thread)"].append(time.perf_counter() - start)
            t = time.perf_counter()
            write_volume(mrml.volume_from_node(proxy), Path(work) / "gzip-series.nrrd")
            rows["inputs as gzip NRRD (before, GUI thread)"].append(time.perf_counter() - t)
            start += time.perf_counter() - t  # not part of the panel's run any more
            t = time.perf_counter()
            events = WorkerProcess(job, Path(work) / "job.json").start().wait(timeout=600)
            assert events[-1]["event"] == "done", events[-1]
            rows["worker run (child process)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            outputs = mrml.import_results(job.output_dir, proxy, "DSC")
            rows["import_results (map nodes, GUI thread)"].append(time.perf_counter() - t)
            rows["Apply to maps"].append(time.perf_counter() - start)
            t = time.perf_counter()
            masks = mrml.masks_on_input(proxy, {"tumor": (segmentation, ids["tumor"]), "NAWM": (segmentation, ids["nawm"])})
            mrml.ratio_table(outputs.map_nodes, masks["tumor"], masks["NAWM"])
            rows["ratio table"].append(time.perf_counter() - t)
            t = time.perf_counter()
            mrml.curve_plot(CurveSet.load(Path(job.output_dir) / "curves.npz"), masks)
            rows["curve plot"].append(time.perf_counter() - t)
            rows["panel total"].append(time.perf_counter() - start)
    print(f"machine: {machine_description()}")
    print(f"whole-brain DSC phantom {phantom.signal.data.shape}, method {args.method}, "
          f"{int(phantom.masks['brain'].sum())} brain voxels; median of {args.repeats} (min-max), s")
    print("| step | seconds |\n|---|---|")
    for name, values in rows.items():
        v = np.array(values)
        print(f"| {name} | {np.median(v):.2f} ({v.min():.2f}-{v.max():.2f}) |")


if __name__ == "__main__":
    main()

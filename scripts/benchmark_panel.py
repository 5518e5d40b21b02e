"""What the Slicer panel adds to a run: handing the inputs over, the worker process, loading the maps.

A whole-brain DSC phantom (MNI152, 74x92x78, 60 frames) is put in a slicer-core scene as a volume
sequence, with an AIF ROI and NAWM/tumor segments, and run the way the panel runs it:
`mrml.prepare_job` (the frames handed over as raw arrays, GUI thread) -> a worker process
(`python -m BBBAnomalyLib.app.worker`) -> `import_results` (map nodes with colour legends, GUI
thread); then the ratio table and the curve plot. The same run in-process (`run_dsc`, with the
curves kept) is the baseline, measured before, between and after the two panel runs of every
repeat: each panel run is divided by the mean of the baseline runs just before and after it, so
that a load that drifts (a shared machine) moves both sides of a ratio alike.

"Apply to maps" is what a user waits for between pressing Apply and seeing the maps:
prepare_job + the worker's run (from the job's hand-over to its `maps` event: the maps folder is
complete) + import_results. The worker writes the curves after that, while the maps are loaded;
"Apply to curves ready" is when its `done` arrives (the Curves button works from then on).
* **warm** (what the panel does): the worker was started when the input was chosen and has done
  its imports (`WorkerProcess.warm`); the benchmark waits for its `ready` before pressing Apply,
  as a user who picks a series and then presses Apply a second later would.
* **cold**: a worker started with its job (the panel's fallback; before issue 17, always).
The rows "of which" split the worker's run (measured in this process on the same job files):
reading the hand-over into the library's layout, the pipeline, writing the maps folder, and,
after the maps, `result.curves()` and writing the curves. The gzip row is the GUI-thread cost the panel had before issue 13.

    python scripts/benchmark_panel.py [--method osvd] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
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
    from BBBAnomalyLib.app.jobs import Job, read_job_input, write_arrays
    from BBBAnomalyLib.app.pipelines import get_pipeline
    from BBBAnomalyLib.app.runners import WorkerProcess
    from BBBAnomalyLib.core.report import machine_description
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc
    from BBBAnomalyLib.io import write_volume
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    phantom = make_dsc_phantom(snr=50, slices="all", seed=0)
    rows = {k: [] for k in (
        "in-process run_dsc (baseline)", "prepare_job: inputs handed over (GUI thread)",
        "inputs as gzip NRRD (before issue 13, GUI thread; not part of a run)",
        "worker, warm: job handed over -> maps", "worker, cold: process start -> maps",
        "of which: reading the hand-over (series reordered to x,y,z,t)", "of which: the pipeline (run_dsc)",
        "of which: writing maps, masks, report (raw)", "after the maps: result.curves()",
        "after the maps: writing the curves (raw float32)",
        "import_results: map nodes (GUI thread)",
        "**Apply to maps, warm worker (the panel)**", "Apply to maps, cold worker", "Apply to curves ready (warm)",
        "ratio table", "curve plot", "panel total (warm)")}

    ratios = {"warm": [], "cold": []}

    def wait_for(worker, kind, timeout=600.0):
        """Poll as the panel does (but every 2 ms) until an event of ``kind`` (or a final one)."""
        end = time.monotonic() + timeout
        while True:
            for event in worker.poll():
                if event["event"] in (kind, "error", "cancelled"):
                    assert event["event"] == kind, event
                    return event
            if time.monotonic() > end:
                raise TimeoutError(kind)
            time.sleep(0.002)

    def wait_ready(worker, timeout=120.0):
        end = time.monotonic() + timeout
        while worker.ready is None:
            if not worker.idle or time.monotonic() > end:
                raise RuntimeError(f"the warm worker did not start: {worker.log_file.read_text(encoding='utf-8')}")
            time.sleep(0.01)

    for _ in range(args.repeats):
        slicer.mrmlScene = slicer.vtkMRMLScene()
        slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        _, _, proxy = mrml.add_series(phantom.signal, "DSC")
        roi = mrml.roi_around(phantom.masks["aif"], phantom.signal.affine)
        segmentation, ids = mrml.add_segmentation({"tumor": phantom.masks["tumor"], "nawm": phantom.masks["nawm"]},
                                                  phantom.signal)
        request = mrml.RunRequest("dsc", {"series": proxy, "aif_mask": roi, "nawm_mask": (segmentation, ids["nawm"]),
                                          "tumor_mask": (segmentation, ids["tumor"])}, {"method": args.method})

        def baseline():
            t = time.perf_counter()
            run_dsc(phantom.signal, DSCParameters(method=args.method, aif_region=True),
                    aif_mask=mrml.mask_from_roi(roi, phantom.signal),
                    nawm_mask=phantom.masks["nawm"], tumor_mask=phantom.masks["tumor"], keep_curves=True)
            return time.perf_counter() - t

        before = baseline()
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            # warm: started when the input was chosen, ready before Apply
            (work / "warm").mkdir()
            warm = WorkerProcess.warm(work / "warm", preload="dsc")
            wait_ready(warm)
            start = time.perf_counter()
            job, _ = mrml.prepare_job(request, work / "warm")
            rows["prepare_job: inputs handed over (GUI thread)"].append(time.perf_counter() - start)
            t = time.perf_counter()
            wait_for(warm.submit(job), "maps")
            rows["worker, warm: job handed over -> maps"].append(time.perf_counter() - t)
            t = time.perf_counter()
            outputs = mrml.import_results(job.output_dir, proxy, "DSC")
            rows["import_results: map nodes (GUI thread)"].append(time.perf_counter() - t)
            rows["**Apply to maps, warm worker (the panel)**"].append(time.perf_counter() - start)
            done = wait_for(warm, "done")
            rows["Apply to curves ready (warm)"].append(time.perf_counter() - start)
            t = time.perf_counter()
            masks = mrml.masks_on_input(proxy, {"tumor": (segmentation, ids["tumor"]),
                                                "NAWM": (segmentation, ids["nawm"])})
            mrml.ratio_table(outputs.map_nodes, masks["tumor"], masks["NAWM"])
            rows["ratio table"].append(time.perf_counter() - t)
            t = time.perf_counter()
            mrml.curve_plot(CurveSet.load(done["curves"]), masks)
            rows["curve plot"].append(time.perf_counter() - t)
            rows["panel total (warm)"].append(time.perf_counter() - start)
            between = baseline()

            # cold: the worker started with its job
            start = time.perf_counter()
            cold_job, _ = mrml.prepare_job(request, work / "cold")
            t = time.perf_counter()
            cold = WorkerProcess(cold_job, work / "cold" / "job.json").start()
            wait_for(cold, "maps")
            rows["worker, cold: process start -> maps"].append(time.perf_counter() - t)
            mrml.import_results(cold_job.output_dir, proxy, "DSC cold")
            rows["Apply to maps, cold worker"].append(time.perf_counter() - start)
            wait_for(cold, "done")
            after = baseline()
            rows["in-process run_dsc (baseline)"] += [before, between, after]
            # the load drifts: each panel run is compared with the baseline runs just before and after it
            ratios["warm"].append(rows["**Apply to maps, warm worker (the panel)**"][-1] / (0.5 * (before + between)))
            ratios["cold"].append(rows["Apply to maps, cold worker"][-1] / (0.5 * (between + after)))

            # where the worker's time goes, on the same files, in this process
            t = time.perf_counter()
            volumes = {key: read_job_input(path) for key, path in job.inputs.items()}
            rows["of which: reading the hand-over (series reordered to x,y,z,t)"].append(time.perf_counter() - t)
            spec = get_pipeline("dsc")
            t = time.perf_counter()
            result = spec.run(volumes, job.parameters, **spec.extra.get("curve_options", {}))
            rows["of which: the pipeline (run_dsc)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            write_arrays(result, Job("dsc", job.inputs, job.parameters, str(work / "split"), output_format="arrays"))
            rows["of which: writing maps, masks, report (raw)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            curves = result.curves()
            rows["after the maps: result.curves()"].append(time.perf_counter() - t)
            t = time.perf_counter()
            curves.save_arrays(work / "split.curves")
            rows["after the maps: writing the curves (raw float32)"].append(time.perf_counter() - t)
            del volumes, result, curves

            t = time.perf_counter()
            write_volume(mrml.volume_from_node(proxy), work / "gzip-series.nrrd")
            rows["inputs as gzip NRRD (before issue 13, GUI thread; not part of a run)"].append(time.perf_counter() - t)
    print(f"machine: {machine_description()}; 1-minute load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"whole-brain DSC phantom {phantom.signal.data.shape}, method {args.method}, "
          f"{int(phantom.masks['brain'].sum())} brain voxels; median of {args.repeats} (min-max), s")
    print("| step | seconds |\n|---|---|")
    for name, values in rows.items():
        v = np.array(values)
        print(f"| {name} | {np.median(v):.2f} ({v.min():.2f}-{v.max():.2f}) |")
    for name, ratio in ratios.items():
        print(f"Apply to maps, {name} worker / the in-process runs just before and after it: median "
              f"{np.median(ratio):.2f}x ({', '.join(f'{r:.2f}' for r in ratio)})")


if __name__ == "__main__":
    main()

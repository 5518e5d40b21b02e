"""Benchmark the DSC pipeline on a whole brain: each deconvolution method, BSW, and end to end.

Builds the whole-brain DSC reference object (MNI152 2 mm, ~262k brain voxels) at 60 and 120
frames, then times (median of --repeats runs, after one warm-up):
  * each deconvolution method alone on all brain curves (the batched matrix products),
  * the BSW leakage fit and correction,
  * end to end through the command line: read NIfTI, mask, baseline, ΔR2*, AIF, BSW,
    deconvolution, maps, write (``bbbanomaly dsc``), per method.
Prints a markdown table (paste into docs/benchmarks.md) and writes JSON with --json.

usage:  python scripts/benchmark_dsc.py [--repeats 3] [--frames 60 120] [--json bench.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.dsc import DeconvolutionModel, DSCParameters, fit_bsw, run_dsc
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
from BBBAnomalyLib.core.report import machine_description

METHODS = ("ssvd", "csvd", "osvd", "tikhonov")


def timed(fn, repeats):
    fn()  # warm-up (BLAS threads, caches, lazy imports)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def bench(frames: int, repeats: int) -> dict:
    interval = 1.5 if frames <= 60 else 1.0
    phantom = make_dsc_phantom(snr=50, slices="all", frame_interval=interval, duration=frames * interval, seed=0)
    assert phantom.signal.n_frames == frames, phantom.signal.n_frames
    masks = phantom.masks
    # Brain ΔR2* curves from the pipeline itself (so the inputs are exactly what it deconvolves).
    result = run_dsc(phantom.signal, DSCParameters(leakage_correction="none"), aif_mask=masks["aif"],
                     brain_mask=masks["brain"], keep_curves=True)
    curves = result.delta_r2s.data[result.brain_mask]
    dt = float(result.times[1] - result.times[0])
    row = {"frames": frames, "brain_voxels": int(curves.shape[0]), "seconds": {}}
    for method in METHODS:
        model = DeconvolutionModel(result.aif, dt, method)
        row["seconds"][method] = timed(lambda: model.fit(curves), repeats)
    row["seconds"]["bsw"] = timed(lambda: fit_bsw(curves, result.times).corrected(curves, 2.0), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        phantom.write(tmp / "case")
        for method in METHODS:
            args = ["dsc", str(tmp / "case" / "signal.nii.gz"), "--aif-mask", str(tmp / "case" / "mask_aif.nii.gz"),
                    "--mask", str(tmp / "case" / "mask_brain.nii.gz"), "--method", method, "--quiet",
                    "--out", str(tmp / "out"), "--overwrite"]
            row["seconds"][f"end_to_end_{method}"] = timed(lambda: cli_main(args), repeats)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    ap.add_argument("--frames", type=int, nargs="+", default=[60, 120], help="frame counts to benchmark")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    rows = [bench(f, args.repeats) for f in args.frames]
    cols = list(METHODS) + ["bsw"] + [f"end_to_end_{m}" for m in METHODS]
    print(f"machine: {machine_description()}\n")
    print("| brain voxels × frames | " + " | ".join(c.replace("end_to_end_", "end-to-end ") for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        print(f"| {r['brain_voxels']:,} × {r['frames']} | " + " | ".join(f"{r['seconds'][c]:.2f} s" for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

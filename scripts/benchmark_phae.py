"""Speed of PHAE inference next to oSVD and Tikhonov, per whole brain, in one run (same machine, same data).

The whole-brain DSC reference object (MNI152 2 mm, ~262k brain voxels) at 60 frames (Δt 1.5 s) and
120 frames (Δt 1.0 s). Times (median of --repeats after a warm-up):
  * the deconvolution step alone on all brain curves: oSVD, Tikhonov (``DeconvolutionModel.fit``),
    PHAE inference (``PHAEModel.fit``, model curves included) and PHAE adaptation (``adapt``, once);
  * end to end, ``run_dsc`` from the 4D series to the maps, per method.
The seed (Fayolle et al. 2025) reports 8.4 s (PHAE), 11.8 s (oSVD), 33.6 s (Tikhonov) per patient on a Xeon.

usage:  python scripts/benchmark_phae.py [--repeats 3] [--frames 60 120] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from BBBAnomalyLib.dsc import DeconvolutionModel, DSCParameters, run_dsc
from BBBAnomalyLib.dsc.phae import PHAEModel
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
from BBBAnomalyLib.core.report import machine_description


def timed(fn, repeats):
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def bench(frames: int, repeats: int, threads: int | None = None, weights: str | None = None) -> dict:
    interval = 1.5 if frames <= 60 else 1.0
    phantom = make_dsc_phantom(snr=50, slices="all", frame_interval=interval, duration=frames * interval, seed=0)
    masks = phantom.masks
    result = run_dsc(phantom.signal, DSCParameters(), aif_mask=masks["aif"], brain_mask=masks["brain"],
                     keep_curves=True)
    curves = result.delta_r2s.data[result.brain_mask]
    dt = float(result.times[1] - result.times[0])
    row = {"frames": frames, "brain_voxels": int(curves.shape[0]), "seconds": {}}
    for method in ("osvd", "tikhonov"):
        model = DeconvolutionModel(result.aif, dt, method, workers=threads)  # as many threads as torch
        row["seconds"][method] = timed(lambda: model.fit(curves), repeats)
    phae = PHAEModel(result.aif, dt, weights=weights, device="cpu")
    row["seconds"]["phae"] = timed(lambda: phae.fit(curves), repeats)
    start = time.perf_counter()
    row["adaptation"] = PHAEModel(result.aif, dt, weights=weights, device="cpu").adapt(curves)
    row["seconds"]["phae_adapt"] = time.perf_counter() - start
    for method in ("osvd", "tikhonov", "phae"):
        params = DSCParameters(method=method, device="cpu", **({"phae_weights": weights} if method == "phae" and weights else {}))
        row["seconds"][f"end_to_end_{method}"] = timed(
            lambda: run_dsc(phantom.signal, params, aif_mask=masks["aif"], brain_mask=masks["brain"]), repeats)
    return row


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, nargs="+", default=[60, 120])
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads, and the classic methods' chunk workers (the same count for every method)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--weights", help="PHAE weights (bundled name or .pt; default: the default weights)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import os

    load_before = os.getloadavg()[0]
    rows = [bench(f, args.repeats, args.threads, args.weights) for f in args.frames]
    print(f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    cols = ["osvd", "tikhonov", "phae", "phae_adapt", "end_to_end_osvd", "end_to_end_tikhonov", "end_to_end_phae"]
    print(f"machine: {machine_description()}; torch threads {args.threads}; PHAE weights {args.weights or 'default'}\n")
    print("| brain voxels × frames | " + " | ".join(c.replace("end_to_end_", "end-to-end ") for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        print(f"| {r['brain_voxels']:,} × {r['frames']} | " + " | ".join(f"{r['seconds'][c]:.2f} s" for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""DSC end to end against its floor: how close each method comes to the least a correct pipeline must do.

The floor (``floor()`` below) reads the same NIfTI series, applies the brain mask once, converts
to ΔR2* with a known baseline, averages the given AIF mask, applies ONE circulant pseudo-inverse
(cSVD's operator, one dense product per chunk), computes CBV/CBF/MTT and saves three maps
(.nii.gz, gzip level 1). Each method then runs end to end through the command line
(``bbbanomaly dsc --method M``; BSW on, its default; brain and AIF masks given), which adds the
checks, baseline detection, BSW, the method's own deconvolution, the other maps and the report.
The command line reads the series lazily (``read_volume(lazy=True)``: the analysed voxels are
gathered frame block by frame block); the floor reads it whole, as its simplest form.

Inputs: a dense block of voxels, every one inside the brain mask (the brain voxels of the
whole-brain DSC reference object at SNR 50, repeated to fill 0.1, 0.25 or 1 million voxels), at
60 frames (Δt 1.5 s) and 120 frames (Δt 1.0 s), float32 .nii.gz written with nibabel's defaults.

Each measurement runs in its own fresh Python process: one run for the peak RSS (Linux VmHWM,
reset after the imports through /proc/self/clear_refs, so it is that of one run alone), one run
under ``tracemalloc`` (the peak of numpy arrays alive at once), then the median of --repeats
timed runs (wall time, and the CPU time of all the process's threads: the work done, which other
jobs on a shared machine disturb less). The floor and all methods of one size run back to back, so the ratio is measured
under the same machine load. Peak RSS is shown beside the size of the float32 series in memory
and the RSS of the same process before the run (interpreter and imports).

usage:  python scripts/benchmark_dsc_floor.py [--voxels 0.1 0.25 1] [--frames 60 120] [--repeats 3] [--rounds 1]
                                              [--methods osvd csvd tikhonov ssvd [phae phae-pooled phae-per-voxel]] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("osvd", "csvd", "tikhonov", "ssvd")
#: issue 14, round 8: phae-pooled = --method phae --guided-pooling on (the default, auto, does not pool this SNR-50
#: data: its baseline tSNR is above 45); phae-per-voxel = --method phae --no-pooled-delay --guided-pooling off
LEARNED = ("phae", "phae-pooled", "phae-per-voxel")
EXTRA_ARGS = {"phae-pooled": ["--guided-pooling", "on"], "phae-per-voxel": ["--no-pooled-delay", "--guided-pooling", "off"]}  # on request (--methods ... phae): torch and the network are imported before the RSS base
TE = 0.03


# --- inputs ------------------------------------------------------------------------------------
def make_case(folder: Path, million_voxels: float, frames: int) -> dict:
    """Write signal.nii.gz (+ sidecar), mask_brain.nii.gz (all ones) and mask_aif.nii.gz."""
    from BBBAnomalyLib.io import write_volume
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
    from BBBAnomalyLib.core.volume import Volume

    interval = 1.5 if frames <= 60 else 1.0
    phantom = make_dsc_phantom(snr=50, slices="all", frame_interval=interval, duration=frames * interval, seed=0)
    brain = phantom.masks["brain"]
    arterial = phantom.masks["aif"][brain]
    order = np.argsort(~arterial, kind="stable")  # the arterial voxels first: every size holds the AIF
    signals, arterial = phantom.signal.data[brain][order], arterial[order]  # (n_brain, frames)
    n_target = int(round(million_voxels * 1e6))
    nz = max(1, int(round(n_target / (100 * 100))))
    shape = (100, 100, nz)
    n = int(np.prod(shape))
    take = np.arange(n) % signals.shape[0]
    data = signals[take].reshape(shape + (frames,))
    aif = arterial[take].reshape(shape)
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(data, phantom.signal.affine, phantom.signal.times, phantom.signal.acquisition),
                 folder / "signal.nii.gz")
    write_volume(Volume(np.ones(shape, np.uint8), phantom.signal.affine), folder / "mask_brain.nii.gz")
    write_volume(Volume(aif.astype(np.uint8), phantom.signal.affine), folder / "mask_aif.nii.gz")
    baseline_stop = int(phantom.params.bolus_arrival / interval) - 1
    return {"voxels": n, "frames": frames, "series_mb": data.nbytes / 2**20, "baseline": [1, baseline_stop]}


# --- the floor -----------------------------------------------------------------------------------
def floor(folder: Path, out: Path, baseline: tuple[int, int], chunk: int = 16384) -> None:
    """The least a correct DSC pipeline does: load, ΔR2*, one circulant pseudo-inverse, CBV/CBF/MTT, save."""
    import nibabel as nib
    from scipy.integrate import trapezoid

    from BBBAnomalyLib.dsc.deconvolution import DeconvolutionModel

    img = nib.load(str(folder / "signal.nii.gz"))
    data = np.asanyarray(img.dataobj)  # float32, Fortran order as stored
    brain = np.asanyarray(nib.load(str(folder / "mask_brain.nii.gz")).dataobj) > 0
    arterial = np.asanyarray(nib.load(str(folder / "mask_aif.nii.gz")).dataobj) > 0
    frames = data.shape[3]
    # The one gather of the masked voxels into (voxel, time) float32 rows: a blocked transpose of
    # the stored (time-slowest) layout.
    by_frame = data.reshape((-1, frames), order="F").T  # (T, voxels), a view
    rows = np.ravel_multi_index(np.nonzero(brain), brain.shape, order="F")
    curves = np.empty((rows.size, frames), np.float32)
    for start in range(0, rows.size, chunk):
        curves[start:start + chunk] = by_frame[:, rows[start:start + chunk]].T
    del data, by_frame
    first, stop = baseline
    dt = float(img.header.get_zooms()[3])
    times = np.arange(frames) * dt
    weights = np.full(frames, dt, np.float32)  # trapezoid weights
    weights[[0, -1]] = dt / 2
    aif_rows = np.flatnonzero(arterial[brain])
    cbf = np.empty(rows.size, np.float32)
    cbv = np.empty(rows.size, np.float32)
    for start in range(0, rows.size, chunk):  # ΔR2* in place, chunk by chunk
        block = curves[start:start + chunk]
        np.maximum(block, 1e-3 * block[:, first:stop].mean(axis=1, keepdims=True), out=block)
        np.log(block, out=block)
        block -= block[:, first:stop].mean(axis=1, keepdims=True)
        block *= np.float32(-1.0 / TE)
    aif = curves[aif_rows].mean(axis=0, dtype=np.float64)
    model = DeconvolutionModel(aif, dt, "csvd", chunk_voxels=chunk)  # one circulant pseudo-inverse
    for start in range(0, rows.size, chunk):
        block = curves[start:start + chunk]
        cbf[start:start + chunk] = (block @ model._pinv_t).max(axis=1)
        cbv[start:start + chunk] = block @ weights
    cbv /= trapezoid(aif, times)
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(cbf > 0, cbv / cbf, 0.0)
    out.mkdir(parents=True, exist_ok=True)
    for name, values in (("cbv", 100 * cbv), ("cbf", 6000 * cbf), ("mtt", mtt)):
        vol = np.zeros(brain.shape, np.float32)
        vol[brain] = values
        nib.save(nib.Nifti1Image(vol, img.affine), str(out / f"{name}.nii.gz"))


def end_to_end(folder: Path, out: Path, method: str) -> None:
    from BBBAnomalyLib.cli import main as cli_main

    extra = EXTRA_ARGS.get(method, [])
    rc = cli_main(["dsc", str(folder / "signal.nii.gz"), "--aif-mask", str(folder / "mask_aif.nii.gz"),
                   "--mask", str(folder / "mask_brain.nii.gz"), "--method", method.split("-")[0], "--quiet",
                   "--out", str(out)] + extra)
    if rc not in (0, None):
        raise SystemExit(f"bbbanomaly dsc --method {method} exited {rc}")


def _measure(argv) -> None:
    """Child process: time `what` (median of repeats after a warm-up); print JSON with peak RSS."""
    import tracemalloc

    what, folder, repeats, baseline = argv[0], Path(argv[1]), int(argv[2]), json.loads(argv[3])
    counter = iter(range(10**6))

    def run():  # a fresh output folder each run: no run pays for deleting the last one's maps
        out = folder / "runs" / f"{what}_{next(counter)}"  # the parent removes runs/ after each child
        return floor(folder, out, tuple(baseline)) if what == "floor" else end_to_end(folder, out, what)

    import BBBAnomalyLib.dsc.pipeline  # noqa: F401  (imports outside the timing and the RSS base)
    import nibabel  # noqa: F401
    import scipy.integrate  # noqa: F401
    if what in LEARNED:  # importing torch (~0.3 GB) is not the run's work; its first pass and the weights are
        import torch  # noqa: F401
        import BBBAnomalyLib.dsc.phae.inference  # noqa: F401
        import BBBAnomalyLib.dsc.phae.network  # noqa: F401

    # Peak RSS of the run alone: Linux resets the high-water mark VmHWM to the current RSS when 5 is
    # written to /proc/self/clear_refs. (getrusage's ru_maxrss cannot be reset and, on Linux, even
    # carries the parent's peak across fork + exec.)
    rss_before = _reset_peak_rss()
    run()
    rss = _status_mb("VmHWM")
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the peak of arrays alive at once
    run()
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    runs, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)  # all threads of the process
    print(json.dumps({"seconds": statistics.median(runs), "runs": runs, "cpu_seconds": statistics.median(cpu),
                      "cpu_runs": cpu, "peak_rss_mb": rss, "rss_before_mb": rss_before,
                      "traced_peak_mb": traced_peak}))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> float:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then includes the imports
    return _status_mb("VmRSS")


def measure(what: str, folder: Path, repeats: int, baseline) -> dict:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, __file__, "--child", what, str(folder), str(repeats), json.dumps(baseline)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _over_rounds(measures: list[dict]) -> dict:
    """One method's rounds as one measurement: the median over rounds of each number, the rounds kept."""
    keys = ("seconds", "cpu_seconds", "peak_rss_mb", "rss_before_mb", "traced_peak_mb")
    out = {k: statistics.median(m[k] for m in measures) for k in keys}
    out["rounds"] = [{k: m[k] for k in keys} for m in measures] if len(measures) > 1 else []
    return out


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _measure(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voxels", type=float, nargs="+", default=[0.1, 0.25, 1.0], help="millions of voxels")
    ap.add_argument("--frames", type=int, nargs="+", default=[60, 120])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + LEARNED,
                    help="methods to run end to end (default: the four classic ones; add phae for the learned one)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="fresh child processes per method, the methods taking turns (median over rounds reported, "
                         "each round's median in the JSON): on a shared machine 5-7 rounds separate a few per cent")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args(argv)

    from BBBAnomalyLib.core.report import machine_description

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_dsc_floor_") as tmp:
        for frames in args.frames:
            for mvox in args.voxels:
                case = make_case(Path(tmp) / f"{mvox}_{frames}", mvox, frames)
                row = dict(case, load=os.getloadavg()[0], results={}, start=time.strftime("%H:%M:%S", time.gmtime()))
                rounds = {}
                for r in range(args.rounds):  # the methods take turns, so a change in the machine's load hits all
                    for what in ["floor", *args.methods]:
                        m = measure(what, Path(tmp) / f"{mvox}_{frames}", args.repeats, case["baseline"])
                        rounds.setdefault(what, []).append(m)
                        print(f"  {case['voxels']:>9,} x {frames:3d}  {what:14s} round {r + 1}: {m['seconds']:7.2f} s  "
                              f"peak RSS {m['peak_rss_mb']:7.0f} MiB", file=sys.stderr, flush=True)
                        shutil.rmtree(Path(tmp) / f"{mvox}_{frames}" / "runs", ignore_errors=True)
                row["results"] = {what: _over_rounds(ms) for what, ms in rounds.items()}
                rows.append(row)
    print(f"machine: {machine_description()}; 1-min load average at each size's start shown\n")
    head = "| voxels × frames | series | start (UTC) | load | floor | " + " | ".join(f"{m} (× floor)" for m in args.methods) + " |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        f = r["results"]["floor"]["seconds"]
        cells = [f"{r['results'][m]['seconds']:.2f} s ({r['results'][m]['seconds'] / f:.2f}×)" for m in args.methods]
        print(f"| {r['voxels']:,} × {r['frames']} | {r['series_mb']:.0f} MiB | {r['start']} | {r['load']:.1f} | {f:.2f} s | "
              + " | ".join(cells) + " |")
    print("\nCPU time (all threads of the process, median of the timed runs) and its ratio to the floor's: "
          "the work done, less sensitive than wall time to other jobs on the machine\n")
    head = "| voxels × frames | floor | " + " | ".join(f"{m} (× floor)" for m in args.methods) + " |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        f = r["results"]["floor"]["cpu_seconds"]
        cells = [f"{r['results'][m]['cpu_seconds']:.2f} s ({r['results'][m]['cpu_seconds'] / f:.2f}×)" for m in args.methods]
        print(f"| {r['voxels']:,} × {r['frames']} | {f:.2f} s | " + " | ".join(cells) + " |")
    print("\nPeak RSS of one run, MiB, and in brackets (peak RSS - RSS before the run) / series size; then the "
          "peak of numpy arrays alive at once (tracemalloc) / series size\n")
    head = "| voxels × frames | series | floor | " + " | ".join(args.methods) + " |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        cells = []
        for what in ["floor", *args.methods]:
            m = r["results"][what]
            cells.append(f"{m['peak_rss_mb']:.0f} ({(m['peak_rss_mb'] - m['rss_before_mb']) / r['series_mb']:.2f}×; "
                         f"arrays {m['traced_peak_mb'] / r['series_mb']:.2f}×)")
        print(f"| {r['voxels']:,} × {r['frames']} | {r['series_mb']:.0f} MiB | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""DCE end to end against its floor (issue 17): how close extended Tofts comes to the least a correct fit must do.

The floor (``floor()`` below) reads the same NIfTI series, applies the brain mask once, converts
signal -> SER -> concentration with the project's own conversion (known T10 map, known baseline),
averages the given AIF mask, solves the extended-Tofts linear form (Murase) for every brain voxel
with ONE batched 3x3 normal-equation solve (one product for the shared regressors, no delay search,
no boundary refit, no model curves), and saves Ktrans, kep, ve and vp (.nii.gz, as run_dce writes).

Each configuration then runs end to end through ``run_dce`` (rls="none", so the learned map does not
count; brain, AIF and tumor masks and the T10 map given; maps written with ``DCEResult.write``):
extended Tofts without delay, with the default delay grid (max_delay 6 s, 7 AIF shifts) and with
``refine`` (batched Levenberg-Marquardt, 15 iterations, on top of the delay grid). "fit only" is the
``PKModel.fit`` call alone on the concentration curves of the brain voxels (the floor's fit-only
time is its normal-equation solve alone).

Input: the whole-brain DCE reference object, ``make_dce_phantom(snr=40, slices="all", seed=7)``
(262,245 brain voxels x 60 frames, 5 s frames), written once as uncompressed NIfTI.

Each measurement runs in its own fresh Python process (imports excluded from the time: the time is
taken inside the process around the work); the median of --repeats runs is printed, then the ratios.
Beside the wall time, each run's CPU time (``time.process_time``: less sensitive to other processes
on a shared machine) and, end to end, its memory: peak RSS (VmHWM) and that peak above the
RSS after the imports, both relative to the input series (its float32 bytes in memory). torch is
imported by ``run_dce`` when ``refine`` is set (≈1.3 s on the 2-core VM): end to end it is counted,
fit only it is imported before the timer (imports are excluded there, as everywhere).

--threads N runs every child with OMP/OpenBLAS/MKL held to N threads (the same thread policy for the
floor as for the pipeline, which holds BLAS to one thread inside its fit; the floor's products and
LAPACK solves otherwise run on as many threads as the machine has, whose spin-waits cost it most on a
loaded machine).

usage:  python scripts/benchmark_dce_floor.py [--repeats 3] [--slices all] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = {  # name -> (max_delay [s], refine)
    "etofts": (0.0, False),
    "etofts_delay": (6.0, False),
    "etofts_delay_refine": (6.0, True),
}


def make_case(folder: Path, slices) -> dict:
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.io import write_volume
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    ph = make_dce_phantom(snr=40, slices=slices, seed=7)
    write_volume(ph.signal, folder / "signal.nii")
    for name in ("brain", "aif", "tumor"):
        write_volume(Volume(ph.masks[name].astype(np.uint8), ph.signal.affine), folder / f"mask_{name}.nii")
    write_volume(ph.truth["t10"], folder / "t10.nii")
    acq = ph.signal.acquisition
    info = {"voxels": int(ph.masks["brain"].sum()), "frames": int(ph.times.size),
            "flip": float(acq.flip_angle), "tr": float(acq.repetition_time), "times": [float(t) for t in ph.times]}
    (folder / "case.json").write_text(json.dumps(info))
    return info


def _inputs(folder: Path):
    from BBBAnomalyLib.io import read_volume

    info = json.loads((folder / "case.json").read_text())
    series = read_volume(folder / "signal.nii", times=np.array(info["times"]))
    masks = {n: read_volume(folder / f"mask_{n}.nii").data.astype(bool) for n in ("brain", "aif", "tumor")}
    return info, series, masks, read_volume(folder / "t10.nii")


def _rss_now() -> int:
    """Resident set size now [bytes] (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _peak_rss() -> int:
    """Peak RSS of this process [bytes]: VmHWM (Linux), which starts afresh with the exec; ru_maxrss
    is kept across exec and would report the parent's peak (which built the phantom)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory(rss_after_imports: int, series_bytes: int) -> dict:
    peak = _peak_rss()
    return {"peak_rss_x_series": peak / series_bytes,
            "peak_above_imports_x_series": (peak - rss_after_imports) / series_bytes}


def floor(folder: Path, out: Path) -> dict:
    """Load, convert, one batched extended-Tofts linear solve over all brain voxels, save four maps."""
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.dce.conversion import concentration_from_ser, enhancement_ratio
    from BBBAnomalyLib.dce.parameters import DCEParameters
    from BBBAnomalyLib.io import write_volume

    rss0 = _rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    info, series, masks, t10 = _inputs(folder)
    series_bytes = series.data.size * 4
    brain, arterial = masks["brain"], masks["aif"]
    analysed = brain | arterial
    raw = series.data[analysed].astype(np.float32)
    r1, hct = DCEParameters().relaxivity, DCEParameters().hematocrit
    ser, _ = enhancement_ratio(raw, 6)
    conc, _ = concentration_from_ser(ser, t10.data[analysed], info["flip"], info["tr"], r1)
    cp = conc[arterial[analysed]].mean(axis=0, dtype=np.float64) / (1.0 - hct)
    y = np.asarray(conc[brain[analysed]], dtype=np.float64)
    t_fit = time.perf_counter()
    t = np.array(info["times"]) / 60.0
    h = np.diff(t)
    int_cp = np.concatenate([[0.0], np.cumsum(0.5 * (cp[1:] + cp[:-1]) * h)])
    int_y = np.zeros_like(y)
    np.cumsum(0.5 * (y[:, 1:] + y[:, :-1]) * h, axis=1, out=int_y[:, 1:])
    shared = np.stack([int_cp, cp])  # (2, T)
    ys, iys = y @ shared.T, int_y @ shared.T
    gram = np.empty((y.shape[0], 3, 3))
    gram[:, :2, :2] = shared @ shared.T
    gram[:, :2, 2] = gram[:, 2, :2] = -iys
    gram[:, 2, 2] = np.einsum("nt,nt->n", int_y, int_y)
    rhs = np.concatenate([ys, -np.einsum("nt,nt->n", int_y, y)[:, None]], axis=1)
    b1, vp, kep = np.linalg.solve(gram, rhs[..., None])[..., 0].T
    ktrans = b1 - kep * vp
    with np.errstate(divide="ignore", invalid="ignore"):
        ve = np.where(kep > 0, ktrans / kep, 0.0)
    fit_s = time.perf_counter() - t_fit
    out.mkdir(parents=True, exist_ok=True)
    for name, v in (("ktrans", ktrans), ("kep", kep), ("ve", ve), ("vp", vp)):
        full = np.zeros(brain.shape, np.float32)
        full[brain] = v
        write_volume(Volume(full, series.affine), out / f"{name}.nii.gz")
    return {"total_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "fit_s": fit_s,
            **_memory(rss0, series_bytes)}


def end_to_end(folder: Path, out: Path, config: str) -> dict:
    from BBBAnomalyLib.dce import DCEParameters, run_dce

    max_delay, refine = CONFIGS[config]
    rss0 = _rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    info, series, masks, t10 = _inputs(folder)
    series_bytes = series.data.size * 4
    params = DCEParameters(rls="none", max_delay=max_delay, refine=refine, flip_angle=info["flip"], tr=info["tr"],
                           baseline_frames=6)
    result = run_dce(series, params, aif_mask=masks["aif"], brain_mask=masks["brain"], tumor_mask=masks["tumor"],
                     t10_map=t10)
    result.write(out)
    return {"total_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "fit_s": result.report["timings_s"]["model_fit"], **_memory(rss0, series_bytes)}


def fit_only(folder: Path, config: str) -> dict:
    """PKModel.fit alone, on the concentration curves of the brain voxels (converted outside the timing)."""
    from BBBAnomalyLib.dce import DCEParameters, PKModel
    from BBBAnomalyLib.dce.conversion import concentration_from_ser, enhancement_ratio

    info, series, masks, t10 = _inputs(folder)
    brain, arterial = masks["brain"], masks["aif"]
    analysed = brain | arterial
    ser, _ = enhancement_ratio(series.data[analysed].astype(np.float32), 6)
    conc, _ = concentration_from_ser(ser, t10.data[analysed], info["flip"], info["tr"], DCEParameters().relaxivity)
    cp = conc[arterial[analysed]].mean(axis=0, dtype=np.float64) / (1.0 - DCEParameters().hematocrit)
    y = conc[brain[analysed]]
    max_delay, refine = CONFIGS[config]
    if refine:
        import torch  # noqa: F401  (an import: excluded from the time, as all imports are)
    t0, c0 = time.perf_counter(), time.process_time()
    PKModel("extended-tofts", cp, np.array(info["times"]), max_delay=max_delay, refine=refine).fit(y)
    return {"total_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "fit_s": time.perf_counter() - t0}


def _child(args) -> int:
    folder = Path(args.case)
    with tempfile.TemporaryDirectory() as tmp:
        if args.run == "floor":
            res = floor(folder, Path(tmp) / "out")
        elif args.run.startswith("fit:"):
            res = fit_only(folder, args.run[4:])
        else:
            res = end_to_end(folder, Path(tmp) / "out", args.run)
    print("RESULT " + json.dumps(res))
    return 0


def _measure(case: Path, run: str, repeats: int, threads: int | None = None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    results = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, __file__, "--child", "--case", str(case), "--run", run],
                              capture_output=True, text=True, check=True, env=env)
        results.append(json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:]))
    row = {key: statistics.median(r[key] for r in results) for key in results[0]}
    row["runs"] = [r["total_s"] for r in results]
    row["load_1min"] = os.getloadavg()[0]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", default="all")
    parser.add_argument("--json")
    parser.add_argument("--threads", type=int, help="OMP/OpenBLAS/MKL threads of every child (default: as set)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    print(f"load average at start: {os.getloadavg()}; child threads: {args.threads or 'as set'}")
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp)
        info = make_case(case, "all" if args.slices == "all" else int(args.slices))
        print(f"input: {info['voxels']} brain voxels x {info['frames']} frames (DCE reference object, SNR 40)")
        rows = {"floor": _measure(case, "floor", args.repeats, args.threads)}
        for config in CONFIGS:
            rows[config] = _measure(case, config, args.repeats, args.threads)
            fit = _measure(case, f"fit:{config}", args.repeats, args.threads)
            rows[config]["fit_only_s"], rows[config]["fit_only_cpu_s"] = fit["total_s"], fit["cpu_s"]
        rows["floor"]["fit_only_s"] = rows["floor"]["fit_s"]
        rows["floor"]["fit_only_cpu_s"] = float("nan")  # the floor's solve is timed inside its end-to-end run
    base, linear = rows["floor"], rows["etofts_delay"]
    print(f"\n{'run':<24}{'end to end (s)':>15}{'x floor':>9}{'cpu (s)':>9}{'x floor':>9}{'fit only (s)':>14}"
          f"{'fit cpu (s)':>12}{'peak RSS':>10}{'above imports':>15}{'load':>6}")
    for config in ("floor",) + tuple(CONFIGS):
        r = rows[config]
        print(f"{config:<24}{r['total_s']:>15.2f}{r['total_s'] / base['total_s']:>9.2f}{r['cpu_s']:>9.2f}"
              f"{r['cpu_s'] / base['cpu_s']:>9.2f}{r['fit_only_s']:>14.2f}{r['fit_only_cpu_s']:>12.2f}"
              f"{r['peak_rss_x_series']:>9.2f}x{r['peak_above_imports_x_series']:>14.2f}x{r['load_1min']:>6.1f}")
    ref = rows["etofts_delay_refine"]
    print(f"\nrefine / linear (delay grid): end to end {ref['total_s'] / linear['total_s']:.2f}x "
          f"(cpu {ref['cpu_s'] / linear['cpu_s']:.2f}x), fit only {ref['fit_only_s'] / linear['fit_only_s']:.2f}x "
          f"(cpu {ref['fit_only_cpu_s'] / linear['fit_only_cpu_s']:.2f}x) (goal <= 3x)")
    print(f"extended Tofts + delay / floor: end to end {linear['total_s'] / base['total_s']:.2f}x "
          f"(cpu {linear['cpu_s'] / base['cpu_s']:.2f}x) (goal <= 1.5x)")
    print(f"load average at end: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"input": info, "rows": rows, "threads": args.threads,
                                               "load_end": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

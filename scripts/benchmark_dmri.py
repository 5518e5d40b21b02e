"""Speed and memory of the diffusion anomaly pipeline (numbers for docs/benchmarks.md).

  python scripts/benchmark_dmri.py inference [--threads 2] [--model vae]
  python scripts/benchmark_dmri.py train-step [--threads 2] [--model vae] [--batch-size 2]
  python scripts/benchmark_dmri.py memory [--model vae] [--torch-threads 1] [--curves] [--out results.jsonl]

inference: a 90×90×54 DWI with 1 b0 + 64 directions at 2.4 mm (the seed's acquisition; a phantom
patient padded/cropped to that grid) through `run_dmri` with the bundled weights; wall time per
step and the process's peak resident memory (ru_maxrss) beside its memory before the run (the
volume is simulated in a child process and loaded, so the peak is the run's, plus the input).
memory (issue 17: peak <= 2x the input series): the same DWI, each measure in a fresh process with torch (one
thread unless --torch-threads) and the library and scikit-learn's metrics (the report's AUC) imported first, the DWI loaded after: tracemalloc, the peak of numpy arrays alive at once
during run_dmri with the DWI counted as 1x (torch's tensors are not seen); RSS, peak RSS (VmHWM, reset once the
DWI is loaded: reading the .npz makes a transient copy) minus the RSS after the imports, over the DWI's bytes; and the network alone (the loaded model run once on its fixed
64 x 40 x 48 x 40 input: VmHWM above the RSS before, a cost that does not grow with the DWI); with --curves also
rss-curves: the RSS measure over run_dmri and then result.curves() (the panel worker's path: the measured S/S0 and
the reconstruction on the brain's voxels, two (n_brain, 64) float32 arrays, made after the run).
train-step: optimizer steps of the bundled architecture on random-free phantom-like input
(40×48×40×64, batch 2), median time per step after a warm-up. Each command runs in its own
process so peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def benchmark_volume(seed: int = 1000):
    """A phantom patient on the seed's 90×90×54 grid of 2.4 mm (padded with noise in-plane)."""
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom
    from BBBAnomalyLib.core.volume import Volume

    p = make_dmri_phantom(seed, voxel_mm=2.4, n_directions=64, tumor=True)
    data = p.dwi.data
    target = (90, 90, 54)
    rng = np.random.default_rng(0)
    out = np.abs(rng.normal(0, 1 / 30.0, target + (data.shape[3],))).astype(np.float32)
    offsets, src = [], []
    for n, t in zip(data.shape[:3], target):
        if n <= t:
            start = (t - n) // 2
            offsets.append(-start)
            src.append((slice(0, n), slice(start, start + n)))
        else:
            start = (n - t) // 2
            offsets.append(start)
            src.append((slice(start, start + t), slice(0, t)))
    out[src[0][1], src[1][1], src[2][1]] = data[src[0][0], src[1][0], src[2][0]]
    affine = p.dwi.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array(offsets, float) + affine[:3, 3]
    tumor = np.zeros(target, bool)
    tumor[src[0][1], src[1][1], src[2][1]] = p.masks["tumor"][src[0][0], src[1][0], src[2][0]]
    return Volume(out, affine, None, p.dwi.acquisition), tumor


def inference(args) -> dict:
    import torch

    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    from BBBAnomalyLib.core.report import machine_description

    import subprocess
    import tempfile

    from BBBAnomalyLib.core.volume import Acquisition, Volume

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:  # simulate in another process: this one's peak is the run's
        path = Path(tmp) / "volume.npz"
        subprocess.run([sys.executable, __file__, "make-volume", "--out", str(path)], check=True)
        with np.load(path) as z:
            dwi = Volume(z["data"], z["affine"], None, Acquisition(bvals=z["bvals"], bvecs=z["bvecs"]))
            tumor = z["tumor"]
    before = rss_mb()
    t0 = time.perf_counter()
    result = run_dmri(dwi, DMRIParameters(model=args.model, device="cpu"), tumor_mask=tumor)
    wall = time.perf_counter() - t0
    return {"benchmark": "inference", "model": args.model, "shape": list(dwi.data.shape), "voxel_mm": 2.4,
            "wall_s": round(wall, 2), "steps_s": {k: round(v, 2) for k, v in result.report["timings_s"].items()},
            "rss_before_mb": round(before, 1), "peak_rss_mb": round(rss_mb(), 1),
            "input_mb": round(dwi.data.nbytes / 2 ** 20, 1), "threads": args.threads,
            "brain_voxels": result.report["brain_voxels"], "machine": machine_description(),
            "tumor_voxel_auc": result.report["summary"]["tumor_overlap"].get("voxel_auc")}


def _vm(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))


def memory_child(args) -> dict:
    import torch

    torch.set_num_threads(args.torch_threads)
    from BBBAnomalyLib.core.volume import Acquisition, Volume
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    import BBBAnomalyLib.dmri.inference  # noqa: F401  (torch's network modules: imports, not data)
    import BBBAnomalyLib.metrics  # noqa: F401
    import sklearn.metrics  # noqa: F401  (imported lazily by the report's tumor-overlap AUC: ~14 MiB of modules)

    if args.measure == "network":
        from BBBAnomalyLib.dmri.inference import load_model, score

        model = load_model(DMRIParameters(model=args.model).weights_name, args.model, "cpu")
        x = np.full((model.spec.channels,) + tuple(model.spec.shape), 0.4, np.float32)
        rss0 = _vm("VmRSS")
        score(model, x, np.ones(model.spec.shape, bool))
        return {"measure": "network", "model": args.model, "input_mib": x.nbytes / 2**20,
                "network_peak_above_mib": (_vm("VmHWM") - rss0) / 2**20}
    rss0 = _vm("VmRSS")
    tracing = args.measure == "tracemalloc"
    if tracing:
        import tracemalloc

        tracemalloc.start()
    with np.load(args.input) as z:
        dwi = Volume(z["data"], z["affine"], None, Acquisition(bvals=z["bvals"], bvecs=z["bvecs"]))
        tumor = z["tumor"]
    series = dwi.data.nbytes
    if tracing:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
    else:  # the peak from here: reading the .npz member made a transient copy of the DWI
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    result = run_dmri(dwi, DMRIParameters(model=args.model, device="cpu"), tumor_mask=tumor)
    if args.measure == "rss-curves":
        result.curves()
    out = {"measure": args.measure, "model": args.model, "series_mib": series / 2**20,
           "brain_voxels": result.report["brain_voxels"]}
    if tracing:
        _, peak = tracemalloc.get_traced_memory()
        out["peak_x_series"] = (peak - before + series) / series
    else:
        out["peak_above_imports_x_series"] = (_vm("VmHWM") - rss0) / series
        out["peak_above_imports_mib"] = (_vm("VmHWM") - rss0) / 2**20
    return out


def memory(args) -> list[dict]:
    import os
    import subprocess
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.npz"
        subprocess.run([sys.executable, __file__, "make-volume", "--out", str(path)], check=True)
        for measure in ("tracemalloc", "rss", "network") + (("rss-curves",) if args.curves else ()):
            proc = subprocess.run([sys.executable, __file__, "memory-child", "--measure", measure, "--model",
                                   args.model, "--input", str(path), "--torch-threads", str(args.torch_threads)],
                                  capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["torch_threads"] = args.torch_threads
            res["load_1min"] = os.getloadavg()[0]
            rows.append(res)
    return rows


def train_step(args) -> dict:
    import torch

    from BBBAnomalyLib.dmri.anomalies import draw_anomalies
    from BBBAnomalyLib.dmri.models import build, recdisc_loss, vae_loss
    from BBBAnomalyLib.core.report import machine_description

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = {"channels": 64, "grid": [40, 48, 40], "widths": [24, 48, 64], "norm": "group"}  # as bundled
    if args.model == "vae":
        config["latent"] = 128
    net = build(args.model, config)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = 0.3 + 0.1 * torch.rand(args.batch_size, 64, 40, 48, 40)
    brain = torch.zeros(args.batch_size, 40, 48, 40, dtype=torch.bool)
    brain[:, 6:34, 6:42, 6:34] = True
    x = x * brain[:, None]
    before = rss_mb()
    times = []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        if args.model == "vae":
            recon, mu, logvar = net(x)
            loss = vae_loss(x, recon, mu, logvar, brain[:, None].float())
        else:
            xa, labels = draw_anomalies(x, brain, torch.Generator().manual_seed(step), 4.0)
            recon, logits = net(xa)
            loss = recdisc_loss(x, recon, logits, labels, brain[:, None].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:  # the first step allocates and warms up
            times.append(time.perf_counter() - t0)
    return {"benchmark": "train-step", "model": args.model, "batch_size": args.batch_size,
            "input": [args.batch_size, 64, 40, 48, 40], "median_step_s": round(float(np.median(times)), 2),
            "steps": args.steps, "parameters": sum(p.numel() for p in net.parameters()),
            "rss_before_mb": round(before, 1), "peak_rss_mb": round(rss_mb(), 1), "threads": args.threads,
            "machine": machine_description()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["inference", "train-step", "make-volume", "memory", "memory-child"])
    parser.add_argument("--model", choices=["vae", "recdisc"], default="vae")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", help="append the JSON result to this file (make-volume: the .npz to write)")
    parser.add_argument("--torch-threads", type=int, default=1, help="memory: torch threads in each measure (1)")
    parser.add_argument("--curves", action="store_true", help="memory: also the RSS over run_dmri + result.curves()")
    parser.add_argument("--measure", choices=["tracemalloc", "rss", "network", "rss-curves"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.what == "memory-child":
        print(json.dumps(memory_child(args)))
        return 0
    if args.what == "make-volume":
        dwi, tumor = benchmark_volume()
        np.savez(args.out, data=dwi.data, affine=dwi.affine, bvals=dwi.acquisition.bvals,
                 bvecs=dwi.acquisition.bvecs, tumor=tumor)
        return 0
    if args.what == "memory":
        results = memory(args)
    else:
        results = [inference(args) if args.what == "inference" else train_step(args)]
    for result in results:
        print(json.dumps(result, indent=1))
        if args.out:
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed and memory of `run_t1flair` on a 240 x 240 x 155 case (the BraTS grid) on this machine.

  python scripts/benchmark_t1flair.py [--steps 4 2] [--threads N] [--json OUT.json]
  python scripts/benchmark_t1flair.py --memory [--threads 1] [--json OUT.json]

The case is the real BraTS 2023 case in ../shared/data/brats when present, else a structural
phantom resampled onto a 1 mm 240 x 240 x 155 grid. Each configuration runs in a fresh process
(peak resident memory = ru_maxrss of that process); the load average at the start is printed,
because this CPU may be shared.

--memory (issue 17: peak RSS <= 2x the input): the same case and defaults, each measure in a fresh process with
torch, the library's T1/FLAIR modules and scipy/scikit-learn imported first and the two volumes read before the
measure starts. The input counts as the T1 and the FLAIR in float32 (2 x 35.7 MiB on the 240 x 240 x 155 grid),
whatever the files' dtype. tracemalloc: the peak of numpy arrays alive at once during run_t1flair, the inputs
counted (torch's tensors are not seen). RSS: peak RSS (VmHWM, reset once the volumes are read) minus the RSS after
the imports. Both also as the peak per pipeline step (the progress messages) and with the result's maps reported
apart: ``outputs_mib`` = the 8 maps as float32 volumes of the T1 grid, ``outputs_held_mib`` = what the result holds
(the brain voxels' values since issue 17's MapVolumes); ``peak_minus_outputs_x_input`` subtracts the latter. Then
the result is written as the CLI does (``result.write``, .nii.gz, to a temporary folder): ``peak_with_write_mib``
is the peak of the run and the write together. --crop F measures a central box of F x each axis instead
(same case): several F give the peak's fixed part (intercept) and its cost per input MiB (slope).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BRATS = REPO.parent / "shared" / "data" / "brats" / "BraTS-GLI-00001-000"

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
import torch
if {threads}:
    torch.set_num_threads({threads})
from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair
from BBBAnomalyLib.core.volume import Volume
brats = {brats!r}
if brats:
    from BBBAnomalyLib.io import read_volume
    t1 = read_volume(brats + "/BraTS-GLI-00001-000-t1n.nii.gz")
    flair = read_volume(brats + "/BraTS-GLI-00001-000-t2f.nii.gz")
    source = "BraTS-GLI-00001-000 (real, 240x240x155, 1 mm)"
else:
    from scipy import ndimage
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom
    ph = make_structural_phantom(1)
    def big(v):
        up = ndimage.zoom(v.data, 2, order=1)[:, :, :155]
        out = np.zeros((240, 240, 155), np.float32)
        out[:up.shape[0], :up.shape[1], :up.shape[2]] = up
        return Volume(out, np.diag([1.0, 1.0, 1.0, 1.0]))
    t1, flair = big(ph.t1), big(ph.flair)
    source = "structural phantom resampled to 240x240x155 at 1 mm"
start = time.perf_counter()
res = run_t1flair(t1, flair, T1FlairParameters(steps={steps}, device="cpu"))
wall = time.perf_counter() - start
print(json.dumps({{"source": source, "steps": {steps}, "wall_s": wall, "timings_s": res.report["timings_s"],
                  "network_slices": res.report["input"]["network_slices"], "size": res.report["input"]["network_size"],
                  "torch_threads": torch.get_num_threads(),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


MEMORY_CHILD = r"""
import json, sys
sys.path.insert(0, {repo!r})
import numpy as np
import torch
torch.set_num_threads({threads} or torch.get_num_threads())
import scipy.ndimage, sklearn.metrics  # noqa: F401
from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair
from BBBAnomalyLib.structural import (applicability, cae, diffusion, enhancement, enhancer, identification,  # noqa
                                      models, preprocessing, real_evidence, tumor_roi)
import BBBAnomalyLib.metrics  # noqa: F401
from BBBAnomalyLib.io import read_volume

def vm(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))

def reset_peak():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")

measure = {measure!r}
tracing = measure == "tracemalloc"
rss0 = vm("VmRSS")
if tracing:
    import tracemalloc
    tracemalloc.start()
t1 = read_volume({brats!r} + "/BraTS-GLI-00001-000-t1n.nii.gz")
flair = read_volume({brats!r} + "/BraTS-GLI-00001-000-t2f.nii.gz")
crop = {crop!r}
if crop < 1.0:  # a central box, crop x each side: how the peak scales with the input (fixed vs per-voxel cost)
    import numpy as np
    from BBBAnomalyLib.core.volume import Volume
    lo = [int(round(n * (1 - crop) / 2)) for n in t1.shape[:3]]
    box = tuple(slice(a, a + max(16, int(round(n * crop)))) for a, n in zip(lo, t1.shape[:3]))
    shift = np.eye(4); shift[:3, 3] = lo
    t1, flair = (Volume(np.ascontiguousarray(v.data[box]), v.affine @ shift) for v in (t1, flair))
MIB = 2 ** 20
inputs = 2 * 4 * t1.data.size  # T1 + FLAIR as float32
held = t1.data.nbytes + flair.data.nbytes  # as read
steps, last = [], ["start"]
if tracing:
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    def peak_now():
        return tracemalloc.get_traced_memory()[1] - base + held
    def mark(message):
        steps.append((last[0], peak_now() / MIB)); last[0] = message; tracemalloc.reset_peak()
else:
    import ctypes
    reset_peak()
    def peak_now():
        return vm("VmHWM") - rss0
    def mark(message):
        steps.append((last[0], peak_now() / MIB)); last[0] = message; reset_peak()
overall = [0]
def progress(fraction, message):
    overall[0] = max(overall[0], peak_now())
    mark(message)
res = run_t1flair(t1, flair, T1FlairParameters(device="cpu"), progress=progress)
overall[0] = max(overall[0], peak_now())
mark("writing the outputs")
run_peak = overall[0]
# the CLI's write (result.write: .nii.gz, one full map at a time), measured on as its own step
import tempfile
with tempfile.TemporaryDirectory() as tmp:
    res.write(tmp + "/out")
with_write = max(run_peak, peak_now())
mark("end")
n_voxels = int(np.prod(t1.shape[:3]))
outputs = 4 * n_voxels * len(res.maps)  # the maps as full float32 volumes of the T1 grid
outputs_held = getattr(res.maps, "nbytes", outputs)  # what the result holds (MapVolumes: the brain's values)
print(json.dumps({{"measure": measure, "crop": crop, "shape": list(t1.shape), "input_mib": inputs / MIB, "input_as_read_mib": held / MIB,
                  "outputs_mib": outputs / MIB, "outputs_held_mib": outputs_held / MIB,
                  "peak_mib": run_peak / MIB, "peak_x_input": run_peak / inputs,
                  "peak_minus_outputs_x_input": (run_peak - outputs_held) / inputs,
                  "peak_with_write_mib": with_write / MIB, "peak_with_write_x_input": with_write / inputs,
                  "torch_threads": torch.get_num_threads(),
                  "steps_peak_mib": [[m, round(v, 1)] for m, v in steps[1:]]}}))
"""


def memory(args) -> list[dict]:
    if not BRATS.is_dir():
        raise SystemExit(f"--memory needs the BraTS case in {BRATS}")
    rows = []
    for measure in ("tracemalloc", "rss"):
        load = os.getloadavg()
        code = MEMORY_CHILD.format(repo=str(REPO), threads=args.threads, brats=str(BRATS), measure=measure,
                                   crop=float(args.crop))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["load_average_at_start"] = [round(v, 2) for v in load]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[4])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json")
    ap.add_argument("--memory", action="store_true", help="peak memory over the input (issue 17) instead of time")
    ap.add_argument("--crop", type=float, default=1.0,
                    help="--memory on a central box of this fraction of each axis (e.g. 0.4 0.6 0.8: how the peak "
                         "scales with the input, i.e. what is fixed cost and what is per voxel)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from BBBAnomalyLib.core.report import machine_description

    if args.memory:
        out = {"machine": machine_description(), "runs": memory(args)}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        return

    rows = []
    for steps in args.steps:
        load = os.getloadavg()
        code = CHILD.format(repo=str(REPO), threads=args.threads, steps=steps, brats=str(BRATS) if BRATS.is_dir() else "")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["load_average_at_start"] = [round(v, 2) for v in load]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"machine": machine_description(), "gpu": "not measured (no GPU in this session)", "runs": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

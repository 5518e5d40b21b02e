"""Speed and memory of `run_t1flair` on a 240 x 240 x 155 case (the BraTS grid) on this machine.

  python scripts/benchmark_t1flair.py [--steps 4 2] [--threads N] [--json OUT.json]

The case is the real BraTS 2023 case in ../shared/data/brats when present, else a structural
phantom resampled onto a 1 mm 240 x 240 x 155 grid. Each configuration runs in a fresh process
(peak resident memory = ru_maxrss of that process); the load average at the start is printed,
because this CPU may be shared.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[4])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from BBBAnomalyLib.core.report import machine_description

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

"""Speed of the DCE pipeline on the whole-brain reference object (numbers for docs/benchmarks.md).

    python scripts/benchmark_dce.py            # whole brain (262k voxels x 60 frames), best of --repeat
    python scripts/benchmark_dce.py --slices 12 --repeat 1

Times each step on the brain voxels: SPGR conversion, the linear extended-Tofts fit (no delay, and
with the default 0-6 s delay grid), the Levenberg-Marquardt refinement, per-case RLS training and
RLS inference (network input + batched passes + residual maps), and the whole run_dce. Prints the
load average too: on a shared machine other jobs slow everything down.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from BBBAnomalyLib.dce import DCEParameters, PKModel, run_dce
from BBBAnomalyLib.dce import rls
from BBBAnomalyLib.dce.conversion import concentration_from_ser, enhancement_ratio
from BBBAnomalyLib.phantoms.dce import make_dce_phantom
from BBBAnomalyLib.core.report import machine_description


def best(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", default="all")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import torch

    slices = "all" if args.slices == "all" else int(args.slices)
    ph = make_dce_phantom(snr=40, slices=slices, seed=7)
    m = ph.masks
    brain = m["brain"]
    raw = ph.signal.data[brain].astype(np.float32)
    t10 = ph.truth["t10"].data[brain]
    times = ph.times
    n, T = raw.shape
    rows = []
    dt, (ser, _) = best(lambda: enhancement_ratio(raw, 6), args.repeat)
    dt2, (conc, _) = best(lambda: concentration_from_ser(ser, t10, 15.0, 0.005, 4.5), args.repeat)
    rows.append(("SER + SPGR signal -> concentration", dt + dt2))
    aif = ph.aif
    for label, delay in (("extended Tofts, linear (no delay search)", 0.0),
                         ("extended Tofts, linear, delay grid 0-6 s (7 fits)", 6.0)):
        dt, _ = best(lambda: PKModel("extended-tofts", aif, times, max_delay=delay).fit(conc), args.repeat)
        rows.append((label, dt))
    dt, _ = best(lambda: PKModel("patlak", aif, times).fit(conc), args.repeat)
    rows.append(("Patlak, linear", dt))
    # (before issue 17 the refinement was timed on 20k voxels and scaled: it took ~1 min on the whole brain)
    dt, _ = best(lambda: PKModel("extended-tofts", aif, times, max_delay=6.0, refine=True).fit(conc), 1)
    rows.append(("extended Tofts, delay grid + Levenberg-Marquardt (<= 15 iterations, float32, exact d/dkep)", dt))
    x, grid, post = rls.network_input(ser, times, 6, 60)
    train_rows = rls.training_rows(ser, ~m["tumor"][brain])
    dt, (model, _) = best(lambda: rls.train_autoencoder(x[train_rows], epochs=8, max_voxels=60000), 1)
    rows.append(("RLS per-case training (60k curves x 8 epochs, 1 thread)", dt))

    def infer():
        xi, _, p = rls.network_input(ser, times, 6, 60)
        return rls.residual_maps(xi, rls.reconstruct(model, xi), p)

    dt, _ = best(infer, args.repeat)
    rows.append(("RLS inference (input + batched passes + maps)", dt))
    dt, res = best(lambda: run_dce(ph.signal, DCEParameters(), aif_mask=m["aif"], brain_mask=brain,
                                   tumor_mask=m["tumor"], t10_map=ph.truth["t10"]), 1)
    rows.append(("whole run_dce (defaults: extended Tofts + delay grid + per-case RLS)", dt))
    import os

    print(f"{n} brain voxels x {T} frames; {machine_description()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| step | seconds |\n|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} |")
    print(f"\nrun_dce timings: {res.report['timings_s']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The guided pooling's sparse product: torch's CSR product (what ``GuidedPooling.pool`` uses) against scipy's.

Issue 14, round 14. ``GuidedPooling.pool`` is the extra cost of PHAE's automatic pooling over oSVD's whole-brain
time (docs/benchmarks.md, round 13: its sparse product was 0.58 s of CPU per million voxels at 60 frames). This
times ``pool()`` over all voxels of an ellipsoidal brain in the pipeline's 8,192-row chunks, once through each
product, the two alternating for ``--rounds`` rounds in one process (so both see the same machine load), and
reports the median of each and the largest difference between their pooled curves.

usage:  python scripts/benchmark_guided_pooling.py [--frames 60 120] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from BBBAnomalyLib.perfusion import guided_pooling  # noqa: E402


def scipy_product(values, columns, width, dense):
    """The product as round 13 computed it (scipy.sparse CSR)."""
    from scipy import sparse

    m = values.size // width
    matrix = sparse.csr_matrix((values, columns, np.arange(0, m * width + 1, width)), shape=(m, dense.shape[0]))
    return np.asarray(matrix @ dense, dtype=np.float32)


def brain_case(frames: int, seed: int = 0):
    """An ellipsoidal brain of ~1.1 M voxels (2 mm: the 3x3x3 neighbourhood), random curves and S0."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((128, 128, 100))
    brain = ((z - 64) ** 2 / 64 ** 2 + (y - 64) ** 2 / 64 ** 2 + (x - 50) ** 2 / 50 ** 2) < 1.25
    n = int(brain.sum())
    curves = rng.standard_normal((n, frames)).astype(np.float32)
    pooling = guided_pooling.GuidedPooling(brain, rng.standard_normal(n).astype(np.float32), 1.0, (2.0, 2.0, 2.0))
    return pooling, curves


def pool_all(pooling, curves, chunk: int = 8192) -> np.ndarray:
    return np.concatenate([pooling.pool(curves, slice(s, min(s + chunk, len(curves))))[0]
                           for s in range(0, len(curves), chunk)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[60, 120])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's chunk workers use 1 each)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    current = guided_pooling._csr_product
    print("| voxels × frames | scipy CSR (round 13) | torch CSR (now) | ratio | max \\|difference\\| |\n|---|---|---|---|---|")
    for frames in args.frames:
        pooling, curves = brain_case(frames)
        times = {"scipy": [], "torch": []}
        try:
            for _ in range(args.rounds):
                for name, product in (("scipy", scipy_product), ("torch", current)):
                    guided_pooling._csr_product = product
                    start = time.perf_counter()
                    pool_all(pooling, curves)
                    times[name].append(time.perf_counter() - start)
            guided_pooling._csr_product = scipy_product
            before = pool_all(pooling, curves)
        finally:
            guided_pooling._csr_product = current
        after = pool_all(pooling, curves)
        a, b = statistics.median(times["scipy"]), statistics.median(times["torch"])
        print(f"| {len(curves):,} × {frames} | {a:.3f} s | {b:.3f} s | {b / a:.2f} | {np.abs(after - before).max():.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

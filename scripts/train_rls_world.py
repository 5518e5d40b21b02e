#!/usr/bin/env python
"""Retrain the bundled cohort RLS autoencoder ``dce-rls-world`` on simulated normal-appearing brain
curves drawn from a wide acquisition distribution (``BBBAnomalyLib.phantoms.dce_curves.TRAINING``:
Parker, McGrath and gamma-variate AIFs, frame interval 1-10 s, 150-600 s, flip 10-30°, TR 3-7 ms,
several T10s, small vessels). Self-supervised (L1 reconstruction of normal curves only; no labels).

  OMP_NUM_THREADS=1 nice -n 10 python scripts/train_rls_world.py              # a few minutes on one core
  python scripts/train_rls_world.py --cases 10 --epochs 1 --out /tmp/r        # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def training_curves(n_cases: int, voxels: int, seed: int, frames: int = 60):
    """Network input rows (n, frames + 4) of simulated normal brain, and the protocols drawn."""
    from BBBAnomalyLib.dce.conversion import enhancement_ratio
    from BBBAnomalyLib.dce.rls import network_input, training_rows
    from BBBAnomalyLib.phantoms.dce_curves import TRAINING, simulate_normal_case

    rng = np.random.default_rng(seed)
    parts, protocols = [], []
    for _ in range(n_cases):
        case = simulate_normal_case(rng, voxels, TRAINING)
        ser, s0 = enhancement_ratio(case.signal, case.n_baseline)
        x, _, _ = network_input(ser, case.times, case.n_baseline, frames)
        parts.append(x[training_rows(ser, s0 > 0.05 * np.median(s0))])
        protocols.append(case.info)
    return np.concatenate(parts), protocols


def train_world(n_cases=300, voxels=2000, epochs=2, seed=0, frames=60, log=None):
    from BBBAnomalyLib.dce.rls import train_autoencoder

    t0 = time.perf_counter()
    x, protocols = training_curves(n_cases, voxels, seed, frames)
    sim_s = time.perf_counter() - t0
    model, losses = train_autoencoder(x, epochs=epochs, seed=seed, max_voxels=x.shape[0], log=log)
    return model, losses, x.shape[0], protocols, sim_s, time.perf_counter() - t0 - sim_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--voxels", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2, help="an upper bound: leak-probe early stopping keeps the best state")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "BBBAnomalyLib" / "weights")
    ap.add_argument("--name", default="dce-rls-world")
    args = ap.parse_args(argv)

    import torch

    from BBBAnomalyLib.dce.rls import BATCH_SIZE, LEARNING_RATE
    from BBBAnomalyLib.phantoms.dce_curves import TRAINING
    from BBBAnomalyLib.weights import write_entry

    torch.set_num_threads(1)
    model, losses, n, protocols, sim_s, train_s = train_world(
        args.cases, args.voxels, args.epochs, args.seed,
        log=lambda e, loss: print(f"epoch {e + 1}/{args.epochs}: L1 {loss:.5f}", flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)
    card = {
        "name": args.name, "model": "BBBAnomalyLib.dce.rls:build_autoencoder",
        "config": {"n_inputs": 64, "hidden": [32, 16, 8]}, "frames": 60,
        "trained_on": (f"{args.cases} simulated cases x {args.voxels} normal-appearing brain voxels (seed {args.seed}, "
                       f"{n} curves kept) from BBBAnomalyLib.phantoms.dce_curves.TRAINING; simulated only, never real "
                       "data: not clinically validated"),
        "training_distribution": TRAINING.describe(),
        "training_domain": {"frame_interval_s": list(TRAINING.frame_interval), "duration_s": list(TRAINING.duration)},
        "protocol": {"duration_s": float(np.median([p["duration"] for p in protocols])),
                     "frame_interval_s": float(np.median([p["frame_interval"] for p in protocols]))},
        "held_apart": "the Georgiou AIF (dce_curves.HELD_APART) and the independent phantom of scripts/validate_rls.py "
                      "are never used in training",
        "command": "python scripts/train_rls_world.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "retrain": "OMP_NUM_THREADS=1 python scripts/train_rls_world.py (then scripts/validate_rls.py)",
        "training": {"epochs": args.epochs, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "loss": "L1",
                     "curves": n, "final_l1_loss": losses[-1], "early_stopping": getattr(model, "training_info", None),
                     "data_seconds": round(sim_s, 1),
                     "train_seconds": round(train_s, 1)},
        "intended_use": "bbbanomaly dce --rls bundled (and --rls auto where per-case training is unreliable)",
        "limitations": "normal brain is simulated (extended Tofts, population-like AIFs); curves are resampled to "
                       "60 points spanning the acquisition, so the time scale follows the acquisition length",
    }
    write_entry(card, path)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

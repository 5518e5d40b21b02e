#!/usr/bin/env python
"""Retrain the bundled cohort RLS autoencoder ``dce-rls-world`` on simulated normal-appearing brain
curves drawn from a wide acquisition distribution (``BBBAnomalyLib.phantoms.dce_curves.TRAINING``:
Parker, McGrath and gamma-variate AIFs, frame interval 1-10 s, 150-600 s, flip 10-30°, TR 3-7 ms,
several T10s, small vessels), half of the cases shortened to 40-100 % and 30 % undersampled 2-3x
(``dce_curves.AUGMENT``: the seed's D_trunc / D_under / D_hybrid as training data). The curves are
resampled onto a fixed grid (121 points, 5 s apart: ``rls.network_input(step=...)``), so a shorter or
coarser series keeps its time scale. Self-supervised (L1 reconstruction of normal curves only); the
kept training state (early stopping) is chosen on simulated normal and *leaky* curves of the same
distribution that are never trained on (``rls._selection_score``).

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


#: The network's fixed time grid: 121 points 5 s apart (0-600 s from the first frame, the longest training
#: acquisition). A curve keeps its time scale whatever the acquisition's length or frame interval; shorter
#: series leave the tail of the grid unobserved (rls.network_input).
GRID_STEP_S = 5.0
GRID_FRAMES = 121


def training_curves(n_cases: int, voxels: int, seed: int, frames: int = GRID_FRAMES, step: float | None = GRID_STEP_S,
                    augment: bool = True):
    """Network input rows (n, frames + 4) of simulated normal brain, their observed grid entries, and the
    protocols drawn (after augmentation: dce_curves.AUGMENT truncates and undersamples some cases)."""
    from BBBAnomalyLib.dce.conversion import enhancement_ratio
    from BBBAnomalyLib.dce.rls import network_input, observed_entries, training_rows
    from BBBAnomalyLib.phantoms.dce_curves import TRAINING, simulate_normal_case, subsample_case

    rng = np.random.default_rng(seed)
    rng_augment = np.random.default_rng([seed, 2])  # its own stream: the simulated cases do not change
    parts, seen, protocols = [], [], []
    for _ in range(n_cases):
        case = simulate_normal_case(rng, voxels, TRAINING)
        if augment:
            case = subsample_case(case, rng_augment)
        ser, s0 = enhancement_ratio(case.signal, case.n_baseline)
        x, grid, _ = network_input(ser, case.times, case.n_baseline, frames, step=step)
        x = x[training_rows(ser, s0 > 0.05 * np.median(s0))]
        parts.append(x)
        seen.append(np.full(x.shape[0], int(observed_entries(grid, case.times).sum()), np.int16))
        protocols.append(case.info)
    return np.concatenate(parts), np.concatenate(seen), protocols


#: Model selection set: SELECTION_CASES more cases from the training distribution (own random stream), each
#: with SELECTION_VOXELS normal and as many leaky voxels (dce_curves.LEAKY); never trained on.
SELECTION_CASES = 40
SELECTION_VOXELS = 100


def selection_curves(seed: int, frames: int = GRID_FRAMES, step: float | None = GRID_STEP_S, augment: bool = True):
    """(normal rows, their observed entries, leaky rows, theirs) for rls.train_autoencoder's ``selection``."""
    from BBBAnomalyLib.dce.conversion import enhancement_ratio
    from BBBAnomalyLib.dce.rls import network_input, observed_entries
    from BBBAnomalyLib.phantoms.dce_curves import TRAINING, simulate_normal_case, subsample_case

    rng = np.random.default_rng([seed, 1])  # a stream of its own: not the training cases
    rng_augment = np.random.default_rng([seed, 3])
    parts = {"normal": [], "leaky": []}
    seen = {"normal": [], "leaky": []}
    for _ in range(SELECTION_CASES):
        case = simulate_normal_case(rng, SELECTION_VOXELS, TRAINING, n_leaky=SELECTION_VOXELS)
        if augment:
            case = subsample_case(case, rng_augment)
        ser, _ = enhancement_ratio(np.concatenate([case.signal, case.leaky]), case.n_baseline)
        x, grid, _ = network_input(ser, case.times, case.n_baseline, frames, step=step)
        finite = np.isfinite(ser).all(axis=1)
        n_obs = int(observed_entries(grid, case.times).sum())
        for key, rows in (("normal", slice(0, SELECTION_VOXELS)), ("leaky", slice(SELECTION_VOXELS, None))):
            keep = x[rows][finite[rows]]
            parts[key].append(keep)
            seen[key].append(np.full(keep.shape[0], n_obs))
    return (np.concatenate(parts["normal"]), np.concatenate(seen["normal"]), np.concatenate(parts["leaky"]),
            np.concatenate(seen["leaky"]))


def train_world(n_cases=300, voxels=2000, epochs=2, seed=0, frames=GRID_FRAMES, step=GRID_STEP_S, log=None,
                select_on_leaky=True, augment=True):
    from BBBAnomalyLib.dce.rls import train_autoencoder

    t0 = time.perf_counter()
    x, seen, protocols = training_curves(n_cases, voxels, seed, frames, step, augment)
    selection = selection_curves(seed, frames, step, augment) if select_on_leaky else None
    sim_s = time.perf_counter() - t0
    model, losses = train_autoencoder(x, epochs=epochs, seed=seed, max_voxels=x.shape[0], log=log,
                                      n_observed=seen if step else None, selection=selection)
    return model, losses, x.shape[0], protocols, sim_s, time.perf_counter() - t0 - sim_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--voxels", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2, help="an upper bound: leak-probe early stopping keeps the best state")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "BBBAnomalyLib" / "weights")
    ap.add_argument("--name", default="dce-rls-world")
    ap.add_argument("--grid-step", type=float, default=GRID_STEP_S,
                    help=f"seconds between the network's fixed grid points (default {GRID_STEP_S:g}); 0: the old grid "
                         "of 60 points spanning each acquisition (its time scale follows the acquisition length)")
    ap.add_argument("--frames", type=int, default=None,
                    help=f"grid points (default {GRID_FRAMES} on the fixed grid, 60 on the spanning one)")
    args = ap.parse_args(argv)
    step = args.grid_step or None
    frames = args.frames or (GRID_FRAMES if step else 60)

    import torch

    from BBBAnomalyLib.dce.rls import BATCH_SIZE, LEARNING_RATE
    from BBBAnomalyLib.phantoms.dce_curves import AUGMENT, TRAINING
    from BBBAnomalyLib.weights import write_entry

    torch.set_num_threads(1)
    model, losses, n, protocols, sim_s, train_s = train_world(
        args.cases, args.voxels, args.epochs, args.seed, frames, step,
        log=lambda e, loss: print(f"epoch {e + 1}/{args.epochs}: L1 {loss:.5f}", flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)
    card = {
        "name": args.name, "model": "BBBAnomalyLib.dce.rls:build_autoencoder",
        "config": {"n_inputs": frames + 4, "hidden": [32, 16, 8]}, "frames": frames,
        **({"grid_step_s": step} if step else {}),
        "trained_on": (f"{args.cases} simulated cases x {args.voxels} normal-appearing brain voxels (seed {args.seed}, "
                       f"{n} curves kept) from BBBAnomalyLib.phantoms.dce_curves.TRAINING; simulated only, never real "
                       "data: not clinically validated"),
        "training_distribution": TRAINING.describe(),
        # what the augmented training cases spanned (dce_curves.AUGMENT shortens and undersamples some)
        "training_domain": {"frame_interval_s": [round(min(p["frame_interval"] for p in protocols), 2),
                                                 round(max(p["frame_interval"] for p in protocols), 2)],
                            "duration_s": [round(min(p["duration"] for p in protocols), 1),
                                           round(max(p["duration"] for p in protocols), 1)]},
        "augmentation": AUGMENT,
        "model_selection": (f"early stopping on {SELECTION_CASES} more simulated cases from the same distribution, "
                            f"{SELECTION_VOXELS} normal and {SELECTION_VOXELS} leaky voxels each (dce_curves.LEAKY: "
                            "Ktrans 0.01-0.3 /min, ve 0.1-0.6, vp 0.005-0.1): the state whose median leaky RLS stands "
                            "highest above the 95th percentile of the normal RLS (rls._selection_score)"),
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
        "limitations": "normal brain is simulated (extended Tofts, population-like AIFs); " + (
            f"curves are resampled to a fixed grid of {frames} points {step:g} s apart from the first frame (0-"
            f"{(frames - 1) * step:.0f} s): a longer acquisition is cut there, a shorter one leaves the grid's tail out"
            if step else f"curves are resampled to {frames} points spanning the acquisition, so the time scale follows "
                         "the acquisition length"),
    }
    write_entry(card, path)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

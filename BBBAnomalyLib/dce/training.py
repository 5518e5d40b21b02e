"""`bbbanomaly train dce-rls`: a cohort RLS autoencoder from a folder of DCE cases.

Per-case training happens inside the pipeline (``--rls case``); this trains one model on the
normal-appearing brain curves of many cases, for ``--rls bundled --rls-weights FILE``. Under
``torchrun --nproc-per-node N`` it trains with DistributedDataParallel (gloo on CPU, NCCL on GPU):
every rank reads the same curves and takes its share of each epoch's shuffled batches.

Folder layout: CASES/<case>/ holding one 4D series named signal.* or dce.* (NIfTI/NRRD, with frame
times in its sidecar/header, or --frame-interval), optional mask_brain.* (else automatic),
mask_tumor.* and mask_aif.* (both left out of training). `bbbanomaly demo --pipeline dce` and
`python scripts/validate_dce.py cases DIR` write folders in this layout.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from ..core.errors import InputError

HELP = """\
Train the DCE RLS autoencoder on the normal-appearing brain curves of a folder of cases.

CASES/<case>/signal.nii.gz (or dce.*; 4D, frame times in the sidecar or --frame-interval),
optional mask_brain.*, mask_tumor.* and mask_aif.* (tumor and AIF voxels are not trained on).
Writes OUT/<name>.pt (state dict) and OUT/<name>.json (model card with sha256, the command and
the protocol); use it with `bbbanomaly dce SERIES --rls bundled --rls-weights OUT/<name>.pt`.
It also leaves OUT/<name>.checkpoint.pt (the training checkpoint: the kept state and the epoch
count), which `bbbanomaly dce` does not need.

examples:
  bbbanomaly train dce-rls cases/ --out run1 --epochs 2
  torchrun --nproc-per-node 2 -m BBBAnomalyLib train dce-rls cases/ --out run1
"""


def register(models_subparsers, name: str) -> None:
    p = models_subparsers.add_parser(name, help="DCE RLS autoencoder (normal enhancement curves)", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", help="folder of case folders")
    p.add_argument("--out", required=True, help="output folder for <name>.pt, <name>.json and the training "
                   "checkpoint <name>.checkpoint.pt")
    p.add_argument("--name", default="dce-rls", help="weights name (default dce-rls)")
    p.add_argument("--epochs", type=int, default=2,
                   help="epochs (default 2): keep the number of steps near a per-case training's (~1000); a longer "
                        "trained autoencoder also reconstructs leaky curves and the signed RLS fades (docs/validation.md)")
    p.add_argument("--frames", type=int, default=60, help="time grid length of the network input (default 60)")
    p.add_argument("--max-curves", type=int, default=400000, help="curves sampled for training (default 400000)")
    p.add_argument("--frame-interval", type=float, help="seconds between frames, for series without timing")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trained-on", default="", help="what the cases are (written to the model card)")
    p.set_defaults(run=run)


def _find(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in (".nii.gz", ".nii", ".nrrd", ".seq.nrrd"):
            if (folder / f"{stem}{suffix}").exists():
                return folder / f"{stem}{suffix}"
    return None


def case_curves(folder: Path, frames: int, frame_interval: float | None = None):
    """(network input rows of the normal-appearing brain, protocol dict) of one case folder."""
    from ..dsc.validation import automatic_brain_mask
    from ..io import read_mask, read_volume
    from .conversion import detect_baseline_frames, enhancement_ratio
    from .rls import network_input, training_rows
    from .validation import check_series

    series_path = _find(folder, ("signal", "dce"))
    if series_path is None:
        raise InputError(f"case folder {folder} has no signal.* or dce.* series")
    series = read_volume(series_path, frame_interval=frame_interval)
    check_series(series)
    brain_path = _find(folder, ("mask_brain",))
    brain = read_mask(brain_path, series, "mask_brain") if brain_path else automatic_brain_mask(series.data)
    keep = brain.copy()
    for stem in ("mask_tumor", "mask_aif"):
        path = _find(folder, (stem,))
        if path:
            try:
                keep &= ~read_mask(path, series, stem)
            except InputError as exc:  # a case without tumor (or artery) in its slab
                if "is empty" not in str(exc):
                    raise
    raw = series.data[brain].astype(np.float32)
    n_base = detect_baseline_frames(raw.mean(axis=0))
    ser, s0 = enhancement_ratio(raw, n_base)
    x, _, _ = network_input(ser, series.times, n_base, frames)
    rows = training_rows(ser, keep[brain] & (s0 > 0.05 * np.median(s0)))
    times = series.times
    return x[rows], {"duration_s": float(times[-1] - times[0]), "frame_interval_s": float(np.median(np.diff(times))),
                     "frames": int(times.size)}


def run(args) -> int:
    import torch

    from ..training import all_reduce_mean, distributed_context, save_checkpoint
    from ..weights import save_weights_and_card
    from .rls import BATCH_SIZE, LEARNING_RATE, train_autoencoder

    cases = Path(args.cases)
    folders = sorted(p for p in cases.iterdir() if p.is_dir()) if cases.is_dir() else []
    if not folders:
        raise InputError(f"{cases} is not a folder of case folders (CASES/<case>/signal.nii.gz ...); see --help")
    context = distributed_context(args.device)
    try:
        parts, protocols = [], []
        for folder in folders:
            x, proto = case_curves(folder, args.frames, args.frame_interval)
            parts.append(x)
            protocols.append(proto)
        x = np.concatenate(parts)
        if context.is_main:
            print(f"{len(folders)} cases, {x.shape[0]} normal-appearing brain curves, {context.world_size} process(es) "
                  f"on {context.device}", file=sys.stderr)

        def log(epoch, loss):
            mean = all_reduce_mean(loss, context)
            if context.is_main:
                print(f"epoch {epoch + 1}/{args.epochs}: L1 {mean:.5f}", file=sys.stderr, flush=True)

        model, losses = train_autoencoder(x, epochs=args.epochs, seed=args.seed, device=context.device,
                                          max_voxels=args.max_curves, context=context, log=log)
        final = all_reduce_mean(losses[-1], context)
        stopping = getattr(model, "training_info", None) or {}
        separated = stopping.get("probe_score", 1.0) > 0
        if context.is_main and not separated:
            from .rls_inference import not_separated_warning

            print("warning: " + not_separated_warning("this autoencoder") + " (e.g. a cohort too varied for the "
                  "synthetic probe); the model card says so", file=sys.stderr)
        if context.is_main:
            from ..training.checkpoints import require_finite

            require_finite(model, final)  # a diverged model writes nothing (not weights without a card)
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            weights = out / f"{args.name}.pt"
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_checkpoint(out / f"{args.name}.checkpoint.pt", model, epoch=args.epochs)
            protocol = {key: float(np.median([p[key] for p in protocols])) for key in protocols[0]}
            card = {
                "name": args.name, "model": "BBBAnomalyLib.dce.rls:build_autoencoder",
                "config": {"n_inputs": args.frames + 4, "hidden": [32, 16, 8]}, "frames": args.frames,
                "protocol": protocol,
                "trained_on": args.trained_on or f"{len(folders)} DCE cases from {cases.name}/ "
                                                 f"({x.shape[0]} normal-appearing brain curves)",
                "command": "bbbanomaly " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                "training": {"epochs": args.epochs, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
                             "loss": "L1", "processes": context.world_size, "curves": int(x.shape[0]),
                             "final_l1_loss": final, "early_stopping": getattr(model, "training_info", None)},
                "intended_use": "bbbanomaly dce --rls bundled: RLS maps of DCE series with a protocol like the "
                                "training protocol",
                "limitations": "curves of another duration are resampled to the network grid, which changes their "
                               "time scale; prefer per-case training (--rls case) then" + (
                                   "" if separated else "; early stopping never separated the synthetic leaks "
                                   "(score <= 0): the RLS map may not show leakage"),
            }
            save_weights_and_card(lambda tmp: torch.save(state, tmp), weights, card)
            print(f"weights written to {weights} (+ {weights.with_suffix('.json').name}; the training checkpoint "
                  f"{args.name}.checkpoint.pt is not needed to run `bbbanomaly dce`)", file=sys.stderr)
        context.barrier()
    finally:
        context.close()
    return 0

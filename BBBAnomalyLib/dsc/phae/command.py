"""`bbbanomaly train phae`: pretrain or fine-tune the DSC physics-informed autoencoder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = """\
Train the DSC physics-informed autoencoder (PHAE) without labels: the loss is how well the
Lorentzian-residue decoder reconstructs each tissue curve from the encoder's MTT and delay.

CASES is a folder with one sub-folder per case holding signal.nii.gz (T2*-weighted DSC series, TE in
signal.json or --te) and optionally mask_aif.nii.gz, mask_brain.nii.gz, mask_tumor.nii.gz (the
layout `bbbanomaly demo` and the DSC phantom write). Curves go through the DSC pipeline's own
preprocessing (ΔR2*, AIF, BSW leakage correction). Instead of CASES, --simulate N trains on N
simulated cases (how the bundled weights were made). --init starts from existing weights (e.g. the
bundled ones: --init dsc-phae-sim) to fine-tune on your own data.

Writes OUT/<name>.pt and OUT/<name>.json (model card with sha256), and OUT/checkpoint.pt after every
epoch (--resume continues). Use the weights with `bbbanomaly dsc ... --method phae --weights OUT/<name>.pt`.
Files of those names that an earlier `bbbanomaly train` did not write are never replaced; --out must not
lie inside CASES. A training that diverges (loss NaN: --lr too large) stops with an error and writes no
weights. At most 10000000 simulated curves in all (N x --curves-per-case).

examples:
  bbbanomaly train phae cases/ --out phae_run --epochs 10 --init dsc-phae-sim
  bbbanomaly train phae --simulate 400 --curves-per-case 500 --out phae_sim --epochs 12
  torchrun --nproc-per-node 2 -m BBBAnomalyLib train phae cases/ --out phae_ddp
"""


#: the defaults of the two options that apply to one source of curves each: another value with the other source is
#: refused (it was ignored without a word)
CURVES_PER_CASE = 500
MAX_CURVES = 20000


def register(models, name: str = "phae") -> None:
    p = models.add_parser(name, help="DSC physics-informed autoencoder (self-supervised)", description=HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="?", help="folder of cases (sub-folders with signal.nii.gz)")
    p.add_argument("--simulate", type=int, metavar="N", help="train on N simulated cases instead of CASES "
                                                             "(N x --curves-per-case at most 10000000)")
    p.add_argument("--curves-per-case", type=int, default=CURVES_PER_CASE,
                   help=f"simulated curves per case, with --simulate only (default {CURVES_PER_CASE})")
    p.add_argument("--max-curves", type=int, default=MAX_CURVES,
                   help=f"brain curves sampled per real case, with CASES only (default {MAX_CURVES})")
    p.add_argument("--te", type=float, help="echo time [s] when the series has none in its metadata")
    p.add_argument("--out", required=True, help="output folder (not inside CASES)")
    p.add_argument("--name", default="dsc-phae", help="weights name (default dsc-phae)")
    p.add_argument("--init", help="start from these weights (bundled name or .pt path)")
    p.add_argument("--epochs", type=int, default=12, help="passes over the curves (default 12)")
    p.add_argument("--batch", type=int, default=1024, help="curves per step (default 1024)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.set_defaults(run=run)


def run(args) -> int:
    import sys

    import torch

    from ...core.errors import InputError
    from .inference import load_network
    from .training import cases_from_folder, save_weights, simulated_cases, train

    if (args.cases is None) == (args.simulate is None):
        raise InputError("give a CASES folder or --simulate N (one of them)")
    if args.simulate is not None and args.max_curves != MAX_CURVES:
        raise InputError(f"--max-curves {args.max_curves} samples the curves of real CASES; with --simulate give "
                         "--curves-per-case instead")
    if args.simulate is None and args.curves_per_case != CURVES_PER_CASE:
        raise InputError(f"--curves-per-case {args.curves_per_case} applies to --simulate only; with a CASES folder "
                         "give --max-curves (brain curves sampled per case) instead")
    if args.epochs < 1 or args.batch < 1:
        raise InputError("--epochs and --batch must be >= 1")
    if args.resume and not (Path(args.out) / "checkpoint.pt").is_file():  # as dmri and structural: not from scratch
        raise InputError(f"--resume: no checkpoint {Path(args.out) / 'checkpoint.pt'}; leave --resume out to start "
                         "a new training")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.simulate is not None:
        cases = simulated_cases(args.simulate, args.curves_per_case, seed=args.seed)
        data = f"{args.simulate} simulated cases x {args.curves_per_case} curves (seed {args.seed})"
    else:
        cases = cases_from_folder(args.cases, te=args.te, max_curves=args.max_curves, seed=args.seed)
        data = f"{len(cases)} cases from {Path(args.cases).name}/, up to {args.max_curves} brain curves each"
    prep_s = time.perf_counter() - t0
    network = load_network(args.init)[0].train() if args.init else None
    result = train(cases, epochs=args.epochs, batch=args.batch, lr=args.lr, device=args.device, seed=args.seed,
                   network=network, out_dir=args.out, resume=args.resume,
                   log=lambda line: print(line, flush=True))
    ctx = result["context"]
    if ctx.is_main:
        from ...train_command import check_training_output
        from ...training import require_finite

        require_finite(result["network"], result["history"][-1] if result["history"] else None)
        check_training_output(args.out, args.name)  # again: a file may have appeared there while it trained
        card = {"trained_on": data, "command": "bbbanomaly " + " ".join(sys.argv[1:]) if sys.argv else "",
                "world_size": ctx.world_size, "epochs": args.epochs, "loss_history": result["history"],
                "data_seconds": round(prep_s, 1), "train_seconds": round(result["seconds"], 1)}
        path = save_weights(result["network"], args.out, args.name, card)
        print(f"PHAE weights written to {path} (final loss {result['history'][-1]:.5f})")
    ctx.close()
    return 0

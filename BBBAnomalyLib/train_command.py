"""`bbbanomaly train MODEL`: train a pipeline's model on a folder of cases.

Every trainer lives beside its pipeline and registers its own arguments; this module lists them.
Run under ``torchrun --nproc-per-node N`` for DistributedDataParallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

#: model name -> "module:function" that adds its subparser (imported only when `train` is used).
TRAINERS: dict[str, str] = {
    "dce-rls": "BBBAnomalyLib.dce.training:register",
    "phae": "BBBAnomalyLib.dsc.phae.command:register",
    "dmri-vae": "BBBAnomalyLib.dmri.training:register",
    "dmri-recdisc": "BBBAnomalyLib.dmri.training:register",
    "t1gd-diffusion": "BBBAnomalyLib.structural.training:register",
    "bbb-identifier": "BBBAnomalyLib.structural.training:register",
    "cae": "BBBAnomalyLib.structural.training:register",
}

HELP = """\
Train one of the learned models on your own data. Each model's --help says what folder layout
it expects and where the weights go. Under torchrun the same command trains with
DistributedDataParallel, e.g.

  torchrun --nproc-per-node 2 -m BBBAnomalyLib train MODEL CASES --out run1
"""


def register(sub) -> None:
    p = sub.add_parser("train", help="train a learned model on a folder of cases", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    models = p.add_subparsers(dest="model", metavar="MODEL")
    for name, target in TRAINERS.items():
        module_name, function = target.split(":")
        getattr(importlib.import_module(module_name), function)(models, name)
    for trainer in models.choices.values():  # every trainer checks where it will write, before training
        trainer.set_defaults(run=_guarded(trainer.get_default("run")))
    p.set_defaults(run=lambda args: (p.print_help(), 2)[1])


def _guarded(run):
    def guarded(args):
        check_training_output(getattr(args, "out", None), getattr(args, "name", None))
        return run(args)

    return guarded


def check_training_output(out, name) -> None:
    """Refuse, before any training, a weights name that would write outside --out, and a
    ``<name>.pt`` already in --out that bbbanomaly did not write (no card whose sha256 matches it):
    training replaces only its own earlier weights, never a user's file."""
    from .core.errors import InputError
    from .weights import sha256

    if name is not None and (not name or any(c in name for c in "/\\") or name.startswith(".") or ".." in name):
        raise InputError(f"--name {name!r} must be a plain file name (no folders, no '..'); the weights go to "
                         "--out/<name>.pt")
    if out is None or name is None:
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; choose another --out")
    weights = out / f"{name}.pt"
    if not weights.exists():
        return
    try:
        card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
        ours = isinstance(card, dict) and card.get("sha256") == sha256(weights)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise InputError(f"{weights} exists and was not written by `bbbanomaly train` (no model card with its "
                         "checksum beside it); choose another --out or --name, nothing was overwritten")

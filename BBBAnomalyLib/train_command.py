"""`bbbanomaly train MODEL`: train a pipeline's model on a folder of cases.

Every trainer lives beside its pipeline and registers its own arguments; this module lists them.
Run under ``torchrun --nproc-per-node N`` for DistributedDataParallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import importlib

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
    p.set_defaults(run=lambda args: (p.print_help(), 2)[1])

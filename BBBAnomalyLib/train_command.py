"""`bbbanomaly train MODEL`: train a pipeline's model on a folder of cases.

Every trainer lives beside its pipeline and registers its own arguments; this module lists them,
and checks for all of them, before any training: every number (:data:`LIMITS`, the ranges each
--help states), the output folder (not empty, not inside the training data, writable) and every
file the training will write there (it replaces only files an earlier `bbbanomaly train` wrote).
Run under ``torchrun --nproc-per-node N`` for DistributedDataParallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path
from typing import NamedTuple

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
it expects, where the weights go and the range of every number. Under torchrun the same command
trains with DistributedDataParallel, e.g.

  torchrun --nproc-per-node 2 -m BBBAnomalyLib train MODEL CASES --out run1
"""


class Limit(NamedTuple):
    """The allowed values of one numeric option: whole numbers (``whole``) or finite reals in
    [low, high] (open ends where asked), whole numbers optionally a multiple of ``multiple``."""
    whole: bool
    low: float
    high: float
    hint: str = ""
    low_open: bool = False
    high_open: bool = False
    multiple: int = 1
    note: str = ""  # a rule beyond the range, said in --help

    def text(self) -> str:
        if self.whole:
            what = f"a multiple of {self.multiple} " if self.multiple > 1 else ""
            text = f"{what}from {self.low} to {self.high}"
        else:
            text = f"{'>' if self.low_open else '>='} {self.low:g} and {'<' if self.high_open else '<='} {self.high:g}"
        return f"{text} ({self.note})" if self.note else text


#: Every numeric option of every trainer, by argparse dest (a test checks that none is missing). The
#: upper bounds refuse what would run for days or ask for more memory than any machine has
#: (`--simulate 10000000000000` used to run until killed), and say so in --help.
LIMITS: dict[str, Limit] = {
    "epochs": Limit(True, 1, 100_000, "e.g. 10"),
    "batch": Limit(True, 1, 1_000_000, "curves per step, e.g. 1024"),
    "batch_size": Limit(True, 1, 4096, "e.g. 2 volumes or 8 slices per step"),
    "lr": Limit(False, 0.0, 1.0, "the Adam learning rate, e.g. 1e-3", low_open=True),
    "seed": Limit(True, 0, 2 ** 32 - 1),
    "threads": Limit(True, 1, 1024, "e.g. 1 per process"),
    "simulate": Limit(True, 1, 100_000, "e.g. 400 cases"),
    "curves_per_case": Limit(True, 1, 1_000_000, "e.g. 500"),
    "max_curves": Limit(True, 1, 100_000_000, "e.g. 20000"),
    "te": Limit(False, 0.0, 1.0, "give --te in seconds, e.g. 0.03 for 30 ms", low_open=True, high_open=True),
    "frames": Limit(True, 8, 2000, "e.g. 60"),
    "frame_interval": Limit(False, 0.0, 3600.0, "seconds between frames, e.g. 5", low_open=True),
    "latent": Limit(True, 1, 4096, "e.g. 128"),
    "widths": Limit(True, 1, 1024, "e.g. 24 48 64"),
    "grid": Limit(True, 8, 512, "e.g. 40 48 40", multiple=8),
    "voxel_mm": Limit(False, 0.0, 50.0, "e.g. 4", low_open=True),
    "directions": Limit(True, 6, 1024, "e.g. 64"),
    "val_fraction": Limit(False, 0.0, 1.0, "e.g. 0.2", high_open=True),
    "repeat": Limit(True, 1, 10_000, "e.g. 1 8"),
    "max_batches": Limit(True, 0, 1_000_000_000, "0 = all"),
    "size": Limit(True, 16, 1024, "e.g. 64", multiple=8),
    "width": Limit(True, 1, 512, "e.g. 16"),
    "tumor_weight": Limit(False, 0.0, 1000.0, "e.g. 4"),
    "enhancement_weight": Limit(False, 0.0, 1000.0, "e.g. 0"),
    "other_slices": Limit(False, 0.0, 1000.0, "e.g. 1"),
    "steps": Limit(True, 1, 1000, "e.g. 4"),
    "crop": Limit(True, 8, 1024, "e.g. 32"),
    "shape": Limit(True, 8, 512, "e.g. 48 56 48", multiple=8),
    "clusters": Limit(True, 1, 100, "e.g. 3"),
    "tumor_margin": Limit(False, 0.0, 100.0, "mm, e.g. 5"),
}
#: Where one trainer's range differs from the table above.
MODEL_LIMITS: dict[str, dict[str, Limit]] = {
    **{m: {"threads": Limit(True, 0, 1024, "0 = torch's default")} for m in ("dmri-vae", "dmri-recdisc")},
    # --epochs 0 writes the --init weights unchanged (checked below: only with --init)
    **{m: {"epochs": Limit(True, 0, 100_000, "e.g. 10", note="0 only with --init: writes those weights unchanged")}
       for m in ("t1gd-diffusion", "bbb-identifier", "cae")},
}
#: At most this many simulated curves in all (`train phae --simulate N --curves-per-case M`, N x M): about
#: 2 GB and half an hour of simulation on one core.
MAX_SIMULATED_CURVES = 10_000_000
#: The options that name training data folders: --out must not be inside one.
DATA_OPTIONS = ("cases", "calibration_cases", "score_reference")
#: Kernel pseudo-filesystems: never an output folder.
PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"))


def limits_of(model: str) -> dict[str, Limit]:
    return {**LIMITS, **MODEL_LIMITS.get(model, {})}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a learned model on a folder of cases", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    models = p.add_subparsers(dest="model", metavar="MODEL")
    for name, target in TRAINERS.items():
        module_name, function = target.split(":")
        getattr(importlib.import_module(module_name), function)(models, name)
    for name, trainer in models.choices.items():  # every trainer checks its input and output, before training
        _document_limits(trainer, limits_of(name))
        _document_files(trainer, name)
        trainer.set_defaults(run=_guarded(trainer.get_default("run"), name, trainer))
    p.set_defaults(run=lambda args: (p.print_help(), 2)[1])


def _document_limits(parser, limits: dict[str, Limit]) -> None:
    for action in parser._actions:
        limit = limits.get(action.dest)
        if limit is None or action.help == argparse.SUPPRESS:
            continue
        if action.help:
            action.help = f"{action.help}; {limit.text()}"
        else:
            shown = action.default is not None and action.default is not argparse.SUPPRESS
            action.help = limit.text() + (" (default %(default)s)" if shown else "")


def _document_files(parser, model: str) -> None:
    """--out and --resume name the files this trainer leaves in --out, from :func:`training_files` (the table the
    overwrite check uses), not from each trainer's own words: the identifier's and the autoencoder's checkpoint is
    <name>.uncalibrated.checkpoint.pt (their help said <name>.checkpoint.pt, which --resume then did not find),
    and `train dmri-*` also keeps its preprocessed cases (which no help named)."""
    files = training_files(model, "<name>")
    weights, card = (next(f for f, kind in files if kind == k) for k in ("weights", "card"))
    checkpoint = next(f for f, kind in files if kind == "checkpoint")
    prepared = next((f for f, kind in files if kind == "prepared"), None)  # the first: the kept cache
    kept = f"{weights}, {card} and the checkpoint file {checkpoint}" if not prepared else \
        f"{weights}, {card}, the checkpoint file {checkpoint} and the preprocessed cases {prepared} (reused " \
        "while the cases and the model input are unchanged)"
    for action in parser._actions:
        if action.dest == "out":
            action.help = f"output folder for {kept}; not inside the training data"
        elif action.dest == "resume":
            action.help = f"continue from OUT/{checkpoint}"


def _guarded(run, model: str | None = None, parser=None):
    def guarded(args):
        from .core.outputs import remove_empty_folders

        if model is not None and getattr(args, "command", None) == "train":
            # cli.main's error line is "bbbanomaly <args.command>: error: ..."; argparse's own errors already say
            # "bbbanomaly train MODEL: error", and a refused value (--epochs -1) said only "bbbanomaly train"
            args.command = f"train {model}"
        if parser is not None:
            check_training_numbers(model, parser, args)
        out = training_out_dir(args)
        main = _is_main_rank()
        check_training_output(out, getattr(args, "name", None), model=model,
                              resume=bool(getattr(args, "resume", False)), owned=main)
        made = make_training_out_dir(out) if main and out is not None else []
        succeeded = False
        try:
            code = run(args)
            succeeded = not code
            return code
        finally:
            if not succeeded:  # a failed run leaves no empty folder of its own (what it wrote stays)
                remove_empty_folders(made)

    return guarded


def _is_main_rank() -> bool:
    """Rank 0 (or no torchrun) checks the files in --out and creates it; the other ranks never write there."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


# --- numbers --------------------------------------------------------------------------------------
def check_training_numbers(model: str, parser, args) -> None:
    """Every numeric option of ``parser`` within its :data:`LIMITS` range (values replaced by the checked
    int/float), else InputError with one line; then the checks that involve two options."""
    from .core.checks import integer, number
    from .core.errors import InputError

    if model == "dmri-recdisc":  # before its range: --latent -1 is as foreign to RecDiscNet as --latent 64
        from .dmri.training import DEFAULT_LATENT

        latent = getattr(args, "latent", DEFAULT_LATENT)
        try:
            other = float(latent) != DEFAULT_LATENT
        except (TypeError, ValueError):
            other = True
        if other:
            raise InputError(f"--latent {latent} is the VAE's latent size and applies to `train dmri-vae` only "
                             "(RecDiscNet has no latent); leave --latent out")
    limits = limits_of(model)
    for action in parser._actions:
        limit = limits.get(action.dest)
        value = getattr(args, action.dest, None)
        if limit is None or value is None:
            continue
        flag = max(action.option_strings, key=len) if action.option_strings else action.dest

        def one(v):
            if not limit.whole:
                return number(v, flag, limit.low, limit.high, hint=limit.hint, low_open=limit.low_open,
                              high_open=limit.high_open)
            v = integer(v, flag, int(limit.low), int(limit.high), hint=limit.hint)
            if v % limit.multiple:
                raise InputError(f"{flag} must be a multiple of {limit.multiple}, got {v}"
                                 f"{'; ' + limit.hint if limit.hint else ''}")
            return v

        setattr(args, action.dest, [one(v) for v in value] if isinstance(value, (list, tuple)) else one(value))
    if model == "phae" and getattr(args, "simulate", None) is not None:
        total = args.simulate * args.curves_per_case
        if total > MAX_SIMULATED_CURVES:
            raise InputError(f"--simulate {args.simulate} x --curves-per-case {args.curves_per_case} is {total} "
                             f"simulated curves, more than the {MAX_SIMULATED_CURVES} allowed; give fewer cases or "
                             "fewer curves per case")
    if model in ("dmri-vae", "dmri-recdisc"):
        for w in args.widths or ():
            if w > 8 and w % 8:  # the group normalisation splits a level's channels into 8 groups
                raise InputError(f"--widths {' '.join(map(str, args.widths))}: each width must be at most 8 or a "
                                 "multiple of 8, e.g. 24 48 64")
    if getattr(args, "epochs", None) == 0 and not getattr(args, "init", None):
        raise InputError("--epochs 0 trains nothing: it only writes the --init weights again; give --epochs 1 or "
                         "more, or --init WEIGHTS")


# --- the output folder ----------------------------------------------------------------------------
def training_out_dir(args) -> Path | None:
    """The absolute --out: refused when empty, in /proc or /sys, or inside a training data folder."""
    from .core.errors import InputError

    out = getattr(args, "out", None)
    if out is None:
        return None
    if not str(out).strip():  # a shell variable that was not set: it used to write into the current folder
        raise InputError("--out is empty; give the folder for the weights, e.g. --out run1")
    try:
        resolved = Path(out).resolve()  # as the trainers read it (no ~ expansion: the shell does that)
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a symbolic-link loop
        raise InputError(f"--out {str(out)!r} cannot be used ({getattr(exc, 'strerror', None) or exc}); choose "
                         "another --out") from None
    for pseudo in PSEUDO_FILESYSTEMS:
        if resolved == pseudo or pseudo in resolved.parents:
            raise InputError(f"--out {out} is inside {pseudo}, a kernel pseudo-filesystem that holds no files; "
                             "choose a folder on a disk")
    for dest in DATA_OPTIONS:
        values = getattr(args, dest, None)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if not isinstance(value, str) or not value:
                continue
            try:
                data = Path(value).resolve()
            except (OSError, ValueError, RuntimeError):
                continue  # the trainer reports an unusable data path itself
            if resolved == data or data in resolved.parents:
                where = "the" if resolved == data else "inside the"
                raise InputError(f"--out {out} is {where} training data folder {value}; the weights must not be "
                                 "written among the cases: choose an --out outside it")
    return resolved


def make_training_out_dir(out: Path) -> list[Path]:
    """Create --out (and its missing parents) before training, so that a folder that cannot be written
    fails at once; returns the folders created, for :func:`remove_empty_folders` after a failed run."""
    from .core.errors import InputError
    from .core.outputs import make_parents, remove_empty_folders

    made: list[Path] = []
    try:
        made = make_parents(out)
        try:
            out.mkdir()
            made.append(out)
        except FileExistsError:
            if not out.is_dir():
                raise
    except OSError as exc:
        remove_empty_folders(made)
        raise InputError(f"cannot create the output folder {out} ({exc.strerror or exc}); choose an --out where "
                         "you can write") from None
    if not os.access(out, os.W_OK | os.X_OK):  # also EROFS: a read-only filesystem
        remove_empty_folders(made)
        raise InputError(f"cannot write in the output folder {out} (no permission, or it is read-only); choose an "
                         "--out where you can write")
    return made


# --- the files training writes --------------------------------------------------------------------
def training_files(model: str | None, name: str) -> list[tuple[str, str]]:
    """(file name, kind) of every file `bbbanomaly train MODEL --name NAME` writes in --out; kinds:
    weights (.pt), card (its .json), checkpoint, partial (a temporary .pt), prepared (dmri's cache)."""
    stems = [name] + ([f"{name}.uncalibrated"] if model in ("bbb-identifier", "cae") else [])
    files = [(f"{stem}{suffix}", kind) for stem in stems for suffix, kind in ((".pt", "weights"), (".json", "card"))]
    if model == "phae":
        files.append(("checkpoint.pt", "checkpoint"))
    elif model is not None:
        files.append((f"{stems[-1]}.checkpoint.pt", "checkpoint"))
    if model == "dce-rls":
        files.append((f"{name}.pt.partial", "partial"))  # where its weights are written before the rename
    if model in ("dmri-vae", "dmri-recdisc"):
        files += [(f"{name}.prepared.npz", "prepared"), (f"{name}.prepared.partial.npz", "prepared")]
    return files


def _card_of_weights(card_path: Path, weights: Path) -> bool:
    """True when ``card_path`` is a model card holding the sha256 of ``weights`` (which exists)."""
    from .weights import sha256

    if card_path.is_symlink() or weights.is_symlink() or not weights.is_file():
        return False
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        return isinstance(card, dict) and card.get("sha256") == sha256(weights)
    except (OSError, ValueError, RecursionError):
        return False


def _torch_dict(path: Path, keys: tuple[str, ...]) -> bool:
    """True when ``path`` loads as a torch dict (weights_only) holding ``keys``."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- torch.load raises many types on a file that is not a checkpoint
        return False
    return isinstance(state, dict) and all(k in state for k in keys)


def _prepared_cases(path: Path) -> bool:
    """True when ``path`` is dmri training's cache of preprocessed cases (an .npz with its fingerprint)."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            return {"fingerprint", "x", "mask", "names"} <= set(z.files)
    except Exception:  # noqa: BLE001 -- np.load raises many types on a file that is not an .npz
        return False


def check_training_output(out, name, model: str | None = None, resume: bool = False, owned: bool = True) -> None:
    """Refuse, before any training, a weights name that would write outside --out, and any file that
    training would replace in --out (see :func:`training_files`) that bbbanomaly did not write:

    * ``<name>.pt``: ours when a card beside it holds its sha256;
    * ``<name>.json``: ours when it holds the sha256 of the ``<name>.pt`` beside it;
    * the checkpoint: ours when it loads as a checkpoint (state_dict, epoch), or with --resume (it is
      then loaded, and one that is not a checkpoint is refused then);
    * a temporary weights file or dmri's preprocessed cases: ours when they load as such.

    Training replaces only its own earlier files, never a user's. ``owned=False`` (the ranks > 0 under
    torchrun, which write nothing) checks the name only.
    """
    from .core.errors import InputError

    if name is not None and (not name or any(c in name for c in "/\\") or name.startswith(".") or ".." in name):
        raise InputError(f"--name {name!r} must be a plain file name (no folders, no '..'); the weights go to "
                         "--out/<name>.pt")
    if out is None or name is None:
        return
    files = training_files(model, name)
    if len({f for f, _ in files}) < len(files):
        raise InputError(f"--name {name!r} is the name of another file training writes ("
                         f"{', '.join(f for f, _ in files)}); choose another --name")
    if not owned:
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; choose another --out")
    for file_name, kind in files:
        path = out / file_name
        if not (path.exists() or path.is_symlink()):
            continue
        if kind == "weights":
            ours = _card_of_weights(path.with_suffix(".json"), path)
            what = "no model card with its checksum beside it"
        elif kind == "card":
            ours = _card_of_weights(path, path.with_suffix(".pt"))
            what = f"not the model card of a {path.with_suffix('.pt').name} beside it"
        elif kind == "checkpoint":
            ours = (resume and path.is_file() and not path.is_symlink()) or _torch_dict(path, ("state_dict", "epoch"))
            what = "not a training checkpoint"
        elif kind == "partial":
            ours = _torch_dict(path, ())
            what = "not a weights file"
        else:
            ours = _prepared_cases(path)
            what = "not preprocessed training cases"
        if not ours:
            other = "--out" if kind == "checkpoint" and model == "phae" else "--out or --name"
            raise InputError(f"{path} exists and was not written by `bbbanomaly train` ({what}); choose another "
                             f"{other}, nothing was overwritten")

"""Bundled model weights and their registry.

Each model ships as two files in this folder: ``<name>.pt`` (a state dict saved with
``torch.save``) and ``<name>.json``, its registry entry and model card::

    {
      "name": "dce-rls-phantom",               # what code asks for
      "file": "dce-rls-phantom.pt",
      "sha256": "...",                         # checked before every load
      "model": "BBBAnomalyLib.dce.rls:RLSAutoencoder",  # the class the state dict belongs to
      "config": {...},                         # constructor arguments of that class
      "trained_on": "what data, honestly (e.g. simulated phantoms, not patients)",
      "command": "the exact command that reproduces the file",
      "metrics": {...},                        # measured on held-out data, with where
      "intended_use": "...", "limitations": "..."
    }

Weights are loaded with ``torch.load(weights_only=True)`` after the checksum matches, so a
tampered or truncated file is refused instead of unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..core.errors import InputError

WEIGHTS_DIR = Path(__file__).resolve().parent


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: A bundled name is a plain file stem: no folder separators, no "..", so it can only name a card here.
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_CARD_KEYS = {"file": str, "sha256": str}


def available() -> list[str]:
    """Names of the bundled models."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def _listed_for(name: str) -> str:
    """The bundled names to offer after a wrong ``name``: those of its pipeline (the part before the first '-',
    e.g. every dsc-* for 'dsc-phae-wid'), else all of them."""
    names = available()
    family = [n for n in names if "-" in name and n.split("-")[0] == name.split("-")[0]]
    return ", ".join(family or names) or "none"


def _is_path(name_or_path: str | Path) -> bool:
    """A path (a .pt file, or anything with a folder part) rather than a bundled name."""
    text = str(name_or_path)
    return text.endswith(".pt") or "/" in text or "\\" in text


def _check_name(name: str) -> None:
    if not name or not set(name) <= _NAME_CHARS or ".." in name or name.startswith("."):
        raise InputError(f"{name!r} is not a bundled weights name (available: {_listed_for(name)}); "
                         "give a name from that list or the path of a .pt file with its .json card beside it")


def _read_card_file(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            card = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"the model card {path} of {what} cannot be read ({type(exc).__name__}); "
                         "reinstall the extension or retrain with the command in the card") from None
    if not isinstance(card, dict):
        raise InputError(f"the model card {path} of {what} is not a JSON object; reinstall or retrain")
    for key, kind in _CARD_KEYS.items():
        if not isinstance(card.get(key), kind):
            raise InputError(f"the model card {path} of {what} has no valid {key!r} entry; reinstall or retrain")
    return card


def entry(name: str) -> dict:
    """The registry entry (model card) of a bundled model."""
    _check_name(str(name))
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise InputError(f"no bundled weights named {name!r}; available: {_listed_for(name)}")
    return _read_card_file(path, f"the bundled weights {name!r}")


def read_card(name_or_path: str | Path) -> tuple[dict, Path]:
    """(model card, .pt file) for a bundled name or for a ``.pt`` file with its ``.json`` card beside it.

    A file given by path must come with its card (``bbbanomaly train ...`` writes both): the card
    holds the checksum, so a flipped byte is refused instead of loaded.
    """
    if not _is_path(name_or_path):
        card = entry(str(name_or_path))
        path = WEIGHTS_DIR / card["file"]
        if Path(card["file"]).name != card["file"]:
            raise InputError(f"the model card of {name_or_path!r} names a file outside the weights folder; reinstall")
        if not path.is_file():
            raise InputError(f"the bundled weights file {path.name} is missing; reinstall the extension")
        return card, path
    path = Path(name_or_path)
    if path.suffix != ".pt":
        raise InputError(f"weights file {path} is not a .pt file; give a .pt written by `bbbanomaly train ...` "
                         "(with its .json card beside it) or a bundled name")
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist; check the path")
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise InputError(f"weights file {path} has no model card {card_path.name} beside it, so its checksum cannot "
                         "be checked; keep the .json that `bbbanomaly train ...` wrote next to the .pt")
    return _read_card_file(card_path, f"the weights {path.name}"), path


def check_model(card: dict, expected: str | tuple[str, ...], name_or_path) -> None:
    """Refuse weights of another kind of network (the card's ``model`` entry, module:class)."""
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    model = card.get("model")
    if model not in expected:
        raise InputError(f"the weights {name_or_path} hold a {model or 'unknown'} network, not a "
                         f"{expected[0].rsplit(':', 1)[-1]}; give weights trained for this method")


def load_state_dict(name_or_path: str | Path, expected_sha256: str | None = None, map_location="cpu") -> dict:
    """A state dict from a bundled name or a ``.pt`` file, after its checksum matches its card
    (``expected_sha256`` overrides the card's). Every failure is one InputError, never a traceback."""
    import pickle
    import zipfile

    import torch

    card, path = read_card(name_or_path)
    expected_sha256 = expected_sha256 or card["sha256"]
    if sha256(path) != expected_sha256:
        raise InputError(f"weights file {path} does not match its checksum; it was changed or damaged after "
                         "training: reinstall the extension or retrain it with the command in its model card")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            AttributeError, TypeError) as exc:
        raise InputError(f"weights file {path} cannot be loaded safely as tensors ({type(exc).__name__}); "
                         "only state dicts written by `bbbanomaly train ...` are accepted") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InputError(f"weights file {path} does not hold a state dict; give weights written by `bbbanomaly train`")
    return state


def instantiate(cls, card: dict, state: dict, name_or_path):
    """``cls(**card['config'])`` with ``state`` loaded; a mismatch is one InputError."""
    try:
        model = cls(**card["config"])
        model.load_state_dict(state)
    except (TypeError, RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"the weights {name_or_path} do not fit this method's {cls.__name__} network "
                         f"({type(exc).__name__}); give weights trained for it") from None
    return model


#: (device, inode, size, mtime_ns) of each file this process put in place, by path: a later write may replace it
_WRITTEN: dict[str, tuple[int, int, int, int]] = {}


def _stat_key(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def written_here(found: Path, path: Path) -> bool:
    """True when ``found`` is the very file this process last put at ``path`` (the previous epoch's checkpoint)."""
    try:
        return _WRITTEN.get(str(path)) == _stat_key(found)
    except OSError:
        return False


def replace_atomically(path: str | Path, write, may_replace=None) -> Path:
    """``write(temporary path)`` beside ``path``, then linked into place: the file is complete or the old one stays
    (a crash while writing weights or a card used to leave half a file that a later run refused as a user's).

    A file found at ``path`` then (trainings run for hours: a user may have put one there since the first check) is
    replaced only when it is the one this process wrote there last, or when ``may_replace(found)`` accepts it;
    otherwise it is left alone and :class:`InputError` says so (:func:`..core.no_clobber.link_into_place`)."""
    import contextlib
    import os
    import tempfile

    from ..core.no_clobber import Taken, link_into_place
    from ..core.outputs import _umask

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; a written file gets the umask, like open()
        link_into_place(Path(tmp), path,
                        lambda found: written_here(found, path) or bool(may_replace and may_replace(found)))
        _WRITTEN[str(path)] = _stat_key(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, Taken):
            raise InputError(f"{path} appeared while bbbanomaly worked and was not written by it, so it was left "
                             "alone; move it away (or choose another --out or --name) and run again") from None
        raise
    return path


def is_model_card(found: Path) -> bool:
    """True when ``found`` is a model card as :func:`write_entry` writes it (a JSON object with file and sha256)."""
    try:
        card = json.loads(Path(found).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(card, dict) and isinstance(card.get("file"), str) and isinstance(card.get("sha256"), str)


def write_entry(card: dict, weights_file: str | Path) -> Path:
    """Write ``<name>.json`` beside ``weights_file`` with its sha256 filled in (used by training scripts); an earlier
    model card there is replaced, any other file is left alone (InputError)."""
    weights_file = Path(weights_file)
    card = dict(card, file=weights_file.name, sha256=sha256(weights_file))

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(card, fh, indent=2, ensure_ascii=False)
            fh.write("\n")

    return replace_atomically(weights_file.with_suffix(".json"), write, may_replace=is_model_card)


def save_weights_and_card(save, weights_file: str | Path, card: dict) -> Path:
    """The end of a training: ``save(temporary path)`` writes the state dict, which becomes ``weights_file`` (complete
    or absent), then its model card. Only an earlier training's weights (the card beside them holds their sha256)
    and card are replaced: a user's file put under either name during the training is left alone and the run ends
    with one line (the trained state is not kept: nothing half-named is left behind)."""
    weights_file = Path(weights_file)
    card_file = weights_file.with_suffix(".json")

    def earlier_weights(found: Path) -> bool:
        try:
            recorded = json.loads(card_file.read_text(encoding="utf-8"))
            return isinstance(recorded, dict) and recorded.get("sha256") == sha256(found)
        except (OSError, ValueError, RecursionError):
            return False

    if card_file.exists() and not is_model_card(card_file):  # before the weights: both are written or neither
        raise InputError(f"{card_file} appeared while bbbanomaly worked and was not written by it, so it was left "
                         "alone; move it away (or choose another --out or --name) and run again")
    replace_atomically(weights_file, save, may_replace=earlier_weights)
    write_entry(card, weights_file)
    return weights_file

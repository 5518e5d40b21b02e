"""Weights are loaded only when their checksum matches their card; every failure is one line.

Issue 12 items 3 and 6: DCE ``--rls-weights FILE.pt`` was not checksummed (a flipped byte loaded
silently), ``--rls-weights`` was ignored with ``--rls case``, a bundled name with ``../`` read a
card outside the weights folder, and corrupt/malicious ``.pt`` files, corrupt cards and weights of
another network ended in tracebacks.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from BBBAnomalyLib import InputError, weights
from BBBAnomalyLib.cli import main

from bad_input_helpers import assert_refused, write_dce_case, write_dsc_case

BUNDLED = weights.WEIGHTS_DIR


def copy_bundled(name: str, folder: Path) -> Path:
    """A bundled model as a user's .pt + .json pair (what `bbbanomaly train` writes)."""
    card = weights.entry(name)
    pt = folder / f"{name}.pt"
    shutil.copy(BUNDLED / card["file"], pt)
    shutil.copy(BUNDLED / f"{name}.json", folder / f"{name}.json")
    return pt


class Evil:
    def __reduce__(self):  # would run a command if unpickled
        import os

        return (os.system, ("echo pwned > /tmp/bbbanomaly_pwned",))


def make_bad_pt(kind: str, folder: Path) -> Path:
    pt = copy_bundled("dce-rls-phantom", folder)
    card_path = pt.with_suffix(".json")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if kind == "flipped byte":
        data = bytearray(pt.read_bytes())
        data[len(data) // 2] ^= 0x01
        pt.write_bytes(bytes(data))
        return pt  # card keeps the original checksum
    if kind == "pickle payload":
        with open(pt, "wb") as fh:
            pickle.dump(Evil(), fh)
    elif kind == "not torch at all":
        pt.write_bytes(b"\x00\x01garbage" * 100)
    elif kind == "truncated zip":
        pt.write_bytes(pt.read_bytes()[:200])
    elif kind == "a tensor, not a state dict":
        torch.save(torch.zeros(3), pt)
    if kind == "corrupt card":
        card_path.write_text("{ not json", encoding="utf-8")
        return pt
    if kind == "card without checksum":
        card.pop("sha256")
    elif kind == "no card":
        card_path.unlink()
        return pt
    else:
        card["sha256"] = weights.sha256(pt)  # a consistent card: the file itself is the problem
    card_path.write_text(json.dumps(card), encoding="utf-8")
    return pt


BAD_WEIGHTS = {
    "flipped byte": "checksum",
    "pickle payload": "loaded safely",
    "not torch at all": "loaded safely",
    "truncated zip": "loaded safely",
    "a tensor, not a state dict": "state dict",
    "corrupt card": "model card",
    "card without checksum": "sha256",
    "no card": "no model card",
}


@pytest.mark.parametrize("kind", list(BAD_WEIGHTS))
def test_dce_rls_weights_file_is_checked(kind, tmp_path, capsys):
    case = write_dce_case(tmp_path / "case")
    pt = make_bad_pt(kind, tmp_path / "case")
    out = tmp_path / "out"
    argv = ["dce", str(case["series"]), "--aif-mask", str(case["aif"]), "--mask", str(case["mask"]),
            "--rls", "bundled", "--rls-weights", str(pt), "--out", str(out), "--quiet"]
    assert_refused(argv, capsys, tmp_path / "case", out, (BAD_WEIGHTS[kind],))
    assert not Path("/tmp/bbbanomaly_pwned").exists()


def test_rls_weights_without_bundled_is_refused_not_ignored(tmp_path, capsys):
    case = write_dce_case(tmp_path / "case")
    out = tmp_path / "out"
    argv = ["dce", str(case["series"]), "--aif-mask", str(case["aif"]), "--rls", "case",
            "--rls-weights", "dce-rls-phantom", "--out", str(out), "--quiet"]
    assert_refused(argv, capsys, tmp_path / "case", out, ("--rls bundled",))


@pytest.mark.parametrize("name", ["../weights/dce-rls-phantom", "..", ".hidden", "dce-rls-phantom/../x", "a\\b"])
def test_bundled_names_cannot_leave_the_weights_folder(name):
    with pytest.raises(InputError):
        weights.entry(name)
    with pytest.raises(InputError):
        weights.load_state_dict(name)


def test_weights_of_another_network_are_refused_in_one_line(tmp_path, capsys):
    case = write_dsc_case(tmp_path / "case")
    pt = copy_bundled("dce-rls-phantom", tmp_path / "case")  # an RLS autoencoder given to PHAE
    out = tmp_path / "out"
    argv = ["dsc", str(case["series"]), "--aif-mask", str(case["aif"]), "--method", "phae", "--weights", str(pt),
            "--out", str(out), "--quiet"]
    assert_refused(argv, capsys, tmp_path / "case", out, ("network",))


def test_a_missing_pt_is_reported_as_missing_not_as_a_missing_card(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        weights.load_state_dict(tmp_path / "nothing.pt")


def test_good_user_weights_load_with_their_card(tmp_path):
    pt = copy_bundled("dce-rls-phantom", tmp_path)
    state = weights.load_state_dict(pt)
    bundled = weights.load_state_dict("dce-rls-phantom")
    assert state.keys() == bundled.keys() and all(torch.equal(state[k], bundled[k]) for k in state)

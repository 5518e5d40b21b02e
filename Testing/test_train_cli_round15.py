"""`bbbanomaly train` (audit of round 15): every number of every trainer is checked before training (one
line, exit 2, its range in --help), a diverged training writes no weights, a checkpoint that is not one is
one line, every file training writes replaces only a file training wrote, and --out is refused when empty,
inside the training data or in /proc or /sys; a failed run leaves no empty folder of its own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from BBBAnomalyLib.cli import build_parser, main
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.train_command import check_training_output, limits_of, training_files

from bad_input_helpers import one_line_refusal

#: The smallest phae training: one simulated case of 10 curves, one epoch (well under a second).
TINY_PHAE = ["--simulate", "1", "--curves-per-case", "10", "--epochs", "1", "--batch", "4", "--threads", "1",
             "--device", "cpu"]


_refused = one_line_refusal  # exit 2, one line with every keyword, no traceback


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


# --- 1, 2, 3: numbers ----------------------------------------------------------------------------
@pytest.mark.parametrize("extra, keywords", [
    (["--curves-per-case", "0"], ("--curves-per-case", "between 1 and 1000000")),
    (["--curves-per-case", "-5"], ("--curves-per-case",)),
    (["--lr", "-1"], ("--lr", "(0, 1]")),
    (["--lr", "nan"], ("--lr", "finite")),
    (["--lr", "inf"], ("--lr", "finite")),
    (["--lr", "0"], ("--lr", "(0, 1]")),
    (["--threads", "-2"], ("--threads", "between 1 and 1024")),
    (["--seed", "-1"], ("--seed", "between 0 and")),
    (["--epochs", "0"], ("--epochs",)),
    (["--batch", "0"], ("--batch",)),
    (["--simulate", "10000000000000"], ("--simulate", "between 1 and 100000")),
    (["--simulate", "100000", "--curves-per-case", "1000"], ("10000000", "fewer")),
    (["--te", "30"], ("--te", "seconds")),
])
def test_phae_numbers_are_checked_before_any_work(extra, keywords, tmp_path, capsys):
    out = tmp_path / "tx"
    _refused(["train", "phae", *TINY_PHAE, *extra, "--out", str(out)], capsys, *keywords)
    assert list(tmp_path.iterdir()) == []  # no output folder, nothing else


def test_phae_max_curves_of_a_cases_folder(tmp_path, capsys):
    cases = tmp_path / "cases"
    (cases / "c1").mkdir(parents=True)
    _refused(["train", "phae", str(cases), "--max-curves", "0", "--out", str(tmp_path / "tx")], capsys,
             "--max-curves")
    assert not (tmp_path / "tx").exists()


@pytest.mark.parametrize("model, extra, keywords", [
    ("dce-rls", ["--frames", "0"], ("--frames",)),
    ("dce-rls", ["--max-curves", "-1"], ("--max-curves",)),
    ("dce-rls", ["--frame-interval", "nan"], ("--frame-interval", "finite")),
    ("dce-rls", ["--seed", "-1"], ("--seed",)),
    ("dmri-vae", ["--lr", "inf"], ("--lr",)),
    ("dmri-vae", ["--threads", "-2"], ("--threads", "between 0 and 1024")),
    ("dmri-vae", ["--grid", "12", "16", "16"], ("--grid", "multiple of 8")),
    ("dmri-vae", ["--widths", "12", "24", "24"], ("--widths", "multiple of 8")),
    ("dmri-recdisc", ["--val-fraction", "1"], ("--val-fraction",)),
    ("dmri-recdisc", ["--voxel-mm", "0"], ("--voxel-mm",)),
    ("t1gd-diffusion", ["--size", "20"], ("--size", "multiple of 8")),
    ("t1gd-diffusion", ["--tumor-weight", "nan"], ("--tumor-weight",)),
    ("t1gd-diffusion", ["--epochs", "0"], ("--epochs 0", "--init")),
    ("t1gd-diffusion", ["--lr", "0"], ("--lr",)),
    ("bbb-identifier", ["--synthesis", "x", "--steps", "0"], ("--steps",)),
    ("bbb-identifier", ["--synthesis", "x", "--crop", "-4"], ("--crop",)),
    ("cae", ["--shape", "12", "16", "16"], ("--shape", "multiple of 8")),
    ("cae", ["--tumor-margin", "-1"], ("--tumor-margin",)),
    ("cae", ["--repeat", "0"], ("--repeat",)),
    ("cae", ["--batch-size", "100000"], ("--batch-size", "4096")),
])
def test_every_trainers_numbers_are_checked_before_reading_the_cases(model, extra, keywords, tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()  # empty: a number must be refused before the cases are looked at
    _refused(["train", model, str(cases), *extra, "--out", str(tmp_path / "tx")], capsys, *keywords)
    assert not (tmp_path / "tx").exists()


def _trainers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    return next(a for a in train._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_numeric_option_of_every_trainer_has_a_range_stated_in_its_help():
    trainers = _trainers()
    assert set(trainers) >= {"phae", "dce-rls", "dmri-vae", "dmri-recdisc", "t1gd-diffusion", "bbb-identifier", "cae"}
    for model, parser in trainers.items():
        limits = limits_of(model)
        for action in parser._actions:
            if action.type in (int, float):
                assert action.dest in limits, f"train {model} {action.option_strings}: no range in LIMITS"
                assert limits[action.dest].text() in action.help, (model, action.dest, action.help)
    assert "from 1 to 100000" in trainers["phae"].format_help()  # --simulate's bound, in --help
    assert "10000000" in trainers["phae"].format_help()


# --- 1: a checkpoint that is not one -------------------------------------------------------------
def test_resume_from_a_garbage_checkpoint_is_one_line_and_it_is_kept(tmp_path, capsys):
    out = tmp_path / "rs"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"garbage, not a checkpoint")
    _refused(["train", "phae", *TINY_PHAE, "--out", str(out), "--resume"], capsys, "not a checkpoint", "--resume")
    assert _tree(out) == {"checkpoint.pt": b"garbage, not a checkpoint"}


def test_load_checkpoint_refuses_garbage_and_another_models_checkpoint(tmp_path):
    import torch

    from BBBAnomalyLib.training import load_checkpoint, save_checkpoint

    garbage = tmp_path / "g.pt"
    garbage.write_bytes(b"\x80\x02garbage")
    with pytest.raises(InputError, match="not a checkpoint"):
        load_checkpoint(garbage, torch.nn.Linear(2, 2))
    path = save_checkpoint(tmp_path / "c.pt", torch.nn.Linear(2, 2), epoch=1)
    with pytest.raises(InputError, match="another model"):
        load_checkpoint(path, torch.nn.Linear(3, 2))
    with pytest.raises(InputError, match="not a checkpoint"):
        load_checkpoint(path, torch.nn.Linear(2, 2), require=("epoch", "scheduler"))
    assert {p.name for p in tmp_path.iterdir()} == {"g.pt", "c.pt"}  # no temporary file left


# --- 2: divergence ---------------------------------------------------------------------------------
def test_a_diverged_model_is_never_saved(tmp_path):
    import torch

    from BBBAnomalyLib.training import require_finite, save_checkpoint

    model = torch.nn.Linear(2, 2)
    require_finite(model, 0.5)
    with pytest.raises(InputError, match="diverged"):
        require_finite(model, float("nan"))
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(InputError, match="diverged.*lower --lr"):
        save_checkpoint(tmp_path / "c.pt", model, epoch=1)
    assert list(tmp_path.iterdir()) == []


def test_phae_training_that_diverges_writes_nothing(tmp_path, capsys, monkeypatch):
    """--lr inf is refused up front; a divergence that still happens (here: forced) is one line, exit 2,
    no weights, no checkpoint, and no output folder."""
    from BBBAnomalyLib.dsc.phae import training

    real = training.train
    monkeypatch.setattr(training, "train", lambda *a, **kw: real(*a, **{**kw, "lr": float("inf")}))
    out = tmp_path / "tx"
    _refused(["train", "phae", *TINY_PHAE, "--out", str(out)], capsys, "diverged", "--lr")
    assert not out.exists()


# --- 4: files training writes replace only files training wrote ---------------------------------
def test_a_users_checkpoint_and_card_are_never_replaced(tmp_path, capsys):
    mine = tmp_path / "uo2"
    mine.mkdir()
    (mine / "checkpoint.pt").write_bytes(b"MY CKPT\n")
    _refused(["train", "phae", *TINY_PHAE, "--out", str(mine), "--name", "other"], capsys, "checkpoint.pt",
             "not written by `bbbanomaly train`")
    assert _tree(mine) == {"checkpoint.pt": b"MY CKPT\n"}
    card = tmp_path / "uo3"
    card.mkdir()
    (card / "dsc-phae.json").write_bytes(b"MY CARD\n")
    _refused(["train", "phae", *TINY_PHAE, "--out", str(card)], capsys, "dsc-phae.json", "not written")
    assert _tree(card) == {"dsc-phae.json": b"MY CARD\n"}


def test_training_replaces_its_own_files(tmp_path, capsys):
    out = tmp_path / "tx"
    assert main(["train", "phae", *TINY_PHAE, "--out", str(out)]) == 0
    first = json.loads((out / "dsc-phae.json").read_text(encoding="utf-8"))
    # our checkpoint (another --name) and our weights + card (same --name) are replaced
    assert main(["train", "phae", *TINY_PHAE, "--out", str(out), "--name", "other"]) == 0
    assert main(["train", "phae", *TINY_PHAE, "--out", str(out), "--seed", "1"]) == 0
    second = json.loads((out / "dsc-phae.json").read_text(encoding="utf-8"))
    assert second["sha256"] != first["sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "dsc-phae.json", "dsc-phae.pt", "other.json",
                                                     "other.pt"]  # no temporary file left
    # a card whose weights were changed by hand is no longer ours
    (out / "dsc-phae.pt").write_bytes(b"edited")
    _refused(["train", "phae", *TINY_PHAE, "--out", str(out)], capsys, "not written")
    assert (out / "dsc-phae.pt").read_bytes() == b"edited"


@pytest.mark.parametrize("model", ["phae", "dce-rls", "dmri-vae", "t1gd-diffusion", "bbb-identifier", "cae"])
def test_every_file_a_trainer_writes_is_checked(model, tmp_path):
    name = "w"
    files = training_files(model, name)
    assert {"weights", "card", "checkpoint"} <= {kind for _, kind in files}
    for file_name, kind in files:
        out = tmp_path / f"{model}-{kind}-{file_name}"
        out.mkdir()
        (out / file_name).write_bytes(b"the user's own file")
        with pytest.raises(InputError, match="not written by `bbbanomaly train`"):
            check_training_output(out, name, model=model)
        assert (out / file_name).read_bytes() == b"the user's own file"


def test_a_checkpoint_given_with_resume_is_left_to_the_loader(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    check_training_output(tmp_path, "dsc-phae", model="phae", resume=True)  # --resume: loading it decides
    with pytest.raises(InputError, match="not a training checkpoint"):
        check_training_output(tmp_path, "dsc-phae", model="phae")


def test_a_name_that_is_another_output_is_refused(tmp_path):
    with pytest.raises(InputError, match="another file training writes"):
        check_training_output(tmp_path, "checkpoint", model="phae")


# --- 5, 6, 7: the output folder ---------------------------------------------------------------------
@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_out_is_refused(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused(["train", "phae", *TINY_PHAE, "--out", out], capsys, "--out is empty")
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


@pytest.mark.parametrize("inside", ["", "sub", "sub/deeper"])
def test_an_out_inside_the_training_data_is_refused(inside, tmp_path, capsys):
    cases = tmp_path / "cases"
    (cases / "c1").mkdir(parents=True)
    before = _tree(tmp_path)
    _refused(["train", "phae", str(cases), "--out", str(cases / inside), "--epochs", "1"], capsys,
             "training data folder", "outside")
    _refused(["train", "cae", str(tmp_path / "other"), str(cases), "--out", str(cases / inside)], capsys,
             "training data folder")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("out", ["/proc/self/x", "/sys/kernel/x"])
def test_kernel_pseudo_filesystems_are_refused(out, capsys):
    _refused(["train", "phae", *TINY_PHAE, "--out", out], capsys, "pseudo-filesystem")


def test_an_out_that_cannot_be_created_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("a file", encoding="utf-8")
    _refused(["train", "phae", *TINY_PHAE, "--out", str(tmp_path / "file" / "x")], capsys, "--out")
    assert _tree(tmp_path) == {"file": b"a file"}


# --- 8: a failed run removes the empty folders it created -----------------------------------------
def test_a_failed_run_leaves_no_empty_folder_of_its_own(tmp_path, capsys):
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    _refused(["train", "dmri-vae", str(empty), "--out", str(tmp_path / "tx"), "--epochs", "1"], capsys,
             "no case folders")
    _refused(["train", "dmri-vae", str(empty), "--out", str(tmp_path / "txu" / "sub"), "--epochs", "1"], capsys,
             "no case folders")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EMPTY"]
    kept = tmp_path / "kept"  # a folder the user made is never removed, empty or not
    kept.mkdir()
    _refused(["train", "dmri-vae", str(empty), "--out", str(kept), "--epochs", "1"], capsys, "no case folders")
    assert kept.is_dir()


def test_phae_resume_without_a_checkpoint_is_refused_not_started_from_scratch(tmp_path, capsys):
    from BBBAnomalyLib.cli import main

    out = tmp_path / "tx"
    out.mkdir()
    capsys.readouterr()
    assert main(["train", "phae", "--simulate", "1", "--curves-per-case", "10", "--epochs", "1", "--batch", "4",
                 "--threads", "1", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume: no checkpoint" in err[0]
    assert list(out.iterdir()) == []


def test_weights_and_cards_are_written_whole_or_not_at_all(tmp_path):
    """A crash while writing (here: the writer raises half way) leaves the previous file as it was and no
    temporary file behind; a completed write gets the umask like open() would."""
    import os

    from BBBAnomalyLib.weights import replace_atomically

    target = tmp_path / "w.json"
    target.write_text("old card")

    def half(tmp):
        Path(tmp).write_text("half a ca")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_atomically(target, half)
    assert target.read_text() == "old card" and sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]
    # (what may be replaced is the caller's judgement since session 22: here, anything)
    replace_atomically(target, lambda tmp: Path(tmp).write_text("new card"), may_replace=lambda found: True)
    assert target.read_text() == "new card" and sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask

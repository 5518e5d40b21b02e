"""A training's files never replace a user's file that arrived while it trained (session 22).

`bbbanomaly train` checks --out before the training (test_training_outputs, test_train_cli_round15), but a training
runs for minutes to hours, and the weights, their card and the checkpoints were then written with os.replace (dce,
phae) or torch.save straight onto the name (dmri, cae): a user's file put under one of those names in the meantime
was replaced without a word. Each test puts the user's file there after the first check; all but the two "still
replaced" tests fail on the code before.
"""

from __future__ import annotations

import json

import pytest
import torch

from BBBAnomalyLib import InputError
from BBBAnomalyLib.training.checkpoints import save_checkpoint
from BBBAnomalyLib.weights import replace_atomically, save_weights_and_card, sha256


def tiny():
    return torch.nn.Linear(3, 2)


def save(state):
    return lambda tmp: torch.save(state, tmp)


def test_an_earlier_trainings_weights_and_card_are_still_replaced(tmp_path):
    weights = tmp_path / "w.pt"
    save_weights_and_card(save({"a": torch.zeros(2)}), weights, {"name": "w"})
    first = sha256(weights)
    save_weights_and_card(save({"a": torch.ones(2)}), weights, {"name": "w", "run": 2})
    card = json.loads((tmp_path / "w.json").read_text(encoding="utf-8"))
    assert card["sha256"] == sha256(weights) != first and card["run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json", "w.pt"]  # no temporary file left


def test_a_users_file_under_the_weights_name_is_left_alone(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"the user's own weights, copied here during the training")
    with pytest.raises(InputError, match="was not written by it"):
        save_weights_and_card(save({"a": torch.ones(2)}), weights, {"name": "w"})
    assert weights.read_bytes() == b"the user's own weights, copied here during the training"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]  # no card for weights that are not ours


def test_weights_whose_card_no_longer_matches_are_the_users(tmp_path):
    """The earlier training's card is there, but the .pt beside it was replaced by the user: left alone."""
    weights = tmp_path / "w.pt"
    save_weights_and_card(save({"a": torch.zeros(2)}), weights, {"name": "w"})
    weights.write_bytes(b"edited by hand")
    with pytest.raises(InputError, match="was not written by it"):
        save_weights_and_card(save({"a": torch.ones(2)}), weights, {"name": "w"})
    assert weights.read_bytes() == b"edited by hand"


def test_a_users_file_under_the_cards_name_stops_before_the_weights(tmp_path):
    weights = tmp_path / "w.pt"
    (tmp_path / "w.json").write_text('{"my": "settings"}', encoding="utf-8")
    with pytest.raises(InputError, match="was not written by it"):
        save_weights_and_card(save({"a": torch.ones(2)}), weights, {"name": "w"})
    assert (tmp_path / "w.json").read_text(encoding="utf-8") == '{"my": "settings"}'
    assert not weights.exists()  # both or neither


def test_checkpoints_replace_the_previous_epoch_and_nothing_else(tmp_path):
    path = tmp_path / "run.checkpoint.pt"
    model = tiny()
    save_checkpoint(path, model, epoch=1)
    save_checkpoint(path, model, epoch=2)  # the previous epoch's file: replaced
    assert torch.load(path, weights_only=True)["epoch"] == 2
    path.unlink()
    path.write_bytes(b"a file of the user's, put there between two epochs")
    with pytest.raises(InputError, match="was not written by it"):
        save_checkpoint(path, model, epoch=3)
    assert path.read_bytes() == b"a file of the user's, put there between two epochs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.checkpoint.pt"]


def test_an_earlier_trainings_checkpoint_is_replaced(tmp_path):
    """A new process (no record of its own) still replaces what loads as a checkpoint (e.g. with --resume)."""
    path = tmp_path / "run.checkpoint.pt"
    torch.save({"state_dict": tiny().state_dict(), "epoch": 7}, path)
    save_checkpoint(path, tiny(), epoch=1)
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_replace_atomically_without_a_judge_replaces_only_its_own_last_file(tmp_path):
    path = tmp_path / "x.bin"
    replace_atomically(path, lambda tmp: open(tmp, "wb").write(b"one"))
    replace_atomically(path, lambda tmp: open(tmp, "wb").write(b"two"))
    assert path.read_bytes() == b"two"
    path.unlink()
    path.write_bytes(b"theirs")
    with pytest.raises(InputError, match="left alone"):
        replace_atomically(path, lambda tmp: open(tmp, "wb").write(b"three"))
    assert path.read_bytes() == b"theirs"

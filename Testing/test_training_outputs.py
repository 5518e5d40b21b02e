"""`bbbanomaly train ... --out DIR` never overwrites a file it did not write, and --name cannot
steer the weights out of --out (issue 12's rule for every writer, training included)."""

from __future__ import annotations

import json

import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.train_command import check_training_output
from BBBAnomalyLib.weights import sha256
from BBBAnomalyLib import InputError

from bad_input_helpers import error_lines


@pytest.mark.parametrize("model", ["dce-rls", "phae", "dmri-vae", "cae"])
def test_a_users_file_with_the_weights_name_is_refused_before_training(model, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    name = "mine"
    (out / f"{name}.pt").write_bytes(b"the user's own file")
    cases = tmp_path / "cases"
    cases.mkdir()
    code = main(["train", model, str(cases), "--out", str(out), "--name", name])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1 and "not written by `bbbanomaly train`" in err, err
    assert (out / f"{name}.pt").read_bytes() == b"the user's own file"


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_a_name_cannot_leave_the_output_folder(name, tmp_path):
    with pytest.raises(InputError, match="plain file name"):
        check_training_output(tmp_path, name)


def test_weights_written_by_training_may_be_replaced_by_training(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    (tmp_path / "w.json").write_text(json.dumps({"sha256": sha256(weights)}), encoding="utf-8")
    check_training_output(tmp_path, "w")  # ours: allowed
    weights.write_bytes(b"changed by hand")
    with pytest.raises(InputError, match="not written"):
        check_training_output(tmp_path, "w")

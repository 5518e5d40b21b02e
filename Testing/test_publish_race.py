"""A user's file that arrives between the last check and the publication is never replaced or deleted.

Every destination is checked twice, before the work and just before it is replaced (test_output_safety_round15,
test_bids_round15). Until session 22 the publication itself (``os.replace`` of a file, ``rmtree`` of the retired
results folder) still destroyed whatever a user put there in the moment between that check and the rename. Each test
drops or edits a user's file exactly in that moment (by wrapping the last check) and fails on the code before.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from BBBAnomalyLib import InputError
from BBBAnomalyLib.bids.derivatives import write_own_file
from BBBAnomalyLib.core import no_clobber, output_file, outputs
from BBBAnomalyLib.core.output_file import write_output_file
from BBBAnomalyLib.core.outputs import atomic_output_dir


def publish(out: Path, text: str, overwrite: bool = False) -> None:
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "map.txt").write_text(text, encoding="utf-8")


def after_the_last_check(monkeypatch, module, name: str, act, call: int = 1) -> None:
    """Run ``act()`` right after the ``call``-th (1-based) call of ``module.name`` has passed."""
    real = getattr(module, name)
    calls = []

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == call:
            act()
        return result

    monkeypatch.setattr(module, name, wrapped)


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != outputs.MANIFEST
                  and not p.name.endswith("bbbanomaly-lock"))


# --- the results folder ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["a new file", "an edited map", "a new subfolder"])
def test_a_file_put_in_the_results_folder_after_the_last_check_survives(tmp_path, monkeypatch, how):
    out = tmp_path / "res"
    publish(out, "first")

    def user_acts():
        if how == "a new file":
            (out / "my_notes.txt").write_text("the radiologist's notes", encoding="utf-8")
        elif how == "an edited map":
            with open(out / "map.txt", "a", encoding="utf-8") as fh:
                fh.write(" + the radiologist's edit")
        else:
            (out / "mine").mkdir()
            (out / "mine" / "seg.nrrd").write_bytes(b"segmentation")

    # atomic_output_dir's checks: the claim's (1) and the one just before the swap (2)
    after_the_last_check(monkeypatch, outputs, "_check_destination", user_acts, call=2)
    with pytest.raises(InputError, match="changed while the results were being put in place"):
        publish(out, "second", overwrite=True)
    if how == "a new file":
        assert (out / "my_notes.txt").read_text(encoding="utf-8") == "the radiologist's notes"
    elif how == "an edited map":
        assert (out / "map.txt").read_text(encoding="utf-8") == "first + the radiologist's edit"
    else:
        assert (out / "mine" / "seg.nrrd").read_bytes() == b"segmentation"
    if how != "an edited map":
        assert (out / "map.txt").read_text(encoding="utf-8") == "first"  # the previous results are back in place
    assert hidden_leftovers(tmp_path) == []  # no partial or retired folder left beside it


def test_an_untouched_results_folder_is_still_replaced(tmp_path):
    out = tmp_path / "res"
    publish(out, "first")
    publish(out, "second", overwrite=True)
    assert (out / "map.txt").read_text(encoding="utf-8") == "second"
    assert outputs.foreign_entries(out) == [] and outputs.changed_entries(out) == []
    assert hidden_leftovers(tmp_path) == []


# --- one output file ---------------------------------------------------------------------------------------------
def test_a_file_that_appears_after_the_check_is_not_replaced_without_overwrite(tmp_path, monkeypatch):
    target = tmp_path / "stats.json"
    after_the_last_check(monkeypatch, output_file, "check_output_file",
                         lambda: target.write_text("the user's own file", encoding="utf-8"))
    with pytest.raises(InputError, match="appeared while the command ran"):
        write_output_file(target, "{}\n")
    assert target.read_text(encoding="utf-8") == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]  # no temporary file left


def test_with_overwrite_an_input_that_appears_under_the_name_is_not_replaced(tmp_path, monkeypatch):
    """--overwrite lets a user's file be replaced, never an input: here the input is hard-linked to the target's name
    after the check (the check alone saw nothing there)."""
    source = tmp_path / "input.nii"
    source.write_bytes(b"the input map")
    target = tmp_path / "stats.json"
    after_the_last_check(monkeypatch, output_file, "check_output_file", lambda: os.link(source, target))
    with pytest.raises(InputError, match="appeared while the command ran"):
        write_output_file(target, "{}\n", overwrite=True, inputs=[source])
    assert target.read_bytes() == b"the input map" and os.path.samefile(target, source)


def test_with_overwrite_any_other_file_is_replaced(tmp_path):
    target = tmp_path / "stats.json"
    target.write_text("old", encoding="utf-8")
    write_output_file(target, "new\n", overwrite=True)
    assert target.read_text(encoding="utf-8") == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


# --- the BIDS app's own files beside the participants ----------------------------------------------------------
def is_ours(text: str) -> bool:
    return text.startswith('{"written by": "bbbanomaly"')


def test_the_bids_apps_file_never_replaces_a_users_file_that_arrives_after_its_check(tmp_path, monkeypatch):
    target = tmp_path / "failures.tsv"
    after_the_last_check(monkeypatch, output_file, "check_output_file",
                         lambda: target.write_text("participant\tmy own notes\n", encoding="utf-8"))
    with pytest.raises(InputError, match="appeared while the command ran"):
        write_own_file(target, '{"written by": "bbbanomaly", "n": 2}\n', "failures table", is_ours)
    assert target.read_text(encoding="utf-8") == "participant\tmy own notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failures.tsv"]


def test_the_bids_apps_file_replaces_another_tasks_copy_of_its_own(tmp_path, monkeypatch):
    """A SLURM array's tasks each write dataset_description.json: a copy written by another task in the moment
    after this one's check is the app's own, and is replaced."""
    target = tmp_path / "dataset_description.json"
    after_the_last_check(monkeypatch, output_file, "check_output_file",
                         lambda: target.write_text('{"written by": "bbbanomaly", "task": 7}\n', encoding="utf-8"))
    write_own_file(target, '{"written by": "bbbanomaly", "task": 3}\n', "dataset_description.json", is_ours)
    assert json.loads(target.read_text(encoding="utf-8"))["task"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_description.json"]


# --- the primitive, and filesystems without hard links ---------------------------------------------------------------
def test_a_taken_name_is_put_back_exactly(tmp_path):
    tmp, target = tmp_path / "new.partial", tmp_path / "final.txt"
    tmp.write_text("ours", encoding="utf-8")
    target.write_text("theirs", encoding="utf-8")
    inode = target.stat().st_ino
    with pytest.raises(no_clobber.Taken):
        no_clobber.link_into_place(tmp, target, may_replace=lambda path: False)
    assert target.read_text(encoding="utf-8") == "theirs" and target.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.txt", "new.partial"]  # the caller removes tmp


def test_without_hard_links_the_file_is_still_written_complete(tmp_path, monkeypatch):
    """FAT/exFAT drives and some network shares refuse link(): the write falls back to os.replace after the check."""
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(no_clobber.os, "link", no_links)
    target = tmp_path / "stats.json"
    write_output_file(target, "{}\n")
    assert target.read_text(encoding="utf-8") == "{}\n"
    target.unlink()
    after_the_last_check(monkeypatch, output_file, "check_output_file",
                         lambda: target.write_text("the user's", encoding="utf-8"))
    with pytest.raises(InputError, match="appeared while the command ran"):  # a file there is still not replaced
        write_output_file(target, "{}\n")
    assert target.read_text(encoding="utf-8") == "the user's"

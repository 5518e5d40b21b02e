"""Audit of round 15: `rerun` checks the report it is given, reads only checksummed inputs and never writes
over its own report; `demo` refuses unusable --slices/--snr/--seed and an empty --out in one line."""

from __future__ import annotations

import json
import shutil

import pytest
from bad_input_helpers import assert_refused, error_lines, tree_hashes

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.config import fingerprint


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    folder = tmp_path_factory.mktemp("rerun15_inputs")
    make_dsc_phantom(snr=100, slices=3, seed=2).write(folder)
    return folder


@pytest.fixture(scope="module")
def first_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("rerun15_first") / "r1"
    assert main(["dsc", str(inputs / "signal.nii.gz"), "--aif-mask", str(inputs / "mask_aif.nii.gz"),
                 "--method", "csvd", "--out", str(out), "--quiet"]) == 0
    return out


def edited_report(first_run, tmp_path, edit):
    """A copy of the first run's report, ``edit(report, configuration)`` applied."""
    report = json.loads((first_run / "report.json").read_text())
    edit(report, report["configuration"])
    path = tmp_path / "edited_report.json"
    path.write_text(json.dumps(report))
    return path


def _set(key, value):
    def edit(report, conf):
        conf[key] = value
    return edit


def _set_option(key, value):
    def edit(report, conf):
        if value is KeyError:
            del conf["options"][key]
        else:
            conf["options"][key] = value
    return edit


def _set_input_entry(value):
    def edit(report, conf):
        name = next(n for n in conf["inputs"] if n.endswith("signal.json"))
        conf["inputs"][name] = value(conf["inputs"][name])
    return edit


@pytest.mark.parametrize("edit, words", [
    (_set("inputs", "x"), ("configuration.inputs", "size and sha256")),  # was AttributeError, exit 1
    (_set("inputs", ["a"]), ("configuration.inputs",)),
    (_set_input_entry(lambda e: 3), ("signal.json",)),
    (_set_input_entry(lambda e: {**e, "size": str(e["size"])}), ("signal.json", "size")),
    (_set_input_entry(lambda e: {**e, "sha256": None}), ("signal.json", "sha256")),
    (_set("command", "dsc"), ("configuration.command",)),
    (_set("command", [1]), ("configuration.command",)),
    (_set("command", ["rerun"]), ("rerun", "not a command that rerun repeats")),
    (_set_option("out", 5), ("options.out",)),
    (_set_option("kh", "abc"), ("kh", "number")),
    (_set_option("series", KeyError), ("series", "required")),  # argparse's usage + error: now one line
], ids=["inputs-str", "inputs-list", "entry-int", "size-str", "sha-null", "command-str", "command-int",
        "command-rerun", "out-int", "kh-str", "series-missing"])
def test_rerun_refuses_a_report_with_wrong_structure_in_one_line(first_run, inputs, tmp_path, capsys, edit, words):
    report = edited_report(first_run, tmp_path, edit)
    out = tmp_path / "again"
    assert_refused(["rerun", str(report), "--out", str(out), "--quiet"], capsys, inputs, out, words)


def test_rerun_refuses_an_input_the_report_does_not_checksum(first_run, inputs, tmp_path, capsys):
    out = tmp_path / "again"
    # no recorded inputs at all: the series would be read unchecked
    report = edited_report(first_run, tmp_path, _set("inputs", {}))
    assert_refused(["rerun", str(report), "--out", str(out), "--quiet"], capsys, inputs, out,
                   ("signal.nii.gz", "records no checksum"))
    # the AIF mask swapped for a file the report does not list
    tumor = str((inputs / "mask_tumor.nii.gz").resolve())
    report = edited_report(first_run, tmp_path, _set_option("aif_mask", tumor))
    assert_refused(["rerun", str(report), "--out", str(out), "--quiet"], capsys, inputs, out,
                   ("mask_tumor.nii.gz", "records no checksum"))
    # a sidecar the rerun would read but the report does not list (deleted from inputs)
    def drop_sidecar(report, conf):
        del conf["inputs"][next(n for n in conf["inputs"] if n.endswith("signal.json"))]
    report = edited_report(first_run, tmp_path, drop_sidecar)
    assert_refused(["rerun", str(report), "--out", str(out), "--quiet"], capsys, inputs, out, ("signal.json",))


def test_rerun_runs_an_edited_report_whose_new_input_is_listed_with_its_checksum(first_run, inputs, tmp_path):
    """The check is about what is recorded, not a refusal of every edit."""
    nawm = (inputs / "mask_nawm.nii.gz").resolve()

    def edit(report, conf):
        conf["options"]["nawm_mask"] = str(nawm)
        conf["inputs"][str(nawm)] = fingerprint(nawm)
    report = edited_report(first_run, tmp_path, edit)
    out = tmp_path / "again"
    assert main(["rerun", str(report), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "report.json").read_text())["configuration"]["options"]["nawm_mask"] == str(nawm)


def test_rerun_never_writes_over_its_own_report(first_run, tmp_path, capsys):
    mine = tmp_path / "r1"
    shutil.copytree(first_run, mine)
    before = tree_hashes(mine)
    capsys.readouterr()
    assert main(["rerun", str(mine / "report.json"), "--out", str(mine), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    # --overwrite replaced the folder, and the report.json the rerun was reading, with exit 0
    assert main(["rerun", str(mine / "report.json"), "--out", str(mine), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "holds the input" in lines[0] and "report.json" in lines[0], err
    assert tree_hashes(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1"]  # no lock or partial folder left


def test_rerun_of_a_run_without_out_goes_beside_not_over_the_original(inputs, tmp_path, monkeypatch, capsys):
    """A run without --out records out = null: the rerun used the command's default, i.e. the original
    folder, and replaced it (its own report) with --overwrite."""
    monkeypatch.chdir(tmp_path)
    assert main(["dsc", str(inputs / "signal.nii.gz"), "--aif-mask", str(inputs / "mask_aif.nii.gz"), "--quiet"]) == 0
    original = tmp_path / "signal_dsc"
    before = tree_hashes(original)
    assert json.loads((original / "report.json").read_text())["configuration"]["options"]["out"] is None
    assert main(["rerun", str(original / "report.json"), "--overwrite", "--quiet"]) == 0
    assert tree_hashes(original) == before
    assert (tmp_path / "signal_dsc_rerun" / "report.json").is_file()
    assert "-> " + str(tmp_path / "signal_dsc_rerun") in capsys.readouterr().out


@pytest.mark.parametrize("empty", ["", "  "])
def test_rerun_refuses_an_empty_out(first_run, inputs, tmp_path, monkeypatch, capsys, empty):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    before = tree_hashes(first_run)
    assert_refused(["rerun", str(first_run / "report.json"), "--out", empty, "--quiet"], capsys, inputs,
                   here / "nothing", ("--out is empty",))
    assert list(here.iterdir()) == [] and tree_hashes(first_run) == before


@pytest.mark.parametrize("argv, words", [
    (["--slices", "0"], ("--slices", "between 1 and")),
    (["--slices", "-3"], ("--slices",)),
    (["--slices", "100000"], ("--slices", "'all'")),
    (["--slices", "abc"], ("--slices", "whole number")),
    (["--slices", "1.5"], ("--slices", "whole number")),
    (["--snr", "0"], ("--snr",)),
    (["--snr", "nan"], ("--snr", "finite")),
    (["--snr", "-2"], ("--snr",)),
    (["--snr", "inf"], ("--snr",)),
    (["--seed", "-1"], ("--seed",)),
    (["--pipeline", "dce", "--slices", "0"], ("--slices",)),
    (["--pipeline", "all", "--snr", "nan"], ("--snr",)),
])
def test_demo_refuses_unusable_numbers_in_one_line(tmp_path, capsys, argv, words):
    argv = ["--pipeline", "dsc", *argv] if "--pipeline" not in argv else argv
    out = tmp_path / "d0"
    assert_refused(["demo", *argv, "--out", str(out), "--quiet"], capsys, tmp_path / "none", out, words)


@pytest.mark.parametrize("empty", ["", " "])
def test_demo_refuses_an_empty_out(tmp_path, monkeypatch, capsys, empty):
    monkeypatch.chdir(tmp_path)
    assert_refused(["demo", "--pipeline", "dsc", "--slices", "2", "--out", empty, "--quiet"], capsys,
                   tmp_path / "none", tmp_path / "nothing", ("--out is empty", "bbbanomaly-demo"))
    assert list(tmp_path.iterdir()) == []

"""Round 15 audit of `bbbanomaly bids`: the user's files at the derivatives level and bad datasets.
Each test fails on the code before its fix.

1. failures.tsv, logs/sub-<label>_status.json (and a foreign dataset_description.json) of the user in
   OUT_DIR/bbbanomaly/ were replaced without a word (also when the participant failed); the app's own
   files of an earlier run must still be rewritten (a SLURM array rewrites them from every task).
2. `group` replaced the user's group/roi_ratios.tsv (a symbolic link too); a file named group gave a
   FileExistsError traceback.
3. A dataset_description.json of the input dataset that is not JSON, not an object or binary was
   never read: the run went on (exit 0).
4. `--participant-label $'0\\n1'` printed its error over two lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from BBBAnomalyLib.bids.layout import check_dataset
from BBBAnomalyLib.cli import main

from bad_input_helpers import SHAPE, dsc_signal, one_line_refusal, save_nifti


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


refused = one_line_refusal  # exit 2, one line with every keyword, no traceback


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """sub-01 with a small DSC series (about a second to run) and a tumor mask in masks/;
    sub-02 with nothing any pipeline reads (fails at once)."""
    base = tmp_path_factory.mktemp("bids15")
    root = base / "ds"
    (root / "sub-01" / "perf").mkdir(parents=True)
    (root / "sub-02" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    data, te = dsc_signal()
    save_nifti(root / "sub-01" / "perf" / "sub-01_dsc.nii.gz", data, dt=1.5, sidecar=json.dumps({"EchoTime": te}))
    save_nifti(root / "sub-02" / "anat" / "sub-02_T2w.nii.gz", np.zeros(SHAPE, np.float32))
    tumor = np.zeros(SHAPE, np.uint8)
    tumor[6:8, 6:8, 1] = 1
    (base / "masks" / "sub-01" / "perf").mkdir(parents=True)
    save_nifti(base / "masks" / "sub-01" / "perf" / "sub-01_label-tumor_mask.nii.gz", tumor)
    return root


@pytest.fixture(scope="module")
def group_ready(dataset, tmp_path_factory) -> Path:
    """OUT_DIR/bbbanomaly after a participant run of sub-01 with its tumor mask (ROI statistics)."""
    out = tmp_path_factory.mktemp("group15") / "out"
    assert main(["bids", str(dataset), str(out), "participant", "--pipelines", "dsc", "--participant-label", "01",
                 "--masks", str(dataset.parent / "masks")]) == 0
    return out / "bbbanomaly"


@pytest.fixture
def derivatives(group_ready, tmp_path) -> Path:
    """A fresh copy of ``group_ready`` for one test (OUT_DIR; results in OUT_DIR/bbbanomaly)."""
    shutil.copytree(group_ready, tmp_path / "out" / "bbbanomaly", symlinks=True)
    return tmp_path / "out"


# --- 1. the user's files beside the participants' folders -------------------------------------------------
@pytest.mark.parametrize("inside", [False, True], ids=["own-OUT_DIR", "dataset-derivatives"])
@pytest.mark.parametrize("name", ["failures.tsv", "logs/sub-02_status.json"])
def test_a_users_file_under_an_app_name_is_refused_before_any_work(dataset, tmp_path, capsys, name, inside):
    """The participant fails (sub-02 has no input) and the derivatives folder has no dataset_description.json:
    the old code still replaced the user's file; now it is refused (exit 2) before anything is written."""
    out = (dataset / "derivatives") if inside else (tmp_path / "o2")
    root = out / "bbbanomaly"
    try:
        user = root / name
        user.parent.mkdir(parents=True)
        user.write_text("USER DATA\n")
        line = refused(["bids", str(dataset), str(out), "participant", "--pipelines", "dsc", "--participant-label",
                        "02"], capsys, "not written by bbbanomaly", str(user), "move it")
        assert user.read_text() == "USER DATA\n", line
        left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        assert left == sorted({name, *(["logs"] if "/" in name else [])})  # nothing else written: no description
    finally:
        if inside:
            shutil.rmtree(dataset / "derivatives")


def test_a_users_json_under_a_status_name_is_refused_even_when_it_looks_like_a_status(dataset, tmp_path, capsys):
    """A JSON object with the status keys but not the app's layout (the user's notes) is not the app's file."""
    user = tmp_path / "o" / "bbbanomaly" / "logs" / "sub-02_status.json"
    user.parent.mkdir(parents=True)
    user.write_text('{"participant": "sub-02", "error": "my note"}')
    refused(["bids", str(dataset), str(tmp_path / "o"), "participant", "--participant-label", "02"], capsys,
            "not written by bbbanomaly", "sub-02_status.json")
    assert user.read_text() == '{"participant": "sub-02", "error": "my note"}'


def test_links_folders_and_binary_files_under_app_names_are_refused(dataset, tmp_path, capsys):
    root = tmp_path / "o" / "bbbanomaly"
    root.mkdir(parents=True)
    mine = tmp_path / "mine.tsv"
    mine.write_text("MINE\n")
    argv = ["bids", str(dataset), str(tmp_path / "o"), "participant", "--participant-label", "02"]
    (root / "failures.tsv").symlink_to(mine)
    refused(argv, capsys, "symbolic link", "failures.tsv")
    assert mine.read_text() == "MINE\n" and (root / "failures.tsv").is_symlink()
    (root / "failures.tsv").unlink()
    (root / "failures.tsv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    refused(argv, capsys, "not written by bbbanomaly", "failures.tsv")
    (root / "failures.tsv").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "logs").symlink_to(elsewhere, target_is_directory=True)
    refused(argv, capsys, "symbolic link", "logs")
    assert not any(elsewhere.iterdir())
    (root / "logs").unlink()
    (root / "logs" / "sub-02_status.json").mkdir(parents=True)
    refused(argv, capsys, "not a regular file", "sub-02_status.json")
    shutil.rmtree(root / "logs")
    (root / "dataset_description.json").write_text('{"Name": "my own derivatives"}')
    refused(argv, capsys, "holds another dataset")
    assert (root / "dataset_description.json").read_text() == '{"Name": "my own derivatives"}'
    assert sorted(p.name for p in root.iterdir()) == ["dataset_description.json"]


def test_the_apps_own_files_are_rewritten_and_a_users_status_elsewhere_is_left_alone(dataset, tmp_path, capsys):
    """A rerun (and a SLURM array task per participant) rewrites the app's own failures.tsv, status file and
    description; another participant's status stays; a user's file in logs/ is neither read nor replaced."""
    out = tmp_path / "o"
    root = out / "bbbanomaly"
    (root / "logs").mkdir(parents=True)
    note = root / "logs" / "sub-99_status.json"
    note.write_text('{"error": "my note"}')  # the old code crashed on it (KeyError: 'participant')
    argv = ["bids", str(dataset), str(out), "participant", "--pipelines", "dsc", "--participant-label"]
    for _ in range(2):
        assert main(argv + ["02"]) == 1  # sub-02 fails: no input
    failures = (root / "failures.tsv").read_text().splitlines()
    assert failures[0] == "participant_id\tpipeline\terror" and len(failures) == 2
    assert failures[1].startswith("sub-02\t-\tno input for dsc")
    assert main(argv + ["01"]) == 0  # another task: sub-02's status is kept, so it is still listed
    assert "sub-02" in (root / "failures.tsv").read_text()
    status = json.loads((root / "logs" / "sub-01_status.json").read_text())
    assert status["participant"] == "sub-01" and status["error"] is None
    assert note.read_text() == '{"error": "my note"}' and "sub-99" not in (root / "failures.tsv").read_text()
    mode = 0o666 & ~umask()  # written like open() writes them, not private like a temporary file
    for name in ("failures.tsv", "dataset_description.json", "logs/sub-01_status.json"):
        assert (root / name).stat().st_mode & 0o777 == mode, name


def test_an_edited_description_is_kept_and_an_unedited_one_refreshed(dataset, tmp_path, capsys):
    out = tmp_path / "o"
    desc = out / "bbbanomaly" / "dataset_description.json"
    argv = ["bids", str(dataset), str(out), "participant", "--participant-label", "02"]
    assert main(argv) == 1
    text = json.loads(desc.read_text())
    text["GeneratedBy"][0]["Version"] = "0.0.1"  # what an earlier version wrote
    desc.write_text(json.dumps(text, indent=2) + "\n")
    assert main(argv) == 1
    from BBBAnomalyLib import __version__

    assert json.loads(desc.read_text())["GeneratedBy"][0]["Version"] == __version__
    text["Authors"] = ["A. Curator"]  # the user's edit: kept as it is
    desc.write_text(json.dumps(text, indent=2) + "\n")
    before = desc.read_bytes()
    assert main(argv) == 1
    assert desc.read_bytes() == before


# --- 2. the cohort table ---------------------------------------------------------------------------------
def test_group_refuses_a_users_table_a_link_and_a_file_named_group(derivatives, dataset, tmp_path, capsys):
    root = derivatives / "bbbanomaly"
    argv = ["bids", str(dataset), str(derivatives), "group"]
    table = root / "group" / "roi_ratios.tsv"
    table.parent.mkdir()
    table.write_text("USER TABLE\n")
    refused(argv, capsys, "not written by bbbanomaly", "roi_ratios.tsv")
    assert table.read_text() == "USER TABLE\n"
    table.unlink()
    target = tmp_path / "target.tsv"
    target.write_text("TARGET\n")
    table.symlink_to(target)
    refused(argv, capsys, "symbolic link", "roi_ratios.tsv")
    assert target.read_text() == "TARGET\n" and table.is_symlink()
    shutil.rmtree(root / "group")
    (root / "group").write_text("a file\n")
    refused(argv, capsys, "is not a folder", "group")
    assert (root / "group").read_text() == "a file\n"
    (root / "group").unlink()
    (root / "group").symlink_to(tmp_path, target_is_directory=True)
    refused(argv, capsys, "symbolic link", "group")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "target.tsv"]


def test_group_rewrites_its_own_table(derivatives, dataset, capsys):
    table = derivatives / "bbbanomaly" / "group" / "roi_ratios.tsv"
    argv = ["bids", str(dataset), str(derivatives), "group"]
    assert main(argv) == 0
    first = table.read_text()
    assert first.startswith("participant_id\tsession_id\t") and "sub-01\t" in first
    assert table.stat().st_mode & 0o777 == 0o666 & ~umask()
    assert main(argv) == 0 and table.read_text() == first
    assert main(argv + ["--participant-label", "sub-01", "--table-format", "csv"]) == 0
    assert (table.with_suffix(".csv")).read_text().startswith("participant_id,session_id,")


def test_group_refuses_a_users_failures_table_before_writing_its_own(derivatives, dataset, capsys):
    root = derivatives / "bbbanomaly"
    status = {"participant": "sub-02", "pipeline": "", "jobs": [], "error": "no input"}
    (root / "logs" / "sub-02_status.json").write_text(json.dumps(status, indent=2) + "\n")
    (root / "failures.tsv").write_text("mine\n")
    refused(["bids", str(dataset), str(derivatives), "group"], capsys, "not written by bbbanomaly", "failures.tsv")
    assert (root / "failures.tsv").read_text() == "mine\n"
    assert not (root / "group").exists()  # both or neither


def test_group_names_a_broken_roistats_file_in_one_line(derivatives, dataset, capsys):
    (broken,) = (derivatives / "bbbanomaly").glob("sub-01/perf/*_roistats.json")
    broken.write_text('{"roi": "tumor"}')
    refused(["bids", str(dataset), str(derivatives), "group"], capsys, broken.name, "KeyError")
    assert not (derivatives / "bbbanomaly" / "group").exists()


# --- 3. the input dataset's dataset_description.json --------------------------------------------------
@pytest.mark.parametrize("content, problem", [
    (b"{not json", "not valid JSON (line 1, column 2"),
    (b"[1, 2]", "holds an array instead of a JSON object"),
    (b'"study"', "holds a string"),
    (b"\x00\x9f\x92\x96\xff\xfe binary", "not UTF-8"),
    (b"[" * 100_000, "not valid JSON"),
    (b"", "not valid JSON"),
], ids=["not-json", "array", "string", "binary", "deep", "empty"])
def test_an_unreadable_dataset_description_is_one_line(dataset, tmp_path, capsys, content, problem):
    bad = tmp_path / "ds"
    shutil.copytree(dataset, bad)
    (bad / "dataset_description.json").write_bytes(content)
    refused(["bids", str(bad), str(tmp_path / "o"), "participant", "--participant-label", "02"], capsys,
            "is not a valid BIDS dataset", "dataset_description.json", problem, "fix it")
    refused(["bids", str(bad), str(tmp_path / "o"), "group"], capsys, "is not a valid BIDS dataset")
    assert not (tmp_path / "o").exists()


def test_unused_fields_of_the_description_may_have_any_type(dataset, tmp_path):
    ok = tmp_path / "ds"
    ok.mkdir()
    (ok / "dataset_description.json").write_text('\ufeff{"Name": 3, "BIDSVersion": [1], "Authors": "me"}',
                                                 encoding="utf-8")
    assert check_dataset(ok) == ok.resolve()


# --- 4. one line, whatever the label -----------------------------------------------------------------------
@pytest.mark.parametrize("level", ["participant", "group"])
def test_a_label_with_a_newline_is_shown_escaped_on_one_line(dataset, tmp_path, capsys, level):
    line = refused(["bids", str(dataset), str(tmp_path / "o"), level, "--participant-label", "0\n1"], capsys,
                   "is not a BIDS label")
    assert "'0\\n1'" in line
    line = refused(["bids", str(dataset), str(tmp_path / "o"), "participant", "--pipelines", "dsc\npet"], capsys,
                   "--pipelines")
    assert "'dsc\\npet'" in line
    assert not (tmp_path / "o").exists()


def test_a_description_written_meanwhile_by_another_task_is_not_a_refusal(dataset, tmp_path, monkeypatch):
    """A SLURM array starts every task at once: the description may appear between a task's check and its
    write; it is another task's (the app's own) and no reason to stop."""
    from BBBAnomalyLib.bids import derivatives

    root = tmp_path / "o" / "bbbanomaly"
    real = derivatives.check_own_file

    def check_then_other_task_writes(path, *args, **kwargs):
        found = real(path, *args, **kwargs)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(derivatives.dataset_description(dataset), indent=2) + "\n")
        return found

    monkeypatch.setattr(derivatives, "check_own_file", check_then_other_task_writes)
    derivatives.ensure_dataset_description(root, dataset)
    assert json.loads((root / "dataset_description.json").read_text())["GeneratedBy"][0]["Name"] == "BBBAnomaly"


@pytest.mark.parametrize("which", ["out-file", "out-nul", "bids-nul"])
def test_unusable_folders_are_one_line(dataset, tmp_path, capsys, which):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    bids, out = str(dataset), str(tmp_path / "o")
    if which == "out-file":
        out = str(afile)
    elif which == "out-nul":
        out += "\0x"
    else:
        bids += "\0x"
    refused(["bids", bids, out, "participant", "--participant-label", "02"], capsys,
            "is a file" if which == "out-file" else "cannot be used")
    assert afile.read_text() == "mine\n" and not (tmp_path / "o").exists()

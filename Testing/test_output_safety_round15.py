"""Round 15 audit of the user's-data promises: each test fails on the code before its fix.

1-2. `roi-stats --json TARGET` replaced the input map, the ROI mask or any user file without a word,
     and gave tracebacks for a folder, /proc, a read-only folder or a missing parent folder.
3.   `--config` of a binary file (a .nii.gz) gave a UnicodeDecodeError traceback; a folder was "not found".
4.   A failed run left behind the empty parent folders it had created for --out.
5.   An --out that is an empty mount point gave a traceback (EBUSY) and left a partial folder behind.
6.   `--overwrite` deleted a file of the output folder that the user had edited or replaced.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib import InputError
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core import outputs
from BBBAnomalyLib.core.outputs import MANIFEST, atomic_output_dir, claim_output_dir

from bad_input_helpers import AFFINE, SHAPE, one_line_refusal, tree_hashes, write_dsc_case


refused = one_line_refusal  # exit 2, one line with every keyword, no traceback


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files/folders of ours in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and (".partial" in p.name
                                                                                   or ".old-" in p.name))


@pytest.fixture
def case(tmp_path):
    files = write_dsc_case(tmp_path / "in")
    cbv = tmp_path / "in" / "cbv.nii.gz"
    nib.save(nib.Nifti1Image(np.linspace(1, 2, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE), AFFINE), cbv)
    return dict(files, map=cbv)


def roi_argv(case, target, *extra: str) -> list[str]:
    return ["roi-stats", str(case["map"]), "--roi", str(case["tumor"]), "--reference", str(case["nawm"]),
            "--json", str(target), *extra]


def dsc_argv(case, out: Path, *extra: str) -> list[str]:
    return ["dsc", str(case["series"]), "--aif-mask", str(case["aif"]), "--mask", str(case["mask"]),
            "--method", "ssvd", "--out", str(out), "--quiet", *extra]


# --- 1. roi-stats --json never replaces an input, nor a user's file without --overwrite ------------
@pytest.mark.parametrize("which", ["map", "tumor", "nawm"])
@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["plain", "overwrite"])
def test_roi_stats_json_never_replaces_an_input(case, capsys, which, overwrite):
    before = tree_hashes(case["map"].parent)
    refused(roi_argv(case, case[which], *overwrite), capsys, "input", "never overwritten")
    assert tree_hashes(case["map"].parent) == before


def test_roi_stats_json_never_replaces_a_hard_link_to_an_input_or_the_runs_report(case, capsys):
    link = case["map"].parent / "same_map.nii.gz"
    os.link(case["map"], link)
    report = case["map"].parent / "report.json"  # read by roi-stats for the maps' units
    report.write_text('{"maps": {}}', encoding="utf-8")
    before = tree_hashes(case["map"].parent)
    refused(roi_argv(case, link, "--overwrite"), capsys, "input")
    refused(roi_argv(case, report, "--overwrite"), capsys, "input")
    assert tree_hashes(case["map"].parent) == before


def test_roi_stats_json_replaces_an_existing_file_only_with_overwrite(case, tmp_path, capsys):
    target = tmp_path / "stats.json"
    target.write_text("the user's own notes", encoding="utf-8")
    refused(roi_argv(case, target), capsys, "already exists", "--overwrite")
    assert target.read_text(encoding="utf-8") == "the user's own notes"
    assert main(roi_argv(case, target, "--overwrite")) == 0
    assert json.loads(target.read_text(encoding="utf-8"))["roi"] == "roi"
    assert leftovers(tmp_path) == []


def test_roi_stats_json_is_written_atomically(case, tmp_path, capsys, monkeypatch):
    """A failure while writing (a full disk) leaves the old file whole and no temporary file."""
    target = tmp_path / "stats.json"
    target.write_text("old statistics", encoding="utf-8")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    refused(roi_argv(case, target, "--overwrite"), capsys, "No space left on device", "nothing was written")
    assert target.read_text(encoding="utf-8") == "old statistics"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "stats.json"]


def test_roi_stats_json_is_checked_before_the_maps_are_read(case, tmp_path, capsys, monkeypatch):
    target = tmp_path / "stats.json"
    target.write_text("x", encoding="utf-8")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the maps were read although --json was refused")

    monkeypatch.setattr("BBBAnomalyLib.io.read_volume", must_not_run)
    refused(roi_argv(case, target), capsys, "already exists")


# --- 2. roi-stats --json: bad destinations are one line, and nothing is left --------------------------
def test_roi_stats_json_bad_destinations_are_one_line(case, tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    refused(roi_argv(case, folder), capsys, "is a folder", "stats.json")
    assert list(folder.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("a file", encoding="utf-8")
    refused(roi_argv(case, blocker / "x.json"), capsys, "is a file, not a folder")
    assert blocker.read_text(encoding="utf-8") == "a file"
    if Path("/proc/self").is_dir():
        refused(roi_argv(case, "/proc/x.json"), capsys, "/proc/x.json", "choose")


def test_roi_stats_json_in_a_read_only_folder_is_one_line(case, tmp_path, capsys, monkeypatch):
    """os.access says no for a read-only filesystem (EROFS) even to root; and if the write itself
    fails (a filesystem that lies to access()), that is one line too, with nothing left."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == tmp_path else real_access(p, mode))
    refused(roi_argv(case, tmp_path / "x.json"), capsys, "read-only")
    monkeypatch.setattr(os, "access", real_access)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    refused(roi_argv(case, tmp_path / "nd" / "x.json"), capsys, "Read-only file system")
    assert not (tmp_path / "nd").exists(), "the folder made for the file was left behind"
    assert not (tmp_path / "x.json").exists()


def test_roi_stats_json_creates_a_missing_parent_folder_like_out_does(case, tmp_path, capsys):
    target = tmp_path / "nd" / "deeper" / "x.json"
    assert main(roi_argv(case, target)) == 0
    assert json.loads(target.read_text(encoding="utf-8"))["reference"] == "reference"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


# --- 3. --config: a binary file or a folder ---------------------------------------------------------
def test_config_that_is_not_text_is_one_line(case, capsys):
    refused(["dsc", str(case["series"]), "--config", str(case["mask"])], capsys, "not a text file", "JSON")


def test_config_that_is_a_folder_says_so(case, capsys):
    line = refused(["dsc", str(case["series"]), "--config", str(case["map"].parent)], capsys, "is a folder")
    assert "not found" not in line


# --- 4. a failed run removes the parent folders it made, and only those ----------------------------
def test_a_failed_run_leaves_no_parent_folders_it_created(tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a NIfTI file")
    kept = tmp_path / "n1"
    kept.mkdir()  # the user's (empty) folder: it must stay
    refused(["dsc", str(bad), "--frame-interval", "1.5", "--te", "0.03", "--out", str(kept / "n2" / "n3" / "o")],
            capsys, "bad.nii.gz")
    assert kept.is_dir() and list(kept.iterdir()) == []
    refused(["dsc", str(bad), "--frame-interval", "1.5", "--te", "0.03", "--out", str(tmp_path / "m1" / "m2" / "o")],
            capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii.gz", "n1"]


def test_a_made_folder_that_is_no_longer_empty_stays(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with claim_output_dir(out):
        (tmp_path / "a" / "theirs.txt").write_text("written meanwhile", encoding="utf-8")
    assert (tmp_path / "a" / "theirs.txt").exists() and not (tmp_path / "a" / "b").exists()
    with claim_output_dir(out):  # a published folder keeps its parents
        with atomic_output_dir(out) as tmp:
            (tmp / "map.txt").write_text("m", encoding="utf-8")
    assert (out / "map.txt").exists()


# --- 5. an --out that cannot be replaced (a mount point) ---------------------------------------------
def test_a_mount_point_as_out_is_refused_before_the_work(case, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mnt"
    out.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == out or real(p))
    refused(dsc_argv(case, out), capsys, "mount point", "inside it")
    assert out.is_dir() and list(out.iterdir()) == [] and leftovers(tmp_path) == []


def test_a_folder_that_cannot_be_replaced_is_one_line_and_leaves_no_partial(case, tmp_path, capsys, monkeypatch):
    """A mount point that os.path.ismount does not see (a bind mount): rmdir fails with EBUSY."""
    out = tmp_path / "mnt"
    out.mkdir()
    real_rmdir = Path.rmdir

    def busy(self):
        if self == out:
            raise OSError(errno.EBUSY, "Device or resource busy", str(self))
        return real_rmdir(self)

    monkeypatch.setattr(Path, "rmdir", busy)
    refused(dsc_argv(case, out), capsys, "Device or resource busy", "inside it", "nothing was written")
    assert out.is_dir() and list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "mnt"]  # no partial folder, no lock


def test_a_failed_swap_puts_our_previous_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "res"
    with atomic_output_dir(out) as tmp:
        (tmp / "map.txt").write_text("first", encoding="utf-8")
    real_rename = Path.rename

    def fail_publish(self, target):
        if ".partial-" in self.name:
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", fail_publish)
    with pytest.raises(InputError, match="Input/output error"):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "map.txt").write_text("second", encoding="utf-8")
    assert (out / "map.txt").read_text(encoding="utf-8") == "first"
    assert outputs.foreign_entries(out) == [] and outputs.changed_entries(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


# --- 6. --overwrite never deletes what the user edited or put in place of our file --------------------
def test_the_manifest_records_each_files_size_and_sha256(tmp_path):
    out = tmp_path / "res"
    with atomic_output_dir(out) as tmp:
        (tmp / "map.txt").write_text("m", encoding="utf-8")
    entry = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["checksums"]["map.txt"]
    assert entry == {"size": 1, "sha256": hashlib.sha256(b"m").hexdigest()}


@pytest.mark.parametrize("edit", ["edit report.json", "replace cbf.nii.gz"])
def test_overwrite_refuses_a_file_the_user_changed(case, tmp_path, capsys, edit):
    out = tmp_path / "own"
    assert main(dsc_argv(case, out)) == 0
    if edit == "edit report.json":
        name, content = "report.json", b'{"the radiologist": "edited this"}\n'
    else:
        name, content = "cbf.nii.gz", case["mask"].read_bytes()  # the user's own file under our name
    (out / name).write_bytes(content)
    before = tree_hashes(out)
    refused(dsc_argv(case, out, "--overwrite"), capsys, name, "changed", "move")
    assert (out / name).read_bytes() == content and tree_hashes(out) == before
    assert leftovers(tmp_path) == []


def test_overwrite_still_replaces_an_unchanged_folder_and_one_with_an_old_manifest(tmp_path):
    out = tmp_path / "res"
    with atomic_output_dir(out) as tmp:
        (tmp / "map.txt").write_text("first", encoding="utf-8")
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "map.txt").write_text("second", encoding="utf-8")
    assert (out / "map.txt").read_text(encoding="utf-8") == "second"
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    del manifest["checksums"]  # as written before checksums were recorded: names only
    (out / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    (out / "map.txt").write_text("changed", encoding="utf-8")  # cannot be told from ours: replaced as before
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "map.txt").write_text("third", encoding="utf-8")
    assert (out / "map.txt").read_text(encoding="utf-8") == "third"


def test_an_output_folder_that_cannot_be_listed_is_one_line(tmp_path, monkeypatch):
    """A folder the user may not read (the tests run as root, so the permission error is simulated): we cannot tell
    what it holds, so it is refused with one line instead of a PermissionError traceback."""
    from pathlib import Path

    from BBBAnomalyLib.core import outputs
    from BBBAnomalyLib.core.errors import InputError

    out = tmp_path / "locked"
    out.mkdir()
    real = Path.iterdir

    def iterdir(self):
        if self == out:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(InputError, match="cannot look inside the output folder .*Permission denied"):
        outputs._check_destination(out, True, [])


def test_roi_stats_says_when_voxels_of_a_region_were_left_out(tmp_path, capsys):
    """NaN voxels are left out of the statistics (they are no values); the table now says how many, per region."""
    import nibabel as nib
    import numpy as np

    from BBBAnomalyLib.cli import main

    data = np.full((6, 6, 3), 2.0, np.float32)
    data[1, 1, 1] = np.nan
    data[2, 2, 1] = np.inf
    roi = np.zeros((6, 6, 3), np.uint8)
    roi[:3, :3, :] = 1
    ref = np.zeros_like(roi)
    ref[4:, 4:, :] = 1
    for name, arr in (("cbf", data), ("tumor", roi), ("nawm", ref)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / f"{name}.nii.gz")
    capsys.readouterr()
    assert main(["roi-stats", str(tmp_path / "cbf.nii.gz"), "--roi", str(tmp_path / "tumor.nii.gz"),
                 "--reference", str(tmp_path / "nawm.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "note: cbf: 2 of the roi voxels are NaN or infinite in the map and were left out" in out
    assert "reference voxels are NaN" not in out


def test_a_symbolic_link_as_out_is_said_once(tmp_path):
    from BBBAnomalyLib.core import outputs
    from BBBAnomalyLib.core.errors import InputError

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InputError) as err:
        outputs.claim_output_dir(tmp_path / "link")
    assert str(err.value).count("symbolic link") == 1 and "cannot be used" not in str(err.value)

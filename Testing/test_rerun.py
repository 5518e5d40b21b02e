"""The report records the effective configuration; `bbbanomaly rerun report.json` reproduces the run."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.cli import main


@pytest.fixture(scope="module")
def small_dsc(tmp_path_factory):
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    folder = tmp_path_factory.mktemp("rerun_dsc")
    make_dsc_phantom(snr=100, slices=3, seed=2).write(folder)
    return folder


@pytest.fixture(scope="module")
def first_run(small_dsc, tmp_path_factory):
    """A DSC run configured by a TOML file plus a flag, from another working folder."""
    out = tmp_path_factory.mktemp("first") / "maps"
    cfg = small_dsc / "run.json"
    cfg.write_text(json.dumps({"method": "csvd", "aif_mask": str(small_dsc / "mask_aif.nii.gz"),
                               "nawm_mask": str(small_dsc / "mask_nawm.nii.gz"), "kh": 1.0}))
    rc = main(["dsc", str(small_dsc / "signal.nii.gz"), "--config", str(cfg), "--density", "1",
               "--tumor-mask", str(small_dsc / "mask_tumor.nii.gz"), "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_report_records_the_exact_effective_configuration(first_run, small_dsc):
    conf = json.loads((first_run / "report.json").read_text())["configuration"]
    assert conf["command"] == ["dsc"]
    o = conf["options"]
    assert o["method"] == "csvd" and o["kh"] == 1.0 and o["density"] == 1.0  # file and flag
    assert o["oi_target"] == 0.095 and o["leakage_correction"] == "bsw"  # defaults too: every key
    assert o["series"] == str((small_dsc / "signal.nii.gz").resolve()) and o["out"] == str(first_run)
    assert "config" not in o and "run" not in o
    inputs = conf["inputs"]
    for name in ("signal.nii.gz", "signal.json", "mask_aif.nii.gz", "mask_nawm.nii.gz", "mask_tumor.nii.gz"):
        entry = inputs[str((small_dsc / name).resolve())]  # the sidecar counts: it holds TE and timing
        assert len(entry["sha256"]) == 64 and entry["size"] == (small_dsc / name).stat().st_size


def test_rerun_reproduces_the_maps(first_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["rerun", str(first_run / "report.json"), "--quiet"]) == 0
    again = tmp_path / "maps_rerun"  # default: <original name>_rerun in the current folder
    assert "rerunning `bbbanomaly dsc`" in capsys.readouterr().out
    for name in ("cbv", "cbf", "mtt", "rcbv", "k2"):
        a = np.asarray(nib.load(first_run / f"{name}.nii.gz").dataobj)
        b = np.asarray(nib.load(again / f"{name}.nii.gz").dataobj)
        assert np.array_equal(a, b, equal_nan=True), name
    old = json.loads((first_run / "report.json").read_text())
    new = json.loads((again / "report.json").read_text())
    assert new["configuration"]["options"] == {**old["configuration"]["options"], "out": str(again), "quiet": True}
    assert new["summary"] == old["summary"]
    # the rerun's own report reruns too (into a folder of our choice), and never over an existing one
    assert main(["rerun", str(again / "report.json"), "--out", str(again), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_rerun_refuses_a_changed_or_missing_input(first_run, small_dsc, tmp_path, capsys):
    copy = tmp_path / "inputs"
    shutil.copytree(small_dsc, copy)
    report = json.loads((first_run / "report.json").read_text())
    text = json.dumps(report).replace(str(small_dsc.resolve()), str(copy.resolve()))
    moved = tmp_path / "report.json"
    moved.write_text(text)
    sidecar = copy / "signal.json"
    original = sidecar.read_bytes()
    side = json.loads(original)
    side["EchoTime"] = 0.025  # a changed TE changes every map: must be refused
    sidecar.write_text(json.dumps(side))
    assert main(["rerun", str(moved), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "signal.json" in err and "changed" in err
    sidecar.write_bytes(original)
    (copy / "mask_aif.nii.gz").unlink()
    assert main(["rerun", str(moved), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mask_aif.nii.gz" in err and "missing" in err
    assert not (tmp_path / "x").exists()


def test_rerun_refuses_a_report_without_configuration(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"parameters": {}}))
    assert main(["rerun", str(report)]) == 2
    assert "no command configuration" in capsys.readouterr().err
    assert main(["rerun", str(tmp_path / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err

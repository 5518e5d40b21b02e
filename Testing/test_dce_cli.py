"""`bbbanomaly dce`, `bbbanomaly train dce-rls` (with torchrun) and `bbbanomaly demo --pipeline dce`:
end to end on a tiny reference object; exit status 2 and no output folder on bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.io import read_volume, write_volume
from BBBAnomalyLib.core.volume import Volume

MAPS = ("rls", "rls_abs", "rls_uncertainty", "ktrans", "ve", "vp", "kep", "delay", "fit_r2")


@pytest.fixture(scope="module")
def dce_files(tmp_path_factory):
    """Two tiny cases (4 slices) in the training layout; case0 is also the CLI input."""
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    root = tmp_path_factory.mktemp("dce_cases")
    for seed in (0, 1):
        make_dce_phantom(snr=40, slices=4, seed=seed).write(root / f"case{seed}")
    return root


def dce_args(case: Path, out: Path, *extra):
    return ["dce", str(case / "signal.nii.gz"), "--aif-mask", str(case / "mask_aif.nii.gz"),
            "--mask", str(case / "mask_brain.nii.gz"), "--out", str(out), "--quiet", *extra]


def test_dce_cli_end_to_end(dce_files, tmp_path, capsys):
    case = dce_files / "case0"
    out = tmp_path / "run"
    code = main(dce_args(case, out, "--tumor-mask", str(case / "mask_tumor.nii.gz"), "--t10", str(case / "truth_t10.nii.gz")))
    assert code == 0
    series = read_volume(case / "signal.nii.gz")
    written = {p.name for p in out.iterdir()}
    assert written == {f"{n}.nii.gz" for n in MAPS} | {"aif.csv", "aif_mask.nii.gz", "brain_mask.nii.gz", "report.json",
                                                       ".bbbanomaly.json"}
    for name in MAPS:
        vol = read_volume(out / f"{name}.nii.gz")
        assert vol.spatial_shape == series.spatial_shape and not vol.is_4d
        np.testing.assert_array_equal(vol.affine, series.affine)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["input"]["flip_angle_deg"] == 15.0 and report["input"]["tr_s"] == 0.005  # from the sidecar
    assert report["conversion"]["mode"] == "spgr"
    tumor_rls = report["summary"]["tumor"]["rls"]["mean"]
    assert tumor_rls > 5 * max(report["summary"]["non_tumor"]["rls"]["median"], 0.2)
    truth = read_volume(case / "truth_ktrans.nii.gz").data
    tumor = read_volume(case / "mask_tumor.nii.gz").data > 0
    assert np.mean(read_volume(out / "ktrans.nii.gz").data[tumor]) == pytest.approx(truth[tumor].mean(), rel=0.15)
    assert "written to" in capsys.readouterr().out


def test_dce_cli_nrrd_output_population_aif_and_scalar_t10(dce_files, tmp_path):
    case = dce_files / "case0"
    out = tmp_path / "nrrd"
    code = main(["dce", str(case / "signal.nii.gz"), "--mask", str(case / "mask_brain.nii.gz"), "--population-aif",
                 "parker", "--t10", "1.2", "--model", "tofts", "--rls", "none", "--format", "nrrd", "--out", str(out),
                 "--quiet"])
    assert code == 0
    assert {p.name for p in out.glob("*.nrrd")} == {f"{n}.nrrd" for n in ("ktrans", "ve", "kep", "delay", "fit_r2",
                                                                           "brain_mask")}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["aif"]["source"] == "parker" and report["parameters"]["t10"] == 1.2


@pytest.mark.parametrize("problem", ["3d", "mask_grid", "no_flip_angle", "times"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(dce_files, tmp_path, capsys, problem):
    case = dce_files / "case0"
    series = read_volume(case / "signal.nii.gz")
    out = tmp_path / "out"
    args = dce_args(case, out)
    if problem == "3d":
        write_volume(series.frame(3), tmp_path / "frame.nii.gz")
        args[1] = str(tmp_path / "frame.nii.gz")
    elif problem == "mask_grid":
        small = Volume(np.ones((5, 5, 4), np.uint8), series.affine)
        write_volume(small, tmp_path / "small.nii.gz")
        args[args.index("--mask") + 1] = str(tmp_path / "small.nii.gz")
    elif problem == "no_flip_angle":
        write_volume(Volume(series.data, series.affine, series.times), tmp_path / "bare.nii.gz")  # no sidecar values
        args[1] = str(tmp_path / "bare.nii.gz")
        args += ["--t10", "1.4"]
    else:
        times = series.times.copy()
        times[10] = times[9] - 1
        np.savetxt(tmp_path / "times.txt", times)
        args += ["--times", str(tmp_path / "times.txt")]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("bbbanomaly dce: error:") and "Traceback" not in err
    expected = {"3d": "3D", "mask_grid": "grid", "no_flip_angle": "--flip-angle", "times": "strictly"}[problem]
    assert expected in err
    assert not out.exists()


@pytest.mark.slow
def test_train_dce_rls_under_torchrun_with_two_processes(dce_files, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    assert torchrun, "torchrun is installed with torch"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    out = tmp_path / "weights"
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517", "-m", "BBBAnomalyLib",
                           "train", "dce-rls", str(dce_files), "--out", str(out), "--epochs", "2", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[:1500] + "\n...\n" + proc.stderr[-1500:]  # the cause is often early
    assert "2 process(es)" in proc.stderr
    card = json.loads((out / "dce-rls.json").read_text(encoding="utf-8"))
    assert card["training"]["processes"] == 2 and card["frames"] == 60
    from BBBAnomalyLib.weights import sha256

    assert card["sha256"] == sha256(out / "dce-rls.pt")
    # the cohort weights are usable by the pipeline
    run_out = tmp_path / "run"
    code = main(dce_args(dce_files / "case1", run_out, "--rls", "bundled", "--rls-weights", str(out / "dce-rls.pt")))
    assert code == 0
    report = json.loads((run_out / "report.json").read_text(encoding="utf-8"))
    assert report["rls"]["source"] == "bundled" and report["rls"]["frames"] == 60


def test_demo_dce_pipeline_only(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--pipeline", "dce", "--slices", "4", "--out", str(out), "--quiet"])
    assert code == 0
    assert (out / "dce" / "rls.nii.gz").exists() and (out / "dce_demo.png").exists()
    assert (out / "dce_input" / "signal.nii.gz").exists() and not (out / "dsc").exists()
    text = capsys.readouterr().out
    assert "AUC leaky vs non-leaky" in text

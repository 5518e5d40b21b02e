"""The `bbbanomaly` command: dsc, roi-stats, demo; exit status 2 and no output on bad input."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.io import read_volume, write_volume


def dsc_args(files, out, *extra):
    return ["dsc", str(files / "signal.nii.gz"), "--aif-mask", str(files / "mask_aif.nii.gz"),
            "--mask", str(files / "mask_brain.nii.gz"), "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def dsc_run(dsc_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(dsc_args(dsc_files, out, "--nawm-mask", str(dsc_files / "mask_nawm.nii.gz"),
                         "--tumor-mask", str(dsc_files / "mask_tumor.nii.gz"), "--kh", "1", "--density", "1"))
    assert code == 0
    return out


def test_dsc_writes_maps_on_the_input_grid_with_report_and_aif(dsc_run, dsc_files):
    series = read_volume(dsc_files / "signal.nii.gz")
    for name in ("cbv", "cbv_corrected", "cbf", "mtt", "tmax", "k2", "rcbv", "rcbf"):
        vol = read_volume(dsc_run / f"{name}.nii.gz")
        assert vol.spatial_shape == series.spatial_shape and not vol.is_4d
        np.testing.assert_array_equal(vol.affine, series.affine)
    report = json.loads((dsc_run / "report.json").read_text(encoding="utf-8"))
    assert report["parameters"]["method"] == "osvd"
    assert report["input"]["echo_time_s"] == pytest.approx(0.03)  # from the BIDS sidecar
    assert set(report["timings_s"]) >= {"conversion", "deconvolution", "maps"}
    assert report["versions"]["numpy"]
    assert 1.5 < report["summary"]["tumor_to_nawm"]["cbv_corrected"] < 10
    aif = np.loadtxt(dsc_run / "aif.csv", delimiter=",", skiprows=1)
    assert aif.shape == (series.n_frames, 2)
    np.testing.assert_allclose(aif[:, 0], series.times, atol=1e-3)
    assert aif[:, 1].max() > 20  # the arterial bolus
    assert read_volume(dsc_run / "aif_mask.nii.gz").data.sum() == report["aif"]["n_voxels"]
    written = {p.name for p in dsc_run.iterdir()}
    maps = {f"{n}.nii.gz" for n in ("cbv", "cbv_corrected", "cbf", "mtt", "tmax", "k2", "rcbv", "rcbf")}
    # Exactly the documented outputs (and the manifest that proves bbbanomaly wrote the folder):
    # no sidecar claiming an echo time for a map.
    assert written == maps | {"aif.csv", "aif_mask.nii.gz", "brain_mask.nii.gz", "report.json", ".bbbanomaly.json"}


def test_nrrd_input_gives_the_same_maps(dsc_run, dsc_files, tmp_path):
    series = read_volume(dsc_files / "signal.nii.gz")
    write_volume(series, tmp_path / "signal.seq.nrrd")
    for mask in ("aif", "brain", "nawm", "tumor"):
        write_volume(read_volume(dsc_files / f"mask_{mask}.nii.gz"), tmp_path / f"{mask}.nrrd")
    out = tmp_path / "out"
    code = main(["dsc", str(tmp_path / "signal.seq.nrrd"), "--aif-mask", str(tmp_path / "aif.nrrd"),
                 "--mask", str(tmp_path / "brain.nrrd"), "--nawm-mask", str(tmp_path / "nawm.nrrd"),
                 "--tumor-mask", str(tmp_path / "tumor.nrrd"), "--kh", "1", "--density", "1", "--out", str(out), "--quiet"])
    assert code == 0
    np.testing.assert_allclose(read_volume(out / "cbv.nii.gz").data, read_volume(dsc_run / "cbv.nii.gz").data,
                               rtol=1e-5, atol=1e-5)


def test_roi_stats_matches_the_maps(dsc_run, dsc_files, capsys):
    json_path = dsc_run.parent / "stats.json"
    code = main(["roi-stats", str(dsc_run / "cbv_corrected.nii.gz"), str(dsc_run / "cbf.nii.gz"),
                 "--roi", str(dsc_files / "mask_tumor.nii.gz"), "--reference", str(dsc_files / "mask_nawm.nii.gz"),
                 "--roi-name", "tumor", "--reference-name", "nawm", "--json", str(json_path)])
    assert code == 0
    table = capsys.readouterr().out
    assert "tumor/nawm" in table and "cbv_corrected" in table
    stats = json.loads(json_path.read_text(encoding="utf-8"))
    cbv = nib.load(dsc_run / "cbv_corrected.nii.gz").get_fdata()
    tumor = nib.load(dsc_files / "mask_tumor.nii.gz").get_fdata() > 0
    nawm = nib.load(dsc_files / "mask_nawm.nii.gz").get_fdata() > 0
    entry = stats["maps"]["cbv_corrected"]
    assert entry["tumor"]["mean"] == pytest.approx(cbv[tumor].mean(), rel=1e-6)
    assert entry["nawm"]["median"] == pytest.approx(np.median(cbv[nawm]), rel=1e-6)
    assert entry["tumor"]["sd"] == pytest.approx(cbv[tumor].std(ddof=1), rel=1e-5)
    assert entry["ratio_mean"] == pytest.approx(cbv[tumor].mean() / cbv[nawm].mean(), rel=1e-6)
    voxel_ml = abs(np.linalg.det(nib.load(dsc_files / "mask_tumor.nii.gz").affine[:3, :3])) / 1000
    assert entry["tumor"]["volume_ml"] == pytest.approx(tumor.sum() * voxel_ml)
    # The pipeline's own report agrees with roi-stats.
    report = json.loads((dsc_run / "report.json").read_text(encoding="utf-8"))
    assert report["summary"]["tumor"]["cbv_corrected"]["mean"] == pytest.approx(entry["tumor"]["mean"], rel=1e-5)


def test_default_output_folder_is_named_after_the_input(dsc_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = dsc_args(dsc_files, "unused", "--method", "csvd")
    del args[args.index("--out"):args.index("--out") + 2]
    assert main(args) == 0
    assert (tmp_path / "signal_dsc" / "cbf.nii.gz").exists()


# --- bad input: exit status 2, a clear message, and no output folder -----------------------------
def _write_like(series, data, path, affine=None):
    nib.save(nib.Nifti1Image(data, series.affine if affine is None else affine), path)
    return path


@pytest.mark.parametrize("case, message", [
    ("3d", "3D"), ("mask_grid", "not on the input's voxel grid"), ("empty_aif", "empty"),
    ("aif_outside", "no signal|no contrast bolus"), ("nan", "NaN"), ("zero_baseline", "zero baseline"),
    ("few_frames", "at least 10"), ("no_te", "TE"), ("missing_file", "not found"), ("both_timings", "not both"),
])
def test_bad_input_exits_2_with_a_message_and_no_output(dsc_files, tmp_path, capsys, case, message):
    series = read_volume(dsc_files / "signal.nii.gz")
    brain = nib.load(dsc_files / "mask_brain.nii.gz").get_fdata() > 0
    data = series.data.copy()
    args = dsc_args(dsc_files, tmp_path / "out")
    sig = tmp_path / "bad.nii.gz"
    if case == "3d":
        args[1] = str(_write_like(series, data[..., 0], sig))
    elif case == "mask_grid":
        shifted = series.affine.copy()
        shifted[:3, 3] += 5.0
        args[3] = str(_write_like(series, nib.load(dsc_files / "mask_aif.nii.gz").get_fdata(), tmp_path / "m.nii.gz", shifted))
    elif case == "empty_aif":
        args[3] = str(_write_like(series, np.zeros(series.spatial_shape, np.uint8), tmp_path / "m.nii.gz"))
    elif case == "aif_outside":
        m = np.zeros(series.spatial_shape, np.uint8)
        m[:2, :2, :] = 1  # a corner of the field of view, outside the head
        args[3] = str(_write_like(series, m, tmp_path / "m.nii.gz"))
    elif case in ("nan", "zero_baseline"):
        idx = tuple(np.argwhere(brain)[:3].T)
        data[idx] = np.nan if case == "nan" else 0.0
        args[1] = str(_write_like(series, data, sig))
        args += ["--te", "0.03", "--frame-interval", "1.5"]
    elif case == "few_frames":
        args[1] = str(_write_like(series, data[..., :8], sig))
        args += ["--te", "0.03", "--frame-interval", "1.5"]
    elif case == "no_te":
        args[1] = str(_write_like(series, data, sig))  # no sidecar: TE unknown
        args += ["--frame-interval", "1.5"]
    elif case == "missing_file":
        args[1] = str(tmp_path / "nope.nii.gz")
    elif case == "both_timings":
        args += ["--times", str(tmp_path / "t.txt"), "--frame-interval", "1.5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    import re
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_existing_output_needs_overwrite_and_overwrite_never_deletes_what_we_did_not_write(dsc_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(dsc_args(dsc_files, out, "--method", "ssvd")) == 2
    assert main(dsc_args(dsc_files, out, "--method", "ssvd", "--overwrite")) == 2  # not a folder we wrote
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    assert main(dsc_args(dsc_files, out, "--method", "ssvd")) == 0  # an empty folder is fine
    assert main(dsc_args(dsc_files, out, "--method", "ssvd", "--overwrite")) == 0  # ours: replaced
    assert (out / "cbf.nii.gz").exists()


def test_module_entry_point_and_help():
    proc = subprocess.run([sys.executable, "-m", "BBBAnomalyLib", "dsc", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("--aif-mask", "osvd", "tikhonov", "--kh", "--leakage-correction", "example"):
        assert word in proc.stdout


def test_demo_writes_maps_figure_and_inputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--pipeline", "dsc", "--out", str(out), "--slices", "6", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "dsc_demo.png" in printed
    png = (out / "dsc_demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    assert (out / "dsc" / "cbv_corrected.nii.gz").exists() and (out / "input" / "signal.nii.gz").exists()
    assert (out / "input" / "truth_cbv.nii.gz").exists()

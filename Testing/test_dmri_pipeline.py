"""The diffusion anomaly pipeline on a phantom patient with the bundled weights (run_dmri, DMRIResult)."""

import dataclasses

import numpy as np
import pytest

from BBBAnomalyLib.dmri import DMRIParameters, MAP_INFO, run_dmri
from BBBAnomalyLib.core.errors import CancelledError, InputError
from BBBAnomalyLib.metrics import roc_auc
from BBBAnomalyLib.core.volume import Acquisition, Volume


@pytest.fixture(scope="module")
def patient():
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    return make_dmri_phantom(1001, voxel_mm=3.0, n_directions=48, snr=30.0, tumor=True)


@pytest.fixture(scope="module")
def vae_result(patient):
    m = patient.masks
    return run_dmri(patient.dwi, DMRIParameters(model="vae", threshold="otsu", device="cpu"), brain_mask=m["brain"],
                    nawm_mask=m["nawm"], tumor_mask=m["tumor"])


def test_maps_are_on_the_input_grid_and_report_is_complete(patient, vae_result):
    r = vae_result
    assert list(r.maps)[:2] == ["anomaly", "anomaly_mask"] and set(r.maps) <= set(MAP_INFO)
    for vol in r.maps.values():
        assert vol.data.shape == patient.dwi.spatial_shape
        assert np.array_equal(vol.affine, patient.dwi.affine)
    anomaly = r.maps["anomaly"].data
    assert np.isfinite(anomaly).all() and anomaly.min() >= 0
    assert not anomaly[~r.brain_mask].any()
    assert set(np.unique(r.maps["anomaly_mask"].data)) <= {0, 1}
    rep = r.report
    assert rep["pipeline"] == "dmri" and rep["parameters"]["model"] == "vae"
    assert {"versions", "summary", "timings_s", "warnings", "threshold", "model"} <= set(rep)
    assert rep["model"]["weights"] == "dmri-vae-phantom" and len(rep["model"]["weights_sha256"]) == 64
    assert rep["threshold"]["label_free"] and rep["threshold"]["value"] > 0
    assert rep["input"]["unique_directions"] == 48 and rep["input"]["sh_order"] == 6


def test_vae_finds_the_tumor(patient, vae_result):
    s = vae_result.report["summary"]
    # measured with the bundled weights: tumor/NAWM 2.2, AUC 0.74, Dice 0.40 (a random score: 1, 0.5, ~0)
    assert s["tumor_to_nawm"] > 1.5
    region = patient.masks["gm_wm"] & vae_result.brain_mask
    assert roc_auc(patient.masks["tumor"][region], vae_result.maps["anomaly"].data[region]) > 0.65
    assert s["tumor_overlap"]["dice"] > 0.25


@pytest.mark.parametrize("threshold", ["otsu", "meanpool"])
def test_recdisc_with_label_free_thresholds(patient, threshold):
    m = patient.masks
    r = run_dmri(patient.dwi, DMRIParameters(model="recdisc", threshold=threshold, device="cpu"),
                 brain_mask=m["brain"], tumor_mask=m["tumor"])
    a = r.maps["anomaly"].data
    assert a.max() <= 1.0 and a.min() >= 0.0  # a probability
    assert r.report["threshold"]["method"] == threshold
    # measured with the bundled weights: AUC 0.98, Dice 0.66 (otsu) and 0.69 (meanpool)
    assert r.report["summary"]["tumor_overlap"]["voxel_auc"] > 0.9
    assert r.report["summary"]["tumor_overlap"]["dice"] > 0.5
    flagged = r.maps["anomaly_mask"].data.astype(bool)
    assert (flagged & m["tumor"]).sum() > (flagged & ~m["tumor"]).sum()  # most flagged voxels are tumor


def test_inputs_are_not_modified(patient):
    dwi = patient.dwi
    before = dwi.data.copy(), dwi.acquisition.bvals.copy(), dwi.acquisition.bvecs.copy(), dwi.affine.copy()
    brain = patient.masks["brain"].copy()
    params = DMRIParameters(model="vae", device="cpu")
    run_dmri(dwi, params, brain_mask=brain)
    assert np.array_equal(dwi.data, before[0]) and np.array_equal(dwi.acquisition.bvals, before[1])
    assert np.array_equal(dwi.acquisition.bvecs, before[2]) and np.array_equal(dwi.affine, before[3])
    assert np.array_equal(brain, patient.masks["brain"]) and params.weights is None


def test_write_nifti_and_nrrd_all_or_nothing(vae_result, patient, tmp_path):
    from BBBAnomalyLib.io import read_volume

    out = vae_result.write(tmp_path / "run")
    names = sorted(p.name for p in out.iterdir())
    assert names == [".bbbanomaly.json", "anomaly.nii.gz", "anomaly_mask.nii.gz", "brain_mask.nii.gz",
                     "mean_attenuation.nii.gz", "report.json"]
    back = read_volume(out / "anomaly.nii.gz")
    assert np.allclose(back.affine, patient.dwi.affine, atol=1e-4)
    assert np.allclose(back.data, vae_result.maps["anomaly"].data, atol=1e-6)
    with pytest.raises(InputError, match="--overwrite"):
        vae_result.write(out)
    nrrd = vae_result.write(tmp_path / "nrrd", suffix=".nrrd")
    assert (nrrd / "anomaly_mask.nrrd").is_file()
    assert np.array_equal(read_volume(nrrd / "anomaly.nrrd").affine, patient.dwi.affine)


def test_curves_show_measured_and_reconstructed_attenuation(vae_result, patient):
    curves = vae_result.curves()
    assert curves.times.tolist() == list(range(64)) and "S/S0" in curves.unit
    assert curves.measured.shape == (int(vae_result.brain_mask.sum()), 64)
    (label, recon), = curves.fitted.items()
    assert "VAE" in label and recon.shape == curves.measured.shape
    tumor, nawm = curves.mean(patient.masks["tumor"]), curves.mean(patient.masks["nawm"])
    gap = {k: np.sqrt(np.mean((v["measured"] - v[label]) ** 2)) for k, v in (("tumor", tumor), ("nawm", nawm))}
    assert gap["tumor"] > 1.2 * gap["nawm"]  # the model reproduces healthy attenuation better (0.085 vs 0.058)


def test_cancel_stops_the_run(patient):
    def cancel(fraction, message):
        if fraction >= 0.5:
            raise CancelledError("stop")

    with pytest.raises(CancelledError):
        run_dmri(patient.dwi, DMRIParameters(device="cpu"), brain_mask=patient.masks["brain"], progress=cancel)


def test_fewer_directions_and_fsl_frame_give_the_same_map(patient, vae_result):
    from BBBAnomalyLib.dmri.gradients import to_fsl

    dwi = patient.dwi
    fsl = Volume(dwi.data, dwi.affine, None, dataclasses.replace(
        dwi.acquisition, bvecs=to_fsl(dwi.acquisition.bvecs, dwi.affine)))
    same = run_dmri(fsl, DMRIParameters(model="vae", threshold="otsu", device="cpu", gradient_frame="fsl"),
                    brain_mask=patient.masks["brain"])
    assert np.allclose(same.maps["anomaly"].data, vae_result.maps["anomaly"].data, atol=1e-4)
    keep = np.r_[0, np.arange(1, 49, 2), 48]  # b0 + 25 of the 48 directions
    sub = Volume(dwi.data[..., keep], dwi.affine, None, dataclasses.replace(
        dwi.acquisition, bvals=dwi.acquisition.bvals[keep], bvecs=dwi.acquisition.bvecs[keep]))
    r = run_dmri(sub, DMRIParameters(model="vae", device="cpu"), brain_mask=patient.masks["brain"],
                 tumor_mask=patient.masks["tumor"])
    assert r.report["input"]["unique_directions"] == 25 and r.report["input"]["sh_order"] == 4
    assert r.report["summary"]["tumor_overlap"]["voxel_auc"] > 0.65


def test_bad_inputs_are_refused_with_the_fix(patient):
    dwi = patient.dwi
    with pytest.raises(InputError, match="3D"):
        run_dmri(dwi.frame(0))
    with pytest.raises(InputError, match="--bval"):
        run_dmri(Volume(dwi.data, dwi.affine))
    wrong = Volume(dwi.data, dwi.affine, None, Acquisition(bvals=dwi.acquisition.bvals[:-1],
                                                           bvecs=dwi.acquisition.bvecs[:-1]))
    with pytest.raises(InputError, match="must match"):
        run_dmri(wrong)
    with pytest.raises(InputError, match="grid"):
        run_dmri(dwi, brain_mask=np.ones((4, 4, 4), bool))
    with pytest.raises(InputError, match="vae, recdisc|not a valid|Model"):
        DMRIParameters(model="unet")
    with pytest.raises(InputError, match="threshold fixed"):
        DMRIParameters(threshold="otsu", threshold_value=0.2)


def test_demo_writes_input_maps_and_figures(tmp_path, capsys):
    from BBBAnomalyLib.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--pipeline", "dmri", "--out", str(out), "--quiet"]) == 0
    for name in ("dmri_input/dwi.nii.gz", "dmri_input/dwi.bvec", "dmri_input/mask_tumor.nii.gz",
                 "dmri/anomaly.nii.gz", "dmri/report.json", "dmri_demo.png", "dmri_demo_curves.png"):
        assert (out / name).is_file(), name
    text = capsys.readouterr().out
    assert "vs the tumor mask given" in text and "simulated tumor" in text


def test_nrrd_exchange_keeps_ras_gradients(patient, vae_result, tmp_path):
    """The Slicer worker receives the DWI node as NRRD with RAS gradients in its acquisition field."""
    from BBBAnomalyLib.io import read_volume, write_volume

    path = write_volume(patient.dwi, tmp_path / "dwi.nrrd")
    back = read_volume(path)
    assert np.allclose(back.acquisition.bvecs, patient.dwi.acquisition.bvecs)
    assert np.allclose(back.acquisition.bvals, patient.dwi.acquisition.bvals)
    m = patient.masks
    r = run_dmri(back, DMRIParameters(model="vae", threshold="otsu", device="cpu"), brain_mask=m["brain"])
    assert np.allclose(r.maps["anomaly"].data, vae_result.maps["anomaly"].data, atol=1e-5)

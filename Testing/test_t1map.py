"""T1 mapping: the OSIPI in vivo brain VFA reference (first check), the SPGR physics with a B1 map,
`bbbanomaly t1map` (4D and 3D+sidecar inputs, complete-or-absent output, one-line errors) and
`bbbanomaly dce --vfa` (the VFA series becomes the T10 map)."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.t1map.vfa import fit_vfa_linear, fit_vfa_nonlinear, spgr_signal

DATA = Path(__file__).parent / "Data" / "osipi"


def _brain_rows():
    with open(DATA / "t1_brain_data.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    series = lambda r, k: np.array(r[k].split(), float)  # noqa: E731
    return ([r["label"] for r in rows], np.stack([series(r, "FA") for r in rows]),
            np.array([series(r, "TR")[0] for r in rows]), np.stack([series(r, "s") for r in rows]),
            np.array([float(r["R1"]) for r in rows]), np.array([float(r["s0"]) for r in rows]))


def test_osipi_brain_reference():
    """All 76 in vivo voxels (WM, GM, CSF; 2/5/12 deg, TR 5.4 ms) within OSIPI's tolerance (0.05 /s + 5 %)
    for both fits; the nonlinear fit reproduces the reference R1 and S0, which OSIPI computed by
    nonlinear least squares, to their printed precision (5 significant digits)."""
    labels, fa, tr, s, r1_ref, s0_ref = _brain_rows()
    assert len(labels) == 76 and np.all(tr == tr[0])
    for fit in (fit_vfa_linear, fit_vfa_nonlinear):
        m0, r1 = fit(s, fa, tr[0])
        np.testing.assert_allclose(r1, r1_ref, rtol=0.05, atol=0.05, err_msg=fit.__name__)
    m0, r1 = fit_vfa_nonlinear(s, fa, tr[0])
    np.testing.assert_allclose(r1, r1_ref, rtol=2e-4)
    np.testing.assert_allclose(m0, s0_ref, rtol=2e-4)


def test_noise_free_spgr_with_b1():
    """Exact signals with a 20 % flip-angle error: with the B1 map both fits are exact; without it
    T1 is badly biased (the reason for --b1)."""
    rng = np.random.default_rng(0)
    t1 = rng.uniform(0.3, 4.0, 200)
    m0 = rng.uniform(500, 2000, 200)
    nominal = np.array([2.0, 5.0, 10.0, 15.0])
    b1 = rng.uniform(0.8, 1.2, 200)
    s = spgr_signal(m0, 1 / t1, nominal[None] * b1[:, None], 0.005)
    for fit in (fit_vfa_linear, fit_vfa_nonlinear):
        est_m0, est_r1 = fit(s, nominal[None] * b1[:, None], 0.005)
        np.testing.assert_allclose(1 / est_r1, t1, rtol=1e-6)
        np.testing.assert_allclose(est_m0, m0, rtol=1e-6)
    _, biased = fit_vfa_nonlinear(s, nominal, 0.005)
    assert np.median(np.abs(t1 * biased - 1)) > 0.1


def test_nonlinear_is_less_biased_at_low_snr():
    """Noise 1 % of the largest signal: the unweighted DESPOT1 line is biased (noise in S/tan α at large
    angles), least squares on the signal much less (median over 4000 voxels, T1 = 1.2 s)."""
    rng = np.random.default_rng(1)
    fa = np.array([2.0, 5.0, 12.0, 20.0])
    s = spgr_signal(np.full(4000, 1000.0), np.full(4000, 1 / 1.2), fa, 0.005)
    s = s + 0.01 * s.max() * rng.standard_normal(s.shape)
    lin = np.nanmedian(1 / fit_vfa_linear(s, fa, 0.005)[1])
    nonlin = np.nanmedian(1 / fit_vfa_nonlinear(s, fa, 0.005)[1])
    assert abs(nonlin / 1.2 - 1) < 0.02
    assert abs(nonlin / 1.2 - 1) <= abs(lin / 1.2 - 1) + 0.005


def _write(path, data, sidecar=None):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    if sidecar is not None:
        Path(str(path).replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))


@pytest.fixture()
def vfa_files(tmp_path):
    rng = np.random.default_rng(2)
    t1 = rng.uniform(0.8, 2.0, (5, 4, 3))
    angles = [2.0, 5.0, 15.0]
    s = spgr_signal(np.full(t1.size, 1000.0), 1 / t1.ravel(), angles, 0.0054).reshape(t1.shape + (3,))
    paths = []
    for k, a in enumerate(angles):
        paths.append(tmp_path / f"fa{int(a):02d}.nii.gz")
        _write(paths[-1], s[..., k], {"FlipAngle": a, "RepetitionTime": 0.0054})
    _write(tmp_path / "vfa4d.nii.gz", s)
    return tmp_path, t1, paths


def test_t1map_command_3d_files_with_sidecars(vfa_files):
    tmp, t1, paths = vfa_files
    out = tmp / "t1"
    assert main(["t1map", *map(str, paths), "--out", str(out), "--quiet"]) == 0
    np.testing.assert_allclose(nib.load(out / "t1.nii.gz").get_fdata(), t1, rtol=1e-5)
    np.testing.assert_allclose(nib.load(out / "r1.nii.gz").get_fdata(), 1 / t1, rtol=1e-5)
    np.testing.assert_allclose(nib.load(out / "m0.nii.gz").get_fdata(), 1000.0, rtol=1e-5)
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["flip_angles_deg"] == [2.0, 5.0, 15.0] and report["input"]["tr_s"] == 0.0054


def test_t1map_command_4d_needs_flip_angles(vfa_files, capsys):
    tmp, t1, _ = vfa_files
    out = tmp / "t1_4d"
    assert main(["t1map", str(tmp / "vfa4d.nii.gz"), "--tr", "0.0054", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--flip-angles" in err[0]
    assert not out.exists()  # nothing written on an error
    assert main(["t1map", str(tmp / "vfa4d.nii.gz"), "--tr", "0.0054", "--flip-angles", "2", "5", "15",
                 "--method", "linear", "--out", str(out), "--quiet"]) == 0
    np.testing.assert_allclose(nib.load(out / "t1.nii.gz").get_fdata(), t1, rtol=1e-5)


def test_dce_takes_the_vfa_series(tmp_path):
    """`bbbanomaly dce --vfa` on the DCE reference object: the VFA-derived T10 map gives the same
    Ktrans as the true T10 map (noise-free VFA at the phantom's T10)."""
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    ph = make_dce_phantom(snr=40, slices=3, seed=5)
    ph.write(tmp_path / "ph")
    affine = nib.load(tmp_path / "ph" / "signal.nii.gz").affine
    t10 = ph.truth["t10"].data
    brain = ph.masks["brain"]
    t10_safe = np.where(t10 > 0, t10, 1.0)
    angles = [2.0, 5.0, 15.0]
    s = spgr_signal(np.full(t10.size, 1000.0), 1 / t10_safe.ravel(), angles, 0.005).reshape(t10.shape + (3,))
    nib.save(nib.Nifti1Image(s.astype(np.float32), affine), tmp_path / "vfa.nii.gz")
    nib.save(nib.Nifti1Image(t10_safe.astype(np.float32), affine), tmp_path / "t10.nii.gz")
    common = [str(tmp_path / "ph" / "signal.nii.gz"), "--aif-mask", str(tmp_path / "ph" / "mask_aif.nii.gz"),
              "--mask", str(tmp_path / "ph" / "mask_brain.nii.gz"), "--rls", "none", "--quiet"]
    assert main(["dce", *common, "--vfa", str(tmp_path / "vfa.nii.gz"), "--vfa-flip-angles", "2", "5", "15",
                 "--vfa-tr", "0.005", "--out", str(tmp_path / "with_vfa")]) == 0
    assert main(["dce", *common, "--t10", str(tmp_path / "t10.nii.gz"), "--out", str(tmp_path / "with_t10")]) == 0
    a = nib.load(tmp_path / "with_vfa" / "ktrans.nii.gz").get_fdata()[brain]
    b = nib.load(tmp_path / "with_t10" / "ktrans.nii.gz").get_fdata()[brain]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    report = json.loads((tmp_path / "with_vfa" / "report.json").read_text())
    assert report["t10_from_vfa"]["flip_angles_deg"] == angles


def test_dce_population_aif_names_match_the_registry():
    from BBBAnomalyLib.dce.command import POPULATION_AIF_NAMES
    from BBBAnomalyLib.perfusion.population_aif import POPULATION_AIFS

    assert POPULATION_AIF_NAMES == list(POPULATION_AIFS)


def test_t1map_output_reruns_and_dce_refuses_a_vfa_that_does_not_overlap(vfa_files, capsys):
    tmp, t1, paths = vfa_files
    assert main(["t1map", *map(str, paths), "--out", str(tmp / "first"), "--quiet"]) == 0
    assert main(["rerun", str(tmp / "first" / "report.json"), "--out", str(tmp / "again")]) == 0
    np.testing.assert_array_equal(nib.load(tmp / "again" / "t1.nii.gz").get_fdata(),
                                  nib.load(tmp / "first" / "t1.nii.gz").get_fdata())
    capsys.readouterr()
    series = np.ones((6, 4, 3, 10), np.float32)  # a DCE series far from the VFA files (another patient's?)
    series[..., 5:] = 2.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = 500.0
    nib.save(nib.Nifti1Image(series, affine), tmp / "dce.nii.gz")
    assert main(["dce", str(tmp / "dce.nii.gz"), "--frame-interval", "5", "--flip-angle", "15", "--tr", "0.005",
                 "--vfa", *map(str, paths), "--rls", "none", "--out", str(tmp / "dce_out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not overlap the DCE series" in err[0]
    assert not (tmp / "dce_out").exists()


def test_dce_t10_from_vfa_takes_a_b1_map_that_is_zero_outside_the_head(tmp_path):
    """A real B1 map is 0 outside the head. The T10 fit for DCE covers the voxels with signal, so such a map is
    taken (it used to be refused for every voxel of the volume) and the background gets the median T10."""
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.t1map.pipeline import t10_map_from_vfa

    head = np.zeros((6, 5, 4), bool)
    head[1:5, 1:4, 1:3] = True
    t1 = np.where(head, 1.3, 1.0)
    angles, tr = [2.0, 5.0, 15.0], 0.0054
    # simulated with 0.9 x the nominal angles, which the B1 map says: T10 comes back exact
    s = spgr_signal(np.where(head, 1000.0, 0.0).ravel(), 1 / t1.ravel(), np.array(angles) * 0.9, tr)
    s = s.reshape(head.shape + (3,))
    paths = []
    for k, a in enumerate(angles):
        paths.append(str(tmp_path / f"fa{k}.nii.gz"))
        _write(paths[-1], s[..., k], {"FlipAngle": a, "RepetitionTime": tr})
    _write(tmp_path / "b1.nii.gz", np.where(head, 0.9, 0.0))
    series = Volume(np.zeros(head.shape + (4,), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    t10, info = t10_map_from_vfa(paths, series, b1_path=str(tmp_path / "b1.nii.gz"))
    np.testing.assert_allclose(t10.data[head], 1.3, rtol=1e-4)
    np.testing.assert_allclose(t10.data[~head], 1.3, rtol=1e-4)  # the median of the fitted voxels
    assert info["b1_map"] and info["voxels_filled_with_median"] == int((~head).sum())

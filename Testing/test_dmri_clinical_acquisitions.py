"""`bbbanomaly dmri` on the DWI a glioma clinic actually has (session 23; /work/notes/s23/dmri_clinical.md).

The usual clinical DWI is a 3-direction ("3-scan trace") acquisition at b = 0/1000, exported as its three directions
or as the b0 and the trace-weighted image only, with the scanner's ADC map. None can give the anomaly map (the models
read the signal's direction dependence, >= 6 directions): each is refused with one line saying what it is and what
to do instead. A trace-weighted volume whose b-value was lost (bval 0, or a zero DWMRI gradient, which NRRD reads as
b = 0) was averaged into S0 as a b0: RecDiscNet's anomaly volume fell from 52 to 1.3 ml on the phantom patient (only
the diffusivity check's warning, guessing a scaled b0); it is now left out of S0, and the map is that of the series
without it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bad_input_helpers import assert_refused, save_nifti
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Acquisition, Volume
from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
from BBBAnomalyLib.dmri.gradients import canonical_directions, select_shell
from BBBAnomalyLib.dmri.preprocessing import ModelInput, prepare

AFFINE = np.diag([-2.0, 2.0, 2.0, 1.0])
#: what every clinical refusal must offer instead (the project has no ADC-only anomaly method)
ALTERNATIVES = ("DTI series", "6 or more directions", "ADC map", "bbbanomaly t1flair")


def _tensor_series(directions, bvals_dw, shape=(12, 12, 8), seed=0):
    """(4D data, bvals, RAS bvecs): a b0 and one volume per direction of random tensors inside a box, background 0."""
    rng = np.random.default_rng(seed)
    directions = np.asarray(directions, float)
    n = int(np.prod(shape))
    rot = np.linalg.qr(rng.standard_normal((n, 3, 3)))[0]
    tensors = np.einsum("nij,nj,nkj->nik", rot, rng.uniform(0.3e-3, 1.7e-3, (n, 3)), rot)
    bvals = np.r_[0.0, np.asarray(bvals_dw, float)]
    bvecs = np.r_[np.zeros((1, 3)), directions]
    signal = 500.0 * np.exp(-bvals[1:, None] * np.einsum("ki,nij,kj->kn", directions, tensors, directions)).T
    data = np.concatenate([np.full((n, 1), 500.0), signal], 1).reshape(shape + (-1,)).astype(np.float32)
    inside = np.zeros(shape, bool)
    inside[2:-2, 2:-2, 1:-1] = True
    data[~inside] = 0.0
    return data, bvals, bvecs


def _write(folder, data, bvals, bvecs_fsl, bvec=True):
    folder.mkdir(parents=True, exist_ok=True)
    series = save_nifti(folder / "dwi.nii.gz", data, AFFINE)
    np.savetxt(folder / "dwi.bval", np.asarray(bvals)[None], fmt="%g")
    if bvec:
        np.savetxt(folder / "dwi.bvec", np.asarray(bvecs_fsl).T, fmt="%.6f")
    return series


def _refused(tmp_path, capsys, series, *keywords, extra=()):
    out = tmp_path / "out"
    return assert_refused(["dmri", str(series), "--out", str(out), "--device", "cpu", *extra], capsys,
                          series.parent, out, keywords)


def _fsl(bvecs_ras):
    from BBBAnomalyLib.dmri.gradients import to_fsl

    return to_fsl(bvecs_ras, AFFINE)


@pytest.mark.parametrize("b_values", [(1000.0,), (500.0, 1000.0)], ids=["b0_1000", "b0_500_1000"])
def test_a_three_direction_trace_dwi_is_refused_saying_what_it_is_and_what_instead(tmp_path, capsys, b_values):
    """b0 + x/y/z at each b (the 3-scan trace protocol): one line naming the 3 directions and the alternatives (it
    said only "3 unique gradient directions; at least 6 are needed")."""
    xyz = np.eye(3)
    directions = np.concatenate([xyz] * len(b_values))
    data, bvals, bvecs = _tensor_series(directions, np.repeat(b_values, 3))
    series = _write(tmp_path / "in", data, bvals, _fsl(bvecs))
    line = _refused(tmp_path, capsys, series, "3 unique gradient directions", "3-direction", *ALTERNATIVES)
    assert "\n" not in line


def test_a_b0_plus_trace_only_series_is_refused_as_such(tmp_path, capsys):
    """b0 + the trace-weighted image (bvec 0 at b = 1000, how converters write it): it said "check the bvec file (a
    b0 must have b below the b0 threshold)", which sends the user after a table that is right."""
    data, bvals, bvecs = _tensor_series(np.eye(3), np.full(3, 1000.0))
    trace = np.exp(np.log(np.maximum(data[..., 1:], 1e-6)).mean(-1))
    series = _write(tmp_path / "in", np.stack([data[..., 0], trace], -1), [0.0, 1000.0], np.zeros((2, 3)))
    line = _refused(tmp_path, capsys, series, "trace-weighted", "zero or NaN gradient direction", *ALTERNATIVES)
    assert "a b0 must have b below" not in line


def test_a_b0_plus_trace_series_with_a_bval_and_no_bvec_is_refused_as_such(tmp_path, capsys):
    """Only a bval file (a b0 + trace export has no directions to write): no --bvec could make it usable, so the
    line says what the series is instead of "give both --bval and --bvec"."""
    data, _, _ = _tensor_series(np.eye(3), np.full(3, 1000.0))
    series = _write(tmp_path / "in", data[..., :2], [0.0, 1000.0], None, bvec=False)
    _refused(tmp_path, capsys, series, "1 diffusion-weighted volume", *ALTERNATIVES,
             extra=("--bval", str(tmp_path / "in" / "dwi.bval")))
    # the same through the table beside the image (read with the image, no --bval)
    _refused(tmp_path, capsys, series, "1 diffusion-weighted volume", *ALTERNATIVES)
    # the Python API: b-values without directions
    with pytest.raises(InputError, match="1 diffusion-weighted volume.*bbbanomaly t1flair"):
        select_shell(np.r_[0.0, 1000.0], None, target_b=1000.0, b0_threshold=150.0, tolerance=0.3, min_directions=6)


def test_the_scanners_adc_map_given_as_the_dwi_is_refused_naming_it(tmp_path, capsys):
    data, _, _ = _tensor_series(np.eye(3), np.full(3, 1000.0))
    folder = tmp_path / "in"
    folder.mkdir()
    adc = save_nifti(folder / "adc.nii.gz", (data[..., 1] / 500.0).astype(np.float32), AFFINE)
    _refused(tmp_path, capsys, adc, "is 3D", "ADC", "6 or more gradient directions")
    with pytest.raises(InputError, match="is 3D.*ADC or trace-weighted map"):
        run_dmri(Volume(data[..., 1], AFFINE), DMRIParameters(device="cpu"))


def test_a_table_written_for_another_export_of_the_series_is_refused_with_the_fix(tmp_path, capsys):
    """A bval/bvec with one more entry than volumes (written for the export that kept the trace image), given with
    --bval/--bvec: the line says to use the table written with this image."""
    data, bvals, bvecs = _tensor_series(canonical_directions(12), np.full(12, 1000.0))
    folder = tmp_path / "in"
    folder.mkdir()
    series = save_nifti(folder / "series.nii.gz", data, AFFINE)  # no table beside it
    np.savetxt(folder / "other.bval", np.r_[bvals, 1000.0][None], fmt="%g")
    np.savetxt(folder / "other.bvec", np.c_[_fsl(bvecs).T, np.zeros(3)], fmt="%.6f")
    _refused(tmp_path, capsys, series, "14 b-values", "13 volumes", "written with this very image", "trace-weighted",
             extra=("--bval", str(folder / "other.bval"), "--bvec", str(folder / "other.bvec")))


def _small_patient():
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    return make_dmri_phantom(1000, voxel_mm=4.0, n_directions=32, snr=30.0, tumor=True)


@pytest.fixture(scope="module")
def patient():
    return _small_patient()


def _with_trace_as_b0(dwi: Volume, first: bool = False) -> Volume:
    """The series with its trace-weighted image (geometric mean of the DW volumes, Siemens' TRACEW) stored with
    b = 0 and a zero vector: what an FSL table with a lost b-value, or a DWMRI NRRD's zero gradient, says of it."""
    weighted = dwi.acquisition.bvals > 500
    trace = np.exp(np.log(np.maximum(dwi.data[..., weighted], 1e-6)).mean(axis=-1))[..., None]
    bvals, bvecs = dwi.acquisition.bvals, dwi.acquisition.bvecs
    if first:
        data = np.concatenate([trace, dwi.data], -1)
        acq = dataclasses.replace(dwi.acquisition, bvals=np.r_[0.0, bvals], bvecs=np.r_[np.zeros((1, 3)), bvecs])
    else:
        data = np.concatenate([dwi.data, trace], -1)
        acq = dataclasses.replace(dwi.acquisition, bvals=np.r_[bvals, 0.0], bvecs=np.r_[bvecs, np.zeros((1, 3))])
    return Volume(np.ascontiguousarray(data), dwi.affine, None, acq)


@pytest.mark.parametrize("first", [False, True], ids=["stored_last", "stored_first"])
def test_a_trace_image_stored_as_b0_is_left_out_of_s0(patient, first):
    """Averaged into S0 it raised every S/S0 (~0.45 of the b0 in tissue): on the 2.5 mm patient RecDiscNet's anomaly
    volume 52 -> 1.3 ml, Dice 0.69 -> 0.02. Left out, the map is bit for bit that of the series without it."""
    params = DMRIParameters(device="cpu")
    plain = run_dmri(patient.dwi, params)
    traced = run_dmri(_with_trace_as_b0(patient.dwi, first), params)
    assert np.array_equal(traced.maps["anomaly"].data, plain.maps["anomaly"].data)
    assert traced.report["input"]["b0_volumes"] == 1
    index = 0 if first else patient.dwi.n_frames
    assert any(f"volume(s) {index} (" in w and "stored as b0 but are diffusion-weighted" in w
               and "left out of S0" in w for w in traced.report["warnings"])


def test_b0s_that_agree_keep_the_shell_unchanged(patient):
    """Several b0s with drift (+-3 %), a b = 50 reference among them, or motion-free repeats are all kept: the same
    Shell object comes back, so S0 and the map stay those of before (ordinary runs bit-identical)."""
    from BBBAnomalyLib.dmri.preprocessing import _without_weighted_b0s

    dwi = patient.dwi
    b0 = dwi.data[..., :1]
    data = np.concatenate([b0 * 0.97, dwi.data[..., 1:], b0 * 1.03, b0 * np.float32(np.exp(-50 * 0.8e-3))], -1)
    bvals = np.r_[0.0, dwi.acquisition.bvals[1:], 0.0, 50.0]
    bvecs = np.r_[dwi.acquisition.bvecs, np.zeros((1, 3)), [[0.6, 0.64, 0.48]]]
    series = Volume(data, dwi.affine, None, Acquisition(bvals=bvals, bvecs=bvecs))
    shell = select_shell(bvals, bvecs, target_b=1000.0, b0_threshold=150.0, tolerance=0.3, min_directions=6)
    warnings: list = []
    assert _without_weighted_b0s(series, shell, None, warnings) is shell and not warnings
    prepared = prepare(series, ModelInput.default())
    assert prepared.shell.b0.tolist() == [0, 33, 34] and not any("stored as b0" in w for w in prepared.warnings)

"""Diffusion phantoms: physics, anatomy, subject variation, lesions, files (BBBAnomalyLib.phantoms.dmri)."""

import numpy as np
import pytest

from BBBAnomalyLib.phantoms import dmri_physics as phys
from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom


@pytest.fixture(scope="module")
def patient():
    return make_dmri_phantom(3, voxel_mm=4.0, n_directions=32, snr=1e6, tumor=True)


def test_tensor_signal_matches_closed_form():
    g = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    e = np.array([[1.0, 0, 0]])
    s = phys.tensor_signal(np.full(3, 1000.0), g, np.array([1.7e-3]), np.array([0.3e-3]), e)
    assert np.allclose(s, np.exp(-np.array([1.7, 0.3, 0.3])), rtol=1e-6)
    assert phys.fractional_anisotropy([1e-3], [1e-3])[0] == pytest.approx(0)
    assert phys.fractional_anisotropy([1.7e-3], [0.35e-3])[0] == pytest.approx(0.75, abs=0.02)


def test_rician_noise_floor():
    rng = np.random.default_rng(0)
    zeros = phys.rician(np.zeros(200000, np.float32), 0.1, rng)
    assert zeros.mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.02)  # Rayleigh mean


def test_healthy_tissue_values_and_smooth_orientation(patient):
    healthy = make_dmri_phantom(4, voxel_mm=4.0, n_directions=32, snr=1e6)
    fa, md = healthy.truth["fa"].data, healthy.truth["md"].data
    wm = healthy.masks["nawm"]
    assert 0.6 < fa[wm].mean() < 0.8 and 0.7e-3 < md[wm].mean() < 0.9e-3
    gm_only = healthy.masks["gm_wm"] & ~healthy.masks["wm"]
    assert fa[gm_only].mean() < fa[wm].mean() / 2
    # the WM signal is anisotropic: its attenuation differs between directions far more than GM's
    att = healthy.dwi.data[..., 1:] / healthy.dwi.data[..., :1]
    assert att[wm].std(axis=1).mean() > 3 * att[gm_only & ~healthy.masks["wm"]].std(axis=1).mean()
    # two subjects differ (pose, diffusivities, gradient table), one seed repeats exactly
    other = make_dmri_phantom(5, voxel_mm=4.0, n_directions=32, snr=1e6)
    assert not np.array_equal(healthy.masks["brain"], other.masks["brain"])
    assert not np.allclose(healthy.dwi.acquisition.bvecs, other.dwi.acquisition.bvecs)
    again = make_dmri_phantom(4, voxel_mm=4.0, n_directions=32, snr=1e6)
    assert np.array_equal(healthy.dwi.data, again.dwi.data)


def test_orientation_field_is_smooth_and_follows_the_major_tracts():
    rng = np.random.default_rng(0)
    points = np.array([[0.0, -5, 18], [26, -15, 10], [30, 30, 0]])  # callosum, corona radiata, frontal WM
    e = phys.orientation_field(points, rng)
    assert abs(e[0, 0]) > 0.9 and abs(e[1, 2]) > 0.7 and abs(e[2, 1]) > 0.5
    line = np.c_[np.linspace(-30, 30, 61), np.full(61, -5.0), np.full(61, 18.0)]
    along = phys.orientation_field(line, rng)
    assert np.abs(np.sum(along[1:] * along[:-1], axis=1)).min() > 0.98  # 1 mm apart: nearly parallel


def test_lesion_compartments_change_diffusion_as_described(patient):
    m, fa, md = patient.masks, patient.truth["fa"].data, patient.truth["md"].data
    assert m["tumor"].sum() == m["core"].sum() + m["edema"].sum() + m["infiltration"].sum()
    assert not (m["tumor"] & ~m["brain"]).any()
    assert not (m["nawm"] & m["tumor"]).any()
    # edema raises MD and lowers FA against normal WM; infiltration is graded in between
    assert md[m["edema"]].mean() > 1.3 * md[m["nawm"]].mean()
    assert fa[m["edema"]].mean() < fa[m["infiltration"]].mean() < fa[m["nawm"]].mean()
    assert fa[m["core"]].max() == 0  # the core is isotropic
    labels = patient.truth["labels"].data
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and (labels == 2).sum() == m["edema"].sum()


def test_written_case_reads_back_with_ras_gradients(patient, tmp_path):
    from BBBAnomalyLib.dmri import read_dwi

    patient.write(tmp_path / "case")
    dwi = read_dwi(tmp_path / "case" / "dwi.nii.gz")  # FSL bval/bvec beside it
    assert np.allclose(dwi.affine, patient.dwi.affine, atol=1e-4)
    assert np.allclose(dwi.acquisition.bvecs[1:], patient.dwi.acquisition.bvecs[1:], atol=1e-6)
    assert np.allclose(dwi.acquisition.bvals, patient.dwi.acquisition.bvals)
    assert np.abs(dwi.data / 1000.0 - patient.dwi.data).max() < 1e-3  # stored as scanner-like integers

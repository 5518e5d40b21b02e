"""Clinical DTI with 6-14 gradient directions (session 20, scripts/dmri_unusual_acquisitions.py --few-directions).

Many clinical DTI protocols acquire 6, 12 or 13-14 directions; the pipeline refused them (order-4 spherical harmonics
need 15). They are now resampled to the model's 64 directions through a log-linear diffusion-tensor fit (one fixed
matrix on log S/S0, dmri/tensor_resampling.py), with a warning that crossing fibres are not represented. On held-apart
phantom patients RecDiscNet's map from 6/12/13/14 directions stayed within r >= 0.95, AUC +-0.02 and Dice +-0.05 of
the same patient's 64-direction run (docs/reliability.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Acquisition, Volume
from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
from BBBAnomalyLib.dmri.gradients import canonical_directions, select_shell
from BBBAnomalyLib.dmri.preprocessing import ModelInput, prepare

PHI = (1 + 5 ** 0.5) / 2
#: the icosahedron's 6 axes: Jones et al. 1999's optimal 6-direction scheme
JONES6 = np.array([[0, 1, PHI], [0, -1, PHI], [1, PHI, 0], [-1, PHI, 0], [PHI, 0, 1], [PHI, 0, -1]], float)
JONES6 /= np.linalg.norm(JONES6, axis=1, keepdims=True)


def _random_tensors(n: int, rng) -> np.ndarray:
    """(n, 3, 3) tensors (mm²/s): eigenvalues 0.2-2.0 µm²/ms in random orientations (FA 0-0.8)."""
    rotations = np.linalg.qr(rng.standard_normal((n, 3, 3)))[0]
    evals = rng.uniform(0.2e-3, 2.0e-3, (n, 3))
    return np.einsum("nij,nj,nkj->nik", rotations, evals, rotations)


def _tensor_dwi(directions: np.ndarray, shape=(8, 8, 8), seed: int = 0):
    """A noiseless DWI (1 b0 + the directions at b = 1000, RAS) of random tensors, and those tensors."""
    rng = np.random.default_rng(seed)
    tensors = _random_tensors(int(np.prod(shape)), rng)
    bvals = np.r_[0.0, np.full(len(directions), 1000.0)]
    bvecs = np.r_[np.zeros((1, 3)), directions]
    s0 = 2.0
    weighted = s0 * np.exp(-1000.0 * np.einsum("ki,nij,kj->nk", directions, tensors, directions))
    data = np.concatenate([np.full((weighted.shape[0], 1), s0), weighted], axis=1).reshape(shape + (-1,))
    return Volume(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), None,
                  Acquisition(bvals=bvals, bvecs=bvecs)), tensors.reshape(shape + (3, 3))


@pytest.mark.parametrize("directions", [JONES6, canonical_directions(12)], ids=["jones6", "electrostatic12"])
def test_a_tensor_shell_of_6_or_12_directions_is_resampled_exactly(directions):
    """A tensor's S/S0 on 6 or 12 directions gives its S/S0 on the model's 64 (the log-linear fit is exact for a
    tensor; float32 arithmetic: ~1e-6 relative)."""
    dwi, tensors = _tensor_dwi(directions)
    spec = ModelInput.default()
    prepared = prepare(dwi, spec, brain_mask=np.ones(dwi.spatial_shape, bool), erode=False, keep_signal=True)
    assert prepared.shell.resampling == "tensor" and prepared.shell.to_json()["sh_order"] is None
    g = spec.directions
    expected = np.exp(-1000.0 * np.einsum("ki,nij,kj->nk", g, tensors.reshape(-1, 3, 3), g))
    assert np.abs(prepared.signal - expected).max() < 1e-4  # S/S0 0.13-0.82 here
    assert any("diffusion tensor" in w and "crossing fibres are not represented" in w and
               f"{len(directions)} unique gradient directions" in w for w in prepared.warnings)


def test_zero_signal_is_floored_before_the_log_not_nan():
    """Magnitude S/S0 of 0 (noise in CSF at b = 1000) has no log: it is raised to the floor, the voxel reads an
    isotropic S/S0 of that floor, and the warning counts the samples."""
    from BBBAnomalyLib.dmri.tensor_resampling import LOG_FLOOR

    dwi, _ = _tensor_dwi(JONES6, shape=(6, 6, 6))
    data = dwi.data.copy()
    data[:3, :, :, 1:] = 0.0  # half the voxels: every diffusion-weighted sample 0
    zeroed = Volume(data, dwi.affine, None, dwi.acquisition)
    prepared = prepare(zeroed, ModelInput.default(), brain_mask=np.ones(dwi.spatial_shape, bool), erode=False,
                       keep_signal=True)
    rows = np.argwhere(np.ones(dwi.spatial_shape, bool))[:, 0] < 3
    assert np.isfinite(prepared.signal).all()
    # a constant log-signal is an isotropic tensor: exp(log floor) on every direction (float32 exp/log)
    assert np.allclose(prepared.signal[rows], LOG_FLOOR, rtol=1e-4)
    assert any("50.0 % of the samples" in w for w in prepared.warnings)


def test_fewer_than_6_or_coplanar_directions_are_refused_with_the_reason():
    five = canonical_directions(5)
    with pytest.raises(InputError, match=r"5 unique gradient directions; at least 6 .*diffusion tensor has 6"):
        select_shell(np.r_[0.0, np.full(5, 1000.0)], np.r_[np.zeros((1, 3)), five], target_b=1000.0,
                     b0_threshold=150.0, tolerance=0.3, min_directions=DMRIParameters().min_directions)
    angles = np.linspace(0, np.pi, 8, endpoint=False)
    planar = np.c_[np.cos(angles), np.sin(angles), np.zeros(8)]  # no z: the tensor's z elements are undetermined
    with pytest.raises(InputError, match="do not span the sphere"):
        select_shell(np.r_[0.0, np.full(8, 1000.0)], np.r_[np.zeros((1, 3)), planar], target_b=1000.0,
                     b0_threshold=150.0, tolerance=0.3, min_directions=DMRIParameters().min_directions)


def _small_patient(monkeypatch, directions):
    """Phantom patient 1000 at 4 mm acquired with ``directions`` (1 b0, b = 1000): the replacement table draws the
    numbers the phantom's own gradient_table draws, so subject and tumour are the same."""
    from BBBAnomalyLib.phantoms import dmri_physics
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    def table(n_directions, rng, b_value=1000.0, n_b0=1, jitter=0.01):
        rng.standard_normal((3, 3))
        rng.uniform(-1, 1, n_directions)
        return np.r_[0.0, np.full(len(directions), 1000.0)], np.r_[np.zeros((1, 3)), directions]

    monkeypatch.setattr(dmri_physics, "gradient_table", table)
    return make_dmri_phantom(1000, voxel_mm=4.0, n_directions=32, snr=30.0, tumor=True)


def test_a_12_direction_patient_runs_by_default_and_stays_close_to_its_32_direction_run(monkeypatch):
    """Refused before ("at least 15 are needed"); now the default parameters run it through the tensor, warn, and
    RecDiscNet's map is the 32-direction run's within the acceptance rule's bounds (measured at 4 mm: r ~0.999)."""
    from BBBAnomalyLib.metrics import roc_auc

    many = _small_patient(monkeypatch, canonical_directions(32))
    few = _small_patient(monkeypatch, canonical_directions(12))
    params = DMRIParameters(device="cpu")
    reference, result = run_dmri(many.dwi, params), run_dmri(few.dwi, params)
    assert reference.report["input"]["resampling"] == "spherical harmonics"
    assert result.report["input"]["resampling"] == "tensor" and result.report["input"]["unique_directions"] == 12
    assert any("diffusion tensor" in w for w in result.report["warnings"])
    assert not any("diffusion tensor" in w for w in reference.report["warnings"])
    both = many.masks["brain"] & reference.brain_mask & result.brain_mask
    r = np.corrcoef(reference.maps["anomaly"].data[both], result.maps["anomaly"].data[both])[0, 1]
    assert r > 0.95
    region = many.masks["gm_wm"] & both
    auc = [roc_auc(many.masks["tumor"][region], run.maps["anomaly"].data[region]) for run in (reference, result)]
    assert abs(auc[0] - auc[1]) < 0.02

"""Gradient tables: frames, shell selection, spherical-harmonic resampling (BBBAnomalyLib.dmri.gradients)."""

import numpy as np
import pytest

from BBBAnomalyLib.dmri import gradients as grad
from BBBAnomalyLib.core.errors import InputError


def tensor_attenuation(directions, evals=(1.7e-3, 0.35e-3, 0.35e-3), rotation=None, b=1000.0):
    d = np.diag(evals)
    if rotation is not None:
        d = rotation @ d @ rotation.T
    return np.exp(-b * np.einsum("ni,ij,nj->n", directions, d, directions))


def test_canonical_directions_are_unit_spread_and_deterministic():
    d = grad.canonical_directions(64)
    assert d.shape == (64, 3)
    assert np.allclose(np.linalg.norm(d, axis=1), 1)
    cos = np.abs(d @ d.T)
    np.fill_diagonal(cos, 0)
    assert np.degrees(np.arccos(cos.max())) > 12  # no two directions (or antipodes) closer than 12°
    assert np.array_equal(d, grad.canonical_directions(64))


@pytest.mark.parametrize("affine", [np.diag([-2.0, 2.0, 2.0, 1.0]), np.diag([2.0, 2.0, 2.0, 1.0])])
def test_fsl_ras_round_trip_and_known_flip(affine):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((10, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    assert np.allclose(grad.to_ras(grad.to_fsl(g, affine), affine, "fsl"), g)
    # FSL's x axis is radiological: for a LAS image it is the voxel axis itself (pointing left), for
    # a RAS image FSL flips it, so in both cases an FSL +x vector points to the left, RAS -x.
    assert np.allclose(grad.to_ras(np.array([[1.0, 0, 0]]), affine, "fsl"), [[-1.0, 0, 0]])
    assert np.array_equal(grad.to_ras(g, affine, "ras"), g)


def test_oblique_affine_rotates_vectors():
    angle = np.radians(30)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = -2.0 * rot  # det < 0: no FSL flip, just the rotation (and the sign of the axes)
    out = grad.to_ras(np.array([[0, 1.0, 0]]), affine, "fsl")
    assert np.allclose(out, -rot[:, 1][None])


@pytest.mark.parametrize("n", [64, 30, 20])
def test_sh_resampling_reproduces_tensor_signal(n):
    rng = np.random.default_rng(1)
    source = grad.canonical_directions(n) @ np.linalg.qr(rng.standard_normal((3, 3)))[0]
    target = grad.canonical_directions(64)
    matrix = grad.resampling_matrix(source, target, grad.sh_order_for(n))
    errors = []
    for _ in range(20):
        rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
        errors.append(np.abs(matrix @ tensor_attenuation(source, rotation=rotation)
                             - tensor_attenuation(target, rotation=rotation)).max())
    assert max(errors) < (0.01 if n >= 28 else 0.025)  # S/S0 of an FA 0.75 tensor, values 0.18-0.75


def table(n_b0=1, shells=((1000, 32),)):
    bvals, bvecs = [0.0] * n_b0, [[0, 0, 0]] * n_b0
    for b, n in shells:
        bvals += [b] * n
        bvecs += grad.canonical_directions(n).tolist()
    return np.array(bvals, float), np.array(bvecs, float)


def select(bvals, bvecs, **kw):
    opts = dict(target_b=1000.0, b0_threshold=150.0, tolerance=0.3, min_directions=15)
    opts.update(kw)
    return grad.select_shell(bvals, bvecs, **opts)


def test_shell_selection_multishell_and_rescaling_warning():
    bvals, bvecs = table(2, ((1000, 32), (2000, 30)))
    shell = select(bvals, bvecs)
    assert shell.b0.tolist() == [0, 1] and shell.index.size == 32 and shell.unique_directions == 32
    assert any("ignored" in w and "2000" in w for w in shell.warnings)
    shell = select(*table(1, ((800, 20),)))
    assert any("rescaled" in w for w in shell.warnings)


@pytest.mark.parametrize("case, message", [
    (table(0, ((1000, 32),)), "no b0"),
    (table(1, ((2000, 25),)), "no shell near b = 1000"),
    (table(1, ((1000, 10),)), "10 unique gradient directions"),
])
def test_unsupported_acquisitions_are_refused_with_the_reason(case, message):
    with pytest.raises(InputError, match=message):
        select(*case)


def test_duplicates_count_once_and_planar_tables_are_refused():
    bvals, bvecs = table(1, ((1000, 16),))
    doubled = np.r_[bvecs, -bvecs[1:]]  # antipodal repeats add no information
    assert select(np.r_[bvals, bvals[1:]], doubled).unique_directions == 16
    angles = np.linspace(0, np.pi, 20, endpoint=False)
    planar = np.c_[np.cos(angles), np.sin(angles), np.zeros(20)]
    with pytest.raises(InputError, match="do not span the sphere"):
        select(np.r_[0.0, [1000.0] * 20], np.r_[[[0, 0, 0]], planar])


def test_table_shape_mismatch_and_missing_vectors():
    bvals, bvecs = table()
    with pytest.raises(InputError, match="same volumes"):
        select(bvals, bvecs[:-1])
    with pytest.raises(InputError, match="--bvec"):
        select(bvals, None)

"""Memory of the T1/FLAIR pipeline's enhancer step (issue 17: peak <= 2x the input).

The enhancer's voxel features are an (n_brain, 21) float32 matrix: 128 MiB on a 1 mm brain of 1.6 M voxels, 1.8x the
T1 and FLAIR in float32 (2 x 35.7 MiB). They used to be built as 21 columns and stacked at the end, so the matrix
existed twice at once. tracemalloc counts numpy buffers deterministically (no RSS noise, no timing).
"""

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from BBBAnomalyLib.structural import enhancer as enh

pytest.importorskip("torch")


def _plain_features(t1_0255, flair_0255, brain, voxel_mm):
    """voxel_features as it was before issue 17 (the columns in a list, stacked at the end): the reference."""
    brain = np.asarray(brain, bool)
    voxel_mm = np.asarray(voxel_mm, np.float64)[:3]
    box = tuple(slice(max(int(ix.min()) - 4, 0), int(ix.max()) + 5) for ix in np.nonzero(brain))
    brain = brain[box]
    w = brain.astype(np.float32)
    t1 = np.where(brain, np.asarray(t1_0255, np.float32)[box], 0.0).astype(np.float32)
    fl = np.where(brain, np.asarray(flair_0255, np.float32)[box], 0.0).astype(np.float32)
    cols = [t1[brain], fl[brain], (t1 - fl)[brain]]
    means, devs = [], []
    for s in enh.SIGMAS_MM:
        sigma = s / voxel_mm
        ws = ndimage.gaussian_filter(w, sigma, mode="constant", truncate=3.0)
        for img in (t1, fl):
            m = enh._masked_smooth(img, w, ws, sigma)
            means.append(m[brain])
            devs.append((img - m)[brain])
            if s == 2.5:
                sq = enh._masked_smooth(img * img, w, ws, sigma)
                if img is t1:
                    sd_t1 = np.sqrt(np.maximum(sq - m * m, 0.0))[brain]
                else:
                    sd_fl = np.sqrt(np.maximum(sq - m * m, 0.0))[brain]
    cols += means + devs + [sd_t1, sd_fl]
    for img in (t1, fl):
        smooth = ndimage.gaussian_filter(img, 1.0 / voxel_mm, mode="nearest", truncate=3.0)
        g = np.zeros_like(img)
        for axis in range(3):
            d = np.gradient(smooth, axis=axis) / voxel_mm[axis] if img.shape[axis] > 1 else 0.0
            g += d * d
        cols.append(np.sqrt(g)[brain])
    depth = ndimage.distance_transform_edt(brain, sampling=voxel_mm)[brain]
    cols += [depth, np.log1p(depth)]
    return np.stack([np.asarray(c, np.float32) for c in cols], axis=1)


@pytest.fixture(scope="module")
def case():
    """A brain filling most of its box (as a real brain does): an ellipsoid of ~130 k voxels on 1.5 mm voxels,
    T1 and FLAIR on the 0-255 scale with texture."""
    shape = (72, 80, 64)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32) - 1) / 2
    r = sum(((grid[i] - centre[i]) / (0.47 * shape[i])) ** 2 for i in range(3))
    brain = r <= 1.0
    rng = np.random.default_rng(3)
    t1 = (100 + 30 * np.sin(grid[0] / 5) + rng.normal(0, 8, shape)).astype(np.float32) * brain
    flair = (90 + 25 * np.cos(grid[1] / 7) + rng.normal(0, 8, shape)).astype(np.float32) * brain
    return t1, flair, brain, (1.5, 1.5, 1.5)


def test_features_equal_the_plain_form(case):
    """The same values bit for bit (each column computed as before, written into its place)."""
    t1, flair, brain, voxel = case
    got = enh.voxel_features(t1, flair, brain, voxel)
    np.testing.assert_array_equal(got, _plain_features(t1, flair, brain, voxel))
    assert got.dtype == np.float32 and got.flags.c_contiguous


def test_features_held_once(case):
    """Peak of numpy arrays alive at once while the features are made, over the features' own bytes. Before issue
    17: the columns in a list, then a stacked copy (2x), and scipy's distance step on the whole box (index grid,
    difference, float64 copy): 3.3x here. Now the output once plus the box's float32 temporaries and the feature
    transform of the depth, the deviations and local sd formed in place or on the brain's voxels: measured 1.70x
    here (a small brain: its box's temporaries weigh more than on a 1 mm brain, where the enhancer step's peak
    went from +476 MiB to +225 MiB above its start: docs/benchmarks.md). A second copy of the matrix or scipy's whole-box distance arrays back would
    add >= 0.9x."""
    t1, flair, brain, voxel = case
    peaks = {}
    for fn in (enh.voxel_features, _plain_features):
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            feats = fn(t1, flair, brain, voxel)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peaks[fn.__name__] = (peak - before) / feats.nbytes
    print("peak / features", peaks)
    assert peaks["_plain_features"] >= 3.0  # the count sees the copies
    assert peaks["voxel_features"] <= 2.1, peaks


def test_depth_equals_scipy():
    """_depth_mm: scipy's Euclidean distance at the brain's voxels, the same float64 operations: bit for bit
    (anisotropic voxels, holes in the mask)."""
    rng = np.random.default_rng(0)
    shape, voxel = (33, 41, 27), np.array([0.9, 1.2, 3.0])
    g = np.indices(shape)
    c = (np.array(shape) - 1) / 2
    brain = (sum(((g[i] - c[i]) / (0.45 * shape[i])) ** 2 for i in range(3)) <= 1) & (rng.random(shape) > 0.02)
    np.testing.assert_array_equal(enh._depth_mm(brain, voxel),
                                  ndimage.distance_transform_edt(brain, sampling=voxel)[brain])


def test_enhancer_prediction_does_not_depend_on_the_chunk():
    """EnhancerEnsemble.predict by 32,768 rows (8 MiB hidden layers) gives what the former 262,144 did: each row's
    MLP is its own products (bit for bit on the CPUs measured; compared within float32 rounding)."""
    import torch

    from BBBAnomalyLib.structural.models import load

    model, _ = load("t1flair-enhancer-real", "enhancer", torch.device("cpu"))
    rng = np.random.default_rng(0)
    features = (rng.standard_normal((70_000, enh.N_FEATURES)) * 30 + 100).astype(np.float32)
    whole = model.predict(features, chunk=262_144)
    small = model.predict(features, chunk=4_096)
    for key in whole:
        np.testing.assert_allclose(small[key], whole[key], rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(whole[key]).max())))


def test_cae_to_native_equals_the_plain_form(case):
    """cae.to_native zeroes off the brain in place: the same values as np.where(brain, out, 0.0)."""
    from BBBAnomalyLib.structural import cae
    from BBBAnomalyLib.structural.preprocessing import interpolation_matrix, resample_separable

    _, _, brain, _ = case
    volume = np.random.default_rng(1).random((24, 28, 24)).astype(np.float32)
    lo, hi = cae.brain_box(brain)
    mats = []
    for l, h, n in zip(lo, hi, volume.shape):
        step = (h - l) / n
        mats.append(interpolation_matrix(int(h - l), int(n), (0.5 - 0.5 * step) / step, 1.0 / step))
    plain = np.zeros(brain.shape, np.float32)
    plain[tuple(slice(l, h) for l, h in zip(lo, hi))] = resample_separable(volume, mats)
    np.testing.assert_array_equal(cae.to_native(volume, brain), np.where(brain, plain, 0.0).astype(np.float32))


def test_brain_maps_read_as_full_maps():
    """predict_maps' BrainMaps: each map read is the full grid, 0 off the brain, the values in the brain's C order;
    keys(), values() and items() as a dict's."""
    brain = np.zeros((4, 5, 6), bool)
    brain[1:3, 1:4, 2:5] = True
    n = int(brain.sum())
    maps = enh.BrainMaps(brain, {"a": np.arange(n, dtype=np.float32), "b": np.ones(n, np.float32)})
    full = np.zeros(brain.shape, np.float32)
    full[brain] = np.arange(n)
    np.testing.assert_array_equal(maps["a"], full)
    assert list(maps) == ["a", "b"] and len(maps) == 2
    assert all(v.shape == brain.shape and v.dtype == np.float32 for v in maps.values())
    assert dict(maps.items())["b"].sum() == n


def test_with_the_enhancer_the_syntheses_native_maps_are_not_made(monkeypatch):
    """The enhancer's maps replace native_synthesis's three full volumes, so the pipeline must not make them
    (issue 17: 3 x 35.7 MiB at the run's peak on a 1 mm case); without the enhancer they are the output."""
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom
    from BBBAnomalyLib.structural import T1FlairParameters, enhancement, run_t1flair

    ph = make_structural_phantom(5001, enhancing=True)
    k = int(np.argmax((ph.seg.data > 0).sum(axis=(0, 1))))
    cut = lambda a: np.ascontiguousarray(np.asarray(a)[:, :, k - 3:k + 3])
    from BBBAnomalyLib.core.volume import Volume

    t1, flair, brain = Volume(cut(ph.t1.data), ph.t1.affine), Volume(cut(ph.flair.data), ph.t1.affine), cut(ph.brain)
    calls = []
    real = enhancement.native_synthesis
    monkeypatch.setattr(enhancement, "native_synthesis", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    fast = dict(steps=1, device="cpu", anomaly_map=False)
    with_enhancer = run_t1flair(t1, flair, T1FlairParameters(**fast), brain_mask=brain)
    assert calls == [] and "enhancement_probability" in with_enhancer.maps
    run_t1flair(t1, flair, T1FlairParameters(enhancer_weights=None, **fast), brain_mask=brain)
    assert calls == [1]

"""Memory of the T1/FLAIR pipeline (issue 17: peak <= 2x the input).

The enhancer's voxel features are an (n_brain, 21) float32 matrix: 128 MiB on a 1 mm brain of 1.6 M voxels, 1.8x the
T1 and FLAIR in float32 (2 x 35.7 MiB). They used to be built as 21 columns and stacked at the end, so the matrix
existed twice at once. tracemalloc counts numpy buffers deterministically (no RSS noise, no timing).

Second pass: the pipeline's eight maps are held as the brain's values (MapVolumes) and written one at a time; the
syntheses, tumor probability, normalisation, FLAIR abnormality and tissue classes avoid full-grid temporaries. Each
rewritten step is compared bit for bit with its former full-grid form (kept here as the reference).
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


# --- the pipeline's maps as brain values, the steps' peaks (issue 17, second pass) -------------------------------
def _grid_and_images(seed=0):
    """A SliceGrid over an anisotropic, off-axis brain and network-grid images."""
    from BBBAnomalyLib.structural.preprocessing import SliceGrid

    shape = (37, 29, 11)
    g = np.indices(shape)
    c = (np.array(shape) - 1) / 2
    brain = sum(((g[i] - c[i] - 1) / (0.4 * shape[i])) ** 2 for i in range(3)) <= 1
    affine = np.diag([1.1, 0.9, 2.5, 1.0])
    grid = SliceGrid.around(brain, affine, 24)
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (len(grid.slices), 24, 24)).astype(np.float32)
    return grid, brain, images, rng


def test_to_native_values_equal_the_full_map():
    grid, brain, images, _ = _grid_and_images()
    for fill in (0.0, -1.0):
        full = grid.to_native(images, fill=fill)
        np.testing.assert_array_equal(grid.to_native_values(images, brain, fill=fill), full[brain])
        assert full.flags.c_contiguous and full.dtype == np.float32


def test_unit_conversions_equal_the_plain_form():
    """to_unit / from_unit in place after their first step: the former three-array expressions, bit for bit;
    normalise_0_255 takes the brain's values before the float64 conversion: the same."""
    from BBBAnomalyLib.structural.normalisation import from_unit, normalise_0_255, to_unit

    x = np.random.default_rng(2).uniform(-5, 260, (13, 17, 5)).astype(np.float32)
    np.testing.assert_array_equal(to_unit(x), (np.asarray(x, np.float32) / 255.0 * 2.0 - 1.0).astype(np.float32))
    np.testing.assert_array_equal(from_unit(x), ((np.asarray(x, np.float32) + 1.0) / 2.0 * 255.0).astype(np.float32))
    assert to_unit(x).dtype == from_unit(x).dtype == np.float32
    brain = x > 40
    values = np.asarray(x, np.float64)[brain]  # the former order of operations, by hand
    counts, edges = np.histogram(values, bins=254)
    mode = 0.5 * (edges[int(np.argmax(counts))] + edges[int(np.argmax(counts)) + 1])
    phi = float(np.sqrt(np.mean((mode - values) ** 2)))
    plain = np.zeros(x.shape, np.float32)
    plain[brain] = np.clip((values - mode) / phi * 31.0 + 99.0, 0.0, 255.0)
    np.testing.assert_array_equal(normalise_0_255(x, brain, "t1"), plain)


def _plain_synthesis(grid, synthesis, network_t1, native_t1, brain, detail_from_t1=True):
    """synthesis_on_native_grid before issue 17's second pass (full-grid arrays): the reference."""
    from BBBAnomalyLib.structural.normalisation import from_unit

    if detail_from_t1:
        change = from_unit(synthesis) - from_unit(network_t1)
        native = from_unit(native_t1) + grid.to_native(change, fill=0.0)
    else:
        native = from_unit(np.clip(grid.to_native(synthesis, fill=-1.0), -1, 1))
    return np.where(brain, np.clip(native, 0.0, 255.0), 0.0).astype(np.float32)


def test_syntheses_as_brain_values_equal_the_plain_form():
    from BBBAnomalyLib.structural.pipeline import synthesis_brain_values, synthesis_on_native_grid

    grid, brain, synthesis, rng = _grid_and_images(4)
    network_t1 = rng.uniform(-1.0, 1.0, synthesis.shape).astype(np.float32)
    native_t1 = np.where(brain, rng.uniform(-1.0, 1.0, brain.shape), -1.0).astype(np.float32)
    for detail in (True, False):
        plain = _plain_synthesis(grid, synthesis, network_t1, native_t1, brain, detail)
        np.testing.assert_array_equal(synthesis_on_native_grid(grid, synthesis, network_t1, native_t1, brain, detail),
                                      plain)
        np.testing.assert_array_equal(synthesis_brain_values(grid, synthesis, network_t1, native_t1, brain, detail),
                                      plain[brain])


def _plain_flair_abnormality(flair, brain, voxel_ml):
    """tumor_roi.flair_abnormality before issue 17's second pass (float64 copy of the grid, whole-grid labels)."""
    from BBBAnomalyLib.structural import tumor_roi as tr

    values = np.asarray(flair, np.float64)[brain]
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    bright = ndimage.binary_opening((np.asarray(flair) > median + tr.FLAIR_Z * max(mad, 1e-9)) & brain, iterations=1)
    labels, n = ndimage.label(bright)
    if n == 0:
        return bright
    sizes = ndimage.sum(bright, labels, np.arange(1, n + 1)) * voxel_ml
    keep = np.flatnonzero(sizes >= tr.FLAIR_MIN_COMPONENT_ML) + 1
    return np.isin(labels, keep)


@pytest.mark.parametrize("touching", [False, True])
def test_flair_abnormality_equals_the_plain_form(case, touching):
    """Bright blobs of several sizes (some below 1 ml), one at the brain's edge; with ``touching`` the brain reaches
    the grid's faces (the box is the whole grid there): the same mask and the same volume, bit for bit."""
    from BBBAnomalyLib.structural import tumor_roi as tr

    _, flair, brain, _ = case
    flair, brain = flair.copy(), brain.copy()
    if touching:
        brain[:, :, :3] = True
        flair[:, :, :3] = 95.0
    g = np.indices(brain.shape)
    for centre, radius in (((36, 40, 32), 6), ((20, 30, 20), 2), ((50, 50, 40), 4), ((36, 6, 32), 3)):
        flair[sum((g[i] - centre[i]) ** 2 for i in range(3)) <= radius ** 2] = 240.0
    flair *= brain
    for voxel_ml in (0.0034, 0.02):
        plain = _plain_flair_abnormality(flair, brain, voxel_ml)
        assert 0 < plain.sum() < brain.sum()
        np.testing.assert_array_equal(tr.flair_abnormality(flair, brain, voxel_ml), plain)
        assert tr.flair_abnormality_ml(flair, brain, voxel_ml) == float(plain.sum() * voxel_ml)
    assert tr.flair_abnormality_ml(np.where(brain, 100.0, 0.0).astype(np.float32), brain, 0.0034) == 0.0


def test_tissue_classes_by_chunks_equal_the_plain_form():
    from BBBAnomalyLib.structural.applicability import _nearest_centre

    rng = np.random.default_rng(5)
    x = rng.random((10_007, 2))
    centres = np.array([(0.1, 0.1), (0.75, 0.35), (0.35, 0.75)])
    plain = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(_nearest_centre(x, centres, chunk=1_000), plain)
    np.testing.assert_array_equal(_nearest_centre(x, centres), plain)


def test_map_volumes_read_as_volumes():
    from BBBAnomalyLib.structural.pipeline import MapVolumes

    brain = np.zeros((4, 5, 6), bool)
    brain[1:3, 1:4, 2:5] = True
    n = int(brain.sum())
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    maps = MapVolumes(brain, affine, {"a": np.arange(n, dtype=np.float32), "b": np.ones(n, np.float32)})
    vol = maps["a"]
    full = np.zeros(brain.shape, np.float32)
    full[brain] = np.arange(n)
    np.testing.assert_array_equal(vol.data, full)
    np.testing.assert_array_equal(vol.affine, affine)
    vol.data[:] = 7.0  # a read is the caller's own copy
    vol.affine[0, 0] = 9.0
    np.testing.assert_array_equal(maps["a"].data, full)
    assert maps["a"].affine[0, 0] == 1.0
    assert list(maps) == ["a", "b"] and maps.nbytes == 2 * 4 * n and "b" in maps and "c" not in maps


@pytest.fixture(scope="module")
def slab_run():
    """The pipeline on a phantom slab with the defaults (enhancer, 3D autoencoder), one sampler step."""
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom
    from BBBAnomalyLib.structural import T1FlairParameters, run_t1flair

    ph = make_structural_phantom(5001, enhancing=True)
    k = int(np.argmax((ph.seg.data > 0).sum(axis=(0, 1))))
    cut = lambda a: np.ascontiguousarray(np.asarray(a)[:, :, k - 4:k + 4])
    t1, flair = Volume(cut(ph.t1.data), ph.t1.affine), Volume(cut(ph.flair.data), ph.t1.affine)
    return t1, flair, run_t1flair(t1, flair, T1FlairParameters(steps=1, device="cpu"))


def test_pipeline_maps_are_held_as_brain_values(slab_run):
    """result.maps holds the brain's values (8 maps x 4 bytes x brain voxels, not 8 full volumes); each map reads as
    the full Volume on the T1 grid, 0 off the brain, and the maps are the former full-grid formulas of the run's
    own intermediates, bit for bit."""
    from BBBAnomalyLib.core.report import summarise
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.structural import cae as cae_mod
    from BBBAnomalyLib.structural.models import load
    from BBBAnomalyLib.structural.normalisation import from_unit, normalise
    from BBBAnomalyLib.structural.pipeline import MapVolumes
    from BBBAnomalyLib.structural.preprocessing import flair_on_t1_grid

    t1, flair, res = slab_run
    brain, ex = res.brain_mask, res.extras
    assert isinstance(res.maps, MapVolumes) and len(res.maps) == 8
    assert res.maps.nbytes == 8 * 4 * int(brain.sum()) < 8 * 4 * brain.size
    full = {name: res.maps[name] for name in res.maps}
    for name, vol in full.items():
        assert vol.data.shape == t1.spatial_shape and vol.data.dtype == np.float32, name
        np.testing.assert_array_equal(vol.affine, t1.affine)
        assert not vol.data[~brain].any(), name
    # the run no longer keeps its normalised T1 (issue 17: it goes before the enhancer's peak): the same call again
    n_t1 = normalise(np.asarray(t1.data, np.float32), brain, "t1")
    assert "normalised_t1" not in ex
    em = ex["enhancer_maps"]
    t1_0255 = from_unit(n_t1)
    np.testing.assert_array_equal(full["synthetic_t1gd"].data,
                                  np.where(brain, np.clip(t1_0255 + em["added"], 0.0, 255.0), 0.0).astype(np.float32))
    np.testing.assert_array_equal(full["enhancement"].data, em["added"])
    np.testing.assert_array_equal(full["enhancement_uncertainty"].data, em["uncertainty"])
    np.testing.assert_array_equal(full["enhancement_probability"].data, em["enhancing_score"])
    for i, label in ((1, "enhancing"), (0, "non_enhancing")):
        np.testing.assert_array_equal(full[f"synthetic_t1gd_{label}"].data,
                                      _plain_synthesis(ex["grid"], ex["synthesis"][i], ex["network_t1"], n_t1, brain))
    cae, card = load(res.report["parameters"]["cae_weights"], "cae", ex["device"])
    n_flair = normalise(flair_on_t1_grid(Volume(np.asarray(t1.data, np.float32), t1.affine), flair, []), brain, "flair")
    anomaly, score, _ = cae_mod.anomaly(cae, [n_t1, n_flair], brain, card["reshape"], ex["device"])
    np.testing.assert_array_equal(full["anomaly"].data, anomaly)
    assert res.report["anomaly"]["patient_score"] == score
    for name, vol in full.items():  # the report's summaries: of the full maps at the brain and in the ROI
        assert res.report["summary"]["brain"][name] == summarise(vol.data[brain]), name
        assert res.report["summary"]["tumor_roi"][name] == summarise(vol.data[res.tumor_roi]), name


def test_write_makes_one_full_map_at_a_time(slab_run, tmp_path, monkeypatch):
    """result.write (the CLI's output, all or nothing) reads one map, writes it and lets it go before the next:
    no written map's Volume is alive when the next is written; the files hold the maps exactly."""
    import gc
    import weakref

    import BBBAnomalyLib.io as bio

    _, _, res = slab_run
    written, alive_before = [], []
    real = bio.write_volume

    def spy(volume, path):
        gc.collect()
        alive_before.append(sum(ref() is not None for ref in written))
        out = real(volume, path)
        if volume.data.dtype == np.float32:
            written.append(weakref.ref(volume))
        return out

    monkeypatch.setattr(bio, "write_volume", spy)
    out = res.write(tmp_path / "out")
    assert len(written) == 8 and alive_before[:8] == [0] * 8
    monkeypatch.undo()
    for name in res.maps:
        back = bio.read_volume(out / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(back.data, np.float32), res.maps[name].data)
    np.testing.assert_array_equal(bio.read_volume(out / "brain_mask.nii.gz").data > 0, res.brain_mask)


def test_distance_at_equals_scipy():
    """distance_at: scipy's Euclidean distance read at any voxels (here not the mask's own), bit for bit."""
    from BBBAnomalyLib.structural.preprocessing import distance_at

    rng = np.random.default_rng(6)
    shape, voxel = (29, 35, 21), np.array([1.1, 0.8, 2.0])
    mask = rng.random(shape) > 0.03
    where = rng.random(shape) > 0.5
    np.testing.assert_array_equal(distance_at(mask, where, voxel),
                                  ndimage.distance_transform_edt(mask, sampling=voxel)[where])


def _plain_tissue_order(t1, flair, brain, voxel_mm, sample=100_000):
    """applicability.tissue_order before issue 17's second pass (whole-array classes, scipy's box distances)."""
    from BBBAnomalyLib.structural.applicability import _kmeans

    brain = np.asarray(brain, bool)
    voxel_mm = np.asarray(voxel_mm, np.float64)[:3]
    a, b = np.asarray(t1)[brain].astype(np.float64), np.asarray(flair)[brain].astype(np.float64)
    step = max(1, a.size // sample)
    ranks = np.stack([np.searchsorted(np.sort(v[::step]), v) / max(v[::step].size, 1) for v in (a, b)], 1)
    centres = _kmeans(ranks[::step], [(0.1, 0.1), (0.75, 0.35), (0.35, 0.75)])
    label = np.argmin(((ranks[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    csf = int(np.argmin(centres.sum(1)))
    tissue = [i for i in range(3) if i != csf]
    box = tuple(slice(max(int(ix.min()) - 3, 0), int(ix.max()) + 4) for ix in np.nonzero(brain))
    full = np.full(brain.shape, -1, np.int8)
    full[brain] = label
    full = full[box]
    edge = ndimage.distance_transform_edt(full != csf, sampling=voxel_mm) <= 2.5
    edge |= ndimage.distance_transform_edt(full >= 0, sampling=voxel_mm) <= 2.5
    near = [float(np.mean(edge[full == i])) if np.any(full == i) else 0.0 for i in tissue]
    gm, wm = (tissue[0], tissue[1]) if near[0] >= near[1] else (tissue[1], tissue[0])
    return {"t1_wm_minus_gm": float(centres[wm, 0] - centres[gm, 0]),
            "flair_gm_minus_wm": float(centres[gm, 1] - centres[wm, 1]),
            "near_csf_fraction_gm": max(near), "near_csf_fraction_wm": min(near)}


def test_tissue_order_equals_the_plain_form(case):
    from BBBAnomalyLib.structural.applicability import tissue_order

    t1, flair, brain, _ = case
    for voxel, sample in (((1.5, 1.5, 1.5), 100_000), ((0.9, 1.0, 2.5), 5_000)):
        assert tissue_order(t1, flair, brain, voxel, sample) == _plain_tissue_order(t1, flair, brain, voxel, sample)


def test_automatic_mask_equals_the_plain_form():
    """The component sizes by bincount instead of ndimage.sum: the same mask (largest component, holes filled),
    with a smaller component beside the brain and a hole inside it."""
    from BBBAnomalyLib.structural.preprocessing import automatic_brain_mask

    g = np.indices((40, 44, 30))
    head = sum(((g[i] - c) / r) ** 2 for i, (c, r) in enumerate(((20, 14), (22, 16), (15, 11)))) <= 1
    t1 = np.where(head, 100.0, 0.0).astype(np.float32)
    t1[18:21, 20:23, 14:16] = 0.0  # a hole
    t1[2:6, 2:6, 2:6] = 80.0  # another component
    flair = np.where(t1 > 0, 70.0, 0.0).astype(np.float32)
    signal = (t1 > 0) & (flair > 0)
    opened = ndimage.binary_opening(signal, iterations=1)
    labels, n = ndimage.label(opened)
    sizes = ndimage.sum(opened, labels, index=np.arange(1, n + 1))
    plain = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)
    assert n == 2
    np.testing.assert_array_equal(automatic_brain_mask(t1, flair, []), plain)


@pytest.mark.parametrize("planes", [3, 20, None])
def test_feature_blocks_equal_the_plain_form(case, planes):
    """voxel_feature_blocks: slabs of the brain's box with a halo wider than every filter's reach; their rows,
    concatenated, are the plain features bit for bit (isotropic, and thin voxels along the slab axis: a wider halo)."""
    t1, flair, brain, voxel = case
    for vox in (voxel, (0.8, 1.5, 2.0)):
        blocks = list(enh.voxel_feature_blocks(t1, flair, brain, vox, planes=planes))
        assert planes is None and len(blocks) == 1 or len(blocks) > 1
        np.testing.assert_array_equal(np.concatenate(blocks), _plain_features(t1, flair, brain, vox))


def test_prediction_by_blocks_equals_the_whole():
    """predict_blocks joins rows across blocks so that the networks see the chunks predict() would: bit for bit."""
    import torch

    from BBBAnomalyLib.structural.models import load

    model, _ = load("t1flair-enhancer-real", "enhancer", torch.device("cpu"))
    rng = np.random.default_rng(7)
    features = (rng.standard_normal((20_000, enh.N_FEATURES)) * 30 + 100).astype(np.float32)
    whole = model.predict(features, chunk=4_096)
    cuts = np.cumsum([3_000, 5_000, 100, 9_000])
    blocks = np.split(features, cuts)
    by_blocks = model.predict_blocks(iter(blocks), len(features), chunk=4_096)
    for key in whole:
        np.testing.assert_array_equal(by_blocks[key], whole[key])
    with pytest.raises(ValueError, match="rows"):
        model.predict_blocks(iter(blocks[:2]), len(features), chunk=4_096)


def test_predict_maps_by_slabs_equals_the_whole_box(case):
    import torch

    from BBBAnomalyLib.structural.models import load

    t1, flair, brain, voxel = case
    model, _ = load("t1flair-enhancer-real", "enhancer", torch.device("cpu"))
    whole = enh.predict_maps(model, t1, flair, brain, voxel, block_planes=None)
    slabs = enh.predict_maps(model, t1, flair, brain, voxel, block_planes=9)
    for name in whole:
        np.testing.assert_array_equal(slabs.brain_values[name], whole.brain_values[name])


def test_roi_from_brain_values_equals_the_full_map():
    """choose_roi on the tumor probability's brain values, with the FLAIR abnormality measured beforehand (the
    pipeline's way since issue 17), decides what it decides on the full map with the FLAIR: every branch."""
    from BBBAnomalyLib.structural.tumor_roi import choose_roi, flair_abnormality_ml

    g = np.indices((60, 60, 40))
    brain = ((g[0] - 30) ** 2 + (g[1] - 30) ** 2 + ((g[2] - 20) * 1.3) ** 2) < 26 ** 2
    lesion = ((g[0] - 22) ** 2 + (g[1] - 30) ** 2 + (g[2] - 20) ** 2) < 7 ** 2
    rng = np.random.default_rng(0)
    flair = np.where(brain, 100 + 5 * rng.standard_normal(brain.shape), 0.0).astype(np.float32)
    flair[lesion] += 60
    smooth = np.clip(ndimage.gaussian_filter(lesion.astype(np.float32), 2.0), 0, 1) * brain
    tiny = np.zeros_like(lesion)
    tiny[22, 30, 19:21] = True
    huge = brain & (g[0] > 25)
    ml = 0.008
    flair_ml = flair_abnormality_ml(flair, brain, ml)
    cases = [(None, smooth * 0.95), (None, tiny * 0.95), (None, huge * 0.95), (None, smooth * 0.6),
             (None, smooth * 0.2), (None, np.zeros(brain.shape)), (tiny, smooth * 0.0)]
    seen = []
    for user, probability in cases:
        probability = probability.astype(np.float32)
        full = choose_roi(user, probability, flair, brain, ml)
        values = choose_roi(user, probability[brain], None, brain, ml, flair_ml=flair_ml if user is None else None)
        np.testing.assert_array_equal(values.mask, full.mask)
        assert values.to_json() == full.to_json() and values.implausible == full.implausible
        seen.append(full.implausible)
    assert seen[0] == "" and "tiny" in seen[1] and "far from" in seen[2] and "uncertain" in seen[3]
    assert "found no tumor" in seen[4] and "found no tumor" in seen[5] and seen[6] == ""

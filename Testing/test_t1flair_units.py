"""T1/FLAIR building blocks: normalisation, grids, sampler, contrastive maximum, autoencoder."""

import numpy as np
import pytest
import torch

from BBBAnomalyLib import InputError
from BBBAnomalyLib.structural import cae, diffusion, identification
from BBBAnomalyLib.structural.normalisation import CONSTANTS, from_unit, normalise, normalise_0_255, to_unit
from BBBAnomalyLib.structural.preprocessing import SliceGrid, flair_on_t1_grid, slice_axis
from BBBAnomalyLib.core.volume import Volume


def test_normalisation_maps_the_histogram_mode_to_v0_whatever_the_scale():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(500, 5, 20000), rng.uniform(0, 1500, 5000)])
    data = values.reshape(25, 20, 50)
    brain = np.ones(data.shape, bool)
    for contrast, (c, v0) in CONSTANTS.items():
        out = normalise_0_255(data, brain, contrast)
        near_mode = np.abs(data - 500) < 1
        assert abs(np.median(out[near_mode]) - v0) < 3  # one histogram bin is ~6 input units = ~1.5 output units
        assert out.min() >= 0 and out.max() <= 255
        assert np.allclose(normalise_0_255(3.7 * data, brain, contrast), out, atol=1e-3)  # scanner scale drops out
    unit = normalise(data, brain, "t1")
    assert unit.min() >= -1 and unit.max() <= 1
    assert np.allclose(from_unit(to_unit(out)), out, atol=1e-3)
    original = data.copy()
    normalise(data, brain[..., :], "flair")
    assert np.array_equal(original, data)  # input untouched
    with pytest.raises(InputError, match="constant"):
        normalise_0_255(np.ones((4, 4, 4)), np.ones((4, 4, 4), bool), "t1")


def _oblique_affine():
    affine = np.diag([1.2, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-40, -50, -30]
    return affine[:, [1, 2, 0, 3]]  # voxel axes permuted: the slice (S-I) axis is voxel axis 1


def test_slice_grid_finds_the_axial_axis_and_maps_back_onto_the_native_grid():
    affine = _oblique_affine()
    assert slice_axis(affine) == 1
    shape = (70, 20, 60)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    brain = ((ii - 35) / 30) ** 2 + ((kk - 30) / 25) ** 2 < 1
    image = np.where(brain, np.sin(ii / 9.0) + np.cos(kk / 7.0), 0).astype(np.float32)
    grid = SliceGrid.around(brain, affine, 32)
    net = grid.to_network(image)
    assert net.shape == (20, 32, 32)
    back = grid.to_native(net)
    assert back.shape == shape
    inner = brain & (np.abs(image) < 1.5)
    assert np.mean(np.abs(back - image)[inner]) < 0.1  # smooth image: the round trip is close
    # the square keeps the aspect ratio: one network pixel spans the same millimetres both ways
    vox = np.linalg.norm(affine[:3, :3], axis=0)
    assert np.isclose(grid.step[0] * vox[grid.axes[0]], grid.step[1] * vox[grid.axes[1]])


def test_flair_on_another_grid_is_resampled_with_a_notice_or_refused_when_apart():
    t1 = Volume(np.ones((20, 20, 10), np.float32), np.diag([2.0, 2.0, 4.0, 1.0]))
    flair = Volume(np.arange(40 * 40 * 20, dtype=np.float32).reshape(40, 40, 20), np.diag([1.0, 1.0, 2.0, 1.0]))
    warnings = []
    on_t1 = flair_on_t1_grid(t1, flair, warnings)
    assert on_t1.shape == t1.spatial_shape and "resampled onto the T1 grid" in warnings[0]
    assert np.isclose(on_t1[3, 4, 2], flair.data[6, 8, 4])  # voxel centres coincide: exact sample
    far = Volume(flair.data, flair.affine @ np.array([[1, 0, 0, 500], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    with pytest.raises(InputError, match="do not overlap"):
        flair_on_t1_grid(t1, far, [])


class _Recorder(torch.nn.Module):
    """Wraps a network and records the ET labels of every batch it sees."""

    def __init__(self, net):
        super().__init__()
        self.net, self.batches = net, []

    def forward(self, x, cond, t, et):
        self.batches.append(et.clone())
        return self.net(x, cond, t, et)


def test_sampler_is_deterministic_for_a_seed_with_both_labels_in_every_batch():
    torch.manual_seed(0)
    model = _Recorder(diffusion.ConditionalUNet(width=4, emb=16))
    cond = torch.randn(5, 2, 16, 16)
    a, seg = diffusion.sample_both_labels(model, cond, steps=3, seed=7, chunk=2)
    assert a.shape == (2, 5, 16, 16) and seg.shape == (5, 16, 16) and np.all((seg >= 0) & (seg <= 1))
    assert len(model.batches) == 3 * 3  # 3 chunks x 3 steps
    for et in model.batches:  # each forward pass holds both labels, half and half
        assert (et == 0).sum() == (et == 1).sum() > 0
    b, _ = diffusion.sample_both_labels(model, cond, steps=3, seed=7, chunk=5)  # other chunking, same noise
    assert np.allclose(a, b, atol=1e-5)
    c, _ = diffusion.sample_both_labels(model, cond, steps=3, seed=8, chunk=5)
    assert not np.allclose(a, c)
    assert not np.allclose(a[0], a[1])  # the label changes the synthesis
    assert diffusion.sampler_timesteps(4) == [999, 749, 500, 250]
    ab = diffusion.cosine_alpha_bar(torch.tensor([0, 500, 1000]))
    assert ab[0] > 0.99 and ab[1] < ab[0] and ab[2] < 1e-3


def test_contrastive_maximum_on_constructed_scores():
    plus = [0.9, 0.8, 0.7, 0.2]  # S+ = 3/4 of the tumor slices >= 0.5
    minus = [0.1, 0.6, 0.3, 0.2]  # S- = 1/4
    call = identification.contrastive_maximum(plus, minus)
    assert call.call == "disrupted" and call.s_enhancing == 0.75 and call.s_non_enhancing == 0.25
    assert call.probability >= 0.65 and call.reasons == []
    swapped = identification.contrastive_maximum(minus, plus)
    assert swapped.call == "intact" and np.isclose(swapped.probability, 1 - call.probability)
    tie = identification.contrastive_maximum([0.9, 0.1], [0.6, 0.2])  # S+ = S- = 0.5: abstain
    assert tie.call == "indeterminate" and "tie" in tie.reasons[0] and tie.contrastive_winner == "tie"
    biased = identification.contrastive_maximum(plus, minus, calibration=(8.0, -10.0))
    assert biased.probability < 0.35 and biased.call == "intact"  # the call follows p, not the maximum
    assert biased.contrastive_winner == "disrupted"
    a, b = identification.fit_platt([-0.8, -0.5, -0.1, 0.2, 0.4, 0.9], [0, 0, 1, 0, 1, 1])
    assert a > 0
    with pytest.raises(ValueError):
        identification.contrastive_maximum([], [])
    assert call.to_json()["per_label_scores"]["enhancing"] == 0.75


def test_autoencoder_reconstruction_loss_falls_on_a_tiny_set():
    torch.manual_seed(0)
    model = cae.ConvAutoencoder3D(width=4)
    grid = torch.linspace(-1, 1, 8)
    x = torch.stack([torch.tanh(grid[:, None, None] * s + grid[None, :, None] - grid[None, None, :]).expand(8, 8, 8)
                     for s in (0.5, 1.0, 1.5, 2.0)]).reshape(2, 2, 8, 8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = (model(x) - x).abs().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_clustered_reshape_groups_similar_sizes():
    boxes = [(70, 90, 78), (72, 92, 80), (150, 180, 140), (148, 176, 138), (151, 181, 139)]
    policy = cae.plan_reshape(boxes, "clustered", clusters=2)
    small, large = cae.target_shape(policy, (71, 91, 79)), cae.target_shape(policy, (149, 179, 139))
    assert small != large and all(v % 8 == 0 for v in small + large)
    assert cae.target_shape(cae.plan_reshape(boxes), (10, 10, 10)) == [48, 56, 48]
    brain = np.zeros((30, 34, 28), bool)
    brain[4:26, 5:30, 3:25] = True
    data = np.where(brain, 0.5, -1.0).astype(np.float32)
    net = cae.to_network([data, data], brain, (16, 16, 16))
    assert net.shape == (2, 16, 16, 16) and np.allclose(net, 0.5, atol=1e-5)
    back = cae.to_native(np.full((16, 16, 16), 2.0, np.float32), brain)
    assert np.allclose(back[brain], 2.0, atol=1e-5) and np.all(back[~brain] == 0)


def test_identifier_sees_a_window_centred_on_the_tumor():
    images = np.full((2, 40, 40), -1.0, np.float32)
    images[0, 30, 8] = 1.0
    roi = np.zeros((2, 40, 40), np.float32)
    roi[0, 29:32, 7:10] = 1  # centroid (30, 8): near the edge, so the window is padded with -1
    crops = identification.tumor_crops((images, images, images), roi, 16)
    assert crops.shape == (2, 3, 16, 16)
    assert crops[0, 0, 8, 8] == 1.0 and crops[0, 0].min() == -1.0
    model = identification.IdentificationCNN(width=4, crop=16)
    scores = identification.slice_scores(model, images, images, images, roi)
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))


def test_bundled_default_weights_say_what_they_were_trained_on_and_belong_together():
    from BBBAnomalyLib import weights
    from BBBAnomalyLib.structural.parameters import DEFAULT_CAE, DEFAULT_IDENTIFIER, DEFAULT_SYNTHESIS

    cards = {name: weights.entry(name) for name in (DEFAULT_SYNTHESIS, DEFAULT_IDENTIFIER, DEFAULT_CAE)}
    for name, card in cards.items():
        assert weights.sha256(weights.WEIGHTS_DIR / card["file"]) == card["sha256"], name
        assert "Not clinically validated" in card["disclaimer"], name
        assert card["initialised_from"]["sha256"] == weights.entry(card["initialised_from"]["name"])["sha256"], name
        if name == DEFAULT_CAE:
            continue
        # the real cases trained on are named, and the unlabelled one is said to be unused
        assert "TCGA-DU-7294" in card["trained_on"] and "TCGA-FG-6692" in card["trained_on"], name
        assert "phantoms" in card["trained_on"] and "BraTS-GLI-00001-000 not used" in card["trained_on"], name
    # the identifier scores syntheses of exactly the bundled diffusion model
    assert cards[DEFAULT_IDENTIFIER]["synthesis_sha256"] == cards[DEFAULT_SYNTHESIS]["sha256"]
    # the autoencoder: normal anatomy of several brains, no real case, z against held-apart normal brains
    cae = cards[DEFAULT_CAE]
    assert all(t in cae["trained_on"] for t in ("MNI152", "ICBM 2009a", "Colin27")) and "No real case" in cae["trained_on"]
    assert "held-apart" in cae["calibration"]["on"] and len(cae["calibration"]["scores"]) >= 10

"""Networks, synthetic anomalies and thresholds of the diffusion anomaly pipeline."""

import numpy as np
import pytest
import torch

from BBBAnomalyLib.dmri import thresholds as thr
from BBBAnomalyLib.dmri.anomalies import draw_anomalies
from BBBAnomalyLib.dmri.models import VAE, RecDiscNet, recdisc_loss, vae_loss

GRID = (16, 16, 16)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.05 * torch.rand((2, 8) + GRID, generator=g)
    brain = torch.zeros((2,) + GRID, dtype=torch.bool)
    brain[:, 3:13, 2:14, 3:13] = True
    return x * brain[:, None], brain


def test_network_shapes_and_ranges():
    x, brain = batch()
    vae = VAE(channels=8, grid=GRID, widths=(4, 8, 8), latent=6)
    recon, mu, logvar = vae(x)
    assert recon.shape == x.shape and mu.shape == (2, 6) and 0 <= recon.min() and recon.max() <= 1
    vae.eval()
    assert torch.equal(vae(x)[0], vae(x)[0])  # deterministic (z = μ) at inference
    rd = RecDiscNet(channels=8, grid=GRID, widths=(4, 8, 8), disc_filters=4)
    recon, logits = rd(x)
    assert recon.shape == x.shape and logits.shape == (2,) + GRID
    with pytest.raises(ValueError, match="divisible"):
        VAE(channels=8, grid=(15, 16, 16))


def test_vae_learns_to_reconstruct():
    torch.manual_seed(0)
    x, brain = batch()
    vae = VAE(channels=8, grid=GRID, widths=(4, 8, 8), latent=6)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        recon, mu, logvar = vae(x)
        loss = vae_loss(x, recon, mu, logvar, brain[:, None].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_recdisc_loss_weights_positives():
    x, brain = batch()
    labels = torch.zeros((2,) + GRID)
    labels[:, 5:8, 5:8, 5:8] = 1
    logits = torch.zeros((2,) + GRID)
    base = float(recdisc_loss(x, x, logits, labels))
    more = labels.clone()
    more[:, 8:10, 5:8, 5:8] = 1
    assert float(recdisc_loss(x, x, logits, more)) > base  # each positive costs 20× a negative


def test_anomalies_stay_in_the_brain_and_are_redrawn():
    x, brain = batch()
    x8 = x.repeat(4, 1, 1, 1, 1)
    b8 = brain.repeat(4, 1, 1, 1)
    out1, lab1 = draw_anomalies(x8, b8, torch.Generator().manual_seed(1), voxel_mm=4.0)
    out2, lab2 = draw_anomalies(x8, b8, torch.Generator().manual_seed(2), voxel_mm=4.0)
    assert lab1.sum() > 0 and not (lab1.bool() & ~b8).any()
    assert not torch.equal(lab1, lab2)  # a new generator per epoch/step: new anomalies
    assert torch.equal(out1[lab1[:, None].expand_as(out1) == 0], x8[lab1[:, None].expand_as(x8) == 0])
    assert out1.min() >= 0 and out1.max() <= 1
    assert torch.equal(x8, x.repeat(4, 1, 1, 1, 1))  # input untouched


@pytest.mark.parametrize("mode", ["directional", "isotropic"])
def test_anomaly_modes(mode):
    x, brain = batch()
    x = x.repeat(5, 1, 1, 1, 1)
    brain = brain.repeat(5, 1, 1, 1)
    out, lab = draw_anomalies(x, brain, torch.Generator().manual_seed(0), voxel_mm=4.0, kind=f"normal-half-{mode}")
    b = int(torch.nonzero(lab.sum(dim=(1, 2, 3)))[0])
    values = out[b][:, lab[b].bool()]  # (channels, voxels) of the anomaly
    if mode == "directional":  # one vector shared by all voxels (per ellipsoid)
        assert torch.unique(values, dim=1).shape[1] <= 2
    else:  # one value per voxel shared by all channels
        assert torch.allclose(values, values[:1].expand_as(values))
    # "half": centred on half the brain mean, well below the tissue's S/S0
    assert values.mean() < 0.75 * float(x[b][:, brain[b]].mean())


def test_thresholds():
    rng = np.random.default_rng(0)
    values = np.r_[rng.normal(0.1, 0.02, 5000), rng.normal(0.6, 0.05, 500)]
    t = thr.otsu_threshold(values)
    import SimpleITK as sitk  # an independent Otsu implementation as the reference

    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetNumberOfHistogramBins(256)
    otsu.Execute(sitk.GetImageFromArray(values.reshape(1, 1, -1)))
    assert t == pytest.approx(otsu.GetThreshold(), abs=0.01)
    assert ((values > t) == (np.arange(values.size) >= 5000)).mean() > 0.99
    score = np.zeros((30, 30, 30), np.float32)
    score[10:20, 10:20, 10:20] = 1.0
    assert thr.meanpool_threshold(score, (2.0, 2.0, 2.0), window_mm=20.0) == pytest.approx(1.0)
    assert thr.meanpool_threshold(score, (1.0, 1.0, 1.0), window_mm=20.0) == pytest.approx(1000 / 8000)
    score[2, 2, 2] = 1.0  # an isolated voxel: removed by the 3³ opening
    brain = np.ones_like(score, bool)
    mask = thr.anomaly_mask(score, brain, 0.5)
    assert not mask[2, 2, 2] and mask[15, 15, 15]
    assert thr.anomaly_mask(score, brain, 0.5, opening=False)[2, 2, 2]
    labels = score > 0.5
    oracle = thr.oracle_thresholds(labels.ravel(), (score + 0.01 * rng.random(score.shape)).ravel())
    assert set(oracle) == {"youden", "dice_optimal"}
    with pytest.raises(Exception, match="constant"):
        thr.otsu_threshold(np.ones(10))

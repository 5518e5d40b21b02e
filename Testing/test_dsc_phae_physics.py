"""PHAE's decoder physics and its training loop (no bundled weights needed)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib.dsc.phae import physics  # noqa: E402
from BBBAnomalyLib.dsc.phae.network import PHAE, fuse_batchnorm  # noqa: E402
from BBBAnomalyLib.phantoms import dsc_physics as phys  # noqa: E402

DT = 1.5
TIMES = np.arange(60) * DT
AIF = phys.gamma_variate_aif(TIMES, arrival=12.0)


def t(x):
    return torch.as_tensor(np.asarray(x, np.float64))


def test_lorentzian_residue_is_one_at_the_delay_and_integrates_to_mtt():
    r = physics.lorentzian_residue(4000, t([8.0]), t([3.0]))[0].numpy()
    assert r[:3].max() == 0 and r[3] == pytest.approx(1.0)
    # ∫_0^∞ = MTT; on 4000 frames the tail beyond loses 2·MTT/(π·T) ≈ 0.13 %
    assert r.sum() - 0.5 * r[3] == pytest.approx(8.0, rel=5e-3)


def test_binned_kernel_integrates_the_residue_exactly():
    mtt, delay = t([5.0, 2.0]), t([0.0, 1.3])
    kern = physics.lorentzian_kernel(30, mtt, delay).numpy()
    # sum over bins = ∫_Td^{29.5} R = (2 MTT/π) arctan(π (29.5 - Td) / (2 MTT))
    expected = (2 * mtt.numpy() / np.pi) * np.arctan(np.pi * (29.5 - delay.numpy()) / (2 * mtt.numpy()))
    np.testing.assert_allclose(kern.sum(axis=1), expected, rtol=1e-12)
    assert kern[1, 0] == 0.0 and kern[1, 1] > 0  # nothing before the delay (bin 1 = [0.5, 1.5])


@pytest.mark.parametrize("mtt_s, delay_s", [(3.0, 0.0), (6.0, 2.0), (12.0, 1.0)])
def test_a_lorentzian_curve_with_known_mtt_and_delay_is_recovered_by_the_decoder(mtt_s, delay_s):
    """Synthesise C with the Lorentzian residue (exact, fine grid), then grid-search the decoder's
    (MTT, delay) by its MAE: the minimum lies at the truth, and the flow is the truth's."""
    cbv, truth_flow = 0.04, 0.04 / mtt_s
    aif_fn = lambda tt: phys.gamma_variate_aif(tt, arrival=12.0)  # noqa: E731
    c = phys.tissue_concentration(TIMES, aif_fn, cbv, mtt_s, delay_s, residue="lorentzian", fine_dt=0.01)
    mtts = np.linspace(0.5, 20.0, 391) / DT
    delays = np.linspace(0.0, 4.0, 81) / DT
    mm, dd = (v.ravel() for v in np.meshgrid(mtts, delays, indexing="ij"))
    curves = t(np.repeat(c, mm.size, axis=0))
    fitted, flow = physics.decode(curves, t(AIF[None]), t(mm), t(dd))
    best = int(torch.argmin((fitted - curves).abs().mean(dim=1)))
    # 6 %: at MTT 3 s = 2 frames the AIF sampled every 1.5 s limits any discrete forward model
    assert mm[best] * DT == pytest.approx(mtt_s, rel=0.06)
    assert dd[best] * DT == pytest.approx(delay_s, abs=0.1)
    assert float(flow[best]) / DT == pytest.approx(truth_flow, rel=0.06)


def test_decoder_cbv_equals_the_ratio_of_integrals():
    """The model curve has the data's area (area amplitude), so its CBV = ∫Ĉ/∫Ca equals ∫C/∫Ca; the
    seed amplitude instead gives CBF·MTT = ∫C/∫Ca by construction."""
    rng = np.random.default_rng(0)
    c = t(phys.tissue_concentration(TIMES, AIF, rng.uniform(0.01, 0.08, 5), rng.uniform(2, 15, 5)))
    mtt, delay = t(rng.uniform(1, 10, 5)), t(rng.uniform(0, 2, 5))
    cbv_data = physics.area(c) / physics.area(t(AIF[None]))
    fitted, _ = physics.decode(c, t(AIF[None]), mtt, delay, amplitude="area")
    torch.testing.assert_close(physics.area(fitted) / physics.area(t(AIF[None])), cbv_data)
    _, flow = physics.decode(c, t(AIF[None]), mtt, delay, amplitude="seed")
    torch.testing.assert_close(flow * mtt, cbv_data)


def test_folded_batchnorm_gives_the_same_outputs():
    net = PHAE()
    for m in net.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(7, 2, 50)
    with torch.no_grad():
        ref = net.encoder.features(x)
    torch.testing.assert_close(fuse_batchnorm(net.encoder.features)(x), ref, rtol=1e-4, atol=1e-5)


def test_training_loss_falls_on_a_tiny_simulated_set():
    from BBBAnomalyLib.dsc.phae.training import simulated_cases, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: one thread is the fast and stable choice
    cases = simulated_cases(6, 256, seed=3, snr=1000.0)
    result = train(cases, epochs=6, batch=256, lr=3e-3, device="cpu", seed=0, log=lambda s: None)
    torch.set_num_threads(before)
    history = result["history"]
    assert history[-1] < 0.85 * history[0], history

"""PHAE's grid encoder (an MLP on a fixed time grid, its linear steps folded per case), the decoder's
convolution as one matrix per case, and the conditional-bias training term."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib.dsc.phae import PHAEModel, physics  # noqa: E402
from BBBAnomalyLib.dsc.phae.network import PHAE, curve_features, interpolation_matrix, normalise  # noqa: E402
from BBBAnomalyLib.dsc.phae.training import conditional_bias_loss, simulated_cases  # noqa: E402
from BBBAnomalyLib.phantoms import dsc_curves as dc  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: torch on one thread


def grid_net(seed=0):
    torch.manual_seed(seed)
    return PHAE(encoder="grid").double().eval()


def test_convolution_matrix_equals_the_fft_convolution():
    rng = np.random.default_rng(0)
    for n, lead in ((40, 0), (60, 7), (23, 3)):
        aif = torch.as_tensor(rng.random(n))
        kernel = torch.as_tensor(rng.random((5, n + lead)))
        ref = physics.convolve(aif[None], kernel, lead)
        # float64 FFT round trip of length 2(n + lead): a few ulp of the largest sums (~n)
        torch.testing.assert_close(kernel @ physics.convolution_matrix(aif, lead).T, ref, rtol=0, atol=1e-12)


def test_interpolation_matrix_is_np_interp_held_at_the_ends():
    dt, n = 1.7, 37
    offsets = torch.arange(-20.0, 70.0, 0.75, dtype=torch.float64)
    values = np.random.default_rng(1).random(n)
    for anchor in (3.0, 25.5, 60.0):  # grid starting before the first frame, inside, ending after the last
        m = interpolation_matrix(n, dt, offsets, anchor)
        expected = np.interp(anchor + offsets.numpy(), np.arange(n) * dt, values)
        np.testing.assert_allclose(m.numpy() @ values, expected, rtol=0, atol=1e-13)
        np.testing.assert_allclose(m.sum(dim=1).numpy(), 1.0, atol=1e-13)


def test_folded_first_layer_equals_the_explicit_mlp_on_the_grid():
    """The per-case folding (W₁·M, AIF/coverage/dt in the bias) is the MLP applied to the curve
    resampled onto the grid with np.interp, for any frame count and frame interval."""
    net = grid_net()
    enc = net.encoder
    for n, dt in ((24, 2.5), (60, 1.5), (150, 0.8)):
        case = dc.simulate_curve_case(np.random.default_rng(n), 16, dc.TRAINING, frame_interval=dt, n_frames=n)
        curves, aif = torch.as_tensor(case.curves, dtype=torch.float64), torch.as_tensor(case.aif[None], dtype=torch.float64)
        with torch.no_grad():
            out = net(curves, aif, dt)
            c_n, c_scale = normalise(curves)
            a_n, a_scale = normalise(aif)
            smooth = torch.nn.functional.avg_pool1d(a_n[:, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
            grid_t = float(torch.argmax(smooth)) * dt + enc.offsets.double().numpy()
            times = np.arange(n) * dt
            c_grid = torch.as_tensor(np.stack([np.interp(grid_t, times, row) for row in c_n.numpy()]))
            a_grid = torch.as_tensor(np.interp(grid_t, times, a_n[0].numpy()))
            covered = torch.as_tensor(((grid_t >= 0) & (grid_t <= times[-1])).astype(float))
            x = torch.cat([c_grid, curve_features(curves, c_n, c_scale, aif, a_scale)], dim=1)
            h = enc.curve_in(x) + enc.case_in(torch.cat([a_grid, covered, torch.tensor([np.log(dt)])]))
            z = enc.head(enc.body(torch.nn.functional.leaky_relu(h, enc.slope)))
        lo, hi = np.log(0.5), np.log(40.0)
        torch.testing.assert_close(out["mtt"] * dt, torch.exp(lo + (hi - lo) * torch.sigmoid(z[:, 0])))
        assert out["fitted"].shape == (16, n) and torch.isfinite(out["fitted"]).all()
        assert out["log_cbf_sd"].shape == (16,) and bool((out["log_cbf_sd"] > 0).all())


def test_grid_decoder_matches_the_fft_decoder():
    """The matrix form of the decoder gives the FFT decoder's model curves and flow for the same MTT and delay."""
    net = grid_net()
    case = dc.simulate_curve_case(np.random.default_rng(3), 32, dc.TRAINING, frame_interval=1.3, n_frames=70)
    curves, aif = torch.as_tensor(case.curves, dtype=torch.float64), torch.as_tensor(case.aif[None], dtype=torch.float64)
    with torch.no_grad():
        out = net(curves, aif, 1.3)
        c_n, c_scale = normalise(curves)
        a_n, a_scale = normalise(aif)
        fitted, flow = physics.decode(c_n, a_n, out["mtt"], out["delay"], lead=net.encoder.lead_frames(1.3))
    torch.testing.assert_close(out["fitted"], fitted * c_scale[:, None], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out["flow"], flow * c_scale / a_scale, rtol=1e-9, atol=1e-15)


def test_phae_model_with_the_grid_encoder_does_not_depend_on_the_chunking():
    net = PHAE(encoder="grid").eval()
    case = dc.simulate_curve_case(np.random.default_rng(4), 100, dc.TRAINING, frame_interval=1.5, n_frames=60)
    whole = PHAEModel(case.aif, 1.5, network=net).fit(case.curves)
    chunked = PHAEModel(case.aif, 1.5, network=net, chunk_voxels=7).fit(case.curves)
    for key in ("cbf", "tmax", "mtt", "fit_error", "cbf_uncertainty"):
        np.testing.assert_allclose(getattr(chunked, key), getattr(whole, key), rtol=1e-5, atol=1e-7, err_msg=key)
    # a curve's result does not depend on the other curves it is batched with
    alone = PHAEModel(case.aif, 1.5, network=net).fit(case.curves[5:6])
    np.testing.assert_allclose(alone.cbf, whole.cbf[5:6], rtol=1e-5)


def test_conditional_bias_loss_estimates_the_squared_bias_without_the_variance():
    gen = torch.Generator().manual_seed(0)
    k = 8
    for bias, sd in ((0.0, 0.8), (0.2, 0.8), (-0.3, 0.3)):
        r = 1.0 + bias + sd * torch.randn(40000, k, generator=gen, dtype=torch.float64)
        naive = float(((r.mean(dim=1) - 1.0) ** 2).mean())
        u = float(conditional_bias_loss(r.reshape(-1), k, unbiased=True))
        assert float(conditional_bias_loss(r.reshape(-1), k)) == pytest.approx(naive, rel=1e-12)
        # standard error of the U-statistic over 40k groups ≈ sd²·sqrt(2 / (K(K-1))) / 200 + 2|bias|·sd/√(40k·K)
        assert u == pytest.approx(bias ** 2, abs=0.01)
        assert naive == pytest.approx(bias ** 2 + sd ** 2 / k, abs=0.01)
    # shrinking an unbiased but noisy estimator towards zero lowers the naive penalty, not the U-statistic
    r = 1.0 + 0.8 * torch.randn(40000, k, generator=gen, dtype=torch.float64)
    shrunk = r / (1.0 + 0.64 / k)
    assert float(((shrunk.mean(1) - 1) ** 2).mean()) < float(((r.mean(1) - 1) ** 2).mean())
    assert (float(conditional_bias_loss(shrunk.reshape(-1), k, unbiased=True))
            > float(conditional_bias_loss(r.reshape(-1), k, unbiased=True)))
    # the default (naive) form: its minimiser over a common scale a is 1 / (1 + var / K), not 1
    scales = np.linspace(0.8, 1.1, 31)
    losses = [float(conditional_bias_loss((a * r).reshape(-1), k)) for a in scales]
    assert scales[int(np.argmin(losses))] == pytest.approx(1.0 / (1.0 + 0.64 / k), abs=0.011)


def test_simulated_groups_share_their_truth_and_differ_in_their_noise():
    cases = simulated_cases(2, 64, seed=7, repeats=8)
    for c in cases:
        cbf = c.truth["cbf"].reshape(8, 8)
        assert c.truth["group_size"] == 8
        np.testing.assert_array_equal(cbf, cbf[:, :1].repeat(8, axis=1))
        assert len(np.unique(cbf[:, 0])) == 8
        curves = c.curves.reshape(8, 8, -1)
        assert np.all(np.abs(curves[:, 0] - curves[:, 1]).max(axis=-1) > 0)  # other noise in each realisation


def test_training_with_groups_keeps_them_whole_in_every_batch():
    from BBBAnomalyLib.dsc.phae.training import train

    cases = simulated_cases(3, 96, seed=8, repeats=8)
    seen = []

    class Spy(PHAE):
        def forward(self, curves, aif, dt=None, case=None):
            seen.append(curves.detach().clone())
            return super().forward(curves, aif, dt, case)

    torch.manual_seed(0)
    net = Spy(encoder="grid")
    result = train(cases, epochs=1, batch=32, lr=1e-3, device="cpu", network=net, bias_weight=1.0, log=lambda s: None)
    assert np.isfinite(result["history"]).all()
    groups = {c.curves[g * 8:(g + 1) * 8].tobytes() for c in cases for g in range(12)}
    for batch in seen:
        assert batch.shape[0] % 8 == 0
        for g in range(batch.shape[0] // 8):
            assert batch[g * 8:(g + 1) * 8].numpy().tobytes() in groups


def test_folded_inference_gives_the_training_forward_outputs():
    net = grid_net(1)
    case = dc.simulate_curve_case(np.random.default_rng(5), 64, dc.TRAINING, frame_interval=1.1, n_frames=90)
    curves, aif = torch.as_tensor(case.curves, dtype=torch.float64), torch.as_tensor(case.aif[None], dtype=torch.float64)
    with torch.no_grad():
        terms = net.case_terms(aif, 1.1)
        ref = net(curves, aif, 1.1, case=terms)
        out_buffer = torch.empty_like(curves)
        fast = net.infer(curves, terms, out_buffer)
    for key in ("mtt", "delay", "flow", "loss", "log_cbf_sd", "fitted"):
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-9, atol=1e-12, msg=key)
    assert fast["fitted"].data_ptr() == out_buffer.data_ptr()
    err = torch.linalg.vector_norm(ref["fitted"] - curves, dim=1) / torch.linalg.vector_norm(curves, dim=1)
    torch.testing.assert_close(fast["fit_error"], err, rtol=1e-9, atol=1e-12)


def test_bundled_grid_weights_load_and_their_card_says_how_they_were_trained():
    from BBBAnomalyLib import weights
    from BBBAnomalyLib.dsc.phae import load_network

    net, card = load_network("dsc-phae-grid")
    assert card["sha256"] == weights.sha256(weights.WEIGHTS_DIR / card["file"]) and not net.training
    assert net.is_grid and card["config"]["encoder"] == "grid"
    assert "SUPERVISED" in card["loss"] and "conditional bias" in card["loss"] and "self-supervised" in card["loss"]
    assert "train_phae_world.py" in card["command"] and card["repeats"] > 1 and card["training_domain"]
    assert (weights.WEIGHTS_DIR / card["file"]).stat().st_size < 200_000


def test_adapting_grid_weights_recomputes_the_folded_case_terms():
    case = dc.simulate_curve_case(np.random.default_rng(9), 2000, dc.TRAINING, frame_interval=1.5, n_frames=60)
    model = PHAEModel(case.aif, 1.5, weights="dsc-phae-grid")
    before = model.fit(case.curves, keep_curves=False)
    info = model.adapt(case.curves, steps=10, batch=512)
    after = model.fit(case.curves, keep_curves=False)
    assert info["steps"] == 10 and info["loss_after"] <= info["loss_before"] * 1.02
    # the fit uses the adapted weights (the per-case folding is rebuilt from them, not cached from before)
    assert np.abs(after.loss - before.loss).max() > 0
    with torch.inference_mode():
        ref = model.network(torch.as_tensor(case.curves[:50]), model._aif_t, 1.5)
    np.testing.assert_allclose(after.cbf[:50], (ref["flow"] * torch.exp(-0.5 * ref["log_cbf_sd"] ** 2)).numpy() / 1.5,
                               rtol=1e-4)

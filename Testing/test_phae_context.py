"""Issue 14, round 5: the grid encoder's CASE context (``GridEncoder(context=...)``, ``network.case_context``): one
vector per case, from all of its curves, meant to reveal how dispersed the measured AIF is."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib import weights as registry  # noqa: E402
from BBBAnomalyLib.dsc.phae import PHAEModel  # noqa: E402
from BBBAnomalyLib.dsc.phae.network import PHAE, case_context  # noqa: E402
from BBBAnomalyLib.dsc.phae.training import TrainingCase, train  # noqa: E402
from BBBAnomalyLib.phantoms import dsc_curves as dc  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
THETAS = (0.07, 0.025)
GRID = np.arange(-6.0, 12.0 + 1e-9, 1.0)


def context_net(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = PHAE(encoder="grid", deconv=[0.2, 0.07, 0.025], context={}).to(dtype).eval()
    with torch.no_grad():  # as after training: the context weights are not zero
        net.encoder.context_in.weight.normal_(0.0, 0.5)
    return net


def numpy_context(curves, aif, dt):
    """Independent reference: Tikhonov deconvolution on the zero-padded FFT, np.interp onto the lag grid, medians."""
    n = aif.size
    sm = np.convolve(aif, np.ones(3) / 3.0, mode="valid")
    edge = max(abs(aif[0] + aif[1]), abs(aif[-2] + aif[-1])) / 2.0
    a = aif / max(np.abs(sm).max(), edge)
    w = np.ones(n)
    w[[0, -1]] = 0.5
    spec = np.fft.rfft(a / (a @ w * dt) * dt, 2 * n)
    lags = np.arange(-n, n) * dt  # the padded transform's negative lags wrap to its end
    out = []
    for theta in THETAS:
        filt = np.conj(spec) / (np.abs(spec) ** 2 + (theta * np.abs(spec).max()) ** 2)
        r = np.fft.irfft(filt * np.fft.rfft(curves, 2 * n), 2 * n)
        r = np.concatenate([r[:, n:], r[:, :n]], axis=1)
        g = np.array([np.interp(GRID, lags, row) for row in r])
        peak = g.max(axis=1)
        ok = peak > 0
        out.append(np.median(g[ok] / peak[ok, None], axis=0))
    d2 = np.abs(curves[:, 2:] - 2 * curves[:, 1:-1] + curves[:, :-2]).mean(axis=1)
    noise = np.median(np.log(d2 / np.abs(curves).max(axis=1) + 1e-6))
    return np.concatenate(out + [[noise]])


def test_case_context_equals_an_independent_numpy_computation_and_is_scale_free():
    rng = np.random.default_rng(0)
    for dt, frames in ((1.2, 75), (2.0, 45)):
        case = dc.simulate_curve_case(rng, 301, dc.TRAINING_WIDE, frame_interval=dt, n_frames=frames)
        c, a = case.curves.astype(np.float64), case.aif.astype(np.float64)
        got = case_context(torch.as_tensor(c), torch.as_tensor(a), dt).numpy()
        # float64 FFTs and medians of the same numbers (the median of an odd count is one of them): a few ulp of
        # the residues' magnitude (O(1) after normalising by the peak), far below any change that matters
        np.testing.assert_allclose(got, numpy_context(c, a, dt), rtol=0, atol=1e-9)
        scaled = case_context(torch.as_tensor(3.7 * c), torch.as_tensor(0.2 * a), dt).numpy()
        np.testing.assert_allclose(scaled, got, rtol=0, atol=1e-9)


def test_case_context_moves_with_the_dispersion_of_the_measured_aif():
    """Same tissues, the measured AIF dispersed by τ = 0 or 2 s: the dispersed AIF arrives later than the tissues'
    true input, so the median residue rises before lag 0 and the context moves there (what the encoder is to read)."""
    base = dc.replace(dc.TRAINING_WIDE, aif_families=("gamma",), aif_dispersion_kernel="exponential",
                      snr=(1e4, 1e4), partial_volume=(1.0, 1.0), tissue_dispersion=(0.0, 0.0))
    early = {}
    for tau in (0.0, 2.0):
        rng = np.random.default_rng(5)
        case = dc.simulate_curve_case(rng, 200, dc.replace(base, aif_dispersion=(tau, tau)), frame_interval=1.0,
                                      n_frames=90, delay=0.0, concentration_input=True)
        ctx = case_context(torch.as_tensor(case.curves).double(), torch.as_tensor(case.aif).double(), 1.0).numpy()
        early[tau] = ctx[list(GRID).index(-2.0)]  # θ = 0.07, lag -2 s
    assert early[2.0] > early[0.0] + 0.1


def test_context_encoder_reads_the_whole_case_and_round_trips_through_a_card(tmp_path):
    rng = np.random.default_rng(1)
    net = context_net(2)
    case = dc.simulate_curve_case(rng, 400, dc.TRAINING_WIDE, frame_interval=1.5, n_frames=60)
    x, aif = torch.as_tensor(case.curves).double(), torch.as_tensor(case.aif[None]).double()
    ctx = net.case_context(x, aif, 1.5)
    with torch.no_grad():
        ref = net(x, aif, 1.5)  # context computed from these (all) curves
        same = net(x, aif, 1.5, context=ctx)
        other = net(x, aif, 1.5, context=torch.zeros_like(ctx))
    torch.testing.assert_close(same["flow"], ref["flow"], rtol=0, atol=0)
    assert float((other["mtt"] - ref["mtt"]).abs().max()) > 1e-3  # the context is wired in
    fast = net.infer(x, net.case_terms(aif, 1.5, ctx))
    for key in ("mtt", "delay", "flow", "log_cbf_sd"):
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError):
        net.case_terms(aif, 1.5)  # a context encoder without its context
    # card round trip; PHAEModel's context comes from all voxels, not from each chunk
    net32 = net.float()
    path = tmp_path / "dsc-phae-ctx.pt"
    torch.save(net32.state_dict(), path)
    registry.write_entry({"name": "dsc-phae-ctx", "model": "BBBAnomalyLib.dsc.phae.network:PHAE",
                          "config": net32.config}, path)
    assert net32.config["context"] == {"thresholds": list(THETAS), "grid": [-6.0, 12.0, 1.0]}
    fit = PHAEModel(case.aif, 1.5, weights=str(path), chunk_voxels=64).fit(case.curves)
    whole = PHAEModel(case.aif, 1.5, weights=str(path), chunk_voxels=4096).fit(case.curves)
    np.testing.assert_allclose(fit.cbf, whole.cbf, rtol=1e-5, atol=0)
    with torch.no_grad():
        ref32 = net32(torch.as_tensor(case.curves), torch.as_tensor(case.aif[None]), 1.5)
    np.testing.assert_allclose(fit.tmax, ref32["delay"].numpy() * 1.5, rtol=1e-4, atol=1e-4)
    # encoders without a context have no such weights (earlier cards load unchanged)
    assert not any("context_in" in k for k in PHAE(encoder="grid", deconv=[0.2]).state_dict())


def test_training_passes_each_case_its_own_context_and_learns_its_weights():
    cases = [TrainingCase(c.curves, c.aif, c.frame_interval, f"s{i}", {"cbf": c.truth["cbf"], "delay": c.truth["delay"]})
             for i, c in enumerate(dc.simulate_curve_cases(3, 256, seed=4, settings=dc.TRAINING_WIDE))]
    net = PHAE(encoder="grid", deconv=[0.2, 0.07], context={})
    assert float(net.encoder.context_in.weight.detach().abs().max()) == 0.0  # starts as the encoder without context
    out = train(cases, epochs=1, batch=128, network=net, device="cpu", log=lambda s: None)
    assert float(out["network"].encoder.context_in.weight.detach().abs().max()) > 0.0

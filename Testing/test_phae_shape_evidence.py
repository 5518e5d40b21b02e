"""Issue 14, round 16: the case's evidence for each capillary transit shape (dsc/phae/shape_evidence.py), the
case-context input of the round's candidate networks."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from BBBAnomalyLib.dsc.phae import shape_evidence as se
from BBBAnomalyLib.dsc.phae.network import PHAE, SHAPE_EVIDENCE_SCALE, case_context
from BBBAnomalyLib.perfusion.population_aif import georgiou_aif
from BBBAnomalyLib.phantoms import dsc_physics as phys

ROOT = Path(__file__).resolve().parents[1]


def _aif(t):
    return georgiou_aif(np.asarray(t, float) / 60.0, delay=12.0 / 60.0)


def _curves(shape, dt=1.0, frames=90, snr=None, seed=3):
    """The OSIPI-style object's 14 tissues (CBF 10-120 ml/100 g/min) x 40 curves under one transit shape."""
    times = np.arange(frames) * dt
    cbf = np.repeat(np.linspace(10.0, 120.0, 14), 40)
    cbv = np.repeat(np.linspace(1.0, 8.0, 14), 40)
    conc = phys.tissue_concentration(times, _aif, cbv / 100.0, 60.0 * cbv / cbf, 0.0, 0.0, residue=shape)
    aif = _aif(times)
    if snr is not None:
        conc = conc + 0.04 * aif.max() / snr * np.random.default_rng(seed).standard_normal(conc.shape)
    return torch.from_numpy(conc), torch.from_numpy(aif)


@pytest.mark.parametrize("k", [1.0, 1.5, 3.0, 8.0])
def test_gamma_residue_integral_is_the_integral_of_the_residue(k):
    """∫₀ᵗ R in closed form against the trapezoid rule on R = 1 - P(k, k t / MTT); ∫₀^∞ R = MTT."""
    from scipy.special import gammainc

    mtt = 4.0
    t = np.linspace(0.0, 60.0, 600001)
    r = 1.0 - gammainc(k, k * t / mtt)
    numeric = np.concatenate([[0.0], np.cumsum(0.5 * (r[1:] + r[:-1]) * np.diff(t))])
    shape = "exponential" if k == 1.0 else f"gamma{k:g}"
    closed = se.residue_integral(shape, torch.from_numpy(t), torch.full((t.size,), mtt, dtype=torch.float64)).numpy()
    # the trapezoid rule's error is h^2/12 x max|R'| x t: ~1e-9 here
    np.testing.assert_allclose(closed, numeric, atol=1e-7)
    assert closed[-1] == pytest.approx(mtt, rel=1e-6)  # t = 15 MTT: the tail left is e^-15 ≈ 3e-7 at most (k = 1)


def test_exponential_and_box_integrals_in_closed_form():
    t = torch.linspace(0.0, 30.0, 301, dtype=torch.float64)
    mtt = torch.full_like(t, 5.0)
    np.testing.assert_allclose(se.residue_integral("exponential", t, mtt).numpy(),
                               (5.0 * (1.0 - torch.exp(-t / 5.0))).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(se.residue_integral("box", t, mtt).numpy(), torch.minimum(t, mtt).numpy(), rtol=0, atol=0)


def test_unknown_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown transit shape"):
        se._gamma_k("triangle")
    with pytest.raises(ValueError, match="k must be >= 1"):
        se._gamma_k("gamma0.5")


@pytest.mark.parametrize("shape", se.EVIDENCE_SHAPES)
def test_noiseless_curves_name_the_shape_they_were_made_with(shape):
    """The generator (dsc_physics: fine grid, continuous AIF) and the evidence's templates (binned residue, sampled
    AIF) discretise differently; the right shape must still fit clearly best."""
    curves, aif = _curves(shape)
    ev = se.evidence(curves, aif, 1.0)
    assert ev.shape == (len(se.EVIDENCE_SHAPES),)
    assert se.EVIDENCE_SHAPES[int(ev.argmin())] == shape
    assert float(ev.min()) == 0.0
    others = np.delete(ev.numpy(), se.EVIDENCE_SHAPES.index(shape))
    assert others.min() > 0.1  # the nearest other shape explains the curves at least 10 % worse (log ΣRSS)


@pytest.mark.parametrize("shape", ["exponential", "gamma", "box"])
def test_at_snr_20_the_case_still_names_its_shape(shape):
    """560 noisy curves: the summed residual still picks the shape (round 15 measured it per 100-voxel ROI)."""
    curves, aif = _curves(shape, snr=20)
    assert se.EVIDENCE_SHAPES[int(se.evidence(curves, aif, 1.0).argmin())] == shape


def test_the_evidence_is_free_of_units():
    curves, aif = _curves("gamma", snr=50)
    a = se.evidence(curves, aif, 1.0)
    b = se.evidence(curves * 7.0, aif * 0.3, 1.0)
    # the same least-squares problems scaled: only rounding differs (float64, sums of ~1e3 terms)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)


def test_a_context_network_reads_the_evidence_and_old_configs_are_unchanged():
    curves, aif = _curves("box", snr=50)
    plain = case_context(curves.float(), aif.float(), 1.0)
    with_ev = case_context(curves.float(), aif.float(), 1.0, shape_evidence=se.EVIDENCE_SHAPES)
    assert with_ev.shape[0] == plain.shape[0] + len(se.EVIDENCE_SHAPES)
    torch.testing.assert_close(with_ev[:plain.shape[0]], plain)
    torch.testing.assert_close(with_ev[plain.shape[0]:].double(),
                               SHAPE_EVIDENCE_SCALE * se.evidence(curves.float(), aif.float(), 1.0).double(),
                               atol=1e-5, rtol=0)
    net = PHAE(encoder="grid", context={"shape_evidence": list(se.EVIDENCE_SHAPES)})
    assert net.config["context"]["shape_evidence"] == list(se.EVIDENCE_SHAPES)
    assert net.encoder.context_in.in_features == plain.shape[0] + len(se.EVIDENCE_SHAPES)
    ctx = net.case_context(curves.float(), aif.float(), 1.0)
    torch.testing.assert_close(ctx, with_ev)
    with torch.no_grad():
        out = net(curves.float()[:8], aif.float()[None], 1.0, context=ctx)
    assert torch.isfinite(out["flow"]).all()
    assert "shape_evidence" not in PHAE(encoder="grid", context={}).config["context"]
    with pytest.raises(ValueError, match="unknown transit shape"):
        PHAE(encoder="grid", context={"shape_evidence": ["triangle"]})


def test_the_training_script_wants_the_context_for_the_evidence():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_phae_world.py"), "--shape-evidence",
                        "--cases", "1", "--out", "/nonexistent/never"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: --shape-evidence is part of the case context: add --context"]


# --- a network TOLD the transit shape (round 16's candidate B) ------------------------------------------------------
def test_homogeneity_codes():
    assert [se.homogeneity_code(s) for s in ("exponential", "lorentzian", "gamma", "gamma8", "box")] == \
        pytest.approx([1.0, 1.0, 1.0 / 3.0, 1.0 / 8.0, 0.0])


def _told_network():
    torch.manual_seed(0)
    net = PHAE(encoder="grid", shape_code=True).eval()
    with torch.no_grad():
        net.encoder.shape_in.weight.normal_()  # zero-initialised by nothing: make the code matter
    return net


def test_a_case_wide_code_folded_into_the_bias_equals_the_per_curve_code():
    net = _told_network().double()  # float64: the paths differ only in the order of the sums
    assert net.needs_shape and net.config["shape_code"] is True
    curves, aif = _curves("gamma", snr=50)
    x, a = curves[:64], aif[None]
    with torch.no_grad():
        per_curve = net(x, a, 1.0, shape_code=torch.full((64,), 1.0 / 3.0, dtype=torch.float64))
        folded = net(x, a, 1.0, case=net.case_terms(a, 1.0, shape_code=1.0 / 3.0))
        fast = net.infer(x, net.case_terms(a, 1.0, shape_code=1.0 / 3.0))
        other = net(x, a, 1.0, shape_code=torch.zeros(64, dtype=torch.float64))
    torch.testing.assert_close(folded["flow"], per_curve["flow"], rtol=1e-9, atol=0)
    torch.testing.assert_close(fast["flow"], per_curve["flow"], rtol=1e-9, atol=0)
    assert not torch.allclose(other["flow"], per_curve["flow"])  # the code changes the reading
    with pytest.raises(ValueError, match="transit shape"):
        net(x, a, 1.0)
    with pytest.raises(ValueError, match="transit shape"):
        net.infer(x, net.case_terms(a, 1.0))
    assert "shape_code" not in PHAE(encoder="grid").config  # older cards and checksums unchanged


def test_the_model_tells_the_network_the_cases_best_shape():
    from BBBAnomalyLib.dsc.phae import PHAEModel

    net = _told_network()
    curves, aif = _curves("box", dt=1.5, frames=60, snr=50)
    model = PHAEModel(aif.float().numpy(), 1.5, network=net)
    fit = model.fit(curves.float().numpy(), keep_curves=False)
    assert model.transit_shape == "box"
    a = aif.float()[None]
    with torch.no_grad():
        told = net(curves.float(), a, 1.5, shape_code=torch.zeros(curves.shape[0]))
    # an in-memory network's card has no cbf_estimate: the mean estimate flow·exp(-s²/2)
    expected = told["flow"] / 1.5 * torch.exp(-0.5 * told["log_cbf_sd"] ** 2)
    np.testing.assert_allclose(fit.cbf, expected.numpy(), rtol=1e-4)


def test_training_reads_each_simulated_curves_shape_and_refuses_cases_without_one():
    from BBBAnomalyLib.core.errors import InputError
    from BBBAnomalyLib.dsc.phae.training import TrainingCase, simulated_cases, train

    cases = simulated_cases(2, 64, seed=3)
    assert all(np.asarray(c.truth["shape_code"]).shape == (64,) for c in cases)
    from BBBAnomalyLib.phantoms.dsc_curves import simulate_curve_cases

    raw = simulate_curve_cases(2, 64, seed=3)
    for c, r in zip(cases, raw):
        np.testing.assert_allclose(c.truth["shape_code"], [se.homogeneity_code(str(n)) for n in r.truth["residue"]])
    out = train(cases, epochs=1, batch=32, device="cpu", network=PHAE(encoder="grid", shape_code=True), log=lambda *a: None)
    assert len(out["history"]) == 1 and np.isfinite(out["history"][0])
    real = [TrainingCase(cases[0].curves, cases[0].aif, cases[0].frame_interval)]
    with pytest.raises(InputError, match="transit shape"):
        train(real, epochs=1, device="cpu", network=PHAE(encoder="grid", shape_code=True), log=lambda *a: None)


def test_the_training_script_refuses_a_told_conv_network():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_phae_world.py"), "--shape-code", "--encoder", "conv",
                        "--cases", "1", "--out", "/nonexistent/never"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: --shape-code needs the grid encoder"]


def test_the_geometric_mean_statistic_and_the_echo_time_weights():
    curves, aif = _curves("gamma", snr=50)
    rss = se.voxel_rss(curves, aif, 1.0)
    # weights exp(-2·TE·ΔR2*) -> 1 as TE -> 0: the unweighted fit
    np.testing.assert_allclose(se.voxel_rss(curves, aif, 1.0, echo_time=1e-12).numpy(), rss.numpy(), rtol=1e-9)
    weighted = se.voxel_rss(curves, aif, 1.0, echo_time=0.5)
    assert (weighted < rss).all()  # every weight is below 1 where the curve is positive
    log_stat = se.evidence(curves, aif, 1.0, statistic="log").numpy()
    kept = se.voxel_rss(se.informative(curves), aif, 1.0)
    expected = torch.log(kept).mean(dim=0)
    np.testing.assert_allclose(log_stat, (expected - expected.min()).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="statistic"):
        se.evidence(curves, aif, 1.0, statistic="median")


def test_a_given_transit_shape_is_told_instead_of_the_estimate_and_a_bad_one_refused():
    from BBBAnomalyLib.core.errors import InputError
    from BBBAnomalyLib.dsc.phae import PHAEModel

    net = _told_network()
    curves, aif = _curves("box", dt=1.5, frames=60, snr=50)
    model = PHAEModel(aif.float().numpy(), 1.5, network=net, transit_shape="exponential")
    fit = model.fit(curves.float().numpy(), keep_curves=False)
    assert model.transit_shape == "exponential"  # the evidence would say box (test above)
    with torch.no_grad():
        told = net(curves.float(), aif.float()[None], 1.5, shape_code=torch.ones(curves.shape[0]))
    expected = told["flow"] / 1.5 * torch.exp(-0.5 * told["log_cbf_sd"] ** 2)
    np.testing.assert_allclose(fit.cbf, expected.numpy(), rtol=1e-4)
    with pytest.raises(InputError, match="unknown transit shape"):
        PHAEModel(aif.float().numpy(), 1.5, network=net, transit_shape="triangle")


def test_the_object_part_tells_each_shape_its_truth(tmp_path):
    """phae_world.py object --told-shape truth: each residue's rows come from a model told that residue (the
    Lorentzian as the exponential), labelled so."""
    from BBBAnomalyLib.dsc.phae.training import save_weights

    sys.path.insert(0, str(ROOT / "scripts"))
    import phae_world

    path = save_weights(_told_network(), tmp_path, "told", {"cbf_estimate": "median"})
    out = tmp_path / "o.json"
    assert phae_world.main(["object", "--told-shape", "truth", "--weights", str(path), "--residues", "box",
                            "lorentzian", "--out", str(out)]) == 0
    import json

    res = json.loads(out.read_text(encoding="utf-8"))
    label = f"{tmp_path.name}/told"
    assert f"PHAE {label} told box" in next(iter(res["box"].values()))
    assert f"PHAE {label} told exponential" in next(iter(res["lorentzian"].values()))

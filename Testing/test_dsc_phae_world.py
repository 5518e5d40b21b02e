"""PHAE beyond the phantom: the wide simulated generator, negative delays, the supervised term, the
per-voxel trust map (phae_fit_error) and the out-of-distribution warnings."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib.dsc import DSCParameters, run_dsc  # noqa: E402
from BBBAnomalyLib.dsc.phae import PHAEModel, physics  # noqa: E402
from BBBAnomalyLib.dsc.phae.domain import case_statistics, out_of_domain  # noqa: E402
from BBBAnomalyLib.phantoms import dsc_curves as dc  # noqa: E402
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom  # noqa: E402

WORLD = "dsc-phae-world"


# torch on one thread (conftest); noiseless curves on purpose, outside the weights' training domain
pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:.*outside the range the PHAE weights:UserWarning")]


def test_generator_draws_the_wide_distribution_and_keeps_the_held_apart_family_out():
    cases = dc.simulate_curve_cases(12, 64, seed=1)
    families = {c.info["aif_family"] for c in cases}
    assert families <= set(dc.TRAINING.aif_families) and "georgiou" not in families
    dts = [c.frame_interval for c in cases]
    assert len(set(dts)) == 12 and min(dts) < 1.2 and max(dts) > 2.0  # a continuous range of frame intervals
    assert any(c.info["concentration_input"] for c in cases) and any(not c.info["concentration_input"] for c in cases)
    delays = np.concatenate([c.truth["delay"] for c in cases])
    assert delays.min() < -1.0 and delays.max() > 2.0  # both signs
    assert set(np.concatenate([c.truth["residue"] for c in cases])) == set(dc.RESIDUE_FAMILIES)
    held = dc.simulate_curve_case(np.random.default_rng(2), 16, dc.HELD_APART)
    assert held.info["aif_family"] == "georgiou" and held.frame_interval == 1.0
    for c in cases + [held]:
        assert np.isfinite(c.curves).all() and c.curves.shape == (len(c.truth["cbf"]), c.aif.size)


def test_truth_is_relative_to_the_measured_aif_area():
    rng = np.random.default_rng(3)
    case = dc.simulate_curve_case(rng, 8, dc.replace(dc.TRAINING, partial_volume=(0.7, 0.7), leaky_fraction=0.0), snr=1e6,
                                  concentration_input=True, mtt=4.0, cbv=0.04, delay=0.0, residue="exponential")
    # a partial-volumed AIF (70 % artery) has a smaller area, so the recoverable CBF is larger than CBV/MTT
    assert np.all(case.truth["cbf"] > 0.01 * 1.1)
    cbv_measured = np.trapezoid(case.curves, dx=case.frame_interval, axis=1) / np.trapezoid(case.aif, dx=case.frame_interval)
    np.testing.assert_allclose(cbv_measured, case.truth["cbv"], rtol=0.1)  # the window cuts 4-7 % of the tail


def test_decoder_reaches_negative_delays_with_a_lead():
    n = 60
    t = torch.arange(n, dtype=torch.float64)
    aif = (t - 10).clamp_min(0) ** 3 * torch.exp(-(t - 10).clamp_min(0) / 1.5)
    aif = (aif / aif.max())[None, :]
    mtt, true_delay = torch.tensor([4.0], dtype=torch.float64), torch.tensor([-2.5], dtype=torch.float64)
    target, _ = physics.decode(torch.ones(1, n, dtype=torch.float64), aif, mtt, true_delay, lead=6)
    target = target / target.max()
    errors = {}
    for lead, delay in ((6, -2.5), (0, 0.0)):
        fitted, _ = physics.decode(target, aif, mtt, torch.tensor([delay], dtype=torch.float64), lead=lead)
        errors[lead] = float((fitted - target).abs().max())
    assert errors[6] < 1e-9 < 0.05 < errors[0]  # exact with the lead; clipped at zero delay it cannot fit


@pytest.mark.parametrize("weights", [WORLD, "dsc-phae-grid"])
def test_fit_error_map_is_higher_where_the_curve_does_not_fit(weights):
    rng = np.random.default_rng(4)
    case = dc.simulate_curve_case(rng, 200, dc.HELD_APART, snr=200.0, tissue_gain=4.0, mtt=4.0, cbv=0.04, delay=0.0)
    curves = case.curves.copy()
    bad = np.arange(100, 200)
    # non-physical curves: the same values in reversed time (enhancement before the bolus, none after)
    curves[bad] = curves[bad][:, ::-1]
    fit = PHAEModel(case.aif, case.frame_interval, weights=weights).fit(curves)
    assert np.median(fit.fit_error[bad]) > 3 * np.median(fit.fit_error[:100])
    assert fit.cbf_uncertainty is not None and np.all(fit.cbf_uncertainty > 0)


@pytest.mark.parametrize("weights", [WORLD, "dsc-phae-grid"])
def test_run_dsc_writes_the_trust_maps_and_warns_outside_the_training_domain(weights):
    ph = make_dsc_phantom(snr=100, slices=2, frame_interval=5.0, duration=150.0)  # 5 s frames: never trained on
    m = ph.masks
    res = run_dsc(ph.signal, DSCParameters(method="phae", phae_weights=weights, kh=1.0, density=1.0, device="cpu"),
                  aif_mask=m["aif"], brain_mask=m["brain"])
    assert {"phae_fit_error", "phae_cbf_uncertainty"} <= set(res.maps)
    assert np.isfinite(res.maps["phae_fit_error"].data[m["brain"]]).all()
    assert any("frame interval 5 s is outside the range" in w for w in res.report["warnings"])
    assert res.report["phae"]["case_statistics"]["frame_interval_s"] == 5.0


def test_no_domain_warning_inside_the_training_ranges():
    card_domain = {"frame_interval_s": [0.8, 2.5], "duration_s": [50.0, 150.0]}
    case = dc.simulate_curve_case(np.random.default_rng(5), 64, dc.TRAINING, frame_interval=1.5, n_frames=60)
    stats = case_statistics(case.curves, case.aif, case.frame_interval)
    assert out_of_domain(stats, card_domain) == []
    assert len(out_of_domain({**stats, "frame_interval_s": 5.0}, card_domain)) == 1


def test_case_statistics_in_blocks_equal_the_whole_float64_computation(monkeypatch):
    """The tissue CNR is computed in float64 blocks of rows (memory); the numbers are those of the whole array."""
    from BBBAnomalyLib.dsc.phae import domain

    case = dc.simulate_curve_case(np.random.default_rng(11), 300, dc.TRAINING, frame_interval=1.3, n_frames=70)
    c = case.curves.astype(float)
    noise = np.median(np.abs(np.diff(c, axis=1)), axis=1) / (0.6745 * np.sqrt(2.0))
    expected = np.median(np.abs((c[:, :-2] + c[:, 1:-1] + c[:, 2:]) / 3.0).max(axis=1) / np.maximum(noise, 1e-12))
    monkeypatch.setattr(domain, "_BLOCK", 7)  # 300 rows: 43 blocks, the last one short
    assert case_statistics(case.curves, case.aif, case.frame_interval)["curve_cnr"] == expected
    # more rows than max_curves: an even pick of rows, the same for any block size
    picked = case_statistics(case.curves, case.aif, case.frame_interval, max_curves=100)["curve_cnr"]
    monkeypatch.setattr(domain, "_BLOCK", 2048)
    assert case_statistics(case.curves, case.aif, case.frame_interval, max_curves=100)["curve_cnr"] == picked


def test_a_case_below_the_trained_contrast_to_noise_is_told_the_direction_of_the_error():
    domain = {"curve_cnr": [1.85, 31.0]}
    (low,) = out_of_domain({"curve_cnr": 1.5}, domain)
    (high,) = out_of_domain({"curve_cnr": 40.0}, domain)
    assert "biased low" in low and "compare with oSVD" in low
    assert "biased low" not in high and "outside the range" in high


def test_supervised_term_teaches_cbf_that_reconstruction_alone_does_not():
    from BBBAnomalyLib.dsc.phae.training import simulated_cases, train

    cases = simulated_cases(6, 512, seed=6)
    test = dc.simulate_curve_cases(3, 256, seed=60)

    def log_error(net):
        errs = []
        for c in test:
            fit = PHAEModel(c.aif, c.frame_interval, network=net).fit(c.curves, keep_curves=False)
            errs.append(np.abs(np.log(np.maximum(fit.cbf, 1e-6) / c.truth["cbf"])))
        return float(np.median(np.concatenate(errs)))

    sup = train(cases, epochs=3, batch=256, lr=2e-3, device="cpu", config={"min_delay_frames": 5.0}, log=lambda s: None)
    unsup = train(cases, epochs=3, batch=256, lr=2e-3, device="cpu", config={"min_delay_frames": 5.0},
                  supervised_weight=0.0, delay_weight=0.0, log=lambda s: None)
    assert log_error(sup["network"]) < 0.8 * log_error(unsup["network"])

"""PHAE's post-hoc CBF calibration (issue 14, round 3; dsc/phae/calibration.py): a monotone map of log MTT per
(SD of log CBF, log dt) node stored in the model card, applied by PHAEModel.fit, fitted on grouped curves."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib import weights as registry  # noqa: E402
from BBBAnomalyLib.core.errors import InputError  # noqa: E402
from BBBAnomalyLib.dsc.phae.calibration import (  # noqa: E402
    DEFAULT_KNOTS, KIND, apply_calibration, check_calibration, fit_calibration)
from BBBAnomalyLib.dsc.phae.inference import PHAEModel  # noqa: E402
from BBBAnomalyLib.phantoms.dsc_curves import simulate_curve_cases  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: torch on one thread


def card_entry(maps, sd_nodes=(0.2, 0.8), dt_nodes=(math.log(1.0),)):
    return {"kind": KIND, "knots_log_mtt": list(DEFAULT_KNOTS), "sd_nodes": list(sd_nodes),
            "log_dt_nodes": list(dt_nodes), "maps": np.asarray(maps, float).tolist()}


def shifted(shifts):
    """maps y = x + shift per sd node (one dt node)."""
    k = np.asarray(DEFAULT_KNOTS)
    return [[list(k + s) for s in shifts]]


def test_identity_map_leaves_cbf_and_a_shift_scales_it():
    rng = np.random.default_rng(0)
    cbf = rng.uniform(0.002, 0.02, 500).astype(np.float32)
    cbv = (cbf * rng.uniform(1.0, 15.0, 500)).astype(np.float32)
    sd = rng.uniform(0.0, 1.5, 500).astype(np.float32)
    ident = check_calibration(card_entry(shifted([0.0, 0.0])))
    # exp(x - y) with y = x: 1 up to the float64 round trip of log, then the float32 cast
    np.testing.assert_allclose(apply_calibration(cbf, cbv, sd, 1.5, ident), cbf, rtol=2e-7, atol=0)
    # MTT × e^0.3 everywhere (both nodes): CBF × e^-0.3, also for MTTs outside the knots (slope-1 continuation)
    cbv[:5] = cbf[:5] * 100.0
    cal = check_calibration(card_entry(shifted([0.3, 0.3])))
    np.testing.assert_allclose(apply_calibration(cbf, cbv, sd, 1.5, cal), cbf * math.exp(-0.3), rtol=1e-6)


def test_sd_nodes_blend_linearly_and_non_positive_voxels_are_left_alone():
    cal = check_calibration(card_entry(shifted([0.0, 0.6])))  # sd nodes 0.2 and 0.8
    cbf = np.full(5, 0.01, np.float32)
    cbv = np.array([0.04, 0.04, 0.04, -0.01, 0.04], np.float32)
    sd = np.array([0.1, 0.5, 2.0, 0.5, np.nan], np.float32)
    out = apply_calibration(cbf, cbv, sd, 1.0, cal)
    # below the first node: its map; halfway: half the shift; above the last: the last map; CBV <= 0 or no SD: as is
    np.testing.assert_allclose(out, 0.01 * np.exp([0.0, -0.3, -0.6, 0.0, 0.0]), rtol=1e-6)


def test_a_monotone_map_keeps_the_order_of_mtts():
    k = np.asarray(DEFAULT_KNOTS)
    cal = check_calibration(card_entry([[list(0.4 * k + 0.5), list(k)]]))  # a stretch, then the identity
    mtt = np.geomspace(0.3, 60.0, 200)
    cbv = np.full(200, 0.04)
    cbf = (cbv / mtt).astype(np.float32)
    out = apply_calibration(cbf, cbv.astype(np.float32), np.full(200, 0.2, np.float32), 1.0, cal)
    assert np.all(np.diff(cbv / out) > 0)  # calibrated MTT still increases with the input MTT


@pytest.mark.parametrize("change", ["kind", "shape", "decreasing", "nan", "nodes"])
def test_an_invalid_calibration_entry_is_refused(change):
    entry = card_entry(shifted([0.0, 0.2]))
    if change == "kind":
        entry["kind"] = "something-else"
    elif change == "shape":
        entry["maps"] = entry["maps"][0]
    elif change == "decreasing":
        entry["maps"][0][1][4] = entry["maps"][0][1][3] - 0.5
    elif change == "nan":
        entry["maps"][0][0][0] = float("nan")
    else:
        entry["sd_nodes"] = [0.8, 0.2]
    with pytest.raises(InputError, match="calibration"):
        check_calibration(entry)


def test_the_fit_removes_a_known_shrinkage_of_mtt():
    # groups of 8 curves sharing one true MTT; the "network" shrinks log MTT toward log 4.5 s by 40 %, with noise
    rng = np.random.default_rng(1)
    g, k = 300, 8
    log_mtt = rng.uniform(math.log(1.0), math.log(20.0), g)
    pred = math.log(4.5) + 0.6 * (log_mtt - math.log(4.5))
    cbv = np.full(g * k, 0.04)
    noisy = np.repeat(pred, k) + 0.05 * rng.standard_normal(g * k)
    data = {"cbf": cbv / np.exp(noisy), "cbv": cbv, "sd": np.full(g * k, 0.3), "log_dt": np.zeros(g * k),
            "cbf_true": np.repeat(0.04 / np.exp(log_mtt), k), "group": np.repeat(np.arange(g), k)}
    cal = fit_calibration(data, sd_nodes=(0.3,), identity_sd=None, log_dt_nodes=(0.0,), steps=150, lr=0.08,
                          smooth=1e-4, ridge=0.0)
    fit = cal["fit"]
    assert fit["conditional_bias_after"] < 0.1 * fit["conditional_bias_before"]
    out = apply_calibration(data["cbf"], cbv, data["sd"], 1.0, check_calibration(cal))
    group_ratio = (out / data["cbf_true"]).reshape(g, k).mean(axis=1)
    before = (data["cbf"] / data["cbf_true"]).reshape(g, k).mean(axis=1)
    assert np.median(np.abs(group_ratio - 1)) < 0.25 * np.median(np.abs(before - 1))
    # only groups whose mean SD is below max_group_sd are fitted: none here
    with pytest.raises(InputError, match="below 0.2"):
        fit_calibration(data, sd_nodes=(0.3,), identity_sd=None, log_dt_nodes=(0.0,), steps=1, max_group_sd=0.2)


def test_phae_model_applies_the_cards_calibration(tmp_path):
    card, path = registry.read_card("dsc-phae-fast")
    shutil.copyfile(path, tmp_path / "cal.pt")
    new = {k: v for k, v in card.items() if k not in ("file", "sha256")}
    new.update(name="cal", calibration=card_entry(shifted([0.25, 0.25]) * 2, dt_nodes=(0.0, 1.0)))
    registry.write_entry(new, tmp_path / "cal.pt")
    assert json.loads((tmp_path / "cal.json").read_text())["sha256"] == card["sha256"]  # same network file
    case = simulate_curve_cases(1, 64, seed=5)[0]
    plain = PHAEModel(case.aif, case.frame_interval, weights="dsc-phae-fast").fit(case.curves, keep_curves=False)
    model = PHAEModel(case.aif, case.frame_interval, weights=str(tmp_path / "cal.pt"))
    assert model.calibration is not None
    fit = model.fit(case.curves, keep_curves=False)
    pos = (plain.cbf > 0) & (plain.mtt > 0)
    assert pos.sum() > 40
    np.testing.assert_allclose(fit.cbf[pos], plain.cbf[pos] * math.exp(-0.25), rtol=1e-5)
    np.testing.assert_allclose(fit.mtt[pos], plain.mtt[pos] * math.exp(0.25), rtol=1e-5)  # central volume
    np.testing.assert_array_equal(fit.tmax, plain.tmax)  # delay/Tmax untouched
    np.testing.assert_array_equal(fit.cbf_uncertainty, plain.cbf_uncertainty)
    # a damaged calibration entry is one InputError at load time, not a wrong map
    new["calibration"]["maps"][0][0][3] = -50.0
    registry.write_entry(new, tmp_path / "cal.pt")
    with pytest.raises(InputError, match="calibration"):
        PHAEModel(case.aif, case.frame_interval, weights=str(tmp_path / "cal.pt"))


def _script():
    spec = importlib.util.spec_from_file_location("train_phae_world", REPO / "scripts" / "train_phae_world.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_calibrate_command_writes_the_same_network_with_a_checked_card(tmp_path, capsys):
    mod = _script()
    assert mod.main(["--calibrate", "dsc-phae-fast", "--cases", "2", "--curves", "64", "--repeats", "8",
                     "--seed", "7", "--calibration-steps", "20", "--out", str(tmp_path), "--name", "c"]) == 0
    card = json.loads((tmp_path / "c.json").read_text())
    assert card["sha256"] == registry.read_card("dsc-phae-fast")[0]["sha256"] == registry.sha256(tmp_path / "c.pt")
    assert card["calibrated_from"]["name"] == "dsc-phae-fast"
    assert "never the held-apart" in card["calibration"]["fitted_on"]
    check_calibration(card["calibration"])
    assert "not clinically validated" in card["trained_on"]
    # bad input: one line, exit 2
    capsys.readouterr()
    assert mod.main(["--calibrate", "no-such-weights", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --calibrate")
    assert mod.main(["--calibrate", "dsc-phae-fast", "--repeats", "1", "--out", str(tmp_path)]) == 2

"""Diffusion weights trained on more than one normal brain (issue 15, "normal anatomy is plural"): they load only
behind their checksum, their fixed threshold is the one calibrated on healthy brains of the training templates
(stored in the card), and a run applies exactly that threshold."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from BBBAnomalyLib import weights as registry
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
from BBBAnomalyLib.dmri.inference import load_model
from BBBAnomalyLib.dmri.thresholds import anomaly_mask

POPULATION = {"recdisc": "dmri-recdisc-population", "vae": "dmri-vae-population"}
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _calibrated(card: dict, score: str) -> float:
    thresholds = card["calibration"]["thresholds"]
    return float(thresholds["probability"] if card["kind"] == "recdisc" else thresholds[score])


@pytest.mark.parametrize("kind", sorted(POPULATION))
def test_population_weights_load_behind_their_checksum_with_the_calibrated_threshold(kind, tmp_path):
    name = POPULATION[kind]
    card = registry.entry(name)
    assert registry.sha256(registry.WEIGHTS_DIR / card["file"]) == card["sha256"]
    cal = card["calibration"]
    # calibrated on the training templates only; Colin27 is the held-apart anatomy
    assert set(cal["templates"]) == {"mni152_fsl", "icbm2009a"} and "colin27" not in json.dumps(cal["seeds"])
    assert "not clinically validated" in card["disclaimer"]
    model = load_model(name, kind, "cpu")
    for score in ("abs-mean", "rms") if kind == "vae" else ("abs-mean",):
        assert model.fixed_threshold(score) == _calibrated(card, score)
        key = "probability" if kind == "recdisc" else score
        if "quantile" in cal:  # the pooled healthy percentile
            assert model.fixed_threshold(score) == pytest.approx(cal["healthy_quantiles"][key][
                str(cal["quantile"])], rel=1e-12)
        else:  # an operating point: the flagged healthy fraction it was chosen for
            assert np.mean(cal["flagged_fraction_after_opening"][key]) <= cal["target_flagged"]
    # a changed byte in a copy of the weights is refused before torch.load
    pt = tmp_path / card["file"]
    shutil.copy(registry.WEIGHTS_DIR / card["file"], pt)
    shutil.copy(registry.WEIGHTS_DIR / f"{name}.json", pt.with_suffix(".json"))
    raw = bytearray(pt.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pt.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="checksum"):
        load_model(str(pt), kind, "cpu")


@pytest.fixture(scope="module")
def healthy_brain():
    # MNI152 FSL ships with the package (the phantoms' anatomy): no ../shared data needed here
    sys.path.insert(0, str(SCRIPTS))
    from validate_dmri import population_case

    return population_case("mni152_fsl", 5001, voxel_mm=3.5)


def test_a_run_thresholds_at_the_cards_calibrated_value(healthy_brain, tmp_path):
    name = POPULATION["recdisc"]
    card = registry.entry(name)
    t = _calibrated(card, "abs-mean")
    assert card["fixed_threshold"] == t != 0.5  # the calibrated number, not the seed's 0.5
    brain = healthy_brain.masks["brain"]
    res = run_dmri(healthy_brain.dwi, DMRIParameters(model="recdisc", weights=name, device="cpu"), brain_mask=brain)
    assert res.report["threshold"]["method"] == "fixed" and res.report["threshold"]["value"] == t
    assert res.report["model"]["weights"] == name
    anomaly, flagged = res.maps["anomaly"].data, res.maps["anomaly_mask"].data.astype(bool)
    np.testing.assert_array_equal(flagged, anomaly_mask(anomaly, res.brain_mask, t))
    # the card is what sets it: the same weights with another calibrated value give that value's mask
    low = float(card["calibration"]["healthy_quantiles"]["probability"]["0.9"])
    pt = tmp_path / card["file"]
    shutil.copy(registry.WEIGHTS_DIR / card["file"], pt)
    pt.with_suffix(".json").write_text(json.dumps({**card, "fixed_threshold": low}), encoding="utf-8")
    other = run_dmri(healthy_brain.dwi, DMRIParameters(model="recdisc", weights=str(pt), device="cpu"), brain_mask=brain)
    assert other.report["threshold"]["value"] == low
    np.testing.assert_array_equal(other.maps["anomaly"].data, anomaly)  # same network, same scores
    more = other.maps["anomaly_mask"].data.astype(bool)
    np.testing.assert_array_equal(more, anomaly_mask(anomaly, res.brain_mask, low))
    assert more.sum() > flagged.sum()


def test_calibrate_is_the_pooled_healthy_quantile_and_bounds_the_flagged_fraction(monkeypatch):
    sys.path.insert(0, str(SCRIPTS))
    import validate_dmri

    from BBBAnomalyLib import dmri

    pooled = []

    original = dmri.run_dmri

    def recording(dwi, params, **kw):
        res = original(dwi, params, **kw)
        pooled.append((res.maps["anomaly"].data, res.brain_mask))
        return res

    monkeypatch.setattr(dmri, "run_dmri", recording)
    out = validate_dmri.calibrate(POPULATION["recdisc"], ["mni152_fsl"], 1, 5000, 4.0, 0.99, write=False)
    assert len(pooled) == 1
    t = out["fixed_threshold"]
    seeds = out["calibration"]["seeds"]["mni152_fsl"]
    assert seeds == [5000]
    ph = validate_dmri.population_case("mni152_fsl", 5000, 4.0)
    anomaly, brain = pooled[0]
    region = brain & ph.masks["gm_wm"]
    assert t == float(np.quantile(anomaly[region], 0.99))
    # at most 1 % of the healthy voxels exceed the 99th percentile; the opening only removes voxels
    assert out["calibration"]["flagged_fraction_after_opening"]["probability"][0] <= 0.01 + 1.0 / region.sum()

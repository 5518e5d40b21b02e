"""The population AIFs added for issue 16: McGrath (OSIPI preclinical reference), Weinmann and
Fritz-Hansen (closed forms, evaluated independently at hand-picked points), and the name registry
the pipelines use (blood -> plasma only for blood curves)."""

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.perfusion.population_aif import (
    POPULATION_AIFS, fritz_hansen_aif, georgiou_aif, mcgrath_aif, parker_aif, plasma_population_aif, weinmann_aif
)

DATA = Path(__file__).parent / "Data" / "osipi"


def _load(name):
    rows = defaultdict(list)
    with open(DATA / name, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows[r["label"]].append((float(r["time"]), float(r["Cb"]), float(r.get("delay") or 0.0)))
    return {k: np.array(v) for k, v in rows.items()}


PRECLINICAL = _load("preclinicalAIF_ref.csv")
PRECLINICAL_DELAY = _load("preclinicalAIF_ref_delay.csv")


@pytest.mark.parametrize("label", sorted(PRECLINICAL))
def test_mcgrath_matches_osipi(label):
    """OSIPI's preclinical reference (McGrath 2009 model B, times and delays in seconds): a closed
    form, so it must match to rounding, far inside OSIPI's rtol 1e-2 + atol 1e-4 mM."""
    t, cb, delay = PRECLINICAL[label].T
    np.testing.assert_allclose(mcgrath_aif(t / 60.0, delay=delay[0] / 60.0), cb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("label", sorted(PRECLINICAL_DELAY))
def test_mcgrath_with_delay_matches_osipi(label):
    t, cb, delay = PRECLINICAL_DELAY[label].T
    np.testing.assert_allclose(mcgrath_aif(t / 60.0, delay=delay[0] / 60.0), cb, rtol=1e-9, atol=1e-12)


def test_mcgrath_published_shape():
    """Peak A1 + A2 = 5.21 mM at t1 = 7 s; 100 s later A1 e^{-4.5} + A2 e^{-0.15}."""
    t = np.array([3.5, 7.0, 107.0]) / 60.0
    expected = [5.21 / 2, 5.21, 3.4 * np.exp(-0.045 * 100) + 1.81 * np.exp(-0.0015 * 100)]
    np.testing.assert_allclose(mcgrath_aif(t), expected, rtol=1e-12)


def test_weinmann_closed_form():
    """Tofts & Kermode 1991: Cp = 0.1·(3.99 e^{-0.144 t} + 4.78 e^{-0.0111 t}) mM, t in minutes."""
    np.testing.assert_allclose(weinmann_aif(np.array([0.0, 1.0, 5.0])),
                               [0.877, 0.1 * (3.99 * np.exp(-0.144) + 4.78 * np.exp(-0.0111)),
                                0.1 * (3.99 * np.exp(-0.72) + 4.78 * np.exp(-0.0555))], rtol=1e-12)
    assert weinmann_aif(np.array([0.5]), delay=0.6)[0] == 0.0


def test_fritz_hansen_closed_form():
    """Whitcher & Schmid's Fritz-Hansen parameters: Cp = 2.4 e^{-3 t} + 0.62 e^{-0.016 t} mM."""
    np.testing.assert_allclose(fritz_hansen_aif(np.array([0.0, 1.0, 2.0]), delay=0.0),
                               [3.02, 2.4 * np.exp(-3.0) + 0.62 * np.exp(-0.016),
                                2.4 * np.exp(-6.0) + 0.62 * np.exp(-0.032)], rtol=1e-12)
    shifted = fritz_hansen_aif(np.array([1.0, 1.5]), delay=0.5)
    np.testing.assert_allclose(shifted, fritz_hansen_aif(np.array([0.5, 1.0])), rtol=1e-12)


def test_registry_converts_only_blood_curves():
    t = np.linspace(0, 5, 61)
    hct = 0.42
    np.testing.assert_allclose(plasma_population_aif("parker", t, hct), parker_aif(t) / (1 - hct))
    np.testing.assert_allclose(plasma_population_aif("georgiou", t, hct), georgiou_aif(t) / (1 - hct))
    np.testing.assert_allclose(plasma_population_aif("mcgrath", t, hct), mcgrath_aif(t) / (1 - hct))
    np.testing.assert_allclose(plasma_population_aif("weinmann", t, hct), weinmann_aif(t))
    np.testing.assert_allclose(plasma_population_aif("fritz-hansen", t, hct), fritz_hansen_aif(t))
    assert set(POPULATION_AIFS) == {"parker", "georgiou", "fritz-hansen", "weinmann", "mcgrath"}
    with pytest.raises(InputError, match="not known"):
        plasma_population_aif("orton", t, hct)

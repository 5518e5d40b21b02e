"""scripts/phae_own_phantom.py: the own-phantom comparison of issue 14, round 6 (settings and the summary's counts)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "phae_own_phantom.py"


@pytest.fixture(scope="module")
def mod():
    spec = importlib.util.spec_from_file_location("phae_own_phantom", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_cover_noise_timing_delay_and_duration(mod):
    s = mod.settings()
    assert len(s) == 35
    assert sum(x["snr"] is None for x in s) == 3 and {x.get("frame_interval") for x in s} >= {1.0, 1.5, 2.0}
    assert {x.get("tissue_delay") for x in s} >= {2.0, 4.0} and {x.get("duration") for x in s} >= {60.0, 120.0}


def test_summary_counts_settings_within_15_percent_and_ccc_against_osvd(mod):
    rows = []
    for snr, bias, ccc_ref, ccc in ((None, 1.0, 0.9, 1.0), (50, 14.9, 0.6, 0.5), (20, -15.1, 0.3, 0.3)):
        base = dict(snr=snr, seed=0, frame_interval=1.5, mtt_gm=0.0, mtt_wm=0.0)
        rows.append({**base, "method": mod.REFERENCE, "gm": -40.0, "wm": 0.0, "rim": 0.0, "ccc": ccc_ref})
        rows.append({**base, "method": "w", "gm": bias, "wm": 0.0, "rim": -bias / 2, "ccc": ccc})
    text = mod.tables(rows)
    line = next(ln for ln in text.splitlines() if ln.startswith("| w |"))
    # SNR 50 (|14.9| <= 15) counts, SNR 20 (15.1) does not, the noiseless setting is not in the count;
    # CCC: 1.0 >= 0.9 and 0.3 >= 0.3 count, 0.5 < 0.6 does not
    assert "| 1/2 | 2/3 |" in line, line
    assert "+15 / +0 / -7 (0.50)" in text

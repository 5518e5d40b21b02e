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


def test_geometry_set_and_its_hemisphere_splice(mod):
    """Round 8's delay-geometry set: 10 settings; a 'hemisphere' phantom is the undelayed one on the left and the
    delayed one on the right, with the same truth and the same AIF."""
    import numpy as np

    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    geo = mod.geometry_settings()
    assert len(geo) == 10 and {g["snr"] for g in geo} == {50, 20}
    assert sum("hemisphere_delay" in g for g in geo) == 2 and sum("tumor_delay" in g for g in geo) == 2
    spliced, right = mod.make_setting(dict(snr=50, seed=3, slices=2, hemisphere_delay=3.0))
    early = make_dsc_phantom(snr=50, seed=3, slices=2)
    late = make_dsc_phantom(snr=50, seed=3, slices=2, tissue_delay=3.0)
    assert right[right.shape[0] // 2:].all() and not right[: right.shape[0] // 2].any()
    np.testing.assert_array_equal(spliced.signal.data[~right], early.signal.data[~right])
    np.testing.assert_array_equal(spliced.signal.data[right], late.signal.data[right])
    assert not np.array_equal(early.signal.data[right], late.signal.data[right])
    _, tumour = mod.make_setting(dict(snr=50, seed=3, slices=2, tumor_delay=3.0))
    assert tumour is not None and tumour.any()


@pytest.mark.shared_data
def test_phantoms_can_be_built_on_another_brain(mod, shared_data, monkeypatch):
    """--anatomy icbm2009a: every following DSC phantom on the ICBM 2009a brain (../shared templates), not the
    shipped MNI152 FSL map; restored afterwards by monkeypatch."""
    import BBBAnomalyLib.phantoms.dsc as dsc_phantom
    from BBBAnomalyLib.phantoms.anatomy import load_anatomy

    monkeypatch.setattr(dsc_phantom, "load_anatomy", dsc_phantom.load_anatomy)  # undone after the test
    mod.use_anatomy("icbm2009a")
    other = dsc_phantom.make_dsc_phantom(snr=50, slices=2)
    shipped = load_anatomy()
    assert other.masks["brain"].shape[:2] != shipped.brain.shape[:2]
    assert other.masks["gm"].any() and other.masks["wm"].any() and other.masks["aif"].any()

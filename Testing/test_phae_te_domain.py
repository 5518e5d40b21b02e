"""Issue 14 (session 24): a single-echo PHAE run at an echo time outside the one its weights were trained at says so.

The default weights' card states the TE range of their training cases (training_distribution["te"], 20-45 ms), but TE
was not one of the statistics the out-of-domain check compares, so a run at TE 15 ms said nothing.
scripts/validate_phae_te_domain.py measured single-echo PHAE at TE 10-60 ms on the reference object: at equal SNR x TE
(the same noise in ΔR2*) the maps agreed whatever the TE; the line says that, and what TE does change (the noise).
"""

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from BBBAnomalyLib.dsc import DSCParameters, run_dsc  # noqa: E402
from BBBAnomalyLib.dsc.phae.domain import echo_time_warning, trained_echo_times  # noqa: E402
from BBBAnomalyLib.dsc.phae_step import _check_phae_input  # noqa: E402
from BBBAnomalyLib.weights import read_card  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import validate_phae_dual_echo as generator  # noqa: E402
import validate_phae_te_domain as script  # noqa: E402


def _te_lines(warnings):
    return [w for w in warnings if "were trained at" in w]


def test_the_cards_trained_echo_times_are_read_and_a_card_without_them_gives_none():
    assert trained_echo_times(read_card("dsc-phae-wide")[0]) == (0.02, 0.045)
    assert trained_echo_times(read_card("dsc-phae-sim")[0]) is None  # its generator had no TE
    for card in (None, {}, {"training_distribution": {"te": "30 ms"}}, {"training_distribution": {"te": [0.05, 0.02]}}):
        assert trained_echo_times(card) is None
        assert echo_time_warning(0.01, card) is None


def test_the_line_names_the_te_the_trained_range_and_the_measured_size():
    card = read_card("dsc-phae-wide")[0]
    assert echo_time_warning(0.02, card) is None and echo_time_warning(0.045, card) is None  # the range's ends
    assert echo_time_warning(0.03, card) is None
    short, long = echo_time_warning(0.015, card), echo_time_warning(0.06, card)
    for line, te in ((short, "15 ms"), (long, "60 ms")):
        assert f"echo time {te} is outside the 20-45 ms the PHAE weights dsc-phae-wide were trained at" in line
        assert "GM CBF within 2.8 points" in line and "validate_phae_te_domain.py" in line
    assert "contrast-to-noise is lower" in short and "noise floor" in long


@pytest.mark.parametrize("te, method, dual, kind, warned", [
    (0.015, "phae", False, "signal", True),
    (0.06, "phae", False, "signal", True),
    (0.03, "phae", False, "signal", False),
    (0.015, "osvd", False, "signal", False),  # no weights, no trained range
    (0.015, "phae", True, "signal", False),  # dual echo: its own line says the input is outside what PHAE saw
    (0.015, "phae", False, "concentration", False),  # curves given as ΔR2*: no TE was used
])
def test_only_a_single_echo_phae_signal_run_outside_the_range_warns(te, method, dual, kind, warned):
    warnings = []
    _check_phae_input(DSCParameters(method=method, input_kind=kind), warnings, dual_echo=dual, te=te)
    assert bool(_te_lines(warnings)) is warned
    assert len(_te_lines(warnings)) <= 1


def test_a_run_whose_te_comes_from_the_file_warns_too():
    """End to end, with TE read from the series' metadata (no --te): the pipeline hands it to the check."""
    phantom, s0, r2s = generator.noiseless_object(3)
    m = phantom.masks
    for te, warned in ((0.015, True), (0.03, False)):
        echo = generator.echoes(phantom, s0, r2s, (te, te + 0.03), 0.0, 50, seed=1)[0]
        assert echo.acquisition.echo_time == te
        res = run_dsc(echo, DSCParameters(method="phae", device="cpu", kh=1.0, density=1.0), aif_mask=m["aif"],
                      brain_mask=m["brain"], nawm_mask=m["nawm"], tumor_mask=m["tumor"])
        assert bool(_te_lines(res.report["warnings"])) is warned


def test_the_script_pairs_each_te_outside_the_range_with_a_run_of_equal_noise():
    """The pairs behind the line's numbers: the out-of-range TE against an in-range TE at the same SNR x TE."""
    for (snr_out, te_out), (snr_in, te_in) in script.PAIRS:
        assert not 20 <= te_out <= 45 and 20 <= te_in <= 45
        assert snr_out * te_out == snr_in * te_in
    grid = script.settings()
    assert all(s in grid for pair in script.PAIRS for s in pair) and len(set(grid)) == len(grid)
    rows = [{"snr": 20, "te_ms": 10, "seed": 1, "GM": -19.0, "WM": -9.0, "rim": -1.0, "ccc": 0.43},
            {"snr": 10, "te_ms": 20, "seed": 1, "GM": -18.0, "WM": -10.0, "rim": -2.5, "ccc": 0.44}]
    (diff,) = script.pair_differences(rows)
    assert diff["outside"] == (20, 10) and diff["inside"] == (10, 20)
    assert diff["GM"] == pytest.approx(-1.0) and diff["rim"] == pytest.approx(1.5)
    assert diff["ccc"] == pytest.approx(-0.01)

"""An artery whose bolus passes before the brain average's baseline ends (session 19's AIF audit).

The baseline comes from the brain-mean curve. With the tissue 6 s or more behind the artery, the artery's whole first
pass lies inside that baseline. The AIF's checks used to run there, at the pipeline's first look, before the loop that
shortens the baseline: a real arterial mask was refused as "no contrast bolus", and the automatic selection (its
roughness measured over the arterial bolus) chose tissue and read GM CBF 196-876 ml/100 g/min where the arterial mask
read 18-41, with no warning. Now the checks run once, under the baseline kept, and the automatic AIF first ends the
baseline before the largest boluses when they peak inside it.
"""

import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.dsc import aif as aif_mod
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

PARAMS = DSCParameters(method="osvd", leakage_correction="none")


def _gm_cbf(phantom, **kwargs) -> tuple[float, list]:
    result = run_dsc(phantom.signal, PARAMS, brain_mask=phantom.masks["brain"], **kwargs)
    return float(np.mean(result.maps["cbf"].data[phantom.masks["gm"]])), result.report["warnings"]


@pytest.fixture(scope="module")
def on_time():
    return make_dsc_phantom(snr=20.0, frame_interval=1.0, slices=4, seed=3)


@pytest.fixture(scope="module")
def late_tissue():
    """The same object with every tissue 6 s behind the artery (the artery's arrival unchanged)."""
    return make_dsc_phantom(snr=20.0, frame_interval=1.0, slices=4, seed=3, tissue_delay=6.0, tumor_delay=6.0)


def test_arterial_mask_is_accepted_when_the_tissue_is_late(on_time, late_tissue):
    """Refused before ("the AIF from --aif-mask shows no contrast bolus"); now GM CBF as on time (oSVD is delay
    insensitive: within 5 %) and the report says the baseline was shortened."""
    reference, _ = _gm_cbf(on_time, aif_mask=on_time.masks["aif"])
    late, warnings = _gm_cbf(late_tissue, aif_mask=late_tissue.masks["aif"])
    assert late == pytest.approx(reference, rel=0.05)
    assert any("the baseline was shortened" in w for w in warnings)


def test_automatic_aif_finds_the_artery_when_the_tissue_is_late(late_tissue):
    """The automatic AIF reads what the arterial mask reads (it read 14x more before), and says why the baseline
    changed before the AIF was chosen."""
    mask, _ = _gm_cbf(late_tissue, aif_mask=late_tissue.masks["aif"])
    auto, warnings = _gm_cbf(late_tissue)
    assert auto == pytest.approx(mask, rel=0.10)
    assert any("largest boluses (arteries)" in w and "before choosing the AIF" in w for w in warnings)


def test_on_time_automatic_aif_is_unchanged(on_time):
    """Where the arteries peak after the brain's baseline (every earlier case), the new step does nothing."""
    _, warnings = _gm_cbf(on_time)
    assert not any("largest boluses" in w for w in warnings)


def test_tissue_mask_is_still_refused_when_the_tissue_is_late(late_tissue):
    """The one look at the AIF still refuses a mask on grey matter."""
    gm = late_tissue.masks["gm"].copy()
    rows = np.argwhere(gm)[:40]
    mask = np.zeros_like(gm)
    mask[tuple(rows.T)] = True
    with pytest.raises(InputError, match="looks like tissue"):
        _gm_cbf(late_tissue, aif_mask=mask)


def test_selectors_leave_the_check_to_the_caller():
    """check=False returns the selection unchecked; check_selection refuses it with the selector's own words."""
    rng = np.random.default_rng(0)
    curves = rng.normal(0.0, 1.0, (200, 40))
    in_aif = np.zeros(200, bool)
    in_aif[:5] = True
    baseline = slice(1, 8)
    selection = aif_mod.aif_from_mask(curves, in_aif, baseline, check=False)
    assert selection.tissue_peak_ratio is None and selection.method == "mask"
    with pytest.raises(InputError, match="--aif-mask shows no contrast bolus"):
        aif_mod.check_selection(selection, curves, baseline)
    with pytest.raises(InputError, match="--aif-mask shows no contrast bolus"):
        aif_mod.aif_from_mask(curves, in_aif, baseline)


def test_a_curve_peaking_inside_the_baseline_is_no_bolus():
    """A curve whose largest value lies in the pre-bolus baseline is refused as no bolus (a mask spread over CSF at
    SNR 5 peaked at frame 0 with a negative area and passed the peak ratio and the timing check)."""
    curve = np.zeros(60)
    curve[0] = 5.0  # a spike in the first frame
    curve[20:30] = 4.0  # something later, smaller
    with pytest.raises(InputError, match="largest value is at frame 0, inside or before the pre-bolus baseline"):
        aif_mod.check_aif_curve(curve, slice(1, 15), "--aif-mask")
    curve[25] = 6.0
    aif_mod.check_aif_curve(curve, slice(1, 15), "--aif-mask")  # the bolus after the baseline is the largest


def test_a_mask_without_a_bolus_is_refused_as_such_not_for_its_baseline(on_time):
    """A mask on CSF (no contrast) used to end in the arterial baseline step's "only 0 pre-bolus frames ... lower
    --skip-frames", advice about the wrong thing; it is refused as showing no bolus."""
    csf = on_time.masks["csf"] & on_time.masks["brain"]
    rows = np.argwhere(csf)[:40]
    mask = np.zeros_like(csf)
    mask[tuple(rows.T)] = True
    with pytest.raises(InputError) as refused:
        _gm_cbf(on_time, aif_mask=mask)
    assert "pre-bolus frames lie between" not in str(refused.value)
    assert "no contrast bolus" in str(refused.value) or "looks like tissue" in str(refused.value)

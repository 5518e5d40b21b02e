"""The DCE pipeline on a small reference object: accuracy, RLS, geometry, outputs, bad input."""

import json

import numpy as np
import pytest

from BBBAnomalyLib.app.curves import CurveSet
from BBBAnomalyLib.dce import DCEParameters, run_dce
from BBBAnomalyLib.dce.pipeline import MAP_INFO
from BBBAnomalyLib.core.errors import CancelledError, InputError
from BBBAnomalyLib.io import read_volume
from BBBAnomalyLib.metrics import pearson_r, roc_auc
from BBBAnomalyLib.core.volume import Volume


@pytest.fixture(scope="module")
def phantom():
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    return make_dce_phantom(snr=40, slices=5, seed=3)


@pytest.fixture(scope="module")
def result(phantom):
    m = phantom.masks
    return run_dce(phantom.signal, DCEParameters(rls="case"), aif_mask=m["aif"], brain_mask=m["brain"],
                   tumor_mask=m["tumor"], t10_map=phantom.truth["t10"])


def test_ktrans_vp_ve_match_the_truth_in_the_tumor(phantom, result):
    m, truth = phantom.masks, phantom.truth
    tumor = m["tumor"] & m["pure"]
    assert tumor.sum() > 100
    k_est, k_true = result.maps["ktrans"].data, truth["ktrans"].data
    assert pearson_r(k_est, k_true, tumor) > 0.97
    assert np.mean(k_est[tumor]) == pytest.approx(np.mean(k_true[tumor]), rel=0.1)
    assert np.median(np.abs(result.maps["vp"].data[tumor] - truth["vp"].data[tumor])) < 0.025
    rim = m["enhancing"] & m["pure"]
    assert np.median(np.abs(result.maps["ve"].data[rim] - truth["ve"].data[rim])) < 0.05
    assert np.median(result.maps["ktrans"].data[m["nawm"]]) < 0.005  # intact BBB


def test_rls_is_positive_on_leaky_tumor_and_near_zero_in_normal_brain(phantom, result):
    m = phantom.masks
    rls = result.maps["rls"].data
    leaky_rim = m["enhancing"] & m["pure"]
    assert np.mean(rls[leaky_rim] > 2.0) > 0.9  # > 2 % SER in 90 % of the leaky rim voxels
    assert np.median(rls[m["nawm"]]) < 0.5
    tissue = m["brain"] & ~m["vessels"]
    assert roc_auc(m["leaky"][tissue], rls[tissue]) > 0.85
    assert pearson_r(rls, phantom.truth["ktrans"].data, leaky_rim) > 0.5  # RLS follows the leakage


def test_maps_order_units_geometry_and_report(phantom, result):
    names = list(result.maps)
    assert names[:3] == ["rls", "rls_abs", "rls_uncertainty"]
    assert names[3:] == ["ktrans", "ve", "vp", "kep", "delay", "fit_r2"]
    assert set(names) <= set(MAP_INFO)
    for vol in result.maps.values():
        assert vol.data.shape == phantom.signal.spatial_shape
        np.testing.assert_array_equal(vol.affine, phantom.signal.affine)
    rep = result.report
    assert rep["pipeline"] == "dce" and rep["conversion"]["mode"] == "spgr"
    assert rep["units"]["ktrans"] == "1/min" and rep["units"]["ve"] == "fraction"
    assert rep["summary"]["tumor"]["ktrans"]["n"] == int(phantom.masks["tumor"].sum())
    assert rep["rls"]["source"] == "case" and rep["rls"]["training_voxels"] > 1000
    json.dumps(rep)


def test_curves_are_in_one_unit_with_fit_and_reconstruction(phantom, result):
    curves = result.curves()
    assert isinstance(curves, CurveSet)
    assert curves.unit == "concentration (mM)"
    assert set(curves.fitted) == {"extended Tofts fit", "RLS reconstruction"}
    assert "AIF" in curves.reference
    rim = curves.mean(phantom.masks["enhancing"] & phantom.masks["pure"])
    truth = phantom.concentration.data[phantom.masks["enhancing"] & phantom.masks["pure"]].mean(axis=0)
    assert np.max(np.abs(rim["measured"] - truth)) < 0.05 * truth.max()
    assert np.max(np.abs(rim["extended Tofts fit"] - truth)) < 0.05 * truth.max()
    # the reconstruction is what normal tissue would do: below the leaky tumor's late enhancement
    assert rim["RLS reconstruction"][-10:].mean() < rim["measured"][-10:].mean()


def test_write_nifti_and_nrrd_all_or_nothing(tmp_path, phantom, result):
    out = result.write(tmp_path / "nii")
    assert (out / "rls.nii.gz").exists() and (out / "report.json").exists() and (out / "aif.csv").exists()
    back = read_volume(out / "ktrans.nii.gz")
    np.testing.assert_allclose(back.affine, phantom.signal.affine, atol=1e-4)
    out2 = result.write(tmp_path / "nrrd", suffix=".nrrd")
    assert (out2 / "rls.nrrd").exists() and not list(out2.glob("*.nii.gz"))
    with pytest.raises(InputError):
        result.write(tmp_path / "nii")  # exists, no overwrite
    with pytest.raises(InputError):
        result.write(tmp_path / "bad", suffix=".png")
    assert not (tmp_path / "bad").exists()


def test_population_aif_relative_enhancement_and_bundled_weights(phantom):
    m = phantom.masks
    params = DCEParameters(rls="bundled", model="patlak")
    res = run_dce(phantom.signal, params, brain_mask=m["brain"], tumor_mask=m["tumor"])
    rep = res.report
    assert rep["aif"]["source"] == "parker" and rep["conversion"]["semi_quantitative"]
    assert any("Parker" in w for w in rep["warnings"]) and any("semi-quantitative" in w for w in rep["warnings"])
    assert list(res.maps)[:4] == ["rls", "rls_abs", "rls_uncertainty", "ktrans"] and "ve" not in res.maps
    assert rep["rls"]["source"] == "bundled"
    rls = res.maps["rls"].data
    assert np.mean(rls[m["enhancing"] & m["pure"]]) > 5 * max(np.mean(rls[m["nawm"]]), 0.1)
    k = res.maps["ktrans"].data
    assert pearson_r(k, phantom.truth["ktrans"].data, m["tumor"]) > 0.9  # semi-quantitative, but it ranks


def test_concentration_input_gives_the_true_parameters(phantom):
    m = phantom.masks
    res = run_dce(phantom.concentration, DCEParameters(input_kind="concentration", rls="none"), aif_mask=m["aif"],
                  brain_mask=m["brain"])
    assert res.report["conversion"]["mode"] == "concentration"
    rim = m["enhancing"] & m["pure"]
    np.testing.assert_allclose(np.median(res.maps["ktrans"].data[rim] / phantom.truth["ktrans"].data[rim]), 1.0,
                               atol=0.02)
    assert np.median(np.abs(res.maps["vp"].data[rim] - phantom.truth["vp"].data[rim])) < 0.003
    assert res.curves().unit == "concentration (mM)"


def test_inputs_are_not_modified_and_cancel_stops_cleanly(phantom):
    series = Volume(phantom.signal.data.copy(), phantom.signal.affine.copy(), phantom.signal.times.copy(),
                    phantom.signal.acquisition)
    before = series.data.copy()
    brain = phantom.masks["brain"].copy()

    def cancel(fraction, message):
        if fraction > 0.3:
            raise CancelledError("stop")

    with pytest.raises(CancelledError):
        run_dce(series, DCEParameters(t10=1.2), brain_mask=brain, progress=cancel)
    np.testing.assert_array_equal(series.data, before)
    np.testing.assert_array_equal(brain, phantom.masks["brain"])


def test_bad_input_gets_a_clear_error(phantom):
    s = phantom.signal
    with pytest.raises(InputError, match="3D"):
        run_dce(s.frame(0))
    with pytest.raises(InputError, match="grid|shape"):
        run_dce(s, brain_mask=np.ones((3, 3, 3), bool))
    no_acq = Volume(s.data, s.affine, s.times)
    with pytest.raises(InputError, match="flip angle and TR"):
        run_dce(no_acq, DCEParameters(t10=1.4), brain_mask=phantom.masks["brain"])
    times = s.times.copy()
    times[5] = times[3]
    with pytest.raises(InputError, match="strictly increasing"):
        run_dce(Volume(s.data, s.affine, times, s.acquisition))
    with pytest.raises(InputError, match="milliseconds"):
        run_dce(s, brain_mask=phantom.masks["brain"],
                t10_map=Volume(phantom.truth["t10"].data * 1000 + 1, s.affine))
    nan = np.where(phantom.masks["brain"][..., None] & (np.arange(s.n_frames) == 4), np.nan, s.data)
    with pytest.raises(InputError, match="NaN"):
        run_dce(Volume(nan, s.affine, s.times, s.acquisition), brain_mask=phantom.masks["brain"])
    with pytest.raises(InputError, match="seconds"):
        DCEParameters(t10=1400)
    with pytest.raises(InputError, match="choices"):
        DCEParameters(model="toft")


def test_aif_search_region_keeps_the_artery_of_a_box_and_ignores_air(phantom, result):
    from scipy import ndimage

    m = phantom.masks
    box = ndimage.binary_dilation(m["aif"], iterations=2)  # an artery with tissue around it, as a drawn box
    region = box.copy()
    air = np.argwhere(phantom.signal.data.max(axis=3) == 0)[:20]
    region[tuple(air.T)] = True  # a box near the skull reaches into the air
    common = dict(brain_mask=m["brain"], tumor_mask=m["tumor"], t10_map=phantom.truth["t10"])
    params = DCEParameters(rls="none")
    searched = run_dce(phantom.signal, DCEParameters(rls="none", aif_region=True), aif_mask=region, **common)
    assert searched.report["aif"]["source"] == "region"
    blood = m["aif"] | m["vessels"] | m["small_vessels"]  # the box also holds a small vessel of arterial blood
    assert searched.aif_mask.sum() >= 5 and not (searched.aif_mask & ~blood).any()
    assert (searched.aif_mask & m["aif"]).sum() >= 0.9 * m["aif"].sum()
    assert searched.aif.max() == pytest.approx(result.aif.max(), rel=0.1)
    tumor = m["tumor"] & m["pure"]
    k_exact = np.mean(result.maps["ktrans"].data[tumor])
    assert np.mean(searched.maps["ktrans"].data[tumor]) == pytest.approx(k_exact, rel=0.1)
    averaged = run_dce(phantom.signal, params, aif_mask=box, **common)
    assert averaged.aif.max() < 0.7 * result.aif.max()  # why a box must not simply be averaged
    assert np.mean(averaged.maps["ktrans"].data[tumor]) > 1.3 * k_exact
    with pytest.raises(InputError, match="AIF mask lies outside the imaged anatomy: 20 of its"):  # averaging air is refused
        run_dce(phantom.signal, params, aif_mask=region, **common)

"""Round 17's Python-API audit: a scripting user's common mistakes get one InputError, never a deep
traceback of another type or a silently wrong number, and inputs are never modified.

Each test reproduces a defect found by the audit (docs/reliability.md §3)."""

import numpy as np
import pytest

from BBBAnomalyLib import InputError, Volume


@pytest.fixture(scope="module")
def dsc():
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    return make_dsc_phantom(snr=None, slices=3, leakage=0.0)


@pytest.fixture(scope="module")
def dce():
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    return make_dce_phantom(snr=40, slices=3, seed=3)


def _snapshot(*arrays):
    return [(a.shape, a.dtype, a.tobytes()) for a in map(np.asarray, arrays)]


# --- roi_statistics: masks as a user has them -------------------------------------------------------------

def test_roi_statistics_reads_integer_float_and_volume_masks_as_nonzero_inside(dsc):
    """A uint8 0/1 mask was used as an index array (rows 0 and 1): mean 0.0 over 5.6 million "voxels", no
    error. 0/255, float masks and a mask Volume were IndexErrors, a list an AttributeError."""
    from BBBAnomalyLib.roistats import roi_statistics

    tumor, nawm = dsc.masks["tumor"], dsc.masks["nawm"]
    maps = {"cbv": dsc.truth["cbv"], "cbf": dsc.truth["cbf"]}
    before = _snapshot(tumor, nawm, maps["cbv"].data, maps["cbf"].data)
    want = roi_statistics(maps, tumor, nawm)
    for roi, ref in ((tumor.astype(np.uint8), nawm.astype(np.uint8)), (tumor.astype(int) * 255, nawm.astype(np.int16)),
                     (tumor.astype(np.float32), nawm.astype(float)), (tumor.tolist(), nawm),
                     (Volume(tumor.astype(np.uint8), maps["cbv"].affine), nawm)):
        got = roi_statistics(maps, roi, ref)
        assert got["maps"]["cbv"]["roi"]["n_voxels"] == int(tumor.sum())
        assert got == want
    assert _snapshot(tumor, nawm, maps["cbv"].data, maps["cbf"].data) == before


def test_roi_statistics_refuses_arrays_as_maps_and_masks_on_another_grid_in_one_line(dsc):
    from BBBAnomalyLib.roistats import roi_statistics

    tumor = dsc.masks["tumor"]
    with pytest.raises(InputError, match="map 'cbv' must be a Volume"):
        roi_statistics({"cbv": dsc.truth["cbv"].data}, tumor)
    with pytest.raises(InputError, match="roi mask"):
        roi_statistics({"cbv": dsc.truth["cbv"]}, tumor[:-1])
    shifted = dsc.truth["cbv"].affine.copy()
    shifted[0, 3] += 10
    with pytest.raises(InputError, match="roi mask"):
        roi_statistics({"cbv": dsc.truth["cbv"]}, Volume(tumor.astype(np.uint8), shifted))


# --- pipelines: the series and the parameters --------------------------------------------------------------

def test_run_dsc_refuses_an_array_as_series_or_second_echo_in_one_line(dsc):
    """A plain array was an AttributeError ('numpy.ndarray' object has no attribute 'spatial_shape')."""
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc

    with pytest.raises(InputError, match="must be a Volume"):
        run_dsc(dsc.signal.data, DSCParameters(), aif_mask=dsc.masks["aif"])
    with pytest.raises(InputError, match="second echo must be a Volume"):
        run_dsc(dsc.signal, DSCParameters(), aif_mask=dsc.masks["aif"], second_echo=dsc.signal.data)


def test_every_pipeline_refuses_parameters_that_are_not_its_dataclass(dsc, dce):
    """A dict or a method name as ``params`` was an AttributeError (DSC) or dataclasses' TypeError
    ("replace() should be called on dataclass instances": DCE, dMRI, T1/FLAIR)."""
    from BBBAnomalyLib.dce import run_dce
    from BBBAnomalyLib.dmri import run_dmri
    from BBBAnomalyLib.dsc import run_dsc
    from BBBAnomalyLib.structural import run_t1flair

    with pytest.raises(InputError, match=r"DSCParameters\(.*got dict"):
        run_dsc(dsc.signal, {"method": "osvd"})
    with pytest.raises(InputError, match=r"DSCParameters\(.*got str"):
        run_dsc(dsc.signal, "osvd")
    with pytest.raises(InputError, match=r"DCEParameters\(.*got dict"):
        run_dce(dce.signal, {"t10": 1.4})
    with pytest.raises(InputError, match=r"DMRIParameters\(.*got dict"):
        run_dmri(dce.signal, {"model": "recdisc"})
    t1 = Volume(dsc.signal.data[..., 0], dsc.signal.affine)
    with pytest.raises(InputError, match=r"T1FlairParameters\(.*got dict"):
        run_t1flair(t1, t1, {"steps": 2})


# --- the building blocks ---------------------------------------------------------------------------------

def test_pk_model_refuses_curves_aif_and_times_that_do_not_fit_in_one_line(dce):
    """One curve (T,) was an IndexError, a wrong frame count or AIF length a broadcasting ValueError from
    inside the fit, an unknown model enum's bare ValueError; decreasing times were fitted silently."""
    from BBBAnomalyLib.dce import PKModel
    from BBBAnomalyLib.dce.exchange import ExchangeModel

    brain = dce.masks["brain"]
    c = dce.concentration.data[brain][:50].astype(np.float64)
    cp, t = dce.aif.copy(), dce.signal.times.copy()
    before = _snapshot(c, cp, t)
    model = PKModel("tofts", cp, t)
    with pytest.raises(InputError, match=r"\(n_voxels, 60\).*\(60,\).*curves\[None\]"):
        model.fit(c[0])
    with pytest.raises(InputError, match=r"\(n_voxels, 60\).*\(50, 59\)"):
        model.fit(c[:, :-1])
    with pytest.raises(InputError, match="AIF has 59 values but 60 frame times"):
        PKModel("tofts", cp[:-1], t)
    with pytest.raises(InputError, match="strictly increasing"):
        PKModel("tofts", cp, t[::-1])
    with pytest.raises(InputError, match="AIF.*NaN or infinite"):
        PKModel("tofts", np.where(np.arange(cp.size) == 3, np.nan, cp), t)
    with pytest.raises(InputError, match="'bogus' is not a model.*tofts"):
        PKModel("bogus", cp, t)
    with pytest.raises(InputError, match=r"\(n_voxels, 60\).*\(60,\)"):
        ExchangeModel(cp, t).fit(c[0])
    with pytest.raises(InputError, match="AIF has 59 values but 60 frame times"):
        ExchangeModel(cp[:-1], t)
    assert ExchangeModel(list(cp), list(t), iterations=0).fit(c[:5].tolist()).fp.shape == (5,)
    assert _snapshot(c, cp, t) == before


def test_deconvolution_model_names_the_real_problem_as_an_input_error(dsc):
    """A NaN in the AIF, dt 0 or NaN said "the AIF is zero"; a 2D AIF was a concatenate ValueError; an unknown
    method the enum's bare ValueError; curves of the wrong shape a ValueError that was not an InputError."""
    from BBBAnomalyLib.dsc import DeconvolutionModel

    aif = dsc.aif.copy()
    curves = dsc.signal.data[dsc.masks["brain"]][:20].astype(np.float64)
    with pytest.raises(InputError, match="AIF.*NaN or infinite"):
        DeconvolutionModel(np.where(np.arange(aif.size) == 3, np.nan, aif), 1.5, "tikhonov")
    for dt in (0, float("nan"), -1.5):
        with pytest.raises(InputError, match="dt"):
            DeconvolutionModel(aif, dt, "tikhonov")
    with pytest.raises(InputError, match=r"AIF must be one curve.*\(2, 60\)"):
        DeconvolutionModel(np.stack([aif, aif]), 1.5)
    with pytest.raises(InputError, match="'bogus' is not a deconvolution method.*osvd"):
        DeconvolutionModel(aif, 1.5, "bogus")
    with pytest.raises(InputError, match="AIF is zero"):
        DeconvolutionModel(np.zeros_like(aif), 1.5)
    model = DeconvolutionModel(aif, 1.5, "osvd")
    with pytest.raises(InputError, match=r"\(n_voxels, 60\).*\(60,\).*curves\[None\]"):
        model.fit(curves[0])
    with pytest.raises(InputError, match=r"\(n_voxels, 60\).*\(20, 59\)"):
        model.fit(curves[:, :-1])


def test_read_mask_refuses_an_array_as_reference_in_one_line(dsc):
    from BBBAnomalyLib.io import read_mask, read_volume

    with pytest.raises(InputError, match="reference.*must be a Volume"):
        read_mask(dsc.masks["tumor"], dsc.signal.data, "tumor")
    with pytest.raises(InputError, match="path"):
        read_volume(3)

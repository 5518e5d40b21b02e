"""Round 18's Python-API audit of the two entry points round 17 did not probe: ``PHAEModel`` (fit, adapt,
pooled_delays) and ``run_t1map``. A scripting user's mistakes get one InputError that says what is wrong and how to
fix it, never a deep traceback of another type or a silently wrong map; unusual but valid input (lists, float64,
Fortran order, read-only arrays) just works; inputs are never modified and results never share their memory.

Each test reproduces a defect found by the audit."""

import hashlib
import warnings

import numpy as np
import pytest

from BBBAnomalyLib import InputError, Volume

# fits of noiseless and integer curves on purpose: PHAEModel's out-of-domain notice is tested in round 19's file
pytestmark = pytest.mark.filterwarnings("ignore:.*outside the range the PHAE weights:UserWarning")


def _hashes(*arrays):
    return [hashlib.sha1(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest() for a in arrays]


@pytest.fixture(scope="module")
def dsc():
    """The noiseless DSC reference object: its brain's ΔR2* curves (float64, as a user computes them), its AIF and
    frame interval, the brain mask and the true CBF."""
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    ph = make_dsc_phantom(snr=None, slices=3, leakage=0.0)
    brain = ph.masks["brain"]
    s = ph.signal.data[brain].astype(np.float64)
    curves = -np.log(np.maximum(s, 1e-6) / s[:, :5].mean(1, keepdims=True)) / ph.signal.acquisition.echo_time
    return {"curves": curves, "aif": ph.aif.astype(np.float64), "dt": float(ph.params.frame_interval),
            "brain": brain, "gm": ph.masks["gm"][brain], "cbf": ph.truth["cbf"].data[brain],
            "voxel_sizes": ph.signal.voxel_sizes}


@pytest.fixture(scope="module")
def model(dsc):
    from BBBAnomalyLib.dsc.phae import PHAEModel

    return PHAEModel(dsc["aif"], dsc["dt"], device="cpu")


# --- PHAEModel -------------------------------------------------------------------------------------------------

def test_phae_model_names_a_bad_aif_dt_or_setting_as_an_input_error(dsc):
    """dt 0 was a ZeroDivisionError, -1.5 a math domain error, NaN a ValueError, inf an IndexError from the network,
    None a TypeError, 1500 (milliseconds) CBF 4x low with no error; a (1, T) AIF said "at least 8 frames", a NaN one
    "no positive peak"; an AIF peaking at its last frame (bolus cut off) gave CBF 40 % low silently; threads=-2 was
    torch's RuntimeError; chunk_voxels=0 a ValueError from range() on a one-CPU machine."""
    from BBBAnomalyLib.dsc.phae import PHAEModel

    aif, dt = dsc["aif"], dsc["dt"]
    for bad in (0, -1.5, float("nan"), float("inf"), None, [1.5], 0.0015):
        with pytest.raises(InputError, match=r"dt \(the frame interval, s\)"):
            PHAEModel(aif, bad)
    with pytest.raises(InputError, match="got 1500.*milliseconds divided by 1000"):
        PHAEModel(aif, 1500)
    with pytest.raises(InputError, match=r"AIF must be one curve.*\(1, 60\)"):
        PHAEModel(aif[None], dt)
    with pytest.raises(InputError, match="AIF holds NaN or infinite"):
        PHAEModel(np.where(np.arange(aif.size) == 3, np.nan, aif), dt)
    with pytest.raises(InputError, match="AIF must be a sequence of numbers"):
        PHAEModel(["a"] * aif.size, dt)
    cut = np.roll(aif, aif.size - 1 - int(np.argmax(aif)))
    with pytest.raises(InputError, match="AIF peaks at its last frame.*bolus passage is not in the series"):
        PHAEModel(cut, dt)
    with pytest.raises(InputError, match="threads"):
        PHAEModel(aif, dt, threads=-2)
    with pytest.raises(InputError, match="chunk_voxels"):
        PHAEModel(aif, dt, chunk_voxels=0)


def test_phae_fit_names_bad_curves_and_delays_as_input_errors(dsc, model):
    """A (T,) curve, (X, Y, Z, T) curves or a wrong frame count were bare ValueErrors (no curves[None] hint);
    complex curves were fitted on their real part with numpy's warning; a NaN or inf curve gave a NaN voxel
    silently; a NaN delay_shift was cast to the smallest int64 and every curve became its first frame (no error)."""
    curves = dsc["curves"][:50]
    with pytest.raises(InputError, match=r"\(n_voxels, 60\).*\(60,\).*curves\[None\]"):
        model.fit(curves[0])
    with pytest.raises(InputError, match=r"\(n_voxels, 60\).*\(2, 5, 5, 60\)"):
        model.fit(curves.reshape(2, 5, 5, 60))
    with pytest.raises(InputError, match=r"\(n_voxels, 60\).*\(50, 59\)"):
        model.fit(curves[:, :-1])
    with pytest.raises(InputError, match="real numbers.*complex"):
        model.fit(curves.astype(complex))
    for bad in (np.nan, np.inf):
        with pytest.raises(InputError, match=r"1 of the 50 curves \(rows \[5\]\) hold NaN or infinite"):
            model.fit(np.where((np.arange(50) == 5)[:, None] & (np.arange(60) == 30), bad, curves))
    with pytest.raises(InputError, match="delay_shift holds NaN"):
        model.fit(curves, delay_shift=np.full(50, np.nan))
    with pytest.raises(InputError, match=r"delay_shift must be \(50,\)"):
        model.fit(curves, delay_shift=np.zeros(3))


def test_phae_fit_takes_unusual_valid_curves_unchanged_and_is_right_on_the_phantom(dsc, model):
    """Lists, float64, float16, int16, Fortran-ordered, strided and read-only curves give the same maps (a read-only
    float32 array made torch warn of "undefined behavior" on writes); the curves are never modified and no output
    shares their memory; grey-matter CBF of the noiseless reference object is within 15 % of the truth."""
    curves = dsc["curves"]
    ref = model.fit(curves)
    gm_cbf = float(np.median(ref.cbf[dsc["gm"]])) * 6000  # kH/ρ = 1 on the phantom: 1/s -> ml/100 ml/min
    assert gm_cbf == pytest.approx(float(np.median(dsc["cbf"][dsc["gm"]])), rel=0.15)
    sub = curves[:300]
    f32 = sub.astype(np.float32)
    read_only = f32.copy()
    read_only.setflags(write=False)
    before = _hashes(sub, f32, read_only)
    want = model.fit(f32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for given in (sub.tolist(), sub, np.asfortranarray(f32), np.repeat(f32, 2, axis=0)[::2], read_only):
            got = model.fit(given)
            np.testing.assert_array_equal(got.cbf, want.cbf)
            np.testing.assert_array_equal(got.fitted, want.fitted)
    for given in (f32, read_only):
        got = model.fit(given)
        for name in ("cbf", "tmax", "mtt", "loss", "fitted", "fit_error"):
            assert not np.shares_memory(getattr(got, name), given), name
    assert model.fit(sub.astype(np.int16)).cbf.shape == (300,)
    assert model.fit(f32, keep_curves=False).fitted is None
    assert _hashes(sub, f32, read_only) == before


def test_phae_adapt_refuses_curves_that_would_poison_the_weights(dsc):
    """adapt() on curves with one NaN voxel finished with loss NaN and left NaN weights in the model: every later
    fit was all NaN, with no error. A (T,) curve was an IndexError, no curves, batch=0 or max_voxels=0 a
    RuntimeError from torch, lr=NaN torch's ValueError."""
    from BBBAnomalyLib.dsc.phae import PHAEModel

    model = PHAEModel(dsc["aif"], dsc["dt"], weights="dsc-phae-sim", device="cpu")
    curves = dsc["curves"][:200]
    with pytest.raises(InputError, match=r"1 of the 200 curves \(rows \[5\]\) hold NaN"):
        model.adapt(np.where((np.arange(200) == 5)[:, None], np.nan, curves), steps=2)
    assert np.isfinite(model.fit(curves).cbf).all()  # the weights are as they were
    with pytest.raises(InputError, match=r"curves\[None\]"):
        model.adapt(curves[0], steps=2)
    with pytest.raises(InputError, match="at least one curve"):
        model.adapt(curves[:0], steps=2)
    for kw, name in (({"batch": 0}, "batch"), ({"max_voxels": 0}, "max_voxels"), ({"lr": float("nan")}, "lr")):
        with pytest.raises(InputError, match=name):
            model.adapt(curves, steps=2, **kw)
    before = _hashes(curves)
    assert model.adapt(curves.tolist(), steps=2)["steps"] == 2
    assert _hashes(curves) == before


def test_phae_pooled_delays_takes_lists_and_names_bad_masks_and_voxel_sizes(dsc, model):
    """Curves as a list were an AttributeError ('shape'); a NaN curve a RuntimeError from torch (index
    -9223372036854775808); an empty mask numpy's zero-size reduction; voxel sizes NaN, (2, 2) or 2.0 a ValueError or
    IndexError from the block grid, 0 or negative sizes silently the largest blocks; a curve count that does not match
    the mask a bare ValueError."""
    curves, brain, sizes = dsc["curves"], dsc["brain"], dsc["voxel_sizes"]
    before = _hashes(curves, brain)
    want, summary = model.pooled_delays(curves, brain, sizes)
    assert np.isfinite(want).all() and summary["blocks"] > 0
    got, _ = model.pooled_delays(curves.tolist(), brain.astype(np.uint8), float(sizes[0]))  # isotropic 2 mm
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert _hashes(curves, brain) == before
    with pytest.raises(InputError, match=r"1 of the \d+ curves \(rows \[5\]\) hold NaN"):
        model.pooled_delays(np.where((np.arange(curves.shape[0]) == 5)[:, None], np.nan, curves), brain, sizes)
    with pytest.raises(InputError, match="brain mask is empty"):
        model.pooled_delays(curves[:0], np.zeros_like(brain), sizes)
    with pytest.raises(InputError, match="curves for a brain mask of"):
        model.pooled_delays(curves[:-1], brain, sizes)
    for bad in ((np.nan, 2, 2), (2, 2), (0, 0, 0), (-2, -2, -2)):
        with pytest.raises(InputError, match="voxel_sizes must be 3 positive voxel edges in mm"):
            model.pooled_delays(curves, brain, bad)


# --- run_t1map -------------------------------------------------------------------------------------------------

ANGLES, TR = np.array([2.0, 5.0, 15.0]), 0.005


@pytest.fixture(scope="module")
def vfa():
    """Noise-free SPGR signals at the DCE reference object's T10 (brain, M0 1000) and its brain mask."""
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom
    from BBBAnomalyLib.t1map.vfa import spgr_signal

    ph = make_dce_phantom(snr=40, slices=3, seed=5)
    t10, brain = ph.truth["t10"].data.astype(np.float64), ph.masks["brain"]
    m0 = np.where(brain, 1000.0, 0.0)
    s = spgr_signal(m0.ravel(), 1 / np.where(brain, t10, 1.0).ravel(), ANGLES, TR).reshape(t10.shape + (3,))
    return {"signals": Volume(s.astype(np.float32), ph.truth["t10"].affine), "t10": t10, "brain": brain}


def test_run_t1map_checks_a_vfa_series_built_in_python(vfa):
    """A VFASeries built by hand skipped read_vfa's checks: flip angles as a list or tuple were AttributeErrors,
    (3, 1) a broadcasting error, one angle too few a bare ValueError; radians (0.035, 0.087, 0.26), TR in ms (5.0),
    TR 0 or negative gave T1 = 1000 s or 1 s in every voxel with fit_ok 1; an array as series or a tuple as vfa were
    AttributeErrors, a 3D series numpy's AxisError, a bad method name the enum's bare ValueError, complex signals
    were fitted on their real part. The noiseless phantom's T1 is exact, and its input left untouched."""
    from BBBAnomalyLib.t1map.inputs import VFASeries
    from BBBAnomalyLib.t1map.pipeline import run_t1map

    sig, brain = vfa["signals"], vfa["brain"]
    before = _hashes(sig.data, ANGLES)
    want = run_t1map(VFASeries(sig, ANGLES.copy(), TR), mask=brain)
    np.testing.assert_allclose(want.maps["t1"].data[brain], vfa["t10"][brain], rtol=1e-4)
    assert want.maps["fit_ok"].data[brain].all()
    assert not any(np.shares_memory(v.data, sig.data) for v in want.maps.values())
    for angles, tr in (([2.0, 5.0, 15.0], TR), ((2, 5, 15), TR), (ANGLES[:, None], TR), (ANGLES, np.array([TR])),
                       (ANGLES, str(TR))):
        got = run_t1map(VFASeries(sig, angles, tr), mask=brain)
        np.testing.assert_array_equal(got.maps["t1"].data, want.maps["t1"].data)
    np.testing.assert_array_equal(run_t1map(VFASeries(sig, ANGLES, TR), "LINEAR", mask=brain).maps["fit_ok"].data,
                                  want.maps["fit_ok"].data)
    for angles, tr, match in ((np.deg2rad(ANGLES), TR, "are they radians.*degrees"),
                              (ANGLES, 5.0, "TR = 5.0 does not look like seconds"),
                              (ANGLES, 0.0, "does not look like seconds"), (ANGLES, -TR, "does not look like seconds"),
                              (ANGLES, None, "repetition time is unknown"), (ANGLES[:2], TR, "2 flip angles for 3"),
                              (np.r_[ANGLES, 20.0], TR, "4 flip angles for 3"),
                              (np.array([5.0, 5.0, 5.0]), TR, "two different flip angles"),
                              ([2.0, "x", 15.0], TR, "are not numbers")):
        with pytest.raises(InputError, match=match):
            run_t1map(VFASeries(sig, angles, tr), mask=brain)
    with pytest.raises(InputError, match="must be a Volume.*ndarray"):
        run_t1map(VFASeries(sig.data, ANGLES, TR))
    with pytest.raises(InputError, match="is 3D"):
        run_t1map(VFASeries(sig.frame(0), ANGLES, TR))
    with pytest.raises(InputError, match="takes a VFASeries.*tuple"):
        run_t1map((sig, ANGLES, TR))
    with pytest.raises(InputError, match="'bogus' is not a T1 method.*linear, nonlinear"):
        run_t1map(VFASeries(sig, ANGLES, TR), "bogus")
    with pytest.raises(InputError, match="complex128.*magnitude"):
        run_t1map(VFASeries(Volume(sig.data.astype(complex), sig.affine), ANGLES, TR))
    assert _hashes(sig.data, ANGLES) == before


def test_check_vfa_refuses_radians_on_the_command_line_too(vfa):
    from BBBAnomalyLib.t1map.inputs import check_vfa

    with pytest.raises(InputError, match=r"radians.*--flip-angles 2 5 12"):
        check_vfa(vfa["signals"], np.deg2rad(ANGLES), TR)


def test_run_t1map_marks_t1_at_the_fit_bounds_as_failed(vfa):
    """The nonlinear fit clips R1 to T1 10 ms - 1000 s; a voxel left at the bound counted as fitted: TR in
    microseconds (5e-6 for 5 ms) gave T1 = 10 ms with fit_ok 1 in every brain voxel, no warning. Now those voxels
    are fit_ok 0 and the warning names the units."""
    from BBBAnomalyLib.t1map.inputs import VFASeries
    from BBBAnomalyLib.t1map.pipeline import run_t1map

    brain = vfa["brain"]
    result = run_t1map(VFASeries(vfa["signals"], ANGLES, TR * 1e-3), mask=brain)
    assert not result.maps["fit_ok"].data[brain].any()
    assert any("flip angles are in degrees and TR in seconds" in w for w in result.report["warnings"])
    t1 = result.maps["t1"].data
    assert not np.any((t1 > 0) & ((t1 <= 0.0100001) | (t1 >= 999.99)))


def test_run_t1map_reads_only_the_masks_voxels_and_takes_a_b1_array(vfa):
    """A NaN voxel outside the given mask refused the whole series ("replace them"), with no word of the mask; a B1
    map as an array on the VFA grid was an AttributeError ('affine'); a negative signal (a signed or offset series)
    was fitted without a warning."""
    from BBBAnomalyLib.t1map.inputs import VFASeries
    from BBBAnomalyLib.t1map.pipeline import run_t1map

    sig, brain = vfa["signals"], vfa["brain"]
    holes = sig.data.copy()
    holes[0, 0, 0, :] = np.nan
    assert not brain[0, 0, 0]
    want = run_t1map(VFASeries(sig, ANGLES, TR), mask=brain)
    got = run_t1map(VFASeries(Volume(holes, sig.affine), ANGLES, TR), mask=brain)
    np.testing.assert_array_equal(got.maps["t1"].data, want.maps["t1"].data)
    with pytest.raises(InputError, match="1 voxels of the VFA series contain NaN.*mask that leaves them out"):
        run_t1map(VFASeries(Volume(holes, sig.affine), ANGLES, TR))
    inside = holes.copy()
    inside[brain] = np.nan
    with pytest.raises(InputError, match=r"\d+ voxels inside the mask of the VFA series contain NaN"):
        run_t1map(VFASeries(Volume(inside, sig.affine), ANGLES, TR), mask=brain)
    b1 = np.ones(brain.shape)
    got = run_t1map(VFASeries(sig, ANGLES, TR), b1=b1, mask=brain)
    np.testing.assert_array_equal(got.maps["t1"].data, want.maps["t1"].data)
    with pytest.raises(InputError, match="B1 map has shape"):
        run_t1map(VFASeries(sig, ANGLES, TR), b1=b1[:-1], mask=brain)
    signed = sig.data.copy()
    signed[brain, 1] *= -1
    report = run_t1map(VFASeries(Volume(signed, sig.affine), ANGLES, TR), mask=brain).report
    assert any("negative VFA signal" in w for w in report["warnings"])


def test_the_classic_deconvolution_refuses_an_aif_cut_off_at_its_last_frame_too(dsc):
    """The audit's note on DeconvolutionModel: oSVD read an AIF that peaks at the last frame (the bolus cut off by
    the end of the series) as GM CBF 31.8 for a true 60, without an error, where PHAE refuses it. Every classic method
    now refuses it the same way; the whole AIF still runs."""
    from BBBAnomalyLib.dsc.deconvolution import DeconvolutionModel

    aif, dt = dsc["aif"], dsc["dt"]
    cut = np.roll(aif, aif.size - 1 - int(np.argmax(aif)))
    for method in ("osvd", "csvd", "ssvd", "tikhonov"):
        with pytest.raises(InputError, match="AIF peaks at its last frame.*bolus passage is not in the series"):
            DeconvolutionModel(cut, dt, method)
    fit = DeconvolutionModel(aif, dt, "osvd").fit(dsc["curves"][dsc["gm"]][:50])
    assert np.isfinite(fit.cbf).all()

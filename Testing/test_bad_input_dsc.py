"""`bbbanomaly dsc` on bad input: exit 2, one line that says what is wrong and how to fix it, no
traceback, nothing written, inputs untouched (issue 12). Plus the report values that would mislead
(negative single-echo tumor CBV, ratios to a reference mean of ~0) and the bounded resampling grid.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from bad_input_helpers import (SHAPE, assert_refused, brain_mask, dsc_signal, run_subprocess, save_nifti,
                               save_nifti_raw_affine, write_dsc_case)

from BBBAnomalyLib.core.errors import InputError


@pytest.fixture
def case(tmp_path):
    return write_dsc_case(tmp_path / "in")


def _series_variant(case, name, data, **kw):
    """Another series file beside the case (same folder, so the input hashes cover it)."""
    return str(save_nifti(case["series"].parent / name, data, **kw))


def _times_file(case, values):
    path = case["series"].parent / "times.txt"
    path.write_text("\n".join(f"{v:g}" for v in values) + "\n")
    return str(path)


# (id, extra arguments or a function of the case giving (series, extra arguments), key words of the message)
PARAMETER_CASES = [
    ("kh-nan", ["--kh", "nan"], ("--kh", "nan", "0.73")),
    ("kh-inf", ["--kh", "inf"], ("--kh", "inf")),
    ("kh-negative", ["--kh", "-1"], ("--kh", "(0, 2]")),
    ("density-nan", ["--density", "nan"], ("--density", "1.04")),
    ("density-zero", ["--density", "0"], ("--density",)),
    ("te-nan", ["--te", "nan"], ("--te", "seconds")),
    ("te-in-ms", ["--te", "30"], ("--te", "0.03")),
    ("oi-target-nan", ["--oi-target", "nan"], ("--oi-target", "0.095")),
    ("skip-frames-1000", ["--skip-frames", "1000"], ("--skip-frames 1000", "40 frames", "at most")),
    ("skip-frames-negative", ["--skip-frames", "-1"], ("--skip-frames", "between 0")),
    ("baseline-frames-beyond", ["--baseline-frames", "0", "60"], ("--baseline-frames 0 60", "40 frames", "STOP <= 40")),
    ("skip-frames-past-the-bolus", ["--skip-frames", "9"], ("pre-bolus frames lie between", "--skip-frames",
                                                             "--baseline-frames FIRST STOP")),
    ("too-many-frames", lambda c: [_series_variant(c, "long.nii.gz", np.repeat(dsc_signal()[0], 52, axis=3), dt=1.5),
                                   "--te", "0.03"], ("2080 frames", "at most 2048", "first pass")),
    ("baseline-frames-empty", ["--baseline-frames", "5", "5"], ("--baseline-frames 5 5", "at least 2")),
    ("baseline-frames-no-bolus-left", ["--baseline-frames", "0", "39"], ("--baseline-frames 0 39", "bolus")),
    ("frame-interval-1e9", ["--frame-interval", "1e9"], ("1e+09 s apart", "--frame-interval", "--times")),
    ("frame-interval-ms", ["--frame-interval", "1500"], ("1500 s apart", "milliseconds", "--frame-interval 1.5")),
    ("frame-interval-tiny", ["--frame-interval", "0.001"], ("0.001 s apart", "--frame-interval")),
    ("frame-interval-zero", ["--frame-interval", "0"], ("frame interval", "positive")),
    ("times-in-ms", lambda c: [c["series"], "--times", _times_file(c, np.arange(40) * 1500.0)],
     ("times file", "1500 s apart", "milliseconds")),
    ("times-one-typo", lambda c: [c["series"], "--times", _times_file(c, np.r_[np.arange(39) * 1.5, 6000.0])],
     ("frame 39", "6000", "mistyped")),
    ("times-not-increasing", lambda c: [c["series"], "--times", _times_file(c, np.r_[np.arange(20), np.arange(20)] * 1.5)],
     ("increase strictly", "frame 20")),
    ("times-wrong-count", lambda c: [c["series"], "--times", _times_file(c, np.arange(30) * 1.5)],
     ("30 frame times", "40 frames")),
    ("tumor-mask-is-brain-mask", lambda c: [c["series"], "--mask", c["mask"], "--tumor-mask", c["mask"]],
     ("tumor mask", "BSW", "--tumor-mask", "--leakage-correction none")),
    ("concentration-without-mask", lambda c: [_series_variant(c, "conc.nii.gz", _concentration(), dt=1.5),
                                              "--input-kind", "concentration"],
     ("automatic brain mask", "concentration", "--mask")),
    ("complex-series", lambda c: [_series_variant(c, "cx.nii.gz", dsc_signal()[0].astype(np.complex64), dt=1.5),
                                  "--te", "0.03"], ("complex", "magnitude")),
    ("singular-affine", lambda c: [str(save_nifti_raw_affine(c["series"].parent / "flat.nii.gz", dsc_signal()[0],
                                                             np.diag([2.0, 2.0, 0.0, 1.0]), dt=1.5)), "--te", "0.03"],
     ("zero voxel size", "fix the header")),
    ("nan-affine", lambda c: [str(save_nifti_raw_affine(c["series"].parent / "nan.nii.gz", dsc_signal()[0],
                                                        np.full((4, 4), np.nan), dt=1.5)), "--te", "0.03"],
     ("NaN", "affine", "fix the header")),
    ("3d-input", lambda c: [_series_variant(c, "frame.nii.gz", dsc_signal()[0][..., 0]), "--te", "0.03"],
     ("3D", "4D")),
    ("too-few-frames", lambda c: [_series_variant(c, "short.nii.gz", dsc_signal()[0][..., :6], dt=1.5),
                                  "--te", "0.03"], ("6 frames", "at least")),
    ("mask-on-another-grid", lambda c: [c["series"], "--tumor-mask", _other_grid_mask(c)],
     ("not on the input's voxel grid", "shape 12x12x4 vs 10x10x3", "voxel 1.5", "Resample")),
    ("all-nan-series", lambda c: [_series_variant(c, "nan.nii.gz", np.full(SHAPE + (40,), np.nan, np.float32), dt=1.5),
                                  "--te", "0.03"], ("no voxels with signal", "NaN")),
    ("partly-nan-series", lambda c: [_series_variant(c, "partnan.nii.gz", _partly_nan(), dt=1.5), "--te", "0.03"],
     ("NaN", "--mask")),
]


def _concentration():
    """ΔR2* data: zero background, small tissue curves, one strong artery (what Otsu splits wrongly)."""
    conc = np.zeros(SHAPE + (40,), np.float32)
    conc[brain_mask(), 10:20] = 0.5
    conc[4, 4, :, 8:15] = 50.0
    return conc


def _partly_nan():
    data = dsc_signal()[0]
    data[2:5, 2:5, :, 3] = np.nan
    return data


def _other_grid_mask(case):
    m = np.zeros((12, 12, 4), np.uint8)
    m[2:5, 2:5, 1] = 1
    return str(save_nifti(case["series"].parent / "grid.nii.gz", m, np.diag([1.5, 1.5, 2.5, 1.0])))


@pytest.mark.parametrize("extra, keywords", [c[1:] for c in PARAMETER_CASES], ids=[c[0] for c in PARAMETER_CASES])
def test_dsc_refuses_bad_input(case, tmp_path, capsys, extra, keywords):
    args = [str(a) for a in (extra(case) if callable(extra) else [case["series"], *extra])]
    out = tmp_path / "out"
    assert_refused(["dsc", *args, "--out", str(out)], capsys, case["series"].parent, out, keywords)


def test_the_refusals_need_no_traceback_in_a_real_process(case, tmp_path):
    """What a user's shell shows: one line on stderr, exit 2, even for values argparse accepts (nan)."""
    for argv in (["--kh", "nan"], ["--frame-interval", "1e9"], ["--skip-frames", "1000"]):
        done = run_subprocess(["dsc", str(case["series"]), *argv, "--out", str(tmp_path / "out"), "--quiet"], tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "out").exists()


# --- values that would mislead in the report -------------------------------------------------------------
def test_negative_single_echo_tumor_cbv_is_explained(tmp_path):
    """Leaky tumor voxels whose signal rises (T1 shortening) give a negative CBV: the report says why."""
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc
    from BBBAnomalyLib.core.volume import Acquisition, Volume

    data, te = dsc_signal()
    tumor = np.zeros(SHAPE, bool)
    tumor[6:8, 6:8, :] = True
    t = np.arange(40) * 1.5
    data[tumor] = 100.0 * (1.0 + 0.3 * np.clip((t - 12.0) / 10.0, 0, 1))  # signal up: T1 leakage dominates
    series = Volume(data, np.diag([2.0, 2.0, 3.0, 1.0]), t, Acquisition(echo_time=te))
    result = run_dsc(series, DSCParameters(leakage_correction="none", method="csvd"), brain_mask=brain_mask(),
                     tumor_mask=tumor)
    assert result.report["summary"]["tumor"]["cbv"]["median"] < 0
    warning = " ".join(w for w in result.report["warnings"] if "negative" in w)
    assert "T1" in warning and "dual-echo" in warning and "BSW" in warning


def test_ratios_to_a_reference_of_about_zero_are_not_reported():
    """Tumor/NAWM K2 where NAWM K2 is noise around 0 (46,212,667 was reported): no ratio, a warning."""
    from BBBAnomalyLib.dsc.validation import tumor_to_nawm

    rng = np.random.default_rng(0)
    nawm_k2 = rng.normal(0.0, 1e-3, 500)
    nawm_k2 -= nawm_k2.mean() - 2e-11  # mean ~2e-11: a ratio of ~1e9
    from BBBAnomalyLib.core.report import summarise

    summary = {"tumor": {"k2": summarise(np.full(50, 0.01)), "cbv": summarise(np.full(50, 6.0))},
               "nawm": {"k2": summarise(nawm_k2), "cbv": summarise(rng.normal(2.0, 0.3, 500))}}
    warnings: list[str] = []
    ratios = tumor_to_nawm(summary, {"k2": None, "cbv": None}, warnings)
    assert "k2" not in ratios and ratios["cbv"] == pytest.approx(3.0, rel=0.05)
    assert len(warnings) == 1 and "k2" in warnings[0] and "indistinguishable from 0" in warnings[0]
    summary["nawm"]["cbv"] = summarise(np.full(10, -1.0))
    warnings.clear()
    assert tumor_to_nawm(summary, {"cbv": None}, warnings) == {} and "other sign" in warnings[0]


def test_rcbv_map_is_skipped_when_the_nawm_mean_is_negative():
    from BBBAnomalyLib.dsc.validation import reference_ratios

    assert reference_ratios(np.array([-1.0, -2.0, -1.5]))[0] is None
    mean, why = reference_ratios(np.array([2.0, 2.2, 1.8]))
    assert mean == pytest.approx(2.0) and why is None


def test_the_resampling_grid_is_bounded():
    """One wrong frame time must not ask the uniform grid for millions of frames (7.7 GB, 1.4 TiB)."""
    from BBBAnomalyLib.dsc.validation import MAX_GRID_GROWTH, uniform_times

    times = np.r_[np.arange(39) * 1.5, 1e7]
    with pytest.raises(InputError, match="uniform grid of .* frames"):
        uniform_times(times)
    grid, resample = uniform_times(np.r_[np.arange(20) * 1.5, 30.0 + np.arange(20) * 2.0])
    assert resample is not None and grid.size <= MAX_GRID_GROWTH * 40


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.none()))
def test_any_kh_is_accepted_in_range_or_refused_in_one_line(kh):
    """The library, the CLI and the worker share the dataclass: NaN/inf/strings never reach a map."""
    from BBBAnomalyLib.dsc import DSCParameters

    try:
        params = DSCParameters(kh=kh)
    except InputError as exc:
        assert "\n" not in str(exc) and "--kh" in str(exc)
        return
    assert 0 < params.kh <= 2 and np.isfinite(params.kh)

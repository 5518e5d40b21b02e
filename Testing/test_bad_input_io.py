"""Reading bad files (issue 12): complex or RGB voxels, unusable affines, timings in the wrong unit,
corrupt headers -- refused at read time with one line, whatever the format; and property-based
checks (hypothesis) that no shape, dtype, affine or timing gets past the checks as anything but a
one-line InputError or a usable input."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from bad_input_helpers import (AFFINE, assert_refused, dsc_signal, run_subprocess, save_nifti, save_nifti_raw_affine,
                               write_dsc_case)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.io import read_mask, read_volume
from BBBAnomalyLib.io._common import check_geometry
from BBBAnomalyLib.io.timing import MAX_DURATION_S, check_dynamic_timing
from BBBAnomalyLib.core.volume import Volume

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def case(tmp_path):
    return write_dsc_case(tmp_path / "in")


def _nrrd_complex(folder: Path) -> str:
    path = folder / "cx.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 10, 10), np.complex64)), str(path))
    return str(path)


def _nifti_rgb(folder: Path) -> str:
    rgb = np.zeros((10, 10, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = folder / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, AFFINE), str(path))
    return str(path)


def _nrrd_zero_spacing(folder: Path) -> str:
    path = folder / "zero.nrrd"
    path.write_text("NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
                    "space directions: (0,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
                    "encoding: ascii\nspace origin: (0,0,0)\n\n1 2 3 4 5 6 7 8\n")
    return str(path)


def _sidecar_times_in_ms(folder: Path) -> str:
    data, te = dsc_signal()
    path = save_nifti(folder / "ms.nii.gz", data)
    (folder / "ms.json").write_text(json.dumps({"EchoTime": te, "VolumeTiming": [1500.0 * i for i in range(40)]}))
    return str(path)


def _header_interval_in_ms(folder: Path) -> str:
    data, te = dsc_signal()
    path = save_nifti(folder / "hdr.nii.gz", data, dt=1500.0, sidecar=json.dumps({"EchoTime": te}))
    return str(path)


def _truncated(folder: Path, case) -> str:
    path = folder / "cut.nii.gz"
    path.write_bytes(Path(case["series"]).read_bytes()[:300])
    return str(path)


# (id, function of (input folder, case) -> arguments after `dsc`, key words of the message)
CASES = [
    ("nifti-complex128", lambda f, c: [str(save_nifti(f / "c128.nii.gz", dsc_signal()[0].astype(np.complex128), dt=1.5))],
     ("complex128", "magnitude")),
    ("nrrd-complex", lambda f, c: [_nrrd_complex(f)], ("complex", "magnitude")),
    ("nifti-rgb", lambda f, c: [_nifti_rgb(f)], ("not numbers", "scalar")),
    ("nrrd-zero-spacing", lambda f, c: [_nrrd_zero_spacing(f)], ("could not read NRRD", "space directions")),
    ("nifti-truncated", lambda f, c: [_truncated(f, c)], ("could not read NIfTI", "complete")),
    ("nifti-nan-affine", lambda f, c: [str(save_nifti_raw_affine(f / "n.nii.gz", dsc_signal()[0], np.full((4, 4), np.nan),
                                                                 dt=1.5))], ("NaN", "affine", "header")),
    ("nifti-inf-affine", lambda f, c: [str(save_nifti_raw_affine(
        f / "i.nii.gz", dsc_signal()[0], np.array([[np.inf, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1.0]]),
        dt=1.5))], ("NaN or infinite", "affine")),
    ("sidecar-times-in-ms", lambda f, c: [_sidecar_times_in_ms(f)],
     ("frame times", "1500 s apart", "milliseconds", "--frame-interval 1.5")),
    ("header-interval-in-ms", lambda f, c: [_header_interval_in_ms(f)], ("1500 s apart", "--frame-interval 1.5")),
    ("invalid-json-sidecar", lambda f, c: [_broken_sidecar(f)], ("JSON sidecar", "fix or remove")),
    ("missing-file", lambda f, c: [str(f / "nothere.nii.gz")], ("not found", "check the path")),
    ("unknown-format", lambda f, c: [_file(f, "series.mha")], ("cannot tell the format", "NIfTI")),
]


def _broken_sidecar(folder: Path) -> str:
    path = save_nifti(folder / "broken.nii.gz", dsc_signal()[0], dt=1.5)
    (folder / "broken.json").write_text("{EchoTime: 0.03")
    return str(path)


def _file(folder: Path, name: str) -> str:
    (folder / name).write_bytes(b"x")
    return str(folder / name)


@pytest.mark.parametrize("make, keywords", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_files_are_refused_at_read_time(case, tmp_path, capsys, make, keywords):
    folder = case["series"].parent
    args = make(folder, case)
    out = tmp_path / "out"
    assert_refused(["dsc", *args, "--te", "0.03", "--out", str(out)], capsys, folder, out, keywords)


def test_bad_files_need_no_traceback_in_a_real_process(case, tmp_path):
    """What a user's shell shows (docs/reliability.md §3) for files refused at read time: one line, exit 2."""
    folder = Path(case["series"]).parent
    for make in (lambda: [_nrrd_complex(folder)], lambda: [_truncated(folder, case)], lambda: [_nifti_rgb(folder)]):
        done = run_subprocess(["dsc", *make(), "--out", str(tmp_path / "out"), "--quiet"], tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "out").exists()


def test_roi_stats_refuses_a_map_with_an_unusable_affine(case, tmp_path, capsys):
    folder = case["series"].parent
    bad = save_nifti_raw_affine(folder / "cbv.nii.gz", np.ones((10, 10, 3), np.float32), np.diag([2.0, 0.0, 3.0, 1.0]))
    out = tmp_path / "stats.json"
    assert_refused(["roi-stats", str(bad), "--roi", str(case["tumor"]), "--json", str(out)], capsys, folder, out,
                   ("zero voxel size",))


def test_grid_mismatch_is_one_line_and_the_affines_go_to_the_log(case, caplog):
    series = read_volume(case["series"])
    other = Volume(np.ones((10, 10, 3), np.uint8), np.diag([2.0, 2.0, 3.0, 1.0]) @ np.diag([1, 1, 1, 1.0]))
    other.affine[2, 3] = 6.0
    with caplog.at_level("INFO", logger="BBBAnomalyLib"), pytest.raises(InputError) as excinfo:
        read_mask(other, series, "tumor-mask")
    message = str(excinfo.value)
    assert "\n" not in message and "origin 6 mm apart" in message and "Resample" in message
    assert "input affine" in caplog.text


# --- property-based: no shape, dtype, affine or timing slips through as anything but an InputError ----------
FINITE = st.floats(-10.0, 10.0, allow_nan=False)
ENTRY = st.one_of(FINITE, st.just(0.0), st.just(float("nan")), st.just(float("inf")))


@FAST
@given(st.lists(ENTRY, min_size=12, max_size=12))
def test_any_affine_is_usable_or_refused_in_one_line(entries):
    affine = np.eye(4)
    affine[:3, :] = np.reshape(entries, (3, 4))
    try:
        checked = check_geometry(affine, "x.nii.gz")
    except InputError as exc:
        assert "\n" not in str(exc) and "x.nii.gz" in str(exc)
        return
    inverse = np.linalg.inv(checked)  # an accepted affine places every voxel and can be inverted
    assert np.isfinite(inverse).all() and (np.linalg.norm(checked[:3, :3], axis=0) > 0).all()


@FAST
@given(st.sampled_from(["uint8", "int16", "int32", "float32", "float64", "complex64", "complex128"]),
       st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)))
def test_any_dtype_reads_back_or_is_refused(dtype, shape):
    data = (np.arange(np.prod(shape)).reshape(shape) % 7).astype(dtype)
    with tempfile.TemporaryDirectory() as folder:
        path = save_nifti(Path(folder) / "x.nii.gz", data)
        if np.dtype(dtype).kind == "c":
            with pytest.raises(InputError, match="complex"):
                read_volume(path)
        else:
            np.testing.assert_array_equal(read_volume(path).data, data)


INTERVAL = st.one_of(st.floats(1e-4, 1e4), st.sampled_from([0.0, -1.0, float("nan"), float("inf"), 1e9]))


@FAST
@given(st.lists(INTERVAL, min_size=1, max_size=60), st.floats(-100.0, 100.0))
def test_any_timing_is_plausible_or_refused_and_the_grid_stays_small(steps, start):
    from BBBAnomalyLib.dsc.validation import MAX_GRID_GROWTH, uniform_times

    with np.errstate(all="ignore"):
        times = start + np.cumsum(np.r_[0.0, steps])
    try:
        t = check_dynamic_timing(times, "the frame times")
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message
        assert any(word in message for word in ("--frame-interval", "increase strictly", "finite"))
        return
    assert t[-1] - t[0] <= MAX_DURATION_S
    try:
        grid, _ = uniform_times(t)
    except InputError:
        return
    assert grid.size <= MAX_GRID_GROWTH * t.size


@FAST
@given(st.lists(st.integers(1, 12), min_size=1, max_size=5).filter(lambda s: np.prod(s) <= 50000), st.booleans())
def test_any_shape_is_a_dsc_series_or_refused(shape, with_times):
    from BBBAnomalyLib.dsc.validation import MIN_FRAMES, check_series

    data = np.ones(shape, np.float32)
    try:
        times = np.arange(shape[3]) * 1.5 if with_times and len(shape) == 4 else None
        series = Volume(data, AFFINE, times)
        check_series(series, "the DSC series")
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert series.is_4d and series.n_frames >= MIN_FRAMES and series.times is not None


# --- parameters: the worker and Python callers get the CLI's refusals ----------------------------------------
def _dataclass(pipeline):
    if pipeline == "dsc":
        from BBBAnomalyLib.dsc import DSCParameters as cls
    elif pipeline == "dce":
        from BBBAnomalyLib.dce import DCEParameters as cls
    elif pipeline == "dmri":
        from BBBAnomalyLib.dmri.parameters import DMRIParameters as cls
    else:
        from BBBAnomalyLib.structural.parameters import T1FlairParameters as cls
    return cls


NUMERIC_FIELDS = [("dsc", f) for f in ("kh", "density", "echo_time", "osvd_oi_target", "bsw_min_t", "skip_frames",
                                       "tikhonov_lambdas", "chunk_voxels")] + \
                 [("dce", f) for f in ("t10", "flip_angle", "tr", "relaxivity", "hematocrit", "max_delay",
                                       "baseline_frames", "threads", "rls_epochs", "rls_frames", "seed")] + \
                 [("dmri", f) for f in ("threshold_value", "meanpool_mm", "b0_threshold")] + \
                 [("t1flair", f) for f in ("steps", "size", "threads", "slice_threshold", "segmentation_threshold")]


@pytest.mark.parametrize("pipeline, field", NUMERIC_FIELDS, ids=[f"{p}-{f}" for p, f in NUMERIC_FIELDS])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e9, "abc"], ids=["nan", "inf", "-1e9", "text"])
def test_parameters_refuse_non_finite_or_out_of_range_numbers(pipeline, field, value):
    cls = _dataclass(pipeline)
    with pytest.raises(InputError) as excinfo:
        cls(**{field: value})
    assert "\n" not in str(excinfo.value)

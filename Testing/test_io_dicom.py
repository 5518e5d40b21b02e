"""DICOM series reading: synthetic dynamic MR series written slice by slice with SimpleITK/GDCM."""

from __future__ import annotations

import locale

import numpy as np
import pytest
import SimpleITK as sitk

from BBBAnomalyLib import InputError
from BBBAnomalyLib.io import read_dicom_series, read_volume

UID_ROOT = "1.2.826.0.1.3680043.2.1125.7"
ROW = np.array([np.cos(0.3), np.sin(0.3), 0.0])  # oblique in-plane axes (LPS)
COL = np.array([-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)])
AXIAL = (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
SPACING = (0.9, 1.1)  # column spacing (along ROW), row spacing (along COL)
DZ = 2.5
ORIGIN = np.array([-100.5, -80.25, 30.0])


@pytest.fixture(autouse=True)
def _keep_locale():
    """GDCM's DICOM writer leaves the process in the C locale (Python then decodes child output as ASCII); put
    the locale back after each test so that later tests in the same run are unaffected."""
    before = locale.setlocale(locale.LC_ALL, None)
    yield
    locale.setlocale(locale.LC_ALL, before)


def tm(seconds: float) -> str:
    """Seconds after midnight -> DICOM TM, wrapping past midnight as a scanner clock does."""
    seconds %= 86400
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}"


def write_series(folder, data, *, series=1, axes=(ROW, COL), times=None, slice_offset=0.0, tpi=True,
                 skip=None, description="DSC"):
    """data (x, y, z, t) int16 -> one file per slice and frame, in scrambled order.

    times: frame start (s after midnight); slice k is acquired `k * slice_offset` s later.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, col = axes
    normal = np.cross(row, col)
    nz, nt = data.shape[2], data.shape[3]
    times = np.arange(nt) * 1.5 + 36000.0 if times is None else times
    instance = 0
    for t in range(nt):
        for k in np.random.default_rng(t).permutation(nz):
            instance += 1
            if skip == (t, k):
                continue
            img = sitk.GetImageFromArray(np.ascontiguousarray(data[:, :, k, t].T)[None])
            img.SetSpacing((SPACING[0], SPACING[1], 1.0))
            tags = {
                "0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|103e": description,
                "0020|000d": f"{UID_ROOT}.1", "0020|000e": f"{UID_ROOT}.2.{series}",
                "0008|0018": f"{UID_ROOT}.3.{series}.{instance}", "0020|0013": str(instance),
                "0020|0032": "\\".join(f"{v:.6f}" for v in ORIGIN + k * DZ * normal),
                "0020|0037": "\\".join(f"{v:.8f}" for v in np.r_[row, col]),
                "0008|0032": tm(times[t] + k * slice_offset),
                "0018|0081": "30", "0018|0080": "1500", "0018|1314": "90", "0018|0087": "3",
            }
            if tpi:
                tags["0020|0100"] = str(t + 1)
            for key, value in tags.items():
                img.SetMetaData(key, value)
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            writer.SetFileName(str(folder / f"s{series}_{instance:04d}.dcm"))
            writer.Execute(img)


def expected_affine(axes=(ROW, COL)) -> np.ndarray:
    row, col = axes
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * SPACING[0], col * SPACING[1], np.cross(row, col) * DZ, ORIGIN
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def series_data(nt=4, nz=3) -> np.ndarray:
    return (np.arange(6 * 5 * nz * nt).reshape(6, 5, nz, nt) * 7 % 3000).astype(np.int16)


def test_oblique_dynamic_series_with_temporal_positions(tmp_path):
    data = series_data()
    write_series(tmp_path, data)
    vol = read_dicom_series(tmp_path)
    assert vol.data.shape == (6, 5, 3, 4)
    assert np.allclose(vol.affine, expected_affine(), atol=1e-6, rtol=0)
    assert np.array_equal(vol.data, data)  # slices sorted along the normal, frames by temporal position
    assert np.allclose(vol.times, [0, 1.5, 3.0, 4.5], atol=1e-6)
    acq = vol.acquisition
    assert acq.echo_time == pytest.approx(0.030) and acq.repetition_time == pytest.approx(1.5)
    assert acq.flip_angle == 90 and acq.field_strength == 3 and acq.description == "DSC"
    assert acq.extra["frame_grouping"] == "TemporalPositionIdentifier"


def test_frames_by_acquisition_time_with_slice_offsets_across_midnight(tmp_path):
    """No temporal position id; each slice has its own AcquisitionTime inside a frame (2D multi-slice)."""
    data = series_data(nt=5)
    starts = 86398.0 + np.array([0.0, 1.6, 3.2, 4.8, 6.4])  # 23:59:58 -> 00:00:04.4
    write_series(tmp_path, data, axes=AXIAL, times=starts, slice_offset=0.4, tpi=False)
    vol = read_volume(tmp_path)
    assert np.array_equal(vol.data, data)
    assert np.allclose(vol.affine, expected_affine(AXIAL), atol=1e-6)
    assert np.allclose(vol.times, [0, 1.6, 3.2, 4.8, 6.4], atol=1e-5)
    assert vol.acquisition.extra["frame_timing"] == "AcquisitionTime"


def test_plain_3d_series(tmp_path):
    data = series_data(nt=1, nz=4)
    write_series(tmp_path, data)
    vol = read_volume(tmp_path)
    assert vol.data.shape == (6, 5, 4) and vol.times is None
    assert np.array_equal(vol.data, data[..., 0])
    assert np.allclose(vol.affine, expected_affine(), atol=1e-6)


def test_rescaled_slices_read_as_float(tmp_path):
    """GDCM stores float pixels with a rescale; they must come back as float32, not truncated."""
    img = sitk.GetImageFromArray((np.arange(20, dtype=np.float32) * 0.5 + 0.25).reshape(1, 4, 5))
    tags = {"0008|0060": "MR", "0020|000e": f"{UID_ROOT}.9", "0020|0032": "0\\0\\0", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1",  # stored int16 ...
            "0028|1053": "0.5", "0028|1052": "0.25"}  # ... with a non-integer rescale
    for key, value in tags.items():
        img.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(tmp_path / "r.dcm"))
    writer.Execute(img)
    vol = read_dicom_series(tmp_path)
    assert vol.data.dtype == np.float32 and np.allclose(vol.data[:, :, 0], (np.arange(20) * 0.5 + 0.25).reshape(4, 5).T)


def test_frame_interval_overrides_header_times(tmp_path):
    write_series(tmp_path, series_data())
    assert np.array_equal(read_volume(tmp_path, frame_interval=2.0).times, [0, 2, 4, 6])


def test_several_series_need_a_choice(tmp_path):
    write_series(tmp_path, series_data(nt=2), series=1)
    write_series(tmp_path, series_data(nt=3), series=2, description="DCE")
    with pytest.raises(InputError, match=rf"2 DICOM series.*{UID_ROOT}\.2\.1.*{UID_ROOT}\.2\.2.*series_uid"):
        read_dicom_series(tmp_path)
    assert read_dicom_series(tmp_path, series_uid=f"{UID_ROOT}.2.2").n_frames == 3
    with pytest.raises(InputError, match="not in"):
        read_dicom_series(tmp_path, series_uid="1.2.3")


def test_missing_slice_is_reported(tmp_path):
    write_series(tmp_path, series_data(), skip=(2, 1))
    with pytest.raises(InputError, match="miss slices"):
        read_dicom_series(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no DICOM series"):
        read_dicom_series(tmp_path)
    with pytest.raises(InputError, match="not found"):
        read_dicom_series(tmp_path / "absent")

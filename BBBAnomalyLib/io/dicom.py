"""DICOM series -> Volume with SimpleITK/GDCM: plain 3D series and dynamic (4D) DCE/DSC series.

Why not a generic series reader: a dynamic acquisition is one series whose files repeat the same
slice positions once per time point, which GDCM sorts as one stack. We read every file's header
(no pixels), group the files into frames, check the geometry, and only then read pixels frame by
frame and stack them.

Frames: all files at one slice position (ImagePositionPatient projected on the slice normal)
form one time course. The frame of each file is its TemporalPositionIdentifier when that
numbers the frames; otherwise its rank among the files at the same position ordered by
TriggerTime, else AcquisitionDateTime/AcquisitionTime, else ContentTime, else InstanceNumber
(so per-slice acquisition times within a frame, as in 2D multi-slice DSC, group correctly).
Every frame must hold the same slice positions, evenly spaced.

Frame times (s, first frame = 0): per frame the earliest TriggerTime (ms) if it varies, else
AcquisitionDateTime/AcquisitionTime (HHMMSS.ffffff; a series that crosses midnight is
unwrapped), else ContentTime; None when no clock increases from frame to frame.

Geometry: voxel (i, j, k) = (column, row, slice sorted along the normal); the affine is built
in LPS from ImageOrientationPatient, pixel spacing and the slice step between positions (so
gantry tilt is kept), then flipped to RAS. Not handled: enhanced multi-frame files (convert
with dcm2niix) and multi-echo series (split them by echo first).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.volume import Acquisition, Volume
from ._common import LPS_TO_RAS

TAGS = {
    "position": "0020|0032", "orientation": "0020|0037", "temporal_id": "0020|0100",
    "trigger": "0018|1060", "acq_datetime": "0008|002a", "acq_time": "0008|0032", "content_time": "0008|0033",
    "instance": "0020|0013", "echo_time": "0018|0081", "repetition_time": "0018|0080", "flip": "0018|1314",
    "field": "0018|0087", "description": "0008|103e",
    "thickness": "0018|0050", "between": "0018|0088", "modality": "0008|0060",
}
POSITION_TOL_MM = 0.01


def list_series(directory) -> list[tuple[str, int, str]]:
    """(SeriesInstanceUID, number of files, SeriesDescription) for each series in a folder."""
    # GDCM prints an ITK warning ("No Series were found", file, line, address) straight to stderr for a
    # folder without DICOM files; read_dicom_series says so in one line, so the warning is switched off
    # for this probe and the setting restored.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(directory))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    out = []
    for uid in uids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(directory), uid)
        out.append((uid, len(files), _read_headers(files[:1])[0][0].get("description", "")))
    return out


def read_dicom_series(directory, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from a folder (not searched recursively) as a 3D or 4D Volume."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"DICOM folder '{directory}' not found; give the folder that holds the series' files")
    series = list_series(directory)
    if not series:
        raise InputError(f"no DICOM series found in '{directory}' (subfolders are not searched); "
                         "give the folder that directly holds the .dcm files")
    listing = "; ".join(f"{uid} ({n} files, '{desc}')" for uid, n, desc in series)
    if series_uid is None:
        if len(series) > 1:
            raise InputError(f"'{directory}' holds {len(series)} DICOM series: {listing}. "
                             "Choose one with series_uid=..., or put each series in its own folder")
        series_uid = series[0][0]
    elif series_uid not in [s[0] for s in series]:
        raise InputError(f"series '{series_uid}' is not in '{directory}'; it holds: {listing}")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(directory), series_uid))
    headers, sizes, spacings, pixel_ids = _read_headers(files)
    if any(s[2] > 1 for s in sizes):
        raise InputError(f"series {series_uid} in '{directory}' uses multi-frame DICOM files, which are not "
                         "supported; convert it to NIfTI with dcm2niix and read that")
    if len(set(s[:2] for s in sizes)) > 1:
        raise InputError(f"series {series_uid} mixes image sizes {sorted(set(s[:2] for s in sizes))}; "
                         "it is not one volume series")

    grid, frame_source = _frame_grid(headers, directory)
    affine = _affine(headers, grid, spacings[grid[0, 0]], directory)
    acq = _acquisition(headers, series_uid, frame_source)
    times, time_source = _frame_times(headers, grid)
    acq.extra["frame_timing"] = time_source
    data = _read_pixels(files, grid, pixel_ids)
    if grid.shape[0] == 1:
        return Volume(data[..., 0], affine, None, acq)
    return Volume(data, affine, times, acq)


# --- headers ----------------------------------------------------------------------------
def _read_headers(files):
    reader = sitk.ImageFileReader()
    reader.LoadPrivateTagsOff()
    headers, sizes, spacings, pixel_ids = [], [], [], []
    for f in files:
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise InputError(f"could not read DICOM file '{f}': {str(e).strip().splitlines()[-1]}") from e
        headers.append({name: reader.GetMetaData(tag).strip()
                        for name, tag in TAGS.items() if reader.HasMetaDataKey(tag)})
        size = tuple(reader.GetSize()) + (1,) * (3 - reader.GetDimension())
        sizes.append(size)
        spacings.append(tuple(reader.GetSpacing()[:2]))
        pixel_ids.append(reader.GetPixelID())
    return headers, sizes, spacings, pixel_ids


def _vector(text: str | None, n: int) -> np.ndarray:
    try:
        v = np.asarray([float(x) for x in (text or "").split("\\")], dtype=np.float64)
        return v if v.size == n else np.full(n, np.nan)
    except ValueError:
        return np.full(n, np.nan)


def _column(headers, name: str, parse=None) -> np.ndarray:
    """One number per file (NaN where missing or unreadable)."""
    parse = parse or (lambda s: float(s.split("\\")[0]))
    out = np.full(len(headers), np.nan)
    for i, h in enumerate(headers):
        try:
            out[i] = parse(h[name]) if h.get(name) else np.nan
        except ValueError:
            pass
    return out


def _tm_seconds(tm: str) -> float:
    """DICOM TM 'HHMMSS.ffffff' (or 'HH:MM:SS.fff', or truncated 'HHMM') -> seconds after midnight."""
    tm = tm.replace(":", "").strip()
    whole, _, frac = tm.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        raise ValueError(tm)
    hh, mm, ss = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    return hh * 3600 + mm * 60 + ss + (float("0." + frac) if frac.isdigit() else 0.0)


def _dt_seconds(dt: str) -> float:
    """DICOM DT 'YYYYMMDDHHMMSS.ffffff[&ZZXX]' -> seconds since 0001-01-01 (only differences matter)."""
    dt = dt.split("+")[0].split("-")[0].strip()
    day = _dt.date(int(dt[0:4]), int(dt[4:6]), int(dt[6:8])).toordinal()
    return day * 86400.0 + (_tm_seconds(dt[8:]) if len(dt) > 8 else 0.0)


def _clocks(headers) -> list[tuple[str, np.ndarray]]:
    """Candidate per-file clocks in seconds, most trusted first, only those every file has."""
    def time_of_day(name):
        t = _column(headers, name, _tm_seconds)
        if np.all(np.isfinite(t)) and np.ptp(t) > 43200:  # crossed midnight: early-morning times move on a day
            t = np.where(t < 43200, t + 86400, t)
        return t

    candidates = [("TriggerTime", _column(headers, "trigger") / 1000.0),
                  ("AcquisitionDateTime", _column(headers, "acq_datetime", _dt_seconds)),
                  ("AcquisitionTime", time_of_day("acq_time")),
                  ("ContentTime", time_of_day("content_time"))]
    return [(name, c) for name, c in candidates if np.all(np.isfinite(c)) and np.ptp(c) > 0]


# --- frames and geometry ----------------------------------------------------------------
def _frame_grid(headers, directory) -> tuple[np.ndarray, str]:
    """(frames, slices) array of file indices, slices sorted along the normal; and how frames were found."""
    n = len(headers)
    pos = np.stack([_vector(h.get("position"), 3) for h in headers])
    iop = np.stack([_vector(h.get("orientation"), 6) for h in headers])
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(iop))):
        raise InputError(f"some files in '{directory}' lack ImagePositionPatient/ImageOrientationPatient; "
                         "the series has no 3D geometry (is it a localizer or a secondary capture?)")
    if np.abs(iop - iop[0]).max() > 1e-4:
        raise InputError(f"the series in '{directory}' mixes slice orientations; it is not one volume series")
    echo = _column(headers, "echo_time")
    echo = np.unique(echo[np.isfinite(echo)])
    if echo.size > 1:
        raise InputError(f"the series in '{directory}' has {echo.size} echo times ({echo.tolist()} ms); "
                         "multi-echo series are not supported, split it into one series per echo")
    s = pos @ np.cross(iop[0, :3], iop[0, 3:])
    order = np.argsort(s, kind="stable")
    slice_sorted = np.concatenate([[0], np.cumsum(np.diff(s[order]) > POSITION_TOL_MM)])
    slice_id = np.empty(n, dtype=int)
    slice_id[order] = slice_sorted
    counts = np.bincount(slice_id)
    nz, nt = counts.size, int(counts[0])
    if np.any(counts != nt):
        raise InputError(f"the series in '{directory}' has {nz} slice positions that occur "
                         f"{sorted(set(counts.tolist()))} times: some frames miss slices or have shifted positions. "
                         "Check that the export is complete")
    tpi = _column(headers, "temporal_id")
    if nt > 1 and np.all(np.isfinite(tpi)) and np.unique(tpi).size == nt:
        frame, source = np.unique(tpi, return_inverse=True)[1], "TemporalPositionIdentifier"
    else:
        clocks = _clocks(headers)
        key, source = (clocks[0][1], clocks[0][0]) if clocks else (np.zeros(n), "InstanceNumber or file order")
        instance = np.nan_to_num(_column(headers, "instance"), nan=0.0)
        within = np.lexsort((np.arange(n), instance, key, slice_id))  # grouped by slice, then time
        frame = np.empty(n, dtype=int)
        frame[within] = np.tile(np.arange(nt), nz)
    grid = np.full((nt, nz), -1)
    grid[frame, slice_id] = np.arange(n)
    if np.any(grid < 0):
        raise InputError(f"the series in '{directory}' has {n} files for {nt} frames x {nz} slices but some "
                         f"(frame, slice) pairs repeat (grouping by {source}); it may mix several acquisitions")
    shift = np.abs(pos[grid] - pos[grid[:1]]).max()
    if shift > POSITION_TOL_MM:
        raise InputError(f"slice positions differ between frames by up to {shift:.3g} mm in '{directory}'; "
                         "every frame must cover the same slices")
    return grid, source


def _affine(headers, grid, spacing_xy, directory) -> np.ndarray:
    iop = _vector(headers[grid[0, 0]].get("orientation"), 6)
    row, col = iop[:3], iop[3:]
    pos = np.stack([_vector(headers[i].get("position"), 3) for i in grid[0]])
    if pos.shape[0] > 1:
        steps = np.diff(pos, axis=0)
        step = steps.mean(axis=0)
        err = np.abs(steps - step).max()
        if err > max(POSITION_TOL_MM, 1e-2 * np.linalg.norm(step)):
            gaps = np.linalg.norm(steps, axis=1)
            raise InputError(f"slice spacing in '{directory}' is not uniform (steps {np.round(gaps, 3).tolist()} mm): "
                             "a slice may be missing from the export")
    else:
        h = headers[grid[0, 0]]
        thick = _column([h], "between")[0]
        thick = thick if np.isfinite(thick) and thick > 0 else _column([h], "thickness")[0]
        step = np.cross(row, col) * (thick if np.isfinite(thick) and thick > 0 else 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * spacing_xy[0], col * spacing_xy[1], step, pos[0]
    return LPS_TO_RAS @ lps


def _frame_times(headers, grid) -> tuple[np.ndarray | None, str]:
    if grid.shape[0] < 2:
        return None, "single frame"
    for name, clock in _clocks(headers):
        start = clock[grid].min(axis=1)  # a frame starts with its first acquired slice
        if np.all(np.diff(start) > 0):
            return start - start[0], name
    return None, "unknown (no per-frame clock in the headers)"


def _acquisition(headers, series_uid, frame_source) -> Acquisition:
    def first(name, scale=1.0):
        v = _column(headers, name)
        v = v[np.isfinite(v)]
        return float(v[0]) * scale if v.size else None

    h = headers[0]
    return Acquisition(
        echo_time=first("echo_time", 1e-3), repetition_time=first("repetition_time", 1e-3),
        flip_angle=first("flip"), field_strength=first("field"), description=h.get("description", ""),
        extra={"series_uid": series_uid, "modality": h.get("modality", ""), "frame_grouping": frame_source},
    )


def _read_pixels(files, grid, pixel_ids) -> np.ndarray:
    """(x, y, z, t) array in the stored integer type, or float32 when GDCM applies a rescale.

    GDCM reports a float pixel type for a file whose RescaleSlope/Intercept is not an integer
    mapping; slices can differ (Philips), and the series reader takes the first file's type, so
    any float or mixed type reads every frame as float32 rather than truncating.
    """
    reader = sitk.ImageSeriesReader()
    if len(set(pixel_ids)) > 1 or set(pixel_ids) & {sitk.sitkFloat32, sitk.sitkFloat64}:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    frames = []
    for row in grid:
        reader.SetFileNames([files[i] for i in row])
        arr = sitk.GetArrayFromImage(reader.Execute())
        frames.append(arr.reshape((len(row),) + arr.shape[-2:]))  # a one-slice frame comes back 2D
    return np.stack(frames, axis=-1).transpose(2, 1, 0, 3)  # (z, y, x, t) -> (x, y, z, t)

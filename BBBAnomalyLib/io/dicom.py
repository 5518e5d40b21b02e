"""DICOM series -> Volume with SimpleITK/GDCM: plain 3D series and dynamic (4D) DCE/DSC series.

Why not a generic series reader: a dynamic acquisition is one series whose files repeat the same
slice positions once per time point, which GDCM sorts as one stack. We read every file's header
(no pixels), group the files into frames, check the geometry, and only then read pixels frame by
frame and stack them.

One series per folder: a folder holding several SeriesInstanceUIDs is refused with the list of
series (and an example file of each); put the series to analyse in a folder of its own (Python
callers may pass ``series_uid``). Subfolders are not searched.

Images in a series: exact copies (the same SOPInstanceUID with the same header, e.g. an export
done twice into one folder) are ignored. Refused, each in one line that names an example file and
the fix: Siemens mosaic images (ImageType MOSAIC or Siemens' NumberOfImagesInMosaic (0019,100A);
convert with dcm2niix), a series mixing ImageType values (a DERIVED mean or MPR, phase beside
magnitude images, a localizer), image sizes or slice orientations, and two images of one slice at
one TemporalPositionIdentifier or one (sub-second) acquisition time (the series sent twice with
new UIDs).

Frames: all files at one slice position (ImagePositionPatient projected on the slice normal)
form one time course. The frame of each file is its rank, among the files at the same position,
by the first key that takes a different value for every frame at every slice position:
TemporalPositionIdentifier (when it numbers the frames), TriggerTime, AcquisitionDateTime/
AcquisitionTime, ContentTime, InstanceNumber. A key that repeats at a slice position is never used
to break ties: GE's per-slice TriggerTime (the same in every frame) falls through to the
acquisition time. When no key orders the frames the series is refused. Every frame must hold the
same slice positions (within 0.01 mm), evenly spaced; frames moved by prospective motion correction
are refused with the size of the shift.

Frame times (s, first frame = 0): per frame the earliest time of the first clock (TriggerTime
(ms), AcquisitionDateTime/AcquisitionTime (HHMMSS.ffffff; a series that crosses midnight is
unwrapped), ContentTime) that increases from frame to frame at every slice position. A clock with
whole-second resolution whose frame steps differ by 1 s (0, 1, 3, 4, 6 ... for frames 1.5 s apart)
is not used: the times are None and ``acquisition.extra["frame_times_unusable"]`` says why, which
the DSC/DCE checks show when asking for ``--frame-interval`` (with RepetitionTime as a hint when it
fits the rounded times). None as well when no clock increases.

Geometry: voxel (i, j, k) = (column, row, slice sorted along the normal); the affine is built
in LPS from ImageOrientationPatient, pixel spacing and the slice step between positions (so
gantry tilt is kept: a sheared affine, which NRRD stores exactly and NIfTI cannot, see
:mod:`.nifti`), then flipped to RAS.

Pixels: ITK's warnings (e.g. "Non uniform sampling or missing slices detected" for positions
rounded to 0.001 mm) are switched off during the reader's own reads and the setting restored: the
reader checks the geometry itself. What native codecs print to stderr during the read (OpenJPEG's
"A marker ID was expected") is held back: passed on when the series is read, dropped when it is
refused. A file whose pixel data cannot be decoded is refused in one line naming it.

Not handled: enhanced multi-frame files and mosaics (convert with dcm2niix) and multi-echo series
(split them by echo first).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.volume import Acquisition, Volume
from ._common import LPS_TO_RAS

_log = logging.getLogger("BBBAnomalyLib")

TAGS = {
    "position": "0020|0032", "orientation": "0020|0037", "temporal_id": "0020|0100",
    "trigger": "0018|1060", "acq_datetime": "0008|002a", "acq_time": "0008|0032", "content_time": "0008|0033",
    "instance": "0020|0013", "echo_time": "0018|0081", "repetition_time": "0018|0080", "flip": "0018|1314",
    "field": "0018|0087", "description": "0008|103e",
    "thickness": "0018|0050", "between": "0018|0088", "modality": "0008|0060",
    "sop_uid": "0008|0018", "image_type": "0008|0008",
}
POSITION_TOL_MM = 0.01
ORIENTATION_TOL = 1e-4
#: Siemens' private NumberOfImagesInMosaic, in the group its creator "SIEMENS MR HEADER" reserves.
SIEMENS_CREATOR, MOSAIC_COUNT = "0019|0010", "0019|100a"
#: The header field of each frame key (to quote the value in messages).
_KEY_FIELDS = {"TemporalPositionIdentifier": "temporal_id", "TriggerTime": "trigger",
               "AcquisitionDateTime": "acq_datetime", "AcquisitionTime": "acq_time", "ContentTime": "content_time",
               "InstanceNumber": "instance"}


@contextlib.contextmanager
def _itk_warnings_off():
    """ITK's global warning display off for the reader's own ITK calls, the caller's setting put back."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


@contextlib.contextmanager
def _native_stderr_held():
    """While the block runs, the process's stderr (file descriptor 2) goes to a temporary file.

    GDCM's codecs print to the C stderr (OpenJPEG: "A marker ID was expected", once per tile) when a
    header or a frame cannot be decoded, before ITK raises; that is no line for a user. What was
    printed is passed on to stderr when the block ends, unless it ends with an InputError (which
    says what is wrong in one line). Where stderr cannot be duplicated (no console), nothing is held.
    """
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        held = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield
        return
    passed_on = True
    try:
        os.dup2(held.fileno(), 2)
        yield
    except InputError:
        passed_on = False
        raise
    finally:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        try:
            if passed_on:
                held.seek(0)
                chatter = held.read()
                while chatter:
                    chatter = chatter[os.write(2, chatter):]
        except OSError:  # stderr closed meanwhile: what native code printed has nowhere to go
            pass
        finally:
            held.close()


def _series_files(directory) -> dict[str, list[str]]:
    """SeriesInstanceUID -> its files (GDCM's order), for the series directly in a folder."""
    # GDCM prints an ITK warning ("No Series were found", file, line, address) straight to stderr for a
    # folder without DICOM files; read_dicom_series says so in one line, so the warning is switched off.
    with _itk_warnings_off():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(directory))
        return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(directory), uid)) for uid in uids}


def list_series(directory) -> list[tuple[str, int, str]]:
    """(SeriesInstanceUID, number of files, SeriesDescription) for each series in a folder."""
    with _itk_warnings_off():
        return [(uid, len(files), _read_headers(files[:1])[0][0].get("description", ""))
                for uid, files in _series_files(directory).items()]


def read_dicom_series(directory, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from a folder (not searched recursively) as a 3D or 4D Volume."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"DICOM folder '{directory}' not found; give the folder that holds the series' files")
    with _itk_warnings_off(), _native_stderr_held():
        return _read_series(directory, series_uid)


def _read_series(directory: Path, series_uid: str | None) -> Volume:
    by_uid = _series_files(directory)
    if not by_uid:
        raise InputError(f"no DICOM series found in '{directory}' (subfolders are not searched); "
                         "give the folder that directly holds the .dcm files")

    def listing():
        return "; ".join(f"{uid} ({len(files)} file{'s' if len(files) != 1 else ''}, "
                         f"'{_read_headers(files[:1])[0][0].get('description', '')}', e.g. '{_first_name(files)}')"
                         for uid, files in by_uid.items())

    if series_uid is None:
        if len(by_uid) > 1:
            raise InputError(f"'{directory}' holds {len(by_uid)} DICOM series: {listing()}. One series is read per "
                             "folder: put the files of the series to analyse in a folder of its own (in Python: "
                             "read_dicom_series(folder, series_uid=...))")
        series_uid = next(iter(by_uid))
    elif series_uid not in by_uid:
        raise InputError(f"series '{series_uid}' is not in '{directory}'; it holds: {listing()}")
    files = by_uid[series_uid]
    headers, sizes, spacings, pixel_ids = _read_headers(files)
    keep = _distinct_images(files, headers, sizes, spacings, pixel_ids, directory)
    files, headers, sizes, spacings, pixel_ids = ([x[i] for i in keep]
                                                  for x in (files, headers, sizes, spacings, pixel_ids))
    if any(s[2] > 1 for s in sizes):
        raise InputError(f"series {series_uid} in '{directory}' uses multi-frame DICOM files, which are not "
                         "supported; convert it to NIfTI with dcm2niix and read that")
    _refuse_mosaic(files, headers, series_uid, directory)
    _refuse_mixed_images(files, headers, sizes, series_uid, directory)

    grid, frame_source = _frame_grid(headers, files, directory)
    affine = _affine(headers, grid, spacings[grid[0, 0]], directory)
    acq = _acquisition(headers, series_uid, frame_source)
    times, time_source, unusable = _frame_times(headers, grid, acq.repetition_time)
    acq.extra["frame_timing"] = time_source
    if unusable:
        acq.extra["frame_times_unusable"], hint = unusable
        if hint:
            acq.extra["frame_interval_hint"] = hint
    data = _read_pixels(files, grid, pixel_ids, directory)
    if grid.shape[0] == 1:
        return Volume(data[..., 0], affine, None, acq)
    return Volume(data, affine, times, acq)


def _first_name(paths) -> str:
    return min(Path(p).name for p in paths)


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


def _distinct_images(files, headers, sizes, spacings, pixel_ids, directory) -> list[int]:
    """Indices of the files to keep: a second file with the SOPInstanceUID of an earlier one is the same
    image copied (an export done twice into one folder) and is left out when its header agrees; one
    that differs cannot be the same instance and is refused."""
    first: dict[str, int] = {}
    keep = []
    for i, h in enumerate(headers):
        uid = h.get("sop_uid")
        j = first.setdefault(uid, i) if uid else i
        if j == i:
            keep.append(i)
            continue
        if (h, sizes[i], spacings[i], pixel_ids[i]) != (headers[j], sizes[j], spacings[j], pixel_ids[j]):
            field = next((k for k in sorted(set(h) | set(headers[j])) if h.get(k) != headers[j].get(k)), "pixel format")
            a, b = sorted((Path(files[i]).name, Path(files[j]).name))
            raise InputError(f"'{a}' and '{b}' in '{directory}' carry the same SOPInstanceUID but differ ({field}); "
                             "two different images cannot be one instance: remove the wrong file")
    if len(keep) < len(files):
        _log.info("%d exact copies (same SOPInstanceUID) ignored in '%s'", len(files) - len(keep), directory)
    return keep


def _image_type(header) -> str:
    return "\\".join(v.strip().upper() for v in header.get("image_type", "").split("\\")) if header.get(
        "image_type") else ""


def _mosaic_images(path) -> int:
    """Siemens' NumberOfImagesInMosaic (0019,100A) of one file; 0 when absent, unreadable or not Siemens'."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOn()
    try:
        reader.ReadImageInformation()
        if "SIEMENS" not in reader.GetMetaData(SIEMENS_CREATOR).upper() or not reader.HasMetaDataKey(MOSAIC_COUNT):
            return 0
        count = int(float(reader.GetMetaData(MOSAIC_COUNT).strip()))
    except (RuntimeError, ValueError):  # GetMetaData of a missing key raises RuntimeError
        return 0
    return count if count > 1 else 0


def _refuse_mosaic(files, headers, series_uid, directory) -> None:
    tagged = [i for i, h in enumerate(headers) if "MOSAIC" in _image_type(h).split("\\")]
    count = 0 if tagged else _mosaic_images(files[0])
    if tagged or count:
        what = "ImageType MOSAIC" if tagged else f"Siemens NumberOfImagesInMosaic {count}"
        example = _first_name([files[i] for i in tagged] or files)
        raise InputError(f"series {series_uid} in '{directory}' holds Siemens mosaic images ({what}, e.g. '{example}': "
                         "all slices of a time point tiled into one image), which this reader does not unpack; convert "
                         "the folder to NIfTI with dcm2niix (it unpacks mosaics) and give the .nii.gz file")


def _groups(keys) -> list[tuple[object, list[int]]]:
    """(key, indices) per distinct key, the most common first."""
    index: dict[object, list[int]] = {}
    for i, k in enumerate(keys):
        index.setdefault(k, []).append(i)
    return sorted(index.items(), key=lambda item: -len(item[1]))


def _kind_label(kind: str) -> str:
    tokens = kind.split("\\")
    words = [w for t, w in (("LOCALIZER", "localizer"), ("P", "phase"), ("PHASE", "phase"), ("R", "real part"),
                            ("REAL", "real part"), ("I", "imaginary part"), ("IMAGINARY", "imaginary part"),
                            ("M", "magnitude"), ("MAGNITUDE", "magnitude"))
             if t in tokens[2:]] + (["derived"] if tokens[0] == "DERIVED" else [])
    return (kind or "no ImageType") + (f" ({', '.join(dict.fromkeys(words))})" if words else "")


def _refuse_mixed_images(files, headers, sizes, series_uid, directory) -> None:
    """One series, one kind of image of one size: a derived mean, phase images or a localizer that share the
    SeriesInstanceUID would otherwise become extra frames or slices."""
    kinds = _groups(_image_type(h) for h in headers)
    if len(kinds) > 1:
        parts = [f"{len(ix)} {_kind_label(kind)} (e.g. '{_first_name([files[i] for i in ix])}')"
                 for kind, ix in kinds[:3]]
        raise InputError(f"series {series_uid} in '{directory}' mixes image types: {', '.join(parts)}"
                         f"{' and more' if len(kinds) > 3 else ''}; a series must hold one kind of image: move the "
                         "files of the other types out of the folder (for perfusion keep the ORIGINAL magnitude images)")
    shapes = _groups(s[:2] for s in sizes)
    if len(shapes) > 1:
        parts = [f"{len(ix)} of {shape[0]}x{shape[1]} (e.g. '{_first_name([files[i] for i in ix])}')"
                 for shape, ix in shapes[:3]]
        raise InputError(f"series {series_uid} in '{directory}' mixes image sizes: {', '.join(parts)} files; it is "
                         "not one volume series (a localizer or another acquisition shares its SeriesInstanceUID): "
                         "move the files of the other size out of the folder")


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


def _whole_seconds(clock: np.ndarray) -> bool:
    """A clock with one-second resolution: no value has a fractional second."""
    return bool(np.all(np.abs(clock - np.round(clock)) < 1e-3))


# --- frames and geometry ----------------------------------------------------------------
def _frame_grid(headers, files, directory) -> tuple[np.ndarray, str]:
    """(frames, slices) array of file indices, slices sorted along the normal; and how frames were found."""
    n = len(headers)
    names = [Path(f).name for f in files]
    pos = np.stack([_vector(h.get("position"), 3) for h in headers])
    iop = np.stack([_vector(h.get("orientation"), 6) for h in headers])
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(iop))):
        raise InputError(f"some files in '{directory}' lack ImagePositionPatient/ImageOrientationPatient; "
                         "the series has no 3D geometry (is it a localizer or a secondary capture?)")
    main = _groups(tuple(np.round(v, 3)) for v in iop)[0][1]
    reference = np.median(iop[main], axis=0)
    tilted = np.abs(iop - reference).max(axis=1) > ORIENTATION_TOL
    if tilted.any():
        odd = np.flatnonzero(tilted)
        raise InputError(f"the series in '{directory}' mixes slice orientations: {odd.size} of {n} files (e.g. "
                         f"'{_first_name([names[i] for i in odd])}') are not parallel to the others (a localizer or a "
                         "reformat?); it is not one volume series: move those files out of the folder")
    echo = _column(headers, "echo_time")
    echo = np.unique(echo[np.isfinite(echo)])
    if echo.size > 1:
        raise InputError(f"the series in '{directory}' has {echo.size} echo times ({echo.tolist()} ms); "
                         "multi-echo series are not supported, split it into one series per echo")
    s = pos @ np.cross(reference[:3], reference[3:])
    order = np.argsort(s, kind="stable")
    gaps = np.diff(s[order])
    slice_id = np.empty(n, dtype=int)
    slice_id[order] = np.concatenate([[0], np.cumsum(gaps > POSITION_TOL_MM)])
    counts = np.bincount(slice_id)
    moved = _frames_moved(s[order], gaps)
    if moved is not None and (np.any(counts != counts[0]) or counts.max() == 1):
        nz, nt, spread = moved
        raise InputError(f"slice positions differ between frames by up to {spread:.4g} mm along the slice normal in "
                         f"'{directory}' ({nz} slices, each in {nt} frames at shifted positions: prospective motion "
                         "correction?); every frame must cover the same slices: export the series without per-frame "
                         "repositioning, or register the frames and give a 4D NIfTI")
    if np.any(counts != counts[0]):
        raise InputError(_uneven_positions(counts, slice_id, s, names, directory))
    nz, nt = counts.size, int(counts[0])
    frame, source = _group_frames(headers, names, slice_id, nz, nt, directory)
    grid = np.full((nt, nz), -1)
    grid[frame, slice_id] = np.arange(n)
    if np.any(grid < 0):  # cannot happen with a key distinct at every position; kept as a guard
        raise InputError(f"the series in '{directory}' has {n} files for {nt} frames x {nz} slices but some "
                         f"(frame, slice) pairs repeat (grouping by {source}); it may mix several acquisitions")
    shift = np.abs(pos[grid] - pos[grid[:1]]).max()
    if shift > POSITION_TOL_MM:
        raise InputError(f"slice positions differ between frames by up to {shift:.4g} mm in '{directory}' (more than "
                         f"{POSITION_TOL_MM:g} mm: prospective motion correction?); every frame must cover the same "
                         "slices: export the series without per-frame repositioning, or register the frames and give "
                         "a 4D NIfTI")
    return grid, source


def _frames_moved(sorted_s: np.ndarray, gaps: np.ndarray):
    """(slices, frames, spread in mm) when the positions along the normal form equal clusters of several files
    spread wider than the tolerance, far apart from each other (each frame shifted a little: PACE); else None."""
    if gaps.size == 0 or gaps.max() <= POSITION_TOL_MM:
        return None
    cluster = np.concatenate([[0], np.cumsum(gaps > 0.25 * gaps.max())])
    sizes = np.bincount(cluster)
    if sizes.min() < 2 or np.any(sizes != sizes[0]):
        return None
    spread = float(max(np.ptp(sorted_s[cluster == c]) for c in range(sizes.size)))
    return (sizes.size, int(sizes[0]), spread) if spread > POSITION_TOL_MM else None


def _uneven_positions(counts, slice_id, s, names, directory) -> str:
    """The line for slice positions that do not all hold the same number of files."""
    values, how_often = np.unique(counts, return_counts=True)
    usual = int(values[how_often == how_often.max()].max())  # the most common count (the frames)

    def files_at(p):
        return sorted(names[i] for i in np.flatnonzero(slice_id == p))

    where = np.array([s[slice_id == p].mean() for p in range(counts.size)])
    more = np.flatnonzero(counts > usual)
    if more.size:
        a, b = files_at(more[0])[:2]
        return (f"the series in '{directory}' has {counts[more[0]]} images at one slice position where the others have "
                f"{usual} (e.g. '{a}' and '{b}'): some slice is there twice (a copy with another SOPInstanceUID, or images "
                "of another acquisition); remove the extra files")
    fewer = np.flatnonzero(counts < usual)
    regular = where[counts == usual]
    step = np.median(np.diff(regular)) if regular.size > 1 else 0.0
    if usual > 1 and np.all(counts[fewer] == 1) and step > 0:
        off_grid = [p for p in fewer if abs((where[p] - regular[0]) / step - round((where[p] - regular[0]) / step))
                    * step > max(POSITION_TOL_MM, 0.05 * step)]
        if off_grid:
            name = files_at(off_grid[0])[0]
            return (f"the image '{name}' in '{directory}' lies at a slice position ({where[off_grid[0]]:.4g} mm along "
                    f"the slice normal) that none of the other {usual} frames has, between the series' slices: it does not "
                    "belong to this series (a reformat or another acquisition?); move it out of the folder")
    return (f"the series in '{directory}' has {counts.size} slice positions but {fewer.size} of them are in fewer files "
            f"than the others ({int(counts[fewer].min())} instead of {usual}, e.g. the slice of "
            f"'{files_at(fewer[0])[0]}'): some frames miss slices. Check that the export is complete")


def _distinct_per_slice(values: np.ndarray, slice_id: np.ndarray, nz: int) -> np.ndarray:
    order = np.lexsort((values, slice_id))
    v, s = values[order], slice_id[order]
    new = np.concatenate([[True], (np.diff(s) != 0) | (np.diff(v) != 0)])
    return np.bincount(s[new], minlength=nz)


def _first_tie(values: np.ndarray, slice_id: np.ndarray, names) -> tuple[int, int]:
    """Two files at one slice position with the same value (the first such pair by file name)."""
    pairs = {}
    for i in sorted(range(len(names)), key=lambda i: names[i]):
        key = (slice_id[i], values[i])
        if key in pairs:
            return pairs[key], i
        pairs[key] = i
    return 0, 0


def _group_frames(headers, names, slice_id, nz: int, nt: int, directory) -> tuple[np.ndarray, str]:
    """The frame of each file: its rank at its slice position by the first key that takes a different value for
    every frame at every slice position (see the module docstring). A TemporalPositionIdentifier or a sub-second
    acquisition time that repeats at a slice position where it also varies means two images of one slice at one
    moment: refused."""
    n = len(headers)
    if nt == 1:
        return np.zeros(n, dtype=int), "single frame"
    tpi = _column(headers, "temporal_id")
    instance = _column(headers, "instance")
    candidates = []
    if np.all(np.isfinite(tpi)) and np.unique(tpi).size > 1:
        candidates.append(("TemporalPositionIdentifier", tpi, True))
    for name, clock in _clocks(headers):
        candidates.append((name, clock, name in ("AcquisitionDateTime", "AcquisitionTime") and not _whole_seconds(clock)))
    if np.all(np.isfinite(instance)):
        candidates.append(("InstanceNumber", instance, False))
    for name, values, strict in candidates:
        distinct = _distinct_per_slice(values, slice_id, nz)
        if np.all(distinct == nt) and (name != "TemporalPositionIdentifier" or np.unique(values).size == nt):
            frame = np.empty(n, dtype=int)
            frame[np.lexsort((values, slice_id))] = np.tile(np.arange(nt), nz)
            return frame, name
        # A key constant at each slice position is no frame clock (GE's per-slice TriggerTime; an acquisition time
        # per location): skipped. One that repeats only partly at a position is two images of one moment.
        if strict and np.any(distinct < nt) and not np.all(distinct == 1):
            a, b = _first_tie(values, slice_id, names)
            raise InputError(f"the series in '{directory}' holds one slice twice at {name} "
                             f"{headers[a].get(_KEY_FIELDS[name], '?')}: '{names[a]}' and '{names[b]}' lie at the same "
                             "position (the series copied with other SOPInstanceUIDs, or images of another kind in "
                             "it); keep one copy of each image in the folder")
    a, b = _first_tie(instance if np.all(np.isfinite(instance)) else np.zeros(n), slice_id, names)
    raise InputError(f"the frames of the series in '{directory}' cannot be told apart: '{names[a]}' and '{names[b]}' "
                     "lie at one slice position and no TemporalPositionIdentifier, acquisition time or InstanceNumber "
                     "orders them; remove duplicate files, or export the series with its timing (or convert it with "
                     "dcm2niix)")


def _describe_steps(gaps: np.ndarray) -> str:
    """Slice steps in a few words: all of them when few, else the usual step and the first odd ones."""
    if gaps.size <= 8:
        return f"steps {np.round(gaps, 3).tolist()} mm"
    usual = float(np.median(gaps))
    odd = np.flatnonzero(np.abs(gaps - usual) > max(POSITION_TOL_MM, 1e-2 * usual))
    shown = ", ".join(f"{gaps[i]:.3g} mm after slice {i + 1}" for i in odd[:3])
    return f"{gaps.size} steps of {usual:.3g} mm except {odd.size}: {shown}{', ...' if odd.size > 3 else ''}"


def _affine(headers, grid, spacing_xy, directory) -> np.ndarray:
    iop = _vector(headers[grid[0, 0]].get("orientation"), 6)
    row, col = iop[:3], iop[3:]
    pos = np.stack([_vector(headers[i].get("position"), 3) for i in grid[0]])
    if pos.shape[0] > 1:
        steps = np.diff(pos, axis=0)
        step = steps.mean(axis=0)
        err = np.abs(steps - step).max()
        if err > max(POSITION_TOL_MM, 1e-2 * np.linalg.norm(step)):
            raise InputError(f"slice spacing in '{directory}' is not uniform "
                             f"({_describe_steps(np.linalg.norm(steps, axis=1))}): a slice may be missing from the export")
    else:
        h = headers[grid[0, 0]]
        thick = _column([h], "between")[0]
        thick = thick if np.isfinite(thick) and thick > 0 else _column([h], "thickness")[0]
        step = np.cross(row, col) * (thick if np.isfinite(thick) and thick > 0 else 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * spacing_xy[0], col * spacing_xy[1], step, pos[0]
    return LPS_TO_RAS @ lps


def _rounded_steps(steps: np.ndarray) -> bool:
    """Frame steps of a whole-second clock that differ by one second (1, 2, 1, 2 ... or 0, 1, 1, 0 ...): the
    rounding of a frame interval that is not a whole number of seconds."""
    values = np.unique(np.round(steps))
    return values.size > 1 and bool(np.any(np.diff(values) == 1))


def _uniform_intervals(start: np.ndarray) -> tuple[float, float] | None:
    """The frame intervals dt (lo, hi) for which some offset a gives floor(a + k dt) = start[k] - start[0] for every
    frame k (truncated or rounded whole-second times of a uniform series); None when none does."""
    t = start - start[0]
    k = np.arange(t.size)
    dk = k[None, :] - k[:, None]
    dt = t[None, :] - t[:, None]
    later = dk > 0
    lo, hi = float(((dt - 1) / np.where(later, dk, 1))[later].max()), float(((dt + 1) / np.where(later, dk, 1))[later].min())
    return (lo, hi) if lo < hi else None


def _frame_times(headers, grid, repetition_time) -> tuple[np.ndarray | None, str, tuple[str, str] | None]:
    """(times, their source, None) or (None, why, (what makes the clock unusable, a hint) or None)."""
    if grid.shape[0] < 2:
        return None, "single frame", None
    unusable = None
    for name, clock in _clocks(headers):
        per_slice = clock[grid]  # (frames, slices)
        start = per_slice.min(axis=1)  # a frame starts with its first acquired slice
        if _whole_seconds(clock) and _rounded_steps(np.diff(start)):
            unusable = unusable or _coarse_clock(name, start, repetition_time)
            continue
        if np.all(np.diff(per_slice, axis=0) > 0):  # the clock moves on at every slice position
            return start - start[0], name, None
    if unusable:
        return None, f"unknown: {unusable[0]}", unusable
    return None, "unknown (no per-frame clock in the headers)", None


def _coarse_clock(name: str, start: np.ndarray, repetition_time: float | None) -> tuple[str, str]:
    steps = np.unique(np.round(np.diff(start))).astype(int)
    span = _uniform_intervals(start)
    interval = (span[0] + span[1]) / 2 if span else (start[-1] - start[0]) / (start.size - 1)
    shown = " and ".join(str(v) for v in steps[:3]) + (" ..." if steps.size > 3 else "")
    why = (f"the DICOM {name} has whole-second resolution (frame steps of {shown} s), too coarse for frames "
           f"about {interval:.2g} s apart")
    hint = ""
    if repetition_time and span and span[0] - 1e-6 <= repetition_time <= span[1] + 1e-6:
        hint = f"RepetitionTime {repetition_time:g} s fits these times"
    return why, hint


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


def _read_pixels(files, grid, pixel_ids, directory) -> np.ndarray:
    """(x, y, z, t) array in the stored integer type, or float32 when GDCM applies a rescale.

    GDCM reports a float pixel type for a file whose RescaleSlope/Intercept is not an integer
    mapping; slices can differ (Philips), and the series reader takes the first file's type, so
    any float or mixed type reads every frame as float32 rather than truncating. A frame that
    cannot be decoded is read again file by file to name the damaged file.
    """
    reader = sitk.ImageSeriesReader()
    if len(set(pixel_ids)) > 1 or set(pixel_ids) & {sitk.sitkFloat32, sitk.sitkFloat64}:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    frames = []
    for f, row in enumerate(grid):
        names = [files[i] for i in row]
        reader.SetFileNames(names)
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise _undecodable(names, error, f, directory) from None
        arr = sitk.GetArrayFromImage(image)
        frames.append(arr.reshape((len(row),) + arr.shape[-2:]))  # a one-slice frame comes back 2D
    return np.stack(frames, axis=-1).transpose(2, 1, 0, 3)  # (z, y, x, t) -> (x, y, z, t)


def _undecodable(names, error: RuntimeError, frame: int, directory) -> InputError:
    """The one line for a frame GDCM could not read: the first of its files that does not read alone."""
    _log.info("reading frame %d of '%s' failed: %s", frame + 1, directory, str(error).strip())
    one = sitk.ImageFileReader()
    for name in names:
        one.SetFileName(name)
        try:
            one.Execute()
        except RuntimeError:
            return InputError(f"DICOM file '{name}': its pixel data could not be decoded (the file is damaged or "
                              "incomplete, or uses a compression this reader lacks); copy or export it again from the "
                              "scanner or PACS")
    last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return InputError(f"could not read the pixels of frame {frame + 1} of the series in '{directory}' ({last}); check "
                      "the files, or convert the series with dcm2niix and read the NIfTI")

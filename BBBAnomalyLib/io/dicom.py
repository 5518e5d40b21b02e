"""DICOM series -> Volume with SimpleITK/GDCM: plain 3D series and dynamic (4D) DCE/DSC series.

Why not a generic series reader: a dynamic acquisition is one series whose files repeat the same
slice positions once per time point, which GDCM sorts as one stack. We read every file's header
(no pixels), group the files into frames, check the geometry, and only then read pixels frame by
frame and stack them.

One series per folder: a folder holding several SeriesInstanceUIDs is refused with the list of
series (and an example file of each); put the series to analyse in a folder of its own (Python
callers may pass ``series_uid``). Subfolders are not searched. Where every other series holds only
pixel-identical copies of the largest one's images (the series sent again), the largest is read, with a warning.

Images in a series: exact copies (the same SOPInstanceUID with the same header, e.g. an export
done twice into one folder) are ignored. Refused, each in one line that names an example file and
the fix: Siemens mosaic images (ImageType MOSAIC or Siemens' NumberOfImagesInMosaic (0019,100A);
convert with dcm2niix), a series mixing ImageType values (a DERIVED mean or MPR, phase beside
magnitude images, a localizer), image sizes or slice orientations, and two images of one slice at
one TemporalPositionIdentifier or one (sub-second) acquisition time. A series (3D or dynamic, whole
or in part) sent twice with new SOPInstanceUIDs, into the same series or under a second
SeriesInstanceUID in the folder (images whose headers agree in all but SOPInstanceUID and
InstanceNumber, and whose pixels are identical) is read once, with a warning (logged, in
``acquisition.extra["duplicate_images"]`` and ``["read_warnings"]``); a second transmission whose
pixels differ is refused in one line that says so (:mod:`.dicom_resent`).

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
fits the rounded times). None as well when no clock increases. Each slice's time within its frame (a 2D
multi-slice series) from the same clock goes to ``acquisition.extra["slice_timing"]`` where it is the same in
every frame within 10 ms and the clock has sub-second resolution (:func:`.dicom_frames._slice_times`); where that
clock gives none or all zeros, a GE series' per-slice TriggerTime (GE multi-phase EPI, :mod:`.dicom_ge`).

Geometry: voxel (i, j, k) = (column, row, slice sorted along the normal); the affine is built
in LPS from ImageOrientationPatient, pixel spacing and the slice step between positions (so
gantry tilt is kept: a sheared affine, which NRRD stores exactly and NIfTI cannot, see
:mod:`.nifti`), then flipped to RAS.

Pixels: ITK's warnings (e.g. "Non uniform sampling or missing slices detected" for positions
rounded to 0.001 mm) are switched off during the reader's own reads and the setting restored: the
reader checks the geometry itself. What native codecs print to stderr during the read (OpenJPEG's
"A marker ID was expected") is held back: passed on when the series is read, dropped when it is
refused. A file whose pixel data cannot be decoded is refused in one line naming it.

Intensities: GDCM applies each file's RescaleSlope/Intercept (the display value). Philips images are read as
Philips' precise values, each image divided by its RescaleSlope times its private MR Scale Slope (2005,100E): only
those are proportional to the signal across series (a VFA fit from one series per flip angle) and across images
whose scale factors differ. Philips maps made on the scanner (DERIVED, or a RescaleType unit) and series whose
private tags were removed keep their display values; a series where only some images have a usable scale slope is
refused. ``acquisition.extra["intensity_scaling"]`` ("philips_precise" or "display") and ``["philips_scaling"]``
say what was done; other vendors' series are read as before, with neither key (:mod:`.dicom_scaling`).

Not handled: enhanced multi-frame files and mosaics (convert with dcm2niix). A multi-echo series
(several EchoTime values) is refused here, one Volume per echo is :func:`.dicom_echoes.read_dicom_echoes`
(which `bbbanomaly dsc` uses for a dual-echo DSC folder).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.volume import READ_WARNINGS, Acquisition, Volume
from ._common import LPS_TO_RAS
from ._common import itk_warnings_off as _itk_warnings_off  # (dicom_echoes reads it here too)
from .dicom_frames import (POSITION_TOL_MM, _column, _describe_steps, _first_name, _frame_grid, _frame_times,
                           _groups, _slice_times, _vector)
from .dicom_contrast import contrast_extra
from .sequence_type import sequence_extra_from_dicom
from .dicom_ge import ge_trigger_slice_times
from .dicom_resent import find_copies, resent_series
from .dicom_scaling import TAGS as SCALING_TAGS
from .dicom_scaling import apply_divisors, is_philips, philips_private, scaling_plan

_log = logging.getLogger("BBBAnomalyLib")

TAGS = {
    "position": "0020|0032", "orientation": "0020|0037", "temporal_id": "0020|0100",
    "trigger": "0018|1060", "acq_datetime": "0008|002a", "acq_time": "0008|0032", "content_time": "0008|0033",
    "instance": "0020|0013", "echo_time": "0018|0081", "repetition_time": "0018|0080", "flip": "0018|1314",
    "field": "0018|0087", "description": "0008|103e",
    "thickness": "0018|0050", "between": "0018|0088", "modality": "0008|0060",
    "sop_uid": "0008|0018", "image_type": "0008|0008",
}
#: Siemens' private NumberOfImagesInMosaic, in the group its creator "SIEMENS MR HEADER" reserves.
SIEMENS_CREATOR, MOSAIC_COUNT = "0019|0010", "0019|100a"


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
    series_uid, images, notes = _series_images(directory, series_uid)
    return _volume(directory, series_uid, *images, notes=notes)


def _series_images(directory: Path, series_uid: str | None) -> tuple[str, tuple[list, list, list, list], list[str]]:
    """The series' UID, its images (files, headers, spacings, pixel ids), exact copies left out, after the
    checks that hold for the whole series (one series, no multi-frame files, no mosaic, one kind and size), and the
    warnings of the choice (a second series in the folder that holds only copies of this one's images)."""
    by_uid = _series_files(directory)
    if not by_uid:
        raise InputError(f"no DICOM series found in '{directory}' (subfolders are not searched); "
                         "give the folder that directly holds the .dcm files")

    def listing():
        return "; ".join(f"{uid} ({len(files)} file{'s' if len(files) != 1 else ''}, "
                         f"'{_read_headers(files[:1])[0][0].get('description', '')}', e.g. '{_first_name(files)}')"
                         for uid, files in by_uid.items())

    notes: list[str] = []
    if series_uid is None:
        if len(by_uid) > 1:
            series_uid, note = resent_series(by_uid, _read_headers, directory)  # the series sent again, new UIDs
            if series_uid is None:
                raise InputError(f"'{directory}' holds {len(by_uid)} DICOM series: {listing()}{note}. One series is "
                                 "read per folder: put the files of the series to analyse in a folder of its own (in "
                                 "Python: read_dicom_series(folder, series_uid=...))")
            notes.append(note)
        else:
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
    return series_uid, (files, headers, spacings, pixel_ids), notes


def _volume(directory: Path, series_uid: str, files, headers, spacings, pixel_ids, notes=()) -> Volume:
    """The Volume of one series' images (of one echo, for :mod:`.dicom_echoes`); ``notes``: warnings of
    :func:`_series_images`."""
    copies = find_copies(files, headers, directory)  # a series (or part of it) exported twice, new SOPInstanceUIDs
    notes = list(notes)
    if copies.keep is not None:
        files, headers, spacings, pixel_ids = ([x[i] for i in copies.keep] for x in (files, headers, spacings,
                                                                                      pixel_ids))
        notes.append(copies.warning)
    try:
        grid, frame_source = _frame_grid(headers, files, directory)
    except InputError:
        if copies.differing:  # refused because of two images of one slice and time: say that their pixels differ
            raise InputError(copies.refusal(directory)) from None
        raise
    for note in notes:
        _log.warning("%s", note)
    affine = _affine(headers, grid, spacings[grid[0, 0]], directory)
    acq = _acquisition(headers, series_uid, frame_source)
    acq.extra.update(contrast_extra(files))  # the contrast given, as the header states it (dce.stated_dose)
    acq.extra.update(sequence_extra_from_dicom(files))  # spin or gradient echo, as the header says (io/sequence_type)
    if notes:
        acq.extra["duplicate_images"] = " ".join(notes)
        acq.extra.setdefault(READ_WARNINGS, []).extend(notes)  # the run's report says it too
    times, time_source, unusable = _frame_times(headers, grid, acq.repetition_time)
    acq.extra["frame_timing"] = time_source
    slice_timing, _ = _slice_times(headers, grid, time_source, directory)  # each slice's time within its frame
    if slice_timing is None or not any(slice_timing["times_s"]):  # GE multi-phase EPI: the slices' TriggerTime
        slice_timing = ge_trigger_slice_times(headers, files, grid, times, time_source, acq.repetition_time,
                                              directory) or slice_timing
    if slice_timing is not None:
        acq.extra["slice_timing"] = slice_timing
    if unusable:
        acq.extra["frame_times_unusable"], hint = unusable
        if hint:
            acq.extra["frame_interval_hint"] = hint
    data = _read_pixels(files, grid, pixel_ids, directory)
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
        header = {name: reader.GetMetaData(tag).strip()
                  for name, tag in {**TAGS, **SCALING_TAGS}.items() if reader.HasMetaDataKey(tag)}
        if is_philips(header):  # its private MR Scale Slope gives the precise values (dicom_scaling)
            if not reader.GetLoadPrivateTags():  # from the first Philips file on, read once with private tags
                reader.LoadPrivateTagsOn()
                reader.ReadImageInformation()
            header.update(philips_private(reader))
        headers.append(header)
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


# --- geometry ---------------------------------------------------------------------------


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


def _acquisition(headers, series_uid, frame_source) -> Acquisition:
    def first(name, scale=1.0):
        v = _column(headers, name)
        v = v[np.isfinite(v)]
        return float(v[0]) * scale if v.size else None

    h = headers[0]
    try:  # Philips: which values are read (precise or display); a series that cannot be scaled is refused by
        scaling = scaling_plan(headers, [""] * len(headers), "").extra  # _read_pixels, which names a file
    except InputError:
        scaling = {}
    return Acquisition(
        echo_time=first("echo_time", 1e-3), repetition_time=first("repetition_time", 1e-3),
        flip_angle=first("flip"), field_strength=first("field"), description=h.get("description", ""),
        extra={"series_uid": series_uid, "modality": h.get("modality", ""), "frame_grouping": frame_source,
               **scaling},
    )


def field_strength_of(files) -> float | None:
    """MagneticFieldStrength [T] of a series' files as :func:`read_dicom_series` keeps it in
    ``Acquisition.field_strength`` (the first file's; None where absent): for the Slicer bridge, whose nodes do not
    carry it (the DCE check of the header's contrast agent reads the r1 at this field, dce/stated_relaxivity.py)."""
    return _acquisition(_read_headers(list(files)[:1])[0], "", "").field_strength


def series_description_of(files) -> str:
    """SeriesDescription of a series' files as :func:`read_dicom_series` keeps it in ``Acquisition.description`` (the
    first file's; "" where absent): for the Slicer bridge, whose nodes do not carry it (a view-shared DCE series is
    often named only there, e.g. Siemens' "t1_twist_tra_dyn": io/view_sharing.py)."""
    return _acquisition(_read_headers(list(files)[:1])[0], "", "").description


def _read_pixels(files, grid, pixel_ids, directory) -> np.ndarray:
    """(x, y, z, t) array in the stored integer type, or float32 when GDCM applies a rescale.

    GDCM reports a float pixel type for a file whose RescaleSlope/Intercept is not an integer
    mapping; slices can differ (Philips), and the series reader takes the first file's type, so
    any float or mixed type reads every frame as float32 rather than truncating. A frame that
    cannot be decoded is read again file by file to name the damaged file. Philips images with
    their private scale slope are read as precise values (:mod:`.dicom_scaling`), float32.
    """
    precise = _philips_divisors(files, directory)
    reader = sitk.ImageSeriesReader()
    if precise is not None:  # display values in double precision, divided by each file's RS * SS below
        reader.SetOutputPixelType(sitk.sitkFloat64)
    elif len(set(pixel_ids)) > 1 or set(pixel_ids) & {sitk.sitkFloat32, sitk.sitkFloat64}:
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
        arr = arr.reshape((len(row),) + arr.shape[-2:])  # a one-slice frame comes back 2D
        frames.append(arr if precise is None else apply_divisors(arr, precise[row]))
    return np.stack(frames, axis=-1).transpose(2, 1, 0, 3)  # (z, y, x, t) -> (x, y, z, t)


def _philips_divisors(files, directory) -> np.ndarray | None:
    """Per file, what its display values are divided by to give Philips' precise values; None (the values as
    GDCM reads them) unless the series is Philips' with its private scale slopes. Only the first file is read
    again for any other series."""
    if not is_philips(_read_headers(files[:1])[0][0]):
        return None
    return scaling_plan(_read_headers(files)[0], files, directory).divisors


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

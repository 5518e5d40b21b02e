"""NIfTI-1 reading and writing (nibabel), with a BIDS-style JSON sidecar and FSL bval/bvec.

Geometry: the affine is nibabel's best affine (sform when its code is set, else qform). We write
NIfTI-1 (every tool reads it), with sform and qform both set to the affine (code 1, scanner).
A qform holds no shear, and ITK (so 3D Slicer) reads the qform when the sform is not orthogonal:
a sheared grid (a gantry-tilted DICOM series) would be placed wrongly there, 16 mm for a 15 degree
tilt. Writing one whose qform would move a corner voxel more than ``SHEAR_TOLERANCE_MM`` is
refused in one line that points to NRRD (``--format nrrd``), which stores it exactly.
NIfTI-1 stores the affine as float32, so an affine that did not come from a NIfTI file
(DICOM, NRRD, computed) comes back rounded to float32 (~1e-5 mm at 100 mm): far below the
grid tolerance, and exact for maps written on the grid of a NIfTI input.

Timing: pixdim[4] (with xyzt_units, ms -> s) and toffset give uniform frame times. A header
with an unknown time unit and pixdim[4] of 0 or exactly 1 (nibabel's and ITK's placeholder)
is treated as "times unknown" rather than a guessed 1 s. The sidecar's BIDS ``VolumeTiming``
(onsets in s; PET's ``FrameTimesStart`` too) wins over the header because it can hold
non-uniform times exactly; we always write it for 4D data with known times.

Sidecar ``x.json`` next to ``x.nii.gz``: BIDS keys EchoTime [s], RepetitionTime [s],
FlipAngle [deg], MagneticFieldStrength [T], SeriesDescription, VolumeTiming [s], plus a
``BBBAnomaly`` object for what BIDS has no key for (echo_times, extra). ``SliceTiming`` (s, one per slice along
``SliceEncodingDirection``, default k) is kept as given in ``acquisition.extra['slice_timing']`` and written back as
BIDS keys; the DSC and DCE pipelines check and use it (:mod:`..perfusion.slice_timing`). The pulse-sequence keys
(ScanningSequence, SequenceName, PulseSequenceType, ..., ArterialSpinLabelingType) go to ``acquisition.extra['sequence']``
(:mod:`.sequence_type`; written back under ``BBBAnomaly.extra``). Reading the sidecar is optional;
a value of the wrong type or out of range is refused with one line naming the file and the field;
on write a stale sidecar/bval/bvec of the same name is removed so it cannot describe new data.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..core.checks import number
from ..core.errors import InputError
from ..core.volume import Acquisition, FrameSource, Volume
from ._common import TIME_UNITS, staged_files, stem_of, storable, uniform_interval
from .sequence_type import sequence_extra_from_sidecar


def sidecar_paths(path: Path, suffix: str) -> dict[str, Path]:
    """The JSON/bval/bvec siblings of an image: ``x.nii.gz`` -> ``x.json``, ``x.bval``, ``x.bvec``."""
    stem = stem_of(path, suffix)
    return {ext: path.with_name(stem + "." + ext) for ext in ("json", "bval", "bvec")}


# --- reading ----------------------------------------------------------------------------
def _nibabel():
    """nibabel, imported on first use: Slicer does not bundle it, and NRRD (what the panel writes) needs none."""
    try:
        import nibabel
    except ImportError:
        raise InputError("reading or writing NIfTI needs the nibabel package: `pip install nibabel` (in Slicer: "
                         "the BBBAnomaly panel offers to install it), or use NRRD files") from None
    return nibabel


def read_nifti(path: Path, suffix: str, lazy: bool = False, gradient_files: bool = True) -> Volume:
    """A Volume from a NIfTI file. ``lazy``: a 4D series stays in its file (a :class:`NiftiFrames`
    source, read frame block by frame block by whoever uses it); 3D images are read at once.
    ``gradient_files`` False: the ``x.bval``/``x.bvec`` beside it are not read (the caller was given a table of its
    own, which replaces them: a stale sibling table must not refuse the image it does not describe)."""
    nib = _nibabel()
    try:
        # keep_file_open: frame blocks read one after the other continue one (gzip) stream
        # instead of reopening and decompressing the file from its start for every block.
        img = nib.load(str(path), keep_file_open=True) if lazy else nib.load(str(path))
        if lazy and len(img.dataobj.shape) == 4:
            data = NiftiFrames(img, path)
        else:
            data = np.asanyarray(img.dataobj)  # applies scl_slope/inter; keeps integer labels integer
    except InputError:
        raise
    except Exception as e:  # nibabel raises many types for corrupt/truncated files
        raise InputError(f"could not read NIfTI file '{path}': {e}. Check that the file is complete") from e
    if not isinstance(data, NiftiFrames):
        while data.ndim > 4 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim > 4 and all(s == 1 for s in data.shape[3:-1]):  # (x, y, z, 1, n) from some converters
            data = data.reshape(data.shape[:3] + (data.shape[-1],))
        if data.ndim not in (3, 4):
            raise InputError(f"'{path}' has shape {data.shape}; expected a 3D volume or a 4D (x, y, z, t) series")
    affine = np.asarray(img.affine, dtype=np.float64)
    n = data.shape[3] if data.ndim == 4 else 0
    times = _header_times(img.header, n)
    side = sidecar_paths(path, suffix)
    acq, side_times = _read_sidecar(side["json"], n)
    if side_times is not None:
        times = side_times
    if gradient_files:
        acq.bvals, acq.bvecs = _read_fsl_gradients(side["bval"], side["bvec"], n)
    return Volume(data, affine, times, acq)


class NiftiFrames(FrameSource):
    """A 4D NIfTI series left in its file: frames [start, stop) read on demand through nibabel's
    array proxy (scl_slope/inter applied, the dtype nibabel would return for the whole array).
    Read in order, a .nii.gz is decompressed once; a .nii is read straight from disk.

    An unscaled single-file .nii.gz is read by :class:`_GzipFrames` instead (same bytes, checked
    against nibabel in the tests): nibabel goes through Python's ``gzip`` module, which inflates
    ~8 KiB per call and takes the GIL back between calls, so a read-ahead thread cannot overlap
    decompression with the caller's work; one ``zlib`` call per 256 KiB can."""

    def __init__(self, img, path: Path):
        self._proxy, self._path = img.dataobj, path
        self.shape = tuple(int(v) for v in self._proxy.shape)
        # The dtype of what nibabel returns (after scaling), from one voxel: no frame is read.
        self.dtype = self._read((0, 0, 0, slice(0, 1))).dtype if all(self.shape) else np.dtype(np.float32)
        self._stream = _GzipFrames.for_image(img, path, self.shape, self.dtype)

    def _read(self, index) -> np.ndarray:
        try:
            return np.asanyarray(self._proxy[index])
        except Exception as e:  # a truncated or corrupt file shows when its frames are read
            raise InputError(f"could not read NIfTI file '{self._path}': {e}. Check that the file is complete") from e

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._stream is not None:
            try:
                return self._stream.read(start, stop)
            except (OSError, EOFError, ValueError, zlib.error) as e:
                raise InputError(f"could not read NIfTI file '{self._path}': {e}. Check that the file is "
                                 "complete") from e
        return self._read((slice(None), slice(None), slice(None), slice(start, stop)))


class _GzipFrames:
    """Frames of an unscaled, single-file .nii.gz inflated straight from the file with ``zlib``.

    Frame blocks read in order continue one decompression stream (a read that goes back starts
    the stream again, as gzip must). Each ``zlib`` call inflates up to CHUNK bytes (of input, and of
    output: the transient ``bytes`` stay small beside a frame block)
    and releases the GIL while it does, so a read-ahead thread (``FrameSource.blocks(prefetch=
    True)``) really runs beside the caller. Concatenated gzip members are followed."""

    CHUNK = 1 << 18

    @classmethod
    def for_image(cls, img, path: Path, shape, dtype) -> "_GzipFrames | None":
        proxy = img.dataobj  # nibabel's ArrayProxy: where the data start, how stored and scaled
        if not str(path).lower().endswith(".nii.gz") or not all(shape):
            return None
        try:
            offset, stored, order = int(proxy.offset), np.dtype(proxy.dtype), getattr(proxy, "order", "F")
            slope, inter = float(proxy.slope), float(proxy.inter)
        except (AttributeError, TypeError, ValueError):
            return None
        # Only where nibabel returns the stored values as they are: no scaling, same dtype.
        if (slope, inter) != (1.0, 0.0) or order != "F" or stored.newbyteorder("=") != dtype:
            return None
        return cls(path, offset, shape, stored)

    def __init__(self, path: Path, offset: int, shape, stored: np.dtype):
        self._path, self._offset, self._shape, self._stored = path, offset, tuple(shape), np.dtype(stored)
        self._frame_bytes = int(np.prod(shape[:3], dtype=np.int64)) * self._stored.itemsize
        self._file = None
        self._position = None  # bytes of the image data inflated so far (None: no stream open)

    def _restart(self):
        if self._file is not None:
            self._file.close()
        self._file = open(self._path, "rb")
        self._inflate = zlib.decompressobj(31)  # 31: a gzip member
        self._pending = b""
        self._position = -self._offset  # the header comes first
        self._skip(self._offset)

    def _inflate_into(self, view: memoryview) -> None:
        """Fill ``view`` with the next bytes of the stream."""
        filled = 0
        while filled < len(view):
            if self._inflate.eof:  # a member ended: the next starts on all the input after it
                self._pending = self._inflate.unused_data
                self._inflate = zlib.decompressobj(31)
            if not self._pending:
                self._pending = self._file.read(self.CHUNK)
                if not self._pending:
                    raise EOFError(f"the file ends {len(view) - filled} bytes short of the image data")
            out = self._inflate.decompress(self._pending, min(len(view) - filled, self.CHUNK))
            self._pending = self._inflate.unconsumed_tail
            view[filled:filled + len(out)] = out
            filled += len(out)
        self._position += filled

    def _skip(self, count: int) -> None:
        scratch = bytearray(min(count, 1 << 22) or 1)
        while count > 0:
            n = min(count, len(scratch))
            self._inflate_into(memoryview(scratch)[:n])
            count -= n

    def read(self, start: int, stop: int) -> np.ndarray:
        first = start * self._frame_bytes
        if self._position is None or self._position > first:
            self._restart()
        self._skip(first - self._position)
        out = np.empty(self._shape[:3] + (stop - start,), self._stored, order="F")
        self._inflate_into(memoryview(out.reshape(-1, order="A")).cast("B"))
        return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))

    def __del__(self):
        if getattr(self, "_file", None) is not None:
            self._file.close()


def _header_times(header, n: int) -> np.ndarray | None:
    if n == 0:
        return None
    dt = float(header.get_zooms()[3]) if len(header.get_zooms()) > 3 else 0.0
    unit = header.get_xyzt_units()[1]
    if unit == "unknown":
        if dt <= 0 or dt == 1.0:
            return None
        scale = 1.0
    elif unit in ("sec", "msec", "usec"):
        scale = TIME_UNITS[unit]
    else:  # hz, ppm, rads: the 4th axis is not time
        return None
    if not np.isfinite(dt) or dt <= 0:
        return None
    t0 = float(header["toffset"]) if np.isfinite(header["toffset"]) else 0.0
    return (t0 + np.arange(n) * dt) * scale


#: Range checks of the sidecar's numbers: (low, high, high_open, what the value is, the option that
#: gives it instead). EchoTime has the range of ``--te``. For RepetitionTime and FlipAngle only what
#: every sequence satisfies: this reads the sidecar of any input, and DSC, DWI and FLAIR have TRs of
#: seconds and spin-echo flip angles up to 180 degrees, so ``--tr``'s and ``--flip-angle``'s DCE
#: ranges would refuse good files; TE -0.03, TR -0.005 or a flip angle of 0 or 720 fit no sequence.
_SIDECAR_RANGES = {
    "EchoTime": (0.0, 1.0, True, "the echo time in seconds (e.g. 0.03 for 30 ms)", "--te"),
    "RepetitionTime": (0.0, math.inf, True, "the repetition time in seconds (e.g. 0.005 for 5 ms)", "--tr"),
    "FlipAngle": (0.0, 180.0, False, "the flip angle in degrees (e.g. 15)", "--flip-angle"),
    "MagneticFieldStrength": (0.0, math.inf, True, "the field strength in tesla (e.g. 3)", None),
}


def _sidecar_number(value, key: str, field: str, path: Path) -> float | None:
    """A number of the sidecar checked like the option that sets it (``core.checks.number``), else
    one InputError line naming the sidecar and the field. ``key`` picks the range, ``field`` is how
    the message names the value (``EchoTime1``, ``BBBAnomaly.echo_times``)."""
    if value is None:
        return None
    low, high, high_open, what, option = _SIDECAR_RANGES[key]
    flag = f"{field} in the JSON sidecar '{path}'"
    hint = f"it is {what}: correct it or delete it" + (
        f" (where it is needed, {option} gives it on the command line)" if option else "")
    if isinstance(value, bool):  # JSON true is no number, though float(True) is 1 (a TE of 1 s)
        raise InputError(f"{flag} must be a number, got {json.dumps(value)}; {hint}")
    return number(value, flag, low, high, low_open=True, high_open=high_open, hint=hint)


def _sidecar_times(value, key: str, path: Path) -> np.ndarray:
    """The frame onsets of the sidecar: a list of finite numbers, else one InputError line."""
    if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        shown = json.dumps(value)
        raise InputError(f"{key} in the JSON sidecar '{path}' must be a list of finite frame onsets in seconds, got "
                         f"{shown if len(shown) <= 60 else shown[:57] + '...'}; correct it, or delete it and give "
                         "--frame-interval or --times on the command line")
    return np.asarray(value, dtype=np.float64)


def _read_sidecar(path: Path, n: int) -> tuple[Acquisition, np.ndarray | None]:
    if not path.is_file():
        return Acquisition(), None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict):
            raise ValueError("the top level is not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"the JSON sidecar '{path}' is not valid JSON ({e}); fix or remove it") from e
    except RecursionError:  # nested thousands deep: no sidecar looks like that
        raise InputError(f"the JSON sidecar '{path}' is nested too deeply to be a sidecar; fix or remove it") from None
    own = {} if d.get("BBBAnomaly") is None else d["BBBAnomaly"]
    extra = own.get("extra") if isinstance(own, dict) else None
    for field, value in (("BBBAnomaly", own), ("BBBAnomaly.extra", extra)):
        if value is not None and not isinstance(value, dict):
            raise InputError(f"{field} in the JSON sidecar '{path}' must be a JSON object ({{...}}), got "
                             f"{json.dumps(value)[:60]}; correct or delete it")

    def num(key):
        v = d.get(key)
        # A list or object (per-volume values of some converters) is not one value: left unknown, as before.
        return None if isinstance(v, (list, dict)) else _sidecar_number(v, key.replace("Excitation", ""), key, path)

    te = d.get("EchoTime")
    echo_times, field = own.get("echo_times"), "BBBAnomaly.echo_times"
    if isinstance(te, list):  # some converters list every echo
        echo_times, field, te = te, "EchoTime", (te[0] if te else None)
    elif echo_times is None and d.get("EchoTime1") is not None and d.get("EchoTime2") is not None:
        echo_times = [_sidecar_number(d[k], "EchoTime", k, path) for k in ("EchoTime1", "EchoTime2")]
    if echo_times is not None and not isinstance(echo_times, list):
        raise InputError(f"{field} in the JSON sidecar '{path}' must be a list of echo times in seconds "
                         f"(e.g. [0.015, 0.045]), got {json.dumps(echo_times)[:60]}; correct or delete it")
    acq = Acquisition(
        echo_time=_sidecar_number(te, "EchoTime", "EchoTime", path),
        echo_times=None if echo_times is None else tuple(_sidecar_number(v, "EchoTime", field, path)
                                                         for v in echo_times),
        repetition_time=num("RepetitionTimeExcitation") if d.get("RepetitionTimeExcitation") is not None
        else num("RepetitionTime"),
        flip_angle=num("FlipAngle"),
        field_strength=num("MagneticFieldStrength"),
        description=str(d.get("SeriesDescription", "") or own.get("description", "")),
        extra=dict(extra or {}),
    )
    if d.get("SliceTiming") is not None:
        # kept as given (BIDS order along SliceEncodingDirection); checked by the pipelines that use it (DSC, DCE:
        # perfusion/slice_timing.py), so that a sidecar's slice times never refuse a T1, FLAIR or DWI image
        acq.extra["slice_timing"] = {"times_s": d["SliceTiming"], "direction": d.get("SliceEncodingDirection", "k"),
                                     "source": f"SliceTiming in the JSON sidecar '{path}'"}
    if "sequence" not in acq.extra:  # the sequence kind as the sidecar's BIDS keys say (io/sequence_type.py)
        acq.extra.update(sequence_extra_from_sidecar(d))
    times = None
    for key in ("VolumeTiming", "FrameTimesStart"):
        if d.get(key) is not None:
            times = _sidecar_times(d[key], key, path)
            if times.size != n:
                raise InputError(
                    f"the sidecar '{path}' lists {times.size} {key} values but the image has {n} frames; "
                    "fix or remove the sidecar, or give the frame times explicitly"
                )
            break
    return acq, times


def _read_fsl_gradients(bval: Path, bvec: Path, n: int):
    if not bval.is_file():
        return None, None
    try:
        with warnings.catch_warnings():  # an empty file: numpy warns on stderr; the count check below says it
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
            bvals = np.loadtxt(bval, dtype=np.float64, ndmin=1).ravel()
            bvecs = np.loadtxt(bvec, dtype=np.float64, ndmin=2) if bvec.is_file() else None
    except ValueError as e:
        raise InputError(f"could not parse '{bval}'/'{bvec}' as FSL b-values/vectors: {e}") from e
    if n and bvals.size != n:
        raise InputError(f"'{bval}' has {bvals.size} b-values but the image has {n} volumes; they must match")
    if bvecs is not None:
        if bvecs.shape == (3, bvals.size) and bvals.size != 3:
            bvecs = bvecs.T
        if bvecs.shape != (bvals.size, 3):
            raise InputError(f"'{bvec}' must hold 3 x {bvals.size} gradient components (FSL layout); got {bvecs.shape}")
    return bvals, bvecs


# --- writing ----------------------------------------------------------------------------
#: How far (mm) the qform of a written file may place a corner voxel from the affine: more is a
#: sheared grid, which NIfTI cannot hold for ITK/Slicer (rounded DICOM positions stay far below).
SHEAR_TOLERANCE_MM = 0.05


def check_nifti_geometry(affine: np.ndarray, shape, path) -> None:
    """InputError when a NIfTI file cannot hold ``affine`` for every reader: a sheared voxel grid (gantry
    tilt) whose qform, what ITK and 3D Slicer use for a non-orthogonal sform, puts voxels elsewhere."""
    nib = _nibabel()
    affine = np.asarray(affine, dtype=np.float64)
    header = nib.Nifti1Header()
    header.set_qform(affine, code=1)
    corners = np.array(list(itertools.product(*[(0, max(int(n) - 1, 0)) for n in tuple(shape)[:3]])), float)
    corners = np.c_[corners, np.ones(len(corners))]
    worst = float(np.linalg.norm((corners @ (header.get_qform() - affine).T)[:, :3], axis=1).max())
    if worst > SHEAR_TOLERANCE_MM:
        axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
        skew = max(abs(90.0 - math.degrees(math.acos(np.clip(abs(axes[:, i] @ axes[:, j]), 0.0, 1.0))))
                   for i, j in ((0, 1), (0, 2), (1, 2)))
        raise InputError(f"cannot write '{Path(path).name}' as NIfTI: its voxel grid is sheared (axes {skew:.3g} degrees off "
                         f"square, e.g. a gantry-tilted series), which a NIfTI qform cannot hold; ITK and 3D Slicer "
                         f"would place voxels up to {worst:.3g} mm off. Write NRRD instead, which is exact "
                         "(--format nrrd, or a .nrrd file name)")


def write_nifti(volume: Volume, path: Path, suffix: str) -> None:
    check_nifti_geometry(volume.affine, volume.spatial_shape, path)
    data = storable(volume.data)
    nib = _nibabel()
    img = nib.Nifti1Image(data, volume.affine, dtype=data.dtype)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    if volume.is_4d:
        t = volume.times
        dt = uniform_interval(t) or (volume.frame_interval() or 0.0)
        hdr.set_zooms(tuple(hdr.get_zooms()[:3]) + (max(dt, 0.0),))
        hdr["toffset"] = float(t[0]) if t is not None else 0.0
    img.set_sform(volume.affine, code=1)
    img.set_qform(volume.affine, code=1)
    side = _sidecar_dict(volume)
    side_text = json.dumps(side, indent=2) + "\n" if side else None  # fails before anything is written
    acq = volume.acquisition
    paths = sidecar_paths(path, suffix)
    with staged_files(path) as scratch:
        nib.save(img, str(scratch / path.name))
        if side_text:
            (scratch / paths["json"].name).write_text(side_text, encoding="utf-8")
        if acq.bvals is not None:
            np.savetxt(scratch / paths["bval"].name, np.asarray(acq.bvals, dtype=np.float64)[None, :], fmt="%.10g")
            if acq.bvecs is not None:
                np.savetxt(scratch / paths["bvec"].name, np.asarray(acq.bvecs, dtype=np.float64).T, fmt="%.10g")
    # Siblings left by an earlier write of the same name would describe the new image wrongly.
    if not side_text:
        paths["json"].unlink(missing_ok=True)
    if acq.bvals is None:
        paths["bval"].unlink(missing_ok=True)
    if acq.bvals is None or acq.bvecs is None:
        paths["bvec"].unlink(missing_ok=True)


def _sidecar_dict(volume: Volume) -> dict:
    a = volume.acquisition
    d = {}
    for key, value in (("EchoTime", a.echo_time), ("RepetitionTime", a.repetition_time),
                       ("FlipAngle", a.flip_angle), ("MagneticFieldStrength", a.field_strength)):
        if value is not None:
            d[key] = float(value)
    if a.description:
        d["SeriesDescription"] = a.description
    if volume.is_4d and volume.times is not None:
        d["VolumeTiming"] = [float(v) for v in volume.times]
    own = {}
    if a.echo_times:
        own["echo_times"] = [float(v) for v in a.echo_times]
    extra = dict(a.extra)
    timing = extra.pop("slice_timing", None)  # perfusion.slice_timing.EXTRA_KEY: BIDS has its own keys for it
    if isinstance(timing, dict) and isinstance(timing.get("times_s"), list):
        d["SliceTiming"] = timing["times_s"]
        d["SliceEncodingDirection"] = timing.get("direction", "k")
    elif timing is not None:
        extra["slice_timing"] = timing
    if extra:
        own["extra"] = extra
    if own:
        d["BBBAnomaly"] = own
    return d

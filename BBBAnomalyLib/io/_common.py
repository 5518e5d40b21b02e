"""Helpers shared by the readers and writers: file kinds, staged writes, dtypes, LPS/RAS, times.

Kept apart from the format modules so that NIfTI, NRRD and DICOM agree on the same rules
(which dtypes survive a write, when frame times are acceptable, how ITK's LPS geometry maps
to our RAS affine) instead of each re-deciding them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..core.checks import number
from ..core.errors import InputError
from ..core.volume import Acquisition

#: ITK/DICOM/NRRD "left-posterior-superior" <-> our RAS: flip the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".seq.nrrd", ".seq.nhdr", ".nrrd", ".nhdr")
SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr, .seq.nrrd) or a DICOM series folder"

#: Time units accepted in headers, as factors to seconds.
TIME_UNITS = {
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 1e-3, "msec": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
    "us": 1e-6, "usec": 1e-6, "min": 60.0, "minute": 60.0, "minutes": 60.0,
}


def file_kind(path: Path) -> tuple[str, str]:
    """('nifti' | 'nrrd' | 'dicom', suffix) for a path, or InputError naming what is supported."""
    if path.is_dir():
        return "dicom", ""
    name = path.name.lower()
    for kind, suffixes in (("nifti", NIFTI_SUFFIXES), ("nrrd", NRRD_SUFFIXES)):
        for s in suffixes:
            if name.endswith(s) and len(name) > len(s):
                return kind, path.name[-len(s):]
    raise InputError(f"cannot tell the format of '{path}' from its name; use {SUPPORTED}")


def stem_of(path: Path, suffix: str) -> str:
    """File name without its (possibly double) image suffix: 'dce.nii.gz' -> 'dce'."""
    return path.name[: -len(suffix)] if suffix else path.name


@contextlib.contextmanager
def staged_files(final: Path):
    """Yield a scratch folder beside `final`; files written there move into place on success.

    Why: DESIGN asks that outputs are written completely or not at all. Writing under the final
    names into a sibling folder (same file system) keeps detached NRRD headers pointing at the
    right data file, and each `os.replace` is atomic, so a failed write leaves the old files.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".bbbanomaly-write-", dir=final.parent))
    try:
        yield scratch
        for f in sorted(scratch.iterdir()):
            os.replace(f, final.parent / f.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def storable(data: np.ndarray) -> np.ndarray:
    """The array as it will be stored: float maps as float32, masks/labels keep an integer type.

    bool becomes uint8 (neither NIfTI nor ITK has bool); 64-bit integers become int32 when the
    values fit, because int64 images upset many tools (nibabel refuses them without a dtype).
    """
    data = np.asarray(data)
    if data.dtype == bool:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        return data if data.dtype == np.float32 else data.astype(np.float32)
    if data.dtype.kind in "iu":
        if data.dtype.itemsize == 8:
            lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
            if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
                return data.astype(np.int32)
        return data
    raise InputError(f"cannot store image data of type {data.dtype}; convert it to float32 or an integer type")


def check_times(values, what: str) -> np.ndarray:
    """Frame times as a float64 vector; InputError unless non-empty, finite and increasing."""
    t = np.asarray(values, dtype=np.float64).ravel()
    if t.size == 0:
        raise InputError(f"{what}: no frame times")
    if not np.all(np.isfinite(t)):
        raise InputError(f"{what}: frame times must be finite numbers (got {t.tolist()[:8]}...)")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{what}: frame times must increase strictly; frame {i + 1} is at {t[i + 1]:g} s after "
            f"frame {i} at {t[i]:g} s. Give times in seconds, one per frame, in acquisition order"
        )
    return t


def check_image_data(data: np.ndarray, source: str) -> None:
    """Refuse pixel types the pipelines cannot use meaningfully: complex and structured (RGB) data.

    Why here: taking the real part or the first channel silently would give a map of something
    the user did not acquire; one clear line at read time costs nothing.
    """
    if np.iscomplexobj(data):
        raise InputError(
            f"'{source}' holds complex-valued data ({data.dtype}); the pipelines need real magnitude images. "
            "Save the magnitude as float32, e.g. with nibabel: np.abs(np.asanyarray(img.dataobj))"
        )
    if data.dtype.fields is not None or data.dtype.kind not in "biuf":
        raise InputError(
            f"'{source}' holds {data.dtype} voxels (e.g. RGB or text), not numbers; save it as a scalar "
            "float32 or integer image"
        )


def check_geometry(affine: np.ndarray, source: str) -> np.ndarray:
    """The voxel -> RAS affine, or one InputError line when it cannot place voxels in space.

    NaN/inf entries, a zero voxel size or a singular (flat) matrix would otherwise pass through a
    whole run and fail when the maps are written, or divide gradients by zero. Checked once, when
    the file is read, before any computation.
    """
    a = np.asarray(affine, dtype=np.float64)
    fix = ("fix the header (voxel spacing and orientation, e.g. Slicer's Volumes module > Volume Information, "
           "or nibabel's img.set_sform), or re-export the image from the scanner/DICOM")
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise InputError(f"'{source}' has a voxel-to-world matrix (affine) with NaN or infinite entries; {fix}")
    sizes = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(sizes < 1e-6):
        axes = ", ".join("ijk"[i] for i in np.flatnonzero(sizes < 1e-6))
        raise InputError(f"'{source}' has a zero voxel size along voxel axis {axes} "
                         f"(voxel {' x '.join(f'{v:g}' for v in sizes)} mm); {fix}")
    if abs(np.linalg.det(a[:3, :3] / sizes)) < 1e-6:
        raise InputError(f"'{source}' has a singular voxel-to-world matrix (two voxel axes point the same way, "
                         f"voxel {' x '.join(f'{v:g}' for v in sizes)} mm); {fix}")
    return a


def describe_grids(a, b) -> str:
    """How two voxel grids differ, in a few words: shapes and voxel sizes (or origin/orientation)."""
    def fmt_shape(v):
        return "x".join(str(int(n)) for n in v.spatial_shape)

    def fmt_voxel(v):
        sizes = v.voxel_sizes
        return (f"{sizes[0]:.3g} mm" if np.allclose(sizes, sizes[0], rtol=1e-3)
                else " x ".join(f"{s:.3g}" for s in sizes) + " mm")

    parts = [f"shape {fmt_shape(a)} vs {fmt_shape(b)}", f"voxel {fmt_voxel(a)} vs {fmt_voxel(b)}"]
    if a.spatial_shape == b.spatial_shape and np.allclose(a.voxel_sizes, b.voxel_sizes, atol=1e-3):
        shift = np.linalg.norm(a.affine[:3, 3] - b.affine[:3, 3])
        parts = [f"same shape {fmt_shape(a)} and voxel {fmt_voxel(a)}, but "
                 + (f"origin {shift:.3g} mm apart" if shift > 1e-3 else "another orientation")]
    return ", ".join(parts)


def uniform_interval(times: np.ndarray | None, tol: float = 1e-6) -> float | None:
    """The frame interval when `times` are evenly spaced (within `tol` s), else None."""
    if times is None or times.size < 2:
        return None
    d = np.diff(times)
    return float(d.mean()) if np.all(np.abs(d - d.mean()) <= tol) else None


def affine_to_itk(affine: np.ndarray) -> tuple[list, list, list]:
    """RAS voxel->mm affine -> ITK (spacing, origin, direction) in LPS."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    m = lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(m)) < 1e-12:
        raise InputError(f"the affine has a zero-length or degenerate voxel axis:\n{affine}")
    return spacing.tolist(), lps[:3, 3].tolist(), (m / spacing).ravel().tolist()


def itk_to_affine(spacing, origin, direction) -> np.ndarray:
    """ITK 3D (spacing, origin, row-major direction) in LPS -> 4x4 RAS affine."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(spacing, dtype=np.float64)
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


#: What every sequence's stored acquisition satisfies (the JSON sidecar reader's ranges, io/nifti.py): TE in
#: (0, 1) s like --te; TR, field strength > 0; a flip angle in (0, 180] degrees (spin echoes reach 180).
_ACQUISITION_RANGES = {"echo_time": (0.0, 1.0, True), "repetition_time": (0.0, math.inf, True),
                       "flip_angle": (0.0, 180.0, False), "field_strength": (0.0, math.inf, True)}


def _acquisition_number(value, name: str, source: str) -> float:
    low, high, high_open = _ACQUISITION_RANGES["echo_time" if name == "echo_times" else name]
    if isinstance(value, bool):  # float(True) is 1: a TE of 1 s from a JSON true
        raise InputError(f"{name} in {source} must be a number, got {value!r}; correct or remove it")
    return number(value, f"{name} in {source}", low, high, low_open=True, high_open=high_open,
                  hint="correct or remove it")


def acquisition_from_dict(d: dict, source: str = "the acquisition metadata") -> Acquisition:
    """Inverse of :meth:`Acquisition.to_json`; unknown keys go to `extra` rather than being lost.
    The numbers are checked like the JSON sidecar's (one InputError line naming ``source`` and the field): an NRRD
    header's or a hand-over's ``echo_time: "abc"`` used to end in a TypeError, and -0.03 was taken."""
    if not isinstance(d, dict):
        raise InputError(f"{source} must be a JSON object of acquisition fields, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(Acquisition)}
    kw = {k: v for k, v in d.items() if k in names}
    extra = kw.pop("extra", {}) or {}
    if not isinstance(extra, dict):
        raise InputError(f"'extra' in {source} must be a JSON object, got {type(extra).__name__}")
    extra = dict(extra)
    extra.update({k: v for k, v in d.items() if k not in names})
    for name in _ACQUISITION_RANGES:
        if kw.get(name) is not None:
            kw[name] = _acquisition_number(kw[name], name, source)
    if kw.get("echo_times") is not None:
        if not isinstance(kw["echo_times"], (list, tuple)):
            raise InputError(f"echo_times in {source} must be a list of echo times in seconds, got "
                             f"{kw['echo_times']!r}; correct or remove it")
        kw["echo_times"] = tuple(_acquisition_number(v, "echo_times", source) for v in kw["echo_times"])
    for key in ("bvals", "bvecs"):
        if kw.get(key) is not None:
            kw[key] = np.asarray(kw[key], dtype=np.float64)
    return Acquisition(**kw, extra=extra)


def check_echo_time(te: float | None, source: str) -> float | None:
    """Guard the one unit slip we can detect: a TE in ms where seconds are required."""
    if te is not None and te > 1.0:
        raise InputError(
            f"echo time {te:g} in {source} looks like milliseconds; it must be in seconds "
            f"(e.g. {te / 1000:g}). Fix the file"
        )
    return te


@contextlib.contextmanager
def itk_warnings_off():
    """ITK's global warning display (printed straight to the console) off for the caller's header reads, the caller's
    setting put back. SimpleITK is imported here, not at the module's top: the Slicer bridge uses this too."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)

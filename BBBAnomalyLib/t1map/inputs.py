"""A variable-flip-angle series from files: one 4D file (one frame per flip angle) or several 3D
files (one per flip angle), with the flip angles and TR from the flags or from each file's metadata
(BIDS sidecar FlipAngle/RepetitionTime, NRRD/DICOM fields)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from ..core.volume import READ_WARNINGS, Acquisition, Volume, read_warnings


@dataclass
class VFASeries:
    """signals: (x, y, z, k) Volume, one frame per flip angle; flip_angles [deg] (k,); tr [s]."""

    signals: Volume
    flip_angles: np.ndarray
    tr: float


#: The options that set the flip angles and TR, named in the errors: `dce --vfa` has its own
#: (--vfa-flip-angles, --vfa-tr), and its --tr is the DCE series' TR, not the VFA's.
T1MAP_FLAGS = ("--flip-angles", "--tr")
#: ... and for a VFASeries built in Python, which run_t1map checks the same way
PYTHON_FLAGS = ("VFASeries flip_angles", "VFASeries tr")


def check_vfa(signals: Volume, flip_angles, tr, flags: tuple[str, str] = T1MAP_FLAGS) -> VFASeries:
    """Turn bad acquisition values into one-line errors: at least two distinct angles, degrees, seconds."""
    angle_flag, tr_flag = flags
    if not isinstance(signals, Volume):  # an array was an AttributeError ('spatial_shape') from run_t1map
        raise InputError(f"the VFA series must be a Volume (x, y, z, k), one frame per flip angle, got "
                         f"{type(signals).__name__}; e.g. Volume(array, affine) or read_vfa(paths)")
    if not signals.is_4d:
        raise InputError("the VFA series is 3D; give one 4D file (a frame per flip angle) or several 3D files")
    if flip_angles is None:
        raise InputError(f"the flip angles of the VFA series are unknown; give {angle_flag} DEG DEG ... (one per "
                         "frame) or files whose sidecars carry FlipAngle")
    try:  # a string among them was numpy's bare ValueError
        angles = np.asarray(flip_angles, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(f"flip angles {flip_angles!r} are not numbers; give them in degrees, e.g. {angle_flag} 2 5 12"
                         ) from None
    if angles.size != signals.n_frames:
        raise InputError(f"{angles.size} flip angles for {signals.n_frames} VFA frames; give one angle per frame")
    # written so that NaN fails it: `nan <= 0` is False, and a NaN angle made every map 0 with exit 0
    if not np.all((angles > 0) & (angles < 90)):
        raise InputError(f"flip angles {angles.tolist()} are not all finite numbers in (0, 90) degrees; give them "
                         f"in degrees, e.g. {angle_flag} 2 5 12")
    if angles.max() <= np.pi / 2:
        # radians (2, 5, 12 degrees are 0.035, 0.087, 0.21) pass as degrees and gave T1 = 1000 s, the fit's bound,
        # in every voxel; no VFA protocol has all its angles under 1.6 degrees (no T1 contrast there)
        raise InputError(f"flip angles {angles.tolist()} are all under {np.pi / 2:.3g} degrees: are they radians? give "
                         f"them in degrees (np.degrees(...)), e.g. {angle_flag} 2 5 12")
    if np.unique(angles).size < 2:
        raise InputError("VFA T1 mapping needs at least two different flip angles")
    if tr is None:
        raise InputError(f"the VFA repetition time is unknown; give {tr_flag} SECONDS (e.g. 0.0054 for 5.4 ms)")
    try:  # one number ("0.0054" and np.array([0.0054]) too); a string was a TypeError from the comparison
        tr = float(np.asarray(tr, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise InputError(f"TR = {tr!r} is not one number; give {tr_flag} in seconds (e.g. 0.0054 for 5.4 ms)") from None
    if not 0 < tr < 1:  # (NaN fails this too)
        raise InputError(f"TR = {tr} does not look like seconds; give {tr_flag} in seconds (e.g. 0.0054 for 5.4 ms)")
    if signals.dtype.kind not in "biuf":  # complex: numpy kept the real part with a warning
        raise InputError(f"the VFA series has {signals.dtype} values; give magnitude images (e.g. np.abs(...))")
    return VFASeries(signals, angles, tr)


def read_vfa(paths: list[str], flip_angles=None, tr: float | None = None,
             flags: tuple[str, str] = T1MAP_FLAGS) -> VFASeries:
    """The VFA series of ``paths`` (one 4D file, or several 3D files on one grid); flags win over metadata."""
    from ..io import read_volume

    volumes = [read_volume(p) for p in paths]
    if len(volumes) == 1:
        series = volumes[0]
        acq = series.acquisition
        tr = tr if tr is not None else acq.repetition_time
        scaling = acq.extra.get("intensity_scaling")
        if scaling:  # a DICOM series: which Philips values were read (io.dicom_scaling)
            acq.extra["vfa_intensity_scaling"] = {str(paths[0]): _scaling_summary(acq.extra)}
        return check_vfa(series, flip_angles, tr, flags)
    first = volumes[0]
    for path, vol in zip(paths, volumes):
        if vol.is_4d and vol.n_frames != 1:
            raise InputError(f"{path} is 4D; with several VFA files give one 3D file per flip angle")
        if not first.same_grid(vol):
            raise InputError(f"{path} is not on the grid of {paths[0]}; the flip-angle images must share one grid")
    if flip_angles is None:
        found = [v.acquisition.flip_angle for v in volumes]
        if any(a is None for a in found):
            missing = [p for p, a in zip(paths, found) if a is None]
            raise InputError(f"no FlipAngle in the metadata of {', '.join(missing)}; give {flags[0]} DEG ...")
        flip_angles = found
    if tr is None:
        trs = {v.acquisition.repetition_time for v in volumes} - {None}
        if len(trs) > 1:
            raise InputError(f"the VFA files have different TRs {sorted(trs)}; VFA needs one TR "
                             f"(give {flags[1]} to force)")
        tr = trs.pop() if trs else None
    data = np.stack([np.asarray(v.data).reshape(first.spatial_shape) for v in volumes], axis=-1)
    extra = _scaling_notes(paths, volumes)
    if read_warnings(*volumes):  # what the readers said about each file (e.g. a DICOM series read once of two copies)
        extra[READ_WARNINGS] = read_warnings(*volumes)
    return check_vfa(Volume(data, first.affine.copy(), acquisition=Acquisition(extra=extra)), flip_angles, tr, flags)


def _scaling_summary(extra: dict) -> str:
    """How one file's intensities were read, in a few words (Philips DICOM only: io.dicom_scaling)."""
    info = extra.get("philips_scaling", {})
    if extra.get("intensity_scaling") == "philips_precise":
        return ("Philips precise values (display / (RS*SS), RS*SS "
                + ", ".join(f"{v:.4g}" for v in info.get("display_per_precise", [])) + ")")
    return f"Philips display values ({info.get('why', 'as stored')})"


def _scaling_notes(paths, volumes) -> dict:
    """For several VFA files: how each was scaled, and a warning where Philips series were read as display values,
    whose scale differs from series to series by a factor the files no longer hold (their private tags were
    removed): then the flip angles' signals are not comparable and T1 is off (a 10 % difference moved T1 by 13-16 %,
    scripts/dicom_scaling_audit.py)."""
    kinds = {str(p): v.acquisition.extra.get("intensity_scaling") for p, v in zip(paths, volumes)}
    if not any(kinds.values()):
        return {}
    notes = {"vfa_intensity_scaling": {p: _scaling_summary(v.acquisition.extra)
                                       for p, v in zip(paths, volumes) if kinds[str(p)]}}
    display = [p for p, kind in kinds.items() if kind == "display"]
    if display:
        named = ", ".join(display[:3]) + (" ..." if len(display) > 3 else "")
        notes["vfa_scaling_warning"] = (
            f"{len(display)} of the {len(paths)} VFA series ({named}) are Philips DICOM without the private MR Scale "
            "Slope (2005,100E): their display values can be scaled differently from series to series (a 10 % "
            "difference moves T1 by 13-16 %), so this T1 map may be wrong; "
            "export the series again with their private tags (Philips MR Imaging DD 001), or give NIfTI converted by "
            "dcm2niix from such an export")
    return notes

"""A multi-echo DICOM series in one folder -> one Volume per echo (dual-echo DSC).

Dual-echo gradient-echo DSC (an alternative to a preload dose for removing T1 leakage, 2020 consensus) is often
exported as ONE series whose images alternate EchoTime (and EchoNumbers). :func:`.dicom.read_dicom_series` refuses
such a series (one Volume cannot hold two echoes); :func:`read_dicom_echoes` splits its images by EchoTime and reads
each echo with the reader's own rules (frames, frame times, geometry, intensities: :mod:`.dicom`), then checks that
the echoes share one grid and one frame count. `bbbanomaly dsc FOLDER` uses it: the first echo is the series, the
second its ``second_echo``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.volume import Volume
from ._common import check_geometry, check_image_data
from .dicom import _itk_warnings_off, _native_stderr_held, _series_images, _volume
from .dicom_frames import _column, _first_name
from .timing import override_times

#: EchoTime values [ms] closer than this are one echo (headers rounded differently from image to image).
ECHO_TIME_TOL_MS = 1e-3


def read_dicom_echoes(directory, series_uid: str | None = None) -> list[Volume]:
    """Read one DICOM series from a folder as one Volume per echo time, shortest echo first (a single-echo
    series gives one Volume, the same as :func:`.dicom.read_dicom_series`). Each Volume's
    ``acquisition.echo_time`` is its own echo's; ``acquisition.extra["echo"]`` says which echo it is."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"DICOM folder '{directory}' not found; give the folder that holds the series' files")
    with _itk_warnings_off(), _native_stderr_held():
        series_uid, (files, headers, spacings, pixel_ids), notes = _series_images(directory, series_uid)
        echo = _column(headers, "echo_time")
        if np.unique(echo[np.isfinite(echo)]).size <= 1:
            return [_volume(directory, series_uid, files, headers, spacings, pixel_ids, notes)]
        if not np.all(np.isfinite(echo)):
            missing = [files[i] for i in np.flatnonzero(~np.isfinite(echo))]
            raise InputError(f"the series in '{directory}' has several echo times but {len(missing)} of its images "
                             f"(e.g. '{_first_name(missing)}') have no EchoTime: they cannot be given to an echo; "
                             "export the series again with its headers, or split it into one folder per echo")
        values = np.unique(np.round(echo / ECHO_TIME_TOL_MS) * ECHO_TIME_TOL_MS)
        volumes = []
        for n, value in enumerate(values):
            ix = np.flatnonzero(np.abs(echo - value) <= ECHO_TIME_TOL_MS)
            volume = _volume(directory, series_uid, *([x[i] for i in ix] for x in (files, headers, spacings,
                                                                                     pixel_ids)), notes)
            volume.acquisition.extra["echo"] = f"echo {n + 1} of {values.size}, EchoTime {value:g} ms"
            volumes.append(volume)
    first = volumes[0]
    for n, volume in enumerate(volumes[1:], start=2):
        if volume.shape != first.shape or not first.same_grid(volume):
            raise InputError(f"the echoes of the series in '{directory}' are not on one grid (echo 1: "
                             f"{first.shape}, echo {n}: {volume.shape}, or other slice positions): some images of an "
                             "echo are missing or belong to another acquisition; check that the export is complete")
    return volumes


def read_echoes(path, *, times=None, frame_interval: float | None = None) -> list[Volume]:
    """:func:`read_dicom_echoes` with what :func:`..read_volume` does after reading (voxel and geometry checks,
    ``times``/``frame_interval`` applied to every echo)."""
    volumes = read_dicom_echoes(path)
    for volume in volumes:
        check_image_data(volume.data, str(path))
        check_geometry(volume.affine, str(path))
    return [override_times(v, times, frame_interval, str(path)) for v in volumes]

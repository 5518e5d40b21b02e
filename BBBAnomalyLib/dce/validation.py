"""Checks of DCE inputs that turn bad data into clear errors (what is wrong, and how to fix it)."""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..io.timing import check_dynamic_timing, missing_times_message
from ..core.volume import Volume

#: Fewer frames than this cannot hold a baseline, an uptake and a wash-out phase.
MIN_FRAMES = 8


def check_series(series: Volume, params=None) -> None:
    """A 4D series with plausible frame times; with ``params``, frame settings that fit the series.
    Checked before any computation, so a wrong number costs nothing (bounded work, issue 12)."""
    if not isinstance(series, Volume):
        raise InputError(f"the DCE series must be a Volume, got {type(series).__name__}")
    if not series.is_4d:
        raise InputError(f"the DCE series is 3D {series.data.shape}; DCE needs a 4D dynamic series (x, y, z, time). "
                         "Did you pick a single frame or a map?")
    if series.n_frames < MIN_FRAMES:
        raise InputError(f"the DCE series has {series.n_frames} frames; at least {MIN_FRAMES} are needed "
                         "(pre-contrast baseline, uptake and wash-out)")
    if series.times is None:
        raise InputError(missing_times_message(series, "the DCE series"))
    if np.any(np.diff(series.times) <= 0):
        raise InputError("the frame times of the DCE series are not strictly increasing; check --times "
                         "(one time per frame, in seconds, in acquisition order)")
    if np.iscomplexobj(series.data) or series.data.dtype.kind not in "biuf":
        raise InputError(f"the DCE series holds {series.data.dtype} values; DCE needs real magnitude images "
                         "(save abs())")
    check_dynamic_timing(series.times, "the frame times of the DCE series")
    if params is not None and params.baseline_frames is not None and params.baseline_frames > series.n_frames - 4:
        left = max(series.n_frames - params.baseline_frames, 0)
        raise InputError(f"--baseline-frames {params.baseline_frames} leaves {left} "
                         f"of the series' {series.n_frames} frames after the baseline; at least 4 post-contrast frames "
                         f"are needed (give at most {series.n_frames - 4})")


def check_t10_map(t10: Volume, series: Volume, warnings: list[str] | None = None) -> np.ndarray:
    """The T10 map as an array on the series grid, in seconds.

    A map on another grid (e.g. the T1 of a VFA series acquired at another resolution or field of view) is read at
    the series' voxels from its measured (positive, finite) voxels (core.resampling), with a note in ``warnings``;
    series voxels it does not cover are NaN, which check_t10_values refuses where they are analysed."""
    if not isinstance(t10, Volume):
        raise InputError(f"the T10 map must be a Volume, got {type(t10).__name__}")
    data = t10.data[..., 0] if t10.data.ndim == 4 and t10.data.shape[3] == 1 else t10.data
    if data.ndim != 3:
        raise InputError(f"the T10 map must be 3D; got shape {t10.data.shape}")
    if series.same_grid(Volume(data, t10.affine)):
        return np.asarray(data, dtype=np.float64)
    from ..core.resampling import measured_at
    from ..io._common import describe_grids

    grids = describe_grids(Volume(data, t10.affine), series)
    resampled = measured_at(Volume(np.asarray(data, np.float64), t10.affine), series.affine,
                            np.indices(series.spatial_shape).reshape(3, -1).T)
    if not resampled.covered.any():
        raise InputError(f"the T10 map does not overlap the DCE series ({grids}); give the T10 map of this "
                         "patient's session (check both files' orientation)")
    if warnings is not None:
        filled = f"; {resampled.filled} edge voxels took the nearest measured value" if resampled.filled else ""
        warnings.append(f"the T10 map is not on the DCE series grid ({grids}) and was resampled onto it (trilinear, "
                        f"from its measured voxels only{filled}); its partial volume at tissue edges carries into "
                        "the concentrations there")
    return resampled.values.reshape(series.spatial_shape)


def check_t10_values(values: np.ndarray) -> None:
    """T10 inside the analysed voxels: finite, positive, in seconds."""
    if not np.isfinite(values).all() or np.any(values <= 0):
        bad = int((~np.isfinite(values) | (values <= 0)).sum())
        if np.isnan(values).any():  # check_t10_map's mark for voxels a map on another grid does not cover
            raise InputError(f"{int(np.isnan(values).sum())} analysed voxels lie outside the T10 map's field of "
                             "view (or it has NaN there); give --mask with the voxels it covers, or a T10 map "
                             "covering the brain")
        raise InputError(f"the T10 map has {bad} zero, negative or non-finite values inside the brain mask; "
                         "fill them (e.g. with 1.4 s) or exclude those voxels with --mask")
    if np.median(values) > 20:
        raise InputError(f"the T10 map's median is {np.median(values):.0f}: it looks like milliseconds; "
                         "give T10 in seconds (divide the map by 1000)")


def check_masks_for_input(series: Volume, masks: dict, mode: str, params) -> None:
    """Masks the input needs, checked before any voxel is converted (``masks`` as run_dce reads them: "mask",
    "aif-mask", ...; ``mode``: 'concentration', 'spgr' or 'relative').

    * Concentration input (mM) has no signal level that separates brain from background (the background is 0 mM
      like unenhanced tissue, vessels are far above both): an automatic mask split vessels from tissue, so --mask
      is required, as for DSC's ΔR2* input.
    * An AIF mask (not a search region, which leaves its signal-free voxels out) whose voxels have no signal lies
      outside the imaged anatomy: said so, rather than as analysed voxels with a zero pre-contrast signal."""
    if mode == "concentration":
        if masks.get("mask") is None:
            raise InputError("concentration input (mM) has no signal level that separates brain from background, so "
                             "no automatic brain mask is made: give the brain mask with --mask")
        return
    arterial = masks.get("aif-mask")
    if arterial is None or params.aif_region or series.data is None:
        return
    silent = ~(np.asarray(series.data[arterial]) > 0).any(axis=1)  # no positive sample in any frame
    if silent.any():
        where = ("its voxels have no signal" if silent.all() else
                 f"{int(silent.sum())} of its {silent.size} voxels have no signal")
        raise InputError(f"the AIF mask lies outside the imaged anatomy: {where}. Draw it on an artery inside the head "
                         "(e.g. the MCA or ICA), on the series grid, or use --aif auto or --population-aif parker")

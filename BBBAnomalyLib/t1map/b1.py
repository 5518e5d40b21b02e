"""The B1 (relative flip-angle) map of a VFA fit: checked, brought onto the VFA grid, in actual/nominal units.

B1 maps are usually acquired on a coarser grid than the VFA series (e.g. Siemens' tfl_b1map at 4-8 mm, with its own
field of view) and are 0 outside the head. A smooth field is resampled here rather than refused: each VFA voxel takes
the trilinear average of the B1 map's *measured* voxels around it (normalised convolution: the map's zero background
does not pull the head's edge down), placed by both files' affines.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..core.resampling import measured_at
from ..core.volume import Volume

#: A resampled B1 value needs measured voxels to carry at least this share of the trilinear weights; below it the
#: voxel lies outside the map's field of view or in its background (core.resampling).
MIN_MEASURED_WEIGHT = 0.25
#: ... and such a voxel takes its nearest measured B1 value when that lies within this distance [mm] (or one B1 voxel).
NEAREST_MM = 10.0


def b1_volume(b1, signals: Volume) -> Volume:
    """``b1`` (a Volume, or an array on the series grid) as a 3D Volume; one-line errors for anything else."""
    if not isinstance(b1, Volume):
        # an array on the series grid, as masks are taken (an array was an AttributeError: 'affine')
        b1 = np.asarray(b1)
        if b1.shape[:3] != signals.spatial_shape:
            raise InputError(f"the B1 map has shape {b1.shape} but the VFA grid is {signals.spatial_shape}; give a "
                             "Volume or an array on the VFA grid")
        b1 = Volume(b1, signals.affine)
    if b1.acquisition.extra.get("intensity_scaling") == "philips_precise":
        # a map's display value is its unit (percent); dividing it by RS*SS (io.dicom_scaling) made it another number
        raise InputError("the B1 map is a Philips DICOM series that reads as ordinary images (its ImageType names no "
                         "map), so it was read as precise values, not in its unit; give the map converted with "
                         "dcm2niix -p n (display values), or as NIfTI/NRRD in actual/nominal or percent")
    shape = tuple(b1.data.shape)
    # Only a single-volume 4D file is a 3D map: taking frame 0 of any 4D file let the VFA series
    # itself pass as a B1 map ("looked like percent", T1 10x off, exit 0).
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise InputError(f"the B1 map has shape {shape}; it must be one 3D map of the relative flip angle "
                         "(actual/nominal, about 1) on the VFA grid. Was the VFA series or a multi-volume B1 "
                         "acquisition given as --b1?")
    data = np.asarray(b1.data[..., 0] if len(shape) == 4 else b1.data, dtype=np.float64)
    return Volume(data, np.asarray(b1.affine, dtype=np.float64))


def on_vfa_grid(b1: Volume, signals: Volume, inside: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(B1 values at the ``inside`` voxels of the VFA grid, a note when it was resampled, else None)."""
    if signals.same_grid(b1):
        return b1.data[inside], None
    measured = np.isfinite(b1.data) & (b1.data > 0)
    if not measured.any():
        raise InputError("the B1 map has no positive value; give a relative flip-angle map (actual/nominal, about 1)")
    resampled = measured_at(b1, signals.affine, np.argwhere(inside), measured, NEAREST_MM, MIN_MEASURED_WEIGHT)
    if not resampled.covered.all():
        raise InputError(f"the B1 map (shape {b1.data.shape}) has no measured value near "
                         f"{int((~resampled.covered).sum())} of the {inside.sum()} voxels fitted: its field of view or "
                         "its head mask is smaller than the VFA series'; give --mask with the voxels it covers, or a B1 "
                         "map covering the head")
    filled = resampled.filled
    note = (f"the B1 map (shape {list(b1.data.shape)}, {'x'.join(f'{v:.3g}' for v in resampled.voxel_mm)} mm) is not "
            "on the VFA grid and was resampled onto it (trilinear, from its measured voxels only"
            + (f"; {filled} edge voxels took the nearest measured value" if filled else "") + ")")
    return resampled.values, note


def relative_b1(values: np.ndarray, warnings: list[str]) -> np.ndarray:
    """The map's values in actual/nominal: a percent map is recognised; anything else is refused in one line."""
    if not np.isfinite(values).all() or np.any(values <= 0):
        raise InputError("the B1 map has zero, negative or non-finite values inside the mask; fill them "
                         "(e.g. with 1) or exclude those voxels with --mask")
    median = float(np.median(values))
    if median > 10:  # a percent map (100 = nominal)
        values = values / 100.0
        warnings.append("the B1 map looked like percent (median > 10) and was divided by 100")
    # Neither about 1 nor about 100 (a map of angles in degrees, a scanner's raw units, another
    # image): scaling every flip angle by it would give T1 maps that are wrong by that factor.
    if not 0.2 <= float(np.median(values)) <= 3:
        siemens = (" (a Siemens tfl_b1map holds the measured angle x 10 for a nominal 80 degrees: divide it by 800)"
                   if 400 <= median <= 1600 else "")
        raise InputError(f"the B1 map's median inside the mask is {median:.3g}: neither a relative flip-angle map "
                         "(actual/nominal, about 1) nor one in percent (about 100); convert it to actual/nominal "
                         f"(e.g. divide a map of measured angles by the nominal angle){siemens}")
    return values

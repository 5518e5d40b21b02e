"""N4 intensity bias-field correction of the T1 and the FLAIR inside the brain (SimpleITK).

A smooth multiplicative field (coil sensitivity; many clinical scans arrive uncorrected) is not removed by the
histogram-mode normalisation, and the networks read it as anatomy: a ±15 % field dropped the anomaly map's tumour
AUC on TCGA-FG-6692 from 0.86 to 0.68 (docs/reliability.md). N4 (Tustison et al., IEEE TMI 2010) fits the log
field as a B-spline inside the brain. For speed it is fitted on the brain's bounding box shrunk to about
``FIT_SPACING_MM`` voxels (the field is smooth: a coarse grid carries it), then evaluated at full resolution with
``GetLogBiasFieldAsImage`` and divided out. The field is scaled to a geometric mean of 1 inside the brain, so the
corrected image keeps the scanner's intensity scale; voxels outside the brain are left as they were (the
applicability checks read them). The caller's arrays are never modified.

Off by default (``T1FlairParameters.bias_correct = "none"``): on the real cases N4's field also follows the tumour
and its edema (its log field 0.24-0.37 higher there on the FLAIR than in the rest of the brain), which lowered the
anomaly map's tumour AUC more than a ±15 % field does (TCGA-FG-6692 0.86 -> 0.45; scripts/t1flair_bias_field.py).
"""

from __future__ import annotations

import time

import numpy as np

METHODS = ("n4", "none")
#: Voxel size (mm) of the grid the field is fitted on: the brain's box shrunk by round(FIT_SPACING_MM / voxel)
#: per axis (4 on a 1 mm grid). Chosen by measurement (scripts/t1flair_bias_field.py --fit-settings).
FIT_SPACING_MM = 4.0
#: N4's iterations per fitting level (4 levels: the B-spline mesh doubles at each; ITK's default).
ITERATIONS = (50, 50, 50, 50)
#: N4's convergence threshold (ITK's default 0.001; ANTs' default 0: every iteration is run).
CONVERGENCE = 0.001
#: Above this fraction of negative brain voxels an image is zero-centred (z-scored): N4 needs a positive signal.
#: The same threshold as the automatic brain mask's (preprocessing.SIGNED_FRACTION).
SIGNED_FRACTION = 0.1
#: Margin (voxels) of the brain's box, so that the B-spline's support covers the brain's edge.
MARGIN = 2


def shrink_factors(voxel_mm, fit_spacing_mm: float = FIT_SPACING_MM) -> list[int]:
    """Per array axis: the whole number of voxels that makes about ``fit_spacing_mm`` (at least 1)."""
    return [max(1, int(round(fit_spacing_mm / float(v)))) for v in voxel_mm]


def n4_log_field(data: np.ndarray, fit_mask: np.ndarray, voxel_mm, fit_spacing_mm: float = FIT_SPACING_MM,
                 iterations=ITERATIONS, threads: int | None = None, convergence: float = CONVERGENCE) -> np.ndarray:
    """N4's log bias field of ``data`` (a 3D array) fitted on ``fit_mask``, at every voxel of ``data``'s grid
    (float32; its offset is arbitrary). ``voxel_mm``: the array axes' voxel sizes."""
    import SimpleITK as sitk

    # SimpleITK reads numpy arrays as (z, y, x): the spacing is given in that reversed order
    image = sitk.GetImageFromArray(np.ascontiguousarray(data, np.float32))
    image.SetSpacing([float(v) for v in voxel_mm][::-1])
    mask = sitk.GetImageFromArray(np.ascontiguousarray(fit_mask, np.uint8))
    mask.CopyInformation(image)
    factors = shrink_factors(voxel_mm, fit_spacing_mm)[::-1]
    small, small_mask = sitk.Shrink(image, factors), sitk.Shrink(mask, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetConvergenceThreshold(float(convergence))
    if threads:
        n4.SetNumberOfThreads(int(threads))
    n4.Execute(small, small_mask)
    # the fitted B-spline evaluated on the full-resolution grid (same physical space as the shrunk one)
    return sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)).astype(np.float32)


def brain_box(brain: np.ndarray, margin: int = MARGIN) -> tuple[slice, ...]:
    """The brain's bounding box with ``margin`` voxels, clipped to the array."""
    coords = np.argwhere(brain)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    return tuple(slice(max(0, int(a) - margin), min(int(n), int(b) + margin + 1))
                 for a, b, n in zip(lo, hi, brain.shape))


def correct(data: np.ndarray, brain: np.ndarray, voxel_mm, name: str, warnings: list[str],
            fit_spacing_mm: float = FIT_SPACING_MM, iterations=ITERATIONS, threads: int | None = None):
    """(corrected float32 array — a new one, ``data`` is not modified —, report dict) for one image.

    The field is fitted on the brain's voxels with a positive signal and applied to every brain voxel; an
    image that is zero-centred (z-scored) inside the brain is returned unchanged, with a warning."""
    started = time.perf_counter()
    data = np.asarray(data)
    brain = np.asarray(brain, bool)
    if not brain.any():  # nothing to fit: the normalisation refuses an empty mask with its own message
        return np.array(data, np.float32), {"method": "none", "reason": "empty brain mask", "seconds": 0.0}
    values = data[brain]
    negative = float(np.mean(values < 0)) if values.size else 0.0
    if negative > SIGNED_FRACTION:
        warnings.append(f"the {name} is zero-centred ({100 * negative:.0f} % of its brain voxels negative, e.g. "
                        "z-scored): N4 bias correction needs the positive signal and was not applied; bias-correct "
                        "before z-scoring")
        return np.array(data, np.float32), {"method": "none", "reason": "zero-centred image",
                                            "seconds": round(time.perf_counter() - started, 3)}
    box = brain_box(brain)
    in_box = brain[box]
    crop = np.asarray(data[box], np.float32)
    fit_mask = in_box & (crop > 0)
    log_field = n4_log_field(crop, fit_mask, voxel_mm, fit_spacing_mm, iterations, threads)[in_box]
    log_field -= np.float32(log_field[fit_mask[in_box]].mean())  # geometric mean 1 inside the brain: scale kept
    field = np.exp(log_field)
    corrected = np.array(data, np.float32)  # a new array: np.asarray of a float32 input would be the input itself
    corrected_box = corrected[box]  # a view into the new array
    corrected_box[in_box] = crop[in_box] / field
    p1, p99 = np.percentile(field, [1, 99])
    info = {"method": "n4", "field_min": float(field.min()), "field_max": float(field.max()),
            "field_p1": float(p1), "field_p99": float(p99),
            "shrink": shrink_factors(voxel_mm, fit_spacing_mm), "iterations": [int(i) for i in iterations],
            "seconds": round(time.perf_counter() - started, 3)}
    return corrected, info


def correct_pair(t1: np.ndarray, flair: np.ndarray, brain: np.ndarray, voxel_mm, method: str, warnings: list[str],
                 threads: int | None = None):
    """(t1, flair, report) with ``method`` "n4" (each image corrected on its own: their fields differ) or
    "none" (the arrays returned as given). report["bias_field"]: what was done, each field's range inside the
    brain (geometric mean 1) and the time."""
    if method == "none":
        return t1, flair, {"method": "none"}
    if method != "n4":
        raise ValueError(f"bias correction {method!r} is not one of {', '.join(METHODS)}")
    t1_out, t1_info = correct(t1, brain, voxel_mm, "T1", warnings, threads=threads)
    flair_out, flair_info = correct(flair, brain, voxel_mm, "FLAIR", warnings, threads=threads)
    return t1_out, flair_out, {"method": "n4", "t1": t1_info, "flair": flair_info,
                               "note": "N4 inside the brain mask, fitted on a shrunk grid, applied at full resolution; "
                                       "field = the multiplicative field divided out (geometric mean 1 in the brain)"}

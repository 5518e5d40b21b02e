"""N4 intensity bias-field correction of the T1 and the FLAIR inside the brain (SimpleITK).

A smooth multiplicative field (coil sensitivity; many clinical scans arrive uncorrected) is not removed by the
histogram-mode normalisation, and the networks read it as anatomy: a ±15 % field dropped the anomaly map's tumour
AUC on TCGA-FG-6692 from 0.86 to 0.68 (docs/reliability.md). N4 (Tustison et al., IEEE TMI 2010) fits the log
field as a B-spline inside the brain. For speed it is fitted on the brain's bounding box shrunk to about
``FIT_SPACING_MM`` voxels (the field is smooth: a coarse grid carries it), then evaluated over the shrunk grid's
span, interpolated to full resolution (``evaluate_log_field``) and divided out. The field is scaled to a geometric
mean of 1 inside the brain, so the corrected image keeps the scanner's intensity scale; voxels outside the brain
are left as they were (the applicability checks read them). The caller's arrays are never modified. N4's fit is
88-94 % of the step's time (TCGA-FG-6692), the field's evaluation 2-4 %.

Off by default (``T1FlairParameters.bias_correct = "none"``): on the real cases N4's field also follows the tumour
and its edema (its log field 0.24-0.37 higher there on the FLAIR than in the rest of the brain), which lowered the
anomaly map's tumour AUC more than a ±15 % field does (TCGA-FG-6692 0.86 -> 0.45; scripts/t1flair_bias_field.py).
"n4-lesion-out" (session 22) fits the field with the FLAIR-hyperintense lesion left out (``lesion_estimate``: a
first, stiffer N4 pass, then a robust threshold, grown by 8 mm); the field is still divided out everywhere. It
keeps the anomaly AUC (0.86 -> 0.85; TCGA-DU-7294 0.82 -> 0.97) but still lowers the enhancement AUC (mostly
through the T1's field), so it is not the default either (docs/reliability.md).
"""

from __future__ import annotations

import time

import numpy as np

METHODS = ("n4", "none", "n4-lesion-out")
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
#: "n4-lesion-out": the FLAIR-hyperintense lesion is left out of the fit (the field is still divided out there).
#: Found on a first, coarse N4 pass (its first FIRST_PASS_LEVELS levels: too stiff to follow the lesion) as the
#: brain's voxels above the corrected FLAIR's median + LESION_K x its robust SD (1.4826 MAD), cleaned of specks
#: and grown by LESION_DILATION_MM so that the edema's fainter rim is left out too.
FIRST_PASS_LEVELS = 2
LESION_K = 3.0
LESION_DILATION_MM = 8.0
#: Left-out fraction of the brain beyond which the remaining fit would be mostly extrapolation: the fit then keeps
#: the whole brain (with a warning) rather than rest on a sliver.
MAX_EXCLUDED_FRACTION = 0.4


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
    return evaluate_log_field(n4, image, small, factors)


def evaluate_log_field(n4, image, small, factors) -> np.ndarray:
    """The log field ``n4`` fitted on ``small`` (``image`` shrunk by ``factors``, SimpleITK's x, y, z order) at
    every voxel of ``image``, as a (z, y, x) float32 array.

    ITK's ``GetLogBiasFieldAsImage(reference)`` lays the B-spline over the reference grid's first-to-last voxel
    centres, whatever their physical position. The shrunk grid's centres span a little less than the image's (the
    remainder voxels and half a block at each end), so evaluating on the image itself (sessions 20-22) stretched
    the fitted field by up to 4 % and shifted it: on TCGA-FG-6692 it differed from the field N4 fitted by up to
    0.054 log units (p99 0.028) in the brain. Here the field is evaluated on a grid spanning exactly the shrunk
    grid's centres (at half its spacing, where the factor allows: the field is a cubic B-spline with knots several
    blocks apart), then linearly interpolated onto the image; beyond the outermost centres (at most 1-2 fit voxels
    at the box's edge, inside the box's margin) the nearest value is kept."""
    import SimpleITK as sitk

    steps = [max([d for d in range(1, k // 2 + 1) if k % d == 0] or [1]) for k in factors]
    fine = sitk.Image([(n - 1) * (k // s) + 1 for n, k, s in zip(small.GetSize(), factors, steps)],
                      sitk.sitkFloat32)
    fine.SetOrigin(small.GetOrigin())
    fine.SetSpacing([v * s for v, s in zip(image.GetSpacing(), steps)])
    fine.SetDirection(small.GetDirection())
    resample = sitk.ResampleImageFilter()
    resample.SetReferenceImage(image)
    resample.SetInterpolator(sitk.sitkLinear)
    resample.SetUseNearestNeighborExtrapolator(True)
    resample.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resample.Execute(n4.GetLogBiasFieldAsImage(fine))).astype(np.float32)


def brain_box(brain: np.ndarray, margin: int = MARGIN) -> tuple[slice, ...]:
    """The brain's bounding box with ``margin`` voxels, clipped to the array."""
    coords = np.argwhere(brain)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    return tuple(slice(max(0, int(a) - margin), min(int(n), int(b) + margin + 1))
                 for a, b, n in zip(lo, hi, brain.shape))


def correct(data: np.ndarray, brain: np.ndarray, voxel_mm, name: str, warnings: list[str],
            fit_spacing_mm: float = FIT_SPACING_MM, iterations=ITERATIONS, threads: int | None = None,
            exclude: np.ndarray | None = None):
    """(corrected float32 array — a new one, ``data`` is not modified —, report dict) for one image.

    The field is fitted on the brain's voxels with a positive signal, less ``exclude`` (e.g. the lesion: a field
    fitted there follows the lesion and divides its contrast out), and applied to every brain voxel; an
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
    if exclude is not None:
        fit_mask &= ~np.asarray(exclude, bool)[box]
    log_field = n4_log_field(crop, fit_mask, voxel_mm, fit_spacing_mm, iterations, threads)[in_box]
    log_field -= np.float32(log_field[fit_mask[in_box]].mean())  # geometric mean 1 inside the brain: scale kept
    field = np.exp(log_field)
    corrected = np.array(data, np.float32)  # a new array: np.asarray of a float32 input would be the input itself
    corrected_box = corrected[box]  # a view into the new array
    corrected_box[in_box] = crop[in_box] / field
    p1, p99 = np.percentile(field, [1, 99])
    info = {"method": "n4" if exclude is None else "n4-lesion-out",
            "field_min": float(field.min()), "field_max": float(field.max()),
            "field_p1": float(p1), "field_p99": float(p99),
            "shrink": shrink_factors(voxel_mm, fit_spacing_mm), "iterations": [int(i) for i in iterations],
            "fit_voxels": int(fit_mask.sum()), "seconds": round(time.perf_counter() - started, 3)}
    return corrected, info


def lesion_estimate(flair: np.ndarray, brain: np.ndarray, voxel_mm, threads: int | None = None,
                    k: float | None = None, dilation_mm: float | None = None,
                    fit_spacing_mm: float = FIT_SPACING_MM):
    """(mask, report) of the FLAIR-hyperintense lesion, to be left out of N4's fit; found without the networks.

    A first N4 pass of FIRST_PASS_LEVELS levels (a field stiff enough not to follow a lesion, so the hyperintensity
    stays) takes the coarse bias out; the brain's voxels above median + k x 1.4826 MAD of that corrected FLAIR,
    opened once (noise specks out), are dilated by ``dilation_mm`` (a ball, in mm on each axis)."""
    from scipy import ndimage

    k = LESION_K if k is None else float(k)
    dilation_mm = LESION_DILATION_MM if dilation_mm is None else float(dilation_mm)
    box = brain_box(brain)
    in_box = brain[box]
    crop = np.asarray(flair[box], np.float32)
    fit_mask = in_box & (crop > 0)
    first = n4_log_field(crop, fit_mask, voxel_mm, fit_spacing_mm, ITERATIONS[:FIRST_PASS_LEVELS], threads)
    flat = np.where(fit_mask, crop / np.exp(first), 0.0)
    values = flat[fit_mask]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    threshold = median + k * spread
    bright = ndimage.binary_opening(fit_mask & (flat > threshold))
    # dilation by a ball in mm, as a distance transform (a large structuring element is ~20x slower)
    grown = (ndimage.distance_transform_edt(~bright, sampling=[float(v) for v in voxel_mm]) <= dilation_mm) & in_box \
        if bright.any() else bright
    mask = np.zeros(brain.shape, bool)
    mask[box] = grown
    voxel_ml = float(np.prod(voxel_mm)) / 1000.0
    info = {"source": "FLAIR above the brain's median + k x robust SD after a first N4 pass, dilated",
            "k": float(k), "dilation_mm": float(dilation_mm), "first_pass_levels": FIRST_PASS_LEVELS,
            "threshold_over_median": round(threshold / median, 3) if median > 0 else None,
            "core_ml": round(float(bright.sum()) * voxel_ml, 1),
            "excluded_ml": round(float(grown.sum()) * voxel_ml, 1),
            "excluded_fraction": round(float(grown.sum()) / max(int(in_box.sum()), 1), 4)}
    return mask, info


def correct_pair(t1: np.ndarray, flair: np.ndarray, brain: np.ndarray, voxel_mm, method: str, warnings: list[str],
                 threads: int | None = None, fit_spacing_mm: float = FIT_SPACING_MM):
    """(t1, flair, report) with ``method`` "n4" (each image corrected on its own: their fields differ),
    "n4-lesion-out" (the same, each fit leaving out the FLAIR-hyperintense lesion of ``lesion_estimate``; report's
    lesion_excluded says what was left out) or "none" (the arrays returned as given). report["bias_field"]: what
    was done, each field's range inside the brain (geometric mean 1) and the time."""
    if method == "none":
        return t1, flair, {"method": "none"}
    if method not in METHODS:
        raise ValueError(f"bias correction {method!r} is not one of {', '.join(METHODS)}")
    report = {"method": method}
    exclude = None
    if method == "n4-lesion-out":
        started = time.perf_counter()
        if not np.asarray(brain, bool).any() or float(np.mean(np.asarray(flair)[np.asarray(brain, bool)] < 0)) > \
                SIGNED_FRACTION:
            report["lesion_excluded"] = {"excluded_ml": 0.0, "reason": "no positive FLAIR signal in the brain"}
        else:
            exclude, info = lesion_estimate(flair, brain, voxel_mm, threads=threads, fit_spacing_mm=fit_spacing_mm)
            if info["excluded_fraction"] > MAX_EXCLUDED_FRACTION:
                warnings.append(f"bias correction: {100 * info['excluded_fraction']:.0f} % of the brain looked "
                                "FLAIR-hyperintense, too much to leave out of the N4 fit; the field was fitted on the "
                                "whole brain and may follow the lesion (check report.json's bias_field)")
                info["ignored"] = True
                exclude = None
            info["seconds"] = round(time.perf_counter() - started, 3)
            report["lesion_excluded"] = info
    t1_out, t1_info = correct(t1, brain, voxel_mm, "T1", warnings, fit_spacing_mm, threads=threads, exclude=exclude)
    flair_out, flair_info = correct(flair, brain, voxel_mm, "FLAIR", warnings, fit_spacing_mm, threads=threads,
                                    exclude=exclude)
    report.update({"t1": t1_info, "flair": flair_info,
                   "note": "N4 inside the brain mask" + (" less the FLAIR-hyperintense lesion (lesion_excluded)"
                                                         if exclude is not None else "")
                           + ", fitted on a shrunk grid, applied at full resolution; field = the multiplicative "
                             "field divided out (geometric mean 1 in the brain)"})
    return t1_out, flair_out, report

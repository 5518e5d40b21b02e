"""The FLAIR onto the T1's voxels: by world coordinates, then (``register="rigid"``) a rigid registration.

Every structural map reads the T1 and the FLAIR voxel by voxel, so they must show the same anatomy at each voxel. A
T1 and a FLAIR of one session are not registered: the patient moves between series (typically 1-3 mm and 1-3
degrees), and the files' affines only say where the scanner put each grid. On the real cases a FLAIR moved by 2 mm
and 2 degrees lowered the enhancement map's AUC by up to 0.037 and the tumour segmentation's Dice by 0.05-0.06, 3 mm
and 3 degrees by up to 0.048 and 0.10, with no word (docs/reliability.md; scripts/t1flair_misregistration.py):
the registration_overlap check (Dice of the two brains' signal < 0.85) only trips on gross errors.

``rigid`` (an option, not the default: see parameters.py): the FLAIR placed by world coordinates is registered to
the T1 (core.registration: Mattes mutual information over the brain mask, on the brain's box in blocks of about
``BLOCK_MM``), and the FLAIR is then resampled ONCE from its own voxels through the composed transform (world
mapping and rigid motion), so it is interpolated once, as without registration. ``none`` (the default): the world
resampling alone, with a quick coarse estimate of the misalignment that warns above ``MISALIGNED_MM``. Either way
``report["registration"]`` says what was found. The caller's arrays are never modified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..core.volume import Volume
from .preprocessing import automatic_brain_mask, flair_placement, resample_flair

METHODS = ("rigid", "none")
#: The registration reads block means of about ``BLOCK_MM`` (the T1's voxels averaged ``round(BLOCK_MM / voxel)`` at a
#: time) with a two-level pyramid (``SHRINK``: about 4 then 2 mm): on TCGA-FG-6692 this found the transform of a
#: registration of the full 1 mm grid (ITK pyramid 4/2/1) to 0.3 mm in a third of its time; ITK's own pyramid spent
#: most of its time smoothing and shrinking the full-resolution images.
BLOCK_MM, SHRINK, SMOOTHING_MM, SAMPLING = 2.0, (2, 1), (2.0, 0.0), 0.1
#: The quick estimate under ``register="none"``: the same blocks, one level at about 4 mm, fewer iterations.
QUICK_SHRINK, QUICK_SMOOTHING_MM, QUICK_ITERATIONS = (2,), (2.0,), 100
#: Margin (mm) around the brain's box that the registration sees (the brain's edge against the background).
BOX_MARGIN_MM = 8.0
#: Above this largest displacement in the brain (mm) the motion found is reported as large: beyond the 1-3 mm and
#: 1-3 degrees usual between two series (3 mm and 3 degrees move a brain's edge by up to about 7 mm).
LARGE_MOTION_MM = 10.0
#: Under ``register="none"``: above this estimated largest displacement in the brain (mm) the pair is misaligned. The
#: quick estimate reads 0.7-1.7 mm on the three co-registered real cases (the full registration finds 0.3-2.1 mm: their
#: own residual); moved by up to 2 mm their enhancement AUC changed by at most 0.009 and the tumour Dice by up to
#: 0.037, while from about 3.8 mm (2 mm and 2 degrees) the enhancement AUC fell by up to 0.037 and the Dice by
#: 0.05-0.06 (scripts/t1flair_misregistration.py): 1 mm would warn on two of the three co-registered cases.
MISALIGNED_MM = 2.0
#: Below this extent of the brain mask (mm) along any array axis the pair is not registered: a slab of a few slices
#: leaves the out-of-plane rotations unconstrained (a 10-slice 2 mm slab of the phantom with opposite intensity
#: ramps on the T1 and the FLAIR gave a spurious motion). The coverage check warns below 100 mm.
MIN_EXTENT_MM = 60.0
#: A motion found whose largest displacement in the brain is below this fraction of the T1's smallest voxel is not
#: applied: it is the registration's own noise (0.02-0.03 voxel on an exactly aligned phantom), and applying it
#: would only interpolate the FLAIR (a slight blur) where the files' placement is already right.
NEGLIGIBLE_VOXELS = 0.1


@dataclass
class AlignedFlair:
    """The FLAIR's data on the T1 grid (float32), the T1-index -> FLAIR-index 4x4 matrix it was read
    through, and ``report["registration"]``."""

    data: np.ndarray
    t1_to_flair: np.ndarray
    report: dict


def block_factors(voxel_mm) -> np.ndarray:
    """Voxels averaged per block along each axis: about ``BLOCK_MM`` (at least 1)."""
    return np.maximum(1, np.round(BLOCK_MM / np.asarray(voxel_mm, float)[:3])).astype(int)


def block_mean(data: np.ndarray, factors) -> np.ndarray:
    """Means of ``factors``-sized blocks (the last partial block along an axis is left out)."""
    f = [int(v) for v in factors]
    n = [s // k for s, k in zip(data.shape, f)]
    cut = np.asarray(data, np.float32)[:n[0] * f[0], :n[1] * f[1], :n[2] * f[2]]
    return cut.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5), dtype=np.float32)


def _box(mask: np.ndarray, margin, factors) -> tuple[slice, ...]:
    """The mask's box with ``margin`` voxels, its start and length whole multiples of ``factors``, in the array."""
    coords = np.argwhere(mask)
    lo = np.maximum(0, coords.min(axis=0) - margin) // factors * factors
    hi = np.minimum(mask.shape, coords.max(axis=0) + margin + 1)
    hi = lo + np.maximum(factors, (hi - lo) // factors * factors)
    return tuple(slice(int(a), int(min(b, n))) for a, b, n in zip(lo, hi, mask.shape))


def registration_mask(t1_data: np.ndarray, brain_mask: np.ndarray | None) -> np.ndarray:
    """Where the metric is read: the given brain mask, else the T1's own brain, its nonzero voxels when it is
    skull-stripped (as the automatic mask assumes), else the automatic (Otsu) mask of the T1 alone. Not the
    pipeline's mask of both images' signal: that one is cut by the motion being looked for."""
    if brain_mask is not None:
        return np.asarray(brain_mask, bool)
    t1_data = np.asarray(t1_data)
    if np.count_nonzero(t1_data) <= 0.95 * t1_data.size:
        return t1_data != 0
    return automatic_brain_mask(t1_data, t1_data, [])


def estimate_motion(t1: Volume, flair: Volume, mask: np.ndarray, *, quick=False, threads: int | None = None):
    """The rigid fit (core.registration.RigidFit, in the T1 array's mm coordinates, ``index * voxel``) that maps a
    T1 point to the point of the FLAIR placed by world coordinates that shows the same anatomy, found on the mask's
    box in blocks of about ``BLOCK_MM``; ``quick``: one coarse level."""
    from ..core.registration import RigidFit, register_rigid

    t1_data = np.asarray(t1.data[..., 0] if t1.data.ndim == 4 else t1.data, np.float32)
    flair_data = np.asarray(flair.data[..., 0] if flair.data.ndim == 4 else flair.data, np.float32)
    voxel_mm = np.asarray(t1.voxel_sizes, float)[:3]
    factors = block_factors(voxel_mm)
    box = _box(mask, np.ceil(BOX_MARGIN_MM / voxel_mm).astype(int), factors)
    start = np.array([s.start for s in box], float)
    shape = tuple(s.stop - s.start for s in box)
    # the FLAIR placed by world coordinates on the box's voxels only (the whole grid is resampled once, later)
    to_flair = np.linalg.inv(flair.affine) @ t1.affine
    if t1.same_grid(Volume(flair_data, flair.affine)):
        flair_box = flair_data[box]
    else:
        box_to_flair = to_flair.copy()
        box_to_flair[:3, 3] += to_flair[:3, :3] @ start
        flair_box = resample_flair(flair_data, box_to_flair, shape, threads)
    fixed, moving = block_mean(t1_data[box], factors), block_mean(flair_box, factors)
    region = block_mean(mask[box], factors) > 0.5
    block_mm = voxel_mm * factors
    if quick:
        kwargs = dict(shrink=QUICK_SHRINK, smoothing_mm=QUICK_SMOOTHING_MM, iterations=QUICK_ITERATIONS)
    else:
        kwargs = dict(shrink=SHRINK, smoothing_mm=SMOOTHING_MM)
    fit = register_rigid(fixed, moving, block_mm, region, sampling=SAMPLING, threads=threads, **kwargs)
    # a block's mm coordinate k * block is the T1's (start + k * f + (f - 1) / 2) * voxel: the same rigid motion
    # about a shifted centre
    origin = (start + (factors - 1) / 2.0) * voxel_mm
    return RigidFit(fit.rotation, fit.center + origin, fit.translation, fit.metric, fit.stop)


def describe(fit, affine: np.ndarray, mask: np.ndarray, voxel_mm) -> dict:
    """The motion of a fit in words a user can check: the displacement of the brain's centre in world (scanner) mm,
    the rotation's angle and the largest and mean displacement over the brain."""
    voxel_mm = np.asarray(voxel_mm, float)[:3]
    directions = np.asarray(affine, float)[:3, :3] / voxel_mm  # array-axis mm -> world mm (direction cosines)
    step = max(1, int(round(np.cbrt(mask.sum() / 200_000))))  # every voxel of a 1 mm brain's 8th is plenty
    sub = np.zeros_like(mask)
    sub[::step, ::step, ::step] = mask[::step, ::step, ::step]
    shift = fit.displacement_mm(sub if sub.any() else mask, voxel_mm)
    return {"translation_mm": [round(float(v), 3) for v in directions @ fit.translation],
            "rotation_deg": round(fit.rotation_deg, 3),
            "max_displacement_mm": round(float(shift.max()), 3), "mean_displacement_mm": round(float(shift.mean()), 3)}


def composed_matrix(to_flair: np.ndarray, fit, voxel_mm) -> np.ndarray:
    """T1 index -> FLAIR index through the rigid fit (T1 mm -> the world-resampled FLAIR's mm, i.e. the same T1
    grid) and then the world mapping ``to_flair`` (T1 index -> FLAIR index)."""
    v = np.asarray(voxel_mm, float)[:3]
    rigid = np.eye(4)
    rigid[:3, :3] = (fit.rotation * v[None, :]) / v[:, None]
    rigid[:3, 3] = (fit.center + fit.translation - fit.rotation @ fit.center) / v
    return np.asarray(to_flair, float) @ rigid


def align_flair(t1: Volume, flair: Volume, method: str, brain_mask: np.ndarray | None, warnings: list[str],
                threads: int | None = None) -> AlignedFlair:
    """The FLAIR on the T1 grid, registered (``method`` "rigid") or by world coordinates alone ("none").

    ``brain_mask``: the user's mask on the T1 grid (None: the T1's automatic brain). Warnings go into ``warnings``;
    a failed registration falls back to the world resampling with a warning."""
    if method not in METHODS:
        raise ValueError(f"registration {method!r} is not one of {', '.join(METHODS)}")
    started = time.perf_counter()
    flair_data, to_flair, same = flair_placement(t1, flair, warnings)  # refuses a FLAIR that misses the T1

    def placed():  # the FLAIR by the files' world coordinates alone (as before `register`: not copied if float32)
        if same:
            return np.asarray(flair_data, np.float32)
        return resample_flair(flair_data, to_flair, t1.spatial_shape, threads)

    t1_data = np.asarray(t1.data[..., 0] if t1.data.ndim == 4 else t1.data)
    voxel_mm = t1.voxel_sizes[:3]
    mask = registration_mask(t1_data, brain_mask)
    report = {"method": method}
    extent = (np.ptp(np.argwhere(mask), axis=0) + 1) * np.asarray(voxel_mm, float) if mask.any() else np.zeros(3)
    if extent.min() < MIN_EXTENT_MM:
        if method == "rigid":
            warnings.append(f"the FLAIR was not registered to the T1: the brain spans only {extent.min():.0f} mm along "
                            f"one axis, too little for a rigid registration (at least {MIN_EXTENT_MM:g} mm); it was "
                            "used as placed by the files' coordinates: check that the two are aligned")
        report.update(method="none", skipped=f"brain extent {extent.min():.0f} mm < {MIN_EXTENT_MM:g} mm",
                      seconds=round(time.perf_counter() - started, 3))
        return AlignedFlair(placed(), to_flair, report)
    try:
        fit = estimate_motion(t1, flair, mask, quick=method == "none", threads=threads)
    except RuntimeError as error:  # ITK: too few samples inside both images (a thin slab, an empty FLAIR)
        first_line = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
        warnings.append(f"the rigid registration of the FLAIR to the T1 failed ({first_line}); the FLAIR was used as "
                        "placed by the files' coordinates: check that the two are aligned")
        report.update(method="none", failed=first_line, seconds=round(time.perf_counter() - started, 3))
        return AlignedFlair(placed(), to_flair, report)
    motion = describe(fit, t1.affine, mask, voxel_mm)
    if method == "none":
        report["estimate"] = dict(motion, note="a quick rigid estimate (one coarse level); the FLAIR was used as "
                                               "placed by the files' coordinates")
        if motion["max_displacement_mm"] > MISALIGNED_MM:
            warnings.append(f"the FLAIR and the T1 look misaligned by up to {motion['max_displacement_mm']:.1f} mm in "
                            f"the brain (a quick rigid estimate: {motion['rotation_deg']:.1f} degrees, more than "
                            f"{MISALIGNED_MM:g} mm): the maps read the two voxel by voxel, and a shifted FLAIR lowers "
                            "the anomaly map's tumour contrast and adds false positives at the ventricles and the "
                            "cortex; use --register rigid or register them first")
        report["seconds"] = round(time.perf_counter() - started, 3)
        return AlignedFlair(placed(), to_flair, report)
    report.update(motion)
    if motion["max_displacement_mm"] < NEGLIGIBLE_VOXELS * float(np.min(voxel_mm)):
        report.update(applied=False, note=f"rigid (Mattes mutual information inside the brain mask): the motion found "
                                          f"is below {NEGLIGIBLE_VOXELS:g} voxel, the FLAIR was used as placed by the "
                                          "files' coordinates", seconds=round(time.perf_counter() - started, 3))
        return AlignedFlair(placed(), to_flair, report)
    # read once from the FLAIR's own voxels through the world mapping and the motion: one interpolation
    matrix = composed_matrix(to_flair, fit, voxel_mm)
    data = resample_flair(flair_data, matrix, t1.spatial_shape, threads)
    report["applied"] = True
    report.update(metric=round(fit.metric, 5), optimiser_stop=fit.stop,
                  note="rigid (Mattes mutual information inside the brain mask); translation_mm: where the FLAIR "
                       "showed the brain's centre minus where the T1 does (world mm, the T1 affine's axes); the FLAIR "
                       "was resampled once from its own voxels through the world mapping and this motion")
    if motion["max_displacement_mm"] > LARGE_MOTION_MM:
        warnings.append(f"the FLAIR was up to {motion['max_displacement_mm']:.1f} mm ({motion['rotation_deg']:.1f} "
                        f"degrees) away from the T1 and was registered to it (rigid): more than {LARGE_MOTION_MM:g} mm "
                        "is beyond the usual motion between two series; check the alignment (overlay the FLAIR on "
                        "the T1) before trusting the maps")
    report["seconds"] = round(time.perf_counter() - started, 3)
    return AlignedFlair(data, matrix, report)

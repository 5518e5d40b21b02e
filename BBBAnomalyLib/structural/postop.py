"""Post-operative anatomy that the T1/FLAIR maps cannot read: intrinsic T1 hyperintensity and a resection cavity.

Most glioma follow-up scans are post-operative. Two things there break what the learned maps assume:

* **Intrinsic T1 hyperintensity** (methaemoglobin of blood products at a resection margin, some haemostatic
  material, also a bleed into a tumour): bright on the NON-contrast T1. A radiologist compares pre- and post-contrast
  T1 to rule it out; the synthetic T1Gd is made from the non-contrast T1 alone, so where the enhancement map fires
  on such voxels it cannot be read as BBB disruption. Found from the images alone: T1 at least the
  ``T1_WM_PERCENTILE``-th percentile of white matter (the brightest of three k-means classes of the brain's T1,
  FLAIR-hyperintense lesion left out) AND FLAIR above its upper Tukey fence (lesion-bright: normal white matter and
  the T1-dark oedema are each bright on only one of the two), deeper than ``SURFACE_MM`` below the brain's surface
  (the skull-strip's leftover dura, marrow and fat are bright on both), in connected pieces of at least
  ``MIN_BRIGHT_ML``. The unmodified real cases have their few such voxels at the surface only (docs/reliability.md,
  session 23).
* **A resection cavity**: fluid, CSF-like on the T1 and FLAIR (below the CSF/grey-matter midpoint on the T1 and below
  the midpoint of the CSF's FLAIR and the brain's median FLAIR: necrosis, as dark on the T1, is not FLAIR-suppressed), a
  connected piece of at least ``MIN_CAVITY_ML`` whose ``SHELL_MM`` surrounding
  shell is mostly FLAIR-abnormal (oedema, gliosis, residual tumour; the ventricles and sulci are lined by normal
  tissue). A cavity that opens into a ventricle joins it and is not found; a protein- or blood-filled cavity is
  FLAIR-bright and reads as lesion.

:func:`find_post_operative` runs with the applicability checks (image-only); :func:`post_operative_report` after
the enhancement map, where it compares the two. Nothing here changes a map: it adds checks, warnings and
``report["post_operative"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

#: T1 at or above this percentile of the white-matter class = T1-hyperintense (the inserted methaemoglobin rims of
#: the session 23 audit were at the 99th).
T1_WM_PERCENTILE = 95.0
#: Voxels closer than this to the brain mask's surface are not counted (skull-strip leftovers, bright on both).
SURFACE_MM = 3.0
#: Smallest connected T1-hyperintense piece counted (ml).
MIN_BRIGHT_ML = 0.1
#: Enhancement on T1-hyperintense voxels (or T1-hyperintense voxels in the tumour ROI) at or above this (ml) is said.
MIN_OVERLAP_ML = 0.05
#: Smallest fluid piece examined as a cavity (ml), its shell's thickness (mm) and the FLAIR-abnormal fraction of
#: the shell that makes it a cavity.
MIN_CAVITY_ML, SHELL_MM, MIN_SHELL_ABNORMAL = 1.0, 3.0, 0.5
#: FLAIR-abnormal = above median + this many robust SD (1.4826 MAD) of the brain: tumor_roi.py's definition.
FLAIR_Z = 2.0
#: Voxels sampled for the tissue classes (enough for three 1D k-means centres and a percentile).
SAMPLE = 200_000


@dataclass
class PostOperativeFindings:
    """What :func:`find_post_operative` found; voxel sets are flat indices into the T1 grid (small, not full masks)."""

    t1_bright_index: np.ndarray  # T1-hyperintense and FLAIR-bright, deep, in pieces >= MIN_BRIGHT_ML
    cavity_index: np.ndarray  # the fluid pieces taken as cavities
    cavities: list[dict] = field(default_factory=list)  # every fluid piece >= MIN_CAVITY_ML: volume, shell fraction
    thresholds: dict = field(default_factory=dict)
    voxel_ml: float = 1.0

    @property
    def t1_bright_ml(self) -> float:
        return float(self.t1_bright_index.size * self.voxel_ml)

    @property
    def cavity_ml(self) -> float:
        return float(self.cavity_index.size * self.voxel_ml)


def _box(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(slice(max(int(i.min()) - pad, 0), min(int(i.max()) + pad + 1, n)) for i, n in zip(idx, mask.shape))


def _flat_index(local: np.ndarray, box: tuple[slice, ...], shape) -> np.ndarray:
    """Flat indices (C order, full grid) of the True voxels of ``local``, a mask on ``box``."""
    coords = [c + s.start for c, s in zip(np.nonzero(local), box)]
    return np.ravel_multi_index(coords, shape).astype(np.int64)


def _ball(radius_mm: float, voxel_mm: np.ndarray) -> np.ndarray:
    """The voxels within ``radius_mm`` (centre to centre) of a voxel, as a structuring element."""
    half = np.floor(radius_mm / voxel_mm + 1e-9).astype(int)
    offsets = np.indices(2 * half + 1) - half.reshape(3, 1, 1, 1)
    return np.sqrt(sum((offsets[i] * voxel_mm[i]) ** 2 for i in range(3))) <= radius_mm + 1e-9


def tissue_classes(t1_values: np.ndarray) -> np.ndarray:
    """Sorted centres (CSF, grey matter, white matter) of a 3-class k-means of T1 values, and the class labels."""
    from sklearn.cluster import KMeans

    x = np.asarray(t1_values, np.float64).reshape(-1, 1)
    km = KMeans(n_clusters=3, n_init=3, random_state=0).fit(x)
    order = np.argsort(km.cluster_centers_[:, 0])
    rank = np.empty(3, np.intp)
    rank[order] = np.arange(3)
    return km.cluster_centers_[order, 0], rank[km.labels_]


def find_post_operative(t1: np.ndarray, flair: np.ndarray, brain: np.ndarray, voxel_mm) -> PostOperativeFindings:
    """Image-only: the T1-hyperintense, FLAIR-bright deep pieces and the cavities (module docstring)."""
    brain = np.asarray(brain, bool)
    voxel_mm = np.asarray(voxel_mm, np.float64)[:3]
    voxel_ml = float(np.prod(voxel_mm) / 1000.0)
    empty = np.zeros(0, np.int64)
    if int(brain.sum()) < 1000:
        return PostOperativeFindings(empty, empty, voxel_ml=voxel_ml)
    box = _box(brain, 1)  # everything below on the brain's box (memory, issue 17); outside it nothing is brain
    b = brain[box]
    t1b, flb = np.asarray(t1)[box], np.asarray(flair)[box]
    fv = flb[b].astype(np.float64)
    f_median = float(np.median(fv))
    f_mad = 1.4826 * float(np.median(np.abs(fv - f_median)))
    q25, q75 = np.percentile(fv, [25, 75])
    f_fence = float(q75 + 1.5 * (q75 - q25))
    del fv
    lesion = (flb > f_median + FLAIR_Z * max(f_mad, 1e-9)) & b  # FLAIR-abnormal (oedema, tumour, gliosis)
    normal = b & ~lesion
    normal_t1 = t1b[normal].astype(np.float64)
    step = max(1, normal_t1.size // SAMPLE)
    centres, labels = tissue_classes(normal_t1[::step])
    white = normal_t1[::step][labels == 2]
    csf_flair = float(np.median(flb[normal][::step][labels == 0]))
    t1_bright_level = float(np.percentile(white, T1_WM_PERCENTILE))
    # fluid: darker than the CSF/grey-matter midpoint on the T1, and suppressed like CSF on the FLAIR (below the
    # midpoint of the CSF's FLAIR and the brain's median): necrosis is as dark on the T1 but not FLAIR-suppressed
    fluid_t1_level = float(0.5 * (centres[0] + centres[1]))
    fluid_flair_level = float(0.5 * (csf_flair + f_median))
    del normal_t1, white, labels, normal
    thresholds = {"t1_bright": t1_bright_level, "flair_fence": f_fence, "fluid_t1": fluid_t1_level,
                  "fluid_flair": fluid_flair_level, "flair_abnormal": float(f_median + FLAIR_Z * f_mad),
                  "tissue_t1_centres": [float(c) for c in centres]}

    # intrinsic T1 hyperintensity: bright on both, away from the surface, in pieces that are not single voxels
    bright = (t1b >= t1_bright_level) & (flb > f_fence) & b
    if bright.any():
        # deeper than SURFACE_MM: kept by an erosion with the ball of that radius (the same voxels as a Euclidean
        # distance > SURFACE_MM, with boolean temporaries only); the array's edge counts as the brain's surface
        bright &= ndimage.binary_erosion(b, _ball(SURFACE_MM, voxel_mm), border_value=0)
    bright_index = empty
    if bright.any():
        pieces, n = ndimage.label(bright, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)
        kept = np.flatnonzero(sizes * voxel_ml >= MIN_BRIGHT_ML)
        kept = kept[kept > 0]
        if kept.size:
            bright_index = _flat_index(np.isin(pieces, kept), box, brain.shape)
        del pieces
    del bright

    # cavities: fluid pieces lined by FLAIR-abnormal tissue
    fluid = (t1b < fluid_t1_level) & (flb < fluid_flair_level) & b
    pieces, n = ndimage.label(fluid)
    del fluid
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)
    cavities, cavity_local = [], np.zeros(b.shape, bool)
    shell_voxels = int(np.ceil(SHELL_MM / voxel_mm.min())) + 1
    ball = _ball(SHELL_MM, voxel_mm)
    for label in np.flatnonzero(sizes * voxel_ml >= MIN_CAVITY_ML):
        if label == 0:
            continue
        piece = pieces == label
        sub = _box(piece, shell_voxels)
        # within SHELL_MM of the piece: a dilation with the ball (booleans, not a distance map of the box)
        shell = ndimage.binary_dilation(piece[sub], ball) & ~piece[sub] & b[sub]
        fraction = float(lesion[sub][shell].mean()) if shell.any() else 0.0
        is_cavity = fraction >= MIN_SHELL_ABNORMAL
        cavities.append({"volume_ml": float(sizes[label] * voxel_ml), "shell_flair_abnormal_fraction": fraction,
                         "cavity": bool(is_cavity)})
        if is_cavity:
            cavity_local |= piece
        del piece
    del pieces
    cavity_index = _flat_index(cavity_local, box, brain.shape) if cavity_local.any() else empty
    cavities.sort(key=lambda c: -c["shell_flair_abnormal_fraction"])
    return PostOperativeFindings(bright_index, cavity_index, cavities[:5], thresholds, voxel_ml)


def post_operative_report(findings: PostOperativeFindings, brain: np.ndarray, enhancement_brain_values: np.ndarray,
                          roi: np.ndarray) -> tuple[dict, list, list[str]]:
    """(report block, two applicability :class:`Check` s, BBB-status reasons) from the findings, the enhancement map
    (its brain values, C order of ``brain``) and the tumour ROI. A check's message is its warning."""
    from .applicability import Check
    from .enhancement import MIN_ENHANCEMENT

    brain = np.asarray(brain, bool)
    roi = np.asarray(roi, bool).ravel()
    bright = findings.t1_bright_index
    enhancement = np.asarray(enhancement_brain_values)
    fires = enhancement >= MIN_ENHANCEMENT  # above the enhancement's noise floor (enhancement.py)
    if bright.size:
        # a flat grid index -> its place among the brain's voxels (C order; the bright voxels are brain voxels)
        position = np.searchsorted(np.flatnonzero(brain.ravel()), bright)
        on_bright = int(np.count_nonzero(fires[position]))
    else:
        on_bright = 0
    overlap_ml = float(on_bright * findings.voxel_ml)
    enhancement_ml = float(np.count_nonzero(fires) * findings.voxel_ml)
    in_roi_ml = float(roi[bright].sum() * findings.voxel_ml) if bright.size else 0.0
    cavity_ml = findings.cavity_ml
    cavity_roi_ml = float(roi[findings.cavity_index].sum() * findings.voxel_ml) if findings.cavity_index.size else 0.0
    reasons = []
    t1_warn = findings.t1_bright_ml >= MIN_BRIGHT_ML
    t1_message = cavity_message = ""
    if t1_warn:
        fires_text = (f"; the enhancement map fires (>= {MIN_ENHANCEMENT:.0f} units) on {overlap_ml:.2f} ml of them "
                      f"({100.0 * overlap_ml / max(enhancement_ml, 1e-9):.0f} % of its {enhancement_ml:.2f} ml)"
                      if overlap_ml >= MIN_OVERLAP_ML else "")
        t1_message = (
            f"intrinsic T1 hyperintensity: {findings.t1_bright_ml:.2f} ml deep in the brain is bright on the NON-contrast "
            f"T1 (at least the white matter's {T1_WM_PERCENTILE:.0f}th percentile) and on the FLAIR, e.g. methaemoglobin "
            "of post-operative or tumour blood or haemostatic material. The synthetic T1Gd is the T1 plus the predicted "
            f"enhancement, so these voxels are as bright on it as enhancement would be{fires_text}: neither is evidence "
            "of BBB disruption there; only a real post-contrast T1 compared with the pre-contrast one can tell")
    if in_roi_ml >= MIN_OVERLAP_ML:
        reasons.append(f"intrinsic T1 hyperintensity inside the tumour ROI ({in_roi_ml:.2f} ml, e.g. blood products): "
                       "the syntheses cannot tell it from enhancement, read with care")
    cavity_warn = cavity_ml > 0
    if cavity_warn:
        cavity_message = (
            f"the scan looks post-operative: {cavity_ml:.1f} ml of CSF-like fluid lined by FLAIR-abnormal tissue "
            "(a resection cavity?). The structural weights were trained on pre-operative brains: the anomaly map, "
            "tumour probability, enhancement and BBB status in and around the cavity are outside the trained range")
        if cavity_roi_ml > 0:
            reasons.append(f"a resection cavity lies in the tumour ROI ({cavity_roi_ml:.1f} ml): read with care")
    checks = [Check("intrinsic_t1_hyperintensity", findings.t1_bright_ml,
                    "ml deep in the brain bright on both the T1 and the FLAIR",
                    f"< {MIN_BRIGHT_ML} ml (0 on the real cases and held-apart phantoms)",
                    "warning" if t1_warn else "ok", ("synthetic_t1gd", "enhancement", "enhancement_probability",
                                                     "bbb_status"), t1_message),
              Check("post_operative_cavity", cavity_ml, "ml of fluid lined by FLAIR-abnormal tissue",
                    "0 (pre-operative brains)", "warning" if cavity_warn else "ok",
                    ("synthetic_t1gd", "enhancement", "enhancement_probability", "bbb_status", "tumor_probability",
                     "anomaly"), cavity_message)]
    block = {"t1_hyperintense_ml": findings.t1_bright_ml, "enhancement_on_t1_hyperintense_ml": overlap_ml,
             "enhancement_ml": enhancement_ml, "t1_hyperintense_in_tumor_roi_ml": in_roi_ml,
             "cavity_ml": cavity_ml, "cavity_in_tumor_roi_ml": cavity_roi_ml, "fluid_pieces": findings.cavities,
             "thresholds": findings.thresholds, "warned": bool(t1_warn or cavity_warn),
             "note": "image-only cues (docs/reliability.md, session 23): T1 >= the white matter's "
                     f"{T1_WM_PERCENTILE:.0f}th percentile and FLAIR above its upper fence, > {SURFACE_MM:.0f} mm deep, "
                     f"pieces >= {MIN_BRIGHT_ML} ml; a cavity: fluid >= {MIN_CAVITY_ML:.0f} ml whose {SHELL_MM:.0f} mm "
                     f"shell is >= {100 * MIN_SHELL_ABNORMAL:.0f} % FLAIR-abnormal. No map is changed"}
    return block, checks, reasons

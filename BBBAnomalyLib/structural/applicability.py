"""Is this T1/FLAIR pair like what the structural weights were trained on? (applicability checks)

Every learned structural map (synthetic T1Gd and its enhancement, BBB status, tumor
probability, 3D-autoencoder anomaly) was trained on skull-stripped whole brains at 1-2 mm:
structural phantoms on the MNI152 2 mm grid and BraTS-space real cases at 1 mm isotropic
(model cards in BBBAnomalyLib/weights). Each check returns a value, the trained range, a status
("ok", "warning" or "refused") and the maps it affects; a warning goes into report["warnings"]
and the structured block into report["applicability"] for the panel. Refusals raise InputError
with what input would work. The numbers that separate "ok" from "warning" are the trained
ranges with a margin; the contrast thresholds were measured on the three real cases with their
T2 and T1Gd given in the wrong role, and a swapped T1 and FLAIR (docs/validation.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.errors import InputError

#: Ranges the bundled structural weights were trained on (phantoms 2 mm, BraTS space 1 mm).
TRAINED = {
    "slice_thickness_mm": (1.0, 2.0),
    "in_plane_mm": (1.0, 2.0),
    "brain_extent_mm": (120.0, 180.0),  # superior-inferior extent of the brain mask
    "brain_slices": (60, 160),
    "brain_volume_ml": (1000.0, 1800.0),
}
#: Beyond these a map is flagged (the trained ranges with a margin).
WARN_SLICE_MM, WARN_IN_PLANE_MM = 3.0, 3.0
WARN_EXTENT_MM, WARN_SLICES_3D = 100.0, 40
WARN_VOLUME_ML = (700.0, 2200.0)
#: Fewer brain slices than this and nothing learned can be read (refused).
REFUSE_SLICES = 3
#: Median FLAIR rank (0-1) of the T1's brightest 2 % below this = CSF-like bright voxels (a T2 or
#: a contrast-enhanced T1 given as the T1); the same for the FLAIR's brightest 2 % on the T1.
CONTRAST_RANK = 0.2
#: Dice of the T1 and FLAIR signal masks below this = the two are not registered.
MIN_REGISTRATION_DICE = 0.85
#: White minus grey matter on the T1, in within-brain rank units (tissue_order): below this the T1 shows grey
#: matter brighter than white matter, which no T1 does (0.31-0.37 on the real cases and phantoms, -0.25 to -0.37
#: with the T1 and FLAIR swapped; docs/validation.md).
MIN_T1_WM_GM = 0.0
#: The bright tail of an image: the fraction of brain voxels above its upper Tukey fence (q75 + 1.5 IQR). A
#: FLAIR-hyperintense lesion (edema, tumour) is a bright tail on the FLAIR (1.1-3.1 % of the brain on the real
#: cases and the tumour phantoms, 1 to 7 mm) that a non-contrast T1 lacks (0-0.4 %; the lesion is dark on it).
#: A T1 with a tail of at least MIN_T1_TAIL and TAIL_RATIO x the FLAIR's looks like the FLAIR: an independent
#: swap cue that assumes no grey/white order (TCGA-DU-7294's FLAIR has white matter brighter, like a T1).
MIN_T1_TAIL, TAIL_RATIO = 0.005, 2.0
#: A brain whose outermost slice (along any axis of the array) holds at least this fraction of the brain's largest
#: cross-section along that axis is cut by the field of view. The brain's own first and last slices hold 0-3 % of it
#: at 1 mm and up to 17 % at 7 mm on the real cases; the top 10 % of the brain left out of the field of view: 31-45 %.
FOV_CUT_FRACTION = 0.25

SLICEWISE = ("synthetic_t1gd", "enhancement", "enhancement_probability", "bbb_status", "tumor_probability")
VOLUMETRIC = ("anomaly",)
ALL_MAPS = SLICEWISE + VOLUMETRIC


@dataclass
class Check:
    name: str
    value: float | str | None
    unit: str
    trained: str
    status: str  # ok | warning | refused
    affects: tuple[str, ...] = ()
    message: str = ""


@dataclass
class Applicability:
    checks: list[Check] = field(default_factory=list)
    map_names: tuple[str, ...] = ALL_MAPS
    trained_on: str = ("skull-stripped whole brains at 1-2 mm: structural phantoms (MNI152 2 mm) and BraTS-space "
                       "real cases (1 mm isotropic)")

    @property
    def warnings(self) -> list[str]:
        return [c.message for c in self.checks if c.status == "warning"]

    def maps(self) -> dict[str, str]:
        """Per learned map: "within the trained range" or "outside: <checks>"."""
        out = {}
        for name in self.map_names:
            bad = [c.name for c in self.checks if c.status != "ok" and name in c.affects]
            out[name] = "outside the trained range: " + ", ".join(bad) if bad else "within the trained range"
        return out

    def to_json(self) -> dict:
        return {"checks": [dict(asdict(c), affects=list(c.affects)) for c in self.checks], "maps": self.maps(),
                "trained_on": self.trained_on}


def _rank(values: np.ndarray) -> np.ndarray:
    r = np.empty(values.size)
    r[np.argsort(values, kind="stable")] = np.arange(values.size) / max(values.size - 1, 1)
    return r


def _kmeans(x: np.ndarray, centres, iterations: int = 40) -> np.ndarray:
    """Lloyd's k-means from the given starting ``centres`` (scikit-learn's), up to ``iterations`` passes and until no
    label changes (``tol=0``). A hand-written loop ran all 40 passes where the phantoms and real cases settle in about
    10 (0.76 s of a 3.2 s T1/FLAIR run on the 2 mm phantom, against 0.2 s); the centres agree to 1e-14."""
    from sklearn.cluster import KMeans

    start = np.array(centres, np.float64)
    fit = KMeans(n_clusters=len(start), init=start, n_init=1, max_iter=iterations, tol=0.0, algorithm="lloyd").fit(
        np.asarray(x, np.float64))
    return fit.cluster_centers_


def _nearest_centre(x: np.ndarray, centres: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """``np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)`` by chunks of rows (each row's
    arithmetic is its own, so the same labels): the (n, k, d) float64 temporaries of a whole 1 mm brain are
    ~200 MiB at once (issue 17), a chunk's 3 MiB."""
    label = np.empty(len(x), np.intp)
    for i in range(0, len(x), chunk):
        label[i:i + chunk] = np.argmin(((x[i:i + chunk, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    return label


def bright_tail_fraction(values: np.ndarray) -> float:
    """Fraction of ``values`` above the upper Tukey fence q75 + 1.5 (q75 - q25)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return 0.0
    q25, q75 = np.percentile(values, [25, 75])
    return float(np.mean(values > q75 + 1.5 * (q75 - q25)))


def tissue_order(t1: np.ndarray, flair: np.ndarray, brain: np.ndarray, voxel_mm, sample: int = 100_000) -> dict:
    """Grey/white-matter ordering of a T1/FLAIR pair, with tissue classes that do not assume which is which.

    Both images are turned into within-brain ranks (0-1); a 3-class k-means on the pair of ranks
    gives CSF (the class darkest on both) and two tissue classes. Which tissue class is grey matter
    is decided without reading the contrast: grey matter is the cortex, so more of its voxels lie
    within 2.5 mm of CSF or of the brain's surface (0.55-0.73 of them on the real cases at 1 and
    7 mm against 0.15-0.36 for white matter; 0.29-0.49 against 0.03-0.07 on template phantoms). Returns ``t1_wm_minus_gm`` (> 0 on a T1: white matter is brighter)
    and ``flair_gm_minus_wm`` (> 0 on most FLAIRs, but not all: TCGA-DU-7294's FLAIR has white
    matter brighter), in rank units, and the two classes' CSF-adjacent fractions."""
    from .preprocessing import distance_at

    brain = np.asarray(brain, bool)
    voxel_mm = np.asarray(voxel_mm, np.float64)[:3]
    n = int(brain.sum())
    step = max(1, n // sample)
    ranks = np.empty((n, 2))  # column by column, each image's brain values let go after its ranks (issue 17)
    for j, image in enumerate((t1, flair)):
        v = np.asarray(image)[brain].astype(np.float64)
        ranks[:, j] = np.searchsorted(np.sort(v[::step]), v) / max(v[::step].size, 1)
        del v
    centres = _kmeans(ranks[::step], [(0.1, 0.1), (0.75, 0.35), (0.35, 0.75)])
    label = _nearest_centre(ranks, centres)
    csf = int(np.argmin(centres.sum(1)))
    tissue = [i for i in range(3) if i != csf]
    # the brain's bounding box (+3 voxels): distance maps on it, not on the whole field of view
    box = tuple(slice(max(int(ix.min()) - 3, 0), int(ix.max()) + 4) for ix in np.nonzero(brain))
    full = np.full(brain.shape, -1, np.int8)
    full[brain] = label
    full = full[box]
    inside = full >= 0
    # the distances are read at the brain's voxels only (distance_at: scipy's distances there, not its whole-box
    # float64 arrays, issue 17); edge[full == i] of the box is edge_b[label == i], the same voxels in the same order
    edge = distance_at(full != csf, inside, voxel_mm) <= 2.5
    edge |= distance_at(inside, inside, voxel_mm) <= 2.5
    near = [float(np.mean(edge[label == i])) if np.any(label == i) else 0.0 for i in tissue]
    gm, wm = (tissue[0], tissue[1]) if near[0] >= near[1] else (tissue[1], tissue[0])
    return {"t1_wm_minus_gm": float(centres[wm, 0] - centres[gm, 0]),
            "flair_gm_minus_wm": float(centres[gm, 1] - centres[wm, 1]),
            "near_csf_fraction_gm": max(near), "near_csf_fraction_wm": min(near)}


def _spacing(affine: np.ndarray, axis: int) -> tuple[float, float]:
    """(slice thickness, coarser in-plane spacing) in mm of a grid whose slice axis is ``axis``."""
    vox = np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    return float(vox[axis]), float(max(vox[i] for i in range(3) if i != axis))


_FACES = {(0, 1): "right", (0, -1): "left", (1, 1): "anterior", (1, -1): "posterior", (2, 1): "superior",
          (2, -1): "inferior"}


def field_of_view_cut(brain: np.ndarray, affine: np.ndarray) -> tuple[float, str]:
    """The largest fraction of the brain's largest cross-section (along an array axis) found in an outermost slice
    of the array, and which side of the head that slice is on ("" when the brain touches no side)."""
    brain = np.asarray(brain, bool)
    directions = np.asarray(affine, np.float64)[:3, :3]
    worst, side = 0.0, ""
    for axis in range(3):
        if brain.shape[axis] < 2:
            continue
        area = brain.sum(axis=tuple(i for i in range(3) if i != axis))
        largest = float(area.max())
        if largest <= 0:
            continue
        for index, outward in ((0, -1.0), (brain.shape[axis] - 1, 1.0)):
            fraction = float(area[index]) / largest
            if fraction > worst:
                ras = outward * directions[:, axis]
                world = int(np.argmax(np.abs(ras)))
                worst, side = fraction, _FACES[(world, 1 if ras[world] > 0 else -1)]
    return worst, side


def check_structural_input(t1_data: np.ndarray, flair_data: np.ndarray, affine: np.ndarray, brain: np.ndarray,
                           slice_axis: int, mask_given: bool, flair_affine: np.ndarray | None = None) -> Applicability:
    """All checks on the T1 grid (FLAIR already resampled onto it). Raises InputError on a refusal.

    ``flair_affine``: the FLAIR's own grid when it was resampled onto the T1's: the resolution checks read the
    coarser of the two (a 5 mm FLAIR resampled onto a 1 mm T1 still carries 5 mm of information)."""
    from .preprocessing import slice_axis as axis_of

    vox = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    thickness, coarse = _spacing(affine, slice_axis)
    thickness_of = coarse_of = ""
    if flair_affine is not None:
        flair_thickness, flair_coarse = _spacing(flair_affine, axis_of(np.asarray(flair_affine, np.float64)))
        if flair_thickness > thickness + 1e-6:
            thickness, thickness_of = flair_thickness, " (the FLAIR's, on its own grid)"
        if flair_coarse > coarse + 1e-6:
            coarse, coarse_of = flair_coarse, " (the FLAIR's, on its own grid)"
    result = Applicability()
    add = result.checks.append

    brain_slices = np.flatnonzero(brain.any(axis=tuple(i for i in range(3) if i != slice_axis)))
    n_slices = int(brain_slices.size)
    if n_slices < REFUSE_SLICES:
        raise InputError(f"the brain covers only {n_slices} slice(s); the T1/FLAIR models need a 3D volume: give a "
                         "whole-brain T1 and FLAIR (ideally 1-2 mm slices, at least 100 mm of brain)")
    ok = thickness <= WARN_SLICE_MM
    add(Check("slice_thickness", thickness, "mm", "1-2 mm", "ok" if ok else "warning", ALL_MAPS,
              "" if ok else f"slice thickness {thickness:.1f} mm{thickness_of} is outside the 1-2 mm the structural "
              "weights were trained on: thin enhancement is averaged away and every learned map (synthesis, BBB status, "
              "tumor probability, anomaly) may be wrong; a 1-2 mm (3D) T1 and FLAIR would be within range"))
    ok = coarse <= WARN_IN_PLANE_MM
    add(Check("in_plane_spacing", coarse, "mm", "1-2 mm", "ok" if ok else "warning", ALL_MAPS,
              "" if ok else f"in-plane spacing {coarse:.1f} mm{coarse_of} is coarser than the 1-2 mm of training; give "
              "images with <= 2 mm pixels"))
    extent = float((brain_slices.max() - brain_slices.min() + 1) * thickness)
    ok = extent >= WARN_EXTENT_MM
    add(Check("coverage_extent", extent, "mm", "120-180 mm (whole brain)", "ok" if ok else "warning", ALL_MAPS,
              "" if ok else f"the brain mask spans {extent:.0f} mm superior-inferior: partial coverage; the "
              "normalisation and the anomaly z-score assume a whole brain (trained on 120-180 mm)"))
    ok = n_slices >= WARN_SLICES_3D
    add(Check("coverage_slices", n_slices, "slices", "60-160 brain slices", "ok" if ok else "warning", VOLUMETRIC,
              "" if ok else f"only {n_slices} slices hold brain: the 3D autoencoder resamples the brain to its "
              "grid and was trained on 60-160 slices, so its anomaly map and patient score are outside the trained "
              "range; thinner slices (>= 60 across the brain) would be within it"))
    cut, side = field_of_view_cut(brain, affine)
    ok = cut < FOV_CUT_FRACTION
    add(Check("field_of_view", cut, "fraction of the brain's largest cross-section in an outermost slice",
              "< 0.25 (0-0.17 on whole brains)", "ok" if ok else "warning", VOLUMETRIC,
              "" if ok else f"the brain is cut by the field of view: the outermost {side} slice still holds "
              f"{100 * cut:.0f} % of the brain's largest cross-section, so part of the brain is missing. The 3D "
              "autoencoder stretches the brain it sees to its grid and was trained on whole brains: its anomaly map and "
              "patient score are outside the trained range; a field of view covering the whole brain would be within it"))
    volume_ml = float(brain.sum() * np.prod(vox) / 1000.0)
    ok = WARN_VOLUME_ML[0] <= volume_ml <= WARN_VOLUME_ML[1] or extent < WARN_EXTENT_MM
    add(Check("brain_volume", volume_ml, "ml", "1000-1800 ml", "ok" if ok else "warning", ALL_MAPS,
              "" if ok else f"the brain mask holds {volume_ml:.0f} ml, outside 700-2200 ml: check the brain mask "
              "(scalp included, or part of the brain missing)"))

    zero_fraction = float(np.mean(np.asarray(t1_data) == 0))
    stripped = zero_fraction >= 0.05
    ok = stripped or mask_given
    add(Check("skull_stripped", "yes" if stripped else ("no (brain mask given)" if mask_given else "no"), "",
              "skull-stripped", "ok" if ok else "warning", ALL_MAPS,
              "" if ok else "the T1 is not skull-stripped and no brain mask was given; the weights were trained on "
              "skull-stripped brains and the automatic mask may keep scalp: skull-strip first (e.g. HD-BET, "
              "SynthStrip) or give --mask"))

    # the grey/white order first, before this function's own float64 brain values exist (issue 17); appended below
    order = tissue_order(t1_data, flair_data, brain, vox) if int(brain.sum()) >= 1000 else None
    t1v, flv = np.asarray(t1_data)[brain].astype(np.float64), np.asarray(flair_data)[brain].astype(np.float64)
    if t1v.size >= 100:
        step = max(1, t1v.size // 200_000)  # ranks of a subsample: enough for medians of the top 2 %
        rt, rf = _rank(t1v[::step]), _rank(flv[::step])
        flair_in_t1_top = float(np.median(rf[rt >= 0.98]))
        t1_in_flair_top = float(np.median(rt[rf >= 0.98]))
        ok = flair_in_t1_top >= CONTRAST_RANK
        add(Check("t1_contrast", flair_in_t1_top, "FLAIR rank of the T1's brightest 2 %", ">= 0.2 (0.4-0.84 on the "
                  "real cases)", "ok" if ok else "warning", ALL_MAPS,
                  "" if ok else f"the T1's brightest voxels are dark on the FLAIR (median rank {flair_in_t1_top:.2f}): "
                  "fluid- or vessel-like, as in a T2-weighted or a contrast-enhanced image; a non-contrast T1 (white "
                  "matter brighter than grey matter) is expected"))
        ok = t1_in_flair_top >= CONTRAST_RANK
        add(Check("flair_contrast", t1_in_flair_top, "T1 rank of the FLAIR's brightest 2 %", ">= 0.2 (0.33-0.6 on "
                  "the real cases)", "ok" if ok else "warning", ALL_MAPS,
                  "" if ok else f"the FLAIR's brightest voxels are the darkest on the T1 (median rank {t1_in_flair_top:.2f}): "
                  "CSF-like, as in a T2-weighted image without fluid suppression; a T2-FLAIR is expected"))
    if order is not None:
        t1_order, flair_order = order["t1_wm_minus_gm"], order["flair_gm_minus_wm"]
        ok = t1_order >= MIN_T1_WM_GM
        if ok:
            message = ""
        elif flair_order < 0:
            message = (f"the T1 and FLAIR look swapped: grey matter is brighter than white matter on the image given as "
                       f"the T1 (rank difference {t1_order:.2f}) and darker on the one given as the FLAIR "
                       f"({flair_order:.2f}); give the non-contrast T1 as --t1 and the T2-FLAIR as --flair")
        else:
            message = (f"the image given as the T1 shows grey matter brighter than white matter (rank difference "
                       f"{t1_order:.2f}): T2- or FLAIR-like, not a T1; give a non-contrast T1-weighted image as --t1")
        add(Check("t1_flair_order", t1_order, "white minus grey matter on the T1 (rank units)",
                  "> 0 (0.31-0.37 on the real cases and phantoms)", "ok" if ok else "warning", ALL_MAPS, message))
    if t1v.size >= 1000:
        t1_tail, flair_tail = bright_tail_fraction(t1v), bright_tail_fraction(flv)
        ok = not (t1_tail >= MIN_T1_TAIL and t1_tail >= TAIL_RATIO * flair_tail)
        add(Check("t1_flair_bright_tail", 100.0 * t1_tail, "% of the brain above the T1's upper fence (FLAIR: "
                  f"{100.0 * flair_tail:.2f} %)", "T1 < 0.5 % or < 2x the FLAIR's (T1 0-0.4 %, FLAIR 1.1-3.1 % on the "
                  "real cases)", "ok" if ok else "warning", ALL_MAPS,
                  "" if ok else f"the image given as the T1 has a bright tail ({100 * t1_tail:.1f} % of the brain above "
                  f"its upper fence, the FLAIR {100 * flair_tail:.1f} %): lesions are bright on a FLAIR and dark on a "
                  "non-contrast T1, so the T1 and FLAIR look swapped (or the T1 is T2-weighted or contrast-enhanced); "
                  "give the non-contrast T1 as --t1 and the T2-FLAIR as --flair"))
    a, b = np.asarray(t1_data) != 0, np.asarray(flair_data) != 0
    if a.any() and b.any() and (zero_fraction >= 0.05):
        dice = float(2 * np.sum(a & b) / (a.sum() + b.sum()))
        ok = dice >= MIN_REGISTRATION_DICE
        add(Check("registration_overlap", dice, "Dice of the T1 and FLAIR brain signal", ">= 0.85 (0.995-1.0 "
                  "on the real cases)", "ok" if ok else "warning", ALL_MAPS,
                  "" if ok else f"the T1 and FLAIR brains overlap with Dice {dice:.2f}: they look unregistered; "
                  "register the FLAIR to the T1 (rigid) first"))
    return result

"""Automatic selection of arterial voxels from bolus curves, for any pipeline (DCE concentration,
DSC ΔR2*): the Mouridsen et al. (MRM 2006;55:524) clustering with the changes measured in this
project (docs/design.md, "Automatic AIF"). It lives outside both pipeline packages because both use it.

Steps over (n, T) curves that rise with contrast: keep voxels whose first-pass area is in the top
``top_area`` fraction *and* reaches ``min_relative_area`` of the largest areas (over a whole brain the
top 10 % are mostly tissue); drop the ``drop_rough`` noisiest of them (second differences over the
pre-bolus baseline, relative to the peak: Mouridsen's whole-curve roughness is largest for exactly the
sharp arterial peaks sought); cluster the area-normalised first-pass curves by k-means and keep the
cluster with the earliest first moment; cluster that once more. Arterial curves are early, high and
narrow: the first moment picks early, the area normalisation makes narrow curves peak higher. Areas
and moments are taken over the first pass only (to the brain-mean peak plus 1.5 times its rise time):
the recirculation and late tail make arteries look late.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import trapezoid

#: The second clustering round is skipped when it would leave fewer voxels than this.
MIN_AIF_VOXELS = 5


def first_pass_stop(curves: np.ndarray, arrival: int, mean_curve: np.ndarray | None = None) -> int:
    """Index one past the first pass: the brain-mean peak plus 1.5 times its rise from ``arrival``.
    mean_curve: ``curves.mean(axis=0)`` when the caller has it (curves made block by block)."""
    brain_peak = int(np.argmax(curves.mean(axis=0) if mean_curve is None else mean_curve))
    return min(curves.shape[1], brain_peak + 1 + int(np.ceil(1.5 * max(brain_peak - arrival, 1))))


def first_pass_areas(first_pass: np.ndarray, times: np.ndarray) -> np.ndarray:
    """scipy's trapezoid areas of (n, k) curves over ``times`` (float64), block of rows by block:
    over all brain voxels at once it builds a float32 and two float64 (n, k-1) temporaries (~5x a
    float32 block; ~1.5x the whole curves), the peak of an automatic-AIF run. Blocks of 1/32 of the
    rows (1024-16384) keep them to ~0.16x. Same arithmetic per row, so the same areas."""
    area = np.empty(first_pass.shape[0])
    block = int(min(max(first_pass.shape[0] // 32, 1024), 16384))
    for start in range(0, first_pass.shape[0], block):
        rows = slice(start, start + block)
        area[rows] = trapezoid(first_pass[rows], times, axis=1)
    return area


def select_arterial_voxels(curves: np.ndarray, times: np.ndarray, baseline: slice, arrival: int,
                           n_clusters: int = 5, top_area: float = 0.10, min_relative_area: float = 0.2,
                           drop_rough: float = 0.25, seed: int = 0, rounds: int = 2,
                           first_pass: tuple[int, np.ndarray] | None = None,
                           same_timing: float = 0.0) -> np.ndarray | None:
    """Indices of the arterial voxels among (n, T) curves, or None when too few voxels carry a bolus.

    times [s]; baseline: the pre-contrast frames; arrival: frame of the bolus arrival; rounds: k-means
    rounds (2 as Mouridsen and DSC; 1 leaves the whole earliest cluster for a caller's own rule).
    first_pass: (:func:`first_pass_stop`, :func:`first_pass_areas` over ``curves[:, :stop]``) when the caller
    computed them itself, block by block (DCE: concentration curves converted on demand, never held whole);
    ``curves`` is then read only as ``curves[indices]`` (rows: the candidates, ~10 % of them).
    same_timing: clusters whose first moment lies within this many seconds of the earliest one's are kept with it
    (0: the earliest cluster alone, as Mouridsen and DSC). k-means splits curves of one timing and shape into
    several clusters by their noise alone (the DCE object's arteries and the small vessels holding their blood,
    first moments 0.03 s apart at 5 s frames), and the earliest of those by a noise-level margin may hold none of
    the arteries: DCE keeps them together and then chooses by peak height (dce/aif.py, :func:`auto_aif`)."""
    from sklearn.cluster import KMeans

    if first_pass is None:
        stop = first_pass_stop(curves, arrival)
        area = first_pass_areas(curves[:, :stop], times[:stop])
    else:
        stop, area = first_pass
    t_fp = times[:stop]
    if area.size < 2 * n_clusters or np.sort(area)[-1] <= 0:
        return None
    largest = np.sort(area)[-min(5, area.size)]
    threshold = max(np.quantile(area, 1.0 - top_area), min_relative_area * largest, 0.0)
    candidates = np.flatnonzero(area >= threshold)
    if candidates.size < 2 * n_clusters:  # too few: take the largest areas
        candidates = np.argsort(area)[-2 * n_clusters:]
    rows = np.asarray(curves[candidates])  # the candidates' curves, gathered once
    c = rows.astype(np.float64)
    base = c[:, baseline]
    noise = np.diff(base, n=2, axis=1).std(axis=1) if base.shape[1] >= 4 else np.zeros(c.shape[0])
    roughness = noise / np.maximum(c.max(axis=1), 1e-30)
    smooth = roughness <= np.quantile(roughness, 1.0 - drop_rough)
    candidates, rows = candidates[smooth], rows[smooth]
    del c, base
    for round_ in range(rounds):
        normalised = rows[:, :stop] / area[candidates, None]
        # Noiseless or repeated curves have fewer distinct shapes than clusters: k-means would leave
        # clusters empty (their mean, and so their first moment, NaN).
        distinct = np.unique(np.round(normalised, 9), axis=0).shape[0]
        k = max(1, min(n_clusters, candidates.size // 2, distinct))
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(normalised)
        used = np.unique(labels)
        first_moment = np.array([trapezoid(t_fp * normalised[labels == j].mean(axis=0), t_fp) for j in used])
        if same_timing > 0:
            earliest = np.isin(labels, used[first_moment <= first_moment.min() + same_timing])
        else:
            earliest = labels == used[int(np.argmin(first_moment))]
        chosen = candidates[earliest]
        if round_ and chosen.size < MIN_AIF_VOXELS:
            break  # refining further would average too few voxels to be robust to noise
        candidates, rows = chosen, rows[earliest]
    return candidates

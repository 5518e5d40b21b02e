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

DSC's selection is noise-aware (session 20; ``same_timing=None``): candidates must also stand out of the noise
(:func:`area_noise_z`, ``POOL_NOISE_Z``), and clusters within the first moment's noise of the earliest one are
averaged with it (``SAME_TIMING_NOISE_SDS``). DCE keeps its fixed timing rule (``same_timing`` in seconds).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import trapezoid

#: The second clustering round is skipped when it would leave fewer voxels than this.
MIN_AIF_VOXELS = 5
#: Noise-aware selection only (``same_timing=None``, DSC): a candidate's first-pass area must stand this many noise
#: SDs above the brain's median area (:func:`area_noise_z`). The brain's areas are tissue plus noise; at low SNR the
#: 20 %-of-the-largest rule let noisy tissue in with the arteries (12 slices of the DSC object, 48 arterial voxels:
#: 60 tissue voxels at SNR 10 with 2 s frames, 660-2,100 at SNR 5), k-means chose a cluster of them and GM CBF read
#: 1.7-9x the arterial mask's. Measured (the DSC object, 12 slices and the whole brain, seed 0, frames 1 and 2 s;
#: session 20): tissue reaches 4.4-6.1 at SNR 5-20 (7.2 at SNR 3; at SNR 50-100 and noiseless, where the tissue's
#: own variety stands out of the small noise, 8-16 and more: there the 20 % rule keeps it out, as before), the
#: arterial voxels 30 or more at SNR 20, 12 or more at SNR 10, 3.3-16.5 at SNR 5. 8 is 1.3x the highest tissue at
#: SNR 5-20 and 1.5x below every arterial voxel at SNR 10; no tissue voxel entered the pool in any setting.
POOL_NOISE_Z = 8.0
#: Noise-aware selection only: clusters whose first moment lies within this many first-moment noise SDs of the
#: earliest cluster's are kept with it. k-means splits curves of one artery into clusters by their noise alone, and
#: the earliest of those was often one voxel whose noise moved it early (SNR 20, 4 slices: one of 16 arterial
#: voxels; a one-frame change of the series moved cSVD GM CBF by up to 25 % against the mask's). The SD is the
#: median, over the candidates, of each curve's first-moment noise propagated from its baseline noise
#: (:func:`first_moment_noise`). Measured (the DSC object, 4 and 12 slices, SNR 5-50, frames 1 and 2 s, with the
#: sinus-like vein of scripts/aif_plausibility.py added): clusters of the one artery lay 0-2.3 such SDs after the
#: earliest, the vein's 6.9-8.1 at SNR 5, 9-12 at SNR 10, 14-24 at SNR 20, 34-60 at SNR 50; 4 is 1.7x from both.
SAME_TIMING_NOISE_SDS = 4.0


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


def area_noise_z(curves: np.ndarray, times: np.ndarray, baseline: slice, stop: int,
                 area: np.ndarray) -> np.ndarray:
    """How many noise SDs each first-pass area lies above the brain's median area: (area - median) over the area
    noise that the median voxel's baseline noise gives (its SD over the baseline frames' second differences, /√6;
    propagated through the trapezoid weights of the first pass). The noise alone, not the spread of the tissue's
    areas: at high SNR the tissue's own variety would make that spread several times the noise, and the arteries
    of a real brain, a few times the tissue's area, would not stand out of it. +inf for every area above the median
    where the baseline has no noise (a noiseless series) or fewer than 4 frames (no estimate: the pool rule is off).
    curves: (n, T) read by blocks of rows; area: their :func:`first_pass_areas` over ``times[:stop]``."""
    frames = range(baseline.start or 0, baseline.stop if baseline.stop is not None else curves.shape[1])
    excess = area - np.median(area)
    if len(frames) < 4:
        return np.where(excess > 0, np.inf, 0.0)
    sd = np.empty(area.size)
    block = 16384
    for start in range(0, area.size, block):
        base = np.asarray(curves[start:start + block, frames.start:frames.stop], dtype=np.float64)
        sd[start:start + block] = np.diff(base, n=2, axis=1).std(axis=1) / np.sqrt(6.0)
    t_fp = times[:stop]
    weights = np.zeros(t_fp.size)
    weights[:-1] += 0.5 * np.diff(t_fp)
    weights[1:] += 0.5 * np.diff(t_fp)
    area_noise = float(np.median(sd)) * float(np.sqrt((weights ** 2).sum()))
    if not area_noise > 0:
        return np.where(excess > 0, np.inf, 0.0)
    return excess / area_noise


def first_moment_noise(rows: np.ndarray, times: np.ndarray, area: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The SD of each first-pass first moment m = ∫ t c dt / ∫ c dt that noise of SD ``noise`` per frame gives
    (first-order propagation: dm = ∫ (t - m) dc dt / A, so SD = noise * sqrt(Σ (w_k (t_k - m))²) / A with the
    trapezoid weights w). rows: (n, k) first-pass curves over ``times`` (k,); area: their (n,) areas."""
    weights = np.zeros(times.size)
    steps = np.diff(times)
    weights[:-1] += 0.5 * steps
    weights[1:] += 0.5 * steps
    moment = (rows * (weights * times)).sum(axis=1) / area
    lever = weights[None, :] * (times[None, :] - moment[:, None])
    return noise * np.sqrt((lever ** 2).sum(axis=1)) / np.abs(area)


def select_arterial_voxels(curves: np.ndarray, times: np.ndarray, baseline: slice, arrival: int,
                           n_clusters: int = 5, top_area: float = 0.10, min_relative_area: float = 0.2,
                           drop_rough: float = 0.25, seed: int = 0, rounds: int = 2,
                           first_pass: tuple[int, np.ndarray] | None = None,
                           same_timing: float | None = None, noise_z: np.ndarray | None = None) -> np.ndarray | None:
    """Indices of the arterial voxels among (n, T) curves, or None when too few voxels carry a bolus.

    times [s]; baseline: the pre-contrast frames; arrival: frame of the bolus arrival; rounds: k-means
    rounds (2 as Mouridsen and DSC; 1 leaves the whole earliest cluster for a caller's own rule).
    first_pass: (:func:`first_pass_stop`, :func:`first_pass_areas` over ``curves[:, :stop]``) when the caller
    computed them itself, block by block (DCE: concentration curves converted on demand, never held whole);
    ``curves`` is then read only as ``curves[indices]`` (rows: the candidates, ~10 % of them).
    same_timing: None (the default; DSC): noise-aware, session 20 (docs/reliability.md). Candidates must also stand
    POOL_NOISE_Z noise SDs out of the brain's areas (``noise_z``, :func:`area_noise_z`, computed here when not given;
    None is returned when none does: there is no trustworthy AIF to choose), and the clusters
    within SAME_TIMING_NOISE_SDS first-moment noise SDs of the earliest are kept with it, never fewer than
    MIN_AIF_VOXELS voxels (the next-earliest clusters are added). Before, at low SNR hundreds of noisy tissue voxels
    entered the pool and k-means chose a cluster of them (GM CBF 1.7-9x the arterial mask's at SNR 5-10); at SNR 20
    the earliest cluster was often one arterial voxel ahead of the rest by its noise, and one frame more or less
    moved GM CBF by up to 25 %. A number (seconds): the fixed rule, no noise cut (``noise_z`` unused): clusters whose
    first moment lies within that many seconds of the earliest one's are kept with it (0: the earliest cluster alone,
    as Mouridsen and DSC before session 20). k-means splits curves of one timing and shape into several clusters by
    their noise alone (the DCE object's arteries and the small vessels holding their blood, first moments 0.03 s
    apart at 5 s frames), and the earliest of those by a noise-level margin may hold none of the arteries: DCE keeps
    them together within a quarter frame and then chooses by peak height (dce/aif.py, :func:`auto_aif`)."""
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
    noise_aware = same_timing is None
    clear = area >= threshold
    if noise_aware:
        if noise_z is None:
            noise_z = area_noise_z(curves, times, baseline, stop, area)
        clear &= noise_z >= POOL_NOISE_Z
        if not clear.any():
            return None
    candidates = np.flatnonzero(clear)
    if candidates.size < 2 * n_clusters and not noise_aware:  # too few: take the largest areas
        candidates = np.argsort(area)[-2 * n_clusters:]
    rows = np.asarray(curves[candidates])  # the candidates' curves, gathered once
    c = rows.astype(np.float64)
    base = c[:, baseline]
    noise = np.diff(base, n=2, axis=1).std(axis=1) if base.shape[1] >= 4 else np.zeros(c.shape[0])
    roughness = noise / np.maximum(c.max(axis=1), 1e-30)
    smooth = roughness <= np.quantile(roughness, 1.0 - drop_rough)
    candidates, rows = candidates[smooth], rows[smooth]
    if noise_aware:  # each curve's first-moment noise, from its baseline noise (second differences: sqrt(6) sigma)
        sigma = noise[smooth] / np.sqrt(6.0) if base.shape[1] >= 4 else (
            base[smooth].std(axis=1, ddof=1) if base.shape[1] >= 2 else np.zeros(candidates.size))
        timing_noise = first_moment_noise(c[smooth, :stop], t_fp, area[candidates], sigma)
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
        if noise_aware:
            earliest = _within_noise_of_earliest(labels, used, first_moment, np.median(timing_noise))
        elif same_timing > 0:
            earliest = np.isin(labels, used[first_moment <= first_moment.min() + same_timing])
        else:
            earliest = labels == used[int(np.argmin(first_moment))]
        chosen = candidates[earliest]
        if round_ and chosen.size < MIN_AIF_VOXELS:
            break  # refining further would average too few voxels to be robust to noise
        candidates, rows = chosen, rows[earliest]
        if noise_aware:
            timing_noise = timing_noise[earliest]
    return candidates


def _within_noise_of_earliest(labels: np.ndarray, used: np.ndarray, first_moment: np.ndarray,
                              timing_noise: float) -> np.ndarray:
    """Boolean over the voxels: those of the clusters whose first moment is within SAME_TIMING_NOISE_SDS x
    ``timing_noise`` of the earliest cluster's, and of the next-earliest clusters while they hold fewer than
    MIN_AIF_VOXELS voxels (ties in first moment go by cluster label: deterministic)."""
    order = np.argsort(first_moment, kind="stable")
    keep = first_moment <= first_moment[order[0]] + SAME_TIMING_NOISE_SDS * timing_noise
    sizes = np.array([(labels == j).sum() for j in used])
    for j in order:  # while too few voxels, add the next-earliest cluster
        if sizes[keep].sum() >= MIN_AIF_VOXELS:
            break
        keep[j] = True
    return np.isin(labels, used[keep])

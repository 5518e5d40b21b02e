"""Agreement, accuracy and image-similarity metrics for validating the pipelines.

Small functions on numpy arrays, built on numpy/scipy/scikit-learn wherever those already hold the
computation; only what none of them offers is written out (Lin's concordance correlation, masked
SSIM with normalised convolution, bias summaries).

Conventions
-----------
* ``estimate`` / ``truth`` (or ``reference``) are arrays of the same shape; an optional boolean
  ``mask`` of that shape picks the voxels. Non-finite values are *not* silently dropped: pass a mask
  if the maps can hold NaN.
* Biases are returned in percent where the name says so (``relative_bias``), ratios as plain
  ratios (``ratio_of_means``: 1.0 = unbiased).

Functions
---------
relative_bias      mean voxelwise relative error, % (over voxels with truth > 0)
ratio_of_means     mean(estimate) / mean(truth): the regional (ROI-average) bias
ratio_bias         bias (%) of one ROI's mean relative to a reference ROI's (tumour/NAWM-style ratios)
log_interval_coverage  how often truth lies inside estimate·exp(±z·sd) for a predicted SD of the log
lin_ccc            Lin's concordance correlation coefficient (Lin, Biometrics 1989)
pearson_r          Pearson's r (scipy.stats.pearsonr)
roc_auc            area under the ROC curve (sklearn.metrics.roc_auc_score)
youden_cutoff      the cut-off maximising Youden's J = sensitivity + specificity - 1 (sklearn roc_curve)
bootstrap_ci       percentile bootstrap confidence interval of any statistic (scipy.stats.bootstrap)
psnr               peak signal-to-noise ratio, dB
ssim               masked structural similarity (Wang et al., IEEE TIP 2004), Gaussian window
dice               Dice overlap of two binary masks (scipy.spatial.distance.dice)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from scipy import ndimage, stats
from scipy.spatial import distance

__all__ = [
    "relative_bias", "ratio_of_means", "ratio_bias", "log_interval_coverage", "lin_ccc", "pearson_r", "roc_auc", "youden_cutoff",
    "bootstrap_ci", "BootstrapCI", "YoudenCutoff", "psnr", "ssim", "dice",
]


def _pair(estimate, truth, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float64 copies of two same-shaped arrays, restricted to ``mask`` when given."""
    e = np.asarray(estimate, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if e.shape != t.shape:
        raise ValueError(f"estimate and truth differ in shape: {e.shape} vs {t.shape}")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != e.shape:
            raise ValueError(f"mask shape {m.shape} does not match the data {e.shape}")
        return e[m], t[m]
    return e.ravel(), t.ravel()


# --- accuracy -----------------------------------------------------------------------------------
def relative_bias(estimate, truth, mask=None) -> float:
    """Mean voxelwise relative error in percent: ``100 · mean((e - t) / t)`` over voxels with ``t > 0``.

    Every voxel weighs the same, so low-truth voxels (partial volume, white matter) count as much
    as high-truth ones; compare :func:`ratio_of_means`, the bias of an ROI average. NaN when no
    voxel has ``t > 0``.

    >>> round(relative_bias([1.2, 1.8], [1.0, 2.0]), 9)   # (+20 % - 10 %) / 2
    5.0
    """
    e, t = _pair(estimate, truth, mask)
    keep = t > 0
    if not keep.any():
        return float("nan")
    return float(100.0 * np.mean((e[keep] - t[keep]) / t[keep]))


def ratio_of_means(estimate, truth, mask=None) -> float:
    """``mean(estimate) / mean(truth)`` over the (masked) voxels: 1.0 means an unbiased ROI average.

    The bias of a region-of-interest analysis, ``100 · (ratio - 1)`` in percent. Less sensitive to a
    few voxels with tiny truth than :func:`relative_bias`. NaN when ``mean(truth) == 0``.

    >>> round(ratio_of_means([1.2, 1.8], [1.0, 2.0]), 9)   # 1.5 / 1.5: the ROI average is unbiased
    1.0
    """
    e, t = _pair(estimate, truth, mask)
    mt = t.mean() if t.size else 0.0
    return float(e.mean() / mt) if mt != 0 else float("nan")


def ratio_bias(estimate, truth, roi, reference) -> float:
    """Bias (%) of an ROI-mean ratio: ``100 · (ē_roi / ē_ref) / (t̄_roi / t̄_ref) - 100``.

    What a reader of relative maps (rCBF, rCBV: tumour over normal-appearing white matter) sees: a
    factor common to both ROIs (an AIF's scale, a partial-volumed arterial voxel) cancels, a bias that
    differs between tissues (shrinkage toward a prior, noise floors) does not. ``roi`` and ``reference``
    are boolean masks of the data's shape. NaN when a mean is zero.

    >>> round(ratio_bias([2.0, 2.0, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5], [1, 1, 0, 0], [0, 0, 1, 1]), 9)  # common x2
    0.0
    """
    e_roi, t_roi = _pair(estimate, truth, roi)
    e_ref, t_ref = _pair(estimate, truth, reference)
    if not (e_roi.size and e_ref.size):
        return float("nan")
    denominators = e_ref.mean() * t_roi.mean()
    return float(100.0 * (e_roi.mean() * t_ref.mean() / denominators - 1.0)) if denominators != 0 else float("nan")


def log_interval_coverage(estimate, truth, log_sd, z: float = 1.96, informative_sd: float = 1.0, mask=None) -> dict:
    """Calibration of a predicted SD of log(estimate) (e.g. PHAE's ``phae_cbf_uncertainty`` / 100).

    The interval ``estimate · exp(±z · sd)`` should hold the (positive) truth in ~95 % of voxels for
    z = 1.96 if the SD is honest. An estimate <= 0 has no log: its interval never holds the truth.
    Voxels with ``sd >= informative_sd`` (100 % relative SD by default) say "unknown" rather than a
    value, so the coverage is reported over the informative voxels and over all of them.

    Returns a dict of fractions: ``coverage`` (informative voxels), ``coverage_all``, ``informative``
    (share with sd < informative_sd), ``nonpositive`` (share with estimate <= 0) and
    ``nonpositive_flagged`` (of those, the share the SD marks uninformative; NaN when there are none).

    >>> r = log_interval_coverage([1.0, 1.0, -0.1], [1.1, 3.0, 1.0], [0.1, 0.1, 2.0])
    >>> r["coverage"], round(r["informative"], 3), r["nonpositive_flagged"]
    (0.5, 0.667, 1.0)
    """
    e, t = _pair(estimate, truth, mask)
    s = _pair(log_sd, truth, mask)[0]
    if not e.size:
        return {k: float("nan") for k in ("coverage", "coverage_all", "informative", "nonpositive", "nonpositive_flagged")}
    if np.any(t <= 0):
        raise ValueError("log_interval_coverage needs a positive truth")
    positive = e > 0
    inside = np.zeros(e.shape, bool)
    inside[positive] = np.abs(np.log(t[positive] / e[positive])) <= z * s[positive]
    informative = s < informative_sd
    nonpositive = ~positive
    return {"coverage": float(inside[informative].mean()) if informative.any() else float("nan"),
            "coverage_all": float(inside.mean()), "informative": float(informative.mean()),
            "nonpositive": float(nonpositive.mean()),
            "nonpositive_flagged": float((~informative[nonpositive]).mean()) if nonpositive.any() else float("nan")}


# --- agreement ----------------------------------------------------------------------------------
def lin_ccc(x, y, mask=None) -> float:
    """Lin's concordance correlation coefficient (Lin, Biometrics 1989;45:255-268).

    ``ρc = 2 s_xy / (s_x² + s_y² + (x̄ - ȳ)²)`` with the 1/n (population) moments of Lin's paper.
    It equals Pearson's r times the bias-correction factor ``C_b = 2 / (v + 1/v + u²)``
    (``v = s_x/s_y``, ``u = (x̄ - ȳ)/sqrt(s_x s_y)``), so unlike r it is 1 only on the identity line:
    a constant offset or a slope other than 1 lowers it. Not in scikit-learn or scipy.

    >>> round(lin_ccc([1, 2, 3], [2, 3, 4]), 6)   # 2·(2/3) / (2/3 + 2/3 + 1) = 4/7
    0.571429
    """
    a, b = _pair(x, y, mask)
    if a.size < 2:
        return float("nan")
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(), b.var()
    cov = np.mean((a - ma) * (b - mb))
    denom = va + vb + (ma - mb) ** 2
    return float(2.0 * cov / denom) if denom > 0 else float("nan")


def pearson_r(x, y, mask=None) -> float:
    """Pearson's correlation coefficient (:func:`scipy.stats.pearsonr`); NaN for constant input."""
    a, b = _pair(x, y, mask)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.pearsonr(a, b).statistic)


# --- classification -----------------------------------------------------------------------------
class YoudenCutoff(NamedTuple):
    threshold: float  # classify as positive where score >= threshold
    sensitivity: float
    specificity: float
    j: float  # Youden's J = sensitivity + specificity - 1


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (:func:`sklearn.metrics.roc_auc_score`).

    1 = perfect separation with higher scores for positives, 0.5 = chance, 0 = perfectly inverted.
    """
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(labels).ravel(), np.asarray(scores, dtype=np.float64).ravel()))


def youden_cutoff(labels, scores) -> YoudenCutoff:
    """The ROC operating point that maximises Youden's J = TPR - FPR (:func:`sklearn.metrics.roc_curve`).

    ``threshold`` is one of the observed scores: positive where ``score >= threshold``. Ties in J are
    resolved towards the first (highest) threshold, i.e. the most specific cut-off.
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(np.asarray(labels).ravel(), np.asarray(scores, dtype=np.float64).ravel())
    j = tpr - fpr
    i = int(np.argmax(j))
    return YoudenCutoff(float(thr[i]), float(tpr[i]), float(1.0 - fpr[i]), float(j[i]))


# --- uncertainty --------------------------------------------------------------------------------
class BootstrapCI(NamedTuple):
    estimate: float  # the statistic on the original data
    low: float
    high: float


def bootstrap_ci(stat_fn: Callable[..., float], *arrays, n: int = 2000, alpha: float = 0.05,
                 seed=None) -> BootstrapCI:
    """Percentile bootstrap (1 - alpha) confidence interval of ``stat_fn(*arrays)``.

    The arrays are resampled *together* (paired: the same indices for all, as for a correlation of
    two maps or an AUC of labels and scores) with :func:`scipy.stats.bootstrap`
    (``method='percentile'``, ``n_resamples=n``). ``stat_fn`` takes the arrays and returns a scalar;
    it must be defined on every resample (an AUC needs both classes: use enough samples). ``seed``
    makes the interval reproducible.

    >>> ci = bootstrap_ci(np.mean, np.arange(100.0), seed=0)
    >>> ci.low < ci.estimate < ci.high
    True
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    data = tuple(np.asarray(a) for a in arrays)
    size = {len(a) for a in data}
    if len(size) != 1:
        raise ValueError(f"the arrays must have the same length for a paired bootstrap, got {sorted(size)}")
    kwargs = dict(n_resamples=int(n), confidence_level=1.0 - alpha, method="percentile", paired=True,
                  vectorized=False)
    try:  # scipy >= 1.15 takes `rng`; older releases only `random_state`
        res = stats.bootstrap(data, lambda *a: stat_fn(*a), rng=np.random.default_rng(seed), **kwargs)
    except TypeError:
        res = stats.bootstrap(data, lambda *a: stat_fn(*a), random_state=np.random.default_rng(seed), **kwargs)
    return BootstrapCI(float(stat_fn(*data)), float(res.confidence_interval.low),
                       float(res.confidence_interval.high))


# --- image similarity ---------------------------------------------------------------------------
def _data_range(reference: np.ndarray, mask: np.ndarray | None) -> float:
    r = reference[mask] if mask is not None else reference
    return float(np.max(r) - np.min(r)) if r.size else 0.0


def psnr(reference, estimate, mask=None, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 · log10(L² / MSE)``, MSE over the (masked) voxels.

    ``L`` (``data_range``) defaults to ``max - min`` of the *reference* over the mask (scikit-image
    instead defaults to the dtype range; give ``data_range`` explicitly to compare with other tools).
    Identical images give ``inf``.
    """
    e, t = _pair(estimate, reference, mask)
    ref = np.asarray(reference, dtype=np.float64)
    L = float(data_range) if data_range is not None else _data_range(ref, None if mask is None else np.asarray(mask, bool))
    mse = np.mean((e - t) ** 2)
    if mse == 0:
        return float("inf")
    if L <= 0:
        raise ValueError("data_range is 0 (a constant reference): give data_range explicitly")
    return float(10.0 * np.log10(L * L / mse))


def ssim(reference, estimate, mask=None, data_range: float | None = None, sigma=1.5,
         k1: float = 0.01, k2: float = 0.03, truncate: float = 3.5) -> float:
    """Mean structural similarity (Wang, Bovik, Sheikh, Simoncelli; IEEE TIP 2004;13:600-612).

    Per voxel, with local Gaussian-weighted statistics (window σ = ``sigma`` voxels, cut at
    ``truncate``·σ: the 11-tap σ = 1.5 window of Wang 2004):

        SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
        C1 = (k1 L)², C2 = (k2 L)², k1 = 0.01, k2 = 0.03, L = ``data_range``

    (L defaults to ``max - min`` of the reference over the mask). Works in 2D or 3D (``sigma`` may
    be a per-axis sequence, e.g. ``(1.5, 1.5, 0)`` for slice-wise SSIM of a volume).

    Masking: local statistics use only voxels inside the mask (normalised convolution,
    ``μx = G(m·x) / G(m)`` etc.), so background and out-of-mask structure do not leak into the
    windows at the border; the SSIM map is then averaged over the mask. Without a mask this is the
    plain Gaussian SSIM with 'reflect' boundaries. Identical images give exactly 1.
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(estimate, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"reference and estimate differ in shape: {x.shape} vs {y.shape}")
    m = np.ones(x.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != x.shape:
        raise ValueError(f"mask shape {m.shape} does not match the images {x.shape}")
    if not m.any():
        return float("nan")
    L = float(data_range) if data_range is not None else _data_range(x, m)
    if L <= 0:
        raise ValueError("data_range is 0 (a constant reference): give data_range explicitly")
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    w = m.astype(np.float64)

    def g(a):
        return ndimage.gaussian_filter(a, sigma, mode="reflect", truncate=truncate)

    norm = g(w)
    inside = m & (norm > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        def local_mean(a):
            return g(w * a)[inside] / norm[inside]

        xm, ym = x * w, y * w  # zero outside: nothing outside the mask enters a window
        mx, my = local_mean(xm), local_mean(ym)
        vx = local_mean(xm * x) - mx * mx
        vy = local_mean(ym * y) - my * my
        cxy = local_mean(xm * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return float(np.mean(num / den))


def dice(a, b) -> float:
    """Dice overlap ``2|A ∩ B| / (|A| + |B|)`` of two binary masks (1 - :func:`scipy.spatial.distance.dice`).

    Two empty masks agree perfectly: 1.0 (scipy leaves this 0/0 case undefined).
    """
    u = np.asarray(a, dtype=bool).ravel()
    v = np.asarray(b, dtype=bool).ravel()
    if u.shape != v.shape:
        raise ValueError(f"masks differ in size: {u.size} vs {v.size}")
    if not (u.any() or v.any()):
        return 1.0
    return float(1.0 - distance.dice(u, v))

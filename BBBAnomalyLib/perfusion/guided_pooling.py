"""Edge-preserving pooling of perfusion curves over neighbouring voxels, guided by the pre-contrast image.

Why: at low contrast-to-noise a single voxel's curve cannot tell its flow apart from noise, and every per-voxel
estimator is then biased (PHAE towards its training prior, oSVD through its truncation). Averaging a voxel with
its neighbours would help, but blind averaging mixes grey matter, white matter and CSF (tried and rejected in
issue 14, round 7). The pre-contrast (baseline) signal S0 separates those tissues far better than any single
voxel's bolus curve does: it is averaged over all baseline frames and its T2*/proton-density contrast is large
(on the project's phantom at SNR 20, GM vs WM AUC 0.99 from S0, 0.58 from CBV). So each voxel takes a weighted
mean of the curves in its 3x3x3 neighbourhood (in-plane only where slices are thicker than 3 mm), a neighbour's
weight falling with its S0 difference measured in units of that difference's noise: a joint bilateral filter
whose range kernel is set by the data's own noise, so it pools strongly where the case is noisy and hardly at
all where S0 differences exceed noise (high SNR, tissue boundaries, vessels).

The weight of neighbour j for voxel i is exp(-d^2 / 2) with d = (S0_i - S0_j) / (K * sqrt(2) * sd(S0)), where
sd(S0) = sigma / sqrt(baseline frames) is the noise of one voxel's baseline mean and K = RANGE_K noise units.
What it costs: detail at the scale of the neighbourhood whose S0 does not differ (a one-voxel hot spot inside
tissue of the same baseline signal is averaged with its neighbours).
"""

from __future__ import annotations

import itertools

import numpy as np

#: the range kernel's width in units of the noise of an S0 difference (chosen on the project's phantom at
#: SNR 20-50 between 1 and 2, issue 14 round 8; docs/validation.md)
RANGE_K = 2.0
#: slices (or any axis) thicker than this pool in-plane only
MAX_NEIGHBOUR_MM = 3.0
#: neighbours below this weight are not read
MIN_WEIGHT = 1e-3
#: "auto" pools only below this per-frame contrast-to-noise of the case (the brain's mean-curve peak over the median
#: voxel's baseline SD, dsc.pipeline.contrast_to_noise). Above it the per-voxel network was within +/-15 % on every brain
#: tried, and pooling cost voxel accuracy on the single-subject Colin27 brain (CCC 0.81 -> 0.61 at SNR 100, 0.67 ->
#: 0.52-0.59 at SNR 50); below it per-voxel CBF was 13-47 % low. The phantoms read 1.02-1.28 at SNR 35 and 1.46-1.83
#: at SNR 50 on the MNI152 and Colin27 brains; a later, lower AIF at SNR 50 reads 0.98-1.18, like SNR 35 (issue 14,
#: rounds 8b-8c, docs/validation.md). Contrast, not the baseline's SNR: a low dose or a weak bolus lowers it too.
#: Session 24 re-measured it on the three brains with SNR 70 added (scripts/validate_phae_pooling_switch.py): the
#: first unpooled SNR (50) reads worse than the pooled SNR 35 on every brain, but every higher switch (1.5-4) lost the
#: CCC-at-or-above-oSVD goal somewhere (1.5: 1.5 s dispersion on MNI152; 2.6: 9 settings, mostly Colin27), and on
#: MNI152 and ICBM a switch of 2.2-2.6 only moved the dip up to SNR 100. So it stays.
AUTO_MAX_CNR = 1.35


class GuidedPooling:
    """The neighbourhood weights of every brain voxel (np.flatnonzero(brain) order), applied to rows of curves.

    >>> pooling = GuidedPooling(brain, s0, s0_sd, voxel_sizes)
    >>> pooled = pooling.pool(curves, slice(0, 8192))     # the first 8192 voxels' pooled curves
    """

    def __init__(self, brain: np.ndarray, guide: np.ndarray, guide_sd: float, voxel_sizes, k: float = RANGE_K):
        brain = np.asarray(brain, bool)
        guide = np.asarray(guide, np.float32)  # S0 differences of ~1e-4 relative are far below any noise
        if guide.shape != (int(brain.sum()),):
            raise ValueError(f"guide must hold one value per brain voxel ({int(brain.sum())}); got {guide.shape}")
        if not (np.isfinite(guide_sd) and guide_sd > 0):
            raise ValueError(f"the guide's noise SD must be finite and > 0; got {guide_sd}")
        self.n = int(brain.sum())
        # neighbour lookup without bounds checks: the voxels' indices in a volume padded by one voxel of -1
        padded = np.full(tuple(d + 2 for d in brain.shape), -1, np.int32)
        padded[tuple(slice(1, -1) for _ in brain.shape)][brain] = np.arange(self.n, dtype=np.int32)
        self.lookup = padded.ravel()
        self.flat = np.ravel_multi_index(tuple(c + 1 for c in np.nonzero(brain)), padded.shape).astype(
            np.int32 if padded.size < 2**31 - 1 else np.int64)
        self.guide = guide
        self.scale = float(k * np.sqrt(2.0) * guide_sd)
        sizes = np.asarray(voxel_sizes, float)[: brain.ndim]
        reach = [1 if s <= MAX_NEIGHBOUR_MM else 0 for s in sizes]
        self.offsets = [o for o in itertools.product(*[range(-r, r + 1) for r in reach]) if any(o)]
        strides = np.array([int(np.prod(padded.shape[a + 1:])) for a in range(brain.ndim)])
        self.deltas = np.array([int(np.dot(o, strides)) for o in self.offsets], dtype=self.flat.dtype)
        self.reach = tuple(reach)

    def _rows(self, rows) -> np.ndarray:
        """Row indices of a slice or an index array."""
        if isinstance(rows, slice):
            return np.arange(*rows.indices(self.n), dtype=np.int32)
        return np.asarray(rows, np.int32)

    def neighbours(self, rows):
        """For the voxels in `rows` (a slice or row indices): (indices, weights), each (m, 1 + len(offsets)), the
        voxel itself first with weight 1; a missing neighbour, or one below MIN_WEIGHT, has weight 0 (and the
        voxel's own index)."""
        own = self._rows(rows)
        m = own.size
        idx = np.empty((m, 1 + len(self.deltas)), np.int32)
        idx[:, 0] = own
        # every neighbour of every voxel in one gather (no bounds checks: the padding holds -1)
        np.take(self.lookup, self.flat[own][:, None] + self.deltas[None, :], out=idx[:, 1:])
        missing = idx < 0
        np.copyto(idx, own[:, None], where=missing)
        d = self.guide[idx]
        d -= d[:, :1]
        d *= np.float32(1.0 / self.scale)  # float32: S0 differences in units of the range width
        w = np.exp(-0.5 * d * d)
        w[missing | (w < MIN_WEIGHT)] = 0.0
        return idx, w

    def pool(self, curves: np.ndarray, rows) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean of each voxel's curve (weight 1) and its neighbours' for the voxels in `rows` (a slice or
        row indices): (n_rows, T) float32 (one sparse product), and per voxel the effective number of curves
        pooled, (sum w)^2 / sum w^2 (1 = none)."""
        idx, w = self.neighbours(rows)
        m, width = idx.shape
        total = w.sum(axis=1, dtype=np.float64)
        effective = total ** 2 / (w.astype(np.float64) ** 2).sum(axis=1)
        w /= total[:, None].astype(np.float32)
        # zero weights stay in the matrix: filtering them costs more than multiplying them
        return _csr_product(w.ravel(), idx.ravel(), width, curves), effective.astype(np.float32)


def _csr_product(values: np.ndarray, columns: np.ndarray, width: int, dense: np.ndarray) -> np.ndarray:
    """(m, T) float32 product of the CSR matrix whose every row holds ``width`` entries (``values`` at ``columns``,
    row-major) with ``dense`` (n, T) float32. torch's CSR product where torch is installed (the PHAE pipeline, the
    one caller: pool() in 0.75-0.93x of the time, issue 14 round 14, docs/benchmarks.md), scipy's otherwise. Each
    row is the same sum over its entries whichever rows share the call."""
    m = values.size // width
    try:
        import torch
    except ImportError:  # pragma: no cover - the PHAE pipeline needs torch anyway
        torch = None
    if torch is None or columns.dtype != np.int32:
        from scipy import sparse

        matrix = sparse.csr_matrix((values, columns, np.arange(0, m * width + 1, width)), shape=(m, dense.shape[0]))
        return np.asarray(matrix @ dense, dtype=np.float32)
    import warnings

    with warnings.catch_warnings():  # "CSR support is in beta" (the API's stability; tests check the product)
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(torch.arange(0, m * width + 1, width, dtype=torch.int32),
                                         torch.from_numpy(columns), torch.from_numpy(values),
                                         size=(m, dense.shape[0]), check_invariants=False)
        return (matrix @ torch.from_numpy(np.ascontiguousarray(dense, np.float32))).numpy()


def baseline_guide(signal_rows: np.ndarray, baseline: slice, block: int = 16384) -> tuple[np.ndarray, float]:
    """S0 per voxel (the mean of its baseline frames) and the noise SD of that mean: the median over voxels of
    the baseline frames' standard deviation, divided by sqrt(number of baseline frames). In blocks of rows: the
    caller's series and curves are alive at this point, so no temporary as large as the baseline frames."""
    n_rows = signal_rows.shape[0]
    frames = range(*baseline.indices(signal_rows.shape[1]))
    if len(frames) < 2:
        raise ValueError("the pre-contrast baseline has fewer than 2 frames: no noise estimate for pooling")
    s0 = np.empty(n_rows, np.float32)
    sd = np.empty(n_rows, np.float32)
    for start in range(0, n_rows, block):
        # frames along the first axis: the few-frame reductions become whole-row adds (half the time of
        # mean/std along a short last axis)
        base = np.array(signal_rows[start:start + block, baseline].T, np.float64)
        mean = base.sum(axis=0) / len(frames)
        base -= mean
        s0[start:start + block] = mean
        sd[start:start + block] = np.sqrt(np.einsum("ij,ij->j", base, base) / (len(frames) - 1))
    return s0, float(np.median(sd)) / np.sqrt(len(frames))

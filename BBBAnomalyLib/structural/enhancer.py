"""A learned enhancement predictor: T1Gd - T1 from multi-scale voxel features of the T1 and FLAIR.

Why: the diffusion model's syntheses change almost nothing on real cases (docs/validation.md), yet
simple intensity features carry the signal -- voxels that brighten with gadolinium (vessels, dura,
choroid plexus, the rim of an enhancing tumour) are FLAIR-dark and T1-intermediate relative to
their neighbourhood, and often near the brain's surface. So the enhancement is predicted voxel by
voxel from:

* the normalised T1 and FLAIR (the seed's 0-255 scale, normalisation.py) and their Gaussian
  averages inside the brain at sigma = 1, 2.5 and 6 mm (normalised convolution: the average over
  brain voxels only, so the brain's edge does not read as dark);
* each voxel's deviation from those averages (local contrast: a vessel is darker than its 2.5 mm
  neighbourhood on the FLAIR), the local standard deviation at 2.5 mm and the gradient magnitude;
* the distance to the brain's surface in mm (dura and cortical vessels lie on it).

Sigmas are in millimetres, so a 1 mm and a 2 mm grid give the same features up to resolution.

The model (:class:`EnhancerEnsemble`) is an ensemble of small MLPs (features -> 64 -> 64 -> mean,
log variance, and one logit per threshold of ``THRESHOLDS``), trained with a Gaussian negative
log-likelihood of the change plus the cross-entropy of "change > threshold". Each member trains on
a different subset of the training *cases* (:func:`member_groups`: one per left-out case, one on
all), so their disagreement is the between-case spread -- what one case's sequence contrast
would paint onto another. Per voxel: the predicted change E (the members' mean), its epistemic
variance V (their variance) and the aleatoric variance A (their mean predicted variance).

* The enhancing-voxel score is p(change > threshold) of the all-case members, averaged over them
  and the thresholds (a ranking: higher = more likely to brighten; measured by its AUC).
* The synthetic T1Gd is T1 + E shrunk towards 0 by its own uncertainty, positive-part
  James-Stein: ``E * max(0, 1 - k V / E^2)``, 0 where |E| < ``MIN_CHANGE``, then weighted by the
  enhancing-voxel score: ``added = max(that, 0) * score`` (:func:`added_enhancement`). E is the
  conditional mean of the change, so adding it lowers the expected squared error wherever the
  model is right about that mean; the shrinkage drops it where the members disagree (inputs
  unlike the training data, or cases that disagree), the score where the voxel is unlikely to
  brighten at all. Only the positive part is added (gadolinium only brightens): a signed change
  also carries one case's grey/white sequence contrast, which on a held-out case cost up to 5 dB.
  Without the score weight the PSNR gain is larger but the SSIM falls (-0.03 on TCGA-FG-6692,
  -0.0008 on TCGA-DU-7294; with it +0.0003 / +0.0005 on DU-7294 / BraTS-GLI and -0.003 on FG-6692;
  docs/validation.md).
* The weights' ``config["rule"]`` then scales that by a global factor alpha, raises the score to a
  power and holds it back within a margin of the brain surface (:func:`added_enhancement`). The rule
  is chosen by nested cross-validation on the training cases only (scripts/train_t1flair_enhancer.py:
  a model on all training cases but one, every :func:`candidate_rules` rule scored on the one left
  out against its plain T1; :func:`choose_rule` keeps the rule with the best worst case of
  min(SSIM gain, 0.01 x PSNR gain in dB), adding nothing unless a rule beats it on every inner case).
  Weights without a rule keep :data:`DEFAULT_RULE` (the second pass).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .preprocessing import BrainMaps  # noqa: F401  (re-exported: it lived here)
from ..core.memory import release_freed_memory
from .preprocessing import distance_at

#: Gaussian scales (mm) of the neighbourhood features.
SIGMAS_MM = (1.0, 2.5, 6.0)
#: |change| below this (0-255 scale) is not added: a fifth of the normalised T1's robust sd (31 units).
MIN_CHANGE = 6.0
#: The classification heads: p(T1Gd - T1 > t) for these t (0-255 scale; about 1 and 2 robust sd of the T1).
THRESHOLDS = (30.0, 60.0)
#: Ensemble members trained on every training case; their mean p(change > t) is the enhancing-voxel score.
FULL_MEMBERS = 3
FEATURE_NAMES = (
    ["t1", "flair", "t1_minus_flair"]
    + [f"{c}_mean_{s:g}mm" for s in SIGMAS_MM for c in ("t1", "flair")]
    + [f"{c}_dev_{s:g}mm" for s in SIGMAS_MM for c in ("t1", "flair")]
    + ["t1_sd_2.5mm", "flair_sd_2.5mm", "t1_gradient", "flair_gradient", "depth_mm", "depth_log"]
)
N_FEATURES = len(FEATURE_NAMES)


def _masked_smooth(data: np.ndarray, weight: np.ndarray, weight_smooth: np.ndarray, sigma_vox) -> np.ndarray:
    num = ndimage.gaussian_filter(data * weight, sigma_vox, mode="constant", truncate=3.0)
    num /= np.maximum(weight_smooth, 1e-3)  # in place: the same float32 quotient, one volume fewer
    return num


def feature_box(brain: np.ndarray) -> tuple[slice, ...]:
    """The brain's bounding box + 4 voxels (clipped to the grid): all that :func:`voxel_features` reads. Features of
    images cropped to it (with ``brain[box]``) are those of the whole images; the pipeline passes the crops."""
    return tuple(slice(max(int(ix.min()) - 4, 0), int(ix.max()) + 5) for ix in np.nonzero(np.asarray(brain, bool)))


def _box_image(image: np.ndarray, box, brain: np.ndarray) -> np.ndarray:
    """float32 ``image[box]``, 0 off ``brain`` (= np.where(brain, image[box], 0.0), in one array)."""
    out = np.array(np.asarray(image)[box], np.float32)
    out[~brain] = 0.0
    return out


def voxel_features(t1_0255: np.ndarray, flair_0255: np.ndarray, brain: np.ndarray, voxel_mm) -> np.ndarray:
    """(n_brain_voxels, N_FEATURES) float32, in the order of ``FEATURE_NAMES`` (C order of ``brain``).

    ``t1_0255``, ``flair_0255``: normalised images on the same grid (normalisation.normalise_0_255).

    Memory (issue 17): each column is written into the one output as it is computed (a list of columns stacked at
    the end held the matrix twice: 2 x 128 MiB on a 1 mm brain of 1.6 M voxels); deviations, local sd and gradient
    are formed in place or on the brain's voxels; the gradient's float64 step runs by slabs. The same float32 and
    float64 operations as before, so the same values (Testing/test_t1flair_memory.py). :func:`voxel_feature_blocks`
    gives the same rows block by block without the whole matrix (the pipeline's way)."""
    brain = np.asarray(brain, bool)
    out = np.empty((int(brain.sum()), N_FEATURES), np.float32)
    for _ in voxel_feature_blocks(t1_0255, flair_0255, brain, voxel_mm, planes=None, out=out):
        pass  # the one block is ``out`` itself
    return out


#: Planes (along the brain box's first axis) of one block of :func:`voxel_feature_blocks` in the pipeline. On a 1 mm
#: BraTS brain (box 148 x 198 x 145) the enhancer step peaks +119 MiB over its start at 16, +193 at 48, +269 for
#: the whole box at once, for ~1 s more than the whole box (each slab's halo is filtered again).
BLOCK_PLANES = 16


def _reach(sigma_vox: float) -> int:
    """Voxels a truncate=3 Gaussian of this sd reads on each side (scipy's radius)."""
    return int(3.0 * float(sigma_vox) + 0.5)


def voxel_feature_blocks(t1_0255: np.ndarray, flair_0255: np.ndarray, brain: np.ndarray, voxel_mm,
                         planes: int | None = BLOCK_PLANES, out: np.ndarray | None = None):
    """The rows of :func:`voxel_features` block by block, in order (their concatenation is its matrix, bit for bit).

    The brain's box is cut into slabs of ``planes`` planes along its first axis (None: one slab); each is filtered
    with a halo of planes wider than every filter's reach (the Gaussians' truncate radius, the gradient's smoothing
    + 1), so its inner planes see the same voxels through the same operations as the whole box would: the same
    values. Memory (issue 17): one slab's features and filter temporaries at a time instead of the (n_brain, 21)
    matrix (131 MiB on a 1 mm brain) and the whole box's. ``out``: write the rows there (n_brain rows) instead of new
    blocks (the blocks are then its row views)."""
    brain = np.asarray(brain, bool)
    voxel_mm = np.asarray(voxel_mm, np.float64)[:3]
    if not brain.any():
        return
    # Only the brain's bounding box (+4 voxels) is filtered: everything outside the brain is 0, so the
    # masked (constant-mode) averages, the 1 mm gradient (3-voxel reach) and the depth are the same.
    box = feature_box(brain)
    inside = brain[box]
    depth = _depth_mm(inside, voxel_mm)  # float64 at the brain's voxels (a whole-box distance, made once)
    n0 = inside.shape[0]
    planes = n0 if planes is None else max(1, int(planes))
    halo = max(max(_reach(s / voxel_mm[0]) for s in SIGMAS_MM), _reach(1.0 / voxel_mm[0]) + 1) + 1
    per_plane = inside.reshape(n0, -1).sum(axis=1)
    row = 0
    for lo in range(0, n0, planes):
        hi = min(lo + planes, n0)
        a, b = (lo, hi) if (lo, hi) == (0, n0) else (max(lo - halo, 0), min(hi + halo, n0))
        rows = int(per_plane[lo:hi].sum())
        if rows == 0:
            continue
        slab = (slice(box[0].start + a, box[0].start + b),) + tuple(box[1:])
        block = out[row:row + rows] if out is not None else np.empty((rows, N_FEATURES), np.float32)
        _fill_features(block, t1_0255, flair_0255, brain[slab], slab, (lo - a, hi - a), voxel_mm,
                       depth[row:row + rows])
        row += rows
        if planes < n0:
            release_freed_memory()  # the slab's filter temporaries: not kept resident for the next slab
        yield block
        del block


def _fill_features(out: np.ndarray, t1_0255, flair_0255, brain: np.ndarray, slab, inner, voxel_mm, depth):
    """The features of ``brain``'s voxels in the planes ``inner`` = (first, stop) of ``slab`` into ``out``."""
    t1, fl = _box_image(t1_0255, slab, brain), _box_image(flair_0255, slab, brain)
    if inner == (0, brain.shape[0]):
        sel = brain
    else:
        sel = np.zeros_like(brain)
        sel[inner[0]:inner[1]] = brain[inner[0]:inner[1]]
    out[:, 0], out[:, 1] = t1[sel], fl[sel]
    out[:, 2] = out[:, 0] - out[:, 1]  # (t1 - fl)[brain], element by element
    n_scales = len(SIGMAS_MM)
    for si, s in enumerate(SIGMAS_MM):
        sigma = s / voxel_mm
        # the smoothed 0/1 brain mask (made afresh: the mask as float32 is not kept beside the images)
        ws = ndimage.gaussian_filter(brain.astype(np.float32), sigma, mode="constant", truncate=3.0)
        np.maximum(ws, 1e-3, out=ws)  # the denominator of every masked average at this scale
        for ci, img in enumerate((t1, fl)):
            # _masked_smooth(., w, ws, sigma) with w the 0/1 mask: img * w is img itself (0 off the brain)
            sq = None
            if s == 2.5:  # sq first, so that its input square is gone before m is made
                sq = ndimage.gaussian_filter(img * img, sigma, mode="constant", truncate=3.0)
                sq /= ws
            m = ndimage.gaussian_filter(img, sigma, mode="constant", truncate=3.0)
            m /= ws
            m_b = m[sel]
            out[:, 3 + 2 * si + ci] = m_b  # "<c>_mean_<s>mm"
            out[:, 3 + 2 * n_scales + 2 * si + ci] = out[:, ci] - m_b  # "<c>_dev_<s>mm" = (img - m)[brain]
            del m_b
            if sq is not None:  # "<c>_sd_2.5mm" = sqrt(max(sq - m * m, 0))[brain], in place
                m *= m
                sq -= m
                np.maximum(sq, 0.0, out=sq)
                np.sqrt(sq, out=sq)
                out[:, 3 + 4 * n_scales + ci] = sq[sel]
            del m, sq
        del ws
    for ci, img in enumerate((t1, fl)):
        smooth = ndimage.gaussian_filter(img, 1.0 / voxel_mm, mode="nearest", truncate=3.0)
        g = np.zeros_like(img)
        for axis in range(3):
            if img.shape[axis] <= 1:
                continue  # (d = 0.0: g += 0)
            step = voxel_mm[axis]  # a float64 scalar: the gradient / step is float64, as before; by slabs of
            other = 1 if axis == 0 else 0  # planes along another axis (np.gradient works along ``axis`` alone)
            for lo in range(0, img.shape[other], 8):
                sl = [slice(None)] * 3
                sl[other] = slice(lo, lo + 8)
                d = np.gradient(smooth[tuple(sl)], axis=axis) / step
                g[tuple(sl)] += d * d
        out[:, 5 + 4 * n_scales + ci] = np.sqrt(g[sel])  # "<c>_gradient" = sqrt(g)[brain]
        del smooth, g
    del t1, fl
    out[:, 7 + 4 * n_scales] = depth
    out[:, 8 + 4 * n_scales] = np.log1p(depth)


def _depth_mm(brain: np.ndarray, voxel_mm: np.ndarray) -> np.ndarray:
    """``ndimage.distance_transform_edt(brain, sampling=voxel_mm)[brain]`` with the same float64 operations in
    the same order, evaluated at the brain's voxels only (preprocessing.distance_at: not scipy's whole-box
    index grid, difference and float64 copy, 190 MiB on a 1 mm brain, issue 17)."""
    return distance_at(brain, brain, voxel_mm)


class EnhancerMLP(nn.Module):
    def __init__(self, n_features: int = N_FEATURES, width: int = 32, n_thresholds: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 2 + n_thresholds))

    def forward(self, x):
        """mean (0-255 units / target scale), log variance, and one logit per enhancement threshold."""
        out = self.net(x)
        return out[:, 0], out[:, 1].clamp(-8.0, 12.0), out[:, 2:]


class EnhancerEnsemble(nn.Module):
    """``members`` MLPs over standardised features; outputs on the 0-255 scale."""

    def __init__(self, n_features: int = N_FEATURES, width: int = 64, members: int = 3,
                 thresholds: tuple = THRESHOLDS, full_members: int = 1, rule: dict | None = None):
        super().__init__()
        thresholds = tuple(float(t) for t in thresholds)
        if not 1 <= full_members <= members:
            raise ValueError("full_members must lie in 1..members")
        self.rule = normalise_rule(rule)
        self.config = {"n_features": n_features, "width": width, "members": members, "thresholds": list(thresholds),
                       "full_members": full_members, "rule": dict(self.rule)}
        self.full_members = full_members
        self.thresholds = thresholds
        self.members = nn.ModuleList(EnhancerMLP(n_features, width, len(thresholds)) for _ in range(members))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_sd", torch.ones(n_features))
        self.register_buffer("target_scale", torch.tensor(30.0))

    def member_outputs(self, features: torch.Tensor):
        """(members, n) means and variances on the 0-255 scale, (members, n, thresholds) probabilities."""
        x = (features - self.feature_mean) / self.feature_sd
        means, variances, probs = [], [], []
        for m in self.members:
            mu, logvar, logits = m(x)
            means.append(mu * self.target_scale)
            variances.append(torch.exp(logvar) * self.target_scale ** 2)
            probs.append(torch.sigmoid(logits))
        return torch.stack(means), torch.stack(variances), torch.stack(probs)

    @torch.no_grad()
    def predict(self, features: np.ndarray, chunk: int = 32_768) -> dict[str, np.ndarray]:
        """Per row of ``features`` (float32, memory-bounded chunks: each member's hidden layers are chunk x width
        float32, 8 MiB at the default; 64 MiB each at the former 262,144 rows; the values do not depend on the
        chunk, issue 17): ``expected`` E, ``epistemic`` V (the
        members' variance of E), ``aleatoric`` A, and ``score`` = p(change > t) of the members trained on every
        training case (the last ``full_members``), averaged over them and the thresholds: the enhancing-voxel
        score. (The other members each miss a case; they serve the spread, not the ranking.)"""
        return self.predict_blocks([features], len(features), chunk)

    @torch.no_grad()
    def predict_blocks(self, blocks, n: int, chunk: int = 32_768) -> dict[str, np.ndarray]:
        """:meth:`predict` of the rows of ``blocks`` (an iterable of (rows, N_FEATURES) arrays, ``n`` rows in all,
        e.g. :func:`voxel_feature_blocks`) without their whole matrix: the networks see the same chunks of
        ``chunk`` rows as ``predict(np.concatenate(blocks))`` (a chunk that spans two blocks is joined from them),
        so the same values."""
        self.eval()
        out = {k: np.empty(n, np.float32) for k in ("expected", "epistemic", "aleatoric", "score")}
        done, pending, waiting = 0, [], 0  # rows predicted; rows of a chunk not yet complete
        for block in blocks:
            pos = 0
            if waiting:
                take = min(chunk - waiting, len(block))
                pending.append(np.array(block[:take], np.float32))
                waiting, pos = waiting + take, take
                if waiting == chunk:
                    self._predict_chunk(np.concatenate(pending), out, done)
                    done, pending, waiting = done + chunk, [], 0
            while len(block) - pos >= chunk:
                self._predict_chunk(block[pos:pos + chunk], out, done)
                done, pos = done + chunk, pos + chunk
            if pos < len(block):
                pending, waiting = [np.array(block[pos:], np.float32)], len(block) - pos
            del block  # not alive while the next block is made
        if waiting:
            self._predict_chunk(np.concatenate(pending), out, done)
            done += waiting
        if done != n:
            raise ValueError(f"the blocks hold {done} rows, not {n}")
        return out

    def _predict_chunk(self, features: np.ndarray, out: dict, i: int) -> None:
        x = torch.as_tensor(np.asarray(features, np.float32))
        means, variances, probs = self.member_outputs(x)
        k = len(x)
        out["expected"][i:i + k] = means.mean(0).numpy()
        out["epistemic"][i:i + k] = (means.var(0, unbiased=True) if means.shape[0] > 1
                                     else torch.zeros_like(means[0])).numpy()
        out["aleatoric"][i:i + k] = variances.mean(0).numpy()
        out["score"][i:i + k] = probs[-self.full_members:].mean(dim=(0, 2)).numpy()


def shrunk_change(expected: np.ndarray, epistemic_variance: np.ndarray, shrinkage: float = 1.0,
                  floor: float = MIN_CHANGE) -> np.ndarray:
    """Positive-part James-Stein: ``E max(0, 1 - k V / E^2)``, 0 where |E| < floor (see the module docstring)."""
    e = np.asarray(expected, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.clip(1.0 - shrinkage * np.asarray(epistemic_variance, np.float32) / np.maximum(e * e, 1e-6), 0.0, 1.0)
    return np.where(np.abs(e) >= floor, e * factor, 0.0).astype(np.float32)


#: The second pass's rule (what weights without a ``rule`` in their card use): James-Stein k = 1, x score,
#: nothing held back globally or at the surface.
DEFAULT_RULE = {"alpha": 1.0, "score_power": 1.0, "surface_margin_mm": 0.0, "shrinkage": 1.0}
#: The nested choice weighs 1 dB of brain PSNR like 0.01 of brain SSIM (fixed before any rule was scored).
PSNR_DB_TO_SSIM = 0.01


def normalise_rule(rule: dict | None) -> dict:
    """``DEFAULT_RULE`` updated by ``rule``; one ValueError for an unknown key or a value out of range."""
    out = dict(DEFAULT_RULE)
    for key, value in (rule or {}).items():
        if key not in DEFAULT_RULE:
            raise ValueError(f"unknown enhancement rule key {key!r} (known: {', '.join(DEFAULT_RULE)})")
        out[key] = float(value)
    if not (0.0 <= out["alpha"] <= 1.0 and out["score_power"] >= 0 and out["surface_margin_mm"] >= 0
            and out["shrinkage"] >= 0):
        raise ValueError(f"enhancement rule out of range: {out}")
    return out


def added_enhancement(expected: np.ndarray, epistemic_variance: np.ndarray, score: np.ndarray,
                      shrinkage: float | None = None, rule: dict | None = None,
                      depth_mm: np.ndarray | None = None) -> np.ndarray:
    """What the synthetic T1Gd adds to the T1 under ``rule`` (:data:`DEFAULT_RULE` keys):

        alpha * max(James-Stein_k(E, V), 0) * score ** score_power * [depth > surface_margin_mm]

    i.e. the positive part of the shrunk change, weighted by the probability that the voxel brightens,
    scaled by a global factor and left out within a margin of the brain surface. ``shrinkage`` (if
    given) overrides the rule's k. ``depth_mm`` (distance to the brain surface) is needed only for a
    margin > 0. The rule of bundled weights is chosen by nested cross-validation (train script)."""
    r = normalise_rule(rule)
    k = r["shrinkage"] if shrinkage is None else float(shrinkage)
    if r["alpha"] == 0.0:
        return np.zeros(np.shape(expected), np.float32)
    s = np.clip(np.asarray(score, np.float32), 0.0, 1.0)
    out = np.maximum(shrunk_change(expected, epistemic_variance, k), 0.0) * (s ** np.float32(r["score_power"]))
    if r["surface_margin_mm"] > 0:
        if depth_mm is None:
            raise ValueError("a surface margin needs the depth below the brain surface (depth_mm)")
        out = np.where(np.asarray(depth_mm) > r["surface_margin_mm"], out, 0.0)
    return (np.float32(r["alpha"]) * out).astype(np.float32)


def candidate_rules(alphas=(0.1, 0.25, 0.5, 0.75, 1.0), score_powers=(1.0, 2.0, 4.0, 8.0),
                    margins_mm=(0.0, 2.0, 3.0, 5.0), shrinkage: float = 1.0) -> list[dict]:
    """The rules the nested cross-validation chooses from: adding nothing (alpha 0) first, then every
    combination of a global factor alpha, the score's exponent and a surface margin (k fixed: an inner
    model trained on one case has no between-case spread to calibrate it on)."""
    rules = [normalise_rule({"alpha": 0.0, "shrinkage": shrinkage})]
    rules += [normalise_rule({"alpha": a, "score_power": p, "surface_margin_mm": m, "shrinkage": shrinkage})
              for a in alphas for p in score_powers for m in margins_mm if a > 0]
    return rules


def rule_objective(d_ssim: float, d_psnr_db: float) -> float:
    """The worse of the SSIM gain and the scaled PSNR gain over the plain T1: a rule scores > 0 only if
    it beats doing nothing on both."""
    return float(min(d_ssim, PSNR_DB_TO_SSIM * d_psnr_db))


def choose_rule(rules: list[dict], gains: list[list[tuple[float, float]]]) -> tuple[int, list[float]]:
    """Index of the rule whose WORST :func:`rule_objective` over the validation cases is largest, and the
    worst objective of every rule. ``gains[i][c]`` = (SSIM gain, PSNR gain in dB) of rule i on validation
    case c, each against the plain T1 of that case. Ties keep the earlier rule (the candidate list starts
    with adding nothing, then the weaker rules), so a rule must beat doing nothing strictly."""
    if len(rules) != len(gains) or not rules:
        raise ValueError("one list of validation gains per rule is needed")
    worst = [min(rule_objective(ds, dp) for ds, dp in g) for g in gains]
    best = 0
    for i, w in enumerate(worst):
        if w > worst[best]:
            best = i
    return best, worst


def predict_maps(model: EnhancerEnsemble, t1_0255: np.ndarray, flair_0255: np.ndarray, brain: np.ndarray, voxel_mm,
                 shrinkage: float | None = None, rule: dict | None = None,
                 block_planes: int | None = BLOCK_PLANES) -> BrainMaps:
    """Native-grid maps (0 off the brain; a :class:`BrainMaps`: each read makes the full array):
    ``predicted_change`` E, ``added`` (the weights' rule, see :func:`added_enhancement`; ``rule`` overrides it,
    ``shrinkage`` its k), ``enhancing_score`` (mean p(change > threshold)), ``uncertainty`` (predictive sd
    sqrt(V + A)), ``epistemic_sd`` sqrt(V). The features are made and predicted ``block_planes`` planes of the
    brain's box at a time (:func:`voxel_feature_blocks`; None: the whole box at once): the same values."""
    brain = np.asarray(brain, bool)
    n = int(brain.sum())
    depth = np.empty(n, np.float32)  # the features' depth column (the rule's surface margin)
    column = FEATURE_NAMES.index("depth_mm")

    def blocks():  # slab by slab (issue 17: not the (n_brain, 21) matrix, 131 MiB on a 1 mm brain)
        row = 0
        for block in voxel_feature_blocks(t1_0255, flair_0255, brain, voxel_mm, planes=block_planes):
            depth[row:row + len(block)] = block[:, column]
            row += len(block)
            yield block
            del block

    pred = model.predict_blocks(blocks(), n)
    e, v = pred["expected"], pred["epistemic"]
    added = added_enhancement(e, v, pred["score"], shrinkage, model.rule if rule is None else rule, depth)
    values = {"predicted_change": e, "added": added, "enhancing_score": pred["score"],
              "uncertainty": np.sqrt(v + pred["aleatoric"]), "epistemic_sd": np.sqrt(v)}
    return BrainMaps(brain, {name: np.asarray(a, np.float32) for name, a in values.items()})


def member_groups(n_groups: int, full_members: int = FULL_MEMBERS) -> list[list[int]]:
    """The training cases (group indices) of each ensemble member: one member per left-out case
    (with 2 cases: each case alone), then ``full_members`` on all cases (different initialisations;
    the last ones). The disagreement of all of them is the *between-case* spread of the predicted
    change: what transfers to a new case and what is one case's sequence contrast."""
    if n_groups < 1:
        raise ValueError("at least one training case is needed")
    everything = [list(range(n_groups))] * max(1, int(full_members))
    if n_groups == 1:
        return everything
    return [[g for g in range(n_groups) if g != left] for left in range(n_groups)] + everything


def fit_ensemble(features: np.ndarray, targets: np.ndarray, groups: np.ndarray | None = None, width: int = 64,
                 epochs: int = 12, batch: int = 4096, lr: float = 3e-3, seed: int = 0, thresholds: tuple = THRESHOLDS,
                 full_members: int = FULL_MEMBERS, progress=None) -> EnhancerEnsemble:
    """One member per subset of :func:`member_groups` (``groups``: the case index of each row; None =
    one case); loss = Gaussian NLL of the change + the binary cross-entropy of each threshold head;
    Adam with a cosine schedule. Deterministic for a seed (on one thread), whatever ran before in the process."""
    features = np.asarray(features, np.float32)
    targets = np.asarray(targets, np.float32)
    groups = np.zeros(len(features), int) if groups is None else np.asarray(groups)
    names, group_index = np.unique(groups, return_inverse=True)
    subsets = member_groups(len(names), full_members)
    torch.manual_seed(seed)  # before the members are built: their initialisation too depends on the seed only
    model = EnhancerEnsemble(features.shape[1], width, len(subsets), thresholds,
                             sum(len(sub) == len(names) for sub in subsets) if len(names) > 1 else len(subsets))
    model.feature_mean.copy_(torch.as_tensor(features.mean(0)))
    model.feature_sd.copy_(torch.as_tensor(np.maximum(features.std(0), 1e-3)))
    model.target_scale.fill_(float(max(np.std(targets), 1.0)))
    torch.manual_seed(seed)
    x_all = (torch.as_tensor(features) - model.feature_mean) / model.feature_sd
    y_all = torch.as_tensor(targets) / model.target_scale
    labels = torch.stack([torch.as_tensor(targets > t, dtype=torch.float32) for t in model.thresholds], 1)
    bce = nn.BCEWithLogitsLoss()
    for k, (member, subset) in enumerate(zip(model.members, subsets)):
        rows = torch.as_tensor(np.flatnonzero(np.isin(group_index, subset)))
        n = len(rows)
        opt = torch.optim.Adam(member.parameters(), lr=lr, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        for epoch in range(epochs):
            perm = rows[torch.randperm(n)]
            for i in range(0, n, batch):
                idx = perm[i:i + batch]
                mu, logvar, logits = member(x_all[idx])
                loss = (0.5 * (logvar + (y_all[idx] - mu) ** 2 * torch.exp(-logvar))).mean() + bce(logits, labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if progress:
                progress(k, epoch, float(loss))
    return model.eval()


class SynthesisScorer:
    """Brain PSNR and slice-wise SSIM of ``T1 + added`` against a real T1Gd, as scripts/validate_t1flair.py
    measures them (seed 0-255 scale, L = 255, masked SSIM of ``metrics.ssim`` with a window of sigma 1.5
    voxels in-plane and 0 across slices), and the same for the plain T1. The nested rule choice scores tens
    of rules per case, so the SSIM is computed on the brain's bounding box plus a margin wider than the
    window (the masked SSIM reads only voxels inside the mask: the crop gives the same value) and the
    reference's local statistics are computed once (the same arithmetic as ``metrics.ssim``)."""

    def __init__(self, t1_0255: np.ndarray, reference_0255: np.ndarray, brain: np.ndarray, slice_axis: int,
                 window_sigma: float = 1.5, truncate: float = 3.5):
        brain = np.asarray(brain, bool)
        sigma = [window_sigma] * 3
        sigma[slice_axis] = 0.0
        self.sigma, self.truncate = sigma, truncate
        pad = int(np.ceil(truncate * window_sigma)) + 2
        self.box = tuple(slice(max(int(ix.min()) - pad, 0), int(ix.max()) + pad + 1) for ix in np.nonzero(brain))
        self.brain = brain[self.box]
        self.t1 = np.asarray(t1_0255, np.float32)[self.box][self.brain]
        self.reference = np.asarray(reference_0255, np.float32)[self.box]
        self._w = self.brain.astype(np.float64)
        self._norm = self._g(self._w)
        self._inside = self.brain & (self._norm > 0)
        x = self.reference.astype(np.float64)
        self._xm = x * self._w
        self._mx = self._local_mean(self._xm)
        self._vx = self._local_mean(self._xm * x) - self._mx * self._mx
        self.baseline = self.metrics(np.zeros_like(self.t1), clip=False)

    def _g(self, a):
        return ndimage.gaussian_filter(a, self.sigma, mode="reflect", truncate=self.truncate)

    def _local_mean(self, a):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._g(self._w * a)[self._inside] / self._norm[self._inside]

    def metrics(self, added_brain: np.ndarray, clip: bool = True) -> dict:
        """``added_brain``: the added change on the brain's voxels (C order). The synthetic image is
        clip(T1 + added, 0, 255) as in the pipeline; ``clip=False`` scores the unclipped T1 (the baseline)."""
        from ..metrics import psnr

        values = self.t1 + np.asarray(added_brain, np.float32)
        if clip:
            values = np.clip(values, 0.0, 255.0)
        estimate = np.zeros(self.brain.shape, np.float32)
        estimate[self.brain] = values
        y = estimate.astype(np.float64)
        ym = y * self._w
        my = self._local_mean(ym)
        vy = self._local_mean(ym * y) - my * my
        cxy = self._local_mean(self._xm * y) - self._mx * my
        c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
        num = (2 * self._mx * my + c1) * (2 * cxy + c2)
        den = (self._mx * self._mx + my * my + c1) * (self._vx + vy + c2)
        return {"psnr_db": psnr(self.reference, estimate, self.brain, data_range=255.0),
                "ssim": float(np.mean(num / den))}

    def gains(self, added_brain: np.ndarray) -> dict:
        m = self.metrics(added_brain)
        return dict(m, d_psnr_db=m["psnr_db"] - self.baseline["psnr_db"], d_ssim=m["ssim"] - self.baseline["ssim"])

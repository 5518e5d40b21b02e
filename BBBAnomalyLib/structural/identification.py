"""BBB status by contrastive maximum (seed cbsi-contrast-free-bbb-status).

A small CNN reads [T1, FLAIR, synthetic T1Gd] tumor slices and scores *self-consistency*: is
this synthesis the one made with the true ET label? At inference both syntheses (ET+ enhancing,
ET- non-enhancing) are scored on every tumor slice; per label, S = fraction of tumor slices
scoring >= λc (0.5). The larger wins (contrastive maximum): S+ > S- means the enhancing
synthesis is the consistent one, i.e. the BBB is disrupted.

The decision has three outcomes and comes from ONE number, the calibrated probability
p(disrupted) = sigmoid(a (S+ - S-) + b) (Platt scaling; (a, b) fitted on calibration phantoms by
``train bbb-identifier`` and stored with the weights):

* p >= band[1] -> "disrupted"; p <= band[0] -> "intact"; otherwise "indeterminate";
* an exact tie S+ = S- (both syntheses equally consistent, e.g. 1.00 / 1.00 or 0.00 / 0.00) is
  "indeterminate" whatever p says: the identifier could not tell the two apart;
* the pipeline shrinks p towards 0.5 by the tumor ROI's weight (tumor_roi.py) and, on a real scan, by
  the identifier's record on real scans it never saw (real_evidence.py: an identifier at chance on
  real scans gives p = 0.5), and adds reasons of its own (an implausible tumor segmentation).

So the call can abstain but never contradicts p. ``INDETERMINATE_BAND`` (0.35, 0.65) was chosen on
the calibration phantoms 6000-6019 (docs/validation.md); ``contrastive_winner`` keeps the seed's
plain S+ > S- decision for reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class IdentificationCNN(nn.Module):
    """[T1, FLAIR, synthetic T1Gd] slice -> self-consistency logit."""

    def __init__(self, width: int = 16, crop: int = 32):
        super().__init__()
        self.config = {"width": width, "crop": crop}
        self.crop = crop  # the network sees a crop x crop window centred on the slice's tumor
        layers, c = [], 3
        for ch in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), nn.GroupNorm(math.gcd(8, ch), ch), nn.ReLU()]
            c = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c, 1)
        # Platt calibration of the volume-level score difference, fitted after training.
        self.register_buffer("calibration", torch.tensor([8.0, 0.0]))

    def forward(self, x):
        h = self.features(x)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # max: small enhancing foci
        return self.head(pooled)[:, 0]


def tumor_crops(images, roi, size: int) -> np.ndarray:
    """(n, c, size, size): each slice's window centred on its ROI's centroid (padded with -1).

    A small CNN on a CPU learns the enhancement pattern much faster from the tumor's
    neighbourhood than from the whole slice, where the tumor is 1-2 % of the pixels."""
    stack = np.stack([np.asarray(a, np.float32) for a in images], axis=1)
    n, c, h, w = stack.shape
    half = size // 2
    padded = np.full((n, c, h + size, w + size), -1.0, np.float32)
    padded[:, :, half:half + h, half:half + w] = stack
    roi = np.asarray(roi, np.float32)
    out = np.empty((n, c, size, size), np.float32)
    for i in range(n):  # one window per slice: n is tens of slices, not voxels
        weight = roi[i] if roi[i].sum() > 0 else np.ones((h, w), np.float32)
        cy = int(round(float((weight.sum(1) * np.arange(h)).sum() / weight.sum())))
        cx = int(round(float((weight.sum(0) * np.arange(w)).sum() / weight.sum())))
        out[i] = padded[i, :, cy:cy + size, cx:cx + size]
    return out


@torch.no_grad()
def slice_scores(model, t1, flair, synthetic, roi=None, chunk: int = 64, device=None) -> np.ndarray:
    """Self-consistency probabilities of (n, H, W) slices (all on [-1, 1]) around their ``roi``."""
    device = device or torch.device("cpu")
    model.eval()
    if roi is None:
        roi = np.ones(np.shape(t1), np.float32)
    x = torch.as_tensor(tumor_crops((t1, flair, synthetic), roi, model.crop))
    out = [torch.sigmoid(model(x[i:i + chunk].to(device))).cpu() for i in range(0, x.shape[0], chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


#: p(disrupted) inside this band gives "indeterminate" (chosen on calibration phantoms 6000-6019).
INDETERMINATE_BAND = (0.35, 0.65)


def call_from_probability(p: float, band=INDETERMINATE_BAND) -> str:
    """The three-outcome call of a calibrated p(disrupted): the only place a call is made from p."""
    low, high = (float(v) for v in band)
    if not 0.0 <= low < 0.5 < high <= 1.0:
        raise ValueError("the indeterminate band must satisfy 0 <= low < 0.5 < high <= 1")
    return "disrupted" if p >= high else "intact" if p <= low else "indeterminate"


@dataclass
class StatusCall:
    call: str  # "intact" | "disrupted" | "indeterminate"
    probability: float  # calibrated p(disrupted)
    s_enhancing: float  # S+: fraction of tumor slices where the enhancing synthesis scores >= λc
    s_non_enhancing: float  # S-
    mean_enhancing: float
    mean_non_enhancing: float
    n_slices: int
    band: tuple[float, float] = INDETERMINATE_BAND
    reasons: list[str] = field(default_factory=list)  # why the call is indeterminate (empty otherwise)
    identifier_probability: float | None = None  # p before any weight shrank it (None: not shrunk)
    real_evidence: dict | None = None  # the identifier's record on real scans, when it weighed p (real_evidence.py)

    @property
    def contrastive_winner(self) -> str:
        """The seed's plain contrastive maximum (S+ > S-), kept for reference; not the call."""
        if self.s_enhancing != self.s_non_enhancing:
            return "disrupted" if self.s_enhancing > self.s_non_enhancing else "intact"
        return "tie"

    def temper(self, weight: float, reason: str, always_note: bool = False) -> None:
        """p <- 0.5 + weight (p - 0.5) (weight in [0, 1]: how far the ROI, or the identifier's record on
        real scans, can be trusted); the call is recomputed from the new p, so it still never contradicts
        it (a tie stays indeterminate). ``identifier_probability`` keeps the p before any shrinking.
        The reason is noted when the call turns indeterminate, or always with ``always_note``."""
        weight = float(np.clip(weight, 0.0, 1.0))
        if weight >= 1.0:
            return
        if self.identifier_probability is None:
            self.identifier_probability = self.probability
        before = self.probability
        self.probability = float(0.5 + weight * (before - 0.5))
        call = call_from_probability(self.probability, self.band)
        turned = self.call != "indeterminate" and call == "indeterminate"
        if turned or always_note:
            self.reasons.append(f"{reason}: p(disrupted) {before:.2f} shrunk to {self.probability:.2f}"
                                + (f", inside the band {self.band[0]:.2f}-{self.band[1]:.2f}" if call == "indeterminate"
                                   else ""))
        self.call = "indeterminate" if self.call == "indeterminate" else call

    def make_indeterminate(self, reason: str) -> None:
        self.call = "indeterminate"
        self.reasons.append(reason)

    def to_json(self) -> dict:
        return {"call": self.call, "probability": self.probability,
                "identifier_probability": (self.probability if self.identifier_probability is None
                                           else self.identifier_probability),
                "indeterminate_band": list(self.band), "reasons": list(self.reasons),
                "rule": (f"disrupted if p(disrupted) >= {self.band[1]:.2f}, intact if <= {self.band[0]:.2f}, "
                         "otherwise indeterminate; p is the phantom-calibrated identifier's, shrunk towards 0.5 by "
                         "the tumor ROI's weight and, on real scans, by the identifier's record on real scans; "
                         "also indeterminate on a tie S+ = S- or an implausible tumor ROI"),
                "real_evidence": self.real_evidence,
                "contrastive_winner": self.contrastive_winner,
                "per_label_scores": {"enhancing": self.s_enhancing, "non_enhancing": self.s_non_enhancing,
                                     "mean_slice_score_enhancing": self.mean_enhancing,
                                     "mean_slice_score_non_enhancing": self.mean_non_enhancing},
                "tumor_slices": self.n_slices}


def contrastive_maximum(scores_enhancing, scores_non_enhancing, threshold: float = 0.5,
                        calibration=(8.0, 0.0), band=INDETERMINATE_BAND) -> StatusCall:
    """The volume's BBB status from per-slice self-consistency scores of the two syntheses.

    The statistic is S+ - S- (on a tie, a tenth of the mean-score difference, so that p still
    moves); p(disrupted) is its Platt calibration; the call is :func:`call_from_probability` of p,
    or "indeterminate" on an exact tie S+ = S-."""
    plus = np.asarray(scores_enhancing, np.float64)
    minus = np.asarray(scores_non_enhancing, np.float64)
    if plus.shape != minus.shape or plus.size == 0:
        raise ValueError("both syntheses need a score on the same, non-empty set of tumor slices")
    s_plus, s_minus = float(np.mean(plus >= threshold)), float(np.mean(minus >= threshold))
    m_plus, m_minus = float(plus.mean()), float(minus.mean())
    difference = s_plus - s_minus if s_plus != s_minus else 0.1 * (m_plus - m_minus)
    a, b = (float(v) for v in calibration)
    p = float(1.0 / (1.0 + np.exp(-(a * difference + b))))
    status = StatusCall(call_from_probability(p, band), p, s_plus, s_minus, m_plus, m_minus, int(plus.size),
                        tuple(float(v) for v in band), [])
    if s_plus == s_minus:
        status.make_indeterminate(f"tie: both syntheses score the same on the tumor slices (S+ = S- = {s_plus:.2f}); "
                                  "the identifier cannot tell enhancing from non-enhancing here")
    elif status.call == "indeterminate":
        status.reasons.append(f"p(disrupted) = {p:.2f} lies inside the indeterminate band "
                              f"{band[0]:.2f}-{band[1]:.2f}")
    return status


def volume_difference(scores_enhancing, scores_non_enhancing, threshold: float = 0.5) -> float:
    """S+ - S- (with the tie rule of :func:`contrastive_maximum`): the statistic that is calibrated."""
    call = contrastive_maximum(scores_enhancing, scores_non_enhancing, threshold, (1.0, 0.0))
    return float(np.log(call.probability / (1 - call.probability)))


def fit_platt(differences, labels) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a d + b) by maximum likelihood (a >= 0; mild ridge keeps it finite
    when the calibration set is perfectly separated)."""
    d = torch.as_tensor(np.asarray(differences, np.float64))
    y = torch.as_tensor(np.asarray(labels, np.float64))
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(params[0].abs() * d + params[1], y) + 1e-3 * (params ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(params[0].detach().abs()), float(params[1].detach())

"""How far the identifier's p(disrupted) may be trusted on a real scan (issue 15).

The identifier is calibrated on phantoms (Platt scaling, identification.py). On real scans its
p is only as good as its record on real scans it never saw. The weights' model card keeps that
record, ``real_evidence``: leave-one-case-out runs, each with the label of its case (enhancing
tumor in the case's segmentation = disrupted) and the p that weights which never saw the case
gave. The record gives a weight ``w`` in [0, 1], and p is shrunk towards 0.5 by it, the same
way the tumor segmentation's weight shrinks it (``StatusCall.temper``):

* ``w = 0`` when the card has no record, or fewer than ``MIN_RUNS_PER_CLASS`` runs of either
  class (no evidence that the identifier works on real scans at all);
* otherwise ``w = clip((AUC - 0.5) / (FULL_WEIGHT_AUC - 0.5), 0, 1)``, with the AUC of the
  record's p against its labels: at chance w = 0, from AUC 0.8 (the bar issue 15 sets for the
  enhancing-voxel AUC) the phantom calibration stands as it is.

So an identifier at chance on real scans gives p = 0.5 and an indeterminate call on every real
scan: the call knows that it does not know. ``T1FlairParameters.status_evidence = "phantom"``
skips the weighting, for research on the project's own phantoms, where the phantom calibration
was measured. Records are written by ``scripts/validate_t1flair.py evidence``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: fewer leave-one-case-out real runs than this in either class: the record is no evidence
MIN_RUNS_PER_CLASS = 5
#: record AUC at which the phantom-calibrated p is used unshrunk
FULL_WEIGHT_AUC = 0.8


@dataclass
class RealEvidence:
    """The identifier's leave-one-case-out record on real scans (from its model card)."""

    labels: list[int] = field(default_factory=list)  # 1 = disrupted (enhancing tumor in the case's segmentation)
    probabilities: list[float] = field(default_factory=list)  # p(disrupted) of weights that never saw the case
    source: str = ""  # where the record was measured

    @classmethod
    def from_card(cls, card: dict | None) -> "RealEvidence":
        record = (card or {}).get("real_evidence") or {}
        runs = record.get("runs", [])
        labels = [int(r["label"]) for r in runs]
        if any(v not in (0, 1) for v in labels):
            raise ValueError("real_evidence labels must be 0 (intact) or 1 (disrupted)")
        return cls(labels, [float(r["p"]) for r in runs], str(record.get("source", "")))

    @property
    def n_disrupted(self) -> int:
        return int(sum(self.labels))

    @property
    def n_intact(self) -> int:
        return len(self.labels) - self.n_disrupted

    @property
    def auc(self) -> float | None:
        """AUC of the record's p against its labels; None without both classes."""
        if self.n_disrupted == 0 or self.n_intact == 0:
            return None
        from ..metrics import roc_auc

        return roc_auc(self.labels, self.probabilities)

    @property
    def brier(self) -> float | None:
        if not self.labels:
            return None
        return float(np.mean((np.asarray(self.probabilities) - np.asarray(self.labels)) ** 2))

    @property
    def weight(self) -> float:
        if min(self.n_disrupted, self.n_intact) < MIN_RUNS_PER_CLASS:
            return 0.0
        return float(np.clip((self.auc - 0.5) / (FULL_WEIGHT_AUC - 0.5), 0.0, 1.0))

    def describe(self) -> str:
        """One line for the report's reasons: the record and what it means for p."""
        if not self.labels:
            return ("the identifier has no record on real scans it never saw (its model card has no real_evidence): "
                    "on a real scan its phantom calibration is not evidence")
        auc = self.auc
        record = (f"leave-one-case-out on real scans: {len(self.labels)} runs ({self.n_disrupted} disrupted, "
                  f"{self.n_intact} intact)" + (f", AUC {auc:.2f}" if auc is not None else ""))
        if min(self.n_disrupted, self.n_intact) < MIN_RUNS_PER_CLASS:
            return (f"the identifier's record on real scans is too small to trust ({record}; at least "
                    f"{MIN_RUNS_PER_CLASS} runs per class are needed)")
        return f"the identifier's record on real scans ({record}) gives its p the weight {self.weight:.2f}"

    def to_json(self) -> dict:
        return {"runs": len(self.labels), "disrupted": self.n_disrupted, "intact": self.n_intact, "auc": self.auc,
                "brier": self.brier, "weight": self.weight, "source": self.source,
                "rule": (f"weight 0 below {MIN_RUNS_PER_CLASS} runs per class, else clip((AUC - 0.5) / "
                         f"({FULL_WEIGHT_AUC} - 0.5), 0, 1); p <- 0.5 + weight (p - 0.5)")}

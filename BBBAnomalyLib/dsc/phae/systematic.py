"""The systematic bias of PHAE's ROI-mean CBF that no per-voxel map shows, as a reader of a ROI needs it.

Why: ``phae_cbf_uncertainty`` is honest voxel by voxel (its 95 % intervals hold the truth in 93-100 % of voxels),
but an ROI mean averages the noise away and keeps any offset the voxels share. Issue 14, round 12 measured the
largest such offset on held-apart simulations: the shape of the tissue's residue (its capillary transit-time
distribution), which one curve cannot reveal. Exponential-like tissue reads about right; a more homogeneous bed
(gamma transit times of shape k > 1, plug flow) reads high; transport (vascular) dispersion reads low. The
numbers are those the weights' model card records (``metrics.cbf_bias_by_residue_shape_round12``), so each
set of weights states its own; weights whose card lacks them state nothing.

Round 15 added the tumour/NAWM ratio a reader takes: an offset both tissues share cancels in it, one they do not
share does not. Where the card records the ratio's bias by pair of shapes (``tumour_wm_ratio_bias_by_shape_pair_round15``:
the same shape, the tumour's transit more homogeneous than the rest's, less homogeneous), the note gives those
ranges too.

What it feeds: the DSC report (``report["phae"]["roi_systematic_bias"]`` and a ``caveat`` on the entries of the CBF
map, ``note``, and of its ratio to NAWM, rcbf, ``ratio_note``), which ``bbbanomaly roi-stats``, the Slicer panel's ROI
table and the BIDS app's roistats show beside a PHAE CBF ratio.
"""

from __future__ import annotations

#: the card's metric holding the per-shape ROI-mean biases (docs/validation.md, issue 14 round 12)
CARD_METRIC = "cbf_bias_by_residue_shape_round12"
#: the card's metric holding the tumour/NAWM ratio's bias by pair of shapes (round 15)
CARD_RATIO_METRIC = "tumour_wm_ratio_bias_by_shape_pair_round15"
#: its groups of pairs -> how the note says them
RATIO_GROUPS = {"same_shape": "where both share a transit shape",
                "tumour_more_homogeneous": "where the tumour's transit is more homogeneous than NAWM's",
                "tumour_less_homogeneous": "where it is less homogeneous"}
#: shapes as the card names them -> how a reader would call them
SHAPES = {"exponential": "exponential", "lorentzian": "Lorentzian", "gamma_k1.5 (never drawn)": "gamma k 1.5",
          "gamma_k3": "gamma k 3", "gamma_k8 (never drawn)": "gamma k 8", "box": "plug flow"}


def _range(values) -> list[float] | None:
    try:
        numbers = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    except (TypeError, ValueError):
        return None
    return [min(numbers), max(numbers)] if numbers else None


def roi_systematic_bias(card: dict) -> dict | None:
    """The per-shape % bias of an ROI mean recorded on ``card`` (noiseless and SNR 50), the transport-dispersion
    bias, and one sentence for a reader; None where the card records none."""
    metric = (card.get("metrics") or {}).get(CARD_METRIC)
    if not isinstance(metric, dict):
        return None
    by_shape = {}
    for key, label in SHAPES.items():
        rng = _range((metric.get("mean_roi_bias_pct_noiseless_snr50") or {}).get(key))
        if rng is not None:
            by_shape[label] = rng
    dispersion = {k: float(v) for k, v in (metric.get("vascular_dispersion_exponential_gm_pct_noiseless") or {}).items()
                  if isinstance(v, (int, float))}
    if not by_shape:
        return None
    right = [v for k, v in by_shape.items() if k in ("exponential", "Lorentzian")]
    high = {k: v for k, v in by_shape.items() if k not in ("exponential", "Lorentzian")}
    parts = []
    if right:
        parts.append(f"{min(r[0] for r in right):+.0f}..{max(r[1] for r in right):+.0f} % for exponential-like "
                     "capillary transit")
    if high:
        lo, hi = min(v[0] for v in high.values()), max(v[1] for v in high.values())
        parts.append(f"{lo:+.0f}..{hi:+.0f} % for more homogeneous transit ({', '.join(high)})")
    if dispersion:
        parts.append(f"{min(dispersion.values()):+.0f}..{max(dispersion.values()):+.0f} % under 1-2 s of transport "
                     "dispersion")
    listed = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    note = (f"On held-apart simulations an ROI mean of PHAE CBF reads on average {listed}. One curve cannot tell "
            "these apart and phae_cbf_uncertainty does not include them: compare ratios between tissues of similar "
            "transit, and with oSVD (docs/validation.md, issue 14 round 12)")
    ratio = _ratio_bias(card)
    ratio_note = RATIO_LEAD + note
    if ratio:
        said = [f"{v[0]:+.0f}..{v[1]:+.0f} % {RATIO_GROUPS[k]}" for k, v in ratio.items()]
        as_ratio = ("As a tumour/NAWM ratio it reads on average " + ", ".join(said[:-1])
                    + (" and " if len(said) > 1 else "") + said[-1])
        note += f". {as_ratio} (round 15)"
        ratio_note = (f"{RATIO_LEAD}{as_ratio}. One curve cannot tell the transit shapes apart: compare with oSVD "
                      "(docs/validation.md, issue 14 round 15)")
    return {"cbf_roi_mean_bias_pct_by_residue_shape": by_shape, "cbf_roi_mean_bias_pct_transport_dispersion": dispersion,
            "tumour_nawm_ratio_bias_pct_by_shape_pair": ratio,
            "measured_on": metric.get("measured_on", ""), "note": note, "ratio_note": ratio_note}


#: How the caveat of a PHAE CBF ratio map (rcbf) begins: what cancels in a ratio and what does not.
RATIO_LEAD = ("rcbf is PHAE CBF over its NAWM mean: a bias both tissues share cancels, one they do not share (a "
              "different capillary transit shape) stays. ")


def _ratio_bias(card: dict) -> dict:
    """{group: [low, high] %} of the card's round-15 ratio metric, groups in RATIO_GROUPS' order; {} where absent."""
    metric = (card.get("metrics") or {}).get(CARD_RATIO_METRIC)
    ranges = metric.get("mean_ratio_bias_pct") if isinstance(metric, dict) else None
    if not isinstance(ranges, dict):
        return {}
    out = {}
    for key in RATIO_GROUPS:
        rng = _range(ranges.get(key))
        if rng is not None:
            out[key] = rng
    return out


__all__ = ["roi_systematic_bias", "CARD_METRIC", "CARD_RATIO_METRIC"]

"""PNG figure of a T1/FLAIR run, for a radiologist: every panel with its colour bar and unit, orientation
letters (radiological convention: patient right on the left), the BBB call with its probability and
indeterminate band, and the truth when it is known (demo phantoms, validation cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import _pyplot, axial_slice, ras_slice_index
from ..core.volume import Volume


def orientation_letters(ax, colour: str = "yellow") -> None:
    """R/L/A/P at the edges of an axial panel drawn by :func:`BBBAnomalyLib.figures.axial_slice`."""
    for x, y, text in ((0.02, 0.5, "R"), (0.98, 0.5, "L"), (0.5, 0.97, "A"), (0.5, 0.03, "P")):
        ax.text(x, y, text, transform=ax.transAxes, color=colour, fontsize=7, fontweight="bold",
                ha="center", va="center")


def probability_panel(ax, probability: float, band, call: str, truth: str | None = None,
                      identifier_probability: float | None = None) -> None:
    """p(disrupted) on a 0-1 axis with the indeterminate band shaded, the call, and the truth if known;
    ``identifier_probability``: the identifier's own p before the ROI weight and the record on real scans
    shrank it (drawn hollow, so a reader sees both what the network said and what the call rests on)."""
    low, high = band
    ax.axvspan(0, low, color="#4c9be8", alpha=0.35)
    ax.axvspan(low, high, color="0.75", alpha=0.6)
    ax.axvspan(high, 1, color="#e8674c", alpha=0.35)
    for x, text in ((low / 2, "intact"), ((low + high) / 2, "indeterminate"), ((high + 1) / 2, "disrupted")):
        ax.text(x, 0.82, text, ha="center", va="center", fontsize=7)
    if identifier_probability is not None and abs(identifier_probability - probability) > 1e-9:
        ax.plot([identifier_probability], [0.45], marker="v", markerfacecolor="none", color="0.3", markersize=9)
        ax.text(identifier_probability, 0.62, f"identifier {identifier_probability:.2f}", ha="center", fontsize=6,
                color="0.3")
    ax.plot([probability], [0.45], marker="v", color="black", markersize=9)
    ax.text(probability, 0.2, f"p = {probability:.2f}", ha="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel("p(disrupted), calibrated", fontsize=7)
    ax.tick_params(labelsize=7)
    title = f"BBB call: {call.upper()}"
    if truth is not None:
        title += f"\ntruth: {truth}" + ("" if call == "indeterminate" else " (call right)" if call == truth
                                         else " (CALL WRONG)")
    ax.set_title(title, fontsize=8)


def t1flair_figure(path: str | Path, t1: Volume, flair: np.ndarray, result, real_t1gd: np.ndarray | None = None,
                   tumor: np.ndarray | None = None, title: str = "", truth: str | None = None) -> Path:
    """One axial slice through the tumor (or the brain's middle): T1, FLAIR, [real T1Gd], synthetic T1Gd,
    enhancement and its uncertainty, tumor probability, anomaly map, the ROI in red (the reference
    tumor in cyan when given), and the BBB call on its probability axis. ``truth``: "intact" or
    "disrupted" when known (demo phantom, labelled validation case)."""
    plt = _pyplot()
    focus = tumor if tumor is not None and tumor.any() else (result.tumor_roi if result.tumor_roi.any() else result.brain_mask)
    k = ras_slice_index(t1, focus)
    brain2d = axial_slice(result.brain_mask.astype(np.float32), k, t1.affine) > 0
    rows, cols = np.flatnonzero(brain2d.any(1)), np.flatnonzero(brain2d.any(0))
    box = (slice(max(rows[0] - 3, 0), rows[-1] + 4), slice(max(cols[0] - 3, 0), cols[-1] + 4)) if rows.size else (slice(None),) * 2
    sl = lambda a: axial_slice(np.asarray(a, np.float32), k, t1.affine)[box]  # cropped to the brain for display
    roi = sl(result.tumor_roi.astype(np.float32)) > 0.5
    reference = sl(tumor.astype(np.float32)) > 0.5 if tumor is not None else None
    maps = result.maps
    from .normalisation import normalise_0_255

    t1_0255 = normalise_0_255(np.asarray(t1.data, np.float32), result.brain_mask, "t1")
    panels = [("T1 (normalised)", sl(t1_0255), "gray", (0, 255), "a.u. 0-255"),
              ("FLAIR", sl(flair), "gray", None, "scanner units")]
    if real_t1gd is not None:
        panels.append(("real T1Gd (normalised)", sl(real_t1gd), "gray", (0, 255), "a.u. 0-255"))
    panels.append(("synthetic T1Gd = T1 + enhancement", sl(maps["synthetic_t1gd"].data), "gray", (0, 255), "a.u. 0-255"))
    if "enhancement" in maps:
        top = max(float(np.percentile(maps["enhancement_uncertainty"].data[result.brain_mask], 99.5)), 10.0)
        panels += [("enhancement added", sl(maps["enhancement"].data), "hot", (0, top), "a.u. (0-255 scale)"),
                   ("enhancement uncertainty (sd)", sl(maps["enhancement_uncertainty"].data), "viridis", (0, top),
                    "a.u. (0-255 scale)")]
    panels.append(("tumor probability", sl(maps["tumor_probability"].data), "magma", (0, 1), "probability"))
    if "anomaly" in maps:
        a = maps["anomaly"].data[result.brain_mask]
        panels.append(("anomaly (3D CAE)", sl(maps["anomaly"].data), "inferno", (0, float(np.percentile(a, 99.5))),
                       "|residual|, [-1, 1] units"))
    grey = [img for _, img, c, vr, _ in panels if c == "gray" and vr == (0, 255)]
    top = max(float(np.percentile(img[img > 0], 99.5)) if np.any(img > 0) else 1.0 for img in grey)
    panels = [(n, img, c, (0, top) if (c == "gray" and vr == (0, 255)) else vr, u) for n, img, c, vr, u in panels]
    ncols = len(panels) + 1
    fig, axes = plt.subplots(1, ncols, figsize=(2.55 * ncols, 3.5), gridspec_kw={"width_ratios": [1] * len(panels) + [1.3]})
    for ax, (name, img, cmap, vrange, unit) in zip(axes, panels):
        lo, hi = vrange if vrange else np.percentile(img[img > 0], [1, 99.5]) if np.any(img > 0) else (0, 1)
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
        bar = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.03)
        bar.set_label(unit, fontsize=6)
        bar.ax.tick_params(labelsize=6)
        if roi.any():
            ax.contour(roi, levels=[0.5], colors="red", linewidths=0.6)
        if reference is not None and reference.any():
            ax.contour(reference, levels=[0.5], colors="cyan", linewidths=0.5, linestyles="dotted")
        ax.set_title(name, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        orientation_letters(ax)
    bbb = result.report["bbb_status"]
    probability_panel(axes[-1], bbb["probability"], bbb.get("indeterminate_band", (0.35, 0.65)), bbb["call"], truth,
                      bbb.get("identifier_probability"))
    import textwrap

    reasons = "\n".join(textwrap.fill(r, 160) for r in bbb.get("reasons", []))  # long lines would leave the figure
    fig.suptitle(f"{title}  BBB: {bbb['call']} (p(disrupted) = {bbb['probability']:.2f}, band "
                 f"{bbb.get('indeterminate_band', [0.35, 0.65])[0]:.2f}-{bbb.get('indeterminate_band', [0.35, 0.65])[1]:.2f}; "
                 f"ROI: {bbb['tumor_roi']}, red{'; reference tumor dotted cyan' if reference is not None else ''})"
                 + (f"\n{reasons}" if reasons else ""), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

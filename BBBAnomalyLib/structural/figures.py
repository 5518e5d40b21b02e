"""PNG figure of a T1/FLAIR run: inputs, the two syntheses, the real T1Gd when known, anomaly map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import _pyplot, axial_slice, ras_slice_index
from ..volume import Volume


def t1flair_figure(path: str | Path, t1: Volume, flair: np.ndarray, result, real_t1gd: np.ndarray | None = None,
                   tumor: np.ndarray | None = None, title: str = "") -> Path:
    """One axial slice through the tumor (or the brain's middle): T1, FLAIR, [real T1Gd], synthetic
    T1Gd with each ET label, tumor probability and anomaly map, the ROI drawn in red."""
    plt = _pyplot()
    focus = tumor if tumor is not None and tumor.any() else (result.tumor_roi if result.tumor_roi.any() else result.brain_mask)
    k = ras_slice_index(t1, focus)
    brain2d = axial_slice(result.brain_mask.astype(np.float32), k, t1.affine) > 0
    rows, cols = np.flatnonzero(brain2d.any(1)), np.flatnonzero(brain2d.any(0))
    box = (slice(max(rows[0] - 3, 0), rows[-1] + 4), slice(max(cols[0] - 3, 0), cols[-1] + 4)) if rows.size else (slice(None),) * 2
    sl = lambda a: axial_slice(np.asarray(a, np.float32), k, t1.affine)[box]  # cropped to the brain for display
    roi = sl(result.tumor_roi.astype(np.float32)) > 0.5
    panels = [("T1", sl(t1.data), "gray", None), ("FLAIR", sl(flair), "gray", None)]
    if real_t1gd is not None:
        panels.append(("real T1Gd (0-255)", sl(real_t1gd), "gray", (0, 255)))
    panels += [("synthetic T1Gd, ET+ (enhancing)", sl(result.maps["synthetic_t1gd_enhancing"].data), "gray", (0, 255)),
               ("synthetic T1Gd, ET- (non-enh.)", sl(result.maps["synthetic_t1gd_non_enhancing"].data), "gray", (0, 255)),
               ("tumor probability", sl(result.maps["tumor_probability"].data), "magma", (0, 1))]
    if "anomaly" in result.maps:
        a = result.maps["anomaly"].data[result.brain_mask]
        panels.append(("anomaly (3D CAE)", sl(result.maps["anomaly"].data), "inferno", (0, float(np.percentile(a, 99.5)))))
    t1gd_panels = [img for name, img, _, vr in panels if vr == (0, 255)]
    top = max(float(np.percentile(img[img > 0], 99.5)) if np.any(img > 0) else 1.0 for img in t1gd_panels)
    panels = [(n, img, c, (0, top) if vr == (0, 255) else vr) for n, img, c, vr in panels]  # one shared window
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.1))
    for ax, (name, img, cmap, vrange) in zip(axes, panels):
        lo, hi = vrange if vrange else np.percentile(img[img > 0], [1, 99.5]) if np.any(img > 0) else (0, 1)
        ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
        if roi.any():
            ax.contour(roi, levels=[0.5], colors="red", linewidths=0.6)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    bbb = result.report["bbb_status"]
    fig.suptitle(f"{title}  BBB: {bbb['call']} (p = {bbb['probability']:.2f}, ROI: {bbb['tumor_roi']}"
                 f"{', low confidence' if bbb['low_confidence'] else ''})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

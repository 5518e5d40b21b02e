"""Draw the BBBAnomaly icon: an axial brain with a warm leakage blob and a DSC bolus curve.

Writes the same 128x128 RGBA PNG to the extension icon (``BBBAnomaly.png``, used by the
extension index) and the module icon (``BBBAnomaly/Resources/Icons/BBBAnomaly.png``).
Run from anywhere:  python scripts/make_icon.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse, FancyBboxPatch, PathPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = [ROOT / "BBBAnomaly.png", ROOT / "BBBAnomaly" / "Resources" / "Icons" / "BBBAnomaly.png"]
SIZE = 128  # pixels; Slicer and the extension index expect a 128x128 icon


def brain_outline(cx=0.47, cy=0.54, rx=0.36, ry=0.42, scale=1.0, wiggle=0.0, n=400):
    """Closed axial brain contour: an ellipse, a little narrower at the frontal pole (top).

    ``scale`` < 1 with ``wiggle`` > 0 gives the folded grey/white-matter boundary inside it.
    """
    t = np.linspace(0, 2 * np.pi, n)
    r = scale * (1.0 + wiggle * np.sin(11 * t))
    y = np.sin(t)
    x = np.cos(t) * (1.0 - 0.05 * np.clip(y, 0, None))  # taper the front
    return np.column_stack([cx + rx * r * x, cy + ry * r * y])


def main():
    fig = plt.figure(figsize=(1, 1), dpi=SIZE)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")

    # Brain: darker grey-matter ribbon around lighter, folded white matter, as on a T1w slice.
    brain = PathPatch(MplPath(brain_outline(), closed=True), facecolor="#9aa1b2", edgecolor="#2e3440", lw=2.2)
    ax.add_patch(brain)
    ax.add_patch(PathPatch(MplPath(brain_outline(scale=0.80, wiggle=0.05), closed=True),
                           facecolor="#e4e7ee", edgecolor="none"))

    # Lateral ventricles: two dark slits either side of the midline.
    for x, angle in [(0.415, -18), (0.525, 18)]:
        ax.add_patch(Ellipse((x, 0.53), 0.06, 0.21, angle=angle, facecolor="#4c566a", edgecolor="none"))

    # Interhemispheric fissure, front and back.
    ax.plot([0.47, 0.47], [0.96, 0.82], color="#2e3440", lw=1.8, solid_capstyle="round")
    ax.plot([0.47, 0.47], [0.12, 0.24], color="#2e3440", lw=1.8, solid_capstyle="round")

    # Leakage blob: a radial warm gradient (yellow core -> red rim), clipped to the brain.
    yy, xx = np.mgrid[0:1:256j, 0:1:256j]
    d = np.hypot((xx - 0.66) / 0.14, (yy - 0.68) / 0.12)
    alpha = np.clip(1.15 - d, 0, 1) ** 0.8
    heat = matplotlib.colormaps["hot"](np.clip(0.85 - 0.5 * d, 0.25, 0.85))
    heat[..., 3] = alpha
    im = ax.imshow(heat, extent=(0, 1, 0, 1), origin="lower", interpolation="bilinear", zorder=3)
    im.set_clip_path(brain)

    # DSC bolus passage: signal drop and recovery on a small dark card, bottom right.
    card = FancyBboxPatch((0.56, 0.03), 0.41, 0.27, boxstyle="round,pad=0,rounding_size=0.05",
                          facecolor="#1f2a44", edgecolor="white", lw=1.2, zorder=4)
    ax.add_patch(card)
    t = np.linspace(0, 1, 100)
    tt = np.clip((t - 0.25) / 0.12, 0, None)
    dip = tt ** 2.5 * np.exp(-(tt - 0) * 1.6)  # gamma-variate bolus
    dip = dip / dip.max()
    sig = 0.24 - 0.16 * dip
    ax.plot(0.59 + 0.35 * t, 0.02 + sig, color="#5fd3f3", lw=2.0, zorder=5, solid_capstyle="round")

    for out in OUTPUTS:
        out.parent.mkdir(parents=True, exist_ok=True)
        # metadata Software=None keeps the bytes independent of the matplotlib version.
        fig.savefig(out, dpi=SIZE, transparent=True, metadata={"Software": None})
        print(f"wrote {out.relative_to(ROOT)}")
    plt.close(fig)


if __name__ == "__main__":
    main()

"""The diffusion anomaly figure: attenuation, anomaly score, mask vs truth, and the S/S0 curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import _contours, _pyplot, _range, axial_slice, ras_slice_index
from ..structural.figures import orientation_letters
from ..core.volume import Volume


def _overlay(ax, background, image, brain, cmap, vrange, title, unit):
    """A map over the b0 inside the brain, with a colour bar that says its unit."""
    plt = _pyplot()
    ax.imshow(background, cmap="gray")
    im = ax.imshow(np.ma.masked_where(~brain, image), cmap=cmap, vmin=vrange[0], vmax=vrange[1], alpha=0.85)
    bar = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(unit, fontsize=8)
    ax.set_title(title)


def dmri_figure(path: str | Path, dwi: Volume, result, masks: dict[str, np.ndarray], title: str = "") -> Path:
    """Row of four panels on the tumor's largest axial slice (or the brain's) and a curve panel."""
    plt = _pyplot()
    focus = masks.get("tumor", result.brain_mask)
    k = ras_slice_index(dwi, focus)
    affine = dwi.affine
    b0 = axial_slice(dwi.data[..., int(np.argmin(dwi.acquisition.bvals))].astype(np.float32), k, affine)
    brain = axial_slice(result.brain_mask.astype(np.float32), k, affine) > 0
    anomaly = axial_slice(result.maps["anomaly"], k)
    mask = axial_slice(result.maps["anomaly_mask"].data.astype(np.float32), k, affine) > 0
    shown = {name: axial_slice(m.astype(np.float32), k, affine) > 0 for name, m in masks.items()
             if name in ("tumor", "nawm")}
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
    axes[0].imshow(b0, cmap="gray")
    axes[0].set_title("b0")
    _overlay(axes[1], b0, axial_slice(result.maps["mean_attenuation"], k), brain, "viridis", (0, 0.6),
             "mean S/S0 (b = 1000)", "S/S0 (no unit)")
    model = result.report["parameters"]["model"]
    _overlay(axes[2], b0, anomaly, brain, "inferno", _range(result.maps["anomaly"].data[result.brain_mask]),
             f"anomaly ({model})", "probability" if model == "recdisc" else "|S/S0 residual| (no unit)")
    _contours(axes[2], shown)
    axes[3].imshow(b0, cmap="gray")
    axes[3].imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.7, vmin=0, vmax=1)
    _contours(axes[3], shown)
    t = result.report["threshold"]
    axes[3].set_title(f"anomaly mask ({t['method']} {t['value']:.3g})")
    for ax in axes:
        ax.axis("off")
        orientation_letters(ax)
    outside = [name for name, state in result.report.get("applicability", {}).get("maps", {}).items()
               if state.startswith("outside")]
    note = f"  [maps outside the trained range: {', '.join(outside)}]" if outside else ""
    if title or note:
        fig.suptitle(title + note)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    curves = result.curves()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, colour in (("tumor", "darkorange"), ("nawm", "royalblue")):
        if name in masks:
            mean = curves.mean(masks[name])
            if mean is None:
                continue
            ax.plot(curves.times, mean["measured"], color=colour, label=f"{name} measured")
            label = next(iter(curves.fitted))
            ax.plot(curves.times, mean[label], "--", color=colour, label=f"{name} {label}")
    ax.set_xlabel("canonical gradient direction")
    ax.set_ylabel("S/S0")
    ax.legend(fontsize=7)
    fig.tight_layout()
    curve_path = Path(path).with_name(Path(path).stem + "_curves.png")
    fig.savefig(curve_path, dpi=90)
    plt.close(fig)
    return Path(path)

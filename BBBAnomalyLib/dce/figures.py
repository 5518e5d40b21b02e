"""The DCE figure: input frame, curves (measured, model fit, the RLS network's output), RLS, its
uncertainty, Ktrans and the true Ktrans when known. Uses the shared helpers of :mod:`BBBAnomalyLib.figures`.

The dotted curves are what the RLS autoencoder returns for the ROI's curves (``DCEResult.curves()``,
"RLS reconstruction"), mapped back to the curves' units exactly (an identity network gives the measured
curve back: Testing/test_dce_outputs_round17.py). The networks are early-stopped where leaky curves stand
out, i.e. projection-like: on the demo object dce-rls-world returns a low, late-peaking generic curve for
normal brain (NAWM peak SER 0.33 vs 0.63 measured) and almost nothing for the tumour, so the curve is
labelled as the network's output, not as a fit that should follow the measured one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import _contours, _overlay, _pyplot, axial_slice, ras_slice_index, save_figure
from ..core.volume import Volume


#: The legend's name of the dotted RLS curve, and the note under it: the early-stopped network is not a fit.
RLS_LABEL = "RLS network output (not a fit)"
RLS_NOTE = ("dotted: the early-stopped (projection-like) RLS network's\n"
            "output; it need not follow normal curves. RLS is the\n"
            "positive part of mean(measured - dotted), in % SER")


def dce_figure(path: str | Path, series: Volume, result, masks: dict[str, np.ndarray],
               truth: dict[str, Volume] | None = None, title: str = "") -> Path:
    plt = _pyplot()
    focus = masks.get("tumor", result.brain_mask)
    k = ras_slice_index(series, focus)
    late = series.n_frames - 1
    background = axial_slice(series.frame(late), k)
    brain = axial_slice(result.brain_mask.astype(np.float32), k, series.affine) > 0
    fig, axes = plt.subplots(2, 3, figsize=(12.6, 8.2))
    ax = axes[0, 0]
    ax.imshow(background, cmap="gray")
    ax.set_title("input, last frame")
    _contours(ax, {name: axial_slice(m.astype(np.float32), k, series.affine) for name, m in masks.items()
                   if name in ("tumor", "nawm", "aif")})
    ax = axes[0, 1]
    curves = result.curves()
    colors = {"tumor": "darkorange", "nawm": "royalblue"}
    for name, color in colors.items():
        if name not in masks:
            continue
        mean = curves.mean(masks[name])
        if mean is None:
            continue
        ax.plot(curves.times, mean["measured"], color=color, lw=2, label=f"{name} measured")
        for label, style in zip([lbl for lbl in mean if lbl != "measured"], ("--", ":")):
            ax.plot(curves.times, mean[label], color=color, ls=style, lw=1.5,
                    label=f"{name} {RLS_LABEL if label == 'RLS reconstruction' else label}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(curves.unit)
    rls_shown = "RLS reconstruction" in curves.fitted
    ax.legend(fontsize=7, title=RLS_NOTE if rls_shown else None, title_fontsize=6.5)
    ax.set_title("ROI curves, model fit and RLS network output" if rls_shown else "ROI curves and model fit")
    panels = [("rls", "RLS", "inferno"), ("rls_uncertainty", "RLS uncertainty (noise SE)", "viridis"),
              ("ktrans", "Ktrans", "magma")]
    if truth is not None and "ktrans" in truth:
        vmax = float(np.percentile(truth["ktrans"].data[result.brain_mask], 99.9))
        _overlay(axes[0, 2], background, axial_slice(truth["ktrans"], k), brain, "magma", (0.0, vmax),
                 "true Ktrans (1/min)")
    else:
        axes[0, 2].axis("off")
    for col, (name, label, cmap) in enumerate(panels):
        if name not in result.maps:
            axes[1, col].axis("off")
            continue
        vol = result.maps[name]
        values = vol.data[result.brain_mask]
        vmax = float(np.percentile(values, 99.5)) if values.size else 1.0
        if name == "ktrans" and truth is not None and "ktrans" in truth:
            vmax = float(np.percentile(truth["ktrans"].data[result.brain_mask], 99.9))
        _overlay(axes[1, col], background, axial_slice(vol, k), brain, cmap, (0.0, max(vmax, 1e-6)),
                 f"{label} ({result.report['maps'][name]['unit']})")
    return save_figure(fig, axes, title or f"DCE leakage, {result.report['parameters']['model']}", path)

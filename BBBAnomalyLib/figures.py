"""PNG figures for people who would rather look than read (matplotlib, headless Agg backend).

Slices are shown axially in radiological convention (patient right on the left of the image),
whatever the voxel axes of the input, by reorienting to RAS first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core.volume import Volume


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def axial_slice(volume: Volume | np.ndarray, k: int, affine: np.ndarray | None = None) -> np.ndarray:
    """Axial slice `k` (in RAS-reoriented voxel order) as a 2D image, anterior up, patient right left."""
    import nibabel as nib

    data = volume.data if isinstance(volume, Volume) else volume
    affine = volume.affine if isinstance(volume, Volume) else affine
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(data, ornt)  # axes now +R, +A, +S
    return np.flipud(ras[:, :, k].T)[:, ::-1]  # rows: anterior at top; columns: patient right at left


def ras_slice_index(volume: Volume, mask: np.ndarray) -> int:
    """The RAS axial index with the most voxels of `mask` (e.g. the tumor's largest slice)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(volume.affine)
    ras = nib.orientations.apply_orientation(mask.astype(np.uint8), ornt)
    return int(np.argmax(ras.sum(axis=(0, 1))))


def dsc_figure(path: str | Path, series: Volume, result, masks: dict[str, np.ndarray],
               truth: dict[str, Volume] | None = None, title: str = "") -> Path:
    """Input frame, AIF and ROI curves, and CBV/CBF/MTT overlays (and truth CBV when known)."""
    plt = _pyplot()
    focus = masks.get("tumor", result.brain_mask)
    k = ras_slice_index(series, focus)
    peak_frame = int(np.argmax(result.aif)) + 2
    background = axial_slice(series.frame(min(peak_frame, series.n_frames - 1)), k)
    brain = axial_slice(result.brain_mask.astype(np.float32), k, series.affine) > 0

    panels = [("cbv_corrected" if "cbv_corrected" in result.maps else "cbv", "CBV", "magma"),
              ("cbf", "CBF", "inferno"), ("mtt", "MTT", "viridis")]
    ncols = 3
    fig, axes = plt.subplots(2, ncols, figsize=(4.2 * ncols, 8.2))
    ax = axes[0, 0]
    ax.imshow(background, cmap="gray")
    ax.set_title(f"input, frame {peak_frame} (bolus peak)")
    _contours(ax, {name: axial_slice(m.astype(np.float32), k, series.affine) for name, m in masks.items()
                   if name in ("tumor", "nawm", "aif")})
    ax = axes[0, 1]
    ax.plot(result.times, result.aif, color="crimson", lw=2, label="AIF")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("AIF ΔR2* (1/s)", color="crimson")
    twin = ax.twinx()
    if result.delta_r2s is not None:
        for name, color in (("tumor", "darkorange"), ("nawm", "royalblue")):
            if name in masks:
                twin.plot(result.times, result.mean_curve(masks[name]), color=color, lw=2, label=f"{name} mean")
    twin.set_ylabel("tissue ΔR2* (1/s)")
    lines = ax.get_legend_handles_labels()
    lines2 = twin.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    ax.set_title("AIF and ROI curves")
    ax = axes[0, 2]
    if truth is not None and "cbv" in truth:
        true_cbv, unit = truth_in_estimate_units(truth["cbv"], result)
        _overlay(ax, background, axial_slice(true_cbv, k), brain, "magma",
                 _range(result.maps[panels[0][0]].data[result.brain_mask]), f"true CBV ({unit})", unit)
    else:
        ax.axis("off")
    for col, (name, label, cmap) in enumerate(panels):
        vol = result.maps[name]
        unit = dsc_unit(result, name)
        _overlay(axes[1, col], background, axial_slice(vol, k), brain, cmap,
                 _range(vol.data[result.brain_mask]), f"{label} ({unit})", unit)
    return save_figure(fig, axes, title or f"DSC perfusion, {result.report['parameters']['method']}", path)


def save_figure(fig, axes, title: str, path: str | Path) -> Path:
    """Finish a map figure the same way for every pipeline: no ticks, the patient's right marked on each image
    (radiological view), the title; written to ``path`` at 110 dpi and closed."""
    for a in axes.ravel():
        if a.images:
            a.set_xticks([])
            a.set_yticks([])
            a.text(0.02, 0.5, "R", transform=a.transAxes, color="white", fontsize=9, va="center")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def dsc_unit(result, name: str) -> str:
    """The unit of a DSC map, as its run's report gives it (per 100 ml with density 1: dsc.pipeline.map_info)."""
    return result.report["maps"][name]["unit"]


def truth_in_estimate_units(true_cbv: Volume, result) -> tuple[Volume, str]:
    """True CBV (ml/100 ml of a phantom with one hematocrit) as the pipeline reports CBV: times kH/ρ,
    in the estimate's unit, so the two panels share one colour scale honestly (truth in ml/100 ml
    beside an estimate in ml/100 g made a 1.42x mismatch look like an error of the method)."""
    p = result.report["parameters"]
    scale = float(p.get("kh", 1.0)) / float(p.get("density", 1.0))
    name = "cbv_corrected" if "cbv_corrected" in result.maps else "cbv"
    return true_cbv.with_data(np.asarray(true_cbv.data, np.float32) * scale), dsc_unit(result, name)


def _range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    return (0.0, float(np.percentile(finite, 99))) if finite.size else (0.0, 1.0)


def _overlay(ax, background, image, brain, cmap, vrange, title, unit: str = ""):
    plt = _pyplot()
    ax.imshow(background, cmap="gray")
    shown = np.ma.masked_where(~brain, image)
    im = ax.imshow(shown, cmap=cmap, vmin=vrange[0], vmax=vrange[1], alpha=0.85)
    bar = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if unit:
        bar.set_label(unit)
    ax.set_title(title)


def _contours(ax, masks: dict[str, np.ndarray]):
    colors = {"tumor": "darkorange", "nawm": "royalblue", "aif": "crimson"}
    for name, m in masks.items():
        if m.any():
            ax.contour(m > 0, levels=[0.5], colors=colors.get(name, "white"), linewidths=1)
            ax.plot([], [], color=colors.get(name, "white"), label=name)
    if masks:
        ax.legend(loc="lower right", fontsize=7)

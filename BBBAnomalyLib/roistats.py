"""Region statistics of maps: mean/median/sd/volume per ROI and the ROI/reference ratio.

Tumor/NAWM rCBV (the ratio of the tumor mean to the normal-appearing white matter mean) is
what a radiologist reads; the same table serves every map of every pipeline.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .report import summarise
from .volume import Volume

STAT_KEYS = ("mean", "median", "sd", "n_voxels", "volume_ml")


def region_stats(values: np.ndarray, voxel_volume_ml: float) -> dict:
    """Statistics of the finite values of a region (NaN/inf voxels are left out and counted)."""
    stats = summarise(values)
    n = stats.pop("n")
    return {"n_voxels": n, "volume_ml": float(n * voxel_volume_ml), "non_finite_voxels": int(values.size - n),
            "mean": stats.get("mean"), "median": stats.get("median"), "sd": stats.get("sd"), **stats}


def roi_statistics(maps: dict[str, Volume], roi: np.ndarray, reference: np.ndarray | None = None,
                   roi_name: str = "roi", reference_name: str = "reference") -> dict:
    """Per map: stats in `roi` (and in `reference`) and the ratios roi/reference of mean and median.

    maps: name -> 3D Volume, all on one grid; roi/reference: boolean masks on that grid.
    Returns {"maps": {name: {roi_name: {...}, reference_name: {...}, "ratio_mean": r, "ratio_median": r}},
    "roi": roi_name, "reference": reference_name}.
    """
    if not maps:
        raise InputError("no maps given")
    first = next(iter(maps.values()))
    for name, vol in maps.items():
        if vol.is_4d:
            raise InputError(f"map '{name}' is 4D; roi-stats works on 3D maps")
        if not vol.same_grid(first):
            raise InputError(f"map '{name}' is not on the grid of '{next(iter(maps))}'; all maps must share one grid")
    masks = {roi_name: roi} if reference is None else {roi_name: roi, reference_name: reference}
    for label, m in masks.items():
        if m.shape != first.spatial_shape:
            raise InputError(f"the {label} mask has shape {m.shape}, the maps {first.spatial_shape}")
    result = {"roi": roi_name, "reference": reference_name if reference is not None else None, "maps": {}}
    for name, vol in maps.items():
        entry = {label: region_stats(vol.data[m], vol.voxel_volume_ml) for label, m in masks.items()}
        if reference is not None:
            for stat in ("mean", "median"):
                a, b = entry[roi_name][stat], entry[reference_name][stat]
                entry[f"ratio_{stat}"] = (a / b) if (a is not None and b not in (None, 0.0)) else None
        result["maps"][name] = entry
    return result


def format_table(stats: dict) -> str:
    """A plain-text table: one row per map, ROI and reference columns, then the ratio."""
    roi, ref = stats["roi"], stats["reference"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.4g}"

    header = ["map", f"{roi} mean", f"{roi} median", f"{roi} sd", f"{roi} ml"]
    if ref:
        header += [f"{ref} mean", f"{ref} median", f"{ref} sd", f"{ref} ml", f"{roi}/{ref} (mean)", "(median)"]
    rows = [header]
    for name, e in stats["maps"].items():
        row = [name] + [fmt(e[roi][k]) for k in ("mean", "median", "sd", "volume_ml")]
        if ref:
            row += [fmt(e[ref][k]) for k in ("mean", "median", "sd", "volume_ml")]
            row += [fmt(e["ratio_mean"]), fmt(e["ratio_median"])]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)

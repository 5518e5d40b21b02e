"""How each output map is shown: colour table and window/level (plain numpy; used by mrml.py).

Colour tables are Slicer's built-in ones, named by their node IDs. Windows come from robust
percentiles of the map's nonzero voxels, so one hot vessel does not wash out the tumor; ratio
maps are centred on 1 (the reference) and signed maps on 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GREY = "vtkMRMLColorTableNodeGrey"
RAINBOW = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
VIRIDIS = "vtkMRMLColorTableNodeFileViridis.txt"
INFERNO = "vtkMRMLColorTableNodeFileInferno.txt"
DIVERGING = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
LABELS = "vtkMRMLColorTableNodeLabels"


@dataclass(frozen=True)
class MapDisplay:
    colour_node_id: str
    window_min: float
    window_max: float


#: map name -> (colour table, kind): kind "positive", "ratio" (centred on 1), "signed" (centred
#: on 0), "time" (from 0), "fraction" (0 to 1), "mask" (labels) or "image" (grey, for synthetic images).
MAP_STYLES = {
    # DSC
    "cbv": (RAINBOW, "positive"), "cbv_corrected": (RAINBOW, "positive"), "cbf": (RAINBOW, "positive"),
    "mtt": (VIRIDIS, "time"), "tmax": (VIRIDIS, "time"), "k2": (DIVERGING, "signed"),
    "rcbv": (RAINBOW, "ratio"), "rcbf": (RAINBOW, "ratio"),
    # DCE
    "rls": (INFERNO, "positive"), "rls_vascular": (VIRIDIS, "positive"), "rls_abs": (INFERNO, "positive"),
    "ktrans": (RAINBOW, "positive"), "ve": (VIRIDIS, "positive"), "vp": (RAINBOW, "positive"),
    "kep": (RAINBOW, "positive"), "delay": (VIRIDIS, "time"), "fit_r2": (VIRIDIS, "fraction"),
    # anomaly and synthesis
    "anomaly": (INFERNO, "positive"), "anomaly_mask": (LABELS, "mask"), "mean_attenuation": (GREY, "image"),
    "synthetic_t1gd": (GREY, "image"), "synthetic_t1gd_enhancing": (GREY, "image"),
    "synthetic_t1gd_non_enhancing": (GREY, "image"), "tumor_probability": (INFERNO, "fraction"),
    "aif_mask": (LABELS, "mask"), "brain_mask": (LABELS, "mask"),
}


def map_display(name: str, data: np.ndarray) -> MapDisplay:
    """Colour table and window for a map called ``name`` with values ``data``."""
    colour, kind = MAP_STYLES.get(name, (RAINBOW, "positive"))
    values = np.asarray(data, dtype=np.float64)
    values = values[np.isfinite(values) & (values != 0)]
    if kind in ("mask", "fraction"):
        return MapDisplay(colour, 0.0, 1.0)
    if values.size == 0:
        return MapDisplay(colour, 0.0, 1.0)
    if kind == "ratio":
        high = max(float(np.percentile(values, 99)), 1.5)
        return MapDisplay(colour, 0.0, min(high, 10.0))
    if kind == "signed":
        extent = float(np.percentile(np.abs(values), 99)) or 1.0
        return MapDisplay(colour, -extent, extent)
    if kind == "image":
        low, high = np.percentile(values, [0.5, 99.5])
        return MapDisplay(colour, float(low), float(high) if high > low else float(low) + 1.0)
    high = float(np.percentile(values, 99))
    low = 0.0 if kind in ("positive", "time") else float(np.percentile(values, 1))
    if not high > low:
        high = low + 1.0
    return MapDisplay(colour, low, high)

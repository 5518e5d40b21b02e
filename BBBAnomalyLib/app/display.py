"""How each output map is shown: colour table, window, transparency (plain numpy; used by mrml).

Colour tables are Slicer's built-in ones, named by their node IDs. Maps a radiologist reads
against fixed scales get a fixed window preset (rCBV 0-4, Ktrans 0-0.2 /min, ...), so two cases
look alike; other maps get a window from robust percentiles of their nonzero voxels, so one hot
vessel does not wash out the tumor. Zero is "not analysed" (outside the brain mask, background)
in every map that has a sign: those voxels are made transparent with a lower threshold, so the
overlay does not tint the whole field of view (the lowest colour of ColdToHotRainbow is an
opaque navy). Signed maps (BSW K2) cannot be thresholded that way and show zero in the middle
colour of a diverging table.
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

#: The smallest value shown: anything below (zero = not analysed) is transparent. float32
#: outputs are exactly 0 where nothing was computed, so any positive threshold far below a
#: meaningful value works; this one is far below every unit used here.
TRANSPARENT_BELOW = 1e-9


@dataclass(frozen=True)
class MapDisplay:
    colour_node_id: str
    window_min: float
    window_max: float
    threshold_min: float | None = None  # values below are transparent (None: show every voxel)
    preset: bool = False  # the window is a fixed clinical preset, not from this map's values


#: map name -> (colour table, kind): kind "positive", "ratio", "signed" (centred on 0), "time"
#: (from 0), "fraction" (0 to 1), "mask" (labels) or "image" (grey, for synthetic images).
MAP_STYLES = {
    # DSC
    "cbv": (RAINBOW, "positive"), "cbv_corrected": (RAINBOW, "positive"), "cbf": (RAINBOW, "positive"),
    "mtt": (VIRIDIS, "time"), "tmax": (VIRIDIS, "time"), "k2": (DIVERGING, "signed"),
    "rcbv": (RAINBOW, "ratio"), "rcbf": (RAINBOW, "ratio"),
    # DCE
    "rls": (INFERNO, "positive"), "rls_vascular": (VIRIDIS, "positive"), "rls_abs": (INFERNO, "positive"),
    "ktrans": (RAINBOW, "positive"), "ve": (VIRIDIS, "fraction"), "vp": (RAINBOW, "positive"),
    "kep": (RAINBOW, "positive"), "delay": (VIRIDIS, "time"), "fit_r2": (VIRIDIS, "fraction"),
    "rls_uncertainty": (VIRIDIS, "positive"), "fp": (RAINBOW, "positive"), "ps": (RAINBOW, "positive"),
    "e": (VIRIDIS, "fraction"), "tc": (VIRIDIS, "time"), "te": (VIRIDIS, "time"),
    # anomaly and synthesis
    "anomaly": (INFERNO, "positive"), "anomaly_mask": (LABELS, "mask"), "mean_attenuation": (GREY, "image"),
    "synthetic_t1gd": (GREY, "image"), "synthetic_t1gd_enhancing": (GREY, "image"),
    "synthetic_t1gd_non_enhancing": (GREY, "image"), "tumor_probability": (INFERNO, "fraction"),
    "aif_mask": (LABELS, "mask"), "brain_mask": (LABELS, "mask"), "tumor_roi": (LABELS, "mask"),
    "enhancement": (INFERNO, "positive"), "enhancement_uncertainty": (VIRIDIS, "positive"),
    "enhancement_probability": (INFERNO, "fraction"),
    "phae_fit_error": (VIRIDIS, "positive"), "phae_cbf_uncertainty": (VIRIDIS, "positive"),
    "phae_pooled_curves": (VIRIDIS, "positive"),
}
#: Maps a pipeline may add later are styled by what their name says they are.
SUFFIX_STYLES = (("_uncertainty", (VIRIDIS, "positive")), ("_error", (VIRIDIS, "positive")),
                 ("_mask", (LABELS, "mask")), ("_probability", (INFERNO, "fraction")))


def map_style(name: str) -> tuple[str, str]:
    """(colour table, kind) of a map name: listed, else by suffix, else a positive rainbow map."""
    if name in MAP_STYLES:
        return MAP_STYLES[name]
    return next((style for suffix, style in SUFFIX_STYLES if name.endswith(suffix)), (RAINBOW, "positive"))

#: Fixed windows (in the map's unit) for the maps radiologists read on a known scale.
WINDOW_PRESETS = {
    "rcbv": (0.0, 4.0), "rcbf": (0.0, 4.0),  # relative to NAWM: 1 = normal, > 1.75 suspicious (glioma grading)
    "mtt": (0.0, 12.0), "tmax": (0.0, 10.0),  # seconds
    "ktrans": (0.0, 0.2), "vp": (0.0, 0.1), "kep": (0.0, 2.0),  # 1/min, fraction, 1/min
    "ve": (0.0, 1.0), "fit_r2": (0.0, 1.0), "tumor_probability": (0.0, 1.0),
}


def map_display(name: str, data: np.ndarray) -> MapDisplay:
    """Colour table, window and transparency threshold for a map called ``name`` with values ``data``.

    Unknown names (a pipeline may add maps, e.g. uncertainty maps) get the positive-map defaults.
    """
    colour, kind = map_style(name)
    threshold = None if kind == "signed" else (0.5 if kind == "mask" else TRANSPARENT_BELOW)
    if name in WINDOW_PRESETS:  # fixed: the values are not needed
        low, high = WINDOW_PRESETS[name]
        return MapDisplay(colour, low, high, threshold, preset=True)
    if kind in ("mask", "fraction"):
        return MapDisplay(colour, 0.0, 1.0, threshold)
    values = np.asarray(data).ravel()
    values = values[np.isfinite(values) & (values != 0)].astype(np.float64)  # only the analysed voxels
    if values.size == 0:
        return MapDisplay(colour, 0.0, 1.0, threshold)
    if kind == "ratio":
        high = max(float(np.percentile(values, 99)), 1.5)
        return MapDisplay(colour, 0.0, min(high, 10.0), threshold)
    if kind == "signed":
        extent = float(np.percentile(np.abs(values), 99)) or 1.0
        return MapDisplay(colour, -extent, extent, None)
    if kind == "image":
        low, high = np.percentile(values, [0.5, 99.5])
        return MapDisplay(colour, float(low), float(high) if high > low else float(low) + 1.0, threshold)
    high = float(np.percentile(values, 99))
    low = 0.0 if kind in ("positive", "time") else float(np.percentile(values, 1))
    if not high > low:
        high = low + 1.0
    return MapDisplay(colour, low, high, threshold)

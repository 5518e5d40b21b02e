"""Region statistics of maps: mean/median/sd/volume per ROI and the ROI/reference ratio.

Tumor/NAWM rCBV (the ratio of the tumor mean to the normal-appearing white matter mean) is
what a radiologist reads; the same table serves every map of every pipeline.
"""

from __future__ import annotations

import numpy as np

from .core.errors import InputError
from .core.report import summarise
from .core.volume import Volume

STAT_KEYS = ("mean", "median", "sd", "n_voxels", "volume_ml")
#: A reference mean within this many standard errors of zero is "zero": a ratio to it is noise
#: (a tumor/NAWM K2 ratio of 46,212,667 was reported before this rule).
ZERO_MEAN_STANDARD_ERRORS = 2.0


def reference_ratio(value, reference: dict, stat: str = "mean") -> tuple[float | None, str | None]:
    """(value / reference[stat], None), or (None, why) when the ratio would be meaningless.

    reference: a :func:`~BBBAnomalyLib.core.report.summarise`-style dict (mean, median, sd, n or n_voxels).
    Refused: a missing or non-finite value or reference; a reference of the other sign than the
    value (a negative NAWM CBV); a reference mean indistinguishable from zero (within two standard
    errors, e.g. K2 in normal tissue), where the ratio only measures noise.
    """
    ref = reference.get(stat)
    if value is None or ref is None or not np.isfinite(value) or not np.isfinite(ref):
        return None, "no finite values in one of the regions"
    if ref == 0:
        return None, f"the reference {stat} is 0"
    if value != 0 and np.sign(value) != np.sign(ref):
        return None, f"the reference {stat} ({ref:.3g}) has the other sign than the region's ({value:.3g})"
    n = reference.get("n", reference.get("n_voxels")) or 0
    sd = reference.get("sd") or 0.0
    if n > 1 and abs(ref) <= ZERO_MEAN_STANDARD_ERRORS * sd / np.sqrt(n):
        return None, (f"the reference {stat} ({ref:.3g}) is indistinguishable from 0 (sd {sd:.3g} over {n} voxels)")
    return float(value / ref), None


def _report_entry(name: str, folder) -> dict:
    """The map's entry in the run's report.json in ``folder`` ({} when there is none or it cannot be read)."""
    import json
    from pathlib import Path

    if folder is None:
        return {}
    try:
        entry = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))["maps"][name]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return entry if isinstance(entry, dict) else {}


def map_unit(name: str, folder=None) -> str:
    """The unit of a map called ``name``: from the run's report.json in ``folder`` when there is one
    (it knows e.g. that DCE maps are semi-quantitative), else from the pipelines' map tables."""
    unit = _report_entry(name, folder).get("unit")
    if isinstance(unit, str):
        return unit
    from .dce.pipeline import MAP_INFO as DCE_MAPS
    from .dmri.pipeline import MAP_INFO as DMRI_MAPS
    from .dsc.pipeline import MAP_INFO as DSC_MAPS
    from .structural.pipeline import MAP_INFO as T1FLAIR_MAPS

    for table in (DSC_MAPS, DCE_MAPS, DMRI_MAPS, T1FLAIR_MAPS):
        if name in table:
            return table[name][0]
    return ""


def map_caveat(name: str, folder=None) -> str:
    """What the run's report.json says a reader of an ROI mean of this map must know that no per-voxel map shows
    (e.g. PHAE CBF's bias by capillary transit shape, dsc/phae/systematic.py); "" where it says nothing."""
    caveat = _report_entry(name, folder).get("caveat")
    return caveat if isinstance(caveat, str) else ""


def region_stats(values: np.ndarray, voxel_volume_ml: float) -> dict:
    """Statistics of the finite values of a region (NaN/inf voxels are left out and counted)."""
    stats = summarise(values)
    n = stats.pop("n")
    return {"n_voxels": n, "volume_ml": float(n * voxel_volume_ml), "non_finite_voxels": int(values.size - n),
            "mean": stats.get("mean"), "median": stats.get("median"), "sd": stats.get("sd"), **stats}


def roi_statistics(maps: dict[str, Volume], roi: np.ndarray, reference: np.ndarray | None = None,
                   roi_name: str = "roi", reference_name: str = "reference", units: dict[str, str] | None = None,
                   caveats: dict[str, str] | None = None) -> dict:
    """Per map: stats in `roi` (and in `reference`) and the ratios roi/reference of mean and median.

    maps: name -> 3D Volume, all on one grid; roi/reference: boolean masks on that grid.
    Returns {"maps": {name: {roi_name: {...}, reference_name: {...}, "ratio_mean": r, "ratio_median": r}},
    "roi": roi_name, "reference": reference_name}. A ratio is None, with the reason in
    ``"ratio_warnings"``, when the reference makes it meaningless (see :func:`reference_ratio`).
    units: name -> unit, kept in each map's entry (``"unit"``); caveats: name -> what its run's report says an
    ROI mean of it keeps (:func:`map_caveat`), kept as ``"caveat"`` where not empty.
    """
    if not maps:
        raise InputError("no maps given")
    first = next(iter(maps.values()))
    for name, vol in maps.items():
        if not isinstance(vol, Volume):
            raise InputError(f"map '{name}' must be a Volume (its grid is needed), got {type(vol).__name__}")
        if vol.is_4d:
            raise InputError(f"map '{name}' is 4D; roi-stats works on 3D maps")
        if not vol.same_grid(first):
            raise InputError(f"map '{name}' is not on the grid of '{next(iter(maps))}'; all maps must share one grid")
    masks = {roi_name: roi} if reference is None else {roi_name: roi, reference_name: reference}
    masks = {label: _inside(m, label, first) for label, m in masks.items()}
    if reference is not None and np.array_equal(masks[roi_name], masks[reference_name]):
        # every ratio would be exactly 1: e.g. one label file with tumour and NAWM given as both, every label taken
        raise InputError(f"the {roi_name} and {reference_name} masks are the same {int(masks[roi_name].sum())} voxels, so "
                         "every ratio would be 1; give two regions (from one label file: --roi-label and "
                         "--reference-label of roi-stats)")
    result = {"roi": roi_name, "reference": reference_name if reference is not None else None, "maps": {}}
    for name, vol in maps.items():
        entry = {"unit": (units or {}).get(name, "")}
        if (caveats or {}).get(name):
            entry["caveat"] = caveats[name]
        entry.update({label: region_stats(vol.data[m], vol.voxel_volume_ml) for label, m in masks.items()})
        if reference is not None:
            why = []
            for stat in ("mean", "median"):
                entry[f"ratio_{stat}"], reason = reference_ratio(entry[roi_name][stat], entry[reference_name], stat)
                if reason:
                    why.append(f"{roi_name}/{reference_name} {stat} of {name}: {reason}")
            if why:
                entry["ratio_warnings"] = why
        result["maps"][name] = entry
    return result


def _inside(mask, label: str, grid: Volume) -> np.ndarray:
    """A mask (bool, 0/1 or 0/255 integers, float, a list, or a Volume on the maps' grid) as a boolean array:
    nonzero and not NaN is inside. An integer mask used as an index would pick whole rows instead of voxels."""
    if isinstance(mask, Volume):
        if not grid.same_grid(mask):
            raise InputError(f"the {label} mask is not on the maps' voxel grid; resample it onto the maps")
        mask = mask.data[..., 0] if mask.is_4d and mask.n_frames == 1 else mask.data
    m = np.asarray(mask)
    if m.shape != grid.spatial_shape:
        raise InputError(f"the {label} mask has shape {m.shape}, the maps {grid.spatial_shape}")
    if m.dtype == bool:
        return m
    if m.dtype.kind not in "biuf":
        raise InputError(f"the {label} mask holds {m.dtype} values; give a boolean or numeric mask (nonzero = inside)")
    return (m != 0) & ~np.isnan(m) if m.dtype.kind == "f" else m != 0


def format_table(stats: dict) -> str:
    """A plain-text table: one row per map, ROI and reference columns, then the ratio."""
    roi, ref = stats["roi"], stats["reference"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.4g}"

    header = ["map", "unit", f"{roi} mean", f"{roi} median", f"{roi} sd", f"{roi} ml"]
    if ref:
        header += [f"{ref} mean", f"{ref} median", f"{ref} sd", f"{ref} ml", f"{roi}/{ref} (mean)", "(median)"]
    rows = [header]
    for name, e in stats["maps"].items():
        row = [name, e.get("unit") or "-"] + [fmt(e[roi][k]) for k in ("mean", "median", "sd", "volume_ml")]
        if ref:
            row += [fmt(e[ref][k]) for k in ("mean", "median", "sd", "volume_ml")]
            row += [fmt(e["ratio_mean"]), fmt(e["ratio_median"])]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                      for r in rows] + table_notes(stats))


def table_notes(stats: dict, caveats: bool = True) -> list[str]:
    """The "note: ..." lines printed under the table: how the masks were read, why a ratio is n/a, each map's
    caveat (``caveats``), NaN voxels left out. The Slicer panel shows the same lines beside its ratio table."""
    roi, ref = stats["roi"], stats["reference"]
    notes = [f"note: {n}" for n in stats.get("mask_notes", [])]
    notes += [f"note: ratio n/a for {w}" for e in stats["maps"].values() for w in e.get("ratio_warnings", [])[:1]]
    if caveats:
        notes += caveat_notes({name: e.get("caveat") for name, e in stats["maps"].items()})
    # the statistics are of the finite voxels; say so where some were not (they are in the JSON too)
    notes += [f"note: {name}: {e[label]['non_finite_voxels']} of the {label} voxels are NaN or infinite in the map "
              "and were left out of its statistics"
              for name, e in stats["maps"].items() for label in (roi, ref)
              if label and e.get(label, {}).get("non_finite_voxels")]
    return notes


def caveat_notes(caveats: dict) -> list[str]:
    """The "note: <map>: <caveat>" lines of the maps with a caveat (``caveats``: name -> caveat or None), in order: as
    roi-stats prints them under its table and `bbbanomaly dsc` beside its tumour/NAWM ratios."""
    return [f"note: {name}: {caveat}" for name, caveat in caveats.items() if caveat]

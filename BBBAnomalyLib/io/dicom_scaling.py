"""Philips MR intensity scaling of classic DICOM images: the precise (floating-point) value of each image.

Philips stores three values per pixel (Philips' own terms; Chenevert et al., Transl Oncol 2014, PMC3998685; the
Philips notes of dcm2niix): the stored value SV, the displayed value DV = SV * RS + RI with the public RescaleSlope
(0028,1053) and RescaleIntercept (0028,1052), and the floating-point value FP = DV / (RS * SS) with the private MR
Scale Slope SS (2005,xx0E in the block of the private creator "Philips MR Imaging DD 001", usually (2005,100E)).
The scanner scales every series (and, with per-image scaling, every image) to fill the integer range, so the DV of
two series differ by their RS * SS (0.002 to 1.0 in the Philips series logged in dcm2niix's issues 165, 461, 493,
546; three series of one session there 1.7 % apart): only FP is proportional to the MR signal across series.
GDCM/SimpleITK apply RS and RI (each file its own) and give DV; this module finds what to divide each image by to
get FP.

Rules, for a series whose files all name Philips as Manufacturer (0008,0070); anything else is read as GDCM gives it:

- A map made on the scanner (ImageType DERIVED, or an ImageType value naming a map: "B0 MAP", B1, ADC ...; Philips
  marks its B0 and B1 maps ORIGINAL) or an image whose RescaleType (0028,1054) names a unit (anything but US,
  "normalized" or empty: e.g. ms, percent) already holds quantitative display values: kept as DV.
- Every other image needs a usable SS (a finite number > 0): then each image is divided by its own RS * SS
  (dcm2niix's default "-p y", done per image rather than with the first image's factors).
- No image has one (an anonymiser or PACS that drops private tags): the display values are kept (Philips' DV is
  comparable within one scan) and ``extra["intensity_scaling"]`` says so; callers that combine several series (a VFA
  fit) warn, since the series' relative scale is then unknown.
- Some images have one and others not (or an unusable one): refused in one line naming a file, since those images
  cannot be put on one scale (a damaged or merged export).

dcm2niix (v1.0.20260724, run on scripts/dicom_scaling_audit.py's files) takes the precise factors of a classic
series' first image for the whole series: images whose SS differs come out off by the SS ratio, and where RS or RI
differ between images it applies each image's RS and RI and then the first image's 1/SS, off by the first RS. This
module divides each image by its own RS * SS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError

#: Public header fields the plan needs, read with the reader's other tags (name -> DICOM tag).
TAGS = {"manufacturer": "0008|0070", "rescale_slope": "0028|1053", "rescale_intercept": "0028|1052",
        "rescale_type": "0028|1054"}
PHILIPS_CREATOR = "PHILIPS MR IMAGING DD 001"
#: RescaleType values that carry no unit (the display value is then on the scanner's arbitrary scale).
UNITLESS_RESCALE_TYPES = {"", "US", "NORMALIZED"}
#: ImageType values (after ORIGINAL/DERIVED and PRIMARY) of maps whose display value carries a unit.
MAP_TYPES = {"B0", "B1", "ADC", "EADC", "FA"}


def is_philips(header: dict) -> bool:
    return "PHILIPS" in header.get("manufacturer", "").upper()


def philips_private(reader: sitk.ImageFileReader) -> dict[str, str]:
    """The MR Scale Slope (and Intercept) of the file ``reader`` has read with its private tags, as header fields:
    ``philips_scale_slope`` (the text GDCM gives, '' when the creator's block has none) and
    ``philips_scale_intercept``; {} when no block is reserved by "Philips MR Imaging DD 001" (the private tags were
    removed, or another creator holds them)."""
    keys = set(reader.GetMetaDataKeys())
    for block in range(0x10, 0x100):
        creator = f"2005|00{block:02x}"
        if creator in keys and reader.GetMetaData(creator).strip().upper() == PHILIPS_CREATOR:
            slope, intercept = f"2005|{block:02x}0e", f"2005|{block:02x}0d"
            return {"philips_scale_slope": reader.GetMetaData(slope).strip() if slope in keys else "",
                    "philips_scale_intercept": reader.GetMetaData(intercept).strip() if intercept in keys else ""}
    return {}


def _number(text: str | None, default: float) -> float:
    if text is None or not text.strip():
        return default
    try:
        return float(text.split("\\")[0])
    except ValueError:
        return math.nan


@dataclass
class ScalingPlan:
    """What to divide each file's display values by (None: nothing, the series is read as GDCM gives it), and the
    summary for ``acquisition.extra``."""

    divisors: np.ndarray | None
    extra: dict = field(default_factory=dict)


def _quantitative(header: dict) -> bool:
    """A display value with a unit of its own: a map made on the scanner (DERIVED, or an ImageType value naming a map:
    Philips writes ORIGINAL\\PRIMARY\\B0 MAP\\B0 for a B0 map, "B0" alone since R11), or a RescaleType naming a unit."""
    values = [v.strip().upper() for v in header.get("image_type", "").split("\\")]
    return (values[0] == "DERIVED" or any("MAP" in v or v in MAP_TYPES for v in values[2:])
            or header.get("rescale_type", "").strip().upper() not in UNITLESS_RESCALE_TYPES)


def scaling_plan(headers: list[dict], files, directory) -> ScalingPlan:
    """The plan for one series (see the module docstring); an InputError for a Philips series whose images cannot
    be put on one scale."""
    if not all(is_philips(h) for h in headers):  # (a file without Manufacturer: the series is read as before)
        return ScalingPlan(None)
    names = [Path(f).name for f in files]
    rs = np.array([_number(h.get("rescale_slope"), 1.0) for h in headers])
    ri = np.array([_number(h.get("rescale_intercept"), 0.0) for h in headers])
    ss = np.array([_number(h.get("philips_scale_slope"), math.nan) for h in headers])
    usable = np.isfinite(ss) & (ss > 0) & np.isfinite(rs) & (rs != 0)
    quantitative = np.array([_quantitative(h) for h in headers])
    scaled = ~quantitative
    info = {"vendor": "Philips", "rescale_slope": _distinct(rs), "rescale_intercept": _distinct(ri)}
    if not scaled.any():
        kinds = sorted({h.get("rescale_type", "").strip() or h.get("image_type", "").split("\\")[0] for h in headers})
        return ScalingPlan(None, {"intensity_scaling": "display", "philips_scaling": {
            **info, "why": f"quantitative display values ({', '.join(kinds)}): kept as the scanner displays them"}})
    if scaled.sum() < len(headers):
        a = min(n for n, q in zip(names, quantitative) if q)
        b = min(n for n, q in zip(names, quantitative) if not q)
        raise InputError(f"the Philips series in '{directory}' mixes scanner-made maps or images with a RescaleType "
                         f"unit (e.g. '{a}') and ordinary images (e.g. '{b}'); a series must hold one kind of image: "
                         "move the maps out of the folder")
    if not usable.any():
        return ScalingPlan(None, {"intensity_scaling": "display", "philips_scaling": {
            **info, "why": "no Philips MR Scale Slope (2005,100E) in the files (private tags removed?): display "
                           "values, comparable within this series only"}})
    if not usable.all():
        bad = int(np.flatnonzero(~usable)[0])
        value = headers[bad].get("philips_scale_slope")
        what = f"an unusable ({value!r})" if value else "no"
        raise InputError(f"{int((~usable).sum())} of the {len(headers)} Philips images in '{directory}' have {what} "
                         f"MR Scale Slope (2005,100E) (e.g. '{names[bad]}') while the others have one: their "
                         "intensities cannot be put on one scale. Export the series again with its private tags "
                         "(Philips MR Imaging DD 001) from the scanner or PACS")
    divisors = rs * ss
    info.update(scale_slope=_distinct(ss), display_per_precise=_distinct(divisors),
                varies_within_series=bool(np.ptp(divisors) > 1e-6 * np.abs(divisors).max()))
    return ScalingPlan(divisors, {"intensity_scaling": "philips_precise", "philips_scaling": info})


def _distinct(values: np.ndarray, most: int = 8) -> list[float]:
    """Up to ``most`` distinct values (7 significant digits), for the report."""
    seen = sorted({float(f"{v:.7g}") for v in values if np.isfinite(v)})
    return seen[:most]


def apply_divisors(frame: np.ndarray, divisors: np.ndarray) -> np.ndarray:
    """(slices, rows, columns) display values of one frame -> float32 precise values, each slice by its divisor."""
    return (np.asarray(frame, np.float64) / divisors[:, None, None]).astype(np.float32)

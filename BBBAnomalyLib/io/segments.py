"""Which voxels of a label file are one region: Slicer segmentations (.seg.nrrd) and integer label maps.

A Slicer segmentation file holds several named segments, each a label value in a layer; overlapping segments go to
separate layers, and the file is then 4D (the layers last, as :func:`~BBBAnomalyLib.io.read_volume` reads it). The
segments are described in the NRRD header (``Segment<i>_Name``, ``_LabelValue``, ``_Layer``, as Slicer's
vtkMRMLSegmentationStorageNode writes them). "Nonzero = inside" took every segment of such a file at once: a file
holding "tumor" and "nawm" given as the ROI and as the reference gave a tumour/NAWM ratio of exactly 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError

#: Integer images with more distinct nonzero values than this are not label maps (e.g. an image given as a mask).
MAX_LABELS = 64


@dataclass(frozen=True)
class Segment:
    name: str
    layer: int
    value: int


def slicer_segments(path) -> list[Segment]:
    """The segments a Slicer .seg.nrrd declares ([] for any other file)."""
    name = Path(str(path)).name.lower()
    if not (name.endswith(".nrrd") or name.endswith(".nhdr")):
        return []
    from .nrrd import raw_header

    try:
        fields = raw_header(Path(str(path)))
    except OSError:
        return []
    found = []
    for key in sorted((k for k in fields if re.fullmatch(r"Segment\d+_Name", k)), key=lambda k: int(k[7:-5])):
        i = key[7:-5]
        try:
            found.append(Segment(fields[key], int(fields.get(f"Segment{i}_Layer", "0")),
                                 int(fields.get(f"Segment{i}_LabelValue", "1"))))
        except ValueError:
            raise InputError(f"'{path}': segment {i} ({fields[key]!r}) has a layer or label value that is not an "
                             "integer; save the segmentation again from Slicer") from None
    return found


def label_values(data: np.ndarray) -> list[int]:
    """The distinct nonzero values of an integer label map (at most MAX_LABELS + 1 of them; [] for other data)."""
    if data.dtype.kind not in "biu" and not (data.dtype.kind == "f" and np.array_equal(data, np.round(data))):
        return []
    values = np.unique(data[np.isfinite(data)] if data.dtype.kind == "f" else data)
    return [int(v) for v in values[values != 0][:MAX_LABELS + 1]]


def select(data: np.ndarray, label, segments: list[Segment], mask_name: str, where: str) -> np.ndarray:
    """The voxels of one segment (by name) or one label value of ``data`` (3D, or 4D layers last) as a 3D array of
    0/1. InputError naming what the file holds when ``label`` matches nothing."""
    if isinstance(label, str) and not label.strip().lstrip("-").isdigit():
        matches = [s for s in segments if s.name == label] or [s for s in segments if s.name.lower() == label.lower()]
        if not matches:
            holds = (f"its segments are {', '.join(repr(s.name) for s in segments)}" if segments else
                     "it is not a Slicer segmentation with named segments: give a label value")
            raise InputError(f"mask '{mask_name}' ({where}) has no segment {label!r}; {holds}")
        segment = matches[0]
        layer = data[..., segment.layer] if data.ndim == 4 else data
        if data.ndim == 4 and segment.layer >= data.shape[3]:
            raise InputError(f"mask '{mask_name}' ({where}): segment {label!r} is in layer {segment.layer} but the file "
                             f"has {data.shape[3]}; save the segmentation again from Slicer")
        return (layer == segment.value).astype(np.uint8)
    value = int(str(label).strip())
    if data.ndim == 4:
        raise InputError(f"mask '{mask_name}' ({where}) has {data.shape[3]} layers; choose a segment by name")
    chosen = data == value
    if not chosen.any():
        values = label_values(data)
        raise InputError(f"mask '{mask_name}' ({where}) has no voxel with label {value}; its labels are "
                         f"{', '.join(map(str, values[:MAX_LABELS])) or 'none'}")
    return chosen.astype(np.uint8)


def several_segments_message(mask_name: str, where: str, segments: list[Segment]) -> str:
    names = ", ".join(repr(s.name) for s in segments)
    return (f"mask '{mask_name}' ({where}) is a Slicer segmentation holding {len(segments)} segments ({names}); a mask "
            "is one region: choose one (roi-stats: --roi-label/--reference-label NAME), or export the one segment as "
            "a labelmap in Slicer (Segmentations module, Export to files)")

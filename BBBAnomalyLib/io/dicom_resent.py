"""Images sent twice: a series (or part of it) exported again with new SOPInstanceUIDs, into the same series or under
a second SeriesInstanceUID in the same folder.

A PACS, a workstation or a scanner console that sends a series again gives every image a new SOPInstanceUID (and may
renumber InstanceNumber, or give the whole transmission a new SeriesInstanceUID); the rest of each header and the
pixels stay as they were. Within one series the copies lie at the same slice position and time as their originals:
a dynamic series was refused as "one slice twice at TemporalPositionIdentifier ..." (or, with a whole-second clock
and renumbered copies, read with every copy as an extra frame and no word); a 3D series became 2 frames. Under a
second SeriesInstanceUID the folder was refused as holding two series.

Images count as copies only when their headers agree in every field the reader reads but SOPInstanceUID and
InstanceNumber and their pixels are identical (compared, not assumed); once the copies are left out, every slice
position must hold the same number of images. Then one copy of each image is read, with a warning. Images with one
header but other pixels are no copies: nothing is merged, and where the series is refused because of them the line
says that their pixels differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicom_frames import _clocks, _vector, _whole_seconds

#: Header fields that a second export of the same images renews (the rest of the header stays as it was).
RENEWED_BY_EXPORT = ("sop_uid", "instance")
#: Fields that are the same for every image of one acquisition: series whose first images differ in one of them are
#: not compared image by image (a folder of several real series is refused without reading every header).
_SERIES_FIELDS = ("modality", "description", "image_type", "orientation", "echo_time", "repetition_time", "flip",
                  "field", "thickness", "manufacturer")


def _identity(header: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in header.items() if k not in RENEWED_BY_EXPORT))


def _pixels(path) -> np.ndarray | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        return sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError:
        return None  # the reader names an undecodable file when it reads the pixels


def _same_pixels(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(np.array_equal(a, b))


def _keep_order(headers, names) -> list[tuple]:
    """Which copy of an image is kept: the lowest InstanceNumber (the first export, so that InstanceNumber keeps
    ordering the kept images as one export), then the file name."""
    def instance(h):
        try:
            return float(h.get("instance", "").split("\\")[0])
        except ValueError:
            return np.inf
    return [(instance(h), names[i]) for i, h in enumerate(headers)]


def _timed(headers) -> bool:
    """Headers that place each image in time (a TemporalPositionIdentifier, or an acquisition clock with sub-second
    resolution, the keys :func:`.dicom_frames._group_frames` refuses to see repeat): two images that share them and
    their position are one slice at one moment."""
    if any(h.get("temporal_id") for h in headers):
        return True
    return any(name in ("AcquisitionDateTime", "AcquisitionTime") and not _whole_seconds(clock)
               for name, clock in _clocks(headers))


@dataclass
class Copies:
    """What :func:`find_copies` found: the images to keep and the warning (``keep`` None: nothing is left out), and
    two images of one header whose pixels differ (for the line that refuses such a series)."""
    keep: list[int] | None = None
    warning: str = ""
    differing: tuple[str, str] | None = None

    def refusal(self, directory) -> str:
        a, b = self.differing
        return (f"'{a}' and '{b}' in '{directory}' are one slice at one time (their headers agree in all but "
                "SOPInstanceUID and InstanceNumber) but their pixels differ: the series was sent twice and the two "
                "transmissions differ (reprocessed, or another reconstruction); keep the files of one transmission in "
                "the folder")


def find_copies(files, headers, directory) -> Copies:
    """Images of one series that are pixel-identical copies of others under new SOPInstanceUIDs (see the module
    docstring)."""
    groups: dict[tuple, list[int]] = {}
    for i, h in enumerate(headers):
        groups.setdefault(_identity(h), []).append(i)
    repeated = [members for members in groups.values() if len(members) > 1]
    if not repeated:
        return Copies()
    names = [Path(f).name for f in files]
    order = _keep_order(headers, names)
    identical, differing = True, None
    for members in repeated:
        members.sort(key=lambda i: order[i])
        first = _pixels(files[members[0]])
        for i in members[1:]:
            if not _same_pixels(first, _pixels(files[i])):
                identical = False
                if _timed(headers):
                    differing = tuple(sorted((names[members[0]], names[i])))
                break
        if not identical:
            return Copies(differing=differing)
    keep = sorted(members[0] for members in groups.values())
    position = [tuple(np.round(_vector(headers[i].get("position"), 3), 3)) for i in keep]
    per_position = np.unique(np.unique(position, axis=0, return_counts=True)[1])
    if per_position.size != 1:  # not the same number of images at every position once left out: no resend
        return Copies()
    left_out = len(files) - len(keep)
    pair = sorted(names[i] for i in repeated[0][:2])
    whole = len(repeated) == len(keep)
    what = f"its {len(keep)} images" if whole else f"{len(repeated)} of its {len(keep)} images"
    kind = "3D series" if per_position[0] == 1 else "dynamic series"
    sent = f"the {kind} exported twice" if whole else f"part of the {kind} exported again"
    return Copies(keep=keep, warning=(
        f"'{directory}' holds {left_out} pixel-identical {'copy' if left_out == 1 else 'copies'} of {what} under other "
        f"SOPInstanceUIDs (e.g. "
        f"'{pair[0]}' and '{pair[1]}': {sent}); one copy of each image is read"))


def resent_series(by_uid: dict[str, list[str]], read_headers, directory) -> tuple[str, str] | tuple[None, str]:
    """For a folder of several series: (the series to read, the warning) when every other series holds only
    pixel-identical copies of the largest one's images (the series sent again under a new SeriesInstanceUID, whole
    or in part); (None, a clause for the refusal) when their headers match but pixels differ; (None, "") otherwise.
    ``read_headers`` is the reader's header reader (files -> headers, sizes, spacings, pixel ids)."""
    uids = sorted(by_uid, key=lambda uid: -len(by_uid[uid]))  # stable: GDCM's order among equal sizes
    firsts = [read_headers(by_uid[uid][:1]) for uid in uids]
    signature = {tuple((k, h[0][0].get(k)) for k in _SERIES_FIELDS) + (h[1][0][:2],) for h in firsts}
    if len(signature) > 1:
        return None, ""
    main, others = uids[0], uids[1:]
    main_files = by_uid[main]
    originals: dict[tuple, int] = {}
    main_headers = read_headers(main_files)[0]
    for i, h in sorted(enumerate(main_headers), key=lambda item: Path(main_files[item[0]]).name):
        originals.setdefault(_identity(h), i)
    pairs = []
    for uid in others:
        for f, h in zip(by_uid[uid], read_headers(by_uid[uid])[0]):
            j = originals.get(_identity(h))
            if j is None:
                return None, ""
            pairs.append((main_files[j], f))
    for original, copy in pairs:
        if not _same_pixels(_pixels(original), _pixels(copy)):
            a, b = Path(original).name, Path(copy).name
            return None, (f" ('{a}' and '{b}' share their headers but not their pixels: the series are not copies "
                          "of one another)")
    a, b = (Path(p).name for p in pairs[0])
    series = "another SeriesInstanceUID" if len(others) == 1 else f"{len(others)} other SeriesInstanceUIDs"
    return main, (f"'{directory}' holds {len(pairs)} pixel-identical copies of images of the series {main} "
                  f"({len(main_files)} files) under {series} (e.g. '{a}' and '{b}': the series sent twice); the series "
                  f"{main} is read")

"""Whether a dynamic series was acquired with view sharing, as far as its header's names say.

Why: most clinical DCE series are view-shared (Siemens TWIST, GE DISCO, GE TRICKS, Philips 4D-TRAK / keyhole, Canon
DRKS): each frame keeps its own k-space centre and borrows the periphery from neighbouring frames, so a small object
(an artery) reads a blend of several frames and a measured AIF's peak reads low (docs/reliability.md, "View-shared
DCE (session 24)"). :mod:`..dce.view_sharing` says what that means for a run.

What a header says reliably is little. No DICOM attribute of the classic MR image (nor BIDS) states view sharing or
its temporal footprint; the vendors' sequence/protocol names are what identifies it, and those are the names that
reach this project's readers already:

* the series description (DICOM SeriesDescription (0008,103E); BIDS ``SeriesDescription``), kept by both readers
  as ``acquisition.description`` (Siemens: the protocol's name, e.g. "t1_twist_tra_dyn", as in dcm2niix issue #689;
  GE: the operator's text, e.g. "Ax DISCO", where the product name is usually kept; Philips: e.g. "4D-TRAK");
* the sequence names kept by :mod:`.sequence_type` in ``acquisition.extra["sequence"]``: SequenceName (0018,0024),
  GE's private internal sequence name (0019,109C), BIDS ``PulseSequenceDetails`` (Siemens' sequence file name).

A name is matched as a word (letters on either side do not match: "disconnect" is not DISCO). The record goes to
``acquisition.extra["view_sharing"]``: ``scheme`` (twist, disco, tricks, 4d-trak, keyhole, drks) and ``sequence``
(the vendor's name), ``matched`` (field -> the text), or ``conflict`` where names of two schemes appear. What it
cannot say: the share of k-space in the centre, the number of periphery subsets, the sharing direction (neither is
in any public tag), and a view-shared series whose names were edited says nothing (the absence of a record does not
mean the series is fully sampled). Siemens' SequenceName for TWIST (a "*fl3d..." name, like any FLASH 3D and like
the TOF angiogram's "*fl3d1r_t70") does not identify it, so it is not used as evidence on its own.
"""

from __future__ import annotations

import re

#: ``Acquisition.extra`` key of the record.
EXTRA_KEY = "view_sharing"

#: scheme -> (the vendor's name, the pattern its names match): a word, with no letter on either side
SCHEMES = {
    "twist": ("Siemens TWIST", re.compile(r"(?<![a-z])twist(?![a-z])", re.IGNORECASE)),
    "disco": ("GE DISCO", re.compile(r"(?<![a-z])disco(?![a-z])", re.IGNORECASE)),
    "tricks": ("GE TRICKS", re.compile(r"(?<![a-z])tricks(?![a-z])", re.IGNORECASE)),
    "4d-trak": ("Philips 4D-TRAK", re.compile(r"(?<![a-z])4d[-_ ]?trak(?![a-z])", re.IGNORECASE)),
    "keyhole": ("keyhole", re.compile(r"(?<![a-z])key[-_ ]?hole(?![a-z])", re.IGNORECASE)),
    "drks": ("Canon DRKS", re.compile(r"(?<![a-z])drks(?![a-z])", re.IGNORECASE)),
}
#: the fields of ``extra["sequence"]`` (io/sequence_type.py) whose text is looked at
SEQUENCE_FIELDS = ("sequence_name", "ge_internal_sequence_name", "pulse_sequence_details", "pulse_sequence_name")


def classify_texts(texts: dict) -> dict | None:
    """{field: text} -> the record (see the module docstring), or None where no name of a scheme appears."""
    found: dict[str, dict[str, str]] = {}
    for field, text in texts.items():
        if not isinstance(text, str) or not text.strip():
            continue
        for scheme, (_, pattern) in SCHEMES.items():
            if pattern.search(text):
                found.setdefault(scheme, {})[field] = text.strip()
    if not found:
        return None
    if len(found) == 1:
        scheme, matched = next(iter(found.items()))
        return {"scheme": scheme, "sequence": SCHEMES[scheme][0], "matched": matched}
    return {"scheme": None, "sequence": None, "conflict": {s: m for s, m in found.items()},
            "matched": {f: t for m in found.values() for f, t in m.items()}}


def texts_of(acquisition) -> dict:
    """The names of ``acquisition`` that can name a view-sharing sequence (see the module docstring)."""
    texts = {"series_description": getattr(acquisition, "description", "") or ""}
    sequence = (getattr(acquisition, "extra", None) or {}).get("sequence")
    if isinstance(sequence, dict):
        texts.update({field: sequence[field] for field in SEQUENCE_FIELDS if isinstance(sequence.get(field), str)})
    return texts


def detect(acquisition) -> dict | None:
    """The record for ``acquisition``: one already in ``extra["view_sharing"]`` (a sidecar's BBBAnomaly.extra, a
    converted file's) is kept as it is; else what its names say; None where nothing says view sharing."""
    extra = getattr(acquisition, "extra", None) or {}
    if isinstance(extra.get(EXTRA_KEY), dict):
        return extra[EXTRA_KEY]
    return classify_texts(texts_of(acquisition))


def add_to_acquisition(acquisition) -> dict | None:
    """Put :func:`detect`'s record into ``acquisition.extra`` (JSON-ready; nothing is added where it is None)."""
    record = detect(acquisition)
    if record is not None:
        acquisition.extra[EXTRA_KEY] = record
    return record

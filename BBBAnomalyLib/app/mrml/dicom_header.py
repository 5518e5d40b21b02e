"""What a node's DICOM files say beyond the image, read as ``bbbanomaly FOLDER`` reads it (session 23).

Why: the library's DICOM reader keeps header facts in ``acquisition.extra`` that the pipelines act on: the contrast
given (:mod:`BBBAnomalyLib.io.dicom_contrast`; DCE warns where the stated dose is not the population AIF's,
:mod:`BBBAnomalyLib.dce.stated_dose`) and whether the series is spin- or gradient-echo
(:mod:`BBBAnomalyLib.io.sequence_type`). The panel hands a series over as its node's voxels and attributes, which
hold none of them, so the same series run from the panel lost those checks without a word. Here they are read from
the node's DICOM files, found as :mod:`.dicom_source` finds them (a sequence's ``MultiVolume.FrameFileList``; a
MultiVolume's or scalar volume's ``DICOM.instanceUIDs`` in Slicer's DICOM database), by the reader's own functions.

A node not loaded from DICOM, or whose files have gone or cannot be read, gains nothing: its acquisition, and the
job's inputs, are what they were.
"""

from __future__ import annotations

import importlib
import logging
import os

from .dicom_source import _frame_files, _itk_warnings_off

_log = logging.getLogger("BBBAnomalyLib")

#: The library reader's header-fact readers that take a series' files and return ``{extra key: record}`` or ``{}``
#: (``io/dicom.py::_volume`` calls the same ones on the files it read), as "module:function" (imported when a node
#: is read, as the pipelines' runners are: importing the bridge stays light): a new one is one line here.
HEADER_READERS = (
    "BBBAnomalyLib.io.dicom_contrast:contrast_extra",  # "contrast_bolus": agent, volume, weight (DCE's stated dose)
    "BBBAnomalyLib.io.sequence_type:sequence_extra_from_dicom",  # "sequence": spin or gradient echo (DSC)
)


def _reader(name: str):
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


def _node_files(node) -> list[str]:
    """The DICOM files ``node`` was loaded from; [] when it names none or any of them has gone (the series was moved
    or deleted: a part of it would be a guess)."""
    try:
        files = _frame_files(node)
    except Exception:  # noqa: BLE001 - a node that is not a volume: the run's own checks say what is wrong
        return []
    return files if files and all(os.path.isfile(f) for f in files) else []


def dicom_header_facts(node, files: list[str] | None = None) -> dict:
    """``{acquisition.extra key: record}`` from the DICOM files ``node`` was loaded from (``files``: those files, when
    already found); ``{}`` when it names none, when any of them has gone, or where a reader cannot read them (only
    header facts: the run goes on as before, and says nothing it cannot know)."""
    files = _node_files(node) if files is None else files
    if not files:
        return {}
    facts: dict = {}
    with _itk_warnings_off():
        for name in HEADER_READERS:
            try:
                facts.update(_reader(name)(files))
            except (OSError, RuntimeError, ValueError, UnicodeError) as exc:
                _log.info("the DICOM header of '%s' was not read by %s: %s", node.GetName(), name, exc)
    return facts


def with_header_facts(acquisition, node):
    """``acquisition`` (changed in place) with the node's :func:`dicom_header_facts` in ``extra``; a key the node's
    own acquisition already has (e.g. ``BBBAnomaly.Acquisition`` written by the library) is kept as it is."""
    files = _node_files(node)
    for key, record in dicom_header_facts(node, files).items():
        acquisition.extra.setdefault(key, record)
    if files and (acquisition.field_strength is None or not acquisition.description):
        from ...core.errors import InputError
        from ...io.dicom import field_strength_of, series_description_of

        with _itk_warnings_off():
            try:
                if acquisition.field_strength is None:  # the field the header's agent's r1 is read at (DCE)
                    acquisition.field_strength = field_strength_of(files)
                if not acquisition.description:  # the name that says a DCE series is view-shared (TWIST, DISCO...)
                    acquisition.description = series_description_of(files)
            except (InputError, RuntimeError, ValueError):  # an unreadable file: the run reads neither, as before
                pass
    return acquisition

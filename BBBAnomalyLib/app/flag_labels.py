"""A run's warnings in the panel's words: beside a command-line flag, the panel field that sets it (session 24).

Why: the library's warnings are written for the command line ("run again with --relaxivity 3.32", "give --dose for
another dose"); a panel user has no command line but a field for most of these. The panel shows the field's label
beside the flag ("--relaxivity 3.32 (panel: Relaxivity r1, Advanced section)") in its log and status line; the
report and the command line keep the warning word for word.

Which field a flag sets is read from the two registries, so that the words cannot drift from either: the command's
argparse parser (its options' destinations) and the pipeline's spec (:mod:`.pipelines`: parameters, acquisition
values and region selectors with their labels). Most destinations are the field's name; the few that are not are
listed below. A flag the panel has no field for (``--population-aif``, ``--vfa``) is left as it is.
"""

from __future__ import annotations

import functools
import re

#: command-line destination -> the panel field's name, where the two differ
FIELD_OF_DEST = {"mask": "brain_mask", "oi_target": "osvd_oi_target", "te": "echo_time", "tr": "repetition_time",
                 "no_opening": "opening", "no_anomaly": "anomaly_map"}
#: an option whose field depends on its value: (destination, value) -> the panel field's name
FIELD_OF_VALUE = {("aif", "auto"): "aif_auto", ("aif", "mask"): "aif_mask"}

_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w-])")
_NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.]*\w)"


@functools.lru_cache(maxsize=None)
def panel_fields(pipeline: str) -> dict:
    """{field name: the label the panel shows} of a pipeline: its parameters (advanced ones say where they are), its
    acquisition values and its region selectors (not the main image)."""
    from .pipelines import get_pipeline

    spec = get_pipeline(pipeline)
    fields = {p.name: p.label + (", Advanced section" if p.advanced else "") for p in spec.parameters}
    fields.update((a.name, a.label) for a in spec.acquisition)
    fields.update((i.key, i.label) for i in spec.inputs if not i.positional)
    return fields


@functools.lru_cache(maxsize=None)
def flag_fields(pipeline: str) -> dict:
    """{"--flag": (its argparse action, {value or None: the panel label})} of `bbbanomaly <pipeline>`'s options that
    the panel has a field for (None: whatever the value)."""
    from ..cli import build_parser
    from ..config import leaf_parser

    fields = panel_fields(pipeline)
    out = {}
    for action in leaf_parser(build_parser(), [pipeline])._actions:
        labels = {None: fields[name]} if (name := FIELD_OF_DEST.get(action.dest, action.dest)) in fields else {}
        labels.update({value: fields[name] for (dest, value), name in FIELD_OF_VALUE.items()
                       if dest == action.dest and name in fields})
        for flag in action.option_strings:
            if flag.startswith("--") and labels:
                out[flag] = (action, labels)
    return out


def _value_end(text: str, end: int, action) -> tuple[int, str | None]:
    """Where the value(s) given to ``action``'s flag in ``text`` (from ``end``) stop, and the first value: numbers,
    one of its choices or 'header' ('--relaxivity header'); a flag without a value ends where it ends."""
    if action.nargs == 0:
        return end, None
    words = [re.escape(str(c)) for c in action.choices or ()] + ["header"]
    one = re.compile(rf"\s+({_NUMBER}|(?:{'|'.join(words)})(?![\w-]))")
    first, many = None, action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)
    while (m := one.match(text, end)) is not None:
        first = m.group(1) if first is None else first
        end = m.end()
        if not many or not re.fullmatch(_NUMBER, m.group(1)):
            break
    return end, first


def with_panel_labels(pipeline: str, text: str) -> str:
    """``text`` with " (panel: <label>)" after the first mention of each command-line flag (and its value) that the
    panel of ``pipeline`` has a field for; unchanged for a pipeline without a command or a text naming no such flag."""
    from ..core.errors import InputError

    try:
        known = flag_fields(pipeline)
    except InputError:  # a pipeline without a command of its own: the text as it is
        return text
    pieces, done, at = [], set(), 0
    for m in _FLAG.finditer(text):
        if m.group() not in known or m.group() in done or m.start() < at:
            continue
        action, labels = known[m.group()]
        end, value = _value_end(text, m.end(), action)
        label = labels.get(value, labels.get(None))
        if label is None:
            continue
        done.add(m.group())
        pieces += [text[at:end], f" (panel: {label})"]
        at = end
    return "".join(pieces) + text[at:]

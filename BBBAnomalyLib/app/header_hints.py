"""What a series' DICOM header says about a parameter the panel asks for, shown beside that parameter (session 23).

Why: the DCE contrast dose is an advanced field ("unknown" = the population AIF's own 0.1 mmol/kg). A DICOM series
often states the dose given (:mod:`BBBAnomalyLib.dce.stated_dose`); the run warns when it differs from the assumed
one, but only after it has run. The panel shows it beside the field before Apply, and offers to fill it in: offered,
never applied by itself (the tags are typed at the console; the user decides, as with ``--dose header``).

The facts are those of ``acquisition.extra`` (from the node's DICOM files: :mod:`.mrml.dicom_header`); nothing here
imports slicer or qt. :data:`HINTS` says which pipeline parameter has a hint and where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParameterHint:
    """What the header says about one parameter: ``text`` (one line, shown under the field), ``details`` (its
    tooltip: how it was worked out, or why there is no value) and ``value`` (what "Use" fills in; None: nothing)."""

    text: str
    details: str
    value: float | None = None


def dose_hint(extra: dict) -> ParameterHint | None:
    """The contrast dose the header states (``extra["contrast_bolus"]``), or why it states none; None where the
    series carries none of the contrast tags."""
    from ..dce.stated_dose import stated_dose
    from ..io.dicom_contrast import EXTRA_KEY

    stated = stated_dose(extra.get(EXTRA_KEY))
    if stated is None:
        return None
    dose = stated["dose_mmol_per_kg"]
    if dose is None:
        return ParameterHint(f"header: no dose ({stated['why_not']})", "The series' DICOM contrast tags: "
                             + ", ".join(f"{k} {v}" for k, v in stated["tags"].items()))
    tags = stated["tags"]
    total = tags.get("total_dose_ml")
    millilitres = total if isinstance(total, (int, float)) and total > 0 else tags.get("volume_ml")
    what = f"{millilitres:g} ml {stated['agent'] or 'of a gadolinium agent'}, {tags['patient_weight_kg']:g} kg"
    details = (f"The series' DICOM header states {dose:.3g} mmol/kg: {stated['from']}"
               + (f" ({stated['checked']})" if stated.get("checked") else "")
               + (f". {stated['agent']} is {stated['caveat']}" if stated.get("caveat") else "")
               + ". It is not applied by itself (the tags are typed at the console or copied from an exam card): "
                 "check it against the protocol; Use fills it in. It matters only with the population AIF (no AIF "
                 "region, automatic AIF off)")
    return ParameterHint(f"header: {dose:.3g} mmol/kg ({what})", details, round(dose, 3))


#: pipeline -> {parameter: the function of ``acquisition.extra`` that gives its hint}
HINTS = {"dce": {"dose": dose_hint}}


def parameter_hints(pipeline: str, extra: dict | None) -> dict[str, ParameterHint]:
    """{parameter name: hint} for ``pipeline`` from a node's header facts (``acquisition.extra``)."""
    out = {}
    for name, hint_of in HINTS.get(pipeline, {}).items():
        hint = hint_of(extra or {})
        if hint is not None:
            out[name] = hint
    return out

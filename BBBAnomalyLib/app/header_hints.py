"""What a series' DICOM header says about a parameter the panel asks for, shown beside that parameter (session 23).

Why: the DCE contrast dose is an advanced field ("unknown" = the population AIF's own 0.1 mmol/kg). A DICOM series
often states the dose given (:mod:`BBBAnomalyLib.dce.stated_dose`); the run warns when it differs from the assumed
one, but only after it has run. The panel shows it beside the field before Apply, and offers to fill it in: offered,
never applied by itself (the tags are typed at the console; the user decides, as with ``--dose header``). The same
holds for the agent's relaxivity r1 (session 24): the header names the agent and the field strength, and
:mod:`BBBAnomalyLib.dce.stated_relaxivity` gives its published r1 there (``--relaxivity header`` on the command line).

The facts are those of ``acquisition.extra`` and ``acquisition.field_strength`` (from the node's DICOM files:
:mod:`.mrml.dicom_header`); nothing here imports slicer or qt. :data:`HINTS` says which pipeline parameter has a hint
and where it comes from.
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


def dose_hint(extra: dict, field_strength: float | None = None) -> ParameterHint | None:
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


def relaxivity_hint(extra: dict, field_strength: float | None = None) -> ParameterHint | None:
    """The published r1 of the agent the header names (``extra["contrast_bolus"]``) at its MagneticFieldStrength
    (``field_strength``, T), or why there is none; None where the series names no agent. The value is exactly the
    one ``--relaxivity header`` applies (:func:`.stated_relaxivity.header_relaxivity`'s ``r1``)."""
    from types import SimpleNamespace

    from ..dce.stated_relaxivity import DEFAULT_R1, header_relaxivity

    stated = header_relaxivity(SimpleNamespace(extra=extra, field_strength=field_strength))
    if stated is None:
        return None
    tag = f"'{stated['agent_tag']}'"
    named = f"{stated['agent']}, the header's {tag}" if stated["agent"] else tag
    at = f" at {stated['field_strength_t']:g} T" if stated.get("field_strength_t") else ""
    if stated["r1"] is None:
        values = stated.get("r1_by_field") or {}
        known = ("; published: " + ", ".join(f"{r1:g} at {f} T" for f, r1 in values.items()) + f" ({stated['source']})"
                 if values else "")
        return ParameterHint(f"header: {stated['agent'] or stated['agent_tag']}, no r1 ({stated['why_not']})",
                             f"The series' DICOM header names {named}{at}{known}. Give the agent's r1 at this field "
                             "if you know it")
    r1 = stated["r1"]
    other = stated.get("also_reported") or {}
    other_r1 = (other.get("r1_by_field") or {}).get(f"{stated['tabulated_field_t']:g}")
    details = (f"The series' DICOM header names {named}{at}: its published r1 there is {r1:g} /s/mM "
               f"({stated['source']})"
               + (f"; also reported: {other_r1:g} /s/mM ({other['source']})" if other_r1 is not None else "")
               + (f". Converted with the default {DEFAULT_R1:g}, Ktrans, vp and ve read "
                  f"{100 * (r1 / DEFAULT_R1 - 1):+.0f} % from that alone" if abs(r1 / DEFAULT_R1 - 1) >= 0.005 else "")
               + ". It is not applied by itself (the agent tag is typed at the console): check it against the "
                 "protocol; Use fills it in (as --relaxivity header). It matters only with the population AIF (no AIF "
                 "region, automatic AIF off) and a T10: there Ktrans, vp and ve scale with 1 / r1")
    return ParameterHint(f"header: {r1:g} /s/mM ({stated['agent']}{at})", details, r1)


#: pipeline -> {parameter: the function of (``acquisition.extra``, ``acquisition.field_strength``) that gives its hint}
HINTS = {"dce": {"dose": dose_hint, "relaxivity": relaxivity_hint}}


def parameter_hints(pipeline: str, extra: dict | None, field_strength: float | None = None
                    ) -> dict[str, ParameterHint]:
    """{parameter name: hint} for ``pipeline`` from a node's header facts (``acquisition.extra``) and the field
    strength its header states (``acquisition.field_strength``, T; the relaxivity is read there)."""
    out = {}
    for name, hint_of in HINTS.get(pipeline, {}).items():
        hint = hint_of(extra or {}, field_strength)
        if hint is not None:
            out[name] = hint
    return out

"""The relaxivity of the contrast agent a DICOM series names, checked against the r1 the run converts with (session 23).

Why: the DCE pipeline turns signal into concentration with one r1 (``--relaxivity``, default 4.5 /s/mM): the tissue's
concentration is ΔR1 / r1. With a measured AIF (drawn, a search region, automatic) the blood is converted with the
same r1, so a wrong r1 scales the AIF and the tissue alike and cancels in Ktrans, vp and ve. A population AIF
(Parker, the default without an AIF mask) is a curve in mM and does not scale: there Ktrans, vp and ve read
r1 of the agent / r1 used times the truth (kep is unaffected). Published r1 differ by agent and field strength by
more than that default's neighbourhood: gadoterate at 1.5 T is 3.32 /s/mM in human plasma, and converted with 4.5
its maps read -26 %; gadobenate's 6.2 reads +38 %.

A DICOM series often names its agent (ContrastBolusAgent, ContrastBolusIngredient: read by
:mod:`BBBAnomalyLib.io.dicom_contrast` into ``acquisition.extra["contrast_bolus"]``) and always its
MagneticFieldStrength (the reader keeps it as ``acquisition.field_strength``). :func:`header_relaxivity` finds the
agent with the same name matching as the dose (:func:`.stated_dose.agents_in`) and takes its r1 at that field from
:data:`R1_BY_AGENT`; :func:`report_entry` records it (``report["conversion"]["header_relaxivity"]``) and, with a
population AIF and the default r1 on SPGR concentrations, warns with the exact ``--relaxivity`` to pass where the two
differ by more than :data:`WARN_ABOVE`. As the header's dose, the r1 is offered, never applied by itself (the agent
tag is typed at the console, and applying it would change existing users' maps without their asking); a given
``--relaxivity`` always wins; ``--relaxivity header`` applies it on request (:func:`relaxivity_from_header`).

The published values (T1 relaxivity at 37 °C, /s/mM = L/(mmol s)):

* Szomolanyi P, Rohrer M, Frenzel T, et al. Comparison of the relaxivities of macrocyclic gadolinium-based contrast
  agents in human plasma at 1.5, 3, and 7 T, and blood at 3 T. Invest Radiol 2019;54(9):559-564
  (doi:10.1097/RLI.0000000000000577, PMC6738537): human plasma at 1.5 / 3 / 7 T, gadobutrol 4.78 / 4.97 / 3.83,
  gadoteridol 3.80 / 3.28 / 3.21, gadoterate 3.32 / 3.00 / 2.84 (human blood at 3 T: 3.47, 2.61, 2.72).
* Shen Y, Goerner FL, Snyder C, et al. T1 relaxivities of gadolinium-based magnetic resonance contrast agents in
  human whole blood at 1.5, 3, and 7 T. Invest Radiol 2015;50(5):330-338: whole blood at 1.5 / 3 / 7 T, Gd-DOTA
  (gadoterate) 3.9 / 3.4 / 2.8, Gd-DO3A-butrol (gadobutrol) 4.6 / 4.5 / 4.2, Gd-DTPA (gadopentetate) 4.3 / 3.8 / 3.1,
  Gd-BOPTA (gadobenate) 6.2 / 5.4 / 4.7, Gd-DTPA-BMA (gadodiamide) 4.5 / 3.9 / 3.7, Gd-EOB-DTPA (gadoxetate)
  7.2 / 5.5 / 4.9, Gd-HP-DO3A (gadoteridol) 4.4 / 3.5 / 3.4.

The table takes human plasma where it was measured (Szomolanyi 2019: the population AIFs are plasma curves, and the
extravascular space holds the agent in plasma-like fluid), else whole blood (Shen 2015); the other source's value
is recorded beside it (``also_reported``), as the spread between media and laboratories (up to 17 %: gadoterate at
1.5 T, 3.32 plasma and 3.9 blood) is what the rule below leaves alone. Gadopiclenol (Elucirem, Vueway) has no value
here (none was found to check); it is a high-relaxivity agent ("two-to-three-fold greater T1 relaxivity than
commercial agents": Tweedle, Radiology 2019, doi:10.1148/radiol.2019192113), said and warned without a number.
"""

from __future__ import annotations

from ..io.dicom_contrast import EXTRA_KEY
from .parameters import DEFAULT_RELAXIVITY
from .stated_dose import agents_in

#: The r1 a run converts with when none is given (DCEParameters.relaxivity None; session 24: one constant).
DEFAULT_R1 = DEFAULT_RELAXIVITY
#: THE RULE (set before any measurement, session 23): with a population AIF, SPGR concentrations and the default r1,
#: the header's agent is warned about where its published r1 at the series' field differs from the r1 used by more
#: than 15 %. With a population AIF the maps' error is r1 agent / r1 used - 1 (proportional, as the dose's), and the
#: published values themselves differ by up to 15-17 % between media and laboratories for one agent and field
#: (gadoterate at 1.5 T: 3.32 in plasma, 3.9 in blood; gadoteridol 3.80 and 4.4): below that the literature does not
#: say the default is wrong; above it the agent's r1 is clearly not the default's (gadobutrol, gadodiamide and
#: gadopentetate at 1.5 T are within it; gadoterate, gadoteridol at 3 T, gadobenate and gadoxetate are not).
WARN_ABOVE = 0.15
#: a series' field strength takes a tabulated field's value within this fraction of it (2.89 T is 3 T's; 1.0 T has
#: none: r1 rises towards low fields, and no value is guessed between)
FIELD_WITHIN = 0.2
SZOMOLANYI_2019 = "human plasma, 37 °C; Szomolanyi et al., Invest Radiol 2019"
SHEN_2015 = "human whole blood, 37 °C; Shen et al., Invest Radiol 2015"
#: agent name (as :data:`.stated_dose.AGENTS` names it) -> ({field [T]: r1 [/s/mM]}, medium and source); the values
#: the module docstring cites
R1_BY_AGENT = {
    "gadobutrol": ({1.5: 4.78, 3.0: 4.97, 7.0: 3.83}, SZOMOLANYI_2019),
    "gadoteridol": ({1.5: 3.80, 3.0: 3.28, 7.0: 3.21}, SZOMOLANYI_2019),
    "gadoterate meglumine": ({1.5: 3.32, 3.0: 3.00, 7.0: 2.84}, SZOMOLANYI_2019),
    "gadopentetate dimeglumine": ({1.5: 4.3, 3.0: 3.8, 7.0: 3.1}, SHEN_2015),
    "gadobenate dimeglumine": ({1.5: 6.2, 3.0: 5.4, 7.0: 4.7}, SHEN_2015),
    "gadodiamide": ({1.5: 4.5, 3.0: 3.9, 7.0: 3.7}, SHEN_2015),
    "gadoxetate disodium": ({1.5: 7.2, 3.0: 5.5, 7.0: 4.9}, SHEN_2015),
}
#: the other medium's values, recorded beside the table's (the spread of the literature)
ALSO_REPORTED = {
    "gadobutrol": ({1.5: 4.6, 3.0: 4.5, 7.0: 4.2}, SHEN_2015),
    "gadoteridol": ({1.5: 4.4, 3.0: 3.5, 7.0: 3.4}, SHEN_2015),
    "gadoterate meglumine": ({1.5: 3.9, 3.0: 3.4, 7.0: 2.8}, SHEN_2015),
}
#: agents known here to lie far from the default without a value to offer (factor range against the standard agents)
HIGH_RELAXIVITY = {"gadopiclenol": "a high-relaxivity agent (2-3 times the r1 of the standard agents: Tweedle, "
                                   "Radiology 2019): no published r1 is tabulated here"}


def _field_value(values: dict[float, float], field: float | None) -> tuple[float | None, float | None]:
    """(the tabulated field, its r1) for the series' ``field`` [T]: the nearest tabulated field within
    :data:`FIELD_WITHIN` of it, else (None, None)."""
    if field is None or not field > 0:
        return None, None
    nearest = min(values, key=lambda tabulated: abs(tabulated - field))
    return (nearest, values[nearest]) if abs(nearest - field) <= FIELD_WITHIN * nearest else (None, None)


def header_relaxivity(acquisition) -> dict | None:
    """The r1 of the agent the series' header names, at its field strength: None where the header names no agent
    (no ContrastBolusAgent nor ContrastBolusIngredient: an ordinary series, or one with only PatientWeight); else
    ``{"agent", "agent_tag", "field_strength_t", "r1" (or None), "tabulated_field_t", "r1_by_field", "source",
    "also_reported", "why_not" (where no r1)}``."""
    record = (getattr(acquisition, "extra", None) or {}).get(EXTRA_KEY) or {}
    differs = record.get("differs") or {}
    tag = " / ".join(str(record[key]) for key in ("agent", "ingredient") if record.get(key))
    if not tag and not ({"agent", "ingredient"} & set(differs)):
        return None
    field = getattr(acquisition, "field_strength", None)
    out = {"agent": None, "agent_tag": tag or None, "field_strength_t": field, "r1": None}
    if {"agent", "ingredient"} & set(differs):
        key = "agent" if "agent" in differs else "ingredient"
        out["why_not"] = f"the series' images name different agents ({' / '.join(differs[key])})"
        return out
    named = agents_in(record)
    if len(named) != 1:
        out["why_not"] = (f"the tags name {len(named)} agents ({', '.join(sorted(named))})" if named else
                          f"{tag!r} is not an agent whose relaxivity is known here")
        return out
    agent = next(iter(named))
    out["agent"] = agent
    if agent in HIGH_RELAXIVITY:
        out["why_not"] = f"{agent} is {HIGH_RELAXIVITY[agent]}"
        return out
    if agent not in R1_BY_AGENT:
        out["why_not"] = f"no published r1 of {agent} is tabulated here"
        return out
    values, source = R1_BY_AGENT[agent]
    out.update(r1_by_field={f"{f:g}": r1 for f, r1 in values.items()}, source=source)
    if agent in ALSO_REPORTED:
        other, other_source = ALSO_REPORTED[agent]
        out["also_reported"] = {"r1_by_field": {f"{f:g}": r1 for f, r1 in other.items()}, "source": other_source}
    tabulated, r1 = _field_value(values, field)
    if r1 is None:
        out["why_not"] = ("the series states no MagneticFieldStrength" if field is None else
                          f"no r1 of {agent} is tabulated near {field:g} T (only at "
                          f"{', '.join(f'{f:g}' for f in values)} T)")
        return out
    out.update(r1=r1, tabulated_field_t=tabulated)
    return out


def _where(stated: dict) -> str:
    """"gadoterate meglumine (the header's 'Dotarem') at 1.5 T"."""
    at = f" at {stated['field_strength_t']:g} T" if stated.get("field_strength_t") else ""
    return f"{stated['agent']} (the header's '{stated['agent_tag']}'){at}"


def report_entry(acquisition, params, mode: str, population_name: str | None, warnings: list[str]) -> dict | None:
    """``report["conversion"]["header_relaxivity"]``: the r1 of the agent the header names (:func:`header_relaxivity`),
    whether it was used (never by itself) and what it was compared with; None where the header names no agent.
    With a population AIF, SPGR concentrations and the default r1, a warning with the exact ``--relaxivity`` to pass
    where they differ by more than :data:`WARN_ABOVE` (for an agent known to lie far from it without a value, a
    warning without a number). A given r1 wins (compared, not warned about); a measured AIF is converted with the
    same r1 as the tissue (recorded only); relative enhancement and concentration input use no r1 (recorded only)."""
    stated = header_relaxivity(acquisition)
    if stated is None:
        return None
    used = float(params.relaxivity)
    # session 24: the r1 the user chose (4.5 too) is told from the default by the parameters themselves; an object
    # without the flag is read as before (the default's value is the default)
    given = getattr(params, "relaxivity_given", None)
    default = used == DEFAULT_R1 if given is None else not given
    entry = {**stated, "used": False,
             "compared_with": {"r1": used, "source": "the default r1" if default else "--relaxivity"}}
    if stated["r1"] is not None:
        entry["differs_by"] = round(stated["r1"] / used - 1, 4)
    if mode != "spgr":
        entry["note"] = ("no r1 was used: " + ("the input is concentration" if mode == "concentration" else
                                                "the maps are of relative enhancement (no T10)"))
        return entry
    if population_name is None:
        entry["note"] = ("a measured AIF is converted with the same r1 as the tissue, so the r1 cancels in Ktrans, vp "
                         "and ve: recorded, not used")
        return entry
    if not default:
        entry["note"] = f"--relaxivity {used:g} was used: an r1 given wins over the header's agent"
        return entry
    if stated["agent"] in HIGH_RELAXIVITY:
        entry["warned"] = True
        warnings.append(
            f"the DICOM header names {_where(stated)}, {HIGH_RELAXIVITY[stated['agent']]}; the concentrations were "
            f"converted with the default r1 {used:g} /s/mM, so with the {population_name} population AIF Ktrans, vp "
            "and ve read about 2-3 times too high: run again with --relaxivity set to the agent's r1 at this field")
        return entry
    if stated["r1"] is None:
        values = stated.get("r1_by_field") or {}
        errors = [r1 / used - 1 for r1 in values.values()]
        if stated["field_strength_t"] is None and errors and (min(errors) > WARN_ABOVE or max(errors) < -WARN_ABOVE):
            # (no field strength, but the agent is off the default at every field: said with each field's value)
            entry["warned"] = True
            warnings.append(
                f"the DICOM header names {_where(stated)} but no MagneticFieldStrength; its published r1 is "
                + ", ".join(f"{r1:g} at {f} T" for f, r1 in values.items()) + f" /s/mM ({stated['source']}), not "
                f"the default {used:g} the concentrations were converted with: with the {population_name} population "
                f"AIF, Ktrans, vp and ve read {100 * min(errors, key=abs):+.0f} to {100 * max(errors, key=abs):+.0f} "
                "% from that alone if the header is right; run again with --relaxivity set to the value at the "
                "series' field")
        return entry
    if abs(stated["r1"] / used - 1) <= WARN_ABOVE:
        return entry
    entry["warned"] = True
    warnings.append(
        f"the DICOM header names {_where(stated)}, whose published r1 is {stated['r1']:g} /s/mM ({stated['source']}), "
        f"not the default {used:g} the concentrations were converted with: with the {population_name} population "
        f"AIF, Ktrans, vp and ve read {100 * (stated['r1'] / used - 1):+.0f} % from that alone if the header is "
        f"right; run again with --relaxivity {stated['r1']:g} (or --relaxivity header; the header's agent is not "
        "applied by itself: check it against the protocol)")
    return entry


def add_to_report(report: dict, acquisition, params, mode: str, population_name: str | None,
                  warnings: list[str]) -> None:
    """``report["conversion"]["header_relaxivity"]`` where the header names an agent (nothing otherwise: an ordinary
    run's report is unchanged)."""
    entry = report_entry(acquisition, params, mode, population_name, warnings)
    if entry is not None:
        report["conversion"]["header_relaxivity"] = entry


def relaxivity_from_header(acquisition) -> float:
    """``--relaxivity header`` (the user's explicit choice): the published r1 [/s/mM] of the agent the series' header
    names at its field strength, or one InputError line saying why there is none (never a guess)."""
    from ..core.errors import InputError

    stated = header_relaxivity(acquisition)
    if stated is None:
        raise InputError("--relaxivity header: the series names no contrast agent (no DICOM ContrastBolusAgent or "
                         "ContrastBolusIngredient); give the agent's r1 as --relaxivity R1 (1/(s·mM))")
    if stated["r1"] is None:
        values = stated.get("r1_by_field")
        known = (f" ({stated['agent']}: " + ", ".join(f"{r1:g} at {f} T" for f, r1 in values.items()) + ")"
                 if values else "")
        raise InputError(f"--relaxivity header: {stated['why_not']}; give the agent's r1 as --relaxivity R1 "
                         f"(1/(s·mM)){known}")
    return stated["r1"]


def mark_applied(report: dict) -> None:
    """The report of a run whose r1 was the header's agent's (``--relaxivity header``): its ``header_relaxivity``
    used and saying so."""
    entry = report.get("conversion", {}).get("header_relaxivity")
    if entry is not None:
        entry["used"] = True
        entry["compared_with"]["source"] = "--relaxivity header"
        entry["note"] = "applied: --relaxivity header"

"""The contrast dose a DICOM series states, checked against the dose a population AIF assumes (session 23).

Why: every population AIF here is the curve of 0.1 mmol/kg (:mod:`.aif_dose`), and Ktrans, vp and ve read dose /
0.1 mmol/kg times the truth unless ``--dose`` says the dose. A DICOM series often states it: the agent, the volume
injected and the patient's weight (:mod:`BBBAnomalyLib.io.dicom_contrast` reads them into
``acquisition.extra["contrast_bolus"]``). :func:`stated_dose` turns them into mmol/kg only where that is well defined;
:func:`report_entry` compares it with the dose the run's population AIF assumed and warns, with the exact ``--dose``
to pass, where they differ by more than :data:`WARN_ABOVE`.

The dose is offered, never applied: the tags are typed at the console or copied from an exam card's defaults (a
protocol's fixed 15 ml, a weight the patient guessed), the series' header may describe the exam's total rather than
this bolus (a split dose: DCE preload before a DSC), and a run that rescaled the maps from them would change every
such user's maps between versions without being asked. The user decides; a given ``--dose`` always wins.

Arithmetic (DICOM PS3.3 C.7.6.4): amount [mmol] = ContrastBolusTotalDose [ml of undiluted agent] (else
ContrastBolusVolume, the MR agents being injected undiluted) x the named agent's concentration [mmol/ml]; and,
where ContrastBolusIngredientConcentration [mg/ml] is given, volume x that / the ingredient's molar mass [mg/mmol]
(gadolinium's 157.25 where the ingredient is GADOLINIUM, else the agent's). Both must agree (within
:data:`AGREE_WITHIN`); dose = amount / PatientWeight [kg]. An unknown agent, tags that contradict each other, a
missing weight or a dose outside the range ``--dose`` accepts give no dose and say why (nothing is guessed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..io.dicom_contrast import NUMERIC

#: gadolinium's molar mass [mg/mmol] (157.25 g/mol: 1 mmol of gadobutrol "containing 157.25 mg gadolinium", and
#: 0.5 mmol of gadopiclenol "78.6 mg of gadolinium", in their labels)
GADOLINIUM_MG_PER_MMOL = 157.25
#: two ways to the amount, or a concentration and its label value, agree when within this fraction (labels give
#: 3-5 significant digits; a console entry rounds, e.g. 604.72 to 605 mg/ml: 0.05 %)
AGREE_WITHIN = 0.05
#: THE RULE (set before any measurement, session 23): with a population AIF and no --dose, the header's dose is
#: warned about where it differs from the assumed dose by more than 20 %. The maps' error is proportional to the
#: difference (session 22), so this is a 20 % error in Ktrans, vp and ve from the dose alone; a weight-based standard
#: dose rounded to whole millilitres (14 ml of a 0.5 M agent for 70 kg given as 15 ml: +7 %) or to a 0.75-1 x vial
#: stays within it, so the warning is not raised for the ordinary rounding of a standard dose.
WARN_ABOVE = 0.20
#: weights [kg] taken as a patient's (a 0 or an absurd value is a placeholder typed at the console)
WEIGHT_RANGE_KG = (1.0, 350.0)


@dataclass(frozen=True)
class Agent:
    """A gadolinium agent as marketed: the substance, its concentration [mmol/ml = mol/l] and the label's mg of the
    substance per ml (which gives its molar mass), and what a header may call it (lower case)."""

    name: str
    mmol_per_ml: float
    mg_per_ml: float
    names: tuple[str, ...]

    @property
    def mg_per_mmol(self) -> float:
        return self.mg_per_ml / self.mmol_per_ml


#: The agents whose concentration is known here, from their labels (session 23's notes cite each): the extracellular
#: agents used for brain DCE and two others a header may name. A product sold at another strength under the same
#: name (Canada once sold a 0.5 M Gadovist beside the 1.0 M) is caught by the cross-check where the header gives
#: ContrastBolusIngredientConcentration; otherwise the named product's current strength is taken.
AGENTS = (
    Agent("gadobutrol", 1.0, 604.72, ("gadobutrol", "gadovist", "gadavist", "gd-do3a-butrol")),
    Agent("gadoterate meglumine", 0.5, 376.9, ("gadoterate", "gadoteric", "dotarem", "clariscan", "gd-dota")),
    Agent("gadopentetate dimeglumine", 0.5, 469.01, ("gadopentetate", "gadopentetic", "magnevist", "magnetolux",
                                                     "gd-dtpa")),
    Agent("gadobenate dimeglumine", 0.5, 529.0, ("gadobenate", "gadobenic", "multihance", "gd-bopta")),
    Agent("gadoteridol", 0.5, 279.3, ("gadoteridol", "prohance", "gd-hp-do3a")),
    Agent("gadodiamide", 0.5, 287.0, ("gadodiamide", "omniscan", "gd-dtpa-bma")),
    Agent("gadoxetate disodium", 0.25, 181.43, ("gadoxetate", "gadoxetic", "eovist", "primovist", "gd-eob-dtpa")),
    Agent("gadopiclenol", 0.5, 485.1, ("gadopiclenol", "elucirem", "vueway")),
)
#: what the report adds for agents whose concentration-time curve or relaxivity is not that of the standard agents
CAVEATS = {
    "gadopiclenol": "a high-relaxivity agent: give --relaxivity its r1 as well (the default 4.5 /s/mM is that of "
                    "the standard agents)",
    "gadoxetate disodium": "a hepatobiliary agent, partly taken up by the liver: its plasma curve is not the "
                           "extracellular agents' the population AIFs describe",
}
#: ContrastBolusIngredient's other defined terms: not a gadolinium agent
NOT_GADOLINIUM = ("IODINE", "BARIUM", "CARBON DIOXIDE")
#: the record's keys and the DICOM keywords they came from (said in the report's lines)
KEYWORDS = {"agent": "ContrastBolusAgent", "volume_ml": "ContrastBolusVolume",
            "total_dose_ml": "ContrastBolusTotalDose", "ingredient": "ContrastBolusIngredient",
            "ingredient_concentration_mg_per_ml": "ContrastBolusIngredientConcentration",
            "patient_weight_kg": "PatientWeight"}


def agents_named(text: str | None) -> list[Agent]:
    """The agents ``text`` names (a product or substance name anywhere in it, case-insensitive); a name inside a
    longer one that also matches counts once, as the longer (Gd-DTPA-BMA is gadodiamide, not gadopentetate)."""
    if not text:
        return []
    lowered = str(text).lower()
    hits = [(alias, agent) for agent in AGENTS for alias in agent.names if alias in lowered]
    kept = {agent.name: agent for alias, agent in hits
            if not any(alias != other and alias in other for other, _ in hits)}
    return list(kept.values())


def agents_in(record: dict) -> dict[str, Agent]:
    """{name: agent} of the agents a contrast record names in ContrastBolusAgent or ContrastBolusIngredient (one
    entry per agent, however many names it goes by; also read by :mod:`.stated_relaxivity`)."""
    return {agent.name: agent for agent in agents_named(record.get("agent")) + agents_named(record.get("ingredient"))}


def stated_dose(record: dict | None) -> dict | None:
    """The dose the header's contrast tags state: None where the series carries none (``record`` is
    ``acquisition.extra["contrast_bolus"]``); else ``{"dose_mmol_per_kg": float or None, "amount_mmol", "agent",
    "from" (how it was worked out), "why_not" (where no dose), "caveat" (where the agent has one), "tags"}``."""
    if not record:
        return None
    out = {"dose_mmol_per_kg": None, "amount_mmol": None, "agent": None, "tags": dict(record)}
    why_not = _amount(record, out)
    if why_not is None:
        why_not = _per_kg(record, out)
    if why_not is not None:
        out["dose_mmol_per_kg"] = None
        out["why_not"] = why_not
    return out


def _amount(record: dict, out: dict) -> str | None:
    """Fills out["amount_mmol"], out["agent"] and out["from"]; returns why there is no amount, or None."""
    if record.get("differs"):
        key, values = next(iter(record["differs"].items()))
        return f"the series' images differ in {KEYWORDS[key]} ({' / '.join(values)})"
    if record.get("unreadable"):
        key, text = next(iter(record["unreadable"].items()))
        return f"{KEYWORDS[key]} '{text}' is not a number"
    for key in NUMERIC:  # (a record from an edited sidecar may hold anything)
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            return f"{KEYWORDS[key]} {value!r} is not a number"
    ingredient = str(record.get("ingredient", "")).strip().upper()
    if ingredient in NOT_GADOLINIUM:
        return f"ContrastBolusIngredient is {ingredient}: not a gadolinium agent"
    gadolinium = ingredient in ("GADOLINIUM", "GD")
    named = agents_in(record)
    if len(named) > 1:
        return f"the tags name {len(named)} agents ({', '.join(sorted(named))})"
    agent = next(iter(named.values()), None)
    out["agent"] = agent.name if agent is not None else None
    if agent is not None and agent.name in CAVEATS:
        out["caveat"] = CAVEATS[agent.name]
    total, volume = record.get("total_dose_ml"), record.get("volume_ml")
    total = total if total and total > 0 else None
    volume = volume if volume and volume > 0 else None
    if total is not None and volume is not None and volume < total * (1 - AGREE_WITHIN):
        return (f"ContrastBolusVolume ({volume:g} ml, the diluted agent) is less than ContrastBolusTotalDose "
                f"({total:g} ml, undiluted)")
    millilitres = total if total is not None else volume
    if millilitres is None:
        return "the header gives no ContrastBolusTotalDose or ContrastBolusVolume (ml)"
    which = "ContrastBolusTotalDose" if total is not None else "ContrastBolusVolume"
    by_label = None
    if agent is not None:
        by_label = millilitres * agent.mmol_per_ml
        out["from"] = f"{millilitres:g} ml ({which}) x {agent.mmol_per_ml:g} mmol/ml ({agent.name})"
    concentration = record.get("ingredient_concentration_mg_per_ml")
    if concentration is not None and concentration > 0:
        mg_per_mmol = _ingredient_mass(concentration, agent, gadolinium)
        if mg_per_mmol is None:
            if agent is None:
                return (f"ContrastBolusIngredientConcentration is {concentration:g} mg/ml of an ingredient not named "
                        f"(ContrastBolusAgent {record.get('agent', 'absent')!r}): its molar mass is unknown")
            return (f"ContrastBolusIngredientConcentration ({concentration:g} mg/ml) is neither {agent.name}'s "
                    f"{agent.mg_per_ml:g} mg/ml nor its {agent.mmol_per_ml * GADOLINIUM_MG_PER_MMOL:.4g} mg "
                    "gadolinium/ml")
        diluted = volume if volume is not None else millilitres  # (mg per ml of the agent as injected)
        by_concentration = diluted * concentration / mg_per_mmol
        if by_label is not None and abs(by_concentration / by_label - 1) > AGREE_WITHIN:
            return (f"the amount from ContrastBolusIngredientConcentration ({by_concentration:.3g} mmol) and from "
                    f"{which} x {agent.name}'s concentration ({by_label:.3g} mmol) differ")
        if by_label is None:
            if concentration / mg_per_mmol > max(a.mmol_per_ml for a in AGENTS) * (1 + AGREE_WITHIN):
                return (f"ContrastBolusIngredientConcentration {concentration:g} mg gadolinium/ml is more than any "
                        "agent holds")
            out["from"] = (f"{diluted:g} ml x {concentration:g} mg/ml (ContrastBolusIngredientConcentration) / "
                           f"{mg_per_mmol:g} mg/mmol (gadolinium)")
            by_label = by_concentration
        else:
            out["checked"] = (f"ContrastBolusIngredientConcentration {concentration:g} mg/ml x {diluted:g} ml gives "
                              f"{by_concentration:.3g} mmol, the same")
    if by_label is None:
        if record.get("agent"):
            return f"the agent {record['agent']!r} is not one whose concentration is known here"
        return ("the header names no agent whose concentration is known (ContrastBolusAgent) nor "
                "ContrastBolusIngredientConcentration, so the ml cannot be turned into mmol")
    out["amount_mmol"] = round(by_label, 6)
    return None


def _ingredient_mass(concentration: float, agent: Agent | None, gadolinium: bool) -> float | None:
    """The molar mass [mg/mmol] ContrastBolusIngredientConcentration is of: gadolinium's where the ingredient is
    GADOLINIUM, else (a named agent) whichever of the agent's label value and its gadolinium content the
    concentration matches; None where neither (or nothing is named)."""
    if gadolinium:
        return GADOLINIUM_MG_PER_MMOL
    if agent is None:
        return None
    for mg_per_ml, mg_per_mmol in ((agent.mg_per_ml, agent.mg_per_mmol),
                                   (agent.mmol_per_ml * GADOLINIUM_MG_PER_MMOL, GADOLINIUM_MG_PER_MMOL)):
        if abs(concentration / mg_per_ml - 1) <= AGREE_WITHIN:
            return mg_per_mmol
    return None


def _per_kg(record: dict, out: dict) -> str | None:
    """Fills out["dose_mmol_per_kg"] from the amount and PatientWeight; returns why there is none, or None."""
    from .aif_dose import DOSE_RANGE

    weight = record.get("patient_weight_kg")
    if not weight:
        return f"the header gives no PatientWeight: {out['amount_mmol']:.3g} mmol was given, per kg unknown"
    if not WEIGHT_RANGE_KG[0] <= weight <= WEIGHT_RANGE_KG[1]:
        return f"PatientWeight {weight:g} kg is not a patient's weight in kg"
    dose = out["amount_mmol"] / weight
    out["from"] += f" / {weight:g} kg (PatientWeight)"
    if not DOSE_RANGE[0] <= dose <= DOSE_RANGE[1]:
        return (f"{out['from']} = {dose:.3g} mmol/kg, outside the {DOSE_RANGE[0]:g}-{DOSE_RANGE[1]:g} mmol/kg a DCE "
                "dose lies in: a tag is likely wrong")
    out["dose_mmol_per_kg"] = round(dose, 6)
    return None


def report_entry(acquisition, params, population_name: str | None, warnings: list[str]) -> dict | None:
    """``report["aif"]["header_dose"]``: the dose the series' header states (:func:`stated_dose`), whether it was
    used (never by itself: ``used`` is False) and what it was compared with; None where the header states nothing.
    With a population AIF (``population_name``) and no ``params.dose``, a warning with the exact ``--dose`` to pass
    where the stated dose differs from the assumed one by more than :data:`WARN_ABOVE`. A given dose wins (it is
    compared, not warned about); a measured AIF carries the dose itself (recorded only)."""
    from ..io.dicom_contrast import EXTRA_KEY
    from .aif_dose import model_dose

    stated = stated_dose((getattr(acquisition, "extra", None) or {}).get(EXTRA_KEY))
    if stated is None:
        return None
    entry = {**stated, "used": False}
    dose = stated["dose_mmol_per_kg"]
    if population_name is None:
        entry["note"] = "a measured AIF carries the dose itself: the header's dose is recorded, not used"
        return entry
    given = params.dose is not None
    compared = float(params.dose) if given else model_dose(population_name)
    entry["compared_with"] = {"dose_mmol_per_kg": compared, "source": "--dose" if given else
                              f"the {population_name} population AIF's own dose"}
    if dose is None:
        return entry
    entry["differs_by"] = round(dose / compared - 1, 4)
    if given:
        entry["note"] = f"--dose {compared:g} was used: a dose given wins over the header's"
    elif abs(dose / compared - 1) > WARN_ABOVE:
        entry["warned"] = True
        warnings.append(
            f"the DICOM header states {dose:.3g} mmol/kg of contrast ({stated['from']}), not the {compared:g} mmol/kg "
            f"the {population_name} population AIF assumes: if the header is right, Ktrans, vp and ve read "
            f"{100 * (dose / compared - 1):+.0f} % from that alone; run again with --dose {dose:.3g} (the header's "
            "dose is not applied by itself: check it against the protocol)"
            + (f"; {stated['agent']} is {stated['caveat']}" if stated.get("caveat") else ""))
    return entry


def dose_from_header(acquisition) -> float:
    """``--dose header`` (the user's explicit choice): the dose [mmol/kg] the series' header states, or one InputError
    line saying why the header defines none (never a guess)."""
    from ..core.errors import InputError
    from ..io.dicom_contrast import EXTRA_KEY

    stated = stated_dose((getattr(acquisition, "extra", None) or {}).get(EXTRA_KEY))
    if stated is None:
        raise InputError("--dose header: the series states no contrast dose (it carries none of the DICOM "
                         "Contrast/Bolus tags or PatientWeight); give the dose as --dose MMOL_PER_KG")
    if stated["dose_mmol_per_kg"] is None:
        raise InputError(f"--dose header: the series' contrast tags define no dose ({stated['why_not']}); give the "
                         "dose as --dose MMOL_PER_KG")
    return stated["dose_mmol_per_kg"]


def mark_applied(report: dict) -> None:
    """The report of a run whose --dose was the header's (``--dose header``): its ``header_dose`` used, and the AIF's
    dose record saying where the dose came from."""
    entry = report["aif"].get("header_dose")
    if entry is not None:
        entry["used"] = True
        entry["note"] = "applied: --dose header"
    if report["aif"].get("dose") is not None:
        report["aif"]["dose"]["source"] = "--dose header (the dose the DICOM header states)"

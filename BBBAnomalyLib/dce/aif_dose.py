"""The contrast dose behind a population AIF (session 22): ``--dose`` [mmol/kg] scales the curve.

Why: a population AIF (Parker, Georgiou, ...) is the arterial curve of one protocol's dose (0.1 mmol/kg for every
model here: :data:`~BBBAnomalyLib.perfusion.population_aif.MODEL_DOSE_MMOL_PER_KG`). Clinics often give another: a
split dose (half for the DCE, the rest as the preload of the DSC that follows, or the reverse), a weight-capped dose,
or 0.05 mmol/kg of a high-relaxivity agent. The tissue curves scale with the dose and the population AIF did not,
so Ktrans, vp and ve (not kep) read dose / model dose times the truth (on the DCE object at half dose -46 to -54 %,
at 1.5 x +45 to +58 %; scripts/dce_dose.py).

The scaling is linear (dose / model dose): the AIF is the plasma concentration per unit dose of a linear
pharmacokinetic system (an extracellular gadolinium chelate is not bound or metabolised, distributes passively and is
cleared by glomerular filtration, all first-order: nothing saturates at clinical doses), so the whole curve, first
pass and washout, scales by the same factor and its shape is the model's. (The injection's volume and rate at a fixed dose change the
first pass's shape, which no population curve knows; a measured AIF carries all of that itself.)

Since session 23 a DICOM series' contrast tags (agent, ml, weight: :mod:`BBBAnomalyLib.io.dicom_contrast`) are turned
into a stated dose where that is well defined (:mod:`.stated_dose`) and, where it differs from the dose assumed here by
more than 20 %, offered in a warning with the --dose to pass; never applied by itself. BIDS has no standard dose key."""

from __future__ import annotations

#: The doses --dose accepts [mmol/kg]: from 0.01 (below the lowest clinical DCE doses, about 0.025 of a
#: high-relaxivity agent) up to 0.3 (a triple dose, as in some metastasis protocols). Above it the value is more
#: likely ml or ml/kg than mmol/kg (the refusal says how to convert).
DOSE_RANGE = (0.01, 0.3)


def check_dose(value) -> float | None:
    """``value`` [mmol/kg] as a float within :data:`DOSE_RANGE`, or None (the model's own dose); else one
    InputError line that says the unit and, where the value looks like ml or ml/kg, how to convert it."""
    if value is None:
        return None
    from ..core.checks import number

    hint = "the contrast dose in mmol/kg, e.g. 0.1 (a standard dose) or 0.05 (half)"
    try:
        as_number = float(value)
    except (TypeError, ValueError, OverflowError):
        as_number = None
    if as_number is not None and DOSE_RANGE[1] < as_number <= 100.0:
        hint = (f"{as_number:g} looks like a volume in ml (or ml/kg): --dose is in mmol/kg; convert with the agent's "
                "concentration, e.g. 15 ml of a 0.5 M agent in 75 kg is 15 x 0.5 / 75 = 0.1 mmol/kg")
    return number(value, "--dose", *DOSE_RANGE, hint=hint)


def model_dose(name: str) -> float:
    """The dose [mmol/kg] the named population curve was measured at."""
    from ..perfusion.population_aif import MODEL_DOSE_MMOL_PER_KG

    return MODEL_DOSE_MMOL_PER_KG[name]


def dose_scale(name: str, dose: float | None) -> float:
    """The factor the named population curve is multiplied by: dose / model dose (exactly 1.0 without a dose)."""
    return 1.0 if dose is None else float(dose) / model_dose(name)


def dose_record(name: str, dose: float | None) -> dict:
    """``report["aif"]["dose"]`` for a population AIF: the model's dose, the dose used, whether the user gave it,
    the scale applied; without a given dose a note that says which dose was assumed (not a warning: at the model's
    own dose nothing is wrong, and the run cannot know the protocol)."""
    used = model_dose(name) if dose is None else float(dose)
    record = {"model": name, "model_dose_mmol_per_kg": model_dose(name), "dose_mmol_per_kg": used,
              "given": dose is not None, "scale": dose_scale(name, dose)}
    if dose is None:
        record["note"] = (f"the {name} population AIF assumes {model_dose(name):g} mmol/kg (its source's dose); "
                          "Ktrans, vp and ve scale with 1 / the AIF's dose, so give --dose for a split-dose, "
                          "weight-capped or half-dose protocol")
    return record


def report_entries(params, exact_aif, placement, warnings: list[str], acquisition=None) -> dict:
    """What the run's ``report["aif"]`` gains: for a population AIF where it was put (``population_placement``) and
    its dose (:func:`dose_record`); for a measured AIF, which carries the dose itself, a warning where a dose was
    given anyway (it was not used). Where the series' header states the dose given (``acquisition.extra``, a DICOM
    series), ``header_dose`` (session 23, :func:`.stated_dose.report_entry`: offered in a warning, never applied)."""
    from .stated_dose import report_entry

    entries = {}
    if placement is not None:
        entries = {"population_placement": placement.record(params.max_delay),
                   "dose": dose_record(exact_aif.name, params.dose)}
    elif params.dose is not None:
        warnings.append(f"--dose {params.dose:g} mmol/kg was not used: it scales a population AIF, and this run's AIF "
                        "was measured (it carries the dose itself); leave out --dose")
    header = report_entry(acquisition, params, exact_aif.name if placement is not None else None, warnings)
    if header is not None:
        entries["header_dose"] = header
    return entries

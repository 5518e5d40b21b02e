"""The measured AIF's blood T2* at the echo time, and how close its signal comes to the SPGR ceiling.

A DCE series is an SPGR at a short but finite echo time (1-4 ms). In a large artery at the bolus peak (whole blood
3-12 mM after 0.1 mmol/kg) the blood's own transverse relaxation rises about quadratically with the concentration
(ΔR2* = a·Cb + b·Cb², :data:`BLOOD_R2STAR`), so the signal S = M0·sinα(1-E1)/(1-cosα·E1)·exp(-TE·ΔR2*(Cb)) is lower
than the T1-only conversion expects: the AIF's peak and area read low, with no word. Measured on the DCE reference
object (``scripts/dce_aif_t2star.py``; docs/reliability.md, session 22; the drawn arterial mask, extended Tofts):
vp reads high (GM +4 to +87 %) and Ktrans reads LOW, not high (the rim +0.5 to -68 %: the fit puts the lost peak into
vp, whose tail then explains part of the tissue's late rise; ve becomes undetermined); see :data:`WARNING_SIZES`.
The T1 signal's ceiling itself (M0·sinα, E1 -> 0; :attr:`AIFT2Star.gain`, the conversion's noise gain there, 5-10x)
cost nothing measurable on the object's 16-voxel mask at SNR 20-40 without T2* (AIF area within 1 %).

What is done with it: where the echo time is known (``--te``, or the series' metadata: BIDS EchoTime, DICOM), the
measured blood curve (plasma AIF x (1 - Hct)) is mapped through the T1+T2* signal model once per frame
(:func:`t2star_corrected_blood`): it says how much of the AIF's area the blood's T2* hid (``report["aif"]["t2star"]``,
always written for a measured AIF from signal), warns above :data:`WARN_AREA_LOSS`, and with ``--aif-t2star-correct``
replaces the AIF by the corrected curve. The T1+T2* signal rises with the concentration only up to a turning point
(:func:`turning_concentration`): beyond it a lower signal means more contrast, and the signal cannot tell which
branch a frame lies on; the correction reads every frame on the rising branch, and the run says so where the measured
peak lies at the turning point (:data:`AT_TURN_FRACTION`). Where the echo time is not known, the AIF's peak over its
late level (:func:`peak_over_late`) is the one sign left, warned below :data:`PEAK_OVER_LATE_MIN` (asking for --te).
The correction is opt-in: with the blood's true ΔR2* half the assumed it over-corrected (area +5.7 % where the
uncorrected read -3.2 %), the rule set for making it the default.

The coefficients are whole blood's (not the plasma's, and not the tissue's: the extravascular T2* of the tissue is
not modelled here). 1.5 T: ΔR2* = 7.6·Cb + 0.574·Cb² [1/s, mM] (Kjølby et al., MRM 2006;56:187, simulated whole
blood at Hct 0.4; the form van Osch et al., MRM 2003;49:1067, measured), 3 T: twice that (the static-dephasing
regime scales with the field; Blockley et al., MRM 2008;60:1313, measured whole blood's R2* to grow with the field).
An ISMRM 2011 phantom study (#3461, Kim et al.) found R2* dominant over R1 in the signal above about 7.5 mM. These are
literature values as commonly quoted, not measured here and not checked against the papers (they could not be
reached from this project's machine); the 3 T doubling is an assumption. The correction's error with a coefficient
wrong by ±30-50 % is in docs/reliability.md; that sensitivity is why the correction is opt-in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import trapezoid

from .conversion import _spgr_inverse_float64

#: Whole blood's ΔR2* = a·Cb + b·Cb² [1/s] for Cb in mM: (a [1/(s·mM)], b [1/(s·mM²)]) by field strength [T].
BLOOD_R2STAR = {1.5: (7.6, 0.574), 3.0: (15.2, 1.148)}
#: Fields up to this [T] take the 1.5 T coefficients, above it the 3 T ones.
FIELD_SPLIT_T = 2.0
#: Echo times [s] accepted (--te): an SPGR DCE's is 1-5 ms; 0.1 s is no T1-weighted series.
TE_RANGE_S = (0.0, 0.02)
#: The highest blood concentration [mM] the correction's table reaches.
_C_MAX = 80.0
_C_STEP = 0.002


def blood_r2star_coefficients(field_strength: float | None) -> tuple[float, float]:
    """(a, b) of :data:`BLOOD_R2STAR` for a field strength [T]; None takes 3 T (the DCE object's T10s are 3 T's)."""
    if field_strength is not None and field_strength <= FIELD_SPLIT_T:
        return BLOOD_R2STAR[1.5]
    return BLOOD_R2STAR[3.0]


def blood_delta_r2star(blood: np.ndarray, coefficients: tuple[float, float]) -> np.ndarray:
    """ΔR2* [1/s] of whole blood at concentration ``blood`` [mM]: a·C + b·C·|C| (odd, so a noisy baseline's negative
    samples stay near zero rather than being bent upwards)."""
    a, b = coefficients
    c = np.asarray(blood, dtype=np.float64)
    return a * c + b * c * np.abs(c)


def _t1_ratio(blood, t10: float, flip_angle: float, tr: float, relaxivity: float) -> np.ndarray:
    """S/S0 of the T1-only SPGR model (float64; conversion._spgr_forward rounds to float32)."""
    a = np.deg2rad(flip_angle)

    def spgr(r1):
        e = np.exp(-tr * r1)
        return (1.0 - e) / (1.0 - np.cos(a) * e)

    return spgr(1.0 / t10 + relaxivity * np.asarray(blood, dtype=np.float64)) / spgr(1.0 / t10)


@dataclass(frozen=True)
class BloodSignalModel:
    """The T1+T2* signal of blood (T10 [s], flip [deg], TR [s], r1 [1/(s·mM)], TE [s], ΔR2* coefficients) as the
    apparent concentration a T1-only conversion reads, tabulated on a fine grid up to its turning point."""

    t10: float
    flip_angle: float
    tr: float
    relaxivity: float
    te: float
    coefficients: tuple[float, float]

    def apparent(self, blood: np.ndarray) -> np.ndarray:
        """The concentration [mM] the T1-only SPGR conversion reads from blood at ``blood`` [mM]."""
        c = np.asarray(blood, dtype=np.float64)
        ratio = _t1_ratio(c, self.t10, self.flip_angle, self.tr, self.relaxivity) * np.exp(
            -self.te * blood_delta_r2star(c, self.coefficients))
        conc, _ = _spgr_inverse_float64(ratio - 1.0, np.float64(self.t10), self.flip_angle, self.tr, self.relaxivity)
        return conc

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(true, apparent) concentrations [mM] from 0 to the turning point (the apparent one rising)."""
        true = np.arange(0.0, _C_MAX + _C_STEP, _C_STEP)
        apparent = self.apparent(true)
        turn = int(np.argmax(apparent))
        return true[:turn + 1], apparent[:turn + 1]


def turning_concentration(model: BloodSignalModel) -> float:
    """The blood concentration [mM] above which more contrast lowers the signal (T2* outruns T1)."""
    return float(model.table()[0][-1])


def t2star_corrected_blood(apparent: np.ndarray, model: BloodSignalModel) -> tuple[np.ndarray, float]:
    """(corrected blood concentration, the apparent peak over the highest apparent concentration the signal can
    give: 1 at the turning point) for a blood curve converted T1-only (``apparent`` [mM]). Each sample is read on
    the rising branch: a sample from beyond the turning point reads the same as one below it, so a peak at the turn
    may hide more. Samples at or below zero are kept as they are (no contrast, no T2*); samples above the highest
    apparent value (noise) are read at the turning point."""
    true, table = model.table()
    c = np.asarray(apparent, dtype=np.float64)
    out = np.where(c > 0, np.interp(c, table, true), c)
    return out, float(c.max() / table[-1]) if c.size and table[-1] > 0 else 0.0


#: Warned where the T2*-corrected AIF's area exceeds the measured one's by this fraction (rule in the notes).
WARN_AREA_LOSS = 0.05
#: The measured peak at or above this fraction of the highest apparent concentration the signal can give counts as
#: at the turning point (set on the tuning set: scripts/dce_aif_t2star.py).
AT_TURN_FRACTION = 0.9
#: Without TE, a measured AIF whose peak over its late level (:func:`peak_over_late`) is below this is warned (rule
#: R3 in the session-22 notes; set on scripts/dce_aif_t2star.py --shape, between the T2*-cut AIFs whose area read
#: 10 % or more low and those within 3 %).
#: The tuning set (144 runs): whole AIFs 7.2-8.9, T2*-cut AIFs whose area read 10 % or more low 5.0 or less (49 runs),
#: within 3 % 6.5 or more (10 runs): 5.7 lies in the middle of the gap.
PEAK_OVER_LATE_MIN = 5.7
SHAPE_SIZES = ("7.2-8.9 (Parker and Georgiou shapes, 2-6 s frames) and one whose area the blood's T2* cut by 10 % or "
               "more 5.0 or less")
#: What the warning quotes: the warned runs of the tuning and held-apart sets (94 runs; scripts/dce_aif_t2star.py).
WARNING_SIZES = ("on the DCE reference object with such an AIF: its area 4-47 % low, its peak 20-91 % low, grey "
                 "matter's vp +15 to +87 %, the tumour rim's Ktrans -2 to -68 %, ve often undetermined")


@dataclass
class AIFT2Star:
    """What the blood's T2* did to a measured AIF (plasma, mM) and how close its signal came to the SPGR ceiling."""

    te: float | None
    te_source: str
    field_strength: float | None
    coefficients: tuple[float, float] | None
    blood_t10: float | None
    peak_measured: float
    peak_corrected: float | None = None
    area_ratio: float | None = None  # corrected / measured
    peak_signal_loss: float | None = None  # 1 - exp(-TE·ΔR2*) at the corrected peak
    peak_of_turn: float | None = None  # the measured (apparent) peak over the highest the signal can give
    turning_blood_mm: float | None = None
    ceiling_fraction: float | None = None  # the peak's SER over the SER at E1 = 0
    gain: float | None = None  # dC/dSER at the peak over dC/dSER at the baseline
    corrected: bool = False
    peak_over_late: float | None = None  # the AIF's peak over its late level (see LATE_WINDOW_S)

    @property
    def area_loss(self) -> float | None:
        return None if self.area_ratio is None else 1.0 - 1.0 / self.area_ratio

    @property
    def at_turn(self) -> bool:
        return self.peak_of_turn is not None and self.peak_of_turn >= AT_TURN_FRACTION

    @property
    def shape_suspect(self) -> bool:
        """No TE, and a peak too low against the late level (PEAK_OVER_LATE_MIN)."""
        return self.te is None and self.peak_over_late is not None and self.peak_over_late < PEAK_OVER_LATE_MIN

    @property
    def warned(self) -> bool:
        return self.area_ratio is not None and (self.area_ratio - 1.0 >= WARN_AREA_LOSS or self.at_turn)

    def to_json(self) -> dict:
        r = lambda v, n=4: None if v is None else round(float(v), n)  # noqa: E731
        return {"echo_time_s": r(self.te, 6), "echo_time_source": self.te_source,
                "field_strength_t": self.field_strength,
                "blood_r2star_coefficients": list(self.coefficients) if self.coefficients else None,
                "blood_t10_s": r(self.blood_t10), "peak_measured_mM": r(self.peak_measured),
                "peak_t2star_corrected_mM": r(self.peak_corrected),
                "area_corrected_over_measured": r(self.area_ratio),
                "peak_signal_loss": r(self.peak_signal_loss),
                "peak_of_turning_point_signal": r(self.peak_of_turn), "at_turning_point": self.at_turn,
                "turning_point_blood_mM": r(self.turning_blood_mm, 2),
                "peak_signal_of_spgr_ceiling": r(self.ceiling_fraction),
                "noise_gain_at_peak": r(self.gain, 2), "peak_over_late_level": r(self.peak_over_late, 2),
                "corrected": self.corrected,
                "rule": f"warned where the corrected area exceeds the measured one by {100 * WARN_AREA_LOSS:g} % or "
                        f"the peak reaches {AT_TURN_FRACTION:g} of the turning point's; without TE where the peak is "
                        f"under {PEAK_OVER_LATE_MIN:g} times the level 90-150 s later"}

    def caveats(self) -> dict[str, str]:
        """{map: caveat} for the report's ktrans/vp entries where warned."""
        if self.shape_suspect:
            note = (f"the AIF's peak is only {self.peak_over_late:.1f} times its late level: perhaps cut by the "
                    "blood's T2* (echo time unknown; report aif.t2star) or blurred by view sharing")
            return {"ktrans": f"may read low: {note}", "vp": f"may read high: {note}"}
        if not self.warned or (self.corrected and not self.at_turn):
            return {}
        note = (f"the blood's T2* at TE {1000 * self.te:.3g} ms cut the AIF's peak (measured {self.peak_measured:.3g} "
                f"mM, about {self.peak_corrected:.3g} or more; report aif.t2star)")
        return {"ktrans": f"reads low: {note}", "vp": f"reads high: {note}"}

    def warning(self) -> str | None:
        if self.shape_suspect:
            return (f"the measured AIF's peak is only {self.peak_over_late:.1f} times its level 90-150 s later: on the "
                    f"DCE reference object a whole AIF's is {SHAPE_SIZES}; the echo time is not known ({self.te_source}), "
                    "so this cannot be checked: give --te (the series' EchoTime, e.g. 0.002) to have it estimated "
                    "(report aif.t2star). A slow or dispersed bolus (slow injection, low cardiac output) lowers the "
                    f"ratio too, and so does {VIEW_SHARING_CAUSE}")
        if not self.warned:
            return None
        beyond = (f"; its peak lies at the turning point of the signal ({100 * self.peak_of_turn:.0f} % of the "
                  f"highest concentration it can show; blood {self.turning_blood_mm:.1f} mM), beyond which more "
                  "contrast gives less signal: the true peak may be far higher, and even the corrected AIF reads "
                  "low" if self.at_turn else "")
        done = ("the AIF was corrected (--aif-t2star-correct)" if self.corrected else
                "give --aif-t2star-correct to convert the AIF with its T2*")
        return (f"the measured AIF reads low from the blood's T2* at TE {1000 * self.te:.3g} ms: converted with the "
                f"blood's ΔR2* ({self.te_source}; {self.field_strength_text()}), its peak would be "
                f"{self.peak_corrected:.3g} mM instead of {self.peak_measured:.3g} and its area "
                f"{100 * (self.area_ratio - 1):.0f} % larger (peak signal {100 * self.peak_signal_loss:.0f} % lower "
                f"than T1 alone gives){beyond}. vp then reads high and Ktrans low ({WARNING_SIZES}); {done}, or draw the "
                "AIF on a smaller artery or an artery's edge, or acquire with a shorter TE or a lower dose")

    def field_strength_text(self) -> str:
        a, b = self.coefficients
        field = f"{self.field_strength:g} T" if self.field_strength is not None else "field strength unknown: 3 T taken"
        return f"{field}, ΔR2* = {a:g}·C + {b:g}·C² per s"


#: The shape warning's other cause (session 24, docs/reliability.md "View-shared DCE"): a view-shared series blends
#: a small artery over several frames, which flattens its peak as T2* does; there --te does not help. On the DCE
#: reference object re-acquired with TWIST/DISCO the drawn AIF's peak read 2-81 % low, and with keyhole 86-91 %.
VIEW_SHARING_CAUSE = ("a view-shared acquisition (Siemens TWIST, GE DISCO, Philips 4D-TRAK or keyhole: look for it in "
                      "the series' description), which blends a small artery over several frames: then --te does not "
                      "help; prefer --population-aif parker")


#: The AIF's late level is its mean over this window after its peak [s] (the slow washout, which T2* hardly
#: touches; a fixed window, so that the series' length does not move it).
LATE_WINDOW_S = (90.0, 150.0)


def peak_over_late(aif: np.ndarray, times: np.ndarray) -> float | None:
    """The AIF's peak over its late level (LATE_WINDOW_S; None where the series ends sooner)."""
    t = np.asarray(times, dtype=np.float64)
    k = int(np.argmax(aif))
    if t[-1] < t[k] + LATE_WINDOW_S[1]:
        return None
    late = (t >= t[k] + LATE_WINDOW_S[0]) & (t <= t[k] + LATE_WINDOW_S[1])
    level = float(np.mean(aif[late])) if late.any() else 0.0
    return float(aif[k] / level) if level > 0 else None


def echo_time(params, acquisition) -> tuple[float | None, str]:
    """(TE [s] or None, where it came from): ``params.te`` (--te) before the series' metadata."""
    te = getattr(params, "te", None)
    if te is not None:
        return float(te), "--te"
    te = getattr(acquisition, "echo_time", None) if acquisition is not None else None
    if te is not None and TE_RANGE_S[0] < float(te) <= TE_RANGE_S[1]:
        return float(te), "the series' metadata"
    return None, ("not given (--te) nor in the series' metadata" if te is None else
                  f"the series' metadata gives {float(te):g} s, outside {TE_RANGE_S[1]:g} s: not an SPGR DCE echo time")


def check_te(te) -> float | None:
    """--te in seconds, refused in one line outside TE_RANGE_S (e.g. given in ms)."""
    from ..core.checks import optional_number

    return optional_number(te, "--te", TE_RANGE_S[0], TE_RANGE_S[1], low_open=True,
                           hint="an SPGR DCE echo time in seconds, e.g. 0.002 for 2 ms (a value above "
                                f"{TE_RANGE_S[1]:g} is probably in ms or not a T1-weighted series)")


def aif_t2star(aif: np.ndarray, times: np.ndarray, n_baseline: int, te: float | None, te_source: str,
               field_strength: float | None, blood_t10: float | None, flip_angle: float, tr: float,
               relaxivity: float, hematocrit: float, correct: bool = False) -> tuple[np.ndarray, AIFT2Star]:
    """(the AIF to fit, the record) for a measured plasma AIF [mM] converted T1-only with ``blood_t10`` [s]
    (None: no T10 known, nothing to say). With ``correct`` the returned AIF is the T2*-corrected one."""
    aif = np.asarray(aif, dtype=np.float64)
    record = AIFT2Star(te, te_source, field_strength, None, blood_t10, float(aif.max()))
    record.peak_over_late = peak_over_late(aif, times)
    if blood_t10 is None or not blood_t10 > 0:
        return aif, record
    blood = aif * (1.0 - hematocrit)
    peak = int(np.argmax(blood))
    # the SPGR ceiling: the peak's SER against the SER at E1 = 0, and the conversion's slope there against at rest
    ser_peak = float(_t1_ratio(blood[peak], blood_t10, flip_angle, tr, relaxivity)) - 1.0
    a = np.deg2rad(flip_angle)
    e10 = np.exp(-tr / blood_t10)
    ceiling = (1.0 - np.cos(a) * e10) / (1.0 - e10) - 1.0
    record.ceiling_fraction = ser_peak / ceiling
    step = 1e-4 * ceiling
    inverse = lambda s: _spgr_inverse_float64(np.asarray(s, np.float64), np.float64(blood_t10), flip_angle, tr,  # noqa
                                               relaxivity)[0]
    if ser_peak + step < ceiling:
        record.gain = float((inverse(ser_peak + step) - inverse(ser_peak - step)) / (inverse(step) - inverse(-step)))
    if te is None:
        return aif, record
    coefficients = blood_r2star_coefficients(field_strength)
    model = BloodSignalModel(float(blood_t10), flip_angle, tr, relaxivity, te, coefficients)
    corrected, peak_of_turn = t2star_corrected_blood(blood, model)
    post = slice(max(int(n_baseline), 0), None)
    t = np.asarray(times, dtype=np.float64)[post]
    measured_area = float(trapezoid(blood[post], t))
    corrected_area = float(trapezoid(corrected[post], t))
    record.coefficients = coefficients
    record.peak_corrected = float(corrected.max() / (1.0 - hematocrit))
    record.area_ratio = corrected_area / measured_area if measured_area > 0 else None
    record.peak_signal_loss = float(1.0 - np.exp(-te * blood_delta_r2star(corrected.max(), coefficients)))
    record.peak_of_turn = peak_of_turn
    record.turning_blood_mm = turning_concentration(model)
    if correct:
        record.corrected = True
        return corrected / (1.0 - hematocrit), record
    return aif, record


def check_measured_aif(aif: np.ndarray, acquisition, params, mode: str, t10, in_aif, blood_t10, flip_angle,
                       tr, times: np.ndarray, n_baseline: int, warnings: list[str]):
    """(the AIF to fit, :class:`AIFT2Star` or None) for ``run_dce``'s measured AIF: only SPGR concentration has a
    T10 and a signal model to check (relative enhancement and concentration input are not converted here)."""
    if mode != "spgr":
        return aif, None
    from .aif import aif_t10_record

    t10_value = aif_t10_record(params, mode, t10, in_aif, blood_t10)["value"]
    te, source = echo_time(params, acquisition)
    aif, record = aif_t2star(aif, times, n_baseline, te, source, getattr(acquisition, "field_strength", None),
                             t10_value, flip_angle, tr, params.relaxivity, params.hematocrit,
                             correct=bool(getattr(params, "aif_t2star_correct", False)) and te is not None)
    said = record.warning()
    if said:
        warnings.append(said)
    return aif, record


def add_to_report(report: dict, record: AIFT2Star | None, population: bool) -> None:
    """report["aif"]["t2star"] (always: why nothing was checked where nothing was) and the ktrans/vp caveats."""
    if record is None:
        why = "a population AIF (already in mM)" if population else "no SPGR conversion (relative or concentration)"
        report["aif"]["t2star"] = {"checked": False, "why": why}
        return
    report["aif"]["t2star"] = {"checked": True, **record.to_json()}
    for name, caveat in record.caveats().items():
        if name in report.get("maps", {}):
            earlier = report["maps"][name].get("caveat")
            report["maps"][name]["caveat"] = caveat + (f"; {earlier}" if earlier else "")

"""What the pulse sequence of a DSC series means for its maps: spin-echo DSC, and an echo time implausible for the
sequence stated.

Why: the pipeline's quantification is that of gradient-echo (GE-EPI) DSC, the 2020 consensus protocol (Boxerman et al.,
Neuro-Oncology 2020;22:1262: GE-EPI, TE 40-50 ms at 1.5 T and 20-35 ms at 3 T). A spin-echo (SE-EPI) series weights
capillary-sized vessels: a large artery's ΔR2 per mM is far below the tissue's (Boxerman et al., MRM 1995;34:555;
large vessels "markedly reduced", Speck et al., JMRI 2000;12:381), so the AIF drawn on an artery has the wrong
amplitude and the absolute CBV and CBF (ml/100 g, kH 0.73 and ρ 1.04 of gradient echo) are not comparable with a
gradient-echo run or with normal values. Relative maps against NAWM stay the clinical reading, but tumour rCBV runs
lower on spin echo (high-grade glioma maximum rCBV 2.9 ± 2.3 SE-EPI vs 5.0 ± 2.9 GE-EPI in the same patients,
Sugahara et al., AJNR 2001;22:1306), so thresholds set on GE-DSC do not carry over. The maps are not changed (no
spin-echo correction can be measured on the gradient-echo reference object); the report says what is not comparable,
records the sequence, and the maps read as absolute values carry a caveat beside their ROI means and ratios.
"""

from __future__ import annotations

from ..io.sequence_type import BOTH, EXTRA_KEY, GRADIENT, SPIN
from ..perfusion.series_kind import check_series_metadata

#: Gradient-echo DSC with a longer TE than this at 3 T or below is unusual (consensus: up to 50 ms at 1.5 T).
LONG_GRADIENT_TE = 0.060

SPIN_ECHO_WARNING = (
    "spin-echo DSC ({said}): this pipeline quantifies gradient-echo DSC. Spin echo weights capillary-sized vessels and a "
    "large artery's ΔR2 per mM is far below the tissue's, so the AIF's amplitude is off and the absolute CBV and CBF "
    "(and corrected CBV) are not comparable with gradient-echo DSC or with normal values; read rCBV and rCBF against "
    "NAWM instead, knowing that spin-echo tumour rCBV runs lower than gradient-echo (high-grade glioma maximum rCBV "
    "2.9 vs 5.0 in the same patients, Sugahara 2001): rCBV thresholds set on gradient-echo DSC (e.g. 1.75) do not "
    "carry over")

ABSOLUTE_CAVEAT = ("spin-echo DSC: absolute value not comparable with gradient-echo DSC or normal values (the AIF's "
                   "amplitude is off on spin echo); read the ratio to NAWM")
RELATIVE_CAVEAT = ("spin-echo DSC: tumour ratios run lower than on gradient-echo DSC; gradient-echo thresholds do "
                   "not carry over")


def _said(record: dict) -> str:
    """Which fields said so, as the file gives them (e.g. "ScanningSequence EP\\SE, SequenceName *epse2d1_128")."""
    names = {"scanning_sequence": "ScanningSequence", "sequence_name": "SequenceName",
             "pulse_sequence_name": "PulseSequenceName", "echo_pulse_sequence": "EchoPulseSequence",
             "ge_internal_sequence_name": "GE internal sequence name", "pulse_sequence_type": "PulseSequenceType",
             "pulse_sequence_details": "PulseSequenceDetails"}
    parts = [f"{label} {record[key]}" for key, label in names.items() if record.get(key)]
    return ", ".join(parts) or "as the file says"


def sequence_step(acquisition, te: float | None, warnings: list[str]) -> dict | None:
    """The report's record of the series' pulse sequence (None where the file says nothing about it), with the
    warnings a spin-echo series or a TE implausible for the sequence stated call for, appended to ``warnings``. A
    series whose metadata say it is no contrast-bolus series (b-values, ASL) is refused first
    (:func:`..perfusion.series_kind.check_series_metadata`)."""
    check_series_metadata(acquisition, "the DSC series")
    record = (getattr(acquisition, "extra", None) or {}).get(EXTRA_KEY)
    if not isinstance(record, dict):
        return None
    echo = record.get("echo")
    if echo == SPIN:
        warnings.append(SPIN_ECHO_WARNING.format(said=_said(record)))
    elif echo == GRADIENT and te is not None and te > LONG_GRADIENT_TE:
        field = getattr(acquisition, "field_strength", None)
        if field is None or field <= 3.5:
            warnings.append(f"TE {1000 * te:.0f} ms is long for gradient-echo DSC ({_said(record)}; the 2020 consensus: "
                            "40-50 ms at 1.5 T, 20-35 ms at 3 T), typical of spin-echo DSC: check the sequence and the "
                            "echo time (--te); long-TE gradient echo saturates the arteries and large vessels")
    elif echo == BOTH:
        warnings.append(f"spin-and-gradient-echo DSC ({_said(record)}): quantified as one gradient-echo series; the "
                        "spin-echo images need their own analysis")
    return {key: value for key, value in record.items()}


def spin_echo_caveats(sequence: dict | None) -> dict[str, str]:
    """map name -> the caveat shown beside its ROI means and ratios, for a spin-echo series (else {})."""
    if not sequence or sequence.get("echo") != SPIN:
        return {}
    return {"cbv": ABSOLUTE_CAVEAT, "cbv_corrected": ABSOLUTE_CAVEAT, "cbf": ABSOLUTE_CAVEAT,
            "rcbv": RELATIVE_CAVEAT, "rcbf": RELATIVE_CAVEAT}


def merge_caveats(caveats: dict[str, str], sequence: dict | None) -> None:
    """In place: the spin-echo caveats (:func:`spin_echo_caveats`) joined to ``caveats``, map by map."""
    for name, caveat in spin_echo_caveats(sequence).items():
        caveats[name] = f"{caveats[name]}; {caveat}" if name in caveats else caveat

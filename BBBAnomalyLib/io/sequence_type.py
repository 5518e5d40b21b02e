"""Which pulse sequence a series was acquired with, as its files say: spin echo, gradient echo, or both.

Why: DSC's quantification (ΔR2* = -ln(S/S0)/TE, an AIF from arteries, kH and density) is that of gradient-echo EPI
DSC, the 2020 consensus protocol (Boxerman et al., Neuro-Oncology 2020;22:1262). Some centres acquire spin-echo DSC
(SE-EPI, TE ~60-110 ms), which weights capillary-sized vessels and shows large vessels far less (Boxerman et al., MRM
1995;34:555; Speck et al., JMRI 2000;12:381): the absolute values and the AIF's amplitude are not those of a
gradient-echo run, and tumour rCBV runs lower (high-grade glioma maximum rCBV 2.9 ± 2.3 SE-EPI vs 5.0 ± 2.9 GE-EPI,
Sugahara et al., AJNR 2001;22:1306). Nothing read which sequence a series was; this module keeps it in
``acquisition.extra["sequence"]`` (JSON-ready: it travels to a converted file's sidecar and the panel), and
:mod:`..dsc.spin_echo` says what it means for a DSC run.

Read from (each optional):

* DICOM: ScanningSequence (0018,0020; "SE", "GR", "EP", "IR", "RM", several joined by backslashes), SequenceVariant
  (0018,0021), SequenceName (0018,0024; Siemens "*epse2d1_128" spin echo, "*epfid2d1_128" gradient echo),
  PulseSequenceName (0018,9005) and EchoPulseSequence (0018,9008; SPIN, GRADIENT, BOTH) of the enhanced MR
  objects, and GE's private internal pulse sequence name (0019,109C);
* a BIDS sidecar: ScanningSequence, SequenceVariant, SequenceName, PulseSequenceType, PulseSequenceDetails,
  PulseSequenceName, and ArterialSpinLabelingType (an ASL series).

``echo`` is "spin_echo", "gradient_echo", "spin_and_gradient_echo" (SAGE, EchoPulseSequence BOTH) or None (the files
do not say, or their fields disagree: then ``conflict`` lists what each said). A series with none of the fields gains
nothing: an ordinary series' ``acquisition.extra`` is unchanged.
"""

from __future__ import annotations

import re

#: ``Acquisition.extra`` key of the record.
EXTRA_KEY = "sequence"

#: record key -> DICOM tag, in SimpleITK's spelling (the last one is GE's private internal sequence name)
DICOM_TAGS = {
    "scanning_sequence": "0018|0020",
    "sequence_variant": "0018|0021",
    "sequence_name": "0018|0024",
    "pulse_sequence_name": "0018|9005",
    "echo_pulse_sequence": "0018|9008",
    "ge_internal_sequence_name": "0019|109c",
}
#: record key -> BIDS sidecar key
SIDECAR_KEYS = {
    "scanning_sequence": "ScanningSequence",
    "sequence_variant": "SequenceVariant",
    "sequence_name": "SequenceName",
    "pulse_sequence_name": "PulseSequenceName",
    "pulse_sequence_type": "PulseSequenceType",
    "pulse_sequence_details": "PulseSequenceDetails",
    "arterial_spin_labeling_type": "ArterialSpinLabelingType",
}

SPIN, GRADIENT, BOTH = "spin_echo", "gradient_echo", "spin_and_gradient_echo"
#: Free-text names (sequence names, pulse sequence types) that say which echo: spin echo before gradient echo, as a
#: name such as "ep2d_se" holds both "ep" and "se". Siemens' SequenceName: *epse = spin-echo EPI, *epfid = the
#: gradient-echo (FID) EPI, *fl = FLASH; GE's: epi_se / epise, epigre / gre.
_SPIN_NAME = re.compile(r"epse|epi_?se\b|ep2d_se|spin[ _-]?echo|\bse[ _-]?epi\b|^\*?se\d", re.IGNORECASE)
_GRADIENT_NAME = re.compile(r"epfid|epigre|epi_?gre|gradient[ _-]?echo|\bg(r)?e[ _-]?epi\b|^\*?fl\d|^\*?fid|\bgre\b",
                            re.IGNORECASE)


def _tokens(value) -> set[str]:
    """ScanningSequence's codes: "EP\\GR", "EP/SE", ["EP", "SE"] -> {"EP", "GR"} ..."""
    items = value if isinstance(value, (list, tuple)) else re.split(r"[\\/,\s]+", str(value))
    return {str(item).strip().upper() for item in items if str(item).strip()}


def _from_scanning_sequence(value) -> str | None:
    codes = _tokens(value)
    spin, gradient = "SE" in codes, "GR" in codes
    return BOTH if spin and gradient else SPIN if spin else GRADIENT if gradient else None


def _from_name(text) -> str | None:
    text = str(text)
    spin, gradient = bool(_SPIN_NAME.search(text)), bool(_GRADIENT_NAME.search(text))
    return None if spin == gradient else SPIN if spin else GRADIENT


def classify(record: dict) -> dict:
    """``record`` with ``echo`` (and ``conflict`` where its fields disagree) from its fields."""
    said: dict[str, str] = {}
    echo_pulse = str(record.get("echo_pulse_sequence", "")).strip().upper()
    if echo_pulse in ("SPIN", "GRADIENT", "BOTH"):
        said["echo_pulse_sequence"] = {"SPIN": SPIN, "GRADIENT": GRADIENT, "BOTH": BOTH}[echo_pulse]
    if record.get("scanning_sequence"):
        kind = _from_scanning_sequence(record["scanning_sequence"])
        if kind:
            said["scanning_sequence"] = kind
    for key in ("sequence_name", "pulse_sequence_name", "ge_internal_sequence_name", "pulse_sequence_type",
                "pulse_sequence_details"):
        if record.get(key):
            kind = _from_name(record[key])
            if kind:
                said[key] = kind
    out = dict(record)
    kinds = set(said.values())
    out["echo"] = kinds.pop() if len(kinds) == 1 else None
    if len(set(said.values())) > 1:
        out["conflict"] = said
    return out


def sequence_extra_from_dicom(files) -> dict:
    """``{EXTRA_KEY: record}`` from the first image of a series (the sequence is the series'), or ``{}``."""
    files = list(files)
    if not files:
        return {}
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    reader.LoadPrivateTagsOn()  # GE's internal sequence name is private
    try:
        reader.ReadImageInformation()
    except RuntimeError:  # the series reader has read it once already and says what is wrong with it
        return {}
    record = {}
    for key, tag in DICOM_TAGS.items():
        if reader.HasMetaDataKey(tag):
            text = reader.GetMetaData(tag).strip().strip("\x00").strip()
            if text:
                record[key] = text
    return {EXTRA_KEY: classify(record)} if record else {}


def sequence_extra_from_sidecar(sidecar: dict) -> dict:
    """``{EXTRA_KEY: record}`` from a BIDS sidecar's keys (:data:`SIDECAR_KEYS`), or ``{}`` where it has none."""
    record = {}
    for key, name in SIDECAR_KEYS.items():
        value = sidecar.get(name)
        if isinstance(value, (str, int, float)) and str(value).strip():
            record[key] = str(value).strip()
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            record[key] = "\\".join(v.strip() for v in value)  # ScanningSequence as a list of codes
    return {EXTRA_KEY: classify(record)} if record else {}


def echo_kind(acquisition) -> str | None:
    """"spin_echo", "gradient_echo", "spin_and_gradient_echo" or None, as ``acquisition.extra`` records it."""
    record = (getattr(acquisition, "extra", None) or {}).get(EXTRA_KEY)
    return record.get("echo") if isinstance(record, dict) else None

"""What a DICOM series says about the contrast given: the Contrast/Bolus Module's tags and the patient's weight.

Why: a population AIF (the DCE default when no artery is drawn) is the curve of one dose, and Ktrans, vp and ve
scale with the dose actually given (session 22, :mod:`BBBAnomalyLib.dce.aif_dose`). The header often says what was
given; the reader kept none of it. These tags are read here, as written (their interpretation as a dose in mmol/kg,
which needs the agent's concentration, is :mod:`BBBAnomalyLib.dce.stated_dose`):

* ContrastBolusAgent (0018,0010): free text, the product or substance (e.g. "Gadovist", "GADOBUTROL 1.0M");
* ContrastBolusVolume (0018,1041): "volume injected in milliliters of diluted contrast agent";
* ContrastBolusTotalDose (0018,1044): "total amount in milliliters of the undiluted contrast agent";
* ContrastBolusIngredient (0018,1048): "active ingredient of agent", defined terms IODINE, GADOLINIUM,
  CARBON DIOXIDE, BARIUM;
* ContrastBolusIngredientConcentration (0018,1049): milligrams of active ingredient per milliliter of agent;
* PatientWeight (0010,1030): kg.

(DICOM PS3.3 C.7.6.4, Contrast/Bolus Module; all Type 3 but the agent, so often absent. They are typed at the
console or copied from the exam card, which is why :mod:`~BBBAnomalyLib.dce.stated_dose` cross-checks them and
offers, not applies, the dose.)

The tags are read from the first, middle and last image of the series (a few header reads: they describe the
series, and a DCE series of 60 frames x 20 slices is not read 1200 times over for them). A tag whose non-empty values
differ between those images is kept as the list of its values under ``"differs"``: the series does not state one
value. A series with none of the tags gains nothing (``{}``): an ordinary series' ``acquisition.extra`` is unchanged.
"""

from __future__ import annotations

import SimpleITK as sitk

#: ``Acquisition.extra`` key of the record (JSON-ready: it travels with the acquisition to the panel and into a
#: converted file's sidecar).
EXTRA_KEY = "contrast_bolus"

#: record key -> DICOM tag, in SimpleITK's spelling
TAGS = {
    "agent": "0018|0010",
    "volume_ml": "0018|1041",
    "total_dose_ml": "0018|1044",
    "ingredient": "0018|1048",
    "ingredient_concentration_mg_per_ml": "0018|1049",
    "patient_weight_kg": "0010|1030",
}
#: the tags whose value is a number (DICOM DS); the others are text
NUMERIC = ("volume_ml", "total_dose_ml", "ingredient_concentration_mg_per_ml", "patient_weight_kg")


def contrast_extra(files) -> dict:
    """``{EXTRA_KEY: record}`` for the series of ``files`` (its images' paths), or ``{}`` where none of the images
    read carries any of :data:`TAGS` with a value. record: each tag present as read (numbers as floats; text
    stripped); a number that does not parse is kept as text under ``"unreadable"``; values that differ between the
    images read under ``"differs"`` ({key: [values]}) instead."""
    files = list(files)
    if not files:
        return {}
    picked = sorted({0, len(files) // 2, len(files) - 1})
    values: dict[str, list[str]] = {}
    for index in picked:
        for key, text in _header(files[index]).items():
            if text not in values.setdefault(key, []):
                values[key].append(text)
    if not values:
        return {}
    record: dict = {}
    for key in TAGS:  # (in the order of TAGS)
        found = values.get(key)
        if not found:
            continue
        if len(found) > 1:
            record.setdefault("differs", {})[key] = found
            continue
        if key in NUMERIC:
            number = _number(found[0])
            if number is None:
                record.setdefault("unreadable", {})[key] = found[0]
                continue
            record[key] = number
        else:
            record[key] = found[0]
    return {EXTRA_KEY: record}


def _header(path) -> dict[str, str]:
    """The non-empty values of :data:`TAGS` in one file's header (nothing where the file cannot be read again: the
    series reader has read it once already and says what is wrong with it)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    found = {}
    for key, tag in TAGS.items():
        if reader.HasMetaDataKey(tag):
            text = reader.GetMetaData(tag).strip().strip("\x00").strip()
            if text:
                found[key] = text
    return found


def _number(text: str) -> float | None:
    """A DICOM DS value as a float; None for text that is not one finite number (e.g. "15ml", "", "1\\2")."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None

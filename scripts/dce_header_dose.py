"""Session 23: the dose a DICOM header states, offered against the Parker AIF's 0.1 mmol/kg (dce/stated_dose.py).

The DCE object made at 0.5, 0.75, 1 and 1.25 x the Parker dose (6 slices, SNR 40, seed 1, extended Tofts, the true
T10 map), its acquisition carrying the contrast tags a scanner would write for a 75 kg patient in two forms: the
exact volume of gadobutrol (1.0 M, ContrastBolusTotalDose) and the volume of gadoterate (0.5 M) rounded to whole ml
with its gadolinium concentration (78.6 mg/ml). Each is run as a user would: the default Parker AIF (no --dose: is
the header warned about, with which --dose?), then with the --dose the warning names. Printed: the stated dose,
whether it was warned, and the % error of the rim's and core's median Ktrans and GM's median vp, before and after.

    OMP_NUM_THREADS=1 python scripts/dce_header_dose.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dce_dose import regions  # noqa: E402

from BBBAnomalyLib.core.volume import Acquisition, Volume  # noqa: E402
from BBBAnomalyLib.dce.parameters import DCEParameters  # noqa: E402
from BBBAnomalyLib.dce.pipeline import run_dce  # noqa: E402
from BBBAnomalyLib.io.dicom_contrast import EXTRA_KEY  # noqa: E402
from BBBAnomalyLib.phantoms.dce import make_dce_phantom  # noqa: E402

FACTORS = (0.5, 0.75, 1.0, 1.25)  # x the Parker curve's 0.1 mmol/kg
WEIGHT = 75.0


def headers(dose: float) -> dict[str, dict]:
    return {"gadobutrol exact": {"agent": "Gadovist", "total_dose_ml": round(dose * WEIGHT / 1.0, 3),
                                 "patient_weight_kg": WEIGHT},
            "gadoterate whole ml": {"agent": "Dotarem", "volume_ml": float(round(dose * WEIGHT / 0.5)),
                                    "ingredient": "GADOLINIUM", "ingredient_concentration_mg_per_ml": 78.6,
                                    "patient_weight_kg": WEIGHT}}


def error(result, phantom, name, region) -> float:
    mask = regions(phantom)[region]
    truth = float(np.median(phantom.truth[name].data[mask]))
    return 100.0 * (float(np.median(result.maps[name].data[mask])) / truth - 1.0)


def main() -> None:
    print("object dose | header form | stated | warned | --dose suggested | rim Ktrans / core Ktrans / GM vp % "
          "(default) -> (with the suggested --dose)")
    for factor in FACTORS:
        phantom = make_dce_phantom(slices=6, seed=1, snr=40.0, dose=factor)
        t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
        for form, record in headers(0.1 * factor).items():
            series = Volume(phantom.signal.data, phantom.signal.affine, phantom.signal.times,
                            Acquisition(flip_angle=phantom.signal.acquisition.flip_angle,
                                        repetition_time=phantom.signal.acquisition.repetition_time,
                                        extra={EXTRA_KEY: record}))
            default = run_dce(series, DCEParameters(rls="none"), brain_mask=phantom.masks["brain"], t10_map=t10)
            entry = default.report["aif"]["header_dose"]
            warning = next((w for w in default.report["warnings"] if "DICOM header states" in w), None)
            suggested = float(re.search(r"--dose ([0-9.]+)", warning).group(1)) if warning else None
            after = (run_dce(series, DCEParameters(rls="none", dose=suggested), brain_mask=phantom.masks["brain"],
                             t10_map=t10) if suggested else default)
            cells = [f"{error(r, phantom, 'ktrans', 'rim'):+.1f} / {error(r, phantom, 'ktrans', 'core'):+.1f} / "
                     f"{error(r, phantom, 'vp', 'GM'):+.1f}" for r in (default, after)]
            print(f"{0.1 * factor:.3f} | {form} | {entry['dose_mmol_per_kg']} | {bool(warning)} | {suggested} | "
                  f"{cells[0]} -> {cells[1]}", flush=True)


if __name__ == "__main__":
    main()

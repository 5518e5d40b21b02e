"""Session 23: the r1 of the agent a DICOM header names, offered against the default --relaxivity 4.5
(dce/stated_relaxivity.py).

The DCE object made with the r1 of one agent at one field (6 slices, SNR 40, seed 1, extended Tofts, the true T10
map), its acquisition carrying that agent's name (ContrastBolusAgent) and the field (MagneticFieldStrength), as a
scanner writes them. Each is run as a user would: with the default r1 (is the agent warned about, with which
--relaxivity?), then with the --relaxivity the warning names; with the Parker population AIF (the default without an
AIF mask) and with the object's drawn arterial mask (a measured AIF). Printed: the agent's r1, whether it was warned,
and the % error of the rim's and core's median Ktrans and GM's median vp, with the default r1 -> with the suggested
one; and, for the measured AIF, the largest relative difference between the two runs' Ktrans maps.

    OMP_NUM_THREADS=1 python scripts/dce_header_relaxivity.py
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
from BBBAnomalyLib.dce.stated_relaxivity import R1_BY_AGENT  # noqa: E402
from BBBAnomalyLib.io.dicom_contrast import EXTRA_KEY  # noqa: E402
from BBBAnomalyLib.phantoms.dce import make_dce_phantom  # noqa: E402

#: (the header's ContrastBolusAgent, the agent's name in the table, the field [T])
CASES = (("Dotarem", "gadoterate meglumine", 1.5), ("Dotarem", "gadoterate meglumine", 3.0),
         ("ProHance", "gadoteridol", 1.5), ("ProHance", "gadoteridol", 3.0),
         ("Magnevist", "gadopentetate dimeglumine", 3.0), ("MultiHance", "gadobenate dimeglumine", 1.5),
         ("Gadovist", "gadobutrol", 1.5), ("Gadovist", "gadobutrol", 3.0), ("Omniscan", "gadodiamide", 1.5))


def error(result, phantom, name, region) -> float:
    mask = regions(phantom)[region]
    truth = float(np.median(phantom.truth[name].data[mask]))
    return 100.0 * (float(np.median(result.maps[name].data[mask])) / truth - 1.0)


def cell(result, phantom) -> str:
    return (f"{error(result, phantom, 'ktrans', 'rim'):+.1f} / {error(result, phantom, 'ktrans', 'core'):+.1f} / "
            f"{error(result, phantom, 'vp', 'GM'):+.1f}")


def main() -> None:
    print("agent | field T | r1 | warned | --relaxivity suggested | Parker: rim Ktrans / core Ktrans / GM vp % "
          "(default r1) -> (suggested) | measured AIF: the same | measured AIF: max |Ktrans(4.5)/Ktrans(r1) - 1|")
    for tag, agent, field in CASES:
        r1 = R1_BY_AGENT[agent][0][field]
        phantom = make_dce_phantom(slices=6, seed=1, snr=40.0, relaxivity=r1)
        t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
        series = Volume(phantom.signal.data, phantom.signal.affine, phantom.signal.times,
                        Acquisition(flip_angle=phantom.signal.acquisition.flip_angle,
                                    repetition_time=phantom.signal.acquisition.repetition_time,
                                    field_strength=field, extra={EXTRA_KEY: {"agent": tag}}))

        def run(aif_mask=None, relaxivity=None):  # None: the default r1 (session 24: a given 4.5 is a choice)
            return run_dce(series, DCEParameters(rls="none", relaxivity=relaxivity), aif_mask=aif_mask,
                           brain_mask=phantom.masks["brain"], t10_map=t10)

        default = run()
        warning = next((w for w in default.report["warnings"] if "published r1" in w), None)
        suggested = float(re.search(r"--relaxivity ([0-9.]+)", warning).group(1)) if warning else None
        after = run(relaxivity=suggested) if suggested else default
        measured = run(phantom.masks["aif"])
        measured_right = run(phantom.masks["aif"], relaxivity=r1)
        assert "warned" not in measured.report["conversion"]["header_relaxivity"]
        brain = phantom.masks["brain"]
        a, b = measured.maps["ktrans"].data[brain], measured_right.maps["ktrans"].data[brain]
        moved = np.abs(a - b)[b > 1e-3] / b[b > 1e-3]
        print(f"{agent} | {field:g} | {r1:g} | {bool(warning)} | {suggested} | {cell(default, phantom)} -> "
              f"{cell(after, phantom)} | {cell(measured, phantom)} -> {cell(measured_right, phantom)} | "
              f"{moved.max():.2g}", flush=True)


if __name__ == "__main__":
    main()

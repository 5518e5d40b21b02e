"""Session 19: the AIF when the tissue lags the artery by more than the arterial bolus (docs/reliability.md).

Runs ``run_dsc`` (oSVD defaults) on the DSC reference object with every tissue 0-12 s behind the artery, noiseless
and at SNR 50 and 20, frames 1 and 2 s, with the object's arterial mask and with the automatic AIF, and prints per
setting what happened: accepted (grey-matter mean CBF, the baseline warnings) or refused (the line). About 2 min on
one core:

    OMP_NUM_THREADS=1 python scripts/dsc_early_artery.py
"""

from __future__ import annotations

import numpy as np

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom


def main() -> int:
    for snr in (1e6, 50.0, 20.0):
        for dt in (1.0, 2.0):
            for delay in (0, 3, 6, 9, 12):
                phantom = make_dsc_phantom(snr=snr, tissue_delay=delay, tumor_delay=delay, frame_interval=dt)
                for which in ("mask", "auto"):
                    mask = phantom.masks["aif"] if which == "mask" else None
                    label = f"SNR {'none' if snr >= 1e6 else int(snr)}, dt {dt:g} s, tissue +{delay} s, {which} AIF"
                    try:
                        result = run_dsc(phantom.signal, DSCParameters(), aif_mask=mask,
                                         brain_mask=phantom.masks["brain"])
                    except InputError as exc:
                        print(f"{label}: refused: {str(exc)[:160]}", flush=True)
                        continue
                    gm = float(np.mean(result.maps["cbf"].data[phantom.masks["gm"]]))
                    said = [w[:90] for w in result.report["warnings"] if "baseline was shortened" in w]
                    print(f"{label}: GM CBF {gm:.1f}; {said}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The curves behind DSC maps: each brain voxel's ΔR2*(t) and the model's fit of it."""

from __future__ import annotations

import numpy as np

from ..app.curves import CurveSet

#: Label of the fitted curve per method, as shown in plot legends.
FIT_LABELS = {"ssvd": "sSVD fit", "csvd": "cSVD fit", "osvd": "oSVD fit", "tikhonov": "Tikhonov fit",
              "phae": "PHAE reconstruction"}


def dsc_curve_set(result) -> CurveSet:
    """A :class:`CurveSet` from a :class:`DSCResult` run with ``keep_curves=True``.

    measured: the ΔR2* curves that were deconvolved (leakage-corrected where BSW corrected them);
    fitted:   the AIF convolved with each voxel's deconvolved residue (what the method explains);
    reference: the AIF.
    """
    if result.delta_r2s is None:
        raise ValueError("run_dsc(..., keep_curves=True) keeps the curves")
    brain = result.brain_mask
    measured = result.delta_r2s.data[brain]
    method = result.report["parameters"]["method"]
    label = FIT_LABELS.get(method, f"{method} fit")
    if result.report.get("phae", {}).get("guided_pooling", {}).get("applied"):
        # the network fitted the voxel's S0-guided neighbourhood mean, not the noisier curve plotted beside it
        label += " (of the neighbourhood mean)"
    fitted = {}
    if "fitted_curves" in result.extras:  # computed in the run's own pass (keep_curves=True), every method
        fitted[label] = np.asarray(result.extras["fitted_curves"], np.float32)
    return CurveSet(np.asarray(result.times, np.float64), brain, measured, "ΔR2* (1/s)", fitted,
                    {"AIF": np.asarray(result.aif, np.float64)})

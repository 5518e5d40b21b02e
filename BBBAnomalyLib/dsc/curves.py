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
    fitted = {}
    if "fitted_curves" in result.extras:  # learned methods give their reconstruction directly
        fitted[label] = np.asarray(result.extras["fitted_curves"], np.float32)
    elif method in FIT_LABELS and method != "phae":
        fitted[label] = _classic_fit(result, measured, method)
    return CurveSet(np.asarray(result.times, np.float64), brain, measured, "ΔR2* (1/s)", fitted,
                    {"AIF": np.asarray(result.aif, np.float64)})


def _classic_fit(result, measured: np.ndarray, method: str) -> np.ndarray:
    """AIF ⊗ residue for every voxel, deconvolving again with the run's settings.

    Refitting (about a second per whole brain for oSVD) keeps the pipeline from holding every
    voxel's residue in memory on runs that never plot a curve.
    """
    from .deconvolution import DeconvolutionModel

    p = result.report["parameters"]
    model = DeconvolutionModel(result.aif, float(result.times[1] - result.times[0]), method,
                               ssvd_threshold=p["ssvd_threshold"], csvd_threshold=p["csvd_threshold"],
                               oi_target=p["osvd_oi_target"], n_lambdas=p["tikhonov_lambdas"],
                               chunk_voxels=p["chunk_voxels"])
    fitted = np.empty(measured.shape, np.float32)
    for start in range(0, measured.shape[0], model.chunk_voxels):
        chunk = slice(start, start + model.chunk_voxels)
        fit = model.fit(measured[chunk], keep_residue=True)
        fitted[chunk] = model.synthesize(fit.residue)
    return fitted

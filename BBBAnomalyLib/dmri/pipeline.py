"""The diffusion anomaly pipeline: a DWI (b0 + one shell near b = 1000) in, an anomaly map out.

``run_dmri`` is the one entry point; `bbbanomaly dmri`, the Slicer logic and the worker are thin
layers over it. Steps: preprocessing (:mod:`.preprocessing`: gradients, mask, S/S0, SH resampling
to the model's directions, fixed field of view) -> the network (VAE residual or RecDiscNet
probability) on the model grid -> trilinear back onto the native voxels -> a label-free threshold
and a 3³ opening (:mod:`.thresholds`) -> maps and report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.checks import parameters as check_parameters
from ..core.errors import InputError
from ..io import read_mask
from ..core.memory import release_freed_memory
from ..core.report import Timer, dump_json, summarise, versions
from ..core.volume import Volume, read_warnings
from . import thresholds as thr
from .parameters import DMRIParameters, MotionCorrect, Threshold
from .preprocessing import check_dwi, prepare, to_native

#: Map name -> (unit, description); the order is the order of the outputs.
MAP_INFO = {
    "anomaly": ("score", "anomaly score: VAE = |mean over directions of the S/S0 reconstruction residual| "
                         "(or its RMS); RecDiscNet = anomaly probability"),
    "anomaly_mask": ("label", "1 = anomalous: score above the label-free threshold, 3x3x3 opening"),
    "mean_attenuation": ("S/S0", "mean S/S0 over the model's directions at b = 1000 (trace-weighted attenuation)"),
}

ProgressCallback = Callable[[float, str], None]


@dataclass
class DMRIResult:
    """Maps on the input grid, the analysed mask and a JSON-ready report."""

    maps: dict[str, Volume]
    brain_mask: np.ndarray
    report: dict
    # signal (a preprocessing.CanonicalSignal: makes the S/S0 again from the DWI), reconstruction grid, grid affine
    extras: dict = field(default_factory=dict)

    def curves(self):
        """S/S0 on the model's canonical directions (x = direction index) for every analysed voxel,
        with the network's reconstruction brought back to the same voxels as ``fitted``.

        The measured S/S0 is made again from the DWI (issue 17: the run does not keep the (n_brain, 64) float32
        array through the network; the same float32 steps as the run's, bit for bit): the DWI given to
        ``run_dmri`` must be unchanged, and the result keeps a reference to it."""
        from ..app.curves import CurveSet
        from .preprocessing import GEMM_ROWS

        e = self.extras
        release_freed_memory()  # the run's freed heap, before the two (n_brain, 64) float32 arrays
        recon = to_native(e["reconstruction"], e["grid_affine"], self.brain_mask, e["affine"])
        # after the reconstruction (its sampling temporaries gone), by small chunks (the same values)
        signal = e["signal"](chunk_voxels=GEMM_ROWS) if callable(e["signal"]) else e["signal"]
        label = "VAE reconstruction" if self.report["parameters"]["model"] == "vae" else "RecDiscNet reconstruction"
        return CurveSet(np.arange(signal.shape[1], dtype=np.float64), self.brain_mask, signal,
                        "S/S0 (direction index)", {label: recon})

    def write(self, out_dir: str | Path, overwrite: bool = False, suffix: str = ".nii.gz") -> Path:
        """`<map><suffix>`, `brain_mask<suffix>` and `report.json`, all or nothing."""
        from ..io import write_volume
        from ..core.outputs import atomic_output_dir

        template = next(iter(self.maps.values()))
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            for name, vol in self.maps.items():
                write_volume(vol, tmp / f"{name}{suffix}")
            write_volume(Volume(self.brain_mask.astype(np.uint8), template.affine), tmp / f"brain_mask{suffix}")
            dump_json(self.report, tmp / "report.json")
        return Path(out_dir).resolve()


def run_dmri(dwi: Volume, params: DMRIParameters | None = None, *, brain_mask=None, nawm_mask=None,
             tumor_mask=None, progress: ProgressCallback | None = None) -> DMRIResult:
    """Anomaly map of a diffusion-weighted series.

    dwi:        4D Volume with ``acquisition.bvals`` and ``.bvecs`` (RAS, as Slicer's DWI node and
                :func:`BBBAnomalyLib.dmri.read_dwi` give them; ``params.gradient_frame='fsl'`` for raw
                FSL vectors as :func:`io.read_volume` reads them beside a NIfTI).
    brain_mask: voxels to analyse (array or Volume or path); None = automatic (preprocessing.automatic_mask).
    nawm_mask, tumor_mask: summarised in the report (tumor: also its overlap with the anomaly mask).
    progress:   callback(fraction, message); raise CancelledError from it to stop.
    """
    params = check_parameters(params, DMRIParameters, "run_dmri")
    report_progress = progress or (lambda fraction, message: None)
    timer = Timer()
    with timer("checks"):
        report_progress(0.0, "checking the input")
        check_dwi(dwi)
        masks = {name: read_mask(m, dwi, name) for name, m in
                 (("mask", brain_mask), ("nawm-mask", nawm_mask), ("tumor-mask", tumor_mask)) if m is not None}
    with timer("model"):
        report_progress(0.05, "loading the model")
        try:
            from .inference import load_model, score_prepared
        except ImportError as exc:
            raise InputError(f"the diffusion anomaly models need PyTorch ({exc}); install torch") from None
        model = load_model(params.weights_name, params.model.value, params.device)
    analysed, gradient_frame, motion = dwi, params.gradient_frame, None
    if params.motion_correct is MotionCorrect.RIGID:
        with timer("motion"):
            report_progress(0.07, "head motion between the volumes (rigid registration)")
            from .motion import motion_step

            # a new series when a volume moved (the input is never modified); else ``dwi`` itself
            motion = motion_step(dwi, correct=True, gradient_frame=params.gradient_frame,
                                 brain_mask=masks.get("mask"), b0_threshold=params.b0_threshold,
                                 shell_tolerance=params.shell_tolerance, min_directions=params.min_directions,
                                 target_b=model.spec.b_value)
            analysed, gradient_frame = motion.dwi, motion.gradient_frame
    with timer("preprocessing"):
        report_progress(0.1, "S/S0, resampling to the model's directions, field of view")
        prepared = prepare(analysed, model.spec, gradient_frame=gradient_frame, brain_mask=masks.get("mask"),
                           b0_threshold=params.b0_threshold, shell_tolerance=params.shell_tolerance,
                           min_directions=params.min_directions, erode=params.erode_mask,
                           chunk_voxels=params.chunk_voxels)
    # preprocessing's chunk and per-channel temporaries and its S/S0 array (not kept: prepare's signal_source
    # makes it again for the curves), returned before the network's (issue 17)
    release_freed_memory()
    warnings = read_warnings(dwi) + list(prepared.warnings) + (motion.warnings if motion is not None else [])
    _vae_options_unused(params, model.kind, warnings)
    brain = prepared.brain
    from .applicability import check_dwi_input

    # the direction-averaged S/S0's median as a diffusivity (mm²/s -> µm²/ms): a b0 scaled unlike the DW volumes
    # shifts it
    median_adc = -np.log(max(float(np.median(prepared.mean_attenuation)), 1e-6)) / model.spec.b_value * 1e3
    applicability = check_dwi_input(dwi.affine, brain, model.kind, params.threshold.value, median_adc, prepared.mask)
    warnings.extend(applicability.warnings)
    with timer("network"):
        report_progress(0.5, f"running the {params.model.value} network")
        # takes the network input (64 x the model grid, float32) off `prepared` and lets it go once read (issue 17)
        grid_score, recon = score_prepared(model, prepared, params.vae_score)
    release_freed_memory()  # the network's activations
    with timer("maps"):
        report_progress(0.8, "anomaly map and mask")
        values = np.maximum(to_native(grid_score, prepared.grid_affine, brain, dwi.affine), 0.0)
        anomaly = np.zeros(dwi.spatial_shape, np.float32)
        anomaly[brain] = values
        threshold = _threshold(params, model, values, anomaly, dwi)
        mask = thr.anomaly_mask(anomaly, brain, threshold, params.opening)
        mean_att = np.zeros(dwi.spatial_shape, np.float32)
        mean_att[brain] = prepared.mean_attenuation  # the S/S0's row means, taken in prepare
        maps = {"anomaly": Volume(anomaly, dwi.affine.copy()),
                "anomaly_mask": Volume(mask.astype(np.uint8), dwi.affine.copy()),
                "mean_attenuation": Volume(mean_att, dwi.affine.copy())}
    report = {
        "pipeline": "dmri",
        "input": {"shape": list(dwi.data.shape), "voxel_mm": dwi.voxel_sizes.round(4).tolist(),
                  **prepared.shell.to_json()},
        "parameters": params.to_json(),
        "versions": versions(),
        "model": {"weights": model.card.get("name"), "weights_sha256": model.card.get("sha256"),
                  "kind": model.kind, "trained_on": model.card.get("trained_on"), "device": str(model.device),
                  "grid": {"shape": list(model.spec.shape), "voxel_mm": model.spec.voxel_mm}},
        "score": ("vae residual, " + params.vae_score if model.kind == "vae" else "recdisc probability"),
        "threshold": {"method": params.threshold.value, "value": threshold, "label_free": True,
                      "opening_3x3x3": params.opening},
        "brain_voxels": int(brain.sum()),
        "applicability": applicability.to_json(),
        "gradient_orientation": prepared.orientation.to_json() if prepared.orientation is not None else None,
        "motion": motion.report if motion is not None else None,
        "maps": {name: {"unit": MAP_INFO[name][0], "description": MAP_INFO[name][1]} for name in maps},
        "summary": _summary(values, mask[brain], masks, brain, dwi),
        "timings_s": timer.seconds,
        "warnings": warnings,
    }
    report_progress(1.0, "done")
    return DMRIResult(maps, brain, report, extras={"signal": prepared.signal_source, "reconstruction": recon,
                                                   "grid_affine": prepared.grid_affine, "affine": dwi.affine.copy(),
                                                   "grid_score": grid_score})


#: The options only the VAE reads (field -> its `bbbanomaly dmri` option): RecDiscNet's score is its probability.
VAE_ONLY_OPTIONS = {"vae_score": "--vae-score"}


def _vae_options_unused(params: DMRIParameters, kind: str, warnings: list) -> None:
    """A warning naming the VAE's options given with another model: `--model recdisc --vae-score rms` was
    silently ignored (as dsc's PHAE options were, see dsc.phae_step._phae_options_unused)."""
    if kind == "vae":
        return
    defaults = DMRIParameters()
    given = [f"{option} {getattr(params, name)}" for name, option in VAE_ONLY_OPTIONS.items()
             if str(getattr(params, name)) != str(getattr(defaults, name))]
    if given:
        verb = ("applies", "was") if len(given) == 1 else ("apply", "were")
        warnings.append(f"{', '.join(given)} {verb[0]} to --model vae only and {verb[1]} ignored (this run used "
                        f"{kind})")


def _threshold(params: DMRIParameters, model, values: np.ndarray, anomaly: np.ndarray, dwi: Volume) -> float:
    if params.threshold is Threshold.FIXED:
        return float(params.threshold_value if params.threshold_value is not None else model.fixed_threshold(params.vae_score))
    if params.threshold is Threshold.OTSU:
        return thr.otsu_threshold(values)
    return thr.meanpool_threshold(anomaly, dwi.voxel_sizes, params.meanpool_mm)


def _summary(values, flagged, masks, brain, dwi: Volume) -> dict:
    out = {"brain": summarise(values), "anomaly_volume_ml": float(flagged.sum() * dwi.voxel_volume_ml),
           "anomaly_fraction_of_brain": float(flagged.mean())}
    for label, key in (("nawm", "nawm-mask"), ("tumor", "tumor-mask")):
        if key in masks:
            inside = masks[key][brain]
            if not inside.any():
                raise InputError(f"the {label.upper()} mask does not overlap the analysed brain; draw it inside the brain")
            out[label] = summarise(values[inside])
    if "nawm" in out and "tumor" in out and out["nawm"].get("mean"):
        out["tumor_to_nawm"] = out["tumor"]["mean"] / out["nawm"]["mean"]
    if "tumor-mask" in masks:
        from ..metrics import dice, roc_auc

        truth = masks["tumor-mask"][brain]
        overlap = {"dice": dice(flagged, truth), "sensitivity": float(flagged[truth].mean()),
                   "note": "against the tumor mask given (an evaluation, not part of the method)"}
        if 0 < truth.sum() < truth.size:
            overlap["voxel_auc"] = roc_auc(truth, values)
        out["tumor_overlap"] = overlap
    return out

"""The T1/FLAIR pipeline: synthetic T1Gd, BBB status and a 3D-autoencoder anomaly map.

``run_t1flair`` is the one documented entry point; `bbbanomaly t1flair`, the Slicer panel and
the worker are thin layers over it. Steps: FLAIR onto the T1 grid (world coordinates; with ``register``
"rigid" then registered to the T1, alignment.py) -> brain mask (given or automatic) -> N4 bias-field
correction (``bias_correct``, bias_field.py) -> applicability checks (applicability.py; the post-operative cues of
postop.py, compared with the enhancement map at the end) -> histogram-mode
normalisation -> brain slices resampled to the network size ->
deterministic few-step synthesis with both ET labels and ``samples`` starting noises -> tumor ROI (the
user's, or the segmentation head's with its plausibility, tumor_roi.py) -> contrastive maximum -> BBB
status with three outcomes from one calibrated probability (identification.py), weighed on a real scan by
the identifier's record on real scans (real_evidence.py) -> 3D autoencoder anomaly map -> the synthetic
T1Gd = normalised T1 + the predicted enhancement shrunk where the model is unsure, on the native T1 grid
(enhancer.py: a voxel-feature ensemble; without enhancer weights, the syntheses' change, enhancement.py).

Memory (issue 17): every map is 0 off the brain and is held as its brain voxels' values
(:class:`MapVolumes`); ``result.maps[name]`` makes the full Volume when it is read, and
``result.write`` writes one at a time. Full-grid arrays are let go as soon as their last step is
done (the FLAIR's float32 copy after the ROI, the normalised T1 and FLAIR before the enhancer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..core.checks import parameters as check_parameters
from ..core.errors import InputError
from ..io import read_mask
from ..core.report import Timer, dump_json, summarise, versions
from ..core.volume import Volume, read_warnings
from .normalisation import from_unit, normalise
from .parameters import T1FlairParameters
from .alignment import align_flair
from .bias_field import correct_pair
from .preprocessing import BrainMaps, SliceGrid, automatic_brain_mask, slice_axis

#: Map name -> (unit, description); the order is the order of the outputs.
MAP_INFO = {
    "synthetic_t1gd": ("a.u. 0-255", "synthetic contrast-enhanced T1 on the seed's normalised scale (normal white "
                                      "matter near 99): the normalised T1 plus `enhancement`; equals the T1 where "
                                      "the model is unsure"),
    "enhancement": ("a.u. 0-255", "enhancement added to the normalised T1: the predicted T1Gd - T1 change (enhancer "
                                  "weights; without them the p(disrupted)-weighted change of the syntheses), >= 0, "
                                  "shrunk to 0 where it is not larger than its between-model spread"),
    "enhancement_uncertainty": ("a.u. 0-255", "spread (sd) of the predicted change (enhancer: between-case model "
                                              "spread plus the predicted voxel noise; without it: sampler noises and "
                                              "the disagreement between the ET labels)"),
    "anomaly": ("a.u.", "3D autoencoder residual |T1, FLAIR - reconstruction| (normalised [-1, 1] units)"),
    "enhancement_probability": ("score 0-1", "enhancer's p(T1Gd - T1 > 30 and > 60 units), averaged: which voxels "
                                             "brighten with contrast (vessels, dura, enhancing tumor); a ranking, "
                                             "validated by its AUC on held-out real cases"),
    "tumor_probability": ("probability", "whole-tumor probability from the diffusion model's segmentation head"),
    "synthetic_t1gd_enhancing": ("a.u. 0-255", "synthesis with ET = enhancing (disrupted BBB)"),
    "synthetic_t1gd_non_enhancing": ("a.u. 0-255", "synthesis with ET = non-enhancing (intact BBB)"),
}

ProgressCallback = Callable[[float, str], None]


class MapVolumes(BrainMaps):
    """The result's maps: name -> :class:`Volume` on the T1 grid (the T1's affine), 0 off the brain.

    Held as the brain voxels' float32 values (C order of ``brain``), not as full volumes: eight maps of a
    240 x 240 x 155 grid are 272 MiB, 4x the T1 and FLAIR (issue 17); on a 1 mm brain of 1.6 M voxels their
    brain values are 50 MiB. Reading a map makes a new full Volume (changing it does not change the result); a
    writer reads one map at a time, so only one full volume is alive while the maps are written."""

    def __init__(self, brain: np.ndarray, affine: np.ndarray, values: dict[str, np.ndarray]):
        super().__init__(np.asarray(brain, bool), values)
        self.affine = np.array(affine, np.float64)

    def __getitem__(self, name: str) -> Volume:
        return Volume(super().__getitem__(name), self.affine.copy())

    @property
    def nbytes(self) -> int:
        """Bytes held (the brain values; each full volume read is ``brain.size * 4`` more while it lives)."""
        return sum(int(v.nbytes) for v in self.brain_values.values())


@dataclass
class T1FlairResult:
    """Maps (Volumes on the T1 grid with the T1 affine: a :class:`MapVolumes`, each map made when read), the
    masks used and a JSON-ready report."""

    maps: Mapping[str, Volume]
    brain_mask: np.ndarray
    tumor_roi: np.ndarray
    report: dict
    extras: dict = field(default_factory=dict)

    def curves(self):
        """No curves: this pipeline has no time axis."""
        return None

    def write(self, out_dir: str | Path, overwrite: bool = False, suffix: str = ".nii.gz") -> Path:
        """`<map><suffix>`, brain_mask, tumor_roi and report.json, all or nothing (".nii.gz" or ".nrrd")."""
        from ..io import write_volume
        from ..core.outputs import atomic_output_dir

        affine = getattr(self.maps, "affine", None)
        if affine is None:
            affine = next(iter(self.maps.values())).affine
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            for name in self.maps:  # one full volume at a time (MapVolumes: made here, dropped after writing)
                write_volume(self.maps[name], tmp / f"{name}{suffix}")
            for name, mask in (("brain_mask", self.brain_mask), ("tumor_roi", self.tumor_roi)):
                write_volume(Volume(mask.astype(np.uint8), np.array(affine, np.float64)), tmp / f"{name}{suffix}")
            dump_json(self.report, tmp / "report.json")
        return Path(out_dir).resolve()


def run_t1flair(t1: Volume, flair: Volume, params: T1FlairParameters | None = None, *, brain_mask=None,
                tumor_mask=None, progress: ProgressCallback | None = None) -> T1FlairResult:
    """Synthetic T1Gd, BBB status and anomaly map from a non-contrast T1 and a T2-FLAIR.

    t1, flair:  3D Volumes; the FLAIR is resampled onto the T1 grid when its grid differs.
    brain_mask: boolean array or Volume on the T1 grid; None = automatic.
    tumor_mask: where the BBB status is decided; None = the segmentation head's tumor.
    progress:   callback(fraction, message); raise CancelledError from it to stop.
    """
    import torch

    params = check_parameters(params, T1FlairParameters, "run_t1flair")
    previous_threads = torch.get_num_threads()
    if params.threads:
        torch.set_num_threads(int(params.threads))
    try:
        return _run(t1, flair, params, brain_mask, tumor_mask, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(t1, flair, params, brain_mask, tumor_mask, progress) -> T1FlairResult:
    import torch

    from ..core.devices import resolve_device
    from ..core.memory import release_freed_memory
    from . import cae as cae_mod
    from .applicability import check_structural_input
    from .diffusion import sample_both_labels
    from .enhancement import estimate_enhancement, native_synthesis
    from .identification import contrastive_maximum, slice_scores
    from .postop import find_post_operative, post_operative_report
    from .models import load
    from .real_evidence import RealEvidence
    from .tumor_roi import choose_roi, flair_abnormality_ml

    report_progress = progress or (lambda fraction, message: None)
    timer, warnings = Timer(), read_warnings(t1, flair)  # what the readers said about the files
    with timer("checks"):
        report_progress(0.0, "checking the input")
        if not isinstance(t1, Volume) or not isinstance(flair, Volume):
            raise InputError("the T1 and the FLAIR must be Volumes (read them with BBBAnomalyLib.io.read_volume)")
        if t1.is_4d and t1.n_frames > 1:
            raise InputError(f"the T1 is 4D {t1.data.shape}; give a single 3D volume")
        t1_data = np.asarray(t1.data[..., 0] if t1.data.ndim == 4 else t1.data, np.float32)
        t1_grid = Volume(t1_data, t1.affine)
        given_brain = read_mask(brain_mask, t1_grid, "mask") if brain_mask is not None else None
    with timer("registration"):  # the FLAIR onto the T1's voxels: world coordinates, then the patient's motion
        if params.register != "none":
            report_progress(0.005, "registering the FLAIR to the T1 (rigid)")
        aligned = align_flair(t1_grid, flair, params.register, given_brain, warnings, threads=params.threads)
        flair_data, registration_report = aligned.data, aligned.report
        del aligned
    with timer("checks"):  # the automatic mask after the registration: the signal of both aligned images
        brain = given_brain if given_brain is not None else automatic_brain_mask(t1_data, flair_data, warnings)
        user_tumor = read_mask(tumor_mask, t1_grid, "tumor-mask") & brain if tumor_mask is not None else None
        if user_tumor is not None and not user_tumor.any():
            raise InputError("the tumor mask does not overlap the brain mask; draw it inside the brain")
    with timer("bias_field"):  # before the checks and the normalisation: everything after reads corrected images
        if params.bias_correct != "none":
            report_progress(0.01, "bias-field correction (N4" + (", lesion left out)" if params.bias_correct
                                                                  == "n4-lesion-out" else ")"))
        # new arrays when corrected (the inputs are never modified); voxels outside the brain keep their values
        t1_data, flair_data, bias_report = correct_pair(t1_data, flair_data, brain, t1.voxel_sizes[:3],
                                                        params.bias_correct, warnings, threads=params.threads)
        t1_grid = Volume(t1_data, t1.affine)
    with timer("checks"):
        flair_affine = None if t1_grid.same_grid(flair) else flair.affine  # resampled: its own resolution is checked too
        applicability = check_structural_input(t1_data, flair_data, t1.affine, brain, slice_axis(t1.affine),
                                               mask_given=brain_mask is not None, flair_affine=flair_affine)
        warnings.extend(applicability.warnings)
        # post-operative anatomy (intrinsic T1 hyperintensity, a cavity): found here, compared with the enhancement
        # map at the end (postop.py; it changes no map)
        post_operative = find_post_operative(t1_data, flair_data, brain, t1.voxel_sizes[:3])
    release_freed_memory()  # between steps (issue 17): the checks' freed temporaries are not kept resident
    device = resolve_device(params.device)
    with timer("load_models"):
        report_progress(0.03, "loading the models")
        diffusion, dcard = load(params.synthesis_weights, "diffusion", device)
        identifier, icard = load(params.identifier_weights, "identifier", device)
        cae, ccard = load(params.cae_weights, "cae", device) if params.anomaly_map else (None, None)
        enhancer, ecard = load(params.enhancer_weights, "enhancer", device) if params.enhancer_weights else (None, None)
        if icard.get("synthesis_sha256") and icard["synthesis_sha256"] != dcard.get("sha256"):
            warnings.append("the identifier was trained on the syntheses of other diffusion weights "
                            f"({icard.get('synthesis_weights')}); its BBB status may not mean much with these")
        size = int(params.size or dcard["size"])
        if size != dcard["size"]:
            warnings.append(f"network size {size} differs from the {dcard['size']} the synthesis weights were "
                            "trained at; results may degrade")
    with timer("preprocessing"):
        report_progress(0.05, "normalising and resampling the slices")
        t1_shape = list(t1_data.shape)
        n_t1 = normalise(t1_data, brain, "t1")
        del t1_data, t1_grid  # a float32 copy unless the T1 was float32 already: n_t1 is what is used from here
        n_flair = normalise(flair_data, brain, "flair")
        voxel_ml = float(np.prod(t1.voxel_sizes[:3]) / 1000.0)
        # the FLAIR abnormality (the segmented tumor's plausibility) is all the ROI needs of the FLAIR's float32
        # copy: measured here, so that the copy goes now instead of after the synthesis (issue 17)
        flair_ml = flair_abnormality_ml(flair_data, brain, voxel_ml) if user_tumor is None else None
        del flair_data
        release_freed_memory()
        grid = SliceGrid.around(brain, t1.affine, size)
        net_t1, net_flair = grid.to_network(n_t1, -1.0), grid.to_network(n_flair, -1.0)
    with timer("synthesis"), torch.inference_mode():
        cond = torch.as_tensor(np.stack([net_t1, net_flair], 1))
        samples, segs = [], []
        for k in range(params.samples):  # the same seed -> the same first sample, whatever ``samples`` is
            span = 0.62 / params.samples
            out, seg_k = sample_both_labels(diffusion, cond, params.steps, params.seed + k, params.chunk_slices, device,
                                            progress=lambda f, m, k=k: report_progress(0.08 + span * (k + f), m))
            samples.append(out)
            segs.append(seg_k)
        samples = np.stack(samples)  # (K, 2, n, H, W)
        synth, seg = samples[0], np.mean(segs, axis=0)
        del cond, segs  # the stacked network inputs and the per-sample segmentations (issue 17)
    with timer("identification"):
        report_progress(0.72, "deciding the BBB status")
        # the maps are kept as their brain voxels' values (MapVolumes, issue 17): every map is 0 off the brain
        tumor_probability = np.clip(grid.to_native_values(seg, brain), 0, 1).astype(np.float32)
        del seg
        roi_info = choose_roi(user_tumor, tumor_probability, None, brain, voxel_ml, params.segmentation_threshold,
                              params.min_tumor_ml, flair_ml=flair_ml)
        roi = roi_info.mask
        net_roi = grid.to_network(roi.astype(np.float32))
        rows = np.flatnonzero(net_roi.reshape(len(net_roi), -1).max(axis=1) >= 0.25)
        if rows.size == 0:  # a ROI thinner than a network pixel: its nearest slices
            rows = np.unique(np.searchsorted(grid.slices, np.flatnonzero(roi.any(axis=grid.axes[:2]))))
            rows = rows[rows < len(grid.slices)]
        with torch.inference_mode():
            plus = slice_scores(identifier, net_t1[rows], net_flair[rows], synth[1, rows], net_roi[rows], device=device)
            minus = slice_scores(identifier, net_t1[rows], net_flair[rows], synth[0, rows], net_roi[rows], device=device)
        status = contrastive_maximum(plus, minus, params.slice_threshold,
                                     identifier.calibration.cpu().numpy().tolist(), params.indeterminate_band)
        status.temper(roi_info.weight, f"segmentation weight {roi_info.weight:.2f} (confidence and volume)")
        if params.status_evidence == "real":  # phantom-calibrated p, weighed by the record on real scans
            evidence = RealEvidence.from_card(icard)
            status.real_evidence = evidence.to_json()
            status.temper(evidence.weight, evidence.describe(), always_note=True)
        if roi_info.implausible:
            status.make_indeterminate(roi_info.implausible)
        bad = [c.name for c in applicability.checks if c.status != "ok" and "bbb_status" in c.affects]
        if bad:
            status.reasons.append("input outside the trained range (" + ", ".join(bad) + "): read with care")
        if status.call == "indeterminate":
            warnings.append(f"BBB status INDETERMINATE (p(disrupted) = {status.probability:.2f}): "
                            + "; ".join(status.reasons))
    release_freed_memory()
    with timer("back_to_native"):
        report_progress(0.78, "writing the syntheses back on the T1 grid")
        natives = {label: synthesis_brain_values(grid, synth[i], net_t1, n_t1, brain, params.detail_from_t1)
                   for i, label in ((1, "enhancing"), (0, "non_enhancing"))}
        estimate = None
        if enhancer is None:  # with the enhancer its maps replace these three: not made (3 full volumes, issue 17)
            estimate = estimate_enhancement(samples, net_t1, status.probability, params.effective_shrinkage)
            synthetic, added, spread = (v[brain] for v in native_synthesis(grid, estimate, from_unit(n_t1), brain))
    anomaly, anomaly_report = None, None
    release_freed_memory()
    if cae is not None:  # before the enhancer (issue 17): the full normalised FLAIR can go before the run's largest step
        with timer("anomaly"), torch.inference_mode():
            report_progress(0.8, "3D autoencoder anomaly map")
            anomaly_map, score, z = cae_mod.anomaly(cae, [n_t1, n_flair], brain, ccard["reshape"], device,
                                                        affine=t1.affine)
            anomaly = anomaly_map[brain]  # 0 off the brain (cae.to_native)
            del anomaly_map
            anomaly_report = {"patient_score": score, "patient_score_z": z,
                              "reference": ccard.get("score_reference", "the autoencoder's normal training cases"),
                              "note": "mean of the top 1 % voxel residuals; z against the normal reference of the "
                                      "weights' model card. Validation: the voxel map separates tumor from brain, the "
                                      "patient z does not separate gliomas from unseen normal brains (docs/validation.md)"}
    enhancer_maps = None
    if enhancer is not None:
        with timer("enhancer"):
            from .enhancer import feature_box, predict_maps

            report_progress(0.85, "predicting the enhancement")
            # only the brain's box (+4 voxels) is read by the features: the 0-255 images of that box, not of the grid
            box = feature_box(brain)
            t1_box, flair_box = from_unit(n_t1[box]), from_unit(n_flair[box])
            # the synthetic T1Gd's base: the T1 at the brain's voxels on the 0-255 scale (from_unit is per voxel)
            synthetic = from_unit(n_t1[brain])
            del n_flair, n_t1  # the full normalised volumes (2 x 1x the T1 grid) go before the run's largest step
            release_freed_memory()  # the syntheses', the ROI's and the FLAIR's freed blocks, before the largest step
            on_box = predict_maps(enhancer.cpu(), t1_box, flair_box, brain[box], t1.voxel_sizes,
                                  params.shrinkage)  # None: the rule in the weights' card
            del t1_box, flair_box
            enhancer_maps = BrainMaps(brain, on_box.brain_values)  # the same values: the box keeps the C order
            added, spread = enhancer_maps.brain_values["added"], enhancer_maps.brain_values["uncertainty"]
            # np.where(brain, clip(T1 + added, 0, 255), 0) at the brain's voxels: the same float32 arithmetic
            synthetic += added
            np.clip(synthetic, 0.0, 255.0, out=synthetic)
        # the syntheses' enhancement estimate (the result's extras; the maps are the enhancer's), made after its peak
        estimate = estimate_enhancement(samples, net_t1, status.probability, params.effective_shrinkage)
    values = {"synthetic_t1gd": synthetic, "enhancement": added, "enhancement_uncertainty": spread}
    if anomaly is not None:
        values["anomaly"] = anomaly
    if enhancer_maps is not None:
        values["enhancement_probability"] = enhancer_maps.brain_values["enhancing_score"]
    values["tumor_probability"] = tumor_probability
    values["synthetic_t1gd_enhancing"] = natives["enhancing"]
    values["synthetic_t1gd_non_enhancing"] = natives["non_enhancing"]
    maps = MapVolumes(brain, t1.affine, values)
    post_operative_block, post_checks, post_reasons = post_operative_report(post_operative, brain, added, roi)
    applicability.checks.extend(post_checks)
    warnings.extend(c.message for c in post_checks if c.status == "warning")
    status.reasons.extend(post_reasons)

    bbb = dict(status.to_json(), **roi_info.to_json(), low_confidence=status.call == "indeterminate")
    in_roi = roi[brain]  # the ROI is inside the brain: v[roi] of a full map is v_brain[in_roi], in the same order
    summary = {"brain": {n: summarise(v) for n, v in values.items()},
               "tumor_roi": {n: summarise(v[in_roi]) for n, v in values.items()},
               "enhancement_ml": float((added > 0).sum() * voxel_ml)}
    if "anomaly" in values and (~in_roi).any():
        summary["anomaly_tumor_to_rest"] = float(values["anomaly"][in_roi].mean() / max(values["anomaly"][~in_roi].mean(), 1e-9))
    cards = {"synthesis": dcard, "identifier": icard, "cae": ccard, "enhancer": ecard}
    report = {
        "pipeline": "t1flair",
        "input": {"t1_shape": t1_shape, "flair_shape": list(np.shape(flair.data)),
                  "voxel_mm": t1.voxel_sizes.tolist(), "brain_voxels": int(brain.sum()),
                  "network_slices": int(len(grid.slices)), "network_size": size},
        "parameters": params.to_json(),
        "versions": versions(),
        "device": str(device),
        "bbb_status": bbb,
        "applicability": applicability.to_json(),
        "post_operative": post_operative_block,
        "registration": registration_report,
        "bias_field": bias_report,
        "anomaly": anomaly_report,
        "weights": {k: {"name": c.get("name"), "sha256": c.get("sha256"), "trained_on": c.get("trained_on")}
                    for k, c in cards.items() if c is not None},
        "maps": {name: {"unit": MAP_INFO[name][0], "description": MAP_INFO[name][1]} for name in maps},
        "summary": summary,
        "timings_s": timer.seconds,
        "warnings": warnings,
        "disclaimer": "demonstration models trained on simulated phantoms unless other weights were given; "
                      "not a clinical device",
    }
    report_progress(1.0, "done")
    extras = {"status": status, "grid": grid, "synthesis": synth, "samples": samples, "enhancement": estimate,
              "network_roi": net_roi, "network_t1": net_t1, "network_flair": net_flair, "identifier": identifier,
              "device": device, "enhancer_maps": enhancer_maps}
    return T1FlairResult(maps, brain, roi, report, extras=extras)


def synthesis_on_native_grid(grid: SliceGrid, synthesis: np.ndarray, network_t1: np.ndarray, native_t1: np.ndarray,
                             brain: np.ndarray, detail_from_t1: bool = True) -> np.ndarray:
    """A network-grid synthesis ([-1, 1]) as a native-grid map on the 0-255 scale.

    detail_from_t1: the synthesis's *change* from the T1 (both at network resolution) is brought to
    the native grid and added to the native-resolution normalised T1 (T1 and T1Gd share the seed's
    normalisation constants), so anatomy keeps the T1's detail instead of the network's 48-128 px;
    otherwise the synthesis itself is interpolated (blurred by the resampling)."""
    brain = np.asarray(brain, bool)
    out = np.zeros(brain.shape, np.float32)
    out[brain] = synthesis_brain_values(grid, synthesis, network_t1, native_t1, brain, detail_from_t1)
    return out


def synthesis_brain_values(grid: SliceGrid, synthesis: np.ndarray, network_t1: np.ndarray, native_t1: np.ndarray,
                           brain: np.ndarray, detail_from_t1: bool = True) -> np.ndarray:
    """:func:`synthesis_on_native_grid` at the brain's voxels (C order; the map is 0 elsewhere): the same float32
    operations voxel by voxel, without the native grid's full temporaries (issue 17)."""
    brain = np.asarray(brain, bool)
    if detail_from_t1:
        change = from_unit(synthesis) - from_unit(network_t1)
        native = grid.to_native_values(change, brain, fill=0.0)
        del change
        native += from_unit(np.asarray(native_t1)[brain])  # T1 + change: float addition is commutative
    else:
        native = from_unit(np.clip(grid.to_native_values(synthesis, brain, fill=-1.0), -1, 1))
    return np.clip(native, 0.0, 255.0, out=native)

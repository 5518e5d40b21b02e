"""Is this DWI like what the diffusion anomaly weights were trained on? (applicability checks)

The bundled dmri-* weights were trained on healthy diffusion phantoms at 2.5 mm isotropic covering
the whole brain (b = 1000, 32-64 directions), on a 4 mm model grid. The b-value, the shell and the
number of directions are already refused, rescaled or (6-14 directions: through a tensor, with a
warning) resampled by :mod:`.preprocessing`; here: voxel size
(slice thickness, in-plane), coverage (brain extent and slices) and which model was chosen (the VAE
has no usable label-free operating point, docs/validation.md). Same report block as the structural
checks (:class:`BBBAnomalyLib.structural.applicability.Applicability`).
"""

from __future__ import annotations

import numpy as np

from ..structural.applicability import Applicability, Check

MAPS = ("anomaly", "anomaly_mask")
#: Coarser than the model's 4 mm grid, or a brain shorter than this, is outside the training.
WARN_VOXEL_MM, WARN_EXTENT_MM, WARN_SLICES = 4.0, 90.0, 20


#: The analysed brain's median apparent diffusivity (from the direction-averaged S/S0 at b = 1000, µm²/ms): healthy
#: adult parenchyma 0.7-0.9; the phantoms (patients 1000, 1001, 3000, healthy 4000; SNR 10-40) and dipy's real crop
#: 0.78-0.83. Outside: the b0 scaled unlike the diffusion-weighted volumes (per-volume rescale slopes not applied:
#: b0 x 1.25 reads 1.00-1.04 and doubled RecDiscNet's anomaly volume, x 0.8 reads 0.56-0.59 and halved it), a wrong
#: b-value, or a brain unlike the training.
ADC_RANGE_UM2_MS = (0.65, 0.95)


def check_dwi_input(affine: np.ndarray, brain: np.ndarray, model_kind: str, threshold: str,
                    median_adc: float | None = None, mask: np.ndarray | None = None) -> Applicability:
    """``median_adc``: the analysed brain's median apparent diffusivity, µm²/ms; ``mask``: the brain mask before
    the erosion, for the field-of-view check (the eroded brain never reaches the array's edge). None: not checked."""
    vox = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    directions = np.abs(np.asarray(affine)[:3, :3] / vox)
    axis = int(np.argmax(directions[2]))  # the voxel axis closest to superior-inferior
    thickness, in_plane = float(vox[axis]), float(max(v for i, v in enumerate(vox) if i != axis))
    result = Applicability(map_names=MAPS, trained_on="healthy diffusion phantoms, whole brain at 2.5 mm isotropic "
                                                      "(model grid 4 mm), b = 1000, 32-64 directions")
    add = result.checks.append
    for name, value, label in (("slice_thickness", thickness, "slice thickness"), ("in_plane_spacing", in_plane,
                                                                                    "in-plane spacing")):
        ok = value <= WARN_VOXEL_MM
        add(Check(name, value, "mm", "2-2.5 mm (model grid 4 mm)", "ok" if ok else "warning", MAPS,
                  "" if ok else f"{label} {value:.1f} mm is coarser than the diffusion model's 4 mm grid (trained on "
                  "2.5 mm): partial volume mixes tissues the model learned apart; 2-2.5 mm voxels would be in range"))
    slices = np.flatnonzero(brain.any(axis=tuple(i for i in range(3) if i != axis)))
    extent = float((slices.max() - slices.min() + 1) * thickness) if slices.size else 0.0
    ok = extent >= WARN_EXTENT_MM and slices.size >= WARN_SLICES
    add(Check("coverage", extent, "mm", "whole brain (>= 90 mm, >= 20 slices)", "ok" if ok else "warning", MAPS,
              "" if ok else f"the analysed brain spans {extent:.0f} mm in {slices.size} slices: partial coverage; the "
              "models and the label-free thresholds (Otsu, mean-pool) assume a whole brain"))
    if mask is not None:
        # a brain cut by the field of view (the top 20 % missing, 120 mm left: inside the coverage check) moved the
        # maps (RecDiscNet r 0.93, the VAE's r 0.71 with the whole brain's run): the grid is centred on the brain
        # it sees. The structural pipeline's rule (session 19): an outermost slice holding >= 25 % of the brain's
        # largest cross-section
        from ..structural.applicability import FOV_CUT_FRACTION, field_of_view_cut

        cut, side = field_of_view_cut(mask, affine)
        ok = cut < FOV_CUT_FRACTION
        add(Check("field_of_view", round(float(cut), 3), "fraction of the brain's largest cross-section in an "
                  "outermost slice", f"< {FOV_CUT_FRACTION:g} (whole brains)", "ok" if ok else "warning", MAPS,
                  "" if ok else f"the brain is cut by the field of view: the outermost {side} slice still holds "
                  f"{100 * cut:.0f} % of the brain's largest cross-section, so part of the brain is missing. The "
                  "models centre their grid on the brain they see and were trained on whole brains: the anomaly map "
                  "is outside the trained range; a field of view covering the whole brain would be within it"))
    if median_adc is not None:
        low, high = ADC_RANGE_UM2_MS
        ok = low <= median_adc <= high
        add(Check("diffusivity", round(float(median_adc), 3), "µm²/ms",
                  f"median {low:g}-{high:g} (phantoms 0.78-0.83)",
                  "ok" if ok else "warning", MAPS,
                  "" if ok else f"the brain's median apparent diffusivity is {median_adc:.2f} µm²/ms (healthy adult "
                  f"parenchyma 0.7-0.9; the models were trained at 0.78-0.83): is the b0 scaled unlike the "
                  "diffusion-weighted volumes (per-volume rescale slopes not applied by the converter), or a b-value "
                  "wrong? The models read S/S0 as it is, so a global shift moves the whole anomaly map; convert the "
                  "series again with its scale factors applied, or check the bval file"))
    usable = model_kind != "vae"
    add(Check("model", model_kind, "", "recdisc (the VAE has no usable operating point)", "ok" if usable else "warning",
              MAPS, "" if usable else f"the VAE is a research option, not a usable detector: on held-apart phantom "
              f"patients its voxel AUC is 0.64-0.71 and no label-free threshold finds the tumor core while flagging "
              f"little healthy tissue (dmri-vae-phantom's fixed threshold flags nothing; dmri-vae-population's, set "
              f"to flag 1 % of healthy brains, finds 7 % of the core and flags 35 % of a real healthy crop; "
              f"docs/validation.md); threshold '{threshold}' was used. RecDiscNet (the default) is the usable model"))
    return result

"""Is this DWI like what the diffusion anomaly weights were trained on? (applicability checks)

The bundled dmri-* weights were trained on healthy diffusion phantoms at 2.5 mm isotropic covering
the whole brain (b = 1000, 32-64 directions), on a 4 mm model grid. The b-value, the shell and the
number of directions are already refused or rescaled by :mod:`.preprocessing`; here: voxel size
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


def check_dwi_input(affine: np.ndarray, brain: np.ndarray, model_kind: str, threshold: str) -> Applicability:
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
    usable = model_kind != "vae"
    add(Check("model", model_kind, "", "recdisc (the VAE has no usable operating point)", "ok" if usable else "warning",
              MAPS, "" if usable else f"the VAE is a research option, not a usable detector: on held-apart phantom "
              f"patients its voxel AUC is 0.64-0.71 and no label-free threshold finds the tumor core while flagging "
              f"little healthy tissue (dmri-vae-phantom's fixed threshold flags nothing; dmri-vae-population's, set "
              f"to flag 1 % of healthy brains, finds 7 % of the core and flags 35 % of a real healthy crop; "
              f"docs/validation.md); threshold '{threshold}' was used. RecDiscNet (the default) is the usable model"))
    return result

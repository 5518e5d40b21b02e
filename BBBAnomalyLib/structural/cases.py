"""Reading training cases in BraTS layout and turning them into network inputs.

A case folder holds one file per contrast, recognised by a token of its name (split at - _ .):
T1 ``t1n`` or ``t1``; FLAIR ``t2f``, ``flair`` or ``fla``; T1Gd ``t1c``, ``t1gd`` or ``t1ce``;
segmentation ``seg``; optional brain mask ``brain`` or ``mask``. This covers BraTS 2023
(``-t1n``, ``-t2f``, ``-t1c``, ``-seg``), BraTS 2017-2021 (``_t1``, ``_flair``, ``_t1ce``,
``_seg``) and the TCGA examples (``_t1_bet``, ``_fla_bet``, ``_t1c_bet``, ``_seg_fusion``).

The ET label is derived from the segmentation: enhancing tumor is label 4 in BraTS 2017-2021 and
label 3 in BraTS 2023 (label 3 is unused in the older convention, so a label 4 means the old
one, a label 3 without 4 the new one). A case is "enhancing" (disrupted BBB) with at least
``MIN_ENHANCING_VOXELS`` enhancing voxels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.errors import InputError
from ..core.volume import Volume
from .normalisation import normalise
from .preprocessing import SliceGrid, automatic_brain_mask, flair_on_t1_grid

TOKENS = {"t1": ("t1n", "t1"), "flair": ("t2f", "flair", "fla"), "t1gd": ("t1c", "t1gd", "t1ce"),
          "seg": ("seg",), "brain": ("brain", "mask")}
MIN_ENHANCING_VOXELS = 10


def find_case_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        name = path.name
        if not re.search(r"\.(nii(\.gz)?|nrrd)$", name):
            continue
        tokens = set(re.split(r"[-_.]", name.lower()))
        for role, names in TOKENS.items():
            if role not in found and tokens & set(names):
                found[role] = path
                break
    return found


def _is_case(folder: Path) -> bool:
    return {"t1", "flair"} <= set(find_case_files(folder))


def case_folders(cases: str | Path) -> list[Path]:
    """The case folders under ``cases``, or ``[cases]`` when it is a case folder itself."""
    root = Path(cases)
    if root.is_dir() and _is_case(root):
        return [root]
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    folders = [f for f in folders if _is_case(f)]
    if not folders:
        raise InputError(f"{root} is not a case folder and holds none with a T1 (t1n/t1) and a FLAIR (t2f/flair) "
                         "file; see `bbbanomaly train t1gd-diffusion --help` for the layout")
    return folders


def enhancing_label(seg: np.ndarray) -> int | None:
    """The enhancing-tumor label of a BraTS segmentation (4: 2017-2021, 3: 2023), None if neither."""
    labels = set(np.unique(seg).astype(int).tolist())
    return 4 if 4 in labels else (3 if 3 in labels else None)


def et_label(seg: np.ndarray) -> int:
    lab = enhancing_label(seg)
    return int(lab is not None and int((seg == lab).sum()) >= MIN_ENHANCING_VOXELS)


def _on_grid(vol: Volume, ref: Volume, order: int) -> np.ndarray:
    data = vol.data[..., 0] if vol.data.ndim == 4 else vol.data
    if ref.same_grid(Volume(data, vol.affine)):
        return np.asarray(data)
    m = np.linalg.inv(vol.affine) @ ref.affine
    return ndimage.affine_transform(np.asarray(data, np.float32), m[:3, :3], m[:3, 3], output_shape=ref.spatial_shape,
                                    order=order, mode="constant", cval=0.0)


@dataclass
class Case:
    name: str
    t1: np.ndarray  # (n, size, size) on [-1, 1]
    flair: np.ndarray
    t1gd: np.ndarray | None
    tumor: np.ndarray | None  # (n, size, size) {0, 1} whole tumor
    et: int | None
    volumes: dict  # native [-1, 1] volumes, brain and tumor masks, voxel spacing: for the 3D autoencoder


def load_case(folder: Path, size: int, need_t1gd: bool = True) -> Case:
    from ..io import read_mask, read_volume

    files = find_case_files(folder)
    if need_t1gd and "t1gd" not in files:
        raise InputError(f"case {folder} has no T1Gd (t1c) file")
    t1 = read_volume(files["t1"])
    warnings: list[str] = []
    flair = flair_on_t1_grid(t1, read_volume(files["flair"]), warnings)
    brain = (read_mask(files["brain"], t1, "brain") if "brain" in files
             else automatic_brain_mask(t1.data, flair, warnings))
    grid = SliceGrid.around(brain, t1.affine, size)
    n_t1, n_flair = normalise(t1.data, brain, "t1"), normalise(flair, brain, "flair")
    t1gd = tumor = et = None
    seg = None
    if "t1gd" in files:
        t1gd_native = _on_grid(read_volume(files["t1gd"]), t1, order=1)
        t1gd = grid.to_network(normalise(t1gd_native, brain, "t1gd"), -1.0)
    if "seg" in files:
        seg = _on_grid(read_volume(files["seg"]), t1, order=0)
        et = et_label(seg)
        tumor = (grid.to_network((seg > 0).astype(np.float32)) >= 0.5).astype(np.float32)
    return Case(folder.name, grid.to_network(n_t1, -1.0), grid.to_network(n_flair, -1.0), t1gd, tumor, et,
                {"t1": n_t1, "flair": n_flair, "brain": brain, "spacing": t1.voxel_sizes,
                 "tumor": None if seg is None else seg > 0,
                 "has_tumor": seg is not None and bool(np.any(seg > 0))})

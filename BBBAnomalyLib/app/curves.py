"""The curves behind the maps: measured and model curves of every analysed voxel.

A pipeline's result exports a :class:`CurveSet` (``result.curves()``); the worker saves it next
to the maps (``curves.npz``) so that the Slicer panel can plot the mean curve of any segment,
or the curve of a clicked voxel, after the run has finished, without the model in memory.
The panel's worker writes them as a folder of raw float32 ``.npy`` arrays (:meth:`CurveSet.save_arrays`,
after the maps are on screen:
no conversion, no compression, read lazily through a memory map: a click reads one voxel's rows);
``curves.npz`` (:meth:`CurveSet.save`, float16) is the compact form for files a user keeps.

``measured`` are the curves the model saw, in its own units (ΔR2* for DSC, concentration or
signal enhancement for DCE); ``fitted`` holds one array per model curve ("oSVD fit",
"Tofts fit", "RLS reconstruction"); ``reference`` holds whole-image curves such as the AIF.
In ``curves.npz`` arrays are stored as float16 to keep a whole brain at ~60 MB for 60 frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class CurveSet:
    times: np.ndarray  # (T,) seconds
    mask: np.ndarray  # (x, y, z) bool: the voxels whose curves are kept, in C order of np.nonzero
    measured: np.ndarray  # (n_voxels, T)
    unit: str  # y-axis label, e.g. "ΔR2* (1/s)"
    fitted: dict[str, np.ndarray] = field(default_factory=dict)  # label -> (n_voxels, T)
    reference: dict[str, np.ndarray] = field(default_factory=dict)  # label -> (T,), e.g. {"AIF": ...}

    def __post_init__(self):
        self.mask = np.asarray(self.mask, bool)
        n = int(self.mask.sum())
        for label, arr in {"measured": self.measured, **self.fitted}.items():
            if arr.shape != (n, self.times.size):
                raise ValueError(f"curves {label!r} have shape {arr.shape}, expected ({n}, {self.times.size})")

    def _rows(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, bool)
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the curve grid {self.mask.shape}")
        return mask[self.mask]  # rows of the kept voxels that fall in ``mask``

    def mean(self, mask: np.ndarray) -> dict[str, np.ndarray] | None:
        """{"measured": mean curve, <fitted label>: mean model curve, ...} over the kept voxels in
        ``mask``; None when no kept voxel lies in it."""
        rows = self._rows(mask)
        if not rows.any():
            return None
        out = {"measured": self.measured[rows].astype(np.float64).mean(axis=0)}
        out.update({label: arr[rows].astype(np.float64).mean(axis=0) for label, arr in self.fitted.items()})
        return out

    def voxel(self, ijk) -> dict[str, np.ndarray] | None:
        """The curves of one voxel (i, j, k); None when it was not analysed."""
        ijk = tuple(int(v) for v in ijk)
        if any(not 0 <= v < s for v, s in zip(ijk, self.mask.shape)) or not self.mask[ijk]:
            return None
        single = np.zeros(self.mask.shape, bool)
        single[ijk] = True
        return self.mean(single)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {"times": self.times.astype(np.float64), "mask": np.packbits(self.mask.ravel()),
                  "shape": np.array(self.mask.shape), "measured": self.measured.astype(np.float16),
                  "unit": np.array(self.unit)}
        for i, (label, arr) in enumerate(self.fitted.items()):
            arrays[f"fitted_{i}"] = arr.astype(np.float16)
            arrays[f"fitted_{i}_label"] = np.array(label)
        for i, (label, arr) in enumerate(self.reference.items()):
            arrays[f"reference_{i}"] = np.asarray(arr, np.float64)
            arrays[f"reference_{i}_label"] = np.array(label)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    def save_arrays(self, folder: str | Path) -> Path:
        """The curves as a folder: ``measured.npy`` and ``fitted_<i>.npy`` (float32, as computed),
        ``mask.npy`` and ``curves.json`` (times, unit, labels, reference curves)."""
        folder = Path(folder)
        folder.mkdir(exist_ok=True)
        np.save(folder / "measured.npy", np.asarray(self.measured, np.float32))
        np.save(folder / "mask.npy", self.mask)
        for i, arr in enumerate(self.fitted.values()):
            np.save(folder / f"fitted_{i}.npy", np.asarray(arr, np.float32))
        meta = {"times": np.asarray(self.times, np.float64).tolist(), "unit": self.unit,
                "fitted": list(self.fitted),
                "reference": {label: np.asarray(arr, np.float64).tolist() for label, arr in self.reference.items()}}
        with open(folder / "curves.json", "w", encoding="utf-8") as fh:
            json.dump(meta, fh)
        return folder

    @classmethod
    def load(cls, path: str | Path) -> "CurveSet":
        """From ``curves.npz`` or a folder written by :meth:`save_arrays` (memory-mapped: nothing
        but the mask is read until a curve is asked for)."""
        path = Path(path)
        if path.is_dir():
            with open(path / "curves.json", encoding="utf-8") as fh:
                meta = json.load(fh)
            fitted = {label: np.load(path / f"fitted_{i}.npy", mmap_mode="r") for i, label in enumerate(meta["fitted"])}
            reference = {label: np.asarray(arr, np.float64) for label, arr in meta["reference"].items()}
            return cls(np.asarray(meta["times"], np.float64), np.load(path / "mask.npy"),
                       np.load(path / "measured.npy", mmap_mode="r"), meta["unit"], fitted, reference)
        with np.load(path, allow_pickle=False) as z:
            shape = tuple(int(v) for v in z["shape"])
            mask = np.unpackbits(z["mask"], count=int(np.prod(shape))).astype(bool).reshape(shape)
            fitted = {str(z[f"fitted_{i}_label"]): z[f"fitted_{i}"] for i in range(len(z.files)) if f"fitted_{i}" in z}
            reference = {str(z[f"reference_{i}_label"]): z[f"reference_{i}"]
                         for i in range(len(z.files)) if f"reference_{i}" in z}
            return cls(z["times"], mask, z["measured"], str(z["unit"]), fitted, reference)


def curves_in(output_dir: str | Path) -> Path | None:
    """The curves of a run: ``curves.npz`` in its output folder, or the panel's ``<output>.curves``
    folder beside it (see :func:`BBBAnomalyLib.app.jobs.curves_dir`); None when the run kept none."""
    out = Path(output_dir)
    for path in (out / "curves.npz", out.with_name(out.name + ".curves")):
        if path.exists():
            return path
    return None

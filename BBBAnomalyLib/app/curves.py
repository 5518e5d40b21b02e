"""The curves behind the maps: measured and model curves of every analysed voxel.

A pipeline's result exports a :class:`CurveSet` (``result.curves()``); the worker saves it next
to the maps (``curves.npz``) so that the Slicer panel can plot the mean curve of any segment,
or the curve of a clicked voxel, after the run has finished, without the model in memory.

``measured`` are the curves the model saw, in its own units (ΔR2* for DSC, concentration or
signal enhancement for DCE); ``fitted`` holds one array per model curve ("oSVD fit",
"Tofts fit", "RLS reconstruction"); ``reference`` holds whole-image curves such as the AIF.
Arrays are stored as float16 on disk to keep a whole brain at ~60 MB for 60 frames.
"""

from __future__ import annotations

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

    @classmethod
    def load(cls, path: str | Path) -> "CurveSet":
        with np.load(path, allow_pickle=False) as z:
            shape = tuple(int(v) for v in z["shape"])
            mask = np.unpackbits(z["mask"], count=int(np.prod(shape))).astype(bool).reshape(shape)
            fitted = {str(z[f"fitted_{i}_label"]): z[f"fitted_{i}"] for i in range(len(z.files)) if f"fitted_{i}" in z}
            reference = {str(z[f"reference_{i}_label"]): z[f"reference_{i}"]
                         for i in range(len(z.files)) if f"reference_{i}" in z}
            return cls(z["times"], mask, z["measured"], str(z["unit"]), fitted, reference)

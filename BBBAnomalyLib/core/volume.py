"""`Volume`: an image array with its RAS geometry, frame times and acquisition metadata.

Arrays are (x, y, z[, t]) in the nibabel sense and ``affine`` maps voxel indices (i, j, k) to
RAS millimetres. Frame times are in seconds from the first frame (or from injection, whatever
the file says). Acquisition metadata uses SI units: TE and TR in seconds, flip angle in degrees,
b-values in s/mm^2. Readers and writers live in :mod:`BBBAnomalyLib.io`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

#: Tolerance (mm) for deciding that two volumes share a voxel grid.
GRID_TOLERANCE_MM = 1e-3


@dataclass
class Acquisition:
    """Acquisition parameters, all optional; SI units (seconds, degrees, s/mm^2)."""

    echo_time: float | None = None  # TE [s]; a second echo for dual-echo DSC lives in `echo_times`
    echo_times: tuple[float, ...] | None = None
    repetition_time: float | None = None  # TR [s]
    flip_angle: float | None = None  # [deg]
    field_strength: float | None = None  # [T]
    bvals: np.ndarray | None = None  # (n,) s/mm^2
    bvecs: np.ndarray | None = None  # (n, 3) unit vectors
    description: str = ""
    extra: dict = field(default_factory=dict)  # anything else worth keeping (JSON-serialisable)

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or (f.name in ("description", "extra") and not v):
                continue
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else (list(v) if isinstance(v, tuple) else v)
        return out


@dataclass
class Volume:
    """A 3D or 4D image on a RAS voxel grid.

    data:   ndarray (x, y, z) or (x, y, z, t); never modified in place by this package.
    affine: 4x4 voxel-index -> RAS-mm matrix.
    times:  (t,) frame times in seconds for 4D data, or None when unknown.
    acquisition: TE/TR/flip angle/b-values ... (see :class:`Acquisition`).
    """

    data: np.ndarray
    affine: np.ndarray
    times: np.ndarray | None = None
    acquisition: Acquisition = field(default_factory=Acquisition)

    def __post_init__(self):
        self.data = np.asarray(self.data)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got {self.affine.shape}")
        if self.data.ndim not in (3, 4):
            raise InputError(
                f"a Volume is 3D (x, y, z) or 4D (x, y, z, t); got an array of shape {self.data.shape}"
            )
        if self.times is not None:
            self.times = np.asarray(self.times, dtype=np.float64).ravel()
            if self.data.ndim != 4 or self.times.size != self.data.shape[3]:
                raise InputError(
                    f"{self.times.size} frame times given for data of shape {self.data.shape}; "
                    "give one time per frame (the 4th axis)"
                )

    # --- shape and geometry -------------------------------------------------------------
    @property
    def is_4d(self) -> bool:
        return self.data.ndim == 4

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[:3])

    @property
    def n_frames(self) -> int:
        return self.data.shape[3] if self.is_4d else 1

    @property
    def voxel_sizes(self) -> np.ndarray:
        """Voxel edge lengths in mm (column norms of the affine)."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def same_grid(self, other: "Volume", tol: float = GRID_TOLERANCE_MM) -> bool:
        """True when `other` has the same spatial shape and affine (within `tol` mm)."""
        return self.spatial_shape == other.spatial_shape and np.allclose(self.affine, other.affine, atol=tol)

    # --- derived volumes -----------------------------------------------------------------
    def with_data(self, data: np.ndarray, times: np.ndarray | None | str = "keep") -> "Volume":
        """A new Volume on the same grid with other data (3D map or 4D series)."""
        data = np.asarray(data)
        if data.shape[:3] != self.spatial_shape:
            raise ValueError(f"data shape {data.shape} does not match the grid {self.spatial_shape}")
        if isinstance(times, str):
            times = self.times if (data.ndim == 4 and self.is_4d and data.shape[3] == self.n_frames) else None
        return Volume(data, self.affine.copy(), times, dataclasses.replace(self.acquisition))

    def frame(self, index: int) -> "Volume":
        """One 3D frame of a 4D series."""
        if not self.is_4d:
            raise InputError("frame() needs a 4D volume")
        return Volume(self.data[..., index], self.affine.copy(), None, dataclasses.replace(self.acquisition))

    def frame_interval(self) -> float | None:
        """Median spacing of the frame times (s), or None without times."""
        if self.times is None or self.times.size < 2:
            return None
        return float(np.median(np.diff(self.times)))

    def __repr__(self) -> str:  # short: never print the array
        t = "" if self.times is None else f", {self.times.size} frames over {self.times[-1] - self.times[0]:.1f} s"
        vs = "x".join(f"{v:.3g}" for v in self.voxel_sizes)
        return f"Volume(shape={self.data.shape}, dtype={self.data.dtype}, voxel={vs} mm{t})"

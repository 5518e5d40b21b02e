"""`Volume`: an image array with its RAS geometry, frame times and acquisition metadata.

Arrays are (x, y, z[, t]) in the nibabel sense and ``affine`` maps voxel indices (i, j, k) to
RAS millimetres. Frame times are in seconds from the first frame (or from injection, whatever
the file says). Acquisition metadata uses SI units: TE and TR in seconds, flip angle in degrees,
b-values in s/mm^2. Readers and writers live in :mod:`BBBAnomalyLib.io`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator

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


#: ``Acquisition.extra`` key: what a reader had to say about the file that the run should say too (e.g. a DICOM
#: folder holding the same 3D series twice, read once). Readers append; every pipeline copies them into its report's
#: warnings (:func:`read_warnings`), since a reader has no report of its own.
READ_WARNINGS = "read_warnings"


def read_warnings(*volumes) -> list[str]:
    """The readers' warnings recorded on ``volumes`` (None and plain arrays skipped), each once, in order."""
    found: list[str] = []
    for volume in volumes:
        acquisition = getattr(volume, "acquisition", None)
        extra = getattr(acquisition, "extra", None) or {}
        for warning in extra.get(READ_WARNINGS) or ():
            if isinstance(warning, str) and warning not in found:
                found.append(warning)
    return found


class FrameSource:
    """A 4D series read from its file frame block by frame block instead of held in memory.

    ``shape`` (x, y, z, t) and ``dtype`` (of the arrays it returns) are known without reading
    any voxel. :meth:`read` returns frames [start, stop) as an (x, y, z, k) array; :meth:`load`
    the whole series. A :class:`Volume` given a FrameSource as its data reads it whole on the
    first access to ``.data`` (so every consumer works unchanged); a consumer that can work frame
    block by frame block reads :attr:`Volume.source` instead and never holds the whole series
    (the DSC pipeline gathers its voxels so: issue 17).
    """

    shape: tuple[int, int, int, int]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def load(self) -> np.ndarray:
        return self.read(0, self.shape[3])

    def blocks(self, max_bytes: int = 16 * 2**20, prefetch: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame, (x, y, z, k) frames) in order, k frames per block with k * frame size <=
        max_bytes (at least one frame), read once each. ``prefetch``: the next block is read on a
        background thread while the caller works on this one (decompression releases the GIL), so
        reading and the caller's work can overlap where a core is free; two blocks are then in
        memory at a time."""
        frames = self.shape[3]
        frame_bytes = max(self.nbytes // max(frames, 1), 1)
        k = int(min(max(max_bytes // frame_bytes, 1), frames))
        spans = [(start, min(start + k, frames)) for start in range(0, frames, k)]
        if not prefetch or len(spans) < 2:
            for start, stop in spans:
                yield start, self.read(start, stop)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self.read, *spans[0])
            for i, (start, _) in enumerate(spans):
                block = pending.result()
                if i + 1 < len(spans):
                    pending = pool.submit(self.read, *spans[i + 1])
                yield start, block
                del block


@dataclass
class Volume:
    """A 3D or 4D image on a RAS voxel grid.

    data:   ndarray (x, y, z) or (x, y, z, t); never modified in place by this package. May be
            given as a :class:`FrameSource` (a 4D file read lazily): then ``source`` holds it
            until the first access to ``data`` reads the series whole.
    affine: 4x4 voxel-index -> RAS-mm matrix.
    times:  (t,) frame times in seconds for 4D data, or None when unknown.
    acquisition: TE/TR/flip angle/b-values ... (see :class:`Acquisition`).
    """

    data: np.ndarray
    affine: np.ndarray
    times: np.ndarray | None = None
    acquisition: Acquisition = field(default_factory=Acquisition)

    def __post_init__(self):
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got {self.affine.shape}")
        if len(self.shape) not in (3, 4):
            raise InputError(
                f"a Volume is 3D (x, y, z) or 4D (x, y, z, t); got an array of shape {self.shape}"
            )
        if self.times is not None:
            self.times = np.asarray(self.times, dtype=np.float64).ravel()
            if len(self.shape) != 4 or self.times.size != self.shape[3]:
                raise InputError(
                    f"{self.times.size} frame times given for data of shape {self.shape}; "
                    "give one time per frame (the 4th axis)"
                )

    def __getstate__(self):  # a pickled Volume carries its voxels, not an open file
        state = dict(self.__dict__)
        state["_data"], state["_source"] = self.data, None
        return state

    # --- lazily read data ------------------------------------------------------------------
    @property
    def source(self) -> FrameSource | None:
        """The FrameSource the data will be read from, or None once in memory (or never lazy)."""
        return self.__dict__.get("_source")

    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape, without reading a lazily given series."""
        source = self.source
        return tuple(source.shape) if source is not None else tuple(self.__dict__["_data"].shape)

    @property
    def dtype(self) -> np.dtype:
        source = self.source
        return np.dtype(source.dtype) if source is not None else self.__dict__["_data"].dtype

    # --- shape and geometry -------------------------------------------------------------
    @property
    def is_4d(self) -> bool:
        return len(self.shape) == 4

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape[:3])

    @property
    def n_frames(self) -> int:
        return self.shape[3] if self.is_4d else 1

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

    def with_times(self, times: np.ndarray | None) -> "Volume":
        """The same data (still unread, when lazily given) with other frame times."""
        data = self.source if self.source is not None else self.data
        return Volume(data, self.affine, times, self.acquisition)

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
        return f"Volume(shape={self.shape}, dtype={self.dtype}, voxel={vs} mm{t})"


def _get_data(self) -> np.ndarray:
    source = self.__dict__.get("_source")
    if source is not None:  # the first access reads a lazily given series whole, once
        self.__dict__["_data"], self.__dict__["_source"] = np.asarray(source.load()), None
    return self.__dict__["_data"]


def _set_data(self, value) -> None:
    if isinstance(value, FrameSource):
        self.__dict__["_source"], self.__dict__["_data"] = value, None
    else:
        # None only where a caller opted to free the data (run_dsc(consume_input=True)).
        self.__dict__["_source"], self.__dict__["_data"] = None, (None if value is None else np.asarray(value))


# `data` is a dataclass field (the constructor's first argument) read and set through a property:
# a FrameSource stays unread until the data is used.
Volume.data = property(_get_data, _set_data, doc="The voxels, (x, y, z[, t]); reads a lazily given series whole.")

"""Head motion during a dynamic (DSC or DCE) series: detected frame by frame, and corrected on request.

Both pipelines read every frame at the same voxel, so a head that moves during the series mixes tissues into each
voxel's curve (a nod when the contrast arrives, a slow drift over a 5-min DCE). Here each frame is registered
rigidly to a reference frame (:func:`..core.registration.register_rigid`: Mattes mutual information, because the
contrast changes from frame to frame: the DSC T2* drop, the DCE enhancement of vessels and tumour), inside the
brain mask dilated by two voxels (the brain's edge carries most of the alignment information), and the frames that
moved are resampled onto the reference's voxels.

Reference: the first analysed frame (after the frames skipped before the T1 steady state), the pose the series starts
in; masks are drawn on the series, usually on its first or baseline frames. Cost: the full pyramid (:data:`SHRINK`),
about 0.8 s of one core per frame of a 128x128x20 DSC series (47 s for 60 frames); stopping at the coarse levels
was 2.5x cheaper but left a third of a millimetre of a known step. Hence 'none' (do not look) is the default.

What moves is reported as each frame's largest and mean displacement of a brain voxel from the reference (mm) and as
the framewise displacement of Power et al. 2012 (the sum of the six parameters' absolute changes from the previous
frame, rotations as arcs on a 50 mm sphere). A frame is warned about and resampled only where its largest
displacement exceeds half a voxel (:data:`MOVED_VOXEL_FRACTION`, above the registration's own error), so a still
series is left bit-identical.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..core.registration import MIN_AXIS_VOXELS, RigidFit, can_register, register_rigid

#: The choices of ``--motion-correct``: 'rigid' registers every frame and resamples those that moved, 'detect'
#: registers, reports and warns but leaves the frames as acquired, 'none' does not look (no cost; as before).
MODES = ("rigid", "detect", "none")
#: Pyramid of the registration, coarse to the grid itself: stopping at shrink 2 left 0.33-0.39 mm of a known 2 mm
#: step on the DSC object (the full pyramid 0.08-0.13 mm) at 0.4x the time (scripts/perfusion_motion.py).
SHRINK = (4, 2, 1)
SMOOTHING_MM = (2.0, 1.0, 0.0)
SAMPLING = 0.25
#: A frame counts as moved, is warned about and (with 'rigid') resampled where some brain voxel moved more than this
#: fraction of the smallest voxel size. Below it the registration's own error is as large as the motion: a still
#: DSC object read 0.04-0.23 mm, a still DCE object up to 0.65 mm (a third of its 2 mm voxel) once the contrast
#: arrived (the enhancement of grey matter, 3x its baseline at the peak, biases mutual information), and a frame
#: resampled for nothing changed its maps (DCE: GM Ktrans +45 %, WM +70 % with every frame realigned by that
#: bias). At half a voxel an edge voxel's signal is half its neighbour's (scripts/perfusion_motion.py).
MOVED_VOXEL_FRACTION = 0.5
#: Spline order of the resampling: cubic. Trilinear interpolation smooths the frames it resamples and not the
#: others, which the DSC object's small tissue signal drop could not bear (a 2 mm step at the bolus: GM CBF +38 %
#: after a trilinear correction, +14 % after a cubic one; rim CBF +11 % and +0.3 %). Its cost: cubic rings around a
#: small, very bright artery, and in one DCE run (a nod at the bolus) the automatic AIF then chose no artery, where a
#: trilinear correction kept it (session 21, docs/reliability.md).
RESAMPLE_ORDER = 3
#: The sphere radius (mm) on which Power et al. (2012) turn rotations into millimetres.
FD_RADIUS_MM = 50.0


@dataclass
class MotionEstimate:
    """Per frame: the rigid transform from the reference's voxels to the frame's (``fits[t]``), the largest and mean
    displacement of a brain voxel (mm), the framewise displacement (mm, 0 for the first frame), the frames resampled."""

    fits: list[RigidFit]
    max_displacement_mm: np.ndarray
    mean_displacement_mm: np.ndarray
    framewise_mm: np.ndarray
    reference_frame: int
    corrected: np.ndarray  # bool per frame
    mode: str
    seconds: float
    threshold_mm: float

    @property
    def largest(self) -> tuple[float, int]:
        frame = int(np.argmax(self.max_displacement_mm))
        return float(self.max_displacement_mm[frame]), frame

    def moved_frames(self) -> np.ndarray:
        return np.flatnonzero(self.max_displacement_mm > self.threshold_mm)

    def to_json(self, times=None) -> dict:
        largest, frame = self.largest
        out = {
            "mode": self.mode, "reference_frame": self.reference_frame,
            "max_displacement_mm": round(largest, 3), "max_displacement_frame": frame,
            "max_framewise_mm": round(float(self.framewise_mm.max()), 3),
            "mean_framewise_mm": round(float(self.framewise_mm.mean()), 3),
            "warning_threshold_mm": round(self.threshold_mm, 3),
            "frames_over_threshold": self.moved_frames().tolist(),
            "frames_resampled": np.flatnonzero(self.corrected).tolist(),
            "displacement_mm": [round(float(v), 3) for v in self.max_displacement_mm],
            "mean_displacement_mm": [round(float(v), 3) for v in self.mean_displacement_mm],
            "framewise_displacement_mm": [round(float(v), 3) for v in self.framewise_mm],
            "translation_mm": [[round(float(x), 3) for x in f.translation] for f in self.fits],
            "rotation_deg": [round(f.rotation_deg, 3) for f in self.fits],
            "seconds": round(self.seconds, 3),
        }
        if times is not None and frame < len(times):
            out["max_displacement_time_s"] = round(float(times[frame]), 3)
        return out


def framewise_displacement(fits: list[RigidFit]) -> np.ndarray:
    """Power et al. (2012): per frame the sum of the absolute changes of the three translations (mm) and of the
    three rotation angles (rad, times 50 mm) from the previous frame; the first frame 0. The translation is taken at
    the brain's centroid (the fits' common centre), as a realignment tool reports it about the volume's centre."""
    from scipy.spatial.transform import Rotation

    params = np.array([np.r_[f.translation, FD_RADIUS_MM * Rotation.from_matrix(f.rotation).as_euler("xyz")]
                       for f in fits])
    fd = np.zeros(len(fits))
    if len(fits) > 1:
        fd[1:] = np.abs(np.diff(params, axis=0)).sum(axis=1)
    return fd


def resample_frame(frame: np.ndarray, voxel_mm, fit: RigidFit, order: int | None = None) -> np.ndarray:
    """``frame`` read at the reference's voxels: out[x] = frame(T(x)), a spline of ``order`` (default
    :data:`RESAMPLE_ORDER`, cubic; float32). Unlike
    :func:`..core.registration.resample_rigid` (fill 0 outside), a point beyond the frame's edge takes the nearest
    edge voxel: a slab that moved through-plane would otherwise put zero signal into its end slices' curves (a zero
    in a DSC curve is an infinite ΔR2*)."""
    from scipy import ndimage

    v = np.asarray(voxel_mm, float)[:3]
    matrix = (fit.rotation * v[None, :]) / v[:, None]  # the same index-space map as resample_rigid
    offset = (fit.center + fit.translation - fit.rotation @ fit.center) / v
    order = RESAMPLE_ORDER if order is None else order
    return ndimage.affine_transform(np.asarray(frame, np.float32), matrix, offset, order=order, mode="nearest"
                                    ).astype(np.float32, copy=False)


def registration_mask(brain: np.ndarray) -> np.ndarray:
    """The brain dilated by two voxels: the metric then sees the brain's edge whichever way the frame moved."""
    from scipy import ndimage

    return ndimage.binary_dilation(brain, iterations=2)


def estimate_motion(read_frame, n_frames: int, voxel_mm, brain: np.ndarray, reference_frame: int = 0, *,
                    mode: str = "detect", shrink=SHRINK, smoothing_mm=SMOOTHING_MM, sampling: float = SAMPLING,
                    threads: int | None = None, on_frame=None) -> tuple[MotionEstimate, np.ndarray | None]:
    """Register every frame (``read_frame(t)`` -> 3D array, read in order after the reference) to frame
    ``reference_frame`` inside ``brain``.

    Returns (estimate, corrected): with ``mode='rigid'`` and some frame moved more than half a voxel, ``corrected``
    is the float32 (x, y, z, t) series with those frames resampled onto the reference and the others as read (a
    second pass over the frames: a still series costs no copy); else None (the series is used as it is).
    ``on_frame(t)`` is called after each frame's registration (progress, cancellation)."""
    if mode not in ("rigid", "detect"):
        raise ValueError(f"motion mode {mode!r} is not 'rigid' or 'detect'")
    start = time.perf_counter()
    voxel_mm = np.asarray(voxel_mm, float)[:3]
    brain = np.asarray(brain, bool)
    region = registration_mask(brain)
    reference = np.array(read_frame(reference_frame), np.float32)
    centre = np.argwhere(brain).mean(axis=0) * voxel_mm
    fits: list[RigidFit] = []
    maxima, means = np.zeros(n_frames), np.zeros(n_frames)
    threshold = MOVED_VOXEL_FRACTION * float(voxel_mm.min())
    for t in range(n_frames):
        if t == reference_frame:
            fit = RigidFit.identity(centre)
        else:
            fit = register_rigid(reference, np.asarray(read_frame(t), np.float32), voxel_mm, region, shrink=shrink,
                                 smoothing_mm=smoothing_mm, sampling=sampling, seed=1, threads=threads)
        fits.append(fit)
        displacement = fit.displacement_mm(brain, voxel_mm)
        maxima[t], means[t] = float(displacement.max()), float(displacement.mean())
        if on_frame is not None:
            on_frame(t)
    corrected = (maxima > threshold) if mode == "rigid" else np.zeros(n_frames, bool)
    corrected[reference_frame] = False
    estimate = MotionEstimate(fits, maxima, means, framewise_displacement(fits), int(reference_frame), corrected,
                              mode, 0.0, threshold)
    series = apply_motion(read_frame, n_frames, voxel_mm, estimate) if corrected.any() else None
    estimate.seconds = time.perf_counter() - start
    return estimate, series


def apply_motion(read_frame, n_frames: int, voxel_mm, estimate: MotionEstimate) -> np.ndarray:
    """Another series of the same acquisition (a dual-echo series' second echo) resampled with the first's
    transforms, where the first was (float32 (x, y, z, t))."""
    first = np.asarray(read_frame(0), np.float32)
    out = np.empty(first.shape + (n_frames,), np.float32)
    for t in range(n_frames):
        frame = first if t == 0 else np.asarray(read_frame(t), np.float32)
        out[..., t] = resample_frame(frame, voxel_mm, estimate.fits[t]) if estimate.corrected[t] else frame
    return out


def motion_warning(estimate: MotionEstimate, times=None) -> str | None:
    """One line naming the largest displacement and the frames over the threshold, or None."""
    moved = estimate.moved_frames()
    if moved.size == 0:
        return None
    largest, frame = estimate.largest
    when = f" (frame {frame}" + (f", {float(times[frame]):.1f} s)" if times is not None else ")")
    listed = _frame_ranges(moved)
    if estimate.mode == "rigid":
        action = ("the frames were realigned to it (--motion-correct rigid), which removed most but not all of the "
                  "error on the reference objects: the realigned frames are interpolated, tissue edges and a small "
                  "artery blur (CBV and vp stayed up to 20-60 % off after 1-4 mm), frames under half a voxel are left "
                  "as they are (a slow drift's early frames), and an automatic AIF chosen from realigned bolus frames "
                  "missed the artery twice (check aif_mask); treat the maps with caution, prefer a series without "
                  "motion")
    else:
        action = ("the maps were made WITHOUT correction (--motion-correct detect): every curve at a tissue edge mixes "
                  "tissues from then on (on the reference objects 1-2 mm moved CBF, CBV, Ktrans and vp by tens of "
                  "per cent to several-fold); rerun with --motion-correct rigid")
    return (f"head motion: a brain voxel moved {largest:.2f} mm from frame {estimate.reference_frame}'s position"
            f"{when}, more than half a voxel ({estimate.threshold_mm:.2f} mm) in frames {listed}; {action}")


def _frame_ranges(frames: np.ndarray) -> str:
    """'3-7, 12' for [3, 4, 5, 6, 7, 12]."""
    parts, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            parts.append(f"{start}" if f == start else f"{start}-{f}")
            start = None
    return ", ".join(parts)


def _frame_reader(volume):
    """t -> the 3D frame t of a Volume, read from its file when it was left there (never the whole series)."""
    source = volume.source
    if source is not None:
        return lambda t: source.read(t, t + 1)[..., 0]
    data = volume.data
    return lambda t: data[..., t]


def motion_step(series, brain: np.ndarray | None, mode: str, reference_frame: int, warnings: list[str], *,
                second_echo=None, kind: str = "signal", on_frame=None):
    """Detect (and with ``mode='rigid'`` correct) head motion in a 4D Volume: (series, second_echo, report entry).

    The Volumes returned are the inputs themselves where nothing was resampled (a still series stays bit-identical
    and, when left in its file, unread), else new in-memory float32 Volumes: the inputs are never modified.
    ``brain``: the analysed voxels (the user's mask); None: an Otsu mask of the reference frame. Concentration input
    (ΔR2* or mM) carries no anatomy before the bolus to register, so it is not looked at (the report says so)."""
    if mode not in MODES:
        from ..core.errors import InputError

        raise InputError(f"--motion-correct must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "none":
        return series, second_echo, {"mode": mode}
    if kind == "concentration":
        return series, second_echo, {"mode": mode, "skipped": "concentration input: no anatomy to register"}
    if not can_register(series.shape):
        warnings.append(f"head motion was not checked (--motion-correct {mode}): the series has "
                        f"{min(series.shape[:3])} voxels along an axis, and the registration needs at least "
                        f"{MIN_AXIS_VOXELS}")
        return series, second_echo, {"mode": mode, "skipped": f"fewer than {MIN_AXIS_VOXELS} voxels along an axis"}
    n_frames = series.shape[3]
    reference_frame = int(min(max(reference_frame, 0), n_frames - 1))
    read = _frame_reader(series)
    reference = np.asarray(read(reference_frame), np.float32)
    if brain is None:
        from ..dsc.validation import automatic_brain_mask

        brain = automatic_brain_mask(reference[..., None])
    voxel_mm = series.voxel_sizes
    estimate, corrected = estimate_motion(lambda t: reference if t == reference_frame else read(t), n_frames,
                                          voxel_mm, brain, reference_frame, mode=mode, on_frame=on_frame)
    report = estimate.to_json(series.times)
    line = motion_warning(estimate, series.times)
    if line:
        warnings.append(line)
    if corrected is None:
        return series, second_echo, report
    from ..core.volume import Volume

    moved = Volume(corrected, series.affine.copy(), series.times, series.acquisition)
    if second_echo is not None:
        second_echo = Volume(apply_motion(_frame_reader(second_echo), n_frames, voxel_mm, estimate),
                             second_echo.affine.copy(), second_echo.times, second_echo.acquisition)
    return moved, second_echo, report

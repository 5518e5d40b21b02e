"""Signal -> ΔR2*(t): bolus-arrival detection, baseline, single- and dual-echo conversion.

All functions work on a (n_voxels, n_frames) matrix of the voxels of interest, so a whole brain
is a handful of vectorised numpy operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.devices import map_blocks
from ..core.errors import InputError

#: Fraction of the peak drop of the mean curve that marks the bolus arrival.
ARRIVAL_FRACTION = 0.1
#: Lower bound on S/S0 before the logarithm (signal at or below the noise floor).
MIN_SIGNAL_RATIO = 1e-3


@dataclass
class Baseline:
    """Pre-bolus frames [first, stop) and the detected bolus-arrival frame."""

    first: int
    stop: int
    arrival: int
    detected: bool

    def to_json(self, times: np.ndarray) -> dict:
        return {
            "baseline_frames": [self.first, self.stop],
            "bolus_arrival_frame": self.arrival,
            "bolus_arrival_s": float(times[self.arrival]),
            "detected": self.detected,
        }


def detect_baseline(mean_curve: np.ndarray, skip_frames: int = 1, kind: str = "signal",
                    manual: tuple[int, int] | None = None, min_frames: int = 2) -> Baseline:
    """Find the pre-bolus baseline from the mean curve of the brain.

    The bolus arrival is the first frame, walking back from the peak, where the curve has moved
    less than 10 % of its peak excursion from the early baseline; the baseline ends one frame
    before it (one frame of margin against the leading edge). Working on the brain-mean curve
    makes this robust to noise; using a fixed frame count breaks on every protocol.
    """
    n = mean_curve.size
    if manual is not None:
        first, stop = manual
        if not (0 <= first < stop <= n) or stop - first < min_frames:
            raise InputError(
                f"baseline frames [{first}, {stop}) are not a valid range of at least {min_frames} "
                f"frames in a series of {n}"
            )
        return Baseline(first, stop, stop, detected=False)
    curve = np.asarray(mean_curve, dtype=np.float64)
    # Excursion from the early baseline: a signal drop, or a concentration rise.
    early = np.median(curve[skip_frames:skip_frames + max(3, n // 10)])
    excursion = (early - curve) if kind == "signal" else (curve - early)
    peak = int(np.argmax(excursion[skip_frames:])) + skip_frames
    if excursion[peak] <= 0:
        raise InputError("no contrast bolus found: the mean brain curve never departs from its baseline")
    below = np.nonzero(excursion[skip_frames:peak + 1] < ARRIVAL_FRACTION * excursion[peak])[0]
    arrival = (int(below[-1]) + 1 + skip_frames) if below.size else skip_frames
    stop = max(arrival - 1, skip_frames)
    if stop - skip_frames < min_frames:
        raise InputError(
            f"only {max(stop - skip_frames, 0)} pre-bolus frames lie between the {skip_frames} frames skipped at "
            f"the start and the bolus arrival detected at frame {arrival} (counting from 0); at least {min_frames} "
            "are needed to measure the baseline signal. Lower --skip-frames, or give the pre-bolus frames with "
            "--baseline-frames FIRST STOP (or acquire a longer baseline)"
        )
    return Baseline(skip_frames, stop, arrival, detected=True)


#: A leading frame whose brain-mean signal lies more than this fraction above the steady baseline after it (or 4
#: noise SDs of that baseline, if more) has not reached the T1 steady state. One such frame in a 10-frame baseline
#: raises S0 by a tenth of its excess, and ΔR2* by that over the whole series: 0.2 % moves GM CBV by about 10 %.
STEADY_STATE_TOLERANCE = 0.002


def steady_state_skip(mean_curve: np.ndarray, skip_frames: int = 1, min_frames: int = 2) -> int:
    """The frames to skip at the start of a signal series: ``skip_frames``, or more where the first frames have not
    reached the T1 steady state (brighter, decaying toward the baseline level).

    Why: scanners often store the first volumes before steady state (+5-60 % signal). Left in the baseline they raise
    S0 and shift every ΔR2* curve: on the reference object, first frames 1.3/1.1/1.03 x doubled GM CBV, and five such
    frames gave GM CBV 34.8 ml/100 g for a true 4.0, exit 0 (session 19's acquisition audit).

    A frame is skipped while it is brighter than each of the next three by more than the tolerance: the approach to
    steady state decays, a steady baseline does not, and the bolus only lowers the signal. The frames skipped must
    leave a baseline (:func:`detect_baseline`) of ``min_frames`` + 1 frames and lie above its median by the
    tolerance; else fewer are skipped. Only for a signal curve (dual-echo ratios cancel T1 effects)."""
    curve = np.asarray(mean_curve, dtype=np.float64)

    def tolerance(values: np.ndarray) -> float:
        steps = np.diff(values)
        noise = 1.4826 * float(np.median(np.abs(steps - np.median(steps)))) / np.sqrt(2.0) if steps.size > 1 else 0.0
        return max(4.0 * noise, STEADY_STATE_TOLERANCE * abs(float(np.median(values))))

    skip = skip_frames
    while skip + 4 <= curve.size and curve[skip] > curve[skip + 1:skip + 4].max() + tolerance(curve[skip + 1:]):
        skip += 1
    while skip > skip_frames:  # the frames left out must be brighter than the baseline they leave
        try:
            baseline = detect_baseline(curve, skip, "signal", min_frames=min_frames + 1)
            kept = curve[baseline.first:baseline.stop]
            if (curve[skip_frames:skip] > np.median(kept) + tolerance(kept)).all():
                return skip
        except InputError:
            pass
        skip -= 1
    return skip


def baseline_signal(signal: np.ndarray, baseline: Baseline) -> np.ndarray:
    """Per-voxel S0: the mean of the baseline frames."""
    return signal[:, baseline.first:baseline.stop].mean(axis=1)


def check_baseline_signal(s0: np.ndarray, in_aif: np.ndarray | None = None) -> None:
    """Refuse a zero or negative baseline S0 with a message that says where and what to do.

    in_aif: which of the voxels form the AIF mask, to name a mask placed outside the anatomy.
    """
    if np.all(s0 <= 0):
        raise InputError("the baseline signal is zero everywhere in the analysed region; is this a DSC "
                         "signal series? (for ΔR2* data use --input-kind concentration)")
    if in_aif is not None and np.all(s0[in_aif] <= 0):
        raise InputError("the AIF mask lies outside the imaged anatomy: its voxels have no signal. Draw it on "
                         "an artery inside the brain, on the series grid")
    if np.any(s0 <= 0):
        raise InputError(f"{int((s0 <= 0).sum())} analysed voxels have a zero baseline signal; exclude them "
                         "with --mask (e.g. a brain mask) or check that the AIF mask lies on signal")


#: Rows converted per block: the per-block temporaries stay small (and in cache).
CONVERSION_BLOCK = 8192


def check_echo_times(te1: float, te2: float) -> None:
    """Dual echo divides by TE2 - TE1: equal echo times give 0/0 (NaN curves, then a misleading
    baseline error). A shorter second echo means the series or the TEs were given in the wrong
    order (the pipeline takes the first series as the short echo). Called wherever the two TEs are
    used, so they are refused the same way from --te, the files' metadata or Python."""
    if not te2 > te1:
        raise InputError(f"dual-echo DSC needs a second echo time longer than the first; got TE1={te1:g} s and "
                         f"TE2={te2:g} s. Give --te TE1 TE2 with TE1 < TE2 (the first series the shorter echo, "
                         "--second-echo the longer one)")


def dual_echo_detection_curve(echo1: np.ndarray, echo2: np.ndarray, te1: float, te2: float) -> np.ndarray:
    """The curve on which a dual-echo series' bolus arrival is detected: ln(S̄1/S̄2)/(TE2 - TE1).

    That is ΔR2*(t) plus a constant, free of the T1 effects that dual echo cancels. Detecting the
    arrival on the first (short-TE) echo alone, as before, let those T1 effects -- which can raise
    the short-TE signal during the bolus and hide its small T2* drop -- move the detected arrival
    (reported at 15 s where the bolus arrived at 64.5 s)."""
    check_echo_times(te1, te2)
    m1 = np.asarray(echo1, np.float64).mean(axis=0)
    m2 = np.asarray(echo2, np.float64).mean(axis=0)
    tiny = np.finfo(np.float64).tiny
    return (np.log(np.maximum(m1, tiny)) - np.log(np.maximum(m2, tiny))) / (te2 - te1)


def detection_curve(raw, raw2, kind: str, te, te2) -> tuple[np.ndarray, str]:
    """(mean curve, its kind) on which the bolus arrival is detected: the mean input signal, or for
    dual-echo input the T1-free ln(S̄1/S̄2)/(TE2 - TE1), a ΔR2*-like (concentration) curve.
    (Moved from dsc/pipeline.py unchanged, session 24.)"""
    if raw2 is None or kind != "signal":
        return raw.mean(axis=0, dtype=np.float64), kind
    return dual_echo_detection_curve(raw, raw2, te, te2), "concentration"


def signal_to_delta_r2s(curves: np.ndarray, baseline: Baseline, te: float, in_aif: np.ndarray | None = None,
                        second: np.ndarray | None = None, te2: float | None = None) -> int:
    """Convert (n_voxels, n_frames) float32 signals to ΔR2* [1/s] IN PLACE; returns the clipped count.

    Single echo: ΔR2* = -ln(S/S0)/TE. Dual echo (``second`` = the TE2 echo, read only):
    ΔR2* = ln[(S1/S1,0)/(S2/S2,0)]/(TE2 - TE1), in which T1 effects cancel.

    S0 is the geometric mean of the baseline frames (the mean of ln S): then the logarithm's noise
    bias, about -σ²/(2S²) per frame, is the same in S(t) and S0 and cancels; with an arithmetic S0
    it leaves a constant ΔR2* offset that integrates into a CBV bias growing as 1/SNR² (+30-90 % at
    SNR 10 on the reference object). S is clipped to a small positive fraction of the arithmetic
    S0 before the logarithm (noise floor, saturated arteries).

    Blocks of rows are converted on a few threads (``map_blocks``), so the only full-size array is
    ``curves`` itself.
    """
    if second is not None:
        check_echo_times(te, te2)
    base = slice(baseline.first, baseline.stop)
    for echo in (curves, second) if second is not None else (curves,):
        check_baseline_signal(echo[:, base].mean(axis=1), in_aif)
    scale = -1.0 / te if second is None else 1.0 / (te2 - te)

    def convert(rows: slice) -> int:
        block = curves[rows]
        clipped = _log_ratio_in_place(block, base)
        if second is not None:
            other = np.array(second[rows], dtype=np.float32)
            clipped += _log_ratio_in_place(other, base)
            block -= other
        block *= np.float32(scale)
        return clipped

    return sum(map_blocks(convert, curves.shape[0], CONVERSION_BLOCK))


def _log_ratio_in_place(block: np.ndarray, base: slice) -> int:
    """block <- ln(S/S0) with S0 the geometric baseline mean; returns the clipped sample count."""
    floor = (MIN_SIGNAL_RATIO * block[:, base].mean(axis=1, keepdims=True)).astype(block.dtype)
    clipped = int(np.count_nonzero(block < floor))
    np.maximum(block, floor, out=block)
    np.log(block, out=block)
    block -= block[:, base].mean(axis=1, keepdims=True)
    return clipped


def delta_r2s_single_echo(signal: np.ndarray, baseline: Baseline, te: float,
                          in_aif: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """ΔR2*(t) = -ln(S(t)/S0)/TE [1/s] for (n_voxels, n_frames) signals. Returns (ΔR2*, clipped count)."""
    curves = np.array(signal, dtype=np.float32)
    return curves, signal_to_delta_r2s(curves, baseline, te, in_aif)


def delta_r2s_dual_echo(echo1: np.ndarray, echo2: np.ndarray, baseline: Baseline, te1: float,
                        te2: float, in_aif: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Dual-echo ΔR2*(t) = ln[(S1/S1,0)/(S2/S2,0)]/(TE2 - TE1): T1 leakage effects cancel."""
    curves = np.array(echo1, dtype=np.float32)
    return curves, signal_to_delta_r2s(curves, baseline, te1, in_aif, second=echo2, te2=te2)

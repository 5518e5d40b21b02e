"""Dual-echo DSC: is the AIF's second echo at the magnitude noise floor?

Dual-echo ΔR2* = ln[(S1/S1,0)/(S2/S2,0)]/(TE2 - TE1) takes the log of the second, dimmer echo. At a clinical SNR an
artery's second echo can reach the Rician noise floor at the bolus peak (its mean with no signal is 1.25 noise SDs):
there the noise, not the contrast, sets the magnitude, the log reads the signal too high, and the AIF's peak reads
low. Every method divides by the AIF, so absolute CBF (and CBV, a little) read high. On the DSC object at SNR 20
(scripts/validate_phae_dual_echo.py --aif-ablation; docs/reliability.md, session 24) the artery's echo 2 sat at
0.9-1.5 noise SDs at the peak and the AIF's peak read 38-59 1/s against a true 50. The single-echo check
(dsc/aif_saturation.py) reads -ln(S/S0)/TE, which dual-echo curves are not, and the dual-echo curve alone hides the
floor (its floor-raised signal reads as a lower peak): this check reads the AIF voxels' own magnitudes, each echo's,
with the single-echo check's rule: a sample is floor-dominated when its magnitude lies within ``FLOOR_SDS`` of the
voxel's baseline noise SDs of zero (or at the conversion's clipping bound), a frame when at least half of the AIF's
voxels have such a sample in either echo, and ``MIN_SECONDS`` of such frames give a warning; or (dual echo only)
when the AIF's peak is expected to read :data:`PEAK_CUT_SHARE` or more low from echo 2's floor.
Measured (scripts/validate_dsc_dual_echo_aif.py, session 24): see ``DualEchoAIFSaturation.warning``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special

from .aif_saturation import FLOOR_SDS, MIN_SECONDS, VOXEL_SHARE, AIFSaturation
from .conversion import MIN_SIGNAL_RATIO


#: The expected cut of the AIF's peak (share of the peak) from which a dual-echo run warns. The mean log of a Rician
#: magnitude of amplitude A and noise SD σ exceeds ln A by E1(A²/2σ²)/2 (exact; scipy.special.exp1), so the AIF's
#: ΔR2* reads low by that over TE2 - TE1. Echo 2's amplitude is predicted from echo 1, which stays clear of its floor:
#: A2 = S2,0·(S1/S1,0)^(TE2/TE1) (exact without a T1 change of blood; with one it predicts echo 2 too bright, so
#: the check then errs on the quiet side). On the session-23 grid that arithmetic expects 22 % at SNR 20, TE 25/55 ms
#: (A at 0.92 SD), 6 % at TE 15/45 ms (1.52 SD) and under 1 % at SNR 50 (2.3 SD): 10 % lies a factor of 2 from both.
#: Written before measuring after the frame rule alone (the single-echo check's 4.5 s, or 3.0 s re-set on 4 draws)
#: missed runs whose AIF peak read 16-23 % low (scripts/validate_dsc_dual_echo_aif.py --detect).
PEAK_CUT_SHARE = 0.10


def rician_log_bias(a: np.ndarray) -> np.ndarray:
    """E[ln M] - ln A for a Rician magnitude M of amplitude A = a noise SDs (0 where a is infinite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return 0.5 * special.exp1(np.square(np.asarray(a, np.float64)) / 2.0)


@dataclass(frozen=True)
class DualEchoAIFSaturation(AIFSaturation):
    """:class:`AIFSaturation` read from the AIF voxels' two echo magnitudes; ``lowest_signal_sds`` is echo 2's lowest
    median magnitude in noise SDs, ``lowest_echo1_sds`` echo 1's."""

    lowest_echo1_sds: float = float("nan")
    expected_peak_cut: float = 0.0  # [1/s] how much lower the AIF's peak reads than the truth, expected
    expected_peak_cut_share: float = 0.0  # of the (uncut) peak

    @property
    def saturated(self) -> bool:
        return self.seconds >= MIN_SECONDS - 1e-9 or self.expected_peak_cut_share >= PEAK_CUT_SHARE

    def to_json(self, times: np.ndarray) -> dict:
        out = super().to_json(times)
        out["lowest_echo1_noise_sds"] = (round(self.lowest_echo1_sds, 2) if np.isfinite(self.lowest_echo1_sds)
                                         else None)
        out["expected_peak_cut"] = round(self.expected_peak_cut, 2)
        out["expected_peak_cut_share"] = round(self.expected_peak_cut_share, 3)
        out["rule"] = (f"dual echo: either echo's magnitude within {FLOOR_SDS:g} baseline noise SDs of zero in >= "
                       f"{VOXEL_SHARE:.0%} of the AIF's voxels for {MIN_SECONDS:g} s, or the AIF's peak expected "
                       f"{PEAK_CUT_SHARE:.0%} or more low from echo 2's Rician floor (its amplitude from echo 1)")
        return out

    def caveats(self, method: str) -> dict[str, str]:
        note = ("absolute values read high: the AIF's second echo reaches the noise floor at its peak, which then "
                "reads low (report aif.saturation)")
        out = {name: note for name in ("cbf", "cbv", "cbv_corrected")}
        if method == "phae":
            out["cbf"] = ("NOT TRUSTWORTHY: PHAE reads the AIF's peak, which reads low with its second echo at the "
                          "noise floor (report aif.saturation)")
        return out

    def warning(self, times: np.ndarray, method: str) -> str | None:
        if not self.saturated:
            return None
        where = (f" in {self.frames.size} frames ({float(times[self.frames[0]]):.1f}-{float(times[self.frames[-1]]):.1f} s; "
                 f"within {FLOOR_SDS:g} noise SDs of zero in at least half of its voxels)" if self.frames.size else
                 " at the bolus peak")
        phae = " PHAE's CBF is NOT TRUSTWORTHY with it (it reads the peak's shape)." if method == "phae" else ""
        return (f"the AIF's second echo reaches the magnitude noise floor{where}: the log of a magnitude at its floor "
                f"reads the signal too high, so the dual-echo AIF's peak reads low (expected here "
                f"{100 * self.expected_peak_cut_share:.0f} % low, {self.expected_peak_cut:.1f} 1/s, from echo 2's "
                f"amplitude predicted by echo 1) and absolute CBF reads high{MEASURED}.{phae} Read CBF and CBV ratios "
                "to NAWM; draw the AIF on a smaller artery or on voxels at an artery's edge, or acquire with a shorter "
                "second echo time or a lower dose")


#: The sizes the warning quotes: scripts/validate_dsc_dual_echo_aif.py on the DSC object at SNR 20, TE 25/55 ms (--detect,
#: 16 draws; --correct, 4 draws against the same run with the artery's echo 2 noiseless).
MEASURED = (" (on the DSC object at SNR 20, TE 25/55 ms: AIF peak 38-49 1/s for a true 50; CBF up to +24 points in GM "
            "and +56 in WM with oSVD, +33 and +77 with Tikhonov, +15 in GM and +31 in the tumour rim with PHAE, "
            "against the same run with the artery's second echo noiseless)")


def dual_echo_aif_saturation(echo1: np.ndarray, echo2: np.ndarray, baseline: slice, times: np.ndarray,
                             te1: float, te2: float) -> DualEchoAIFSaturation:
    """Saturation of a dual-echo AIF from its voxels' input magnitudes ((n_voxels, n_frames) each, as analysed: the
    same frames the conversion saw), the baseline frames, the frame times [s] (a uniform grid) and the echo times."""
    step = float(np.median(np.diff(times))) if len(times) > 1 else float("nan")
    m1, m2 = (np.atleast_2d(np.asarray(e, dtype=np.float64)) for e in (echo1, echo2))
    n_base = len(range(*baseline.indices(m1.shape[1])))
    if m1.size == 0 or n_base < 2:
        return DualEchoAIFSaturation(np.zeros(0, int), 0.0, float("nan"), step)
    floored, lowest, s0, noise = [], [], [], []
    for m in (m1, m2):
        s0.append(m[:, baseline].mean(axis=1, keepdims=True))
        noise.append(m[:, baseline].std(axis=1, ddof=1, keepdims=True))  # the voxel's noise SD (Gaussian there)
        floored.append((m <= MIN_SIGNAL_RATIO * s0[-1] * (1 + 1e-3)) | (m < FLOOR_SDS * noise[-1]))
        median_noise = float(np.median(noise[-1]))
        lowest.append(float(np.median(m, axis=0)[baseline.stop:].min() / median_noise) if median_noise > 0
                      else float("inf"))
    share = (floored[0] | floored[1]).mean(axis=0)
    share[:baseline.stop] = 0.0  # the skipped frames and the baseline cannot be the bolus' peak
    frames = np.flatnonzero(share >= VOXEL_SHARE)
    cut, cut_share = expected_peak_cut(m1, m2, baseline, te1, te2, s0, noise)
    return DualEchoAIFSaturation(frames, float(share.max()), lowest[1], step, lowest_echo1_sds=lowest[0],
                                 expected_peak_cut=cut, expected_peak_cut_share=cut_share)


def expected_cut_curve(m1, m2, baseline: slice, te1: float, te2: float, s0=None, noise=None) -> np.ndarray:
    """How much lower [1/s] the dual-echo AIF (the voxels' mean log ratio) reads than the truth at each frame, expected
    from echo 2's Rician floor (:data:`PEAK_CUT_SHARE`): echo 2's amplitude in noise SDs predicted from echo 1, its
    median over the voxels, through :func:`rician_log_bias`, less the baseline's (which the conversion removes)."""
    if s0 is None:
        s0 = [m[:, baseline].mean(axis=1, keepdims=True) for m in (m1, m2)]
        noise = [m[:, baseline].std(axis=1, ddof=1, keepdims=True) for m in (m1, m2)]
    # the noise SD pooled over the voxels as sqrt(mean variance): the median of 8-frame SDs reads it ~4 % low, which
    # lowered the expected cut by a tenth (one image's noise is the same in every voxel)
    sigma = float(np.sqrt(np.mean(np.square(noise[1]))))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio1 = np.clip(m1 / s0[0], MIN_SIGNAL_RATIO, None)
        amplitude = np.median(s0[1] * ratio1 ** (te2 / te1), axis=0) / sigma
    bias = rician_log_bias(amplitude)
    bias = np.where(np.isfinite(bias), bias, 0.0)
    return (bias - bias[baseline].mean()) / (te2 - te1)


def expected_peak_cut(m1, m2, baseline: slice, te1: float, te2: float, s0=None, noise=None) -> tuple[float, float]:
    """(expected cut [1/s], its share of the uncut peak) at the frame where the cut is largest (the bolus peak)."""
    cut = expected_cut_curve(m1, m2, baseline, te1, te2, s0, noise)
    cut[:baseline.stop] = 0.0
    at = int(np.argmax(cut))
    tiny = np.finfo(np.float64).tiny
    logs = [np.log(np.maximum(m, tiny)) for m in (m1, m2)]
    read = float(((logs[0] - logs[0][:, baseline].mean(axis=1, keepdims=True))
                  - (logs[1] - logs[1][:, baseline].mean(axis=1, keepdims=True))).mean(axis=0)[at] / (te2 - te1))
    peak = read + cut[at]
    return float(cut[at]), float(cut[at] / peak) if peak > 0 else 0.0


def dual_echo_aif_step(selection, aif_raw, read_rows: Callable[[np.ndarray], list], baseline: slice,
                       times: np.ndarray, warnings: list[str], method: str, te1: float | None = None,
                       te2: float | None = None) -> DualEchoAIFSaturation:
    """The pipeline's hook (dsc/pipeline.py, after the AIF is chosen): the chosen AIF voxels' two echoes, from the
    rows the pipeline kept (``aif_raw``: (rows, [echo 1, echo 2]): a drawn mask's voxels before the conversion, or
    the automatic AIF's first choice), else read again (``read_rows(rows)``: one more pass over a series left in its
    file); checks them and appends the warning when the AIF saturates. Returns the check (for the report and the
    maps' caveats)."""
    rows = selection.voxels
    if aif_raw is not None and len(aif_raw[1]) == 2 and np.isin(rows, aif_raw[0]).all():
        by_row = np.argsort(aif_raw[0], kind="stable")
        at = by_row[np.searchsorted(aif_raw[0], rows, sorter=by_row)]
        echo1, echo2 = (r[at] for r in aif_raw[1])
    else:
        echo1, echo2 = read_rows(rows)
    found = dual_echo_aif_saturation(echo1, echo2, baseline, times, te1, te2)
    if found.saturated:  # the AIF is not corrected: no candidate met its rule (scripts/validate_dsc_dual_echo_aif.py)
        warnings.append(found.warning(times, method))
    return found

"""Is the AIF's first pass cut off at the noise floor (arterial saturation)?

At a clinical dose an artery's T2*-weighted signal can fall to the noise floor at the bolus peak: ΔR2* = -ln(S/S0)/TE
then stops rising with the concentration, the AIF's peak and area read low, and every absolute map reads high
(CBV and CBF divide by the AIF). On the DSC object with a saturating artery (scripts/dsc_aif_saturation.py;
docs/reliability.md, session 21; tuning and held-apart sets) the warned runs' AIF area read 4-36 % low and its peak
19-79 % low; GM CBV then read up to +50 % high, oSVD's GM CBF up to 2.6x the truth (0.5-0.8x with an unsaturated AIF)
and PHAE's GM CBF 1.2-5.6x, while the tumour-rim/NAWM CBV ratio stayed within 8 % of the true ratio (as without
saturation). Nothing
in the magnitude signal restores the lost peak (a gamma-variate fitted to the samples left was tried and over- or
under-shot the area by up to 25 %, or failed), so the run says so instead.

A sample is saturated when the voxel's signal S/S0 = exp(-TE·ΔR2*) lies within ``FLOOR_SDS`` noise SDs of zero
(the Rician floor of a magnitude image averages 1.25 SD: there the noise, not the contrast, sets the signal)
or at the conversion's clipping bound (dsc.conversion.MIN_SIGNAL_RATIO); the noise SD in S/S0 units is the voxel's
baseline ΔR2* SD times TE. A frame of the AIF is saturated when at least half of its voxels are.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from .conversion import MIN_SIGNAL_RATIO

#: A sample whose S/S0 lies within this many noise SDs of zero is floor-dominated (the floor's mean is 1.25 SD).
FLOOR_SDS = 2.0
#: Share of the AIF's voxels saturated at a frame for the frame to count.
VOXEL_SHARE = 0.5
#: Saturated time [s] before the run warns: 3 frames of 1.5 s. Set on the tuning set (scripts/dsc_aif_saturation.py):
#: runs whose AIF area was within 3 % and peak within 10 % of the truth had at most 2 such frames (3 s), runs with
#: the area 10 % or the peak 25 % low at least 3 (4.5 s). In seconds, not frames: faster frames cut more of them.
MIN_SECONDS = 4.5


@dataclass(frozen=True)
class AIFSaturation:
    """The AIF frames cut off at the noise floor (indices), the largest share of its voxels saturated at one frame,
    and the AIF's lowest median S/S0 in noise SDs (how close its peak comes to the floor)."""

    frames: np.ndarray
    largest_voxel_share: float
    lowest_signal_sds: float
    frame_interval: float = float("nan")

    @property
    def seconds(self) -> float:
        return float(self.frames.size * self.frame_interval)

    @property
    def saturated(self) -> bool:
        return self.seconds >= MIN_SECONDS - 1e-9

    def to_json(self, times: np.ndarray) -> dict:
        return {"saturated_frames": int(self.frames.size), "saturated_seconds": round(self.seconds, 3),
                "saturated_times_s": [round(float(times[k]), 3) for k in self.frames],
                "largest_voxel_share": round(self.largest_voxel_share, 3),
                "lowest_signal_noise_sds": round(self.lowest_signal_sds, 2) if np.isfinite(self.lowest_signal_sds)
                else None,
                "rule": f"S/S0 within {FLOOR_SDS:g} noise SDs of zero in >= {VOXEL_SHARE:.0%} of the AIF's voxels; "
                        f"warned from {MIN_SECONDS:g} s"}

    def caveats(self, method: str) -> dict[str, str]:
        """{map name: caveat} for the report's map entries (shown beside ROI means by roi-stats and the panel)."""
        note = "absolute values read high: the AIF's peak is cut off at the noise floor (report aif.saturation)"
        out = {name: note for name in ("cbf", "cbv", "cbv_corrected")}
        if method == "phae":
            out["cbf"] = ("NOT TRUSTWORTHY: PHAE read a cut-off AIF peak as 1.2-5.6x the CBF on the DSC object "
                          "(report aif.saturation)")
        return out

    def warning(self, times: np.ndarray, method: str) -> str | None:
        """The report line for a saturated AIF (None when it is not)."""
        if not self.saturated:
            return None
        first, last = float(times[self.frames[0]]), float(times[self.frames[-1]])
        phae = (" PHAE's CBF is NOT TRUSTWORTHY with it (1.2-5.6x the truth on the object: its decoder reads the "
                "peak's shape)." if method == "phae" else "")
        return (f"the AIF's signal reaches the noise floor in {self.frames.size} frames ({first:.1f}-{last:.1f} s; "
                f"within {FLOOR_SDS:g} noise SDs of zero in at least half of its voxels): its first-pass peak is cut "
                "off, so its area reads low and absolute CBV and CBF read high (on the DSC object with such an AIF: "
                "AIF area 4-36 % low, GM CBV up to +50 %, oSVD GM CBF up to 2.6x the truth; the tumour/NAWM CBV "
                f"ratio within 8 %).{phae} Read CBV ratios to NAWM; draw the AIF on a smaller artery or on voxels "
                "at an artery's edge, or acquire with a lower dose or a shorter TE")


def aif_saturation(aif_voxel_curves: np.ndarray, baseline: slice, te: float, times: np.ndarray) -> AIFSaturation:
    """Saturation of the AIF from its voxels' ΔR2* curves [1/s] ((n_voxels, n_frames), converted from a single-echo
    signal with echo time ``te`` [s]), the baseline frames and the frame times [s] (a uniform grid)."""
    curves = np.asarray(aif_voxel_curves, dtype=np.float64)
    if curves.ndim == 1:
        curves = curves[None, :]
    n_base = len(range(*baseline.indices(curves.shape[1])))
    step = float(np.median(np.diff(times))) if len(times) > 1 else float("nan")
    if curves.size == 0 or n_base < 2 or not te > 0:
        return AIFSaturation(np.zeros(0, int), 0.0, float("nan"), step)
    ratio = np.exp(-te * curves)  # S/S0 as the conversion saw it
    noise = te * curves[:, baseline].std(axis=1, ddof=1)  # the baseline's SD in S/S0 units
    clipped = ratio <= MIN_SIGNAL_RATIO * (1 + 1e-3)  # the conversion's floor (float32 rounding allowed)
    saturated = clipped | (ratio < FLOOR_SDS * noise[:, None])
    share = saturated.mean(axis=0)
    share[baseline] = 0.0  # the baseline cannot be the bolus' peak
    frames = np.flatnonzero(share >= VOXEL_SHARE)
    median_ratio = np.median(ratio, axis=0)
    median_noise = float(np.median(noise))
    lowest = float(median_ratio.min() / median_noise) if median_noise > 0 else float("inf")
    return AIFSaturation(frames, float(share.max()), lowest, step)


@contextmanager
def saturation_hint(curves: np.ndarray, in_aif: np.ndarray, baseline: slice, te: float | None, times: np.ndarray):
    """Re-raise an AIF's refusal (a drawn mask's, or the automatic AIF's chosen voxels) with the likelier cause when
    its voxels saturate: a cut-off peak is flat and late, so the plausibility checks (dsc/aif.py) call it tissue or a
    vein and advise the large artery that saturates (on the DSC object at a 600/s arterial peak, SNR 20: "looks like
    tissue or a vein")."""
    try:
        yield
    except InputError as exc:
        if te is None or in_aif is None or not np.any(in_aif):
            raise
        found = aif_saturation(curves[in_aif], baseline, te, times)
        if not found.saturated:
            raise
        raise InputError(f"{exc}. But its signal lies at the noise floor for {found.seconds:.1f} s around the bolus "
                         "peak (saturation), which flattens and delays the peak: draw it on a smaller artery or on "
                         "voxels at an artery's edge, or acquire with a lower dose or a shorter TE") from None

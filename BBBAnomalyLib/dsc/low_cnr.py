"""What a DSC run's maps are worth at its contrast-to-noise: the warnings by tier.

Why: the per-frame contrast-to-noise of the brain (:func:`contrast_to_noise`: the mean ΔR2* curve's
peak over the median voxel's baseline SD) decides what one voxel's deconvolution can read. Below 5 CBF is biased;
below 1 it is noise, not flow: on the DSC reference object at SNR 5 the arterial mask gave cSVD GM CBF 150-480
ml/100 g/min against ~30 at SNR 50, with exit 0 and only the 'biased' line, which said white matter "up to 1.5x".
CBV, an integral, is not deconvolved and held within 12 % down to CNR 0.15. A map a radiologist cannot trust is
worse than no map, so each tier says which maps are not trustworthy and which still are, with the errors measured
on the object (``scripts/dsc_low_cnr.py``; docs/reliability.md, session 20). The maps themselves are not changed.

Every number below is the ratio of an ROI mean to the object's truth (tumour/NAWM ratios: over the true ratio),
measured with the object's arterial mask over SNR 3-300 (CNR 0.09-9): the tuning seeds (0-1) and the held-apart
seeds, slabs (4-12 slices), frame intervals (1-2 s) and arterial peaks (30-100 1/s), 54 runs in all. The CNR is
about -ln(1 - the brain's mean peak signal drop) x the per-frame SNR: in vivo (a drop of 20-30 %, SNR 40) about 10,
so these tiers are for a failed or weak bolus or a very noisy series, not ordinary data (the object is built with low
tissue contrast: CNR 1.5 at its SNR 50).
"""

from __future__ import annotations

import numpy as np

from ..core.devices import map_blocks
from .conversion import Baseline
from .parameters import DeconvolutionMethod

#: Below this CNR deconvolved CBF is biased (the 'biased' tier; since issue 12).
LOW_CNR = 5.0
#: Below this CNR the classic methods' CBF, MTT and rCBF are not trustworthy: in 41 of 41 runs at CNR 0.09-0.96 every
#: method had GM CBF, WM CBF or the tumour/NAWM rCBF off by 1.8x or more (at CNR 1.5, the least biased, oSVD, 1.7x
#: at worst, most of it its noiseless truncation, 0.81x).
UNTRUSTWORTHY_CNR = 1.0
#: Below this CNR PHAE's CBF falls back towards its training prior: rCBF 0.4-1.05x, GM/WM contrast 0.6-0.85x.
PHAE_UNTRUSTWORTHY_CNR = 0.25
#: Below this CNR CBV is off too: GM CBV 0.88-1.31x, rim rCBV 0.46-0.73x at CNR 0.09-0.10 (0.88-1.11x from 0.15).
CBV_FLOOR_CNR = 0.12


def _peaks(contrast: float, below: float) -> str:
    return f"the mean brain curve peaks at {contrast:.2g} x the per-frame baseline noise, below {below:g}"


def _cbv_clause(contrast: float) -> str:
    if contrast < CBV_FLOOR_CNR:
        return (f"Below CNR {CBV_FLOOR_CNR:g} even CBV is off (GM CBV 0.88-1.31x, the rim's rCBV 0.46-0.73x the truth "
                "on the reference object at CNR 0.09-0.10): no map of this run is trustworthy; check the bolus (dose, "
                "injection, timing) and the series' noise")
    return ("CBV is still usable: GM CBV within 12 % of the truth on the reference object down to CNR 0.15 (an "
            "integral, not deconvolved); the rim's rCBV read 0.84-0.94x the true ratio at CNR 0.3 and above, "
            "0.71-0.92x at 0.15-0.3 (low, not high)")


def low_cnr_warnings(contrast: float, method: DeconvolutionMethod) -> tuple[list[str], list[str]]:
    """(lines to put first in the run's warnings, lines to append in order) for a run of ``method`` at CNR
    ``contrast``. The 'not trustworthy' lines go first: in the CLI's summary and the panel's status they are the
    first warning read, before the run's other, milder ones."""
    if not contrast < LOW_CNR:
        return [], []
    if method is DeconvolutionMethod.PHAE:
        if contrast < PHAE_UNTRUSTWORTHY_CNR:
            return [f"PHAE CBF, rCBF and MTT NOT TRUSTWORTHY: very low contrast-to-noise "
                    f"({_peaks(contrast, PHAE_UNTRUSTWORTHY_CNR)}): PHAE's CBF falls back towards its training prior. "
                    "On the reference object at CNR 0.09-0.22 its GM CBF read 0.66-0.89x the truth, WM 0.86-1.4x, "
                    "the tumour/NAWM rCBF 0.4-1.05x the true ratio (mostly low), the GM/WM CBF contrast 0.6-0.85x "
                    "and GM MTT 1.2-1.9x: ratios to NAWM are affected here too, and the classic methods are worse "
                    "(oSVD GM CBF 1.3-8.8x; a comparison with oSVD says nothing). " + _cbv_clause(contrast)], []
        if contrast < UNTRUSTWORTHY_CNR:
            return [], [f"low contrast-to-noise ({_peaks(contrast, UNTRUSTWORTHY_CNR)}): PHAE's CBF is biased here, "
                        "far less than the classic methods': on the reference object at CNR 0.3-0.96 GM CBF read "
                        "0.81-1.31x the truth, WM 0.88-1.55x and the tumour/NAWM rCBF 0.85-1.28x the true ratio "
                        "(oSVD: GM 0.5-2x, rCBF 0.27-0.63x); below CNR 0.25 it is not trustworthy either"]
        return [], []
    if contrast < UNTRUSTWORTHY_CNR:
        return [f"CBF, MTT and rCBF NOT TRUSTWORTHY: very low contrast-to-noise "
                f"({_peaks(contrast, UNTRUSTWORTHY_CNR)}): the {method.value} deconvolution reads noise as flow, as "
                "every deconvolution does there. On the reference object at CNR 0.09-0.96 sSVD, cSVD, oSVD and "
                "Tikhonov each had GM CBF, WM CBF or the tumour/NAWM rCBF off by 1.8x or more (41 of 41 runs): GM CBF "
                "0.33-13x the truth (oSVD 0.5-8.8x), WM 0.34-32x, MTT meaningless (GM means -2.7 to 4x), rCBF "
                "0.2-0.63x the true ratio with sSVD/cSVD/oSVD (a hyperperfused tumour reads like white matter). "
                + _cbv_clause(contrast)], []
    return [], [f"low contrast-to-noise: {_peaks(contrast, LOW_CNR)}; there CBF from deconvolution is biased, "
                "whatever the code. On the reference object at CNR 1.2-4.6 GM CBF read 0.5-0.9x the truth with "
                "sSVD/cSVD/oSVD and 0.35-0.6x with Tikhonov-GCV (noiseless: 0.6-0.8x, the truncation), WM CBF "
                "0.3-1.8x (fixed-threshold sSVD/cSVD take noise peaks for flow in low-flow tissue: up to 1.8x), and "
                "the tumour/NAWM rCBF 0.4-1.1x the true ratio (Tikhonov 1.1-1.9x); oSVD is the least biased. CBV and "
                "rCBV are not affected (within 8 %)"]


def low_cnr_caveats(contrast: float, method: DeconvolutionMethod) -> dict[str, str]:
    """{map name: caveat} for the maps a run at CNR ``contrast`` must not be read from: written into the report's
    map entries, so that `roi-stats`, the panel's ratio table and the BIDS roistats show it beside an ROI mean or a
    ratio of those maps (the warnings alone stay in the run's report and log)."""
    floor = PHAE_UNTRUSTWORTHY_CNR if method is DeconvolutionMethod.PHAE else UNTRUSTWORTHY_CNR
    if not contrast < floor:
        return {}
    note = (f"not trustworthy at this run's contrast-to-noise ({contrast:.2g}, below {floor:g}): see the run's first "
            "warning (dsc/low_cnr.py)")
    names = ("cbf", "mtt", "rcbf") if contrast >= CBV_FLOOR_CNR else ("cbf", "mtt", "rcbf", "cbv", "rcbv",
                                                                       "cbv_corrected")
    return {name: note for name in names}



#: Share of the brain's voxels whose Tikhonov λ sits at the top of its grid (σmax) from which the run warns. On the
#: DSC reference object (scripts/dsc_tikhonov_lambda.py, session 22; 42 runs, SNR 20-700, Δt 1-2 s) GCV put 6-8 % of
#: the brain there at the in-vivo CNR (4-21: CSF and other voxels without flow, which is right), 12-24 % at CNR 2-3 and
#: 31-57 % at CNR 0.6-1.5. 25 % leaves room for a mask with much CSF or necrosis; CNR 2-5 is the 'biased' tier above.
TIKHONOV_CAP_SHARE = 0.25


def tikhonov_cap_warning(share: float, rule: str) -> str | None:
    """A line for a Tikhonov run where ``share`` of the brain's voxels got λ at the top of the grid: there GCV (or the
    L-curve) found no interior choice and smoothed the residue as far as the grid allows. It complements the CNR tiers
    above (what any deconvolution reads at that CNR) with what Tikhonov's own choice did and what to use instead."""
    if not share >= TIKHONOV_CAP_SHARE:
        return None
    head = (f"Tikhonov ({rule}): {100 * share:.0f} % of brain voxels have λ at the top of its grid (σmax): the "
            "residue there is smoothed as far as the grid allows, so CBF reads low and MTT high. ")
    if rule == "gcv":
        sizes = ("On the reference object with 31-57 % at the top (CNR 0.6-1.5) GM CBF read 0.33-0.42x the truth and "
                 "WM 0.37-0.63x in 3 of 4 settings (seed means; in the fourth 0.87x and 1.7x, one seed's noise peaks "
                 "read as flow), GM MTT 3.0-4.0x; oSVD on the same runs: GM 0.5-0.89x, WM 0.8-1.6x, MTT 1.0-1.7x. ")
    else:
        sizes = "On the reference object the L-curve and fixed λ did not do better than GCV here (session 22). "
    return head + sizes + "Prefer --method osvd; read CBV, which is not deconvolved"


def contrast_to_noise(brain_curves: np.ndarray, baseline: Baseline) -> float:
    """Per-frame CNR of the brain: peak of the mean ΔR2* curve over the median voxel's baseline SD.

    This is the contrast a single voxel's deconvolution works with (the residue's peak, CBF, is
    read from one noisy curve); the mean curve's peak stands for typical tissue."""
    base = slice(baseline.first, baseline.stop)
    if baseline.stop - baseline.first < 2 or brain_curves.shape[0] == 0:
        return float("inf")
    mean = brain_curves.mean(axis=0, dtype=np.float64)
    # The baseline SDs by blocks: std of a strided (n, baseline) slice builds several (n, baseline)
    # temporaries, which would sit on top of the series and its curves.
    sd = np.empty(brain_curves.shape[0], brain_curves.dtype)

    def baseline_sd(rows: slice) -> None:
        sd[rows] = brain_curves[rows, base].std(axis=1)

    map_blocks(baseline_sd, sd.size, 8192)
    noise = float(np.median(sd))
    peak = float(mean.max() - mean[base].mean())
    return peak / noise if noise > 0 else float("inf")

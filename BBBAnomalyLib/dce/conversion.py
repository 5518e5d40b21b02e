"""Signal -> concentration for T1-weighted DCE: bolus arrival, baseline, SER, SPGR inversion.

All functions work on a (n_voxels, n_frames) matrix of the voxels of interest. The SPGR inversion
goes through the signal enhancement ratio SER = S/S0 - 1, in which M0·sinα cancels, so the same
function converts measured curves and the RLS reconstruction (which lives in SER units).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError

#: Fraction of the peak rise of the mean curve that marks the bolus arrival.
ARRIVAL_FRACTION = 0.1
#: E1 is clipped to [E1_MIN, 1): signals above the SPGR maximum (noise on a saturated artery).
E1_MIN = 1e-6
#: A two-frame baseline is cut to its first frame where the second frame stands this many of its own noise's
#: standard deviations above the first (session 20: a bolus inside the first frame interval).
FOOT_NOISE_SIGMAS = 5.0
#: ... and by at least this fraction of the peak rise (a noiseless curve's rounding is no foot).
FOOT_MIN_FRACTION = 0.005


def detect_baseline_frames(mean_curve: np.ndarray) -> int:
    """Number of pre-contrast frames: those before the first frame whose rise above the early
    baseline reaches 10 % of the peak rise of the brain-mean curve, less one frame of margin (the
    frame before the crossing already holds the foot of the bolus; in an artery near SPGR
    saturation a 1 % error in S0 is a 20 % error in peak concentration).

    The early level is the median of the first 5 % of the frames (at least 2), or of the frames before the
    crossing where the bolus arrives inside that window: 5 % of a long series of fast frames is longer than an
    early bolus's baseline (600 frames of 1 s: 30 s, where a bolus arriving at 6 s had its first pass in the
    "early" level, which then put the arrival after it: the baseline held the arterial bolus, the AIF of a real
    arterial mask read 78 % low and Ktrans 78 % high, without a word; scripts/dce_unusual_acquisitions.py).
    Two frames kept are cut to one where the second already holds the bolus' foot (:func:`second_frame_holds_foot`)."""
    curve = np.asarray(mean_curve, dtype=np.float64)
    n = curve.size
    window = max(2, n // 20)
    while True:
        early = np.median(curve[:window])
        rise = curve - early
        peak = int(np.argmax(rise))
        if rise[peak] <= 0:
            raise InputError("the mean curve shows no contrast enhancement; is this a T1-weighted DCE series after "
                             "injection? Give --baseline-frames to force a baseline")
        above = np.flatnonzero(rise[: peak + 1] >= ARRIVAL_FRACTION * rise[peak])
        stop = int(above[0])
        if stop >= window or window <= 2:
            break
        window = max(2, stop)  # the early window held the bolus: take the frames before its crossing
    if stop < 1:
        raise InputError("the enhancement starts in the first frame: there is no pre-contrast baseline. "
                         "Give --baseline-frames N if the first N frames are pre-contrast")
    kept = stop - 1 if stop >= 3 else stop
    if kept == 2 and second_frame_holds_foot(curve, rise[peak] + early - curve[0]):
        return 1  # the bolus arrived within the first frame interval: only the first frame is pre-contrast
    return kept


def detect_brain_baseline_frames(brain_mean: np.ndarray, moved: bool = False) -> int:
    """:func:`detect_baseline_frames` of the brain-mean curve, after checking that the series is one contrast
    enhancement (not an ASL, BOLD, DSC or diffusion series: :func:`..perfusion.series_kind.check_dce_curve`, session 23).
    For the brain's mean only: single arterial curves are read by :func:`detect_baseline_frames` as before."""
    from ..perfusion.series_kind import check_dce_curve

    check_dce_curve(brain_mean, moved=moved)  # moved: uncorrected head motion (its level shift is no drop)
    return detect_baseline_frames(brain_mean)


def second_frame_holds_foot(curve: np.ndarray, peak_rise: float) -> bool:
    """Whether the second frame already holds the bolus' foot: its rise above the first frame exceeds
    FOOT_NOISE_SIGMAS times the noise of a difference of two frames (the noise read from the curve's second half:
    the median absolute second difference, robust to its slow washout) and FOOT_MIN_FRACTION of the peak rise.

    Why: a two-frame baseline is kept without the one frame of margin where the crossing is the third frame (there
    would be one frame left), and the early level is the median of the first two or three frames, so a bolus
    arriving within the first frame interval lifts the level with the second frame and is not seen: on the DCE reference object (2 s frames, bolus at 1 s: the
    arterial signal's second frame 1.9 times its first) the drawn mask's AIF read 73 % low and the rim's Ktrans 47 %
    high, without a word (scripts/dce_unusual_acquisitions.py --short-baseline). In SPGR signal even a small foot
    matters (1 % of the arterial S0 is about 20 % of its peak concentration), so it is tested against the noise
    rather than against ARRIVAL_FRACTION of the peak."""
    tail = curve[curve.size // 2:]
    if tail.size < 4 or not peak_rise > 0:
        return False
    # second differences of white noise have the variance 6 sigma^2; a difference of two frames 2 sigma^2
    sigma = float(np.median(np.abs(np.diff(tail, 2)))) / 0.6745 / np.sqrt(6.0)
    step = float(curve[1] - curve[0])
    return step > FOOT_NOISE_SIGMAS * np.sqrt(2.0) * sigma and step > FOOT_MIN_FRACTION * peak_rise


def enhancement_ratio(signal: np.ndarray, n_baseline: int, skip: int = 0, out: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """SER(t) = S(t)/S0 - 1 and S0 (mean of frames [skip, n_baseline)), per voxel. The OSIPI
    reference data use skip = 1 (the first frame is often not yet in steady state).
    out: where SER goes (``signal`` itself converts in place, by row blocks: no temporary of its size)."""
    s0 = signal[:, skip:n_baseline].mean(axis=1, dtype=np.float64).astype(np.float32)
    if np.any(s0 <= 0):
        bad = int((s0 <= 0).sum())
        raise InputError(f"{bad} analysed voxels have a zero or negative pre-contrast signal; exclude them with "
                         "--mask (background) or check --input-kind")
    if out is None:
        return signal / s0[:, None] - 1.0, s0
    for start in range(0, signal.shape[0], ROW_BLOCK):  # the same float32 operations, a block at a time
        rows = slice(start, start + ROW_BLOCK)
        np.divide(signal[rows], s0[rows, None], out=out[rows])
        out[rows] -= np.float32(1.0)
    return out, s0


#: Rows converted at a time: bounds the float64 temporaries of the SPGR inversion (a few MiB).
ROW_BLOCK = 1024


def concentration_from_ser(ser: np.ndarray, t10, flip_angle: float, tr: float, relaxivity: float,
                           out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """C(t) [mM] from SER(t) by inverting the SPGR steady-state equation per frame.

    S = M0 sinα (1 - E1)/(1 - cosα E1), E1 = exp(-TR·R1). With S0 at R10 = 1/T10 and A = (1 - cosα E10)/(1 - E10),
    E1(t) = (A - (1 + SER))/(A - (1 + SER) cosα), R1 = -ln(E1)/TR, C = (R1 - R10)/r1.
    t10: scalar or (n_voxels,) seconds. Returns (C float32, number of samples clipped at E1_MIN).
    Computed in float64 by blocks of ROW_BLOCK rows into a float32 result (``out``, which may be
    ``ser`` itself: each block is read before it is written), so the temporaries stay a few MiB.
    """
    ser = np.asarray(ser)
    t10 = np.asarray(t10, dtype=np.float64)
    if ser.ndim < 2 or (t10.ndim == 0 and ser.shape[0] <= ROW_BLOCK):
        conc, clipped = _spgr_inverse(ser, t10, flip_angle, tr, relaxivity)
        if out is None:
            return conc, clipped
        out[...] = conc
        return out, clipped
    out = np.empty(ser.shape, np.float32) if out is None else out
    clipped = 0
    for start in range(0, ser.shape[0], ROW_BLOCK):
        rows = slice(start, start + ROW_BLOCK)
        conc, n = _spgr_inverse(ser[rows], t10[rows] if t10.ndim == 1 else t10, flip_angle, tr, relaxivity)
        out[rows] = conc
        clipped += n
    return out, clipped


def pooled_concentration(conc_rows: np.ndarray, t10_rows, flip_angle: float, tr: float, relaxivity: float
                         ) -> np.ndarray:
    """One concentration curve (T,) float64 for a group of voxels holding the same blood (a measured AIF's): their
    mean SER (the forward SPGR model of each row's concentration with its own T10: each row's own S0, M0·sinα
    cancelled), converted once with the median of their T10 (``t10_rows``: (n,) or a scalar).

    Why not the mean of the rows' concentrations: each voxel's S0 is the mean of its few baseline frames, and near
    the arterial signal's SPGR maximum the inversion multiplies a per cent of S0 error several-fold and convexly,
    so the mean of per-voxel concentrations reads the peak high (Jensen; on the DCE reference object's 16 arterial
    voxels at SNR 20 with 2 baseline frames +2 to +17 % on average over 4 seeds; session 20); the mean SER converted
    once averages the S0 errors first. Rows clipped at the SPGR maximum come back at that maximum. The median T10: a
    measured T10 map's own noise would enter the same convex conversion. Only for voxels holding the same
    concentration: for partial volumes the mean SER is not the SER of the mean concentration (the automatic AIF's
    voxels, :class:`~.aif.PooledConversion`)."""
    rows = np.asarray(conc_rows)
    t10 = np.asarray(t10_rows, dtype=np.float64)
    ser = _spgr_forward(rows, t10, flip_angle, tr, relaxivity).astype(np.float64) if rows.size else rows
    return pooled_ser_concentration(ser, float(np.median(t10)), flip_angle, tr, relaxivity)


def pooled_ser_concentration(ser_rows: np.ndarray, t10: float, flip_angle: float, tr: float, relaxivity: float
                             ) -> np.ndarray:
    """The concentration (T,) float64 of the mean of (n, T) SER rows, converted once with ``t10``
    (:func:`pooled_concentration`)."""
    mean = np.asarray(ser_rows, dtype=np.float64).mean(axis=0)
    conc, _ = _spgr_inverse_float64(mean, np.asarray(t10, dtype=np.float64), flip_angle, tr, relaxivity)
    return conc


def _spgr_inverse(ser, t10, flip_angle, tr, relaxivity):
    conc, clipped = _spgr_inverse_float64(ser, t10, flip_angle, tr, relaxivity)
    return conc.astype(np.float32), clipped


def _spgr_inverse_float64(ser, t10, flip_angle, tr, relaxivity):
    t10 = t10[:, None] if t10.ndim == 1 else t10
    a = np.deg2rad(flip_angle)
    e10 = np.exp(-tr / t10)
    big_a = (1.0 - np.cos(a) * e10) / (1.0 - e10)
    ratio = 1.0 + ser.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = (big_a - ratio) / (big_a - ratio * np.cos(a))
    clipped = int(np.count_nonzero(~(e1 >= E1_MIN)))
    e1 = np.clip(np.nan_to_num(e1, nan=E1_MIN), E1_MIN, 1.0 - 1e-12)
    r1 = -np.log(e1) / tr
    return (r1 - 1.0 / t10) / relaxivity, clipped


class _RowsOnDemand:
    """(n, T) curves converted per sample on demand rather than held: ``rows[indices]`` (a slice, integer or
    boolean indices) and ``blocks(size)`` give the conversion of those rows only, the same values as converting
    every row at once (each step is per sample; the conversions run in float64 by ROW_BLOCK-row blocks)."""

    def __init__(self, curves: np.ndarray, t10, flip_angle: float, tr: float, relaxivity: float):
        self.curves, self.t10 = curves, np.asarray(t10, dtype=np.float64)
        self.args = (flip_angle, tr, relaxivity)
        self.shape = curves.shape

    def _convert(self, curves: np.ndarray, t10) -> np.ndarray:
        raise NotImplementedError

    def _t10(self, rows):
        return self.t10[rows] if self.t10.ndim == 1 else self.t10

    def __getitem__(self, rows) -> np.ndarray:
        if not isinstance(rows, slice):
            rows = np.asarray(rows)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
        return self._convert(self.curves[rows], self._t10(rows))

    def __len__(self) -> int:
        return self.shape[0]

    def blocks(self, size: int):
        """(row slice, the conversion of those rows) for consecutive blocks of ``size`` rows."""
        for start in range(0, self.shape[0], size):
            rows = slice(start, start + size)
            yield rows, self[rows]

    def rows_of(self, curves: np.ndarray, kept: np.ndarray):
        """The same conversion over ``curves``, which hold this object's rows where ``kept`` (e.g. the brain's
        rows after they were moved forward in place)."""
        return type(self)(curves, self._t10(kept), *self.args)


class ConcentrationRows(_RowsOnDemand):
    """The concentration of (n, T) SER curves, converted on demand (:func:`concentration_from_ser`): for the steps
    that choose their voxels from the concentration of a few rows (an AIF search region, the automatic AIF's
    candidates) before the SER is converted in place."""

    def _convert(self, curves, t10):
        return concentration_from_ser(curves, t10, *self.args)[0]


class SERRows(_RowsOnDemand):
    """The SER of (n, T) concentration curves, converted on demand (:func:`ser_from_concentration`): the RLS of a
    concentration input reads its SER by row blocks, without a second copy of the curves."""

    def _convert(self, curves, t10):
        return ser_from_concentration(curves, t10, *self.args)


def ser_from_concentration(conc: np.ndarray, t10, flip_angle: float, tr: float, relaxivity: float) -> np.ndarray:
    """The forward SPGR model in SER units: what a concentration curve looks like as enhancement
    (float32; computed in float64 by blocks of ROW_BLOCK rows, so the temporaries stay a few MiB)."""
    conc = np.asarray(conc)
    t10 = np.asarray(t10, dtype=np.float64)
    if conc.ndim < 2 or conc.shape[0] <= ROW_BLOCK:
        return _spgr_forward(conc, t10, flip_angle, tr, relaxivity)
    out = np.empty(conc.shape, np.float32)
    for start in range(0, conc.shape[0], ROW_BLOCK):
        rows = slice(start, start + ROW_BLOCK)
        out[rows] = _spgr_forward(conc[rows], t10[rows] if t10.ndim == 1 else t10, flip_angle, tr, relaxivity)
    return out


def _spgr_forward(conc, t10, flip_angle, tr, relaxivity):
    t10 = t10[:, None] if t10.ndim == 1 else t10
    a = np.deg2rad(flip_angle)

    def spgr(r1):
        e = np.exp(-tr * r1)
        return (1.0 - e) / (1.0 - np.cos(a) * e)

    return (spgr(1.0 / t10 + relaxivity * np.asarray(conc, np.float64)) / spgr(1.0 / t10) - 1.0).astype(np.float32)

"""Resampling a 6-14 direction shell to the model's directions through a diffusion tensor.

Clinical DTI protocols often acquire 6 (Jones / Siemens' minimal set), 12 or 13-14 directions: too few for the
15 coefficients of order-4 spherical harmonics (:mod:`.gradients`). A diffusion tensor has 6 unknowns, and its
log-signal is linear in them: ``log(S/S0)(g) = -b gᵀDg = -b · t(g) · d`` with ``t(g) = (gx², gy², gz², 2gxgy,
2gxgz, 2gygz)`` and ``d`` the 6 tensor elements. A log-linear least-squares fit on the shell's directions followed
by evaluation on the model's directions is therefore ONE fixed matrix applied to log(S/S0) (b cancels, both sides
at the model's b after the per-volume rescaling):

    log(S/S0)_out = T_out · pinv(T_in) · log(S/S0)_in

so the per-voxel work is the same chunked matrix product as the SH path (:func:`.gradients.resampling_matrix`),
between a log and an exp. A tensor has one fibre direction per voxel: crossing fibres are not represented, so the
model's input is smoother in angle than a 64-direction acquisition's (the run says so in a warning).

Magnitude S/S0 can read 0 or below in noise (CSF at b = 1000 keeps only ~5 % of its b0); its log is not defined.
Samples are set to :data:`LOG_FLOOR` before the log: 0.01 is exp(-4.6), a diffusivity of 4.6 µm²/ms at
b = 1000, beyond free water at body temperature (3.0), so only noise reaches it.
"""

from __future__ import annotations

import numpy as np

#: S/S0 below this is set to it before the log (see the module docstring).
LOG_FLOOR = 0.01
#: a tensor has 6 unknowns: fewer unique directions cannot determine it.
TENSOR_MIN_DIRECTIONS = 6
#: the fit's design (n, 6) must be well conditioned: coplanar or clustered directions leave elements undetermined.
MAX_CONDITION = 100.0


def tensor_design(directions: np.ndarray) -> np.ndarray:
    """(n, 6) rows ``t(g) = (gx², gy², gz², 2gxgy, 2gxgz, 2gygz)`` of unit ``directions`` (the sign of g drops out)."""
    g = np.asarray(directions, np.float64)
    return np.stack([g[:, 0] ** 2, g[:, 1] ** 2, g[:, 2] ** 2, 2 * g[:, 0] * g[:, 1], 2 * g[:, 0] * g[:, 2],
                     2 * g[:, 1] * g[:, 2]], axis=1)


def design_condition(directions: np.ndarray) -> float:
    """Condition number of the fit's design; inf when the directions cannot determine a tensor."""
    design = tensor_design(directions)
    if design.shape[0] < 6:
        return float("inf")
    return float(np.linalg.cond(design))


def tensor_resampling_matrix(directions_in: np.ndarray, directions_out: np.ndarray) -> np.ndarray:
    """(n_out, n_in) matrix taking log(S/S0) on ``directions_in`` to log(S/S0) on ``directions_out`` through a
    log-linear least-squares tensor fit (exact interpolation when n_in = 6)."""
    return tensor_design(directions_out) @ np.linalg.pinv(tensor_design(directions_in))


def resample_log_signal(att: np.ndarray, matrix32: np.ndarray, out: np.ndarray, rows: int) -> int:
    """``out`` = exp(log(max(att, LOG_FLOOR)) @ matrix32), by blocks of ``rows`` (see preprocessing.GEMM_ROWS);
    ``att`` (float32, already clipped to [0, 1] and rescaled to the model's b) is overwritten by its log.
    Returns how many samples were raised to the floor."""
    floored = 0
    for s in range(0, att.shape[0], rows):
        floored += int(np.count_nonzero(att[s:s + rows] < LOG_FLOOR))
    np.maximum(att, np.float32(LOG_FLOOR), out=att)
    np.log(att, out=att)
    for s in range(0, att.shape[0], rows):
        np.matmul(att[s:s + rows], matrix32, out=out[s:s + rows])
    np.exp(out, out=out)
    return floored


def warning_text(unique: int, floored_fraction: float) -> str:
    """The run's warning: its input came from ``unique`` directions through a tensor (``floored_fraction`` of the
    shell's samples in the brain were raised to the log floor)."""
    return (f"the b ≈ 1000 shell has {unique} unique gradient directions, too few for spherical harmonics (15): the "
            "model's input was reconstructed from them through a diffusion tensor (log-linear fit; "
            f"{100 * floored_fraction:.1f} % of the samples, S/S0 below {LOG_FLOOR:g}, i.e. noise, were set to "
            f"{LOG_FLOOR:g} before the log). A tensor holds one fibre direction per voxel: crossing fibres are not "
            "represented, so the models see a smoother signal than the 30-64 direction acquisitions they were "
            "trained on; more directions would be within the training"
            + ("" if unique >= 12 else f". With {unique} directions the reconstructed S/S0 is the least accurate: on "
               "dipy's real crop 6 directions missed the 64-direction signal by 0.13 RMS, against 0.09 for 12-15"))

"""Tofts, extended Tofts and Patlak for every voxel at once: linear least squares + optional
nonlinear refinement, with a per-voxel bolus delay. dipy-style: ``PKModel(...).fit(curves) -> PKFit``.

Linear forms (Murase, MRM 2004;51:858): integrating the Tofts ODE dCt/dt = Ktrans·Cp - kep·Ct gives
    extended Tofts   Ct = (Ktrans + kep·vp)·∫Cp - kep·∫Ct + vp·Cp
    Tofts            Ct = Ktrans·∫Cp - kep·∫Ct
    Patlak           Ct = vp·Cp + Ktrans·∫Cp
so each voxel is one 2x2 or 3x3 normal-equation solve, all voxels batched; the AIF regressors are
shared and the only per-voxel regressor is ∫Ct. Murase's form puts the noisy ∫Ct among the
regressors (a small bias at low SNR); ``refine`` removes it with a batched Levenberg-Marquardt fit
of the exact model, whose exponential convolution is computed recursively, exactly for an AIF that
is piecewise linear between frames (no discrete-convolution error at coarse sampling).

Units: time in minutes inside this module (Ktrans, kep in 1/min); ``PKModel`` takes seconds.
Bolus delay: the AIF is shifted by each delay of a grid (0 .. max_delay) and every voxel keeps the
delay with the smallest linear-fit residual.

Layout (issue 17): a chunk of curves is held as (T, n), frames as rows, so the recursions over
frames and the reductions along them run on contiguous rows; the small normal equations are solved
element-wise over the voxels (LDLᵀ), and the refinement makes one pass over the frames per
iteration (model, exact ∂/∂kep and the sums its step needs) on the voxels not yet converged.

The model arithmetic (the recursive convolution, its derivative, the LM sums, the small SPD solves, the
model curves, the delayed AIF, the kep range) is in :mod:`.kinetics`; whether a fit determines ve (the
backflux test) is in :mod:`.backflux`. Both are re-exported here under their old names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import checks
from ..core.devices import blas_threads
from ..core.errors import InputError
from .backflux import _perpendicular, _span_gram_inverses, backflux_snr
from .backflux import VE_MIN_BACKFLUX_SNR, backflux_norm, ve_determined  # noqa: F401  (re-exported)
from .kinetics import (KEP_MAX, KEP_MIN, _exp_convolution_rows, _lm_sums, _segment_weights, _solve2_spd,
                       _solve3_spd, cumulative_integral, shifted)
from .kinetics import (_segment_derivatives, _torch_segment_weights, exp_convolution,  # noqa: F401
                       model_curves)  # (re-exported: imported from here by callers and tests)
from .parameters import Model

#: The smallest chunk of voxels the fit splits its input into (see PKModel._chunk).
MIN_CHUNK = 4096
#: The refinement stops a voxel once a step gains less than this fraction of its SSE (or could at
#: most, by the Gauss-Newton model): with ~57 residual degrees of freedom that is < 6e-4 σ² of
#: SSE, i.e. the parameters within ~3 % of their statistical standard error of the optimum.
REFINE_FTOL = 1e-5
#: ... or once its damping grew past this with no step accepted (a minimum or a bound: steps
#: that small change nothing measurable).
REFINE_LAMBDA_STOP = 1e3


@dataclass
class PKFit:
    """Per-voxel parameters: ktrans, kep [1/min], ve, vp [fractions], delay [s], r2 (fit quality)."""

    ktrans: np.ndarray
    kep: np.ndarray
    ve: np.ndarray
    vp: np.ndarray
    delay: np.ndarray
    r2: np.ndarray
    fitted: np.ndarray | None  # (n, T) model curves [mM] (None: fitted with keep_fitted=False)


class PKModel:
    """A pharmacokinetic model bound to an AIF and a time grid; ``fit`` solves all voxels at once.

    aif: plasma Cp (T,) [mM]; times: (T,) seconds (need not be uniform); max_delay, delay_step: the
    bolus-delay grid in s; refine: Levenberg-Marquardt on the exact model after the linear fit.
    exact_aif: an AIF known at any time (:class:`.population_placement.ExactPopulationAIF`, a population AIF on
    these times, ``aif`` its values at delay 0): each delay of the grid then evaluates it at the shifted times and
    takes its exact running integral, instead of interpolating ``aif``'s samples and summing them by trapezoids
    (which lose a first pass that falls between coarse frames). None (a measured AIF): the samples, as before.
    """

    def __init__(self, model: Model | str, aif: np.ndarray, times: np.ndarray, max_delay: float = 0.0,
                 delay_step: float = 1.0, refine: bool = False, refine_iterations: int = 15,
                 device: str = "cpu", chunk_voxels: int = 65536, exact_aif=None):
        try:
            self.model = Model(model)
        except ValueError:
            raise InputError(f"{model!r} is not a model; choose one of {', '.join(m.value for m in Model)}") from None
        self.aif, self.times = checks.aif_and_times(aif, times)
        self.t_min = self.times / 60.0
        n_delays = int(np.floor(max_delay / delay_step + 1e-9)) + 1 if max_delay > 0 else 1
        self.delays = np.arange(n_delays) * delay_step
        self.refine = refine and self.model is not Model.PATLAK  # Patlak is linear: LS is already exact
        self.refine_iterations = refine_iterations
        self.device = device
        self.chunk_voxels = chunk_voxels
        self.exact_aif = exact_aif

    def _shifted(self, delay: float) -> np.ndarray:
        """The AIF arriving ``delay`` s later on the frame times: exact for an exact AIF, else interpolated."""
        if self.exact_aif is not None:
            return self.exact_aif.values(delay)
        return shifted(self.aif, self.times, delay)

    def _exact_integrals(self, delay: np.ndarray) -> np.ndarray | None:
        """Patlak's ∫Cp rows (D, T) for :meth:`_delay_table`'s rows of ``delay``, exact for an exact AIF; None
        otherwise (the model pass then sums the table's samples by trapezoids, as the linear fit did)."""
        if self.exact_aif is None or self.model is not Model.PATLAK:
            return None
        delays = np.unique(delay) if delay.size else self.delays[:1]
        return np.stack([self.exact_aif.integral(d) for d in delays])

    def fit(self, curves: np.ndarray, progress=None, keep_fitted: bool = True, dtype=np.float64) -> PKFit:
        """Fit every curve (n, T). keep_fitted=False leaves ``PKFit.fitted`` None (``curves(fit)``
        recomputes the model curves when they are wanted): one (n, T) array less to hold.
        dtype: of the per-voxel parameters returned. The fit computes in float64 either way; float32 stores
        each chunk's values as float32 maps would hold them (the same cast: half the memory during the fit,
        issue 17), and the delays too when float32 holds the grid's values exactly (else float64). With
        ``refine`` the linear fit is held in float64 for the refinement and cast at the end.

        BLAS is held to one thread inside (threadpoolctl, when installed): the fit's products are
        (n_delays·s x T) by (T x chunk), memory-bound, and a second BLAS thread's spin-waits made the
        linear fit take 3x the CPU time (1.1 s instead of 0.4 s for 262k voxels) next to other work."""
        with blas_threads(1):
            return self._fit(curves, progress, keep_fitted, np.dtype(dtype))

    def _fit(self, curves, progress, keep_fitted, dtype):
        curves = checks.curve_matrix(curves, self.times.size)
        n = curves.shape[0]
        chunk = self._chunk(n)
        store = np.dtype(np.float64) if self.refine else dtype  # (the refinement starts from float64)
        out = {f: np.empty(n, store) for f in PKFit.__dataclass_fields__ if f != "fitted"}  # written chunk by chunk
        delay_dtype = dtype if np.array_equal(self.delays.astype(dtype), self.delays) else np.dtype(np.float64)
        if store != delay_dtype:
            out["delay"] = np.empty(n, delay_dtype)
        out["fitted"] = np.empty(curves.shape, np.float32) if keep_fitted else None
        stages = 3 if self.refine else 1
        done = 0

        def report(rows):
            nonlocal done
            done += rows
            if progress is not None:
                progress(min(1.0, done / max(stages * n, 1)))

        for start in range(0, n, chunk):  # chunks bound the (T, chunk) float64 temporaries
            rows = slice(start, start + chunk)
            yt = self._frames_as_rows(curves[rows])
            ktrans, kep, vp, delay = self._linear_chunk(yt)
            out["delay"][rows] = delay
            if self.refine:  # refined below over larger batches, then finished
                out["ktrans"][rows], out["kep"][rows], out["vp"][rows] = ktrans, kep, vp
            else:
                self._finish_chunk(yt, ktrans, kep, vp, delay, out, rows)
            del yt
            report(ktrans.size)
        if self.refine:
            group = np.searchsorted(self.delays, out["delay"])
            table = np.stack([self._shifted(d) for d in self.delays])
            out["ktrans"], out["kep"], out["vp"] = self._refine(curves, table, group, out["ktrans"], out["kep"],
                                                                out["vp"], report)
            for start in range(0, n, chunk):
                rows = slice(start, start + chunk)
                yt = self._frames_as_rows(curves[rows])
                self._finish_chunk(yt, out["ktrans"][rows], out["kep"][rows], out["vp"][rows], out["delay"][rows],
                                   out, rows)
                del yt
                report(min(chunk, n - start))
        for name in ("ktrans", "kep", "vp", "ve", "r2"):
            out[name] = out[name].astype(dtype, copy=False)  # (refined in float64: cast at the end)
        out["delay"] = out["delay"].astype(delay_dtype, copy=False)
        return PKFit(**out)

    @staticmethod
    def _frames_as_rows(block: np.ndarray) -> np.ndarray:
        yt = np.empty((block.shape[1], block.shape[0]))
        yt[...] = block.T  # frames as rows, float64: every step of the fit reduces along frames
        return yt

    def curves(self, fit: PKFit) -> np.ndarray:
        """The model curves (n, T) float32 of a fit made with ``keep_fitted=False`` (chunk by chunk)."""
        n = fit.ktrans.shape[0]
        out = np.empty((n, self.t_min.size), np.float32)
        table, group = self._delay_table(fit.delay)
        chunk = self._chunk(n)
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            model = np.empty((self.t_min.size, out[rows].shape[0]))
            self._model_pass(None, table, group[rows], fit.ktrans[rows], fit.kep[rows], fit.vp[rows], model,
                             integrals=self._exact_integrals(fit.delay))
            out[rows] = model.T
        return out

    def ve_backflux_snr(self, curves: np.ndarray, fit: PKFit) -> np.ndarray:
        """Per voxel: :func:`backflux_norm` of the fit over the noise SD of its residual (sqrt(SSE/(T - p)), p the
        fitted parameters and the delay), in one pass over the frames per chunk (the model curve and E(kep) by the
        fit's recursion). :func:`ve_determined` turns it into the voxels whose ve the data determine. Patlak: 0."""
        curves = np.asarray(curves)
        n, n_frames = curves.shape
        out = np.zeros(n)
        if self.model is Model.PATLAK or n == 0:
            return out
        delay = np.asarray(fit.delay, dtype=np.float64)
        table, group = self._delay_table(delay)
        inverses, integral = _span_gram_inverses(table, self.t_min)
        n_params = (3 if self.model is Model.EXTENDED_TOFTS else 2) + (1 if self.delays.size > 1 else 0)
        chunk = self._chunk(n)
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            yt = self._frames_as_rows(curves[rows])
            sums = {}
            ktrans = np.asarray(fit.ktrans[rows], dtype=np.float64)
            resid, _ = self._model_pass(yt, table, group[rows], ktrans, np.asarray(fit.kep[rows], dtype=np.float64),
                                        np.asarray(fit.vp[rows], dtype=np.float64), backflux=(sums, integral))
            del yt
            norm = ktrans * np.sqrt(_perpendicular(sums["ee"], sums["ec"], sums["ei"], inverses, group[rows]))
            out[rows] = backflux_snr(norm, resid, n_frames - n_params)
        return out

    def _chunk(self, n: int) -> int:
        """Voxels per chunk of the linear fit: sized by bytes against the curves. A chunk's float64
        (T, chunk) curves and cumulative integral (16·T bytes a voxel, two at a time) stay within 1/16 of
        the float32 curves (4·T bytes a voxel): chunk <= n/64, in whole multiples of MIN_CHUNK (at least
        one), at most chunk_voxels. On a whole head (curves ~0.5x the series) that is <= ~0.03x the
        series; 1/16 of the voxels (issue 17's first round) made it ~0.12x, resident from the first
        chunk on. The chunk size moves the float64 parameters by rounding only (the products' summation
        order: <= ~1e-10 relative measured), within one float32 ulp of every map (the maps of the
        whole-brain reference object and the test phantoms are equal; Testing/test_dce_memory.py)."""
        return max(1, min(self.chunk_voxels, MIN_CHUNK * max(1, n // (64 * MIN_CHUNK))))

    def _refine_batch(self, n: int) -> int:
        """Voxels per batch of the refinement: twice 1/16 of the curves (at least 2·MIN_CHUNK, at most
        2·chunk_voxels), its float32 curves and state about the size of the linear fit's first chunks."""
        return 2 * max(1, min(self.chunk_voxels, max(MIN_CHUNK, -(-n // 16))))

    def _delay_table(self, delay: np.ndarray):
        """The shifted AIFs (D, T) of the delays present and each voxel's row of it."""
        delays = np.unique(delay) if delay.size else self.delays[:1]
        return np.stack([self._shifted(d) for d in delays]), np.searchsorted(delays, delay)

    # --- linear least squares over the delay grid ------------------------------------------------
    def _design(self, cp: np.ndarray, delay: float = 0.0):
        """The regressors shared by all voxels (k_shared, T); -∫Ct is added per voxel except for Patlak."""
        int_cp = cumulative_integral(cp, self.t_min) if self.exact_aif is None else self.exact_aif.integral(delay)
        if self.model is Model.PATLAK:
            return np.stack([cp, int_cp])
        if self.model is Model.TOFTS:
            return np.stack([int_cp])
        return np.stack([int_cp, cp])

    def _linear(self, shared: np.ndarray, y_shared: np.ndarray, i_shared: np.ndarray, ss: dict):
        """Coefficients and residual sum of squares of every voxel for one AIF delay.

        shared: (s, T) regressors of this delay; y_shared = y @ shared.T and i_shared = ∫Ct @ shared.T,
        computed for all delays in one product by the caller (tall-skinny products dominate the cost)."""
        if self.model is Model.PATLAK:
            gram = shared @ shared.T
            coef = np.linalg.solve(gram + 1e-12 * np.trace(gram) * np.eye(2), y_shared.T).T  # (n, 2)
            sse = ss["yy"] - np.einsum("nk,nk->n", coef, y_shared)
            return coef, np.maximum(sse, 0.0)
        # [[G, -b], [-bᵀ, ∫Ct·∫Ct]] with G = shared·sharedᵀ (the same for all voxels) and b = shared·∫Ct,
        # ridge 1e-10·trace + 1e-30 on the diagonal, solved element-wise over the voxels by LDLᵀ
        # (symmetric positive definite: no pivoting needed) instead of one LAPACK call per voxel
        gram = shared @ shared.T
        ii = ss["ii"]
        ridge = 1e-10 * (np.trace(gram) + ii) + 1e-30
        if shared.shape[0] == 1:  # Tofts: (∫Cp, -∫Ct)
            x = _solve2_spd(gram[0, 0] + ridge, -i_shared[:, 0], ii + ridge, y_shared[:, 0], -ss["iy"])
        else:  # extended Tofts: (∫Cp, Cp, -∫Ct)
            x = _solve3_spd(gram[0, 0] + ridge, gram[0, 1], -i_shared[:, 0], gram[1, 1] + ridge, -i_shared[:, 1],
                            ii + ridge, y_shared[:, 0], y_shared[:, 1], -ss["iy"])
        sse = ss["yy"] - sum(x[j] * y_shared[:, j] for j in range(shared.shape[0])) + x[-1] * ss["iy"]
        return np.stack(x, axis=1), np.maximum(sse, 0.0)

    def _parameters(self, coef: np.ndarray):
        """Unconstrained (ktrans, kep, vp) from the linear coefficients, and which voxels leave the
        physical ranges (Ktrans, vp >= 0; 0 <= kep <= KEP_MAX; vp <= 1)."""
        zero = np.zeros(coef.shape[0])
        if self.model is Model.PATLAK:
            vp, ktrans, kep = coef[:, 0], coef[:, 1], zero
        elif self.model is Model.TOFTS:
            ktrans, kep, vp = coef[:, 0], coef[:, 1], zero
        else:
            b1, vp, kep = coef[:, 0], coef[:, 1], coef[:, 2]
            ktrans = b1 - kep * vp
        outside = (ktrans < 0) | (vp < 0) | (vp > 1) | (kep < 0) | (kep > KEP_MAX)
        return ktrans.copy(), kep.copy(), vp.copy(), outside

    def _on_the_boundary(self, yt, cp, kep, delay: float = 0.0):
        """Least squares with kep fixed at its bound: Ct = Ktrans·E(kep) [+ vp·Cp] is linear in
        (Ktrans, vp); a negative one is set to 0 and the other refitted alone. Clipping the unconstrained
        solution instead keeps Ktrans = b1 - kep·vp from the wrong kep, which on noise-only voxels gave
        Ktrans 10-100 times the tumor's. yt: (T, m) curves, frames as rows."""
        if self.model is Model.PATLAK:
            int_cp = cumulative_integral(cp, self.t_min) if self.exact_aif is None else self.exact_aif.integral(delay)
            e = np.repeat(int_cp[:, None], yt.shape[1], axis=1)
        else:
            e = _exp_convolution_rows(cp, self.t_min, kep)
        ee, ey = np.einsum("tn,tn->n", e, e), np.einsum("tn,tn->n", e, yt)
        k_only = np.maximum(ey / np.maximum(ee, 1e-30), 0.0)
        if self.model is Model.TOFTS:
            return k_only, np.zeros(yt.shape[1])
        ec, cc, cy = cp @ e, float(cp @ cp), cp @ yt
        ridge = 1e-12 * (ee + cc) + 1e-30
        kt, v = _solve2_spd(ee + ridge, ec, cc + ridge, ey, cy)
        v_only = np.maximum(cy / max(cc, 1e-30), 0.0)
        kt, v = np.where(kt < 0, 0.0, kt), np.where(kt < 0, v_only, v)
        kt, v = np.where(v < 0, k_only, kt), np.where(v < 0, 0.0, v)
        return kt, np.clip(v, 0.0, 1.0)

    def _model_pass(self, yt, table, group, ktrans, kep, vp, out=None, backflux=None, integrals=None):
        """Frame by frame over (T, n): the model curve of each voxel (its AIF: row ``group`` of
        ``table``), written to ``out`` (T, n) when given; with curves ``yt`` (T, n), the residual and
        the total sums of squares (about the curve's mean) per voxel for R². The arithmetic of the
        curve is ``model_curves``'s (Ktrans·E + vp·Cp, E by the same recursion). backflux (a dict, ∫Cp of
        each row of ``table``): the dict gets E·E, E·Cp and E·∫Cp per voxel (:meth:`ve_backflux_snr`)."""
        n_frames, n = table.shape[1], group.shape[0]
        tab = np.ascontiguousarray(table.T)  # (T, D)
        patlak = self.model is Model.PATLAK
        if patlak:
            int_tab = np.ascontiguousarray((cumulative_integral(table, self.t_min) if integrals is None
                                            else integrals).T)
        else:
            weights = {}
            kep = kep.astype(np.float64)
        conv, tmp, model = np.zeros(n), np.empty(n), np.empty(n)
        c_prev, c = np.empty(n), np.empty(n)
        resid, total = np.zeros(n), np.zeros(n)
        if backflux is not None and not patlak:
            sums, int_rows = backflux
            int_rows = np.ascontiguousarray(int_rows.T)  # (T, D)
            integral = np.empty(n)
            sums.update(ee=np.zeros(n), ec=np.zeros(n), ei=np.zeros(n))
        else:
            sums = None
        mean = yt.mean(axis=0) if yt is not None else None
        for i in range(n_frames):
            np.take(tab[i], group, out=c)
            if patlak:
                np.take(int_tab[i], group, out=conv)
            elif i > 0:
                h = round(float(self.t_min[i] - self.t_min[i - 1]), 12)
                if h not in weights:
                    weights[h] = (*_segment_weights(kep, h), np.exp(-kep * h))
                wa, wb, decay = weights[h]
                conv *= decay
                np.multiply(wa, c_prev, out=tmp)
                conv += tmp
                np.multiply(wb, c, out=tmp)
                conv += tmp
                if sums is not None:  # (E is 0 on the first frame)
                    np.take(int_rows[i], group, out=integral)
                    np.multiply(conv, conv, out=tmp)
                    sums["ee"] += tmp
                    np.multiply(conv, c, out=tmp)
                    sums["ec"] += tmp
                    np.multiply(conv, integral, out=tmp)
                    sums["ei"] += tmp
            row = out[i] if out is not None else model
            np.multiply(ktrans, conv, out=row)
            if self.model is not Model.TOFTS:
                np.multiply(vp, c, out=tmp)
                row += tmp
            if yt is not None:
                np.subtract(yt[i], row, out=tmp)
                tmp *= tmp
                resid += tmp
                np.subtract(yt[i], mean, out=tmp)
                tmp *= tmp
                total += tmp
            c_prev, c = c, c_prev
        return resid, total

    def _linear_chunk(self, yt: np.ndarray):
        """(ktrans, kep, vp, delay) of the linear fit over the delay grid, out-of-range voxels refitted
        on the boundary; yt: (T, n) float64 curves, frames as rows."""
        n = yt.shape[1]
        int_ct = np.empty_like(yt)  # cumulative trapezoid along the frames (cumulative_integral's arithmetic)
        int_ct[0] = 0.0
        np.add(yt[1:], yt[:-1], out=int_ct[1:])
        int_ct[1:] *= 0.5
        int_ct[1:] *= np.diff(self.t_min)[:, None]
        for i in range(2, int_ct.shape[0]):  # the running sum in place, row by row (as np.cumsum adds)
            int_ct[i] += int_ct[i - 1]
        ss = {"yy": np.einsum("tn,tn->n", yt, yt), "ii": np.einsum("tn,tn->n", int_ct, int_ct),
              "iy": np.einsum("tn,tn->n", int_ct, yt)}
        designs = [self._design(self._shifted(d), d) for d in self.delays]
        stacked = np.concatenate(designs)  # (n_delays·s, T): one product per voxel matrix for all delays
        i_all = stacked @ int_ct  # (n_delays·s, n)
        del int_ct  # before y_all is made: one (n_delays·s, n) product fewer beside the two (T, n) arrays
        y_all = stacked @ yt
        best_coef = best_delay = best_sse = None
        s = designs[0].shape[0]
        for j, d in enumerate(self.delays):
            coef, sse = self._linear(designs[j], y_all[j * s:(j + 1) * s].T, i_all[j * s:(j + 1) * s].T, ss)
            if best_coef is None:
                best_coef, best_delay, best_sse = coef, np.zeros(n), sse
                continue
            better = sse < best_sse  # ties keep the shorter delay
            np.copyto(best_coef, coef, where=better[:, None])
            np.copyto(best_delay, d, where=better)
            np.copyto(best_sse, sse, where=better)
        del y_all, i_all
        ktrans, kep, vp, outside = self._parameters(best_coef)
        kep = np.clip(kep, 0.0, KEP_MAX)
        table, group = self._delay_table(best_delay)
        for g in np.unique(group[outside]):  # boundary refit per delay of the grid (it needs the linear kep only)
            fix = np.flatnonzero((group == g) & outside)
            ktrans[fix], vp[fix] = self._on_the_boundary(yt[:, fix], table[g], kep[fix], np.unique(best_delay)[g])
        return ktrans, kep, vp, best_delay

    def _finish_chunk(self, yt, ktrans, kep, vp, delay, out: dict, rows: slice):
        """ve, R² (and the model curves when kept) of a chunk's final parameters, written to ``out``."""
        table, group = self._delay_table(delay)
        fitted = np.empty_like(yt) if out["fitted"] is not None else None
        resid, total = self._model_pass(yt, table, group, ktrans, kep, vp, fitted,
                                        integrals=self._exact_integrals(delay))
        with np.errstate(divide="ignore", invalid="ignore"):
            ve = np.where(kep > 0, np.clip(ktrans / np.where(kep > 0, kep, 1.0), 0.0, 1.0),
                          np.where(ktrans > 0, 1.0, 0.0))
        if self.model is Model.PATLAK:
            ve = np.zeros_like(ktrans)  # no backflux: ve is not defined by Patlak
        r2 = np.where(total > 0, 1.0 - resid / np.where(total > 0, total, 1.0), 0.0)
        for name, value in (("ktrans", ktrans), ("kep", kep), ("vp", vp), ("ve", ve), ("r2", r2)):
            out[name][rows] = value
        if fitted is not None:
            out["fitted"][rows] = fitted.T

    # --- nonlinear refinement -----------------------------------------------------------------------
    def _refine(self, curves, cps, group, ktrans, kep, vp, report=None):
        """Batched Levenberg-Marquardt on (Ktrans, kep[, vp]) of the exact model, from the linear fit.

        curves: (n, T); cps: (D, T) the AIFs of the delay grid; group: (n,) each voxel's row of cps.
        Each iteration is ONE pass over the frames at the trial parameters: the recursive convolution
        E(kep) and its exact derivative ∂E/∂kep (the same recursion differentiated: the segment weights'
        derivatives in closed form), the residual and the nine sums of products that the next step
        needs (JᵀJ, Jᵀr, the SSE) are accumulated frame by frame, so no (n, T, p) Jacobian is stored.
        Voxels stop when converged (the accepted step gained < REFINE_FTOL of their SSE, the
        Gauss-Newton model predicts no such gain, or the damping grew past REFINE_LAMBDA_STOP with no
        step accepted) or after refine_iterations steps; the batch shrinks to the voxels still
        moving. Batches of voxels are refined in turn (memory), and the few slow voxels of one batch
        go on with the next instead of holding a near-empty batch for many passes.

        float32 for the curves and the per-frame arithmetic: the data are float32 already, and the
        recursion's rounding (~60 steps of 6e-8 relative) perturbs the SSE by ~1e-6 of itself — ten
        times below REFINE_FTOL, and a parameter error below 1 % of its statistical standard error
        at any SNR. The 3x3 steps are solved in float64 (JᵀJ is ill-conditioned)."""
        import torch

        from ..core.devices import resolve_device

        dev = resolve_device(self.device)
        f32, f64 = torch.float32, torch.float64
        extended = self.model is Model.EXTENDED_TOFTS
        n, n_frames = curves.shape
        t = self.t_min
        steps = [round(float(t[i] - t[i - 1]), 12) for i in range(1, n_frames)]
        outs = tuple(np.asarray(a, dtype=np.float64).copy() for a in (ktrans, np.maximum(kep, KEP_MIN), vp))
        cps = np.asarray(cps, dtype=np.float64)
        table_t = torch.as_tensor(np.ascontiguousarray(cps.T), dtype=f32, device=dev)  # (T, D)
        cc_table = torch.as_tensor((cps * cps).sum(1), dtype=f64, device=dev)  # Cp·Cp of each AIF
        batch = self._refine_batch(n)

        def start(rows):
            g = torch.as_tensor(group[rows], device=dev)
            s = {"Y": torch.as_tensor(np.ascontiguousarray(curves[rows].T, dtype=np.float32), device=dev), "g": g,
                 "cc": cc_table[g], "pos": np.arange(n)[rows]}
            s["K"], s["E"], s["V"] = (torch.as_tensor(o[rows], dtype=f64, device=dev) for o in outs)
            s["lam"] = torch.full_like(s["K"], 1e-2)
            s["iters"] = torch.zeros(s["K"].shape, dtype=torch.int32, device=dev)
            s["frozen"] = torch.zeros(s["K"].shape, dtype=torch.bool, device=dev)
            s["sums"] = _lm_sums(s["Y"], table_t, g, s["K"], s["E"], s["V"], steps, extended)
            return s

        def merge(a, b):
            return {k: np.concatenate([a[k], b[k]]) if k == "pos" else torch.cat([a[k], b[k]], dim=-1) for k in a}

        def finish(s, done, compact=False):
            """Write the finished voxels out; the state of the rest. Finished voxels are dropped from
            the batch once they are 5 % of it (gathering the curves of the rest costs a quarter of a
            pass); until then they ride along frozen (no step is taken for them)."""
            rows = done.cpu().numpy()
            for o, k in zip(outs, ("K", "E", "V")):
                o[s["pos"][rows]] = s[k].cpu().numpy()[rows]
            if not compact and int(done.sum()) < 0.05 * done.numel():
                s["frozen"] = done
                return s
            keep = torch.nonzero(~done)[:, 0]
            return {k: v[keep.cpu().numpy()] if k == "pos" else v[..., keep] for k, v in s.items()}

        def moving(s):
            return s["K"].numel() - int(s["frozen"].sum())

        def iterate(s):
            """One Levenberg-Marquardt iteration of every voxel in s; the voxels now finished."""
            (dk, de, *dv), gain = self._lm_step(s["sums"], s["K"], s["E"], s["V"], s["cc"], s["lam"], extended)
            hold = (gain <= REFINE_FTOL * s["sums"][0]) | s["frozen"]  # the quadratic model promises no useful gain
            K2 = torch.where(hold, s["K"], torch.clamp(s["K"] + dk, min=0.0))
            E2 = torch.where(hold, s["E"], torch.clamp(s["E"] + de, KEP_MIN, KEP_MAX))
            V2 = torch.where(hold, s["V"], torch.clamp(s["V"] + dv[0], 0.0, 1.0)) if extended else s["V"]
            trial = _lm_sums(s["Y"], table_t, s["g"], K2, E2, V2, steps, extended)
            ok = (trial[0] < s["sums"][0]) & ~hold
            gained = s["sums"][0] - trial[0]
            for key, trial_value in (("K", K2), ("E", E2), ("V", V2)):
                s[key] = torch.where(ok, trial_value, s[key])
            s["sums"] = torch.where(ok, trial, s["sums"])
            s["lam"] = torch.where(ok, s["lam"] * 0.3, s["lam"] * 10.0).clamp(1e-8, 1e8)
            s["iters"] += 1
            return (hold | (ok & (gained <= REFINE_FTOL * trial[0])) | (~ok & (s["lam"] > REFINE_LAMBDA_STOP))
                    | (s["iters"] >= self.refine_iterations))

        def run():
            pool = None
            for first in range(0, n, batch):
                rows = slice(first, first + batch)
                s = start(rows) if pool is None else merge(pool, start(rows))
                pool = None
                while moving(s):
                    s = finish(s, iterate(s))
                    if moving(s) < batch // 4 and first + batch < n:  # the slow few go on with the next batch
                        pool = finish(s, s["frozen"], compact=True)
                        break
                if report is not None:
                    report(min(batch, n - first))
            while pool is not None and moving(pool):
                pool = finish(pool, iterate(pool))

        # One CPU thread: each op covers one frame of a batch (tens of µs), where a second OpenMP thread
        # gains little alone and, next to any other busy process, spins at every op's barrier (a
        # whole-brain refinement took 40 s of wall and 17 s of CPU time instead of ~1 s on 2 cores).
        threads = torch.get_num_threads()
        if dev.type == "cpu":
            torch.set_num_threads(1)
        try:
            run()
        finally:
            torch.set_num_threads(threads)
        return outs

    @staticmethod
    def _lm_step(s, k, e, v, cc, lam, extended):
        """The damped Gauss-Newton step (float64) and the gain the undamped step would promise.
        A parameter on a bound whose gradient points out of the range is held there (its row and
        column leave the system): projected Gauss-Newton, so a voxel resting on a bound converges
        instead of proposing steps that the clamp undoes."""
        import torch

        _, ee, ed, ec, dd, dc, er, dr, cr = s
        a = {(0, 0): ee, (0, 1): k * ed, (1, 1): k * k * dd}
        b = [er, k * dr]
        held = [(k <= 0) & (er <= 0), ((e <= KEP_MIN) & (b[1] <= 0)) | ((e >= KEP_MAX) & (b[1] >= 0))]
        if extended:
            a.update({(0, 2): ec, (1, 2): k * dc, (2, 2): cc})
            b.append(cr)
            held.append(((v <= 0) & (cr <= 0)) | ((v >= 1) & (cr >= 0)))
        p = len(b)
        for j in range(p):
            b[j] = torch.where(held[j], 0.0, b[j])
            a[j, j] = torch.where(held[j], 1.0, a[j, j])
            for m in range(p):
                if m != j:
                    key = (min(j, m), max(j, m))
                    a[key] = torch.where(held[j], 0.0, a[key])
        eps = 1e-12
        off = [a[key] for key in sorted(a) if key[0] != key[1]]

        def system(damping):
            diag = [a[j, j] * (1 + damping) + eps for j in range(p)]
            if extended:
                return _solve3_spd(diag[0], off[0], off[1], diag[1], off[2], diag[2], *b)
            return _solve2_spd(diag[0], off[0], diag[1], *b)

        gn = system(0.0)
        return system(lam), sum(x * g for x, g in zip(gn, b))

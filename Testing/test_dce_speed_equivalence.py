"""The DCE speed work of issue 17 against the arithmetic it replaced.

Unchanged arithmetic, so bit-identical (exact equality): ``exp_convolution`` (frames written in
place into a (T, n) array instead of stacked columns) and, given the same parameters, the model
curves the fit returns.

Changed arithmetic, so compared with tolerances that follow it:
* the linear fit solves its 3x3 (2x2) normal equations element-wise by LDLᵀ instead of one LAPACK
  LU per voxel, and reduces along frames in a (T, n) layout: both backward stable, so the
  coefficients may differ by ~κ(Gram)·eps and the chosen delay never (the SSEs of two delays are
  not within rounding of each other on these curves);
* the Levenberg-Marquardt refinement differentiates the recursion exactly instead of by a forward
  difference, stops converged voxels, holds parameters that rest on a bound, and runs in float32:
  a different path to the same minimum, so it is held to the SSE it reaches and to its accuracy
  against the phantom's truth, beside the previous refinement (kept below as the reference).
"""

from __future__ import annotations

import numpy as np
import pytest

from BBBAnomalyLib.dce.conversion import concentration_from_ser, enhancement_ratio
from BBBAnomalyLib.dce.models import (
    KEP_MAX, PKFit, PKModel, _exp_convolution_rows, _lm_sums, _segment_derivatives, _segment_weights, _solve2_spd,
    _solve3_spd, _torch_segment_weights, cumulative_integral, exp_convolution, model_curves, shifted
)
from BBBAnomalyLib.dce.parameters import Model
from BBBAnomalyLib.phantoms.dce import make_dce_phantom

EPS = np.finfo(np.float64).eps


def reference_exp_convolution(cp, t, kep, xp=np):
    """The form before issue 17: contiguous columns, stacked once."""
    prev = kep * 0.0
    columns = [prev]
    weights = {}
    for i in range(1, t.shape[0]):
        h = round(float(t[i] - t[i - 1]), 12)
        if h not in weights:
            if xp is np:
                weights[h] = (*_segment_weights(kep, h), np.exp(-kep * h))
            else:
                weights[h] = (*_torch_segment_weights(kep, h), xp.exp(-kep * h))
        wa, wb, decay = weights[h]
        prev = decay * prev + wa * float(cp[i - 1]) + wb * float(cp[i])
        columns.append(prev)
    return xp.stack(columns, 1) if xp is not np else np.stack(columns, axis=1)


class ReferencePKModel(PKModel):
    """The fit before the second round of issue 17: (n, T) layout, a LAPACK solve per voxel and
    delay, the refinement in float64 with a forward-difference ∂/∂kep, 15 iterations for every voxel."""

    def fit(self, curves, progress=None):
        parts = [self._reference_chunk(np.asarray(curves[s:s + self.chunk_voxels], dtype=np.float64))
                 for s in range(0, curves.shape[0], self.chunk_voxels)]
        return PKFit(*(np.concatenate([getattr(p, f) for p in parts]) for f in PKFit.__dataclass_fields__))

    def _linear(self, shared, y_shared, i_shared, ss):
        if self.model is Model.PATLAK:
            return super()._linear(shared, y_shared, i_shared, ss)
        s = shared.shape[0]
        k = s + 1
        n = y_shared.shape[0]
        gram = np.empty((n, k, k))
        gram[:, :s, :s] = shared @ shared.T
        gram[:, :s, s] = -i_shared
        gram[:, s, :s] = -i_shared
        gram[:, s, s] = ss["ii"]
        rhs = np.concatenate([y_shared, -ss["iy"][:, None]], axis=1)
        ridge = 1e-10 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(k) + 1e-30 * np.eye(k)
        coef = np.linalg.solve(gram + ridge, rhs[..., None])[..., 0]
        sse = ss["yy"] - np.einsum("nk,nk->n", coef, rhs)
        return coef, np.maximum(sse, 0.0)

    def _reference_boundary(self, y, cp, kep):
        if self.model is Model.PATLAK:
            basis = [cumulative_integral(cp, self.t_min)[None].repeat(y.shape[0], 0)]
        else:
            basis = [exp_convolution(cp, self.t_min, kep)]
        if self.model is not Model.TOFTS:
            basis.append(np.broadcast_to(cp, y.shape))

        def single(b):
            return np.maximum(np.einsum("nt,nt->n", b, y) / np.maximum(np.einsum("nt,nt->n", b, b), 1e-30), 0.0)

        k_only = single(basis[0])
        if len(basis) == 1:
            return k_only, np.zeros(y.shape[0])
        e, c = basis
        g = np.stack([np.stack([np.einsum("nt,nt->n", e, e), np.einsum("nt,nt->n", e, c)], -1),
                      np.stack([np.einsum("nt,nt->n", e, c), np.einsum("nt,nt->n", c, c)], -1)], -2)
        rhs = np.stack([np.einsum("nt,nt->n", e, y), np.einsum("nt,nt->n", c, y)], -1)
        g = g + 1e-12 * np.trace(g, axis1=1, axis2=2)[:, None, None] * np.eye(2) + 1e-30 * np.eye(2)
        kt, v = np.linalg.solve(g, rhs[..., None])[..., 0].T
        v_only = single(c)
        kt, v = np.where(kt < 0, 0.0, kt), np.where(kt < 0, v_only, v)
        kt, v = np.where(v < 0, k_only, kt), np.where(v < 0, 0.0, v)
        return kt, np.clip(v, 0.0, 1.0)

    def _reference_chunk(self, y):
        int_ct = cumulative_integral(y, self.t_min)
        ss = {"yy": np.einsum("nt,nt->n", y, y), "ii": np.einsum("nt,nt->n", int_ct, int_ct),
              "iy": np.einsum("nt,nt->n", int_ct, y)}
        best_sse = np.full(y.shape[0], np.inf)
        best_coef = best_delay = None
        designs = [self._design(shifted(self.aif, self.times, d)) for d in self.delays]
        stacked = np.concatenate(designs)
        y_all, i_all = y @ stacked.T, int_ct @ stacked.T
        for j, d in enumerate(self.delays):
            cols = slice(j * designs[0].shape[0], (j + 1) * designs[0].shape[0])
            coef, sse = self._linear(designs[j], y_all[:, cols], i_all[:, cols], ss)
            better = sse < best_sse
            if best_coef is None:
                best_coef, best_delay = coef, np.zeros(y.shape[0])
            best_coef[better] = coef[better]
            best_delay[better] = d
            best_sse[better] = sse[better]
        ktrans, kep, vp, outside = self._parameters(best_coef)
        kep = np.clip(kep, 0.0, KEP_MAX)
        fitted = np.empty_like(y)
        delays = np.unique(best_delay)
        aifs = {d: shifted(self.aif, self.times, d) for d in delays}
        for d in delays:
            fix = (best_delay == d) & outside
            if fix.any():
                ktrans[fix], vp[fix] = self._reference_boundary(y[fix], aifs[d], kep[fix])
        if self.refine:
            for d in delays:
                rows = best_delay == d
                ktrans[rows], kep[rows], vp[rows] = self._reference_refine(y[rows], aifs[d], ktrans[rows],
                                                                           kep[rows], vp[rows])
        for d in delays:
            rows = best_delay == d
            fitted[rows] = model_curves(self.model, aifs[d], self.t_min, ktrans[rows], kep[rows], vp[rows])
        with np.errstate(divide="ignore", invalid="ignore"):
            ve = np.where(kep > 0, np.clip(ktrans / np.where(kep > 0, kep, 1.0), 0.0, 1.0),
                          np.where(ktrans > 0, 1.0, 0.0))
        if self.model is Model.PATLAK:
            ve = np.zeros_like(ktrans)
        resid = ((y - fitted) ** 2).sum(axis=1)
        total = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        r2 = np.where(total > 0, 1.0 - resid / np.where(total > 0, total, 1.0), 0.0)
        return PKFit(ktrans, kep, ve, vp, best_delay, r2, fitted.astype(np.float32))

    def _reference_refine(self, y, cp, ktrans, kep, vp):
        torch = pytest.importorskip("torch")
        tt = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        Y, K, E, V, Cp = tt(y), tt(ktrans), tt(np.maximum(kep, 1e-4)), tt(vp), tt(cp)
        t = self.t_min
        extended = self.model is Model.EXTENDED_TOFTS
        lam = torch.full_like(K, 1e-2)

        def forward(k, e, v):
            conv = exp_convolution(cp, t, e, xp=torch)
            return k[:, None] * conv + (v[:, None] * Cp if extended else 0.0), conv

        pred, conv = forward(K, E, V)
        sse = ((Y - pred) ** 2).sum(1)
        for _ in range(self.refine_iterations):
            step = 1e-4 * torch.clamp(E, min=1e-2)
            conv2 = exp_convolution(cp, t, E + step, xp=torch)
            cols = [conv, K[:, None] * (conv2 - conv) / step[:, None]]
            if extended:
                cols.append(Cp.expand_as(conv))
            J = torch.stack(cols, dim=2)
            r = Y - pred
            JTJ = J.transpose(1, 2) @ J
            g = (J.transpose(1, 2) @ r[..., None])[..., 0]
            diag = torch.diagonal(JTJ, dim1=1, dim2=2)
            A = JTJ + torch.diag_embed(lam[:, None] * diag + 1e-12)
            delta = torch.linalg.solve(A, g[..., None])[..., 0]
            K2 = torch.clamp(K + delta[:, 0], min=0.0)
            E2 = torch.clamp(E + delta[:, 1], 1e-4, KEP_MAX)
            V2 = torch.clamp(V + delta[:, 2], 0.0, 1.0) if extended else V
            pred2, conv_new = forward(K2, E2, V2)
            sse2 = ((Y - pred2) ** 2).sum(1)
            ok = sse2 < sse
            K, E, V = torch.where(ok, K2, K), torch.where(ok, E2, E), torch.where(ok, V2, V)
            pred = torch.where(ok[:, None], pred2, pred)
            conv = torch.where(ok[:, None], conv_new, conv)
            sse = torch.where(ok, sse2, sse)
            lam = torch.where(ok, lam * 0.3, lam * 10.0).clamp(1e-8, 1e8)
        return K.numpy(), E.numpy(), V.numpy()


def _times_and_aif():
    rng = np.random.default_rng(3)
    # non-uniform sampling: several distinct frame intervals, so several weight sets are used
    t = np.concatenate([np.arange(0, 60, 5.0), 60 + np.cumsum(rng.uniform(2.0, 9.0, 30))]) / 60.0
    cp = 5.0 * (t / 0.5) ** 2 * np.exp(-t / 0.3) + 0.3
    return t, cp


@pytest.fixture(scope="module")
def noisy():
    """Measured-like curves: the phantom's noisy SPGR signal converted as the pipeline does (every
    5th brain voxel and every tumor voxel of a 4-slice slab), with its truth."""
    ph = make_dce_phantom(snr=25, slices=4, seed=11)
    brain = ph.masks["brain"]
    keep = np.zeros(int(brain.sum()), bool)
    keep[::5] = True
    keep |= ph.masks["tumor"][brain]
    acq = ph.signal.acquisition
    ser, _ = enhancement_ratio(ph.signal.data[brain][keep].astype(np.float32), 6)
    conc, _ = concentration_from_ser(ser, ph.truth["t10"].data[brain][keep], acq.flip_angle, acq.repetition_time,
                                     4.5)
    truth = {k: ph.truth[k].data[brain][keep] for k in ("ktrans", "ve", "vp")}
    return ph, conc, truth, ph.masks["pure"][brain][keep]


def test_exp_convolution_is_bit_identical_to_the_stacked_form_numpy():
    t, cp = _times_and_aif()
    kep = np.concatenate([[0.0, 1e-6, 1e-3], np.random.default_rng(0).uniform(0, 10, 500)])  # small-x branch too
    new = exp_convolution(cp, t, kep)
    assert new.shape == (kep.size, t.size)
    np.testing.assert_array_equal(new, reference_exp_convolution(cp, t, kep))
    np.testing.assert_array_equal(_exp_convolution_rows(cp, t, kep), new.T)


def test_exp_convolution_is_bit_identical_to_the_stacked_form_torch():
    torch = pytest.importorskip("torch")
    t, cp = _times_and_aif()
    kep = torch.as_tensor(np.random.default_rng(1).uniform(1e-4, 10, 400), dtype=torch.float64)
    new = exp_convolution(cp, t, kep, xp=torch)
    assert tuple(new.shape) == (400, t.size)
    assert torch.equal(new, reference_exp_convolution(cp, t, kep, xp=torch))


def test_segment_weight_derivatives_match_their_integrals():
    """∂wa/∂k = -∫_0^h (u²/h) e^{-ku} du and ∂wb/∂k = -∫_0^h u (1 - u/h) e^{-ku} du (wa, wb weigh the
    segment's start and end samples, u the time back from its end), by 30-point Gauss-Legendre
    quadrature (exact to rounding for these smooth integrands), on both sides of the series /
    closed-form switch (x = k·h = 0.05) and over the whole kep range."""
    h = 5.0 / 60.0
    k = np.concatenate([[1e-4, 1e-3, 0.05 / h * 0.999, 0.05 / h * 1.001], np.linspace(0.01, 10.0, 50)])
    nodes, w = np.polynomial.legendre.leggauss(30)
    u = 0.5 * h * (nodes + 1.0)
    kernel = np.exp(-k[:, None] * u) * (0.5 * h * w)
    dwa_ref = -(kernel * u * u / h).sum(1)
    dwb_ref = -(kernel * u * (1.0 - u / h)).sum(1)
    dwa, dwb = _segment_derivatives(k, h)
    # the closed form loses ~eps/x³ to cancellation just above the switch (x = 0.05: ~4e-12)
    np.testing.assert_allclose(dwa, dwa_ref, rtol=1e-10)
    np.testing.assert_allclose(dwb, dwb_ref, rtol=1e-10)
    # and they are the derivatives of the weights the recursion uses (central differences where the
    # weights are in closed form, x >= 1e-3; below, _segment_weights is a 2-term series)
    big = k * h > 2e-3
    delta = 1e-5 * k[big]
    (wa1, wb1), (wa0, wb0) = _segment_weights(k[big] + delta, h), _segment_weights(k[big] - delta, h)
    np.testing.assert_allclose(dwa[big], (wa1 - wa0) / (2 * delta), rtol=1e-6)
    np.testing.assert_allclose(dwb[big], (wb1 - wb0) / (2 * delta), rtol=1e-6)


def test_recursion_derivative_is_the_derivative_of_the_convolution():
    """The refinement's one-pass ∂E/∂kep (the recursion differentiated) against a central
    difference of exp_convolution, on non-uniform sampling."""
    torch = pytest.importorskip("torch")
    t, cp = _times_and_aif()
    kep = np.array([0.05, 0.3, 1.0, 4.0, 9.5])  # x = k·h > 1e-3: the weights in closed form, as differentiated
    steps = [round(float(t[i] - t[i - 1]), 12) for i in range(1, t.size)]
    f64 = torch.float64
    as64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    # Ktrans = 1, vp = 0, y = 0: the residual is -E, so the sums are those of E and ∂E themselves
    sums = _lm_sums(torch.zeros((t.size, kep.size), dtype=f64), as64(cp[:, None]), torch.zeros(kep.size, dtype=int),
                    as64(np.ones(kep.size)), as64(kep), as64(np.zeros(kep.size)), steps, extended=False).numpy()
    sums = dict(zip(("rr", "ee", "ed", "ec", "dd", "dc", "er", "dr", "cr"), sums))
    delta = 1e-6 * np.maximum(kep, 1e-2)
    d_conv = (exp_convolution(cp, t, kep + delta) - exp_convolution(cp, t, kep - delta)) / (2 * delta[:, None])
    conv = exp_convolution(cp, t, kep)
    np.testing.assert_allclose(sums["ed"], (conv * d_conv).sum(1), rtol=1e-7)
    np.testing.assert_allclose(sums["dd"], (d_conv * d_conv).sum(1), rtol=1e-7)
    np.testing.assert_allclose(sums["ee"], (conv * conv).sum(1), rtol=1e-12)
    np.testing.assert_allclose(sums["er"], -sums["ee"], rtol=1e-12)
    np.testing.assert_allclose(sums["dr"], -sums["ed"], rtol=1e-12)


def test_elementwise_spd_solves_match_lapack():
    rng = np.random.default_rng(5)
    for k, solve in ((3, _solve3_spd), (2, _solve2_spd)):
        m = rng.normal(size=(2000, 6, k)) * rng.lognormal(0, 2, size=(2000, 1, k))  # badly scaled columns
        a = m.transpose(0, 2, 1) @ m
        b = rng.normal(size=(2000, k))
        ref = np.linalg.solve(a, b[..., None])[..., 0]
        upper = [a[:, i, j] for i in range(k) for j in range(i, k)]
        got = np.stack(solve(*upper, *b.T), axis=1)
        bound = 64 * np.linalg.cond(a) * EPS * np.abs(ref).max(axis=1)  # forward error of a backward-stable solve
        assert np.all(np.abs(got - ref).max(axis=1) <= bound)


@pytest.mark.parametrize("model, max_delay", [("extended-tofts", 0.0), ("extended-tofts", 6.0), ("tofts", 6.0),
                                              ("patlak", 6.0)])
def test_linear_fits_equal_the_previous_arithmetic_to_rounding(model, max_delay):
    ph = make_dce_phantom(snr=20, slices=2, seed=4)
    conc = ph.concentration.data[ph.masks["brain"]][::7].astype(np.float32)  # every 7th brain voxel: fast
    kwargs = dict(max_delay=max_delay, chunk_voxels=700)
    new = PKModel(model, ph.aif, ph.times, **kwargs).fit(conc)
    old = ReferencePKModel(model, ph.aif, ph.times, **kwargs).fit(conc)
    assert conc.shape[0] > 700  # more than one chunk
    np.testing.assert_array_equal(new.delay, old.delay)  # the same delay everywhere
    # Coefficients of a ridge-regularised Gram (κ <= 1e10): a backward-stable solve each, so they
    # agree to a small multiple of κ·eps relative to the coefficient scale; ktrans = b1 - kep·vp and
    # the model curves inherit it. Measured: <= 2e-9 relative on these curves.
    for name in ("ktrans", "kep", "vp", "ve"):
        a, b = getattr(new, name), getattr(old, name)
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7 * np.abs(b).max(), err_msg=name)
    np.testing.assert_allclose(new.fitted, old.fitted, rtol=1e-6, atol=1e-6 * np.abs(old.fitted).max())
    np.testing.assert_allclose(new.r2, old.r2, atol=1e-9)
    # the model curves are those of the fitted parameters, bit for bit (the same recursion)
    delays = np.unique(new.delay)
    for d in delays:
        rows = new.delay == d
        ref = model_curves(model, shifted(ph.aif, ph.times, d), ph.times / 60.0, new.ktrans[rows], new.kep[rows],
                           new.vp[rows]).astype(np.float32)
        np.testing.assert_array_equal(new.fitted[rows], ref)


def test_curves_on_demand_equal_the_kept_ones():
    ph = make_dce_phantom(snr=20, slices=2, seed=4)
    conc = ph.concentration.data[ph.masks["brain"]][::5].astype(np.float32)
    model = PKModel("extended-tofts", ph.aif, ph.times, max_delay=6.0, chunk_voxels=500)
    kept, lean = model.fit(conc), model.fit(conc, keep_fitted=False)
    assert lean.fitted is None
    for name in ("ktrans", "kep", "vp", "ve", "delay", "r2"):
        np.testing.assert_array_equal(getattr(kept, name), getattr(lean, name), err_msg=name)
    np.testing.assert_array_equal(model.curves(lean), kept.fitted)


def _sse(conc, fit):
    return ((conc.astype(np.float64) - fit.fitted) ** 2).sum(1)


@pytest.mark.parametrize("model", ["extended-tofts", "tofts"])
def test_refinement_reaches_the_previous_minimum(noisy, model):
    """The new refinement (exact derivative, early stops, bounds held, float32) ends at least as low
    as the previous one (15 float64 iterations everywhere) on the curves' SSE: equal to 1e-4 of the
    SSE on 99 % of the voxels (where both found the same minimum, the float32 path stops within
    REFINE_FTOL of it) and never worse on average."""
    _, conc, _, _ = noisy
    kwargs = dict(max_delay=6.0, refine=True, chunk_voxels=1500)
    new = PKModel(model, noisy[0].aif, noisy[0].times, **kwargs).fit(conc)
    old = ReferencePKModel(model, noisy[0].aif, noisy[0].times, **kwargs).fit(conc)
    np.testing.assert_array_equal(new.delay, old.delay)  # the refinement keeps the linear fit's delay
    s_new, s_old = _sse(conc, new), _sse(conc, old)
    ratio = s_new / np.maximum(s_old, 1e-30)
    assert np.quantile(ratio, 0.99) <= 1.0 + 1e-4, np.quantile(ratio, [0.5, 0.99, 1.0])
    assert s_new.mean() <= s_old.mean() * (1 + 1e-6)
    if model == "tofts":
        # Tofts has no vp term, and most brain voxels carry plasma signal: the SSE valley is flat and
        # long, 15 iterations stop anywhere along it (both refinements move by 0.17 1/min at the 99th
        # percentile given 100), so only the SSE is comparable.
        return
    # The parameters agree far below their noise (median |Ktrans error| vs truth ~5e-4 1/min here):
    # measured median 1e-6, 99th percentile 3e-4; the rest are voxels whose SSE valley is flat
    # along kep (ill-posed, e.g. near-zero Ktrans), where either end point is as good.
    for name, typical, tail in (("ktrans", 1e-5, 1e-3), ("vp", 1e-6, 1e-4)):
        diff = np.abs(getattr(new, name) - getattr(old, name))
        assert np.median(diff) <= typical and np.quantile(diff, 0.99) <= tail, (name, np.quantile(diff, [0.5, 0.99]))


def test_refinement_is_as_accurate_against_truth_as_before(noisy):
    """Errors of Ktrans, ve and vp against the phantom's truth (voxels of one tissue >= 90 %): the
    median and the mean absolute error of the new refinement are within 2 % of the previous one's
    (measured: equal to 3 digits; the mean of Ktrans is lower, bound-resting voxels now converge)."""
    ph, conc, truth, pure = noisy
    kwargs = dict(max_delay=6.0, refine=True, chunk_voxels=1500)
    new = PKModel("extended-tofts", ph.aif, ph.times, **kwargs).fit(conc)
    old = ReferencePKModel("extended-tofts", ph.aif, ph.times, **kwargs).fit(conc)
    linear = PKModel("extended-tofts", ph.aif, ph.times, max_delay=6.0).fit(conc)
    for name in ("ktrans", "ve", "vp"):
        err = {label: np.abs(getattr(f, name) - truth[name])[pure] for label, f in
               (("new", new), ("old", old), ("linear", linear))}
        for stat in (np.median, np.mean):
            assert stat(err["new"]) <= 1.02 * stat(err["old"]) + 1e-6, (name, stat.__name__, err)
    # and it refines: the exact model fits better than the linear (Murase) fit's parameters
    assert _sse(conc, new).mean() < _sse(conc, linear).mean()


def test_more_iterations_change_nothing_measurable(noisy):
    """Stopped voxels are converged: allowing 4x the iterations moves the SSE by < 1e-4 of itself on
    99 % of the voxels and the parameters by far less than their noise."""
    ph, conc, _, _ = noisy
    short = PKModel("extended-tofts", ph.aif, ph.times, max_delay=6.0, refine=True).fit(conc)
    long = PKModel("extended-tofts", ph.aif, ph.times, max_delay=6.0, refine=True, refine_iterations=60).fit(conc)
    ratio = _sse(conc, short) / np.maximum(_sse(conc, long), 1e-30)
    assert np.quantile(ratio, 0.99) <= 1 + 1e-4
    assert np.all(ratio >= 1 - 1e-5)  # more iterations never end higher (beyond float32 rounding)
    assert np.median(np.abs(short.ktrans - long.ktrans)) < 1e-5

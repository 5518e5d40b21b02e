"""The DCE speed work of issue 17 changed how the arithmetic is laid out, not the arithmetic.

``exp_convolution`` now writes frames in place into a (T, n) array instead of stacking per-frame
columns, and the linear fit adds its ridge to the Gram diagonals in place instead of adding a full
(n, k, k) ridge matrix; the refinement runs once per chunk for all bolus delays (each voxel
with its own shifted AIF) instead of once per delay group. All keep every floating-point operation and its order, so the results must
be bit-identical to the previous forms (kept below as references): exact equality, on numpy and on
torch, and for whole fits (delay grid, boundary refit and Levenberg-Marquardt refinement).
"""

from __future__ import annotations

import numpy as np
import pytest

from BBBAnomalyLib.dce import models
from BBBAnomalyLib.dce.models import PKModel, _segment_weights, _torch_segment_weights, exp_convolution
from BBBAnomalyLib.dce.parameters import Model
from BBBAnomalyLib.phantoms.dce import make_dce_phantom


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
    """PKModel with the linear solve and the refinement grouping as before issue 17."""

    def _refine(self, y, cp, ktrans, kep, vp):
        """Before issue 17 the refinement ran once per delay group, with that delay's AIF shared."""
        if cp.ndim == 1:
            return super()._refine(y, cp, ktrans, kep, vp)
        out = [np.empty_like(ktrans), np.empty_like(kep), np.empty_like(vp)]
        aifs, group = np.unique(cp, axis=0, return_inverse=True)
        for g, aif in enumerate(aifs):
            rows = group.ravel() == g
            for o, v in zip(out, super()._refine(y[rows], aif, ktrans[rows], kep[rows], vp[rows])):
                o[rows] = v
        return tuple(out)

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


def _times_and_aif():
    rng = np.random.default_rng(3)
    # non-uniform sampling: several distinct frame intervals, so several weight sets are used
    t = np.concatenate([np.arange(0, 60, 5.0), 60 + np.cumsum(rng.uniform(2.0, 9.0, 30))]) / 60.0
    cp = 5.0 * (t / 0.5) ** 2 * np.exp(-t / 0.3) + 0.3
    return t, cp


def test_exp_convolution_is_bit_identical_to_the_stacked_form_numpy():
    t, cp = _times_and_aif()
    kep = np.concatenate([[0.0, 1e-6, 1e-3], np.random.default_rng(0).uniform(0, 10, 500)])  # small-x branch too
    new = exp_convolution(cp, t, kep)
    assert new.shape == (kep.size, t.size)
    np.testing.assert_array_equal(new, reference_exp_convolution(cp, t, kep))


def test_exp_convolution_is_bit_identical_to_the_stacked_form_torch():
    torch = pytest.importorskip("torch")
    t, cp = _times_and_aif()
    kep = torch.as_tensor(np.random.default_rng(1).uniform(1e-4, 10, 400), dtype=torch.float64)
    new = exp_convolution(cp, t, kep, xp=torch)
    assert tuple(new.shape) == (400, t.size)
    assert torch.equal(new, reference_exp_convolution(cp, t, kep, xp=torch))


@pytest.mark.parametrize("model, max_delay, refine", [
    ("extended-tofts", 0.0, False), ("extended-tofts", 6.0, False), ("tofts", 6.0, False),
    ("patlak", 6.0, False), ("extended-tofts", 6.0, True)])
def test_whole_fits_are_bit_identical_to_the_previous_arithmetic(monkeypatch, model, max_delay, refine):
    ph = make_dce_phantom(snr=20, slices=2, seed=4)
    conc = ph.concentration.data[ph.masks["brain"]][::7].astype(np.float32)  # every 7th brain voxel: fast
    kwargs = dict(max_delay=max_delay, refine=refine, refine_iterations=4, chunk_voxels=700)
    new = PKModel(model, ph.aif, ph.times, **kwargs).fit(conc)
    monkeypatch.setattr(models, "exp_convolution", reference_exp_convolution)
    old = ReferencePKModel(model, ph.aif, ph.times, **kwargs).fit(conc)
    assert conc.shape[0] > 700  # more than one chunk
    for name in ("ktrans", "kep", "ve", "vp", "delay", "r2", "fitted"):
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)

"""Post-hoc de-shrinkage of PHAE's CBF, fitted on the *training* generator and stored in the model card.

Why: a network trained on simulated truth returns something close to a posterior estimate, which regresses to
the prior's middle: long-MTT tissue (WM, hypoperfused) comes out with too high a CBF, short-MTT tissue ("early",
tumour) too low (docs/validation.md, issue 14). A monotone map of the estimate, fitted so that the *mean
estimate over curves that share one truth* equals that truth, undoes most of this pull without retraining.

The map acts on the log of the central-volume MTT, x = log(CBV / CBF) [s] (CBV = ∫C/∫Ca, measured; CBF the
network's mean estimate), and returns y = g(x; s, Δt); the calibrated CBF is CBV / e^y = CBF · e^(x - y).
g is piecewise linear in x on fixed knots and monotone increasing (so the order of voxels' MTTs is kept), one
map per node of a small grid over s (the network's predicted SD of log CBF, which grows with the noise) and
log Δt; between nodes the maps are blended linearly (a convex blend of monotone maps is monotone, and the
maps have no steps at bin edges). Outside the knots g continues with slope 1 (a pure shift). Voxels with
CBF <= 0 or CBV <= 0 are left as they are (no MTT exists).

The fit (``fit_calibration``) minimises, over groups of K simulated curves that share one truth (MTT, CBV,
delay, SNR, gain and the case's AIF; ``dsc_curves.simulate_curve_cases(repeats=K)``), the mean of
(mean_k CBF_cal,k / CBF_true - 1)², the same conditional-bias term as ``training.conditional_bias_loss``,
plus a small penalty on the curvature of each map. It sees only training-generator curves, never the
held-apart sets. The card stores the knots and the node maps (``calibration`` entry); ``apply_calibration``
is what inference runs.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import trapezoid  # not np.trapezoid: numpy >= 2.0 only

from ...core.errors import InputError

KIND = "log-mtt-monotone-v1"
#: knots of log MTT [s]: 0.5-40 s, the encoder's output range
DEFAULT_KNOTS = tuple(np.round(np.linspace(math.log(0.5), math.log(40.0), 13), 6).tolist())


def _blend_weights(value: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation weights of ``value`` between ``nodes`` (held at the ends): (lo, hi, w_hi)."""
    nodes = np.asarray(nodes, float)
    if nodes.size == 1:
        z = np.zeros(np.shape(value), np.intp)
        return z, z, np.zeros(np.shape(value))
    pos = np.interp(value, nodes, np.arange(nodes.size, dtype=float))
    lo = np.minimum(np.floor(pos).astype(np.intp), nodes.size - 2)
    return lo, lo + 1, pos - lo


def _map(x: np.ndarray, knots: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Piecewise-linear y(knots) at x, continued with slope 1 beyond the first and last knot."""
    out = np.interp(x, knots, y)
    below, above = x < knots[0], x > knots[-1]
    out[below] = y[0] + (x[below] - knots[0])
    out[above] = y[-1] + (x[above] - knots[-1])
    return out


def check_calibration(cal, name="the weights") -> dict:
    """The card's ``calibration`` entry, checked (shapes, finite, monotone); InputError otherwise."""
    try:
        if cal.get("kind") != KIND:
            raise ValueError(f"kind {cal.get('kind')!r}")
        knots = np.asarray(cal["knots_log_mtt"], float)
        sd_nodes = np.asarray(cal["sd_nodes"], float)
        dt_nodes = np.asarray(cal["log_dt_nodes"], float)
        maps = np.asarray(cal["maps"], float)
        if maps.shape != (dt_nodes.size, sd_nodes.size, knots.size) or knots.size < 2:
            raise ValueError("shapes")
        if not (np.isfinite(maps).all() and np.isfinite(knots).all() and np.isfinite(sd_nodes).all()
                and np.isfinite(dt_nodes).all()):
            raise ValueError("non-finite")
        if np.any(np.diff(knots) <= 0) or np.any(np.diff(sd_nodes) <= 0) or np.any(np.diff(dt_nodes) <= 0):
            raise ValueError("nodes not increasing")
        if np.any(np.diff(maps, axis=-1) < 0):
            raise ValueError("a map is not monotone")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the CBF calibration in the model card of {name} is invalid ({exc}); reinstall or "
                         "recalibrate with the command in the card") from None
    return {"knots": knots, "sd_nodes": sd_nodes, "dt_nodes": dt_nodes, "maps": maps}


def apply_calibration(cbf: np.ndarray, cbv: np.ndarray, sd: np.ndarray, dt: float, cal: dict) -> np.ndarray:
    """Calibrated CBF (same units as ``cbf``) for one case: ``cal`` from ``check_calibration``; cbv in the same
    convention as cbf·MTT (∫C/∫Ca), sd the network's SD of log CBF per voxel."""
    cbf = np.asarray(cbf)
    out = cbf.astype(np.float32, copy=True)
    ok = (cbf > 0) & (cbv > 0) & np.isfinite(sd)
    if not ok.any():
        return out
    x = np.log(cbv[ok].astype(np.float64) / cbf[ok])
    s = sd[ok].astype(np.float64)
    dlo, dhi, dw = _blend_weights(np.array([math.log(dt)]), cal["dt_nodes"])
    maps = (1.0 - dw[0]) * cal["maps"][dlo[0]] + dw[0] * cal["maps"][dhi[0]]  # (n_sd, n_knots) for this dt
    slo, shi, sw = _blend_weights(s, cal["sd_nodes"])
    y = np.zeros_like(x)
    for j in range(maps.shape[0]):  # one pass per sd node over the voxels that use it
        w = np.where(slo == j, 1.0 - sw, 0.0) + np.where(shi == j, sw, 0.0)
        use = w > 0
        if use.any():
            y[use] += w[use] * _map(x[use], cal["knots"], maps[j])
    out[ok] = (cbf[ok] * np.exp(x - y)).astype(np.float32)
    return out


# --- fitting (training generator only) ---------------------------------------------------------------------
def collect(network_or_weights, cases, chunk: int = 8192) -> dict:
    """Run PHAE (inference, as ``PHAEModel.fit``, without calibration) on simulated cases with truth in groups:
    per curve cbf, cbv, sd, log dt, true cbf, and the group index (unique over cases)."""
    from .inference import PHAEModel

    keys = ("cbf", "cbv", "sd", "log_dt", "cbf_true", "group")
    out = {k: [] for k in keys}
    offset = 0
    for case in cases:
        kw = {"network": network_or_weights} if not isinstance(network_or_weights, str) else \
            {"weights": network_or_weights}
        model = PHAEModel(case.aif, case.frame_interval, chunk_voxels=chunk, **kw)
        model.calibration = None
        fit = model.fit(case.curves, keep_curves=False)
        dt = float(case.frame_interval)
        cbv = trapezoid(case.curves, dx=dt, axis=1) / trapezoid(case.aif, dx=dt)
        k = int(case.truth.get("group_size", 1)) if isinstance(case.truth, dict) else 1
        n = case.curves.shape[0]
        out["cbf"].append(fit.cbf)
        out["cbv"].append(cbv.astype(np.float32))
        out["sd"].append(fit.cbf_uncertainty)
        out["log_dt"].append(np.full(n, math.log(dt), np.float32))
        out["cbf_true"].append(np.asarray(case.truth["cbf"], np.float32))
        out["group"].append(offset + np.arange(n) // k)
        offset += n // k + 1
    return {k: np.concatenate(v) for k, v in out.items()}


def fit_calibration(data: dict, sd_nodes=(0.15, 0.35, 0.6), identity_sd: float | None = 1.0,
                    log_dt_nodes=(math.log(0.9), math.log(2.3)), knots=DEFAULT_KNOTS, steps: int = 800,
                    lr: float = 0.03, smooth: float = 1e-2, ridge: float = 1e-3, max_group_sd: float | None = None,
                    seed: int = 0, log=None) -> dict:
    """Fit the node maps (see the module text) on ``collect``'s output; returns the card's ``calibration``
    entry (with the fit's loss before and after).

    ``identity_sd``: a last node over s whose map is the identity (not fitted): where the network says its CBF
    is that uncertain (a noise-dominated curve), nothing is de-shrunk, and between the last fitted node and it
    the correction fades out. ``smooth`` penalises each map's squared second differences, ``ridge`` its squared
    distance from the identity (per knot), so that thinly populated corners stay near the network's output.
    ``max_group_sd``: fit only on the groups whose mean s is below it (the rest, noise-dominated, dominate the
    loss otherwise)."""
    import torch

    torch.manual_seed(seed)
    if max_group_sd is not None:
        _, inverse, counts = np.unique(data["group"], return_inverse=True, return_counts=True)
        group_sd = (np.bincount(inverse, np.nan_to_num(data["sd"], nan=np.inf)) / counts)[inverse]
        data = {k: v[group_sd < max_group_sd] for k, v in data.items()}
        if not data["group"].size:
            raise InputError(f"no group of curves has a mean SD of log CBF below {max_group_sd}")
    ok = (data["cbf"] > 0) & (data["cbv"] > 0) & np.isfinite(data["sd"])
    _, inverse, counts = np.unique(data["group"], return_inverse=True, return_counts=True)
    knots_np = np.asarray(knots, float)
    knots_t = torch.tensor(knots_np, dtype=torch.float64)
    dk = knots_t[1:] - knots_t[:-1]
    all_sd = list(sd_nodes) + ([identity_sd] if identity_sd is not None else [])
    n_dt, n_fit, n_sd, n_k = len(log_dt_nodes), len(sd_nodes), len(all_sd), len(knots)
    # parameters: each fitted map's offset at the first knot and the log-slopes of its segments (softplus > 0)
    offset = torch.zeros(n_dt, n_fit, 1, dtype=torch.float64, requires_grad=True)
    raw = torch.full((n_dt, n_fit, n_k - 1), math.log(math.e - 1.0), dtype=torch.float64, requires_grad=True)
    identity = knots_t.expand(n_dt, n_sd - n_fit, n_k)

    x_np = np.log(np.where(ok, data["cbv"], 1.0) / np.where(ok, data["cbf"], 1.0))
    dlo, dhi, dw = _blend_weights(data["log_dt"].astype(float), np.asarray(log_dt_nodes))
    slo, shi, sw = _blend_weights(np.nan_to_num(data["sd"].astype(float)), np.asarray(all_sd))
    # (n, n_dt * n_sd) blend weight of every node for every curve
    w = np.zeros((x_np.size, n_dt * n_sd))
    rows = np.arange(x_np.size)
    for d_idx, d_w in ((dlo, 1.0 - dw), (dhi, dw)):
        for s_idx, s_w in ((slo, 1.0 - sw), (shi, sw)):
            np.add.at(w, (rows, d_idx * n_sd + s_idx), d_w * s_w)
    pos = np.interp(np.clip(x_np, knots_np[0], knots_np[-1]), knots_np, np.arange(n_k, dtype=float))
    klo = torch.as_tensor(np.minimum(np.floor(pos).astype(np.int64), n_k - 2))
    kw = torch.as_tensor(pos)[:, None] - klo[:, None]
    x = torch.as_tensor(x_np)
    edge = torch.clamp(x - knots_t[0], max=0.0) + torch.clamp(x - knots_t[-1], min=0.0)
    w_t, ok_t = torch.as_tensor(w), torch.as_tensor(ok)
    cbf = torch.as_tensor(data["cbf"], dtype=torch.float64)
    truth = torch.as_tensor(data["cbf_true"], dtype=torch.float64)
    inv = torch.as_tensor(inverse)
    cnt = torch.as_tensor(counts, dtype=torch.float64)

    def node_maps():
        seg = torch.nn.functional.softplus(raw) * dk
        fitted = torch.cat([offset + knots_t[0], offset + knots_t[0] + torch.cumsum(seg, dim=-1)], dim=-1)
        return torch.cat([fitted, identity], dim=1)  # (n_dt, n_sd, n_k)

    def evaluate(maps):
        flat = maps.reshape(n_dt * n_sd, n_k).T  # (n_k, nodes)
        y_lo, y_hi = flat[klo], flat[klo + 1]  # (n, nodes)
        y = ((y_lo + kw * (y_hi - y_lo)) * w_t).sum(dim=1) + edge
        est = torch.where(ok_t, cbf * torch.exp(x - y), cbf)
        ratio = (est / truth).clamp(-5.0, 10.0)
        mean = torch.zeros_like(cnt).index_add_(0, inv, ratio) / cnt
        return ((mean - 1.0) ** 2).mean()

    opt = torch.optim.Adam([offset, raw], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.05 * lr)
    with torch.no_grad():
        before = float(evaluate(node_maps()))
    for step in range(steps):
        maps = node_maps()
        curv = (maps[..., 2:] - 2 * maps[..., 1:-1] + maps[..., :-2]).pow(2).sum()
        loss = evaluate(maps) + smooth * curv + ridge * (maps - knots_t).pow(2).mean(dim=-1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 100 == 0 or step == steps - 1):
            log(f"calibration step {step}: loss {float(loss.detach()):.5f}")
    with torch.no_grad():
        maps = node_maps()
        after = float(evaluate(maps))
    return {"kind": KIND, "knots_log_mtt": [float(v) for v in knots], "sd_nodes": [float(v) for v in all_sd],
            "log_dt_nodes": [float(v) for v in log_dt_nodes],
            "maps": np.round(maps.numpy(), 6).tolist(),
            "fit": {"curves": int(len(cbf)), "groups": int(len(counts)), "conditional_bias_before": round(before, 6),
                    "conditional_bias_after": round(after, 6), "steps": steps, "lr": lr, "smooth": smooth,
                    "ridge": ridge, "fitted_sd_nodes": n_fit, "max_group_sd": max_group_sd,
                    "identity_sd_node": identity_sd is not None}}

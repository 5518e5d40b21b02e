"""Residual leakage signal (RLS): an autoencoder of normal enhancement curves, and its residual.

Seed: dce-unsupervised-bbb-leakage (see ../shared/METHODS.md). Each voxel curve becomes a signal
enhancement ratio SER(t) = S(t)/S0 - 1; the network sees x = (SER - min SER)/15 with the
pre-contrast entries set to 0 and 4 entries of 1 appended (a fixed "box" that anchors the scale).
A fully connected 64-32-16-8 autoencoder, trained with an L1 loss on normal-appearing brain
curves only, reconstructs normal enhancement; what it cannot reconstruct is abnormal. The mean
signed residual r = x - x̂ over the post-contrast entries gives RLS, its positive part (more, or more
persistent, enhancement than normal tissue: leakage), reported with the mean |r| and the RLS's noise
standard error in percent SER (x 15 x 100), as the seed does (the seed's negative part, a "vascular"
map, marked no vessel here and was removed).

The networks are early-stopped where leaky curves stand out most (:func:`train_autoencoder`), so they are
projection-like rather than faithful: ``dce-rls-world`` returns a low, generic enhancement curve for a
normal curve too (on the demo object the NAWM mean comes back with a first-pass peak of SER 0.33 against
0.63 measured, later, and above the measured tail; the mapping back to the frame times is exact), and the
mean |r| of normal brain is the network's reconstruction error rather than abnormality.

Curves of any frame count and interval meet the fixed-size network by linear resampling on the
time axis, onto one of two grids (:func:`network_input`): ``n_frames`` points spanning the acquisition
(per case, and bundled weights without ``grid_step_s`` on their card), or a fixed grid of ``n_frames``
points ``step`` seconds apart from the first frame (``dce-rls-world``: 121 x 5 s), on which a shorter or
coarser series keeps its time scale and the grid points after its end are masked out. A per-case model
is trained on that case's own resampled curves, so the span grid never changes what "normal" looks like
there; bundled weights warn outside the training domain on their card.
"""

from __future__ import annotations

import numpy as np

from ..core.memory import release_freed_memory

SER_SCALE = 15.0  # the seed's normalisation constant; maps are shown x SER_SCALE x 100 (percent SER)
BOX_ENTRIES = 4
MAX_TRAINING_SER = 15.0  # training curves with a larger peak SER are dropped (seed)
LEARNING_RATE = 1e-3  # the seed's 1e-4 suits millions of cohort curves; per-case training has ~1000 steps
BATCH_SIZE = 512


def build_autoencoder(n_inputs: int = 64, hidden: tuple[int, ...] = (32, 16, 8)):
    """The seed's fully connected autoencoder: LeakyReLU layers, sigmoid output."""
    import torch.nn as nn

    sizes = [n_inputs, *hidden]
    enc, dec = [], []
    for a, b in zip(sizes[:-1], sizes[1:]):
        enc += [nn.Linear(a, b), nn.LeakyReLU()]
    rev = sizes[::-1]
    for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
        dec += [nn.Linear(a, b), nn.Sigmoid() if i == len(rev) - 2 else nn.LeakyReLU()]
    return nn.Sequential(nn.Sequential(*enc), nn.Sequential(*dec))


def resample_weights(times: np.ndarray, n_frames: int, step: float | None = None):
    """Indices and weights for linear interpolation of curves onto the network's time grid (shared by all
    voxels, so resampling is two gathers). step None: ``n_frames`` uniform points spanning
    [times[0], times[-1]] (the grid follows the acquisition length). step in seconds: the fixed grid
    times[0] + k·step, k < n_frames, whatever the acquisition (points after times[-1] are not observed;
    their weights are clipped onto the last frame and :func:`network_input` zeroes them)."""
    grid = fixed_grid(times, n_frames, step) if step else np.linspace(times[0], times[-1], n_frames)
    return (grid, *_grid_weights(times, grid))


def _grid_weights(times: np.ndarray, grid: np.ndarray):
    idx = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, times.size - 2)
    w = ((grid - times[idx]) / (times[idx + 1] - times[idx])).clip(0.0, 1.0).astype(np.float32)
    return idx, w


def fixed_grid(times: np.ndarray, n_frames: int, step: float) -> np.ndarray:
    return times[0] + step * np.arange(n_frames)


def observed_entries(grid: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Grid points inside the acquisition (all of them on the spanning grid)."""
    return grid <= times[-1] + 1e-6


ROW_CHUNK = 65536  # rows per block of the network input and residual maps: temporaries stay block-sized


def network_input(ser: np.ndarray, times: np.ndarray, n_baseline: int, n_frames: int, step: float | None = None,
                  chunk: int = ROW_CHUNK):
    """x (n, n_frames + 4) float32, the grid times, and the post-contrast grid mask (observed entries only).

    On the fixed grid (``step`` seconds) a curve keeps its time scale whatever the acquisition length or
    frame interval: a truncated or undersampled series gives the same entries as the full one where both
    were acquired, and the entries after the end of the acquisition are 0 and left out of the residual
    (``post`` is False there) and of the training loss (:func:`train_autoencoder`'s ``n_observed``)."""
    grid, idx, w = resample_weights(times, n_frames, step)
    seen = observed_entries(grid, times)  # a prefix of the grid
    post = (grid >= times[n_baseline] - 1e-9) & seen  # grid points after the last pre-contrast frame
    m = int(seen.sum())
    idx, w = idx[:m], w[:m]
    p0, p1 = _span(post)
    x = np.zeros((ser.shape[0], n_frames + BOX_ENTRIES), np.float32)
    x[:, n_frames:] = 1.0
    left, right = (1.0 - w), w
    for start in range(0, ser.shape[0], chunk):
        rows = ser[start:start + chunk]
        # res = rows[:, idx] * (1 - w) + rows[:, idx + 1] * w, in place (the same float32 operations, so the
        # same bits, with two block-sized temporaries instead of five): only the observed grid points are gathered
        res = rows[:, idx]
        res *= left
        upper = rows[:, idx + 1]
        upper *= right
        res += upper
        del upper
        lo = res.min(axis=1, keepdims=True)
        block = x[start:start + chunk, p0:p1]
        np.subtract(res[:, p0:p1], lo, out=block)
        block /= SER_SCALE
        np.maximum(block, 0.0, out=block)
    return x, grid, post


def _span(mask: np.ndarray) -> tuple[int, int]:
    """(start, stop) of a mask that is one contiguous run of True (post-contrast grid points are)."""
    where = np.flatnonzero(mask)
    if where.size == 0:
        return 0, 0
    if where[-1] - where[0] + 1 != where.size:
        raise ValueError("the post-contrast grid points are not contiguous")
    return int(where[0]), int(where[-1]) + 1


def training_rows(ser: np.ndarray, eligible: np.ndarray, block: int = 8192) -> np.ndarray:
    """Rows usable for training: eligible (normal-appearing brain) and peak SER below the seed's limit
    (per row, by blocks of rows: no (n, T) boolean temporary)."""
    usable = np.empty(ser.shape[0], bool)
    for start in range(0, ser.shape[0], block):
        rows = ser[start:start + block]
        usable[start:start + block] = (np.nanmax(rows, axis=1) < MAX_TRAINING_SER) & np.isfinite(rows).all(axis=1)
    return eligible & usable


#: Early stopping. A briefly trained autoencoder projects onto normal curves (leaky curves keep a positive
#: residual); trained longer it reconstructs leaky curves too and the signed RLS fades (bundled recipe,
#: independent phantom: AUC 0.99 at 2 epochs, 0.71 at 4, 0.17 at 8; docs/validation.md). So every PROBE_EVERY
#: steps (from PROBE_MIN_STEPS) the network is scored on normal curves and on leaky ones, and the state with the
#: best score is kept; ``epochs`` becomes an upper bound instead of a knob. Score (:func:`_selection_score`):
#: how far the median leaky curve's RLS stands above the 95th percentile of the normal curves' RLS, in x units.
#: Leaky curves: per case (and ``bbbanomaly train dce-rls``), the training curves with a synthetic leak added
#: (:func:`leak_probe`); for the world recipe, simulated leaky tissue (``selection=``).
#: History: the first probe added small ramps (15-90 % SER) and scored (probe residual - normal residual) /
#: |normal residual|; that score kept rising while the network began to reconstruct large, tumour-like leaks
#: (per case, D_hybrid of the independent phantom: best at step 500, rim RLS 61 % SER instead of 189 at step
#: 400; fixed-grid world recipe: step 800-900, phantom AUC 0.73-0.89), so the probe now spans 15-300 % SER
#: with saturating as well as ramp shapes and the score no longer divides by the normal residual.
PROBE_ROWS = 2000
PROBE_EVERY = 100
PROBE_MIN_STEPS = 200
PROBE_AMPLITUDE = (0.01, 0.2)  # x units (x 1500 = % SER at the end of the leak), log-uniform
SELECTION_FALSE_POSITIVE = 0.05


def leak_probe(x: np.ndarray, rng: np.random.Generator, n: int = PROBE_ROWS, n_observed: np.ndarray | None = None):
    """(normal rows, their post-contrast mask, the same rows with a synthetic leak, its mask) from training rows x
    (``n_observed``: observed grid entries per row, see :func:`train_autoencoder`; the leak ends there). A leak is
    a ramp or a saturating rise 1 - exp(-t/τ) (τ 5-50 % of the post-contrast window) of persistent enhancement
    over the post-contrast entries, its final height log-uniform over PROBE_AMPLITUDE."""
    pick = rng.choice(x.shape[0], min(n, x.shape[0]), replace=False)
    rows = x[pick].copy()
    nt = rows.shape[1] - BOX_ENTRIES
    seen = np.full((rows.shape[0], 1), nt) if n_observed is None else np.asarray(n_observed)[pick][:, None]
    first = np.argmax(rows[:, :nt] > 0, axis=1)[:, None]  # the first post-contrast entry (x is 0 before)
    idx = np.arange(nt)[None, :]
    inside = idx < seen
    u = np.clip((idx - first) / np.maximum(seen - 1 - first, 1), 0.0, 1.0)
    tau = rng.uniform(0.05, 0.5, (rows.shape[0], 1))
    saturating = (1.0 - np.exp(-u / tau)) / (1.0 - np.exp(-1.0 / tau))
    shape = np.where(rng.random((rows.shape[0], 1)) < 0.5, u, saturating) * inside
    height = np.exp(rng.uniform(*np.log(PROBE_AMPLITUDE), (rows.shape[0], 1)))
    leaky = rows.copy()
    leaky[:, :nt] += height * shape
    mask = ((idx >= first) & inside).astype(np.float32)
    return rows, mask, leaky.astype(np.float32), mask


def post_contrast_mask(rows: np.ndarray, n_observed: np.ndarray | None = None) -> np.ndarray:
    """(n, nt) float32: the entries RLS averages over (after the first post-contrast entry, before the end of
    the acquisition) for network input rows."""
    nt = rows.shape[1] - BOX_ENTRIES
    first = np.argmax(rows[:, :nt] > 0, axis=1)[:, None]
    idx = np.arange(nt)[None, :]
    seen = nt if n_observed is None else np.asarray(n_observed)[:, None]
    return ((idx >= first) & (idx < seen)).astype(np.float32)


def _selection_score(net, normal, normal_mask, leaky, leaky_mask) -> float:
    import torch

    nt = normal_mask.shape[1]
    with torch.no_grad():
        rn = ((normal - net(normal))[:, :nt] * normal_mask).sum(1) / normal_mask.sum(1).clamp_min(1)
        rl = ((leaky - net(leaky))[:, :nt] * leaky_mask).sum(1) / leaky_mask.sum(1).clamp_min(1)
    # how far the typical leaky curve stands out above the normal ones, in units of x (% SER / 1500)
    return float(torch.median(rl) - torch.quantile(rn, 1.0 - SELECTION_FALSE_POSITIVE))


def train_autoencoder(x: np.ndarray, epochs: int = 8, seed: int = 0, device="cpu", max_voxels: int = 60000,
                      context=None, progress=None, log=None, early_stop: bool = True,
                      n_observed: np.ndarray | None = None, selection: tuple | None = None):
    """Train the autoencoder (L1 loss, Adam) on rows of x (at most ``max_voxels``, sampled). ``context``:
    a training.DistributedContext for DistributedDataParallel (each rank trains on its share of every
    epoch's permutation). early_stop: keep the state with the best leak-probe score (see PROBE_ROWS).
    n_observed: per row, how many leading grid entries were acquired (fixed-grid input of series of
    several lengths, :func:`network_input`); the loss then leaves the entries after them out (the box
    entries always count). selection: (normal rows, their n_observed, leaky rows, their n_observed), simulated
    curves that are not trained on: early stopping then keeps the state that best separates them
    (:data:`SELECTION_FALSE_POSITIVE`) instead of using the synthetic leak probe. Returns (model, per-epoch
    mean loss); ``model.training_info`` holds the steps and the kept step."""
    import torch

    rng = np.random.default_rng(seed)
    previous_threads = torch.get_num_threads()
    if str(getattr(context, "device", device)) == "cpu":
        # one thread per process: this network is so small that a second thread costs more in
        # synchronisation than it gains (measured on 2 cores: 2.6 s vs 4.3 s for 60k curves x 8
        # epochs, and 50x slower when another process is busy on the other core)
        torch.set_num_threads(1)
    try:
        return _train(x, epochs, seed, device, max_voxels, context, progress, log, rng, early_stop, n_observed,
                      selection)
    finally:
        torch.set_num_threads(previous_threads)


def _train(x, epochs, seed, device, max_voxels, context, progress, log, rng, early_stop=True, n_observed=None,
           selection=None):
    import torch

    if x.shape[0] > max_voxels:
        keep = np.sort(rng.choice(x.shape[0], max_voxels, replace=False))
        x = x[keep]
        n_observed = None if n_observed is None else np.asarray(n_observed)[keep]
    torch.manual_seed(seed)
    model = build_autoencoder(x.shape[1])
    dev = torch.device(device) if not hasattr(device, "type") else device
    if context is not None:
        net = context.wrap(model)
        dev = context.device
        rank, world = context.rank, context.world_size
    else:
        net = model.to(dev)
        rank, world = 0, 1
    # Batches by slicing a shuffled tensor: a DataLoader over a TensorDataset collates sample by
    # sample, which costs more than the whole forward/backward pass of this tiny network. Under
    # DistributedDataParallel every rank draws the same permutation (same seed) and takes its own
    # equal share, as a DistributedSampler would.
    data = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
    per_rank = data.shape[0] // world
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    seen = None
    if n_observed is not None:  # per-row loss mask: the acquired grid entries and the box
        seen = torch.from_numpy(np.asarray(n_observed, np.int64)).to(dev)
        columns = torch.arange(x.shape[1], device=dev)
        columns[x.shape[1] - BOX_ENTRIES:] = -1  # the box is always "observed"

        def loss_fn(out, batch, rows):
            m = (columns[None, :] < seen[rows][:, None]).to(out.dtype)
            return ((out - batch).abs() * m).sum() / m.sum()
    else:
        loss_fn = torch.nn.L1Loss()
    losses = []
    score_fn, probe = _selection_score, None
    if early_stop and selection is not None:
        normal, normal_seen, leaky, leaky_seen = selection
        probe = [torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev) for a in
                 (normal, post_contrast_mask(normal, normal_seen), leaky, post_contrast_mask(leaky, leaky_seen))]
    elif early_stop:
        probe = [torch.from_numpy(a).to(dev)
                 for a in leak_probe(x, np.random.default_rng(seed + 1), n_observed=n_observed)]
    best = {"score": -np.inf, "step": 0, "state": None}
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(data.shape[0], generator=gen)[rank * per_rank:(rank + 1) * per_rank].to(dev)
        total, count = 0.0, 0
        n_batches = max(per_rank // BATCH_SIZE, 1)
        for b in range(n_batches):
            rows = order[b * BATCH_SIZE:(b + 1) * BATCH_SIZE]
            batch = data[rows]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(batch), batch) if seen is None else loss_fn(net(batch), batch, rows)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * batch.shape[0]
            count += batch.shape[0]
            step += 1
            if probe is not None and step >= PROBE_MIN_STEPS and step % PROBE_EVERY == 0:
                score = score_fn(model, *probe)  # same weights on every rank: the same decision
                if score > best["score"]:
                    best = {"score": score, "step": step,
                            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        losses.append(total / max(count, 1))
        if log is not None:
            log(epoch, losses[-1])
        if progress is not None:
            progress((epoch + 1) / epochs, f"training the RLS autoencoder (epoch {epoch + 1}/{epochs})")
    info = {"steps": step}
    if probe is not None:
        final = score_fn(model, *probe)
        if final > best["score"] or best["state"] is None:
            best = {"score": final, "step": step, "state": None}
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        info.update(kept_step=best["step"], probe_score=round(best["score"], 4), final_probe_score=round(final, 4),
                    criterion="simulated leaky curves" if selection is not None else "synthetic leak probe")
    model.eval()
    model.training_info = info
    return model, losses


def reconstruct(model, x: np.ndarray, device="cpu", chunk: int = 65536) -> np.ndarray:
    """x̂ for all rows in memory-bounded batched passes (the activations applied in place:
    :func:`_forward`). One pass (``x`` no longer than ``chunk``): the network's output itself, not a copy."""
    import torch

    model = model.to(device).eval()
    with torch.inference_mode():
        if x.shape[0] <= chunk:
            return _forward(model, torch.from_numpy(x).to(device)).cpu().numpy()
        out = np.empty_like(x)
        for start in range(0, x.shape[0], chunk):
            xb = torch.from_numpy(x[start:start + chunk]).to(device)
            out[start:start + chunk] = _forward(model, xb).cpu().numpy()
    return out


def _forward(module, h):
    """``module(h)`` for the autoencoder (nested Sequentials of Linear layers and activations) with its LeakyReLU
    and Sigmoid activations applied in place on each layer's output: the same kernels, so the same values,
    without a second (rows, width) tensor per activation (inference only). Any other module runs as itself."""
    import torch
    import torch.nn as nn

    if isinstance(module, nn.Sequential):
        for child in module:
            h = _forward(child, h)
        return h
    if isinstance(module, nn.LeakyReLU):
        return nn.functional.leaky_relu_(h, module.negative_slope)
    if isinstance(module, nn.Sigmoid):
        return torch.sigmoid_(h)
    return module(h)


#: Rows per block of the numpy steps around the network (its input, the residual maps, the SER of the
#: reconstruction): every one of them is per row, so the block size changes no value, only the temporaries.
NUMPY_ROWS = 8192


def infer(model, ser: np.ndarray, times: np.ndarray, n_baseline: int, n_frames: int, step: float | None = None,
          device="cpu", chunk: int = ROW_CHUNK, keep_reconstruction: bool = True):
    """(maps, x̂, grid, post), block by block: the network input of a block of ``chunk`` rows is made,
    reconstructed and reduced to its maps before the next. The same torch batches as :func:`network_input`
    + :func:`reconstruct` (``chunk`` rows) + :func:`residual_maps`, and every numpy step is per row, so the
    same bits. keep_reconstruction False: x̂ is not kept (None is returned in its place; the pipeline
    recomputes the panel's curves on demand, :func:`ser_reconstruction`), so nothing of the size of the curves
    is allocated here beyond one block."""
    n = ser.shape[0]
    x_hat = np.empty((n, n_frames + BOX_ENTRIES), np.float32) if keep_reconstruction else None
    maps, grid, post = None, None, None
    for start, x, block_hat, grid, post in _blocks(model, ser, times, n_baseline, n_frames, step, device, chunk):
        if x_hat is not None:
            x_hat[start:start + x.shape[0]] = block_hat
        part = residual_maps(x, block_hat, post, chunk=NUMPY_ROWS)
        if maps is None:
            maps = {key: np.empty(n, value.dtype) for key, value in part.items()}
        for key, value in part.items():
            maps[key][start:start + x.shape[0]] = value
        del x, block_hat, part  # before the generator makes the next block: one block alive at a time
    return maps, x_hat, grid, post


def ser_reconstruction(model, ser: np.ndarray, times: np.ndarray, n_baseline: int, n_frames: int,
                       step: float | None = None, device="cpu", chunk: int = ROW_CHUNK) -> np.ndarray:
    """:func:`ser_from_reconstruction` of every row, x̂ recomputed block by block (the blocks of :func:`infer`,
    so the same x̂): (n, T) float32, without an (n, n_frames + 4) x̂ held whole."""
    out = np.empty(ser.shape, np.float32)
    for start, _, block_hat, grid, post in _blocks(model, ser, times, n_baseline, n_frames, step, device, chunk):
        for s in range(0, block_hat.shape[0], NUMPY_ROWS):
            part = block_hat[s:s + NUMPY_ROWS]
            rows = slice(start + s, start + s + part.shape[0])
            out[rows] = ser_from_reconstruction(part, ser[rows], times, grid, post)
        del block_hat
    return out


def _blocks(model, ser, times, n_baseline, n_frames, step, device, chunk):
    """(first row, network input, reconstruction, grid, post) per block of ``chunk`` rows."""
    for start in range(0, max(ser.shape[0], 1), chunk):
        x, grid, post = network_input(ser[start:start + chunk], times, n_baseline, n_frames, step=step,
                                      chunk=NUMPY_ROWS)
        yield start, x, reconstruct(model, x, device=device, chunk=chunk), grid, post
        del x  # the consumer is done with this block: freed before the next block's input is made
        release_freed_memory()


def residual_maps(x: np.ndarray, x_hat: np.ndarray, post: np.ndarray, chunk: int = ROW_CHUNK) -> dict[str, np.ndarray]:
    """rls (positive mean residual), rls_abs (mean |residual|) and rls_uncertainty (the standard error
    of the mean residual from the curve's own noise: σ/√n with σ from first differences of x, robust),
    all in percent SER over the post-contrast entries (the box excluded). An RLS below ~2x its
    uncertainty is not distinguishable from noise.

    The seed's vascular map (the negative part of the mean residual) is no longer produced: on the
    project's phantoms vessels give a *positive* mean residual, and the negative part marked no vessel
    (AUC 0.23 per case, 0.49 bundled against vessels; docs/validation.md)."""
    p0, p1 = _span(post)
    n = x.shape[0]
    out = {"rls": np.empty(n, np.float32), "rls_abs": np.empty(n, np.float32),
           "rls_uncertainty": np.zeros(n, np.float32)}
    for start in range(0, n, chunk):  # row blocks: every statistic is per row
        xp = x[start:start + chunk, p0:p1]  # views: the post-contrast entries are one run of columns
        # column-major like the boolean-indexed copy this replaced, so the means add in the same order
        r = np.subtract(xp, x_hat[start:start + chunk, p0:p1], order="F")
        rows = slice(start, start + chunk)
        out["rls"][rows] = np.maximum(r.mean(axis=1) * SER_SCALE * 100.0, 0.0)
        out["rls_abs"][rows] = np.abs(r).mean(axis=1) * SER_SCALE * 100.0
        if xp.shape[1] > 1:
            noise = np.median(np.abs(np.diff(xp, axis=1)), axis=1) / (0.6745 * np.sqrt(2.0))
            out["rls_uncertainty"][rows] = noise / np.sqrt(max(p1 - p0, 1)) * SER_SCALE * 100.0
    return out


def ser_from_reconstruction(x_hat: np.ndarray, ser: np.ndarray, times: np.ndarray,
                            grid: np.ndarray, post: np.ndarray) -> np.ndarray:
    """The reconstruction back in SER on the frame times (undoing the per-curve offset and the
    resampling), for plotting next to the measured curves; 0 before the contrast arrives."""
    n = post.size
    # x = (SER - min)/15 on the post-contrast entries, so SER_hat = 15·x̂ + min (min from the data)
    idx, w = _grid_weights(times, grid)
    res = ser[:, idx] * (1.0 - w) + ser[:, idx + 1] * w
    minimum = res[:, observed_entries(grid, times)].min(axis=1, keepdims=True)
    rec = np.where(post, x_hat[:, :n] * SER_SCALE + minimum, 0.0)
    # np.interp is 1D: back onto the frame times with one weight matrix shared by all voxels
    return (rec @ _interp_matrix(grid, times)).astype(np.float32)


def _interp_matrix(grid: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(len(grid), len(times)) matrix M with values_on_times = values_on_grid @ M (linear interpolation)."""
    m = np.zeros((grid.size, times.size), np.float32)
    pos = np.interp(times, grid, np.arange(grid.size))
    lo = np.clip(np.floor(pos).astype(int), 0, grid.size - 1)
    hi = np.clip(lo + 1, 0, grid.size - 1)
    frac = (pos - lo).astype(np.float32)
    m[lo, np.arange(times.size)] += 1.0 - frac
    m[hi, np.arange(times.size)] += frac
    return m

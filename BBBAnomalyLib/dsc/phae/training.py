"""Training PHAE: the self-supervised loop, DDP under torchrun, and `bbbanomaly train phae`.

The loss is the decoder's reconstruction error (mean absolute error of the normalised curves); no
map from any other method is read. Cases that carry simulated truth (``TrainingCase.truth``: cbf [1/s]
and delay [s] per curve) add a *supervised* term: |log CBF_pred - log CBF_true| (weight
``supervised_weight``) and a Huber term on the delay in frames (``delay_weight``). The self-supervised
reconstruction alone left per-voxel MTT noisy and biased short at low CNR, so CBF = CBV/MTT was
overestimated by +74 % (GM, SNR 50) on the reference object (docs/validation.md); the supervised term is
what the bundled dsc-phae-world weights add, and their model card says so. With simulated *groups*
(K curves sharing one truth, ``simulated_cases(repeats=K)``) a third term, ``bias_weight`` ×
mean over groups of (mean_k CBF_k / CBF_true - 1)² (``conditional_bias_loss``), penalises the bias *conditional on the truth*: the
NLL alone gives a posterior-median estimate, which regresses to the prior mean (ROI means of low-CBF
tissue too high, of high-CBF tissue too low). A *case* is (curves (n, T), AIF (T,), frame interval): batches
are drawn within one case (one AIF, one frame count), cases are visited in a shuffled order, and
under torchrun each rank takes every world_size-th curve of every case, so all ranks run the same
number of steps and DistributedDataParallel averages their gradients.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import InputError


@dataclass
class TrainingCase:
    curves: np.ndarray  # (n, T) ΔR2* [1/s], what the deconvolution would see (leakage-corrected)
    aif: np.ndarray  # (T,)
    frame_interval: float
    name: str = ""
    truth: dict | None = None  # simulated truth: {"cbf": (n,) [1/s], "delay": (n,) [s]}; None for real cases


def train(cases: list[TrainingCase], *, epochs: int = 20, batch: int = 1024, lr: float = 1e-3,
          device: str = "auto", seed: int = 0, network=None, config: dict | None = None,
          out_dir: str | Path | None = None, resume: bool = False, log=print, context=None,
          supervised_weight: float = 1.0, delay_weight: float = 0.05, reconstruction_weight: float = 1.0,
          bias_weight: float = 0.0, bias_unbiased: bool = False, bias_estimate: str = "mean", teacher=None,
          distill_weight: float = 1.0, distill_delay_weight: float = 0.1) -> dict:
    """Train (or fine-tune ``network``) on ``cases``; returns {"network", "history", "seconds"}.

    ``teacher`` (a trained PHAE, e.g. ``load_network("dsc-phae-world")[0]``): distillation. The teacher's
    outputs on every training curve are computed once (``teacher_targets``) and the student is pulled toward
    them with ``distill_weight`` × ``distillation_loss`` (log flow, SD of log CBF, and ``distill_delay_weight``
    × the delay in frames), beside the other terms (set their weights to 0 for a pure student).

    With out_dir, rank 0 writes ``checkpoint.pt`` after every epoch (``resume=True`` continues from it).
    Adam with cosine decay of the learning rate to 5 % over the epochs.

    ``bias_estimate``: which CBF estimate the conditional-bias term makes unbiased, the one the card will
    output: "mean" (flow·exp(-s²/2), s held fixed; the default and every card before issue 14 round 6) or
    "median" (the flow as is, for cards with ``cbf_estimate: median``).
    """
    if bias_estimate not in ("mean", "median"):
        raise ValueError(f"bias_estimate must be 'mean' or 'median', not {bias_estimate!r}")
    import torch

    from ...training import all_reduce_mean, distributed_context, load_checkpoint, save_checkpoint
    from .network import PHAE

    if not cases:
        raise InputError("no training cases")
    ctx = context or distributed_context(device)
    torch.manual_seed(seed)
    net = network if network is not None else PHAE(**(config or {}))
    model = ctx.wrap(net)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=0.05 * lr)
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir else None
    first_epoch, history = 0, []
    if resume and ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt, model, opt)
        first_epoch, history = int(state.get("epoch", 0)), json.loads(str(state.get("history", "[]")))
        for _ in range(first_epoch):
            sched.step()
    def group_size(c):
        return int(c.truth.get("group_size", 1)) if c.truth is not None else 1

    def share(a, k=1):
        # every world_size-th group of k consecutive rows (k = 1: every world_size-th curve)
        a = np.asarray(a, np.float32)
        g = a.shape[0] // k
        groups = np.arange(g)[ctx.rank::ctx.world_size][: g // ctx.world_size]
        return torch.as_tensor(a[(groups[:, None] * k + np.arange(k)[None, :]).ravel()])

    shards = [(share(c.curves, group_size(c)), torch.as_tensor(c.aif[None, :]), float(c.frame_interval),
               None if c.truth is None else (share(c.truth["cbf"], group_size(c)), share(c.truth["delay"], group_size(c))),
               group_size(c)) for c in cases]
    # a shape-told network (issue 14, round 16) reads each curve's simulated transit shape as a homogeneity code
    needs_shape = getattr(getattr(model, "module", model), "needs_shape", False)
    if needs_shape and any(c.truth is None or "shape_code" not in c.truth for c in cases):
        raise InputError("a network told the transit shape trains on simulated cases that carry it (truth shape_code)")
    codes = [share(c.truth["shape_code"], group_size(c)) if needs_shape else None for c in cases]
    # a context network (issue 14, round 5) reads one number vector per case, from all of the case's curves
    unwrapped_net = getattr(model, "module", model)
    contexts = [unwrapped_net.case_context(torch.as_tensor(np.asarray(c.curves, np.float32)), torch.as_tensor(c.aif[None, :]),
                                           float(c.frame_interval)) if getattr(unwrapped_net, "needs_context", False)
                else None for c in cases]
    targets = None
    if teacher is not None and distill_weight:
        t0 = time.perf_counter()
        targets = [tuple(share(v, group_size(c)) for v in teacher_targets(teacher, c)) for c in cases]
        if ctx.is_main:
            log(f"teacher outputs on {sum(c.curves.shape[0] for c in cases)} curves ({time.perf_counter() - t0:.0f} s)")
    start = time.perf_counter()
    for epoch in range(first_epoch, epochs):
        model.train()
        rng = np.random.default_rng(seed + epoch)  # same order on every rank
        steps = [(i, b) for i, (x, *_) in enumerate(shards) for b in range(max(x.shape[0] // batch, 1))]
        rng.shuffle(steps)
        # permute whole groups (k = 1: single curves) so that a batch holds complete groups
        perms = {i: torch.as_tensor(rng.permutation(x.shape[0] // sh[-1])) for i, (x, *sh) in enumerate(shards)}
        total = 0.0
        for i, b in steps:
            x, aif, dt, truth, k = shards[i]
            per = max(batch // k, 1)
            idx = (perms[i][b * per:(b + 1) * per][:, None] * k + torch.arange(k)[None, :]).reshape(-1)
            out = model(x[idx].to(ctx.device), aif.to(ctx.device), dt,
                        **({} if contexts[i] is None else {"context": contexts[i].to(ctx.device)}),
                        **({} if codes[i] is None else {"shape_code": codes[i][idx].to(ctx.device)}))
            loss = reconstruction_weight * out["loss"].mean()
            if truth is not None and (supervised_weight or delay_weight):
                cbf_true, delay_true = (t[idx].to(ctx.device) for t in truth)
                # a noise-dominated curve can have a negative area, hence a negative flow that no MTT can
                # fix: clamp (no gradient there) rather than let log(1e-8) dominate the batch
                pred = torch.maximum(out["flow"] / dt, 0.1 * cbf_true)
                log_err = torch.log(pred) - torch.log(cbf_true)
                if "log_cbf_sd" in out:  # Gaussian NLL in log CBF: the third output learns the SD of the error
                    sd = out["log_cbf_sd"]
                    sup = (0.5 * (log_err / sd) ** 2 + torch.log(sd)).mean()
                else:
                    sup = log_err.abs().mean()
                loss = loss + supervised_weight * sup + delay_weight * torch.nn.functional.smooth_l1_loss(
                    out["delay"], delay_true / dt)
                if bias_weight and k > 1:
                    # conditional bias: the estimate inference outputs (mean: flow·exp(-s²/2), s held fixed;
                    # median: the flow as is) averaged over the k realisations of one truth should equal it;
                    # clamped so that a rare noise-dominated curve cannot dominate the batch
                    mean_est = out["flow"] / dt
                    if "log_cbf_sd" in out and bias_estimate == "mean":
                        mean_est = mean_est * torch.exp(-0.5 * out["log_cbf_sd"].detach() ** 2)
                    loss = loss + bias_weight * conditional_bias_loss(mean_est / cbf_true, k, bias_unbiased)
            if targets is not None:
                loss = loss + distill_weight * distillation_loss(
                    out, *(t[idx].to(ctx.device) for t in targets[i]), delay_weight=distill_delay_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        sched.step()
        mean = all_reduce_mean(total / max(len(steps), 1), ctx)
        history.append(round(mean, 6))
        if ctx.is_main:
            log(f"epoch {epoch + 1}/{epochs}: loss {mean:.5f} ({time.perf_counter() - start:.0f} s)")
            if ckpt is not None:
                save_checkpoint(ckpt, model, opt, epoch + 1, history=json.dumps(history))
    ctx.barrier()
    unwrapped = getattr(model, "module", model).eval()
    return {"network": unwrapped, "history": history, "seconds": time.perf_counter() - start, "context": ctx}


def teacher_targets(teacher, case: TrainingCase, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's outputs on a case's curves, what a distilled student is trained to reproduce:
    (log |flow| [flow in 1/frame, curve units: the median estimate before the exp(-s²/2) correction],
    delay [frames], SD of log CBF s (NaN when the teacher has no uncertainty output)), each (n,) float32."""
    import torch

    n = case.curves.shape[0]
    out = np.empty((3, n), np.float32)
    was_training = teacher.training
    teacher.eval()
    aif = torch.as_tensor(np.asarray(case.aif, np.float32)[None, :])
    try:
        with torch.inference_mode():
            for s in range(0, n, chunk):
                res = teacher(torch.as_tensor(np.asarray(case.curves[s:s + chunk], np.float32)), aif,
                              float(case.frame_interval))
                out[0, s:s + chunk] = torch.log(res["flow"].abs().clamp_min(1e-12)).numpy()
                out[1, s:s + chunk] = res["delay"].numpy()
                out[2, s:s + chunk] = res["log_cbf_sd"].numpy() if "log_cbf_sd" in res else np.nan
    finally:
        teacher.train(was_training)
    return out[0], out[1], out[2]


def distillation_loss(out: dict, log_flow_t, delay_t, sd_t, delay_weight: float = 0.1):
    """Student-to-teacher loss on one batch: mean |log |flow_s| - log |flow_t|| (the teacher's CBF; both flows
    are the curve's area over the model's unit-response area, so they share a sign and the log ratio is the
    unit areas' ratio) + mean |s_s - s_t| (its uncertainty, when both have one) + ``delay_weight`` × Huber of the
    delay difference in frames. The flow term is clamped at |log ratio| 3 (a 20-fold disagreement) so that a
    noise-only curve whose flow is ~0 for both cannot dominate a batch."""
    import torch

    log_flow_s = torch.log(out["flow"].abs().clamp_min(1e-12))
    loss = (log_flow_s - log_flow_t).abs().clamp(max=3.0).mean()
    if "log_cbf_sd" in out and bool(torch.isfinite(sd_t).all()):
        loss = loss + (out["log_cbf_sd"] - sd_t).abs().mean()
    return loss + delay_weight * torch.nn.functional.smooth_l1_loss(out["delay"], delay_t)


def conditional_bias_loss(ratio, k: int, unbiased: bool = False):
    """Conditional bias of the CBF estimate from the K ratios CBF_hat / CBF_true of each group of curves
    sharing one truth (rows [g·K, (g+1)·K)), averaged over the groups.

    Default: (mean_k r_k - 1)², whose expectation is bias² + var(r) / K: it also penalises the spread a
    little, and its minimiser shrinks a noisy estimate by about 1 / (1 + var / K). ``unbiased=True``: the
    U-statistic mean_{i≠j} (r_i - 1)(r_j - 1), whose expectation is bias² exactly (no pull to shrink), but
    whose gradient for one curve is the other curves' errors, far noisier; on the dev sweep
    (scripts/phae_world.py: dev_sweep) it trained worse (docs/validation.md), so the recipe uses the default.
    Ratios are clamped to [-5, 10] so that a rare noise-dominated curve cannot dominate a batch."""
    e = (ratio.clamp(-5.0, 10.0) - 1.0).reshape(-1, k)
    total = e.sum(dim=1)
    if unbiased:
        return ((total ** 2 - (e ** 2).sum(dim=1)) / (k * (k - 1))).mean()
    return ((total / k) ** 2).mean()


def simulated_cases(n_cases: int, curves_per_case: int, seed: int = 0, supervised: bool = True,
                    repeats: int = 1, **kw) -> list[TrainingCase]:
    """Simulated training cases from the wide generator (``phantoms.dsc_curves.TRAINING``), with their
    truth attached when ``supervised``; ``repeats`` = K > 1 draws groups of K curves sharing one truth
    (what the conditional-bias term of ``train(bias_weight=...)`` needs)."""
    from ...phantoms.dsc_curves import simulate_curve_cases

    from .shape_evidence import homogeneity_code

    return [TrainingCase(c.curves, c.aif, c.frame_interval, f"sim{i}",
                         {"cbf": c.truth["cbf"], "delay": c.truth["delay"], "group_size": max(int(repeats), 1),
                          "shape_code": np.array([homogeneity_code(str(r)) for r in c.truth["residue"]], np.float32)}
                         if supervised else None)
            for i, c in enumerate(simulate_curve_cases(n_cases, curves_per_case, seed, repeats=repeats, **kw))]


def cases_from_folder(folder: str | Path, te: float | None = None, max_curves: int = 20000,
                      seed: int = 0) -> list[TrainingCase]:
    """Training curves from a folder of cases: each sub-folder holds ``signal.nii.gz`` (or .nrrd, with
    its echo time in a JSON sidecar or --te) and optionally ``mask_aif.nii.gz`` (else the AIF is
    selected automatically) and ``mask_brain.nii.gz``, ``mask_tumor.nii.gz``.

    Curves go through the DSC pipeline's own preprocessing (ΔR2*, AIF, BSW leakage correction); the
    pipeline runs with cSVD only because it must deconvolve something, and its maps are discarded:
    training sees curves, never maps.
    """
    from ...io import read_mask, read_volume
    from ..parameters import DSCParameters
    from ..pipeline import run_dsc

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of cases")
    rng = np.random.default_rng(seed)
    out = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        series_path = next((case / n for n in ("signal.nii.gz", "signal.nii", "signal.nrrd") if (case / n).is_file()),
                           None)
        if series_path is None:
            continue
        series = read_volume(series_path)
        masks = {k: read_mask(case / f"mask_{k}.nii.gz", series, f"mask_{k}")
                 for k in ("aif", "brain", "tumor") if (case / f"mask_{k}.nii.gz").is_file()}
        res = run_dsc(series, DSCParameters(method="csvd", echo_time=te), aif_mask=masks.get("aif"),
                      brain_mask=masks.get("brain"), tumor_mask=masks.get("tumor"), keep_curves=True)
        curves = res.delta_r2s.data[res.brain_mask]
        if curves.shape[0] > max_curves:
            curves = curves[rng.choice(curves.shape[0], max_curves, replace=False)]
        out.append(TrainingCase(np.ascontiguousarray(curves, np.float32), res.aif.astype(np.float32),
                                float(res.times[1] - res.times[0]), case.name))
    if not out:
        raise InputError(f"no case in {folder}: each case is a sub-folder with signal.nii.gz "
                         "(and optionally mask_aif.nii.gz, mask_brain.nii.gz)")
    return out


def save_weights(network, out_dir: str | Path, name: str, card: dict) -> Path:
    """``<out_dir>/<name>.pt`` (state dict) and its model card ``<name>.json`` with the sha256."""
    import torch

    from ...weights import save_weights_and_card

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    return save_weights_and_card(lambda tmp: torch.save(state, tmp), path,  # complete or the old file
                                 {"name": name, "model": "BBBAnomalyLib.dsc.phae.network:PHAE",
                                  "config": network.config, **card})

"""`bbbanomaly train dmri-vae` / `train dmri-recdisc`: the diffusion anomaly models from healthy subjects.

Folder layout: CASES/<case>/dwi.nii.gz with dwi.bval and dwi.bvec (FSL), optional mask_brain.*.
Every case must be healthy: the VAE learns to reconstruct it, RecDiscNet learns to find the
synthetic anomalies drawn into it (:mod:`.anomalies`, redrawn for every batch). Cases are
preprocessed once by rank 0 into OUT/<name>.prepared.npz (the same steps as a run; reused while the
cases and the model input are unchanged), split into
training and validation cases, and trained with DistributedDataParallel under torchrun (gloo on
CPU, NCCL on GPU). A checkpoint is written after every epoch; --resume continues from it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..core.errors import InputError

HELP = """\
Train a diffusion anomaly model on healthy subjects.

CASES/<case>/dwi.nii.gz + dwi.bval + dwi.bvec (FSL), optional mask_brain.nii.gz; only healthy
brains. Writes OUT/<name>.pt (float16 state dict) and OUT/<name>.json (model card: sha256, the
command, the canonical directions and grid, the fixed threshold from the validation cases), and
OUT/<name>.checkpoint.pt after every epoch (--resume continues from it).
`python scripts/validate_dmri.py cases DIR --n 20` writes healthy phantom cases in this layout.

examples:
  bbbanomaly train dmri-vae cases/ --out run1 --epochs 30
  torchrun --nproc-per-node 2 -m BBBAnomalyLib train dmri-recdisc cases/ --out run2
  bbbanomaly dmri dwi.nii.gz --model vae --weights run1/dmri-vae.pt --out result
"""


#: The VAE's latent size unless --latent says otherwise; dmri-recdisc has no latent and refuses another value
#: (train_command.check_training_numbers), which it used to ignore without a word.
DEFAULT_LATENT = 128


def register(models_subparsers, name: str) -> None:
    kind = name.split("-", 1)[1]
    label = {"vae": "3D variational autoencoder (DAE)", "recdisc": "RecDiscNet (reconstruction + discriminative U-Net)"}
    p = models_subparsers.add_parser(name, help=f"diffusion anomaly: {label[kind]} on healthy subjects",
                                     description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", help="folder of healthy case folders")
    p.add_argument("--out", required=True, help="output folder for <name>.pt, <name>.json and the checkpoint")
    p.add_argument("--name", default=name, help=f"weights name (default {name})")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=2, help="volumes per step and process (default 2)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate; ×0.95 per epoch (default 1e-3)")
    p.add_argument("--latent", type=int, default=DEFAULT_LATENT,
                   help=f"VAE latent size (default {DEFAULT_LATENT})" if kind == "vae" else
                   "the VAE's latent size, for `train dmri-vae` only: RecDiscNet has no latent, and a value other "
                   f"than the default {DEFAULT_LATENT} is refused here")
    p.add_argument("--widths", type=int, nargs=3, default=[24, 48, 64],
                   help="channels of the 3 levels (each at most 8 or a multiple of 8)")
    p.add_argument("--grid", type=int, nargs=3, default=[40, 48, 40], help="field of view in voxels (÷8)")
    p.add_argument("--voxel-mm", type=float, default=4.0, help="voxel size of the field of view (default 4)")
    p.add_argument("--directions", type=int, default=64, help="canonical gradient directions (default 64)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="cases held out for validation (default 0.2)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/<name>.checkpoint.pt")
    p.add_argument("--init", help="start from these weights (bundled name or .pt with its card; same model "
                                  "configuration), e.g. to fine-tune dmri-recdisc-phantom on more anatomy")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = torch's default)")
    p.add_argument("--trained-on", default="", help="what the cases are (written to the model card)")
    p.set_defaults(run=lambda args: run(args, kind))


def run(args, kind: str) -> int:
    options = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "latent", "widths", "grid", "voxel_mm",
                                             "directions", "val_fraction", "device", "seed", "resume", "threads",
                                             "trained_on", "name", "init")}
    train(args.cases, args.out, kind, **options)
    return 0


def case_folders(cases: Path) -> list[Path]:
    cases = Path(cases)
    if not cases.is_dir():
        raise InputError(f"cases folder {cases} does not exist")
    found = sorted(p for p in cases.iterdir() if p.is_dir() and any(p.glob("dwi.nii*")))
    if not found:
        raise InputError(f"{cases} holds no case folders with dwi.nii.gz (+ dwi.bval, dwi.bvec)")
    return found


def prepare_cases(folders: list[Path], spec, printer=print) -> dict:
    """{"x": (n, K, gx, gy, gz) float16, "mask": (n, gx, gy, gz) bool, "names": [...]} of the cases."""
    from ..io import read_mask
    from .dwi_io import read_dwi
    from .preprocessing import prepare

    xs, masks = [], []
    for i, folder in enumerate(folders):
        dwi = read_dwi(next(folder.glob("dwi.nii*")))
        mask_path = next(iter(sorted(folder.glob("mask_brain.nii*"))), None)
        brain = read_mask(mask_path, dwi, "mask_brain") if mask_path else None
        prepared = prepare(dwi, spec, brain_mask=brain)
        xs.append(prepared.network_input.astype(np.float16))
        masks.append(prepared.network_mask)
        printer(f"prepared {folder.name} ({i + 1}/{len(folders)})")
    return {"x": np.stack(xs), "mask": np.stack(masks), "names": np.array([f.name for f in folders])}


def train(cases, out, kind: str, *, epochs: int = 30, batch_size: int = 2, lr: float = 1e-3,
          latent: int = DEFAULT_LATENT, widths=(24, 48, 64), grid=(40, 48, 40), voxel_mm: float = 4.0,
          directions: int = 64, val_fraction: float = 0.2, device: str = "auto", seed: int = 0, resume: bool = False,
          threads: int = 0, trained_on: str = "", name: str | None = None, progress=None,
          init: str | None = None) -> Path | None:
    """Train and write OUT/<name>.pt + .json (on rank 0); returns the weights path on rank 0."""
    if kind == "recdisc" and latent != DEFAULT_LATENT:  # as the command line refuses it (train_command.py)
        raise InputError(f"latent={latent} is the VAE's latent size; RecDiscNet has no latent: leave it out")
    import torch

    from ..training import all_reduce_mean, distributed_context, load_checkpoint, require_finite, save_checkpoint
    from .gradients import canonical_directions
    from .models import build
    from .preprocessing import ModelInput

    if threads:
        torch.set_num_threads(threads)
    if epochs < 1 or batch_size < 1 or not 0 <= val_fraction < 1:
        raise InputError("--epochs and --batch-size must be >= 1 and --val-fraction in [0, 1)")
    name = name or f"dmri-{kind}"
    out = Path(out)
    ctx = distributed_context(device)
    say = (lambda msg: print(f"[train {name}] {msg}", flush=True)) if ctx.is_main else (lambda msg: None)
    spec = ModelInput(canonical_directions(directions), 1000.0, tuple(grid), float(voxel_mm))
    prepared_path = out / f"{name}.prepared.npz"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        folders = case_folders(Path(cases))
        fingerprint = _fingerprint(spec, folders)
        if _cached_fingerprint(prepared_path) != fingerprint:  # same cases and model input: reuse
            data = prepare_cases(folders, spec, say)
            np.savez(prepared_path.with_suffix(".partial.npz"), fingerprint=np.array(fingerprint), **data)
            prepared_path.with_suffix(".partial.npz").replace(prepared_path)
        else:
            say(f"reusing the preprocessed cases in {prepared_path.name}")
    ctx.barrier()
    with np.load(prepared_path, allow_pickle=False) as z:
        x_all, mask_all, names = z["x"], z["mask"], list(z["names"])
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = int(round(val_fraction * len(names))) if len(names) > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and len(names) > 1 else 0), len(names) - 1)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    say(f"{len(train_idx)} training and {len(val_idx)} validation cases; {ctx.world_size} process(es) on {ctx.device}")

    torch.manual_seed(seed)
    config = {"channels": directions, "grid": list(grid), "widths": list(widths)}
    config.update({"latent": latent, "norm": "group"} if kind == "vae" else {"norm": "group"})
    network = build(kind, config)
    initialised_from = None
    if init and not resume:
        from .inference import load_model

        start_from = load_model(init, kind, "cpu")
        if start_from.card.get("config") != config:
            raise InputError(f"--init {init}: its configuration {start_from.card.get('config')} differs from this "
                             f"run's {config}; give matching --widths/--grid/--directions/--latent")
        network.load_state_dict(start_from.network.state_dict())
        initialised_from = {"name": start_from.card.get("name"), "sha256": start_from.card.get("sha256")}
        say(f"initialised from {init}")
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)
    checkpoint = out / f"{name}.checkpoint.pt"
    start, history = 0, []
    if resume:
        if not checkpoint.is_file():
            raise InputError(f"--resume: no checkpoint {checkpoint}")
        state = load_checkpoint(checkpoint, network, optimizer, require=("epoch", "scheduler"))
        start = int(state["epoch"]) + 1
        scheduler.load_state_dict(state["scheduler"])
        history = list(state.get("history", []))
        say(f"resumed after epoch {start} of {epochs}")
    model = ctx.wrap(network)
    sampler = ctx.sampler(list(train_idx), shuffle=True, seed=seed)
    began = time.time()
    for epoch in range(start, epochs):
        t0 = time.time()
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
            mine = [train_idx[i] for i in sampler]
        else:
            mine = list(np.random.default_rng(seed + epoch).permutation(train_idx))
        losses = []
        for step in range(0, len(mine), batch_size):
            batch = np.sort(mine[step:step + batch_size])
            xb = torch.from_numpy(x_all[batch].astype(np.float32)).to(ctx.device)
            mb = torch.from_numpy(mask_all[batch]).to(ctx.device)
            gen = torch.Generator().manual_seed(hash((seed, epoch, ctx.rank, step)) % (2 ** 31))
            loss = _loss(kind, model, xb, mb, gen, voxel_mm)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        train_loss = all_reduce_mean(np.mean(losses) if losses else 0.0, ctx)
        val_loss = _validation_loss(kind, network, x_all, mask_all, val_idx, ctx.device, voxel_mm) if len(val_idx) else None
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "seconds": time.time() - t0})
        say(f"epoch {epoch + 1}/{epochs}: train loss {train_loss:.5f}"
            + (f", validation loss {val_loss:.5f}" if val_loss is not None else "") + f" ({time.time() - t0:.1f} s)")
        if progress is not None:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")
        if ctx.is_main:
            save_checkpoint(checkpoint, model, optimizer, epoch, scheduler=scheduler.state_dict(), history=history)
        ctx.barrier()
    weights_path = None
    if ctx.is_main:
        require_finite(network, history[-1]["train_loss"] if history else None)  # diverged: no weights
        weights_path = _write_weights(out, name, kind, network, config, spec, x_all, mask_all,
                                      val_idx if len(val_idx) else train_idx, history, ctx, trained_on,
                                      batch_size=batch_size, lr=lr, seconds=time.time() - began,
                                      n_train=len(train_idx), n_val=len(val_idx),
                                      **({"initialised_from": initialised_from} if initialised_from else {}))
        say(f"wrote {weights_path} and {weights_path.with_suffix('.json').name}")
    ctx.barrier()
    ctx.close()
    return weights_path


def _fingerprint(spec, folders) -> str:
    import hashlib
    import json

    text = json.dumps({"input": spec.to_json(), "cases": [[f.name, next(f.glob("dwi.nii*")).stat().st_size]
                                                           for f in folders]}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cached_fingerprint(path: Path) -> str | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return str(z["fingerprint"]) if "fingerprint" in z.files else None


def _loss(kind, model, xb, mb, gen, voxel_mm):
    from .anomalies import draw_anomalies
    from .models import recdisc_loss, vae_loss

    if kind == "vae":
        recon, mu, logvar = model(xb)
        return vae_loss(xb, recon, mu, logvar, mb[:, None].float())
    corrupted, labels = draw_anomalies(xb, mb, gen, voxel_mm)
    recon, logits = model(corrupted)
    return recdisc_loss(xb, recon, logits, labels, mb[:, None].float())


def _validation_loss(kind, network, x_all, mask_all, idx, device, voxel_mm) -> float:
    """Loss on the validation cases (fixed anomalies for RecDiscNet, so epochs compare)."""
    import torch

    network.eval()
    with torch.no_grad():
        losses = []
        for i in idx:
            xb = torch.from_numpy(x_all[[i]].astype(np.float32)).to(device)
            mb = torch.from_numpy(mask_all[[i]]).to(device)
            losses.append(float(_loss(kind, network, xb, mb, torch.Generator().manual_seed(int(i)), voxel_mm)))
    network.train()
    return float(np.mean(losses))


def _write_weights(out, name, kind, network, config, spec, x_all, mask_all, calib_idx, history, ctx, trained_on,
                   **training) -> Path:
    """float16 state dict + model card; the fixed threshold comes from healthy calibration cases."""
    import torch

    from .. import weights as registry
    from ..core.report import versions
    from .inference import LoadedModel, score

    network.eval()
    loaded = LoadedModel(network, kind, {}, spec, ctx.device)
    scores = ("abs-mean", "rms") if kind == "vae" else ("probability",)
    healthy = {s: np.concatenate([score(loaded, x_all[i].astype(np.float32), mask_all[i], s if kind == "vae"
                                        else "abs-mean")[0][mask_all[i]] for i in calib_idx]) for s in scores}
    if kind == "vae":
        fixed = {s: float(np.quantile(v, 0.995)) for s, v in healthy.items()}
        how = "99.5th percentile of each score in the healthy validation brains"
    else:
        fixed, how = 0.5, "the seed's 0.5 on the anomaly probability"
    quantiles = {s: {q: float(np.quantile(v, float(q))) for q in ("0.5", "0.9", "0.99", "0.999")}
                 for s, v in healthy.items()}
    path = out / f"{name}.pt"
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in network.state_dict().items()}
    card = {
        "name": name, "kind": kind, "model": f"BBBAnomalyLib.dmri.models:{'VAE' if kind == 'vae' else 'RecDiscNet'}",
        "config": config, "input": spec.to_json(), "fixed_threshold": fixed, "fixed_threshold_from": how,
        "healthy_score_quantiles": quantiles,
        "trained_on": trained_on or "the healthy cases in " + str(out),
        "command": " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "",
        "training": {**training, "epochs": len(history), "processes": ctx.world_size,
                     "final_train_loss": history[-1]["train_loss"] if history else None,
                     "final_val_loss": history[-1]["val_loss"] if history else None, "versions": versions()},
        "stored_as": "float16 state dict (cast to float32 on load)",
    }
    registry.save_weights_and_card(lambda tmp: torch.save(state, tmp), path, card)
    return path

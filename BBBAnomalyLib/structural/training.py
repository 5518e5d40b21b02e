"""`bbbanomaly train t1gd-diffusion | bbb-identifier | cae`: the T1/FLAIR models from BraTS-layout folders.

All three run in one process or under ``torchrun`` (DistributedDataParallel; gloo on CPU), write a
checkpoint after every epoch (``OUT/<name>.checkpoint.pt``; ``--resume`` continues from it) and
end with ``OUT/<name>.pt`` + ``OUT/<name>.json`` (model card with sha256, the command, the data).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..core.errors import InputError

#: A slice with at least this many tumor pixels (at the network size) is a tumor slice.
TUMOR_SLICE_PIXELS = 4

LAYOUT = """\
CASES/<case>/ holds NIfTI/NRRD files named by token: T1 *t1n* or *t1*, FLAIR *t2f*/*flair*/*fla*,
T1Gd *t1c*/*t1gd*/*t1ce*, segmentation *seg* (BraTS labels; enhancing = 4, or 3 in BraTS 2023),
optional brain mask *brain*/*mask* (else nonzero voxels / Otsu). The ET label of a case is 1 when
it has enhancing voxels. `python scripts/validate_t1flair.py cases DIR` writes phantoms this way.
CASES may also be a single case folder, and several CASES may be given: e.g. many phantoms plus a
few real cases, the real ones used several times per epoch (--repeat 1 8). --init WEIGHTS
fine-tunes existing weights (e.g. the bundled ones) instead of starting from random."""


def _common(p, name: str, epochs: int, architecture: str):
    p.add_argument("cases", nargs="+", help="folder(s) of case folders, or case folders themselves (see above)")
    p.add_argument("--repeat", type=int, nargs="+", metavar="N",
                   help="times each CASES folder's cases are used per epoch, one N per CASES in order (default 1 "
                        "each): oversamples a few real cases among many phantoms")
    p.add_argument("--init", metavar="WEIGHTS",
                   help="fine-tune: start from these weights (bundled name, or .pt with its .json card) instead of "
                        f"random; the architecture is theirs and overrides {architecture}")
    p.add_argument("--out", required=True, help="output folder for <name>.pt, <name>.json and the checkpoint")
    p.add_argument("--name", default=name, help=f"weights name (default {name})")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batches", type=int, default=0, help="stop each epoch after this many batches (0 = all)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/<name>.checkpoint.pt")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trained-on", default="", help="what the cases are, for the model card")


def _case_folders(args) -> list[tuple[Path, int]]:
    """(case folder, times used per epoch) for every case under the CASES arguments."""
    from .cases import case_folders

    repeat = args.repeat or [1] * len(args.cases)
    if len(repeat) != len(args.cases) or min(repeat) < 1:
        raise InputError(f"--repeat takes one whole number >= 1 per CASES folder ({len(args.cases)} given), "
                         f"got {' '.join(map(str, repeat))}")
    return [(folder, n) for root, n in zip(args.cases, repeat) for folder in case_folders(root)]


def _initial_model(args, kind: str, build):
    """(model, the --init weights' card or None): ``build()`` from random, or the ``--init``
    weights with their own architecture."""
    if not args.init:
        return build(), None
    import torch

    from .models import load

    model, card = load(args.init, kind, torch.device("cpu"))
    print(f"fine-tuning {card.get('name', args.init)} (architecture {card['config']} from its card)", file=sys.stderr)
    return model.train(), card


def _provenance(init_card: dict | None) -> dict:
    """The model-card entry that says which weights training started from (none: from random)."""
    if init_card is None:
        return {}
    return {"initialised_from": {k: init_card.get(k) for k in ("name", "sha256", "trained_on")}}


def _trained_on(args) -> str:
    return args.trained_on or f"the cases in {' '.join(map(str, args.cases))}"


def register(models_subparsers, name: str) -> None:
    helps = {"t1gd-diffusion": "ET-guided conditional diffusion synthesising T1Gd from T1 + FLAIR",
             "bbb-identifier": "identification CNN (contrastive maximum) on syntheses of a trained diffusion model",
             "cae": "3D convolutional autoencoder on normal T1 + FLAIR (cases without tumor)"}
    p = models_subparsers.add_parser(name, help=helps[name], description=f"{helps[name]}.\n\n{LAYOUT}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if name == "t1gd-diffusion":
        _common(p, "t1gd-diffusion", 20, "--width and --size")
        p.add_argument("--size", type=int, default=64, help="in-plane network size (default 64)")
        p.add_argument("--width", type=int, default=16, help="U-Net base width (default 16)")
        p.add_argument("--tumor-weight", type=float, default=4.0, help="extra L1 weight of tumor pixels (default 4)")
        p.add_argument("--enhancement-weight", type=float, default=0.0,
                       help="extra L1 weight per unit of true contrast change |T1Gd - T1| (default 0)")
        p.add_argument("--other-slices", type=float, default=1.0,
                       help="brain slices without tumor kept per tumor slice (default 1; the rest are skipped "
                            "each run, which spends CPU time where the enhancement is)")
        p.add_argument("--off-tumor-label", choices=["case", "random"], default="case",
                       help="ET label of slices without tumor: the case's (default, as in the seed) or a random one "
                            "each time. Outside the tumor T1Gd does not depend on enhancement; a random label keeps "
                            "the label from standing for the case (its scanner) when few real cases are mixed in")
        p.set_defaults(run=run_diffusion)
    elif name == "bbb-identifier":
        _common(p, "bbb-identifier", 10, "--width and --crop")
        p.add_argument("--synthesis", required=True, help="diffusion weights (.pt with its .json, or bundled name)")
        p.add_argument("--steps", type=int, default=4, help="sampler steps for the syntheses (default 4)")
        p.add_argument("--width", type=int, default=16)
        p.add_argument("--crop", type=int, default=32, help="tumor-centred window of the network (pixels, default 32)")
        p.add_argument("--calibration-cases", metavar="DIR",
                       help="cases (same layout) to fit the probability calibration on; default: the training cases, "
                            "which is optimistic when the identifier memorises them")
        p.set_defaults(run=run_identifier)
    else:
        _common(p, "cae", 30, "--width")
        p.add_argument("--reshape", choices=["global", "clustered"], default="global",
                       help="one shape for all (global) or the seed's clustered reshape")
        p.add_argument("--shape", type=int, nargs=3, default=[48, 56, 48], help="global shape (multiples of 8)")
        p.add_argument("--clusters", type=int, default=3, help="groups for --reshape clustered")
        p.add_argument("--width", type=int, default=8)
        p.add_argument("--tumor-cases", choices=["leave-out", "mask"], default="leave-out",
                       help="cases whose segmentation has tumor: left out (default), or used with the tumor plus "
                            "--tumor-margin excluded from the loss, so that their normal tissue is learned")
        p.add_argument("--tumor-margin", type=float, default=5.0,
                       help="mm around the segmented tumor also excluded with --tumor-cases mask (default 5)")
        p.add_argument("--score-reference", nargs="+", metavar="DIR",
                       help="normal cases (same layout, not trained on) whose patient scores are the z-score's "
                            "reference; default: the normal training cases (in-sample, so z comes out too large)")
        p.set_defaults(run=run_cae)


# --- shared loop --------------------------------------------------------------------------
def _train(args, model, dataset, loss_fn, card: dict, context, announce: bool = True):
    """Epochs of minibatch Adam with DDP, a checkpoint per epoch and resume; writes weights + card."""
    import torch

    from ..training import all_reduce_mean, load_checkpoint, require_finite, save_checkpoint
    from ..weights import save_weights_and_card

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"{args.name}.checkpoint.pt"
    torch.manual_seed(args.seed)
    model = context.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    first = 0
    if args.resume:
        if not ckpt.is_file():
            raise InputError(f"--resume: no checkpoint {ckpt}")
        first = int(load_checkpoint(ckpt, model, opt)["epoch"]) + 1
    sampler = context.sampler(dataset, shuffle=True, seed=args.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None,
                                         sampler=sampler, generator=torch.Generator().manual_seed(args.seed))
    history = []
    start = time.perf_counter()
    for epoch in range(first, args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        losses = []
        for i, batch in enumerate(loader):
            if args.max_batches and i >= args.max_batches:
                break
            opt.zero_grad()
            loss = loss_fn(model, [b.to(context.device) for b in batch])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        mean = all_reduce_mean(float(np.mean(losses)) if losses else float("nan"), context)
        history.append(mean)
        if context.is_main:
            save_checkpoint(ckpt, model, opt, epoch=epoch, loss=mean)
            print(f"epoch {epoch + 1}/{args.epochs}: loss {mean:.4f} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr)
    raw = getattr(model, "module", model)
    context.barrier()
    if context.is_main:
        require_finite(raw, history[-1] if history else None)  # a diverged training writes no weights
        weights = out / f"{args.name}.pt"
        state = raw.state_dict()
        card = dict(card, name=args.name, config=raw.config, command=_command(),
                    trained_on=_trained_on(args),
                    training=dict(card.get("training", {}), epochs=args.epochs, batch_size=args.batch_size,
                                  learning_rate=args.lr, processes=context.world_size, loss_per_epoch=history,
                                  seconds=round(time.perf_counter() - start, 1)))
        save_weights_and_card(lambda tmp: torch.save(state, tmp), weights, card)
        if announce:  # _train_then names its own final, calibrated file instead of this intermediate one
            print(f"weights: {weights} (+ {weights.with_suffix('.json').name})", file=sys.stderr)
    return raw, history


def _command() -> str:
    return "bbbanomaly " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _flip(tensors, generator):
    """One random left-right flip for all channels of an example (never per channel)."""
    import torch

    if torch.rand((), generator=generator) < 0.5:
        return [t.flip(-1) for t in tensors]
    return tensors


# --- t1gd-diffusion ---------------------------------------------------------------------------
def run_diffusion(args) -> int:
    import torch

    from ..training import distributed_context
    from .cases import load_case
    from .diffusion import ConditionalUNet, training_loss

    folders = _case_folders(args)
    context = distributed_context(args.device)
    try:
        model, init_card = _initial_model(args, "diffusion", lambda: ConditionalUNet(width=args.width))
        if init_card is not None:
            args.size = int(init_card["size"])  # the network's in-plane size is the weights'
        loaded = [(load_case(f, args.size), n) for f, n in folders]
        loaded = [(c, n) for c, n in loaded if c.et is not None]
        cases, repeats = [c for c, _ in loaded], [n for _, n in loaded]
        if not cases:
            raise InputError("no case has a segmentation (*seg*): the ET label and the tumor mask come from it")
        keep = [_training_slices(c, args.other_slices, np.random.default_rng(args.seed + i)) for i, c in enumerate(cases)]
        # a case used n times per epoch contributes its training slices n times
        stack = lambda attr: torch.as_tensor(np.concatenate([np.tile(getattr(c, attr)[k], (n, 1, 1))
                                                             for c, k, n in zip(cases, keep, repeats)]))
        t1, flair, t1gd, tumor = stack("t1"), stack("flair"), stack("t1gd"), stack("tumor")
        et = torch.as_tensor(np.concatenate([np.full(int(k.sum()) * n, c.et) for c, k, n in zip(cases, keep, repeats)]))
        dataset = torch.utils.data.TensorDataset(t1gd[:, None], torch.stack([t1, flair], 1), tumor[:, None], et)
        gen = torch.Generator().manual_seed(args.seed + context.rank)

        def loss_fn(model, batch):
            x0, cond, tum, lab = batch
            x0, cond, tum = _flip([x0, cond, tum], gen)
            if args.off_tumor_label == "random":
                lab = random_labels_off_tumor(lab, tum, gen)
            return training_loss(model, x0, cond, tum, lab, generator=gen, tumor_weight=args.tumor_weight,
                                 enhancement_weight=args.enhancement_weight)[0]

        if context.is_main:
            print(f"{len(cases)} cases ({sum(c.et for c in cases)} enhancing), {len(dataset)} slices of "
                  f"{args.size}x{args.size}, {context.world_size} process(es) on {context.device}", file=sys.stderr)
        card = {"kind": "diffusion", "size": args.size, "model": "BBBAnomalyLib.structural.diffusion:ConditionalUNet",
                "training": {"cases": len(cases), "slices": len(dataset), "case_names": [c.name for c in cases],
                             "repeats": repeats, "off_tumor_label": args.off_tumor_label,
                             "loss": f"L1 on x0, weight 1 + {args.tumor_weight:g} tumor + {args.enhancement_weight:g} |T1Gd - T1|; "
                                     "+ 0.1 Dice (segmentation head)"}, **_provenance(init_card)}
        _train(args, model, dataset, loss_fn, card, context)
    finally:
        context.close()
    return 0


def random_labels_off_tumor(labels, tumor, generator):
    """ET labels (B,) with every slice without tumor (fewer than TUMOR_SLICE_PIXELS tumor pixels in
    ``tumor`` (B, 1, H, W)) given a random label instead of its case's."""
    import torch

    off = tumor.flatten(1).sum(dim=1) < TUMOR_SLICE_PIXELS
    coin = torch.randint(0, 2, labels.shape, generator=generator).to(device=labels.device, dtype=labels.dtype)
    return torch.where(off, coin, labels)


def _training_slices(case, other_ratio: float, rng) -> np.ndarray:
    """All tumor slices and ``other_ratio`` times as many other brain slices (random, fixed by the seed)."""
    area = case.tumor.reshape(len(case.tumor), -1).sum(axis=1)
    brain = (case.t1.reshape(len(case.t1), -1) > -0.9).mean(axis=1) > 0.05
    tumor_rows, other_rows = np.flatnonzero(area >= TUMOR_SLICE_PIXELS), np.flatnonzero(brain & (area < TUMOR_SLICE_PIXELS))
    n_other = min(len(other_rows), int(round(other_ratio * max(len(tumor_rows), 1))))
    keep = np.zeros(len(area), bool)
    keep[tumor_rows] = True
    keep[rng.choice(other_rows, n_other, replace=False)] = True
    return keep


# --- bbb-identifier ---------------------------------------------------------------------------
def synthesise_tumor_slices(model, case, steps: int, seed: int, device):
    """(T1, FLAIR, syntheses (2, n, H, W), tumor-slice rows) of a case's tumor slices."""
    import torch

    from .diffusion import sample_both_labels

    rows = np.flatnonzero(case.tumor.reshape(len(case.tumor), -1).sum(axis=1) >= TUMOR_SLICE_PIXELS)
    cond = torch.as_tensor(np.stack([case.t1[rows], case.flair[rows]], 1))
    synth, _ = sample_both_labels(model, cond, steps=steps, seed=seed, device=device)
    return case.t1[rows], case.flair[rows], synth, rows


def run_identifier(args) -> int:
    import torch

    from ..training import distributed_context
    from .cases import case_folders, load_case
    from .identification import IdentificationCNN, fit_platt, slice_scores, tumor_crops, volume_difference
    from .models import load

    context = distributed_context(args.device)
    try:
        diffusion, dcard = load(args.synthesis, "diffusion", context.device)
        model, init_card = _initial_model(args, "identifier", lambda: IdentificationCNN(width=args.width, crop=args.crop))
        args.crop = model.config["crop"]  # the window the (initial) network looks at
        loaded = [(load_case(f, dcard["size"]), n) for f, n in _case_folders(args)]
        loaded = [(c, n) for c, n in loaded if c.et is not None and c.tumor.sum() > 0]
        cases, repeats = [c for c, _ in loaded], [n for _, n in loaded]
        if len({c.et for c in cases}) < 2:
            raise InputError("the identifier needs cases of both ET labels (enhancing and non-enhancing)")
        parts = [synthesise_tumor_slices(diffusion, c, args.steps, args.seed, context.device) for c in cases]
        xs, ys = [], []
        for case, n, (t1, flair, synth, rows) in zip(cases, repeats, parts):
            for label in (0, 1):  # synthesis made with ET = label; consistent when label == true ET
                crops = tumor_crops((t1, flair, synth[label]), case.tumor[rows], args.crop)
                xs.append(np.tile(crops, (n,) + (1,) * (crops.ndim - 1)))  # n times per epoch
                ys.append(np.full(len(t1) * n, float(label == case.et), np.float32))
        dataset = torch.utils.data.TensorDataset(torch.as_tensor(np.concatenate(xs)), torch.as_tensor(np.concatenate(ys)))
        gen = torch.Generator().manual_seed(args.seed + context.rank)

        def loss_fn(model, batch):
            x, y = batch
            (x,) = _flip([x], gen)
            return torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)

        card = {"kind": "identifier", "size": dcard["size"], "synthesis_weights": dcard.get("name"),
                "synthesis_sha256": dcard.get("sha256"), "steps": args.steps,
                "model": "BBBAnomalyLib.structural.identification:IdentificationCNN",
                "training": {"cases": len(cases), "slices": len(dataset), "case_names": [c.name for c in cases],
                             "repeats": repeats, "loss": "BCE on self-consistency"}, **_provenance(init_card)}

        def calibrate(raw):
            cal_cases, cal_parts, where = cases, parts, f"the {len(cases)} training cases"
            if args.calibration_cases:
                cal_cases = [c for c in (load_case(f, dcard["size"]) for f in case_folders(args.calibration_cases))
                             if c.et is not None and c.tumor.sum() > 0]
                cal_parts = [synthesise_tumor_slices(diffusion, c, args.steps, args.seed, context.device) for c in cal_cases]
                where = f"{len(cal_cases)} calibration cases in {args.calibration_cases} (not trained on)"
            diffs = [volume_difference(slice_scores(raw, t1, fl, s[1], c.tumor[r]), slice_scores(raw, t1, fl, s[0], c.tumor[r]))
                     for c, (t1, fl, s, r) in zip(cal_cases, cal_parts)]
            a, b = fit_platt(diffs, [c.et for c in cal_cases])
            raw.calibration.copy_(torch.tensor([a, b]))
            return {"platt_a": a, "platt_b": b, "fitted_on": where}

        card["calibration_note"] = "Platt (a, b) of S+ - S-, stored in the state dict (see calibration.fitted_on)"
        _train_then(args, model, dataset, loss_fn, card, context, calibrate)
    finally:
        context.close()
    return 0


def _train_then(args, model, dataset, loss_fn, card, context, finish):
    """Train, then ``finish(model) -> dict`` (calibration) before the final weights are written."""
    epochs = args.epochs
    # train all epochs without writing the final weights, calibrate, then write them
    name = args.name
    args.name = f"{name}.uncalibrated"
    start = time.perf_counter()
    try:
        raw, history = _train(args, model, dataset, loss_fn, card, context, announce=False)
    finally:
        args.name = name
    if context.is_main:
        import torch

        from ..training import require_finite
        from ..weights import save_weights_and_card

        card = dict(card, calibration=finish(raw))
        require_finite(raw)  # the calibration's numbers too
        out = Path(args.out)
        state = raw.state_dict()
        card = dict(card, name=name, config=raw.config, command=_command(),
                    trained_on=_trained_on(args),
                    training=dict(card["training"], epochs=epochs, batch_size=args.batch_size, learning_rate=args.lr,
                                  processes=context.world_size, loss_per_epoch=history,
                                  seconds=round(time.perf_counter() - start, 1)))
        save_weights_and_card(lambda tmp: torch.save(state, tmp), out / f"{name}.pt", card)
        for stale in (out / f"{name}.uncalibrated.pt", out / f"{name}.uncalibrated.json"):
            stale.unlink(missing_ok=True)
        print(f"weights: {out / f'{name}.pt'} (+ {name}.json; the checkpoint for --resume: "
              f"{name}.uncalibrated.checkpoint.pt)", file=sys.stderr)


# --- cae -----------------------------------------------------------------------------------------
def _normal_tissue_weights(case, margin_mm: float, shape) -> np.ndarray:
    """(*shape) loss weights on the network grid: 0 where the tumor or its margin reaches, else 1."""
    from .cae import to_network

    tumor = case.volumes["tumor"]
    if tumor is None or not tumor.any():
        return np.ones(shape, np.float32)
    from scipy import ndimage  # imported here: `bbbanomaly --help` registers this module

    near = ndimage.distance_transform_edt(~tumor, sampling=case.volumes["spacing"]) <= margin_mm
    on_net = to_network([near.astype(np.float32) * 2.0 - 1.0], case.volumes["brain"], shape)[0]
    return (on_net <= -0.999).astype(np.float32)  # any overlap with the excluded region drops the voxel


def run_cae(args) -> int:
    import torch

    from ..training import distributed_context
    from .cae import ConvAutoencoder3D, anomaly, brain_box, plan_reshape, target_shape, to_network
    from .cases import load_case

    context = distributed_context(args.device)
    try:
        cases, repeats, masked, skipped = [], [], [], []
        for folder, n in _case_folders(args):
            case = load_case(folder, 16, need_t1gd=False)
            if case.volumes["has_tumor"] and args.tumor_cases == "leave-out":
                skipped.append(case)
                continue
            cases.append(case)
            repeats.append(n)
            if case.volumes["has_tumor"]:
                masked.append(case.name)
        if skipped and context.is_main:
            print(f"left out {len(skipped)} case(s) with tumor voxels in their segmentation: the autoencoder "
                  "learns normal anatomy only (--tumor-cases mask uses their normal tissue)", file=sys.stderr)
        if masked and context.is_main:
            print(f"{len(masked)} case(s) with tumor used with the tumor and {args.tumor_margin:g} mm around it "
                  "excluded from the loss", file=sys.stderr)
        normal = [c for c in cases if not c.volumes["has_tumor"]]
        if not normal:
            raise InputError("no normal case (without tumor) to train the autoencoder on; its patient-score "
                             "statistics need some")
        boxes = [np.subtract(*brain_box(c.volumes["brain"])[::-1]) for c in cases]
        policy = plan_reshape(boxes, args.reshape, tuple(args.shape), args.clusters, args.seed)
        shapes = [target_shape(policy, b) for b in boxes]
        volumes = [torch.as_tensor(to_network([c.volumes["t1"], c.volumes["flair"]], c.volumes["brain"], shape))
                   for c, shape in zip(cases, shapes)]
        weights = [torch.as_tensor(_normal_tissue_weights(c, args.tumor_margin, shape)[None])
                   for c, shape in zip(cases, shapes)]
        # one batch holds one shape: index the cases (each n times) and batch within a shape group
        dataset = torch.utils.data.TensorDataset(torch.as_tensor(np.repeat(np.arange(len(volumes)), repeats)))
        gen = torch.Generator().manual_seed(args.seed + context.rank)

        def loss_fn(model, batch):
            (idx,) = batch
            shape = tuple(volumes[int(idx[0])].shape)
            chosen = [int(i) for i in idx.cpu() if tuple(volumes[int(i)].shape) == shape]
            x, w = torch.stack([volumes[i] for i in chosen]), torch.stack([weights[i] for i in chosen])
            x, w = _flip([x.to(context.device), w.to(context.device)], gen)
            noisy = x + 0.02 * torch.randn(x.shape, generator=gen).to(x.device)
            residual = (model(noisy) - x).abs() * w  # w: 0 over a masked tumor, else 1
            return residual.sum() / (w.sum() * x.shape[1]).clamp_min(1.0)

        card = {"kind": "cae", "model": "BBBAnomalyLib.structural.cae:ConvAutoencoder3D", "reshape": policy,
                "training": {"cases": len(cases), "case_names": [c.name for c in cases], "repeats": repeats,
                             "left_out_with_tumor": len(skipped),
                             "used_with_tumor_masked": masked, "tumor_margin_mm": args.tumor_margin if masked else None,
                             "loss": "L1 (denoising, σ 0.02), tumor + margin excluded where masked"}}
        model, init_card = _initial_model(args, "cae", lambda: ConvAutoencoder3D(width=args.width))
        card.update(_provenance(init_card))

        reference, reference_text = normal, f"the {len(normal)} normal training cases (in-sample)"
        if getattr(args, "score_reference", None):
            from .cases import case_folders

            reference = [load_case(f, 16, need_t1gd=False) for root in args.score_reference for f in case_folders(root)]
            reference = [c for c in reference if not c.volumes["has_tumor"]]
            if not reference:
                raise InputError("--score-reference holds no normal case (without tumor)")
            reference_text = f"{len(reference)} held-apart normal cases ({', '.join(map(str, args.score_reference))})"
        card["score_reference"] = reference_text

        def score_stats(raw):
            # the patient score's reference is normal anatomy: cases with a tumor would inflate it
            scores = [anomaly(raw, [c.volumes["t1"], c.volumes["flair"]], c.volumes["brain"], policy, context.device)[1]
                      for c in reference]
            raw.score_stats.copy_(torch.tensor([float(np.mean(scores)), float(np.std(scores, ddof=min(1, len(scores) - 1)) + 1e-6)]))
            return {"patient_score_mean": float(np.mean(scores)), "patient_score_sd": float(np.std(scores, ddof=min(1, len(scores) - 1))),
                    "on": reference_text, "scores": [float(v) for v in scores]}

        _train_then(args, model, dataset, loss_fn, card, context, score_stats)
    finally:
        context.close()
    return 0

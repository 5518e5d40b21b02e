"""The RLS step of the pipeline: network input -> autoencoder (per case or bundled) -> residual maps.

Kept apart from :mod:`.rls` (the network and its preprocessing, shared with cohort training) so
that the pipeline reads as a list of steps and the model source logic lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError
from . import rls
from .parameters import DCEParameters, RLSSource

#: Voxels whose baseline signal is below this fraction of the brain median are not trained on
#: (background and noise-floor voxels; the seed drops mean signal <= 20 in its scanner units).
MIN_SIGNAL_FRACTION = 0.05
#: Fewer normal-appearing voxels than this cannot train the per-case autoencoder.
MIN_TRAINING_VOXELS = 100


class TooFewTrainingVoxels(InputError):
    """The per-case RLS model has too little normal brain to learn from; the pipeline then skips the
    learned map (and says why) rather than refusing the classic maps too."""


@dataclass
class RLSOutput:
    """The maps and what it takes to redraw the reconstruction for the panel's curves: the model and the SER
    curves it was run on (a view the pipeline keeps anyway), not the (n, n_frames + 4) network input or
    output, which the run no longer holds (issue 17): :meth:`ser_reconstruction` recomputes them block by
    block, the same blocks as the run, so the same values."""

    maps: dict[str, np.ndarray] | None  # rls, rls_abs, rls_uncertainty per brain voxel [% SER]; None once
    # run_dce has put them on the grid (DCEResult.maps: the same float32 values, not held twice)
    info: dict  # for the report
    ser: object = field(repr=False, default=None)  # the SER curves, a function or conversion.SERRows recomputing them
    grid: np.ndarray = field(repr=False, default=None)
    post: np.ndarray = field(repr=False, default=None)
    model: object = field(repr=False, default=None)
    times: np.ndarray = field(repr=False, default=None)
    n_base: int = 0
    n_frames: int = 0
    step: float | None = None
    device: object = "cpu"
    chunk: int = rls.ROW_CHUNK

    def ser_reconstruction(self, times: np.ndarray | None = None) -> np.ndarray:
        """The network's reconstruction as SER on the frame times (of the run; ``times`` must be them)."""
        if times is not None and self.times is not None and not np.array_equal(times, self.times):
            raise ValueError("the reconstruction is on the run's frame times")
        ser = self.ser() if callable(self.ser) else self.ser
        return rls.ser_reconstruction(self.model, ser, self.times if self.times is not None else times,
                                      self.n_base, self.n_frames, step=self.step, device=self.device,
                                      chunk=self.chunk)


def load_bundled(name_or_path: str):
    """(model, n_frames, card) from a bundled weights name or a .pt file (checked, weights_only). A card with
    ``grid_step_s`` means the network takes curves on the fixed grid of that step (:func:`rls.network_input`);
    without it, on the grid spanning the acquisition."""
    from .. import weights as registry

    card, _ = registry.read_card(name_or_path)
    registry.check_model(card, "BBBAnomalyLib.dce.rls:build_autoencoder", name_or_path)
    state = registry.load_state_dict(name_or_path)
    first = next((k for k in state if k.endswith("weight")), None)
    if first is None or getattr(state[first], "ndim", 0) != 2:
        raise InputError(f"the weights {name_or_path} do not hold an RLS autoencoder; were they trained with "
                         "`bbbanomaly train dce-rls`?")
    n_inputs = int(state[first].shape[1])
    model = rls.build_autoencoder(n_inputs)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"the weights {name_or_path} do not fit the RLS autoencoder ({exc.__class__.__name__}); "
                         "were they trained with `bbbanomaly train dce-rls`?") from None
    return model.eval(), n_inputs - rls.BOX_ENTRIES, card


#: When per-case training is trusted (``--rls auto``) for weights without a training domain on their card.
#: Measured before leak-probe early stopping (docs/validation.md): without a tumor mask the per-case network
#: learned the tumor too (independent phantom: AUC 0.29, bundled 0.99); per-case RLS followed Ktrans at 300 s
#: (r 0.84-0.92) but not at 420 s (0.42) or 600 s (-0.70), and detected less well at 180 s (AUC 0.82).
PER_CASE_DURATION_S = (240.0, 360.0)
PER_CASE_MIN_VOXELS = 5000


def choose_source(duration: float, n_normal: int, tumor_given: bool, interval: float | None = None,
                  domain: dict | None = None) -> tuple[RLSSource, str]:
    """(CASE or BUNDLED, why) for ``--rls auto``.

    With the bundled weights' ``training_domain`` (their card): the bundled weights inside it, always. A
    per-case network is retrained on every series and its early-stopped state sits where the leak starts to
    be reconstructed, so its map moves with its own training: on the independent phantom the same case every
    2nd frame gave SSIM 0.79 against the full series, and one training seed of D_hybrid rim r 0.30
    (docs/validation.md), while the bundled weights give one map for one set of curves. Outside the domain
    a per-case network (tumor mask given, enough normal voxels) at least knows the protocol; otherwise the
    bundled weights, with the out-of-domain warning."""
    if domain:
        checks = [("duration_s", duration, "acquisition of {:.0f} s")]
        if interval is not None:
            checks.append(("frame_interval_s", interval, "frame interval of {:.3g} s"))
        outside = [label.format(value) + f" (trained {domain[key][0]:g}-{domain[key][1]:g} s)"
                   for key, value, label in checks if key in domain and not domain[key][0] <= value <= domain[key][1]]
        if not outside:
            return RLSSource.BUNDLED, ("the protocol lies inside the bundled weights' training domain; a per-case "
                                       "network's map changes with its own training, the bundled weights' does not")
        why = "; ".join(outside) + " outside the bundled weights' training domain"
        if tumor_given and n_normal >= PER_CASE_MIN_VOXELS:
            return RLSSource.CASE, f"{why}: trained on this case ({n_normal} normal-appearing voxels)"
        lack = "no tumor mask" if not tumor_given else f"only {n_normal} normal-appearing brain voxels"
        return RLSSource.BUNDLED, f"{why}, but {lack} for a per-case network: bundled weights, with caution"
    if not tumor_given:
        return RLSSource.BUNDLED, ("no tumor mask: a per-case network would be trained on the tumor too and "
                                   "reconstruct its leakage")
    lo, hi = PER_CASE_DURATION_S
    if not lo <= duration <= hi:
        return RLSSource.BUNDLED, (f"the acquisition lasts {duration:.0f} s; per-case RLS is reliable only for "
                                   f"{lo:.0f}-{hi:.0f} s acquisitions on the validation phantoms")
    if n_normal < PER_CASE_MIN_VOXELS:
        return RLSSource.BUNDLED, f"only {n_normal} normal-appearing brain voxels (< {PER_CASE_MIN_VOXELS}) to train on"
    return RLSSource.CASE, (f"tumor mask given, {duration:.0f} s acquisition and {n_normal} normal-appearing voxels: "
                            "trained on this case")


def _training_domain(name_or_path: str) -> dict | None:
    from .. import weights as registry

    try:
        card, _ = registry.read_card(name_or_path)
    except InputError:
        return None  # load_bundled says what is wrong if the bundled weights are then chosen
    return card.get("training_domain")


def not_separated_warning(what: str) -> str:
    return (f"{what} never made synthetic leaks stand out above normal curves during training (early-stopping "
            "score <= 0), so its RLS map may not show leakage")


def run_rls(ser: np.ndarray, times: np.ndarray, n_base: int, params: DCEParameters, exclude: np.ndarray,
            s0: np.ndarray, timer, warnings: list[str], progress, tumor_given: bool = False) -> RLSOutput:
    import torch

    from ..core.devices import resolve_device

    if params.threads:
        torch.set_num_threads(int(params.threads))
    device = resolve_device(params.device)
    source = params.rls
    eligible = ~exclude & (s0 > MIN_SIGNAL_FRACTION * np.median(s0))
    rows = rls.training_rows(ser, eligible)
    info: dict = {"source": source.value, "device": device.type}
    if source is RLSSource.AUTO:
        source, reason = choose_source(float(times[-1] - times[0]), int(rows.sum()), tumor_given,
                                       float(np.median(np.diff(times))), _training_domain(params.rls_weights))
        info.update(source=source.value, choice={"source": source.value, "reason": reason})
        warnings.append(f"RLS: {'bundled weights' if source is RLSSource.BUNDLED else 'per-case network'} "
                        f"({reason})")
    if source is RLSSource.BUNDLED:
        if params.rls_epochs != DCEParameters.rls_epochs:  # per-case training only: said, not silently dropped
            how = "chosen by --rls auto" if params.rls is RLSSource.AUTO else "--rls bundled"
            warnings.append(f"RLS: the bundled weights were used ({how}), so --rls-epochs {params.rls_epochs} was "
                            "ignored; it applies to the per-case network (--rls case) only")
        with timer("rls_load"):
            model, n_frames, card = load_bundled(params.rls_weights)
        info.update(weights=params.rls_weights, frames=n_frames, sha256=card.get("sha256"))
        proto = card.get("protocol") or {}
        duration = float(times[-1] - times[0])
        domain = card.get("training_domain")
        if domain:  # weights trained over a range of protocols: warn outside it
            interval = float(np.median(np.diff(times)))
            for key, value, label in (("duration_s", duration, "acquisition duration"),
                                      ("frame_interval_s", interval, "frame interval")):
                lo, hi = domain.get(key, (value, value))
                if not lo <= value <= hi:
                    warnings.append(f"RLS: the {label} {value:.3g} s is outside the range the bundled weights "
                                    f"{params.rls_weights} were trained on ({lo:.3g}-{hi:.3g} s); treat the RLS map "
                                    "with caution")
        step = card.get("grid_step_s")
        if step:
            info["grid_step_s"] = float(step)
            span = (n_frames - 1) * step
            if duration > span + 1e-6:
                warnings.append(f"RLS: the bundled weights {params.rls_weights} see the first {span:.0f} s of a "
                                f"series; the {duration - span:.0f} s after it are not in the RLS map")
        elif proto and abs(duration - proto.get("duration_s", duration)) > 0.2 * proto.get("duration_s", duration):
            warnings.append(f"the bundled RLS weights were trained on {proto['duration_s']:.0f} s acquisitions and "
                            f"this one lasts {duration:.0f} s: curves are resampled to the network's grid, which "
                            "changes their time scale; the per-case model (--rls case) has no such mismatch")
        progress(0.92, "RLS inference")
    else:
        n_frames, step = params.rls_frames, None
        if rows.sum() < MIN_TRAINING_VOXELS:
            raise TooFewTrainingVoxels(f"only {int(rows.sum())} normal-appearing brain voxels are left to train the "
                                       f"RLS autoencoder on (at least {MIN_TRAINING_VOXELS}); give a larger brain "
                                       "mask, or use --rls bundled")
        # the training rows' network input only (every row's input depends on that row alone: the same rows
        # as network_input(ser)[rows], without the input of every brain voxel held)
        x_train = rls.network_input(ser[rows], times, n_base, n_frames)[0]
        with timer("rls_training"):
            model, losses = rls.train_autoencoder(x_train, epochs=params.rls_epochs, seed=params.seed, device=device,
                                                  max_voxels=params.rls_max_training_voxels,
                                                  progress=lambda f, m: progress(0.9 * f, m))
        del x_train
        stopping = getattr(model, "training_info", None)
        info.update(frames=n_frames, training_voxels=int(min(rows.sum(), params.rls_max_training_voxels)),
                    epochs=params.rls_epochs, final_l1_loss=float(losses[-1]), early_stopping=stopping)
        if stopping and stopping.get("probe_score", 1.0) <= 0:
            warnings.append(not_separated_warning("the per-case RLS network") + "; try --rls bundled")
        progress(0.92, "RLS inference")
    del rows
    # network input, reconstruction and maps by blocks of rows; the reconstruction is not kept
    block = inference_block(ser.shape[0], params.chunk_voxels)
    with timer("rls_inference"):
        maps, _, grid, post = rls.infer(model, ser, times, n_base, n_frames, step=step, device=device,
                                        chunk=block, keep_reconstruction=False)
    return RLSOutput(maps, info, ser, grid, post, model, np.asarray(times), n_base, n_frames, step, device, block)


#: Rows of the smallest inference block, and the unit blocks are counted in.
MIN_BLOCK = 4096


def inference_block(n: int, chunk_voxels: int) -> int:
    """Rows per network pass: about 1/64 of the curves (as the model fit's chunks), whole multiples of
    MIN_BLOCK (rounded down, at least one), at most ``chunk_voxels``. The block's network input and output are
    float32 (rows, n_frames + 4), ~2x a curve's bytes each with dce-rls-world's 125 entries on a 60-frame series:
    1/64 of the curves keeps both within ~1/16 of the curves (~0.03x a whole-head series). Before: 1/16 of the
    curves (0.17x the 122 MiB reference series, with torch's activations beside), and earlier a fixed
    65,536-row block (0.27x that series, 0.85x a 37 MiB one, twice over). The block size changes no value
    (every step is per row; Testing/test_dce_memory.py)."""
    return max(1, min(int(chunk_voxels), MIN_BLOCK * max(1, max(n, 1) // (64 * MIN_BLOCK))))

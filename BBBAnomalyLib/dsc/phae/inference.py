"""PHAE inference and per-case self-supervised adaptation: the DeconvolutionModel of the learned method.

``PHAEModel(aif, dt).fit(curves)`` mirrors ``DeconvolutionModel``: one AIF and frame interval, all
voxels in memory-bounded chunks, a Fit with ``cbf`` [1/s] and ``tmax`` [s] that ``run_dsc`` scales
exactly like the classic methods', plus ``mtt`` [s], ``delay`` [s] and the decoder's model curves.
``adapt`` fine-tunes a copy of the encoder on the case's own curves with the same self-supervised
loss (no labels exist to use), for a fixed number of steps.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...core import checks
from ...core.errors import InputError
from .physics import area

#: round 4's recipe F, seed 48 (issue 14; default since round 6): grid encoder with deconvolved-curve inputs, trained on
#: the six-family TRAINING_WIDE generator. Chosen over dsc-phae-fast because the student was -24..-66 % biased on the
#: project's own DSC reference phantom (noiseless too) where this is -6..+11 % noiseless (docs/validation.md, round 6);
#: dsc-phae-fast, dsc-phae-world, dsc-phae-grid, dsc-phae-sim stay selectable
DEFAULT_WEIGHTS = "dsc-phae-wide"


@dataclass
class PHAEFit:
    """Per voxel: cbf = flow F [1/s] (× 6000·kH/ρ for ml/100 g/min, like DeconvolutionFit.cbf),
    tmax = delay [s] (the Lorentzian residue peaks at the delay), mtt [s] (the encoder's, the
    Lorentzian's ∫R; for weights trained with a supervised CBF term, whose card says "central volume",
    the central-volume MTT = (∫C/∫Ca)/CBF), loss = normalised MAE of the fit, fitted = model curves
    (n, T) in ΔR2* [1/s], fit_error = ||C - Ĉ||₂ / ||C||₂ per voxel (how far to trust the voxel: the
    physics decoder could not reproduce the measured curve; high in noise-dominated or non-physical
    curves)."""

    cbf: np.ndarray
    tmax: np.ndarray
    mtt: np.ndarray
    loss: np.ndarray
    fitted: np.ndarray | None = None
    regularisation: np.ndarray = field(default=None)  # API parity with DeconvolutionFit: zeros
    unmet: np.ndarray = field(default=None)  # API parity: all False
    adaptation: dict | None = None
    fit_error: np.ndarray | None = None
    cbf_uncertainty: np.ndarray | None = None  # predicted SD of log CBF (≈ relative SD), weights with that output
    pooled_curves: np.ndarray | None = None  # with guided pooling: the effective number of curves averaged per voxel
    #: the case outside the weights' training domain: one line per statistic (dsc/phae/domain.py), [] when inside
    #: it or the card has no domain, None when fit ran with domain_check=False
    domain_warnings: list[str] | None = None

    def __post_init__(self):
        if self.regularisation is None:
            self.regularisation = np.zeros_like(self.cbf)
        if self.unmet is None:
            self.unmet = np.zeros(self.cbf.shape, bool)

    @property
    def delay(self) -> np.ndarray:
        return self.tmax


def load_network(weights: str | None = None, device: str = "cpu"):
    """The PHAE network from a bundled name (default) or a .pt path, checksum-verified, in eval mode."""
    from ... import weights as registry
    from .network import PHAE

    name = str(weights or DEFAULT_WEIGHTS)
    card, _ = registry.read_card(name)
    registry.check_model(card, "BBBAnomalyLib.dsc.phae.network:PHAE", name)
    net = registry.instantiate(PHAE, card, registry.load_state_dict(name), name)
    return net.to(device).eval(), card


def finite_curves(curves, n_frames: int, what: str = "curves") -> np.ndarray:
    """``curves`` as an (n_voxels, n_frames) float32 array with no NaN or inf, else one InputError.

    A scripting user's curves reach PHAE without the DSC pipeline's checks: a (T,) curve was a bare ValueError, a
    NaN curve a silent NaN voxel in fit, a RuntimeError deep in torch in pooled_delays (its block mean is NaN) and
    NaN weights in adapt (every later fit all NaN). Checked by row blocks: one pass, 0.5 % of a whole-brain fit,
    where np.isfinite(curves).all() would allocate a boolean per value and take ~25x longer."""
    curves = np.asarray(checks.curve_matrix(curves, n_frames), dtype=np.float32)
    block = 8192
    if not all(np.isfinite(curves[s:s + block]).all() for s in range(0, curves.shape[0], block)):
        bad = np.flatnonzero(~np.isfinite(curves).all(axis=1))
        raise InputError(f"{bad.size} of the {curves.shape[0]} {what} (rows {bad[:5].tolist()}"
                         f"{' ...' if bad.size > 5 else ''}) hold NaN or infinite values; replace them (e.g. with 0) "
                         "or leave those voxels out")
    return curves


def chunk_workers(device, workers: int | None, n_voxels: int, chunk_voxels: int) -> int:
    """How many threads run PHAE's voxel chunks: 1 (serial) on CUDA (one stream), for a single chunk or on one
    CPU; else ``workers`` (None: the CPUs this process may use, at most 4)."""
    from ...core.devices import block_workers

    workers = block_workers() if workers is None else max(int(workers), 1)
    return 1 if device.type != "cpu" or n_voxels <= chunk_voxels else workers


@contextlib.contextmanager
def chunk_threads(workers: int):
    """A thread pool of ``workers`` threads over PHAE's voxel chunks, torch held to one thread inside it; None
    (run serially) for one worker.

    Like the classic deconvolution's chunk pool (dsc/deconvolution.py): a chunk is a few small matrix products
    (thousands of curves by ~120 frames), which torch runs without the GIL, so two chunks on two threads use two
    cores, where torch's own threads, splitting each small product, gained little (and next to the guided
    pooling's thread oversubscribed the cores). The guided pooling of a chunk runs in the same task (numpy's
    gathers and scipy's sparse product release the GIL too). Each chunk is computed by one thread in the same
    order of operations whatever the pool's size."""
    if workers < 2:
        yield None
        return
    import torch
    from concurrent.futures import ThreadPoolExecutor

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(workers)
    try:
        yield pool
    except BaseException:
        # a cancel from the progress callback (or an error) stops at once: the chunks not yet started are dropped,
        # not run to the end (pool.map submits them all at the start; its iterator also cancels them when the
        # caller's loop is left, but only once it is collected: this does not depend on that)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        torch.set_num_threads(previous)


class PHAEModel:
    """PHAE bound to one AIF and frame interval (dipy-style Model -> Fit, like DeconvolutionModel).

    >>> model = PHAEModel(aif, dt=1.5)           # bundled weights, CPU
    >>> fit = model.fit(curves)                   # (n_voxels, n_frames) ΔR2* [1/s]
    >>> fit.cbf, fit.mtt, fit.tmax

    Training domain: like ``bbbanomaly dsc --method phae``, :meth:`fit` compares the case (frame interval, duration,
    AIF rise time and width, from the model's AIF and dt, and the median contrast-to-noise of the curves given to
    fit, pooled when ``pooling`` is given; :func:`~BBBAnomalyLib.dsc.phae.domain.case_statistics`) with the range the
    weights were trained on (the card's ``training_domain``). Outside it, each statistic out of range is one
    ``UserWarning`` ("... is outside the range the PHAE weights <name> were trained on ...: treat the learned maps
    with caution and compare with oSVD"), issued once per model for a statistic above or below its range (a model is
    one case: fitting its voxels in parts does not repeat them), and every fit lists its lines in
    ``fit.domain_warnings``. The maps are the same either way. ``fit(..., domain_check=False)`` skips the check (the
    DSC pipeline makes it itself and writes the lines into its report's warnings); weights given as ``network=``
    have no card, hence no domain to check. To silence the warnings: ``warnings.simplefilter("ignore",
    UserWarning)`` around the fit.
    """

    def __init__(self, aif: np.ndarray, dt: float, weights: str | None = None, device: str = "cpu",
                 chunk_voxels: int = 8192, threads: int | None = None, network=None, transit_shape: str | None = None):
        import torch

        from ...core.devices import resolve_device

        from ...io.timing import MAX_FRAME_INTERVAL_S, MIN_FRAME_INTERVAL_S

        # one InputError naming the problem: a (1, T) AIF was "needs at least 8 frames", a NaN one "no positive peak"
        self.aif = checks.curve(aif, "AIF").astype(np.float32)
        if self.aif.size < 8:
            raise InputError(f"PHAE needs an AIF of at least 8 frames; got {self.aif.size}")
        if not np.isfinite(self.aif).all() or not self.aif.max() > 0:
            raise InputError("the AIF has no positive peak (or non-finite values): nothing to deconvolve")
        if int(np.argmax(self.aif)) == self.aif.size - 1:
            # the network reads the curves on a grid around the AIF's peak: with the bolus cut off, CBF came out
            # 40 % low on the reference phantom with no error (the fit error was the only sign)
            raise InputError(f"the AIF peaks at its last frame (frame {self.aif.size - 1}): the bolus passage is not "
                             "in the series; give the AIF of the whole series (frames in acquisition order)")
        # the frame interval of a dynamic series (io/timing.py): dt 0 was a ZeroDivisionError, -1.5 a math domain
        # error, 0.0015 an IndexError inside the network, 1500 (milliseconds) CBF 4x low without a word
        self.dt = checks.number(dt, "dt (the frame interval, s)", MIN_FRAME_INTERVAL_S, MAX_FRAME_INTERVAL_S,
                                hint="give seconds, e.g. 1.5 (a value in milliseconds divided by 1000)")
        self.device = resolve_device(device)
        self.chunk_voxels = checks.integer(chunk_voxels, "chunk_voxels", 1, 2**31 - 1)
        #: threads over voxel chunks on the CPU, one torch thread each (None: the CPUs, at most 4; chunk_threads);
        #: 0 or None is the default, a negative count was torch's RuntimeError
        self.workers = checks.integer(threads, "threads", 1, 4096) if threads else None
        if threads:
            torch.set_num_threads(int(threads))
        if network is None:
            network, self.card = load_network(weights, str(self.device))
        else:
            self.card = {"name": "in-memory", "config": network.config}
        #: the card's post-hoc CBF calibration (dsc/phae/calibration.py), checked here; None: the network's CBF as is
        self.calibration = None
        if self.card.get("calibration") is not None:
            from .calibration import check_calibration

            self.calibration = check_calibration(self.card["calibration"], self.card.get("name", weights))
        #: which CBF the SD output turns the flow into: "mean" (default, flow·e^(-s²/2)) or "median" (the flow as is;
        #: issue 14, round 4: chosen on the dev sweep for weights trained without a teacher)
        self.cbf_estimate = str(self.card.get("cbf_estimate", "mean"))
        if self.cbf_estimate not in ("mean", "median"):
            raise InputError(f"the weights {self.card.get('name', weights)} have cbf_estimate {self.cbf_estimate!r}; "
                             "this version knows 'mean' and 'median'")
        self.network = network.to(self.device).eval()
        #: a network told the capillary transit shape (issue 14, round 16; none is bundled): the shape given here, or,
        #: when None, the case's best shape by shape_evidence.best_shape, set by each fit
        self.transit_shape = transit_shape
        self._shape_given = transit_shape is not None
        if self._shape_given:
            from .shape_evidence import homogeneity_code

            try:
                homogeneity_code(str(transit_shape))
            except ValueError as exc:
                raise InputError(str(exc)) from None
        self._aif_t = torch.as_tensor(self.aif[None, :], device=self.device)
        self._domain_warned: set[tuple[str, bool]] = set()  # (statistic, below its range) already warned about

    def with_aif(self, aif: np.ndarray) -> "PHAEModel":
        """This model (the same network, card and calibration, adapted or not) bound to another AIF of the same
        length: the AIF moved to a slice's acquisition time (perfusion/slice_timing.py), one model per offset."""
        import torch

        other = copy.copy(self)
        other.aif = checks.curve(aif, "AIF").astype(np.float32)
        if other.aif.shape != self.aif.shape or not np.isfinite(other.aif).all():
            raise InputError(f"the moved AIF must have {self.aif.size} finite frames like the model's")
        other._aif_t = torch.as_tensor(other.aif[None, :], device=self.device)
        other._domain_warned = set()
        return other

    # ------------------------------------------------------------------------------------
    def fit(self, curves: np.ndarray, keep_curves: bool = True, progress=None, delay_shift=None,
            context_from: np.ndarray | None = None, pooling=None, domain_check: bool = True) -> PHAEFit:
        """Encode and decode (n_voxels, N) curves in chunks; returns a PHAEFit.

        delay_shift: optional (n_voxels,) delays [s] known from elsewhere (:meth:`pooled_delays`): each curve is
        moved earlier by its delay (in whole frames) before the network sees it, and the delay is added back to Tmax.
        pooling: a :class:`~BBBAnomalyLib.perfusion.guided_pooling.GuidedPooling` over these curves' voxels: each
        voxel's curve is replaced by its S0-guided neighbourhood mean before anything else. CBV and the model curves
        refer to the (pooled) curves on their own time axis, the fit error to the curve the network read.
        context_from: the case's curves for a context network's case context when ``curves`` are not all of them
        (the pooled delay's block means).
        domain_check: compare the case with the weights' training domain, a UserWarning per statistic outside it
        (see the class's description); False: no check (``fit.domain_warnings`` is None)."""
        import torch

        from .pooled_delay import shift_whole_frames

        curves = finite_curves(curves, self.aif.size)
        n = curves.shape[0]
        if delay_shift is not None:
            delay_shift = np.asarray(delay_shift, np.float32)
            if delay_shift.shape != (n,):
                raise InputError(f"delay_shift must be ({n},), one delay [s] per curve; got {delay_shift.shape}")
            # a NaN delay was cast to the smallest int64 and every curve replaced by its first frame (no warning)
            if not np.all(np.abs(delay_shift) <= self.aif.size * self.dt):
                raise InputError(f"delay_shift holds NaN, infinite or delays beyond the {self.aif.size * self.dt:g} s "
                                 "series; give delays in seconds (e.g. from pooled_delays)")
        domain_lines = self._check_domain(curves, pooling) if domain_check else None  # (after the refusals)
        out = {k: np.empty(n, np.float32) for k in ("flow", "delay", "mtt", "loss", "fit_error", "cbv", "log_cbf_sd",
                                                    "pooled")}
        out["pooled"][:] = 1.0
        out["log_cbf_sd"][:] = np.nan
        fitted = np.empty(curves.shape, np.float32) if keep_curves else None
        with torch.inference_mode():
            # grid encoder: the AIF's share of the first layer and the decoder's convolution matrix, once per case
            # (a context network also reads one case-level vector from all of these curves: dsc/phae/network.case_context)
            context = (self.network.case_context(torch.from_numpy(curves if context_from is None else
                                                                  np.asarray(context_from, np.float32)), self._aif_t, self.dt)
                       if getattr(self.network, "needs_context", False) else None)
            shape_code = None
            if getattr(self.network, "needs_shape", False):  # round 16: the case's best transit shape, told to the network
                from .shape_evidence import best_shape, homogeneity_code

                if not self._shape_given:
                    self.transit_shape = best_shape(torch.from_numpy(curves if context_from is None else
                                                                     np.asarray(context_from, np.float32)),
                                                    self._aif_t, self.dt)
                shape_code = homogeneity_code(self.transit_shape)
            case = (self.network.case_terms(self._aif_t, self.dt, context, shape_code)
                    if getattr(self.network, "is_grid", False) else None)
            if case is not None:  # the folded matrices too, before any worker thread reads the case
                self.network.fast_terms(case, curves.shape[1])
            aif_area = area(self._aif_t).clamp_min(1e-12)
        workers = chunk_workers(self.device, self.workers, n, self.chunk_voxels)
        # threads share chunk_voxels: the rows in flight, and so the working set (the deconvolution features alone
        # are ~4 kB a row), stay what one thread had; the speed does not depend on it from ~2,000 rows up
        rows = self.chunk_voxels if workers < 2 else max(1024, self.chunk_voxels // workers)
        chunks = [slice(start, min(start + rows, n)) for start in range(0, n, rows)]

        def run_chunk(sl: slice) -> int:
            """Pool (optionally), shift (optionally) and infer one chunk, writing its rows of the outputs."""
            with torch.inference_mode():  # thread-local: each worker thread enters it itself
                if pooling is not None:
                    pooled, out["pooled"][sl] = pooling.pool(curves, sl)
                    x = torch.as_tensor(pooled, device=self.device)
                else:
                    # a read-only array (np.load(mmap_mode="r"), a frombuffer) made torch warn about undefined behaviour
                    # on writes: nothing writes into x, but a chunk-sized copy keeps the user's output clean
                    rows = curves[sl] if curves.flags.writeable else np.array(curves[sl])
                    x = torch.as_tensor(rows, device=self.device)
                given = x
                if delay_shift is not None:
                    # whole frames: interpolating between frames would average their noise, and the network
                    # reads the curve's noise level (second differences) to decide how far to trust it
                    frames = torch.as_tensor(np.rint(delay_shift[sl] / self.dt).astype(np.int64), device=self.device)
                    x = shift_whole_frames(x, frames)
                if case is not None:  # grid encoder: folded inference, model curves written in place
                    direct = keep_curves and self.device.type == "cpu" and delay_shift is None
                    res = self.network.infer(x, case, torch.from_numpy(fitted[sl]) if direct else None)
                    if direct:
                        res.pop("fitted")
                else:
                    res = self.network(x, self._aif_t, self.dt, case=case)
                    res["fit_error"] = (torch.linalg.vector_norm(res["fitted"] - x, dim=1)
                                        / torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12))
                if delay_shift is not None:
                    res["delay"] = res["delay"] + frames
                    if keep_curves and "fitted" in res:  # back onto the given curves' time axis (moved later)
                        res["fitted"] = shift_whole_frames(res["fitted"], -frames)
                res["cbv"] = area(given) / aif_area
                if "log_cbf_sd" in res and self.cbf_estimate == "mean":
                    # the flow is a median estimate; exp(-s²/2) makes the mean of a log-normal error unbiased
                    res["flow"] = res["flow"] * torch.exp(-0.5 * res["log_cbf_sd"] ** 2)
                for key in out:
                    if key in res:
                        out[key][sl] = res[key].float().cpu().numpy()
                if keep_curves and "fitted" in res:
                    fitted[sl] = res["fitted"].float().cpu().numpy()
            return sl.stop

        with chunk_threads(min(workers, len(chunks))) as pool:
            # every chunk is computed alone with one torch thread (maps equal to a serial run's: Testing/test_phae_threads.py)
            for stop in (pool.map(run_chunk, chunks) if pool is not None else map(run_chunk, chunks)):
                if progress is not None:
                    progress(stop / max(n, 1))
        cbf = out["flow"] / self.dt
        if self.calibration is not None and not np.isnan(out["log_cbf_sd"]).all():
            from .calibration import apply_calibration

            cbf = apply_calibration(cbf, out["cbv"], out["log_cbf_sd"], self.dt, self.calibration)
        mtt = out["mtt"] * self.dt
        if "central" in str(self.card.get("mtt_output", "")):
            with np.errstate(divide="ignore", invalid="ignore"):
                mtt = np.where(cbf > 0, out["cbv"] / cbf, 0.0).astype(np.float32)
        return PHAEFit(cbf=cbf, tmax=out["delay"] * self.dt, mtt=mtt, loss=out["loss"], fitted=fitted,
                       fit_error=out["fit_error"],
                       cbf_uncertainty=None if np.isnan(out["log_cbf_sd"]).all() else out["log_cbf_sd"],
                       pooled_curves=out["pooled"] if pooling is not None else None, domain_warnings=domain_lines)

    def _check_domain(self, curves: np.ndarray, pooling=None) -> list[str]:
        """The lines of :func:`~.domain.out_of_domain` for these curves (the pooled ones with ``pooling``, as the
        network reads them), each warned (UserWarning, attributed to fit's caller) the first time this model finds
        its statistic above or below the range. Reads at most 20,000 curves (case_statistics)."""
        from .domain import case_statistics, out_of_domain

        domain = self.card.get("training_domain")
        if not domain or curves.shape[0] == 0:
            return []
        stats = case_statistics(curves, self.aif, self.dt,
                                read_rows=None if pooling is None else (lambda rows: pooling.pool(curves, rows)[0]))
        lines = []
        for key, (lo, hi) in domain.items():
            line = out_of_domain(stats, {key: (lo, hi)}, f"the PHAE weights {self.card.get('name')}")
            if line:
                lines += line
                side = (key, bool(stats[key] < lo))
                if side not in self._domain_warned:
                    self._domain_warned.add(side)
                    warnings.warn(line[0], UserWarning, stacklevel=3)
        return lines

    # ------------------------------------------------------------------------------------
    def pooled_delays(self, curves: np.ndarray, brain: np.ndarray, voxel_sizes, max_passes: int = 3,
                      offsets: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Per voxel the bolus delay [s] of its ~8 mm neighbourhood (dsc/phae/pooled_delay.py): the network run on
        the blocks' mean curves, interpolated back. ``curves`` are the brain's, in np.flatnonzero(brain) order.
        ``offsets``: each voxel's acquisition time relative to the AIF's (a 2D multi-slice series, slice_timing.py),
        for voxels then read against the AIF moved to their own time: a block mixing slices shows its bolus earlier
        by its voxels' mean offset on the frame grid, which is added back, so that the delay is the one against the
        moved AIFs (without it the network had to find that mean offset itself, and follows only part of a shift).
        Returns the delays and a summary for the report."""
        from .pooled_delay import block_grid, block_means, shift_earlier, voxel_delays

        # a list of curves was an AttributeError, a NaN curve a RuntimeError from torch, an empty mask numpy's
        # "zero-size array", voxel sizes NaN/(2, 2)/2.0 a ValueError or IndexError from the block grid
        curves = finite_curves(curves, self.aif.size)
        brain = np.asarray(brain) != 0
        if not brain.any():
            raise InputError("the brain mask is empty: pooled_delays needs the brain's voxels (nonzero = inside)")
        if curves.shape[0] != int(brain.sum()):
            raise InputError(f"{curves.shape[0]} curves for a brain mask of {int(brain.sum())} voxels; give one curve "
                             "per brain voxel, in np.flatnonzero(brain) order")
        try:  # one size for every axis (an isotropic scalar too), in mm
            sizes = np.broadcast_to(np.asarray(voxel_sizes, np.float64).ravel()[: brain.ndim], (brain.ndim,))
        except (TypeError, ValueError):
            sizes = np.full(brain.ndim, np.nan)
        if not np.all((sizes > 0) & np.isfinite(sizes)):
            raise InputError(f"voxel_sizes must be {brain.ndim} positive voxel edges in mm, one per axis of the brain "
                             f"mask (e.g. volume.voxel_sizes); got {voxel_sizes!r}")
        labels, block, grid_shape = block_grid(brain, sizes)
        means, used, counts = block_means(curves, labels, int(np.prod(grid_shape)))
        # The block means still carry some noise, and the network's delay shrinks towards its prior in noise: a
        # few passes, each on the block curves moved by the delay found so far, estimate what is left until it
        # is under a quarter frame (bounded to the network's delay range so that a block without signal, e.g.
        # CSF, cannot drift)
        import torch

        from .network import DELAY_RANGE_S

        lo, hi = getattr(getattr(self.network, "encoder", None), "delay_range", DELAY_RANGE_S)
        block_delay = np.zeros(len(means), np.float32)
        passes = 0
        for passes in range(1, max_passes + 1):
            moved = shift_earlier(torch.from_numpy(means), torch.from_numpy(block_delay / self.dt)).numpy()
            step = self.fit(moved, keep_curves=False, context_from=curves, domain_check=False).tmax  # block means
            block_delay = np.clip(block_delay + step, lo, hi).astype(np.float32)
            if np.abs(step).max() < 0.25 * self.dt:
                break
        if offsets is not None:  # the block's mean acquisition offset (its block mean's timing), added back
            block_offset = block_means(np.asarray(offsets, np.float32)[:, None], labels, int(np.prod(grid_shape)))[0]
            block_delay = block_delay + block_offset[:, 0]
        delays = voxel_delays(block_delay, used, counts, block, grid_shape, brain)
        summary = {"block_voxels": [int(b) for b in block], "blocks": int(used.size),
                   "shifted_voxels": int((np.rint(delays / self.dt) != 0).sum()), "passes": passes,
                   "delay_s": {"median": float(np.median(delays)), "p05": float(np.percentile(delays, 5)),
                               "p95": float(np.percentile(delays, 95))}}
        return delays, summary

    # ------------------------------------------------------------------------------------
    def adapt(self, curves: np.ndarray, steps: int = 150, batch: int = 1024, lr: float = 3e-4,
              max_voxels: int = 50000, seed: int = 0, time_limit_s: float = 45.0) -> dict:
        """Fine-tune a copy of the encoder on this case's curves (self-supervised MAE), in place.

        BatchNorm statistics stay frozen (eval mode): a case is one protocol and one AIF, and
        re-estimating them from its curves would shift every voxel; only the weights move. Stops at
        ``steps`` or ``time_limit_s``. Returns {"steps", "seconds", "loss_before", "loss_after"}.
        """
        import torch

        # a NaN curve made every weight NaN (and every later fit all NaN) without an error; a (T,) curve, an empty
        # array, batch 0 or max_voxels 0 were IndexErrors and RuntimeErrors from torch
        curves = finite_curves(curves, self.aif.size)
        if curves.shape[0] == 0:
            raise InputError("adapt needs at least one curve")
        steps = checks.integer(steps, "steps", 0, 10**7)
        batch = checks.integer(batch, "batch", 1, 10**7)
        max_voxels = checks.integer(max_voxels, "max_voxels", 1, 10**9)
        lr = checks.number(lr, "lr", 0.0, 1.0, low_open=True)
        rng = np.random.default_rng(seed)
        pick = rng.choice(curves.shape[0], size=min(max_voxels, curves.shape[0]), replace=False)
        data = torch.as_tensor(curves[pick], device=self.device)
        net = copy.deepcopy(self.network).to(self.device)
        net.eval()  # BatchNorm keeps its running statistics; gradients still flow (see PHAEEncoder.forward)
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
        gen = torch.Generator().manual_seed(seed)
        probe = data[: min(8192, data.shape[0])]
        context = (net.case_context(data, self._aif_t, self.dt) if getattr(net, "needs_context", False) else None)

        def mean_loss():
            with torch.inference_mode():
                return float(net(probe, self._aif_t, self.dt, context=context)["loss"].mean())

        before = mean_loss()
        start, done = time.perf_counter(), 0
        for done in range(1, steps + 1):
            idx = torch.randint(0, data.shape[0], (min(batch, data.shape[0]),), generator=gen)
            loss = net(data[idx], self._aif_t, self.dt, context=context)["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if time.perf_counter() - start > time_limit_s:
                break
        after = mean_loss()
        self.network = net
        return {"steps": done, "seconds": round(time.perf_counter() - start, 2), "loss_before": before,
                "loss_after": after}


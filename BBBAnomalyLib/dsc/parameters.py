"""Parameters of the DSC perfusion pipeline (a typed dataclass, scikit-learn style defaults)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DeconvolutionMethod(str, enum.Enum):
    """Deconvolution of the tissue curves by the AIF (see :mod:`.deconvolution`)."""

    SSVD = "ssvd"  # standard truncated SVD, lower-triangular Toeplitz matrix (Østergaard 1996)
    CSVD = "csvd"  # block-circulant SVD, delay-insensitive (Wu 2003)
    OSVD = "osvd"  # block-circulant SVD with a per-voxel oscillation-index threshold (Wu 2003)
    TIKHONOV = "tikhonov"  # Tikhonov on the block-circulant matrix, per-voxel GCV (Calamante 2003)
    PHAE = "phae"  # physics-informed autoencoder, self-supervised (Fayolle 2025; see dsc/phae/)


class InputKind(str, enum.Enum):
    SIGNAL = "signal"  # T2*-weighted signal: converted to ΔR2*(t) = -ln(S/S0)/TE
    CONCENTRATION = "concentration"  # already ΔR2*(t) or concentration; used as is


class LeakageCorrection(str, enum.Enum):
    NONE = "none"
    BSW = "bsw"  # Boxerman-Schmainda-Weisskoff (Boxerman 2006)


@dataclass
class DSCParameters:
    """Everything that shapes a DSC run. Defaults are what a radiologist would use clinically.

    Units: seconds for times, ml/100 g for CBV, ml/100 g/min for CBF; kH and density give the
    conversion ``CBV = 100 * kh / density * ∫C/∫Ca``. ``kh=1, density=1`` is the unit-less
    (ml/100 ml) convention of most digital reference objects; with ``density=1`` the maps are per
    100 ml of tissue (:attr:`tissue_unit`), and the report, roi-stats and BIDS sidecars say so.
    """

    method: DeconvolutionMethod = DeconvolutionMethod.OSVD
    input_kind: InputKind = InputKind.SIGNAL
    echo_time: float | None = None  # TE [s]; taken from the file's metadata when not given
    second_echo_time: float | None = None  # TE2 [s] for dual-echo input
    kh: float = 0.73  # large/small-vessel hematocrit ratio correction (1 - Hct_large)/(1 - Hct_small)
    density: float = 1.04  # brain tissue density [g/ml]
    leakage_correction: LeakageCorrection = LeakageCorrection.BSW
    bsw_min_t: float = 2.0  # apply the BSW correction where |K2| / SE(K2) reaches this (0 = everywhere)
    # Truncation thresholds (fraction of the largest singular value).
    ssvd_threshold: float = 0.2
    csvd_threshold: float = 0.1
    osvd_oi_target: float = 0.095  # oscillation-index target; 0.095 in vivo, 0.035 in simulations (Wu 2003)
    tikhonov_lambdas: int = 40  # size of the GCV grid of λ, 1e-3 to 1 σmax
    # how Tikhonov picks each voxel's λ: "gcv" (minimum of GCV over the grid), "lcurve" (the L-curve's corner over the
    # grid) or "fixed:F" (λ = F·σmax everywhere); see deconvolution.py and docs/reliability.md (session 22)
    tikhonov_lambda_rule: str = "gcv"
    # Baseline / bolus arrival. None = detected automatically.
    # True: the AIF mask is a search region (a ROI box around an artery); its arterial voxels are
    # chosen by peak height and background voxels are ignored. False: every voxel is averaged.
    aif_region: bool = False
    skip_frames: int = 1  # frames dropped at the start (not yet in T1 steady state)
    baseline_frames: tuple[int, int] | None = None  # [first, last) frame indices of the pre-bolus baseline
    chunk_voxels: int = 16384  # voxels per batch: bounds memory and keeps the working set in cache
    # PHAE (method="phae") only. weights: bundled name or a .pt path (None = the bundled default).
    phae_weights: str | None = None
    phae_adapt: bool = False  # per-case self-supervised fine-tuning before inference (< 1 min CPU)
    phae_adapt_steps: int = 150
    # the bolus delay of each ~8 mm block, removed from its voxels' curves before the network (dsc/phae/pooled_delay.py)
    phae_pooled_delay: bool = True
    # each voxel's curve averaged with its 3x3x3 neighbours, weighted by how alike their pre-contrast signal S0 is
    # (perfusion/guided_pooling.py); signal input only (concentration input has no S0). "auto": only where the
    # case's contrast-to-noise is below guided_pooling.AUTO_MAX_CNR; "on" / True always; "off" / False never
    phae_guided_pooling: str | bool = "auto"
    device: str = "auto"  # torch device for PHAE: auto, cpu or cuda
    # head motion (perfusion/motion.py): "rigid" registers every frame to the first analysed one, reports the
    # displacement (a warning over half a voxel) and resamples the frames that moved; "detect" reports and warns only;
    # "none" does not look
    motion_correct: str = "none"
    # slice timing of a 2D multi-slice series (perfusion/slice_timing.py): "auto" moves the AIF to each slice's
    # acquisition time where the file gives the slice times (SliceTiming); "none" ignores them, with a warning where
    # they differ (the default by session 22's rule, missed: see slice_timing.DEFAULT_WHY)
    slice_timing: str = "none"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        from ..core.checks import integer, number, optional_number
        from ..core.errors import InputError

        try:
            self.method = DeconvolutionMethod(self.method)
            self.input_kind = InputKind(self.input_kind)
            self.leakage_correction = LeakageCorrection(self.leakage_correction)
        except ValueError as exc:
            raise InputError(f"{exc}; see `bbbanomaly dsc --help` for the choices") from None
        # Every number is checked for finiteness and a physical range here, so the CLI, the worker
        # and Python callers all get one clear line (NaN passes plain comparisons).
        self.kh = number(self.kh, "--kh", 0.0, 2.0, low_open=True,
                         hint="the hematocrit factor is 0.73 clinically, 1 for ml/100 ml")
        self.density = number(self.density, "--density", 0.5, 2.0,
                              hint="brain density is 1.04 g/ml clinically, 1 for ml/100 ml")
        te_hint = "give --te in seconds, e.g. 0.03 for 30 ms"
        self.echo_time = optional_number(self.echo_time, "--te", 0.0, 1.0, low_open=True, high_open=True, hint=te_hint)
        self.second_echo_time = optional_number(self.second_echo_time, "the second --te", 0.0, 1.0, low_open=True,
                                                high_open=True, hint=te_hint)
        if self.echo_time is not None and self.second_echo_time is not None:
            from .conversion import check_echo_times

            check_echo_times(self.echo_time, self.second_echo_time)  # 0/0 in the dual-echo conversion otherwise
        self.osvd_oi_target = number(self.osvd_oi_target, "--oi-target", 0.0, 1.0, low_open=True, high_open=True,
                                     hint="the oSVD oscillation-index target is 0.095 in vivo, 0.035 in simulations")
        self.ssvd_threshold = number(self.ssvd_threshold, "ssvd_threshold", 0.0, 1.0, low_open=True, high_open=True)
        self.csvd_threshold = number(self.csvd_threshold, "csvd_threshold", 0.0, 1.0, low_open=True, high_open=True)
        self.bsw_min_t = number(self.bsw_min_t, "bsw_min_t", 0.0, 100.0, hint="2 is the default, 0 corrects everywhere")
        self.tikhonov_lambdas = integer(self.tikhonov_lambdas, "tikhonov_lambdas", 2, 1000)
        from .deconvolution import parse_lambda_rule

        parse_lambda_rule(self.tikhonov_lambda_rule)  # one clear line for a rule that is not one
        self.tikhonov_lambda_rule = str(self.tikhonov_lambda_rule).strip().lower()
        self.skip_frames = integer(self.skip_frames, "--skip-frames", 0, 100000,
                                   hint="the frames dropped at the start, usually 1")
        self.chunk_voxels = integer(self.chunk_voxels, "chunk_voxels", 1, 10**8)
        self.phae_adapt_steps = integer(self.phae_adapt_steps, "--adapt-steps", 1, 100000)
        pooling = {True: "on", False: "off"}.get(self.phae_guided_pooling, self.phae_guided_pooling)
        if pooling not in ("auto", "on", "off"):
            raise InputError(f"--guided-pooling must be auto, on or off; got {self.phae_guided_pooling!r}")
        self.phae_guided_pooling = pooling
        if str(getattr(self.device, "value", self.device)).lower() not in ("auto", "cpu", "cuda"):
            raise InputError(f"device {self.device!r} is not one of auto, cpu, cuda")
        if self.motion_correct not in ("rigid", "detect", "none"):
            raise InputError(f"--motion-correct must be rigid, detect or none; got {self.motion_correct!r}")
        if self.slice_timing not in ("auto", "none"):
            raise InputError(f"--slice-timing must be auto or none; got {self.slice_timing!r}")
        if self.baseline_frames is not None:
            try:
                first, stop = self.baseline_frames
            except (TypeError, ValueError):
                raise InputError(f"--baseline-frames takes two frame indices FIRST STOP, got {self.baseline_frames!r}"
                                 ) from None
            first = integer(first, "--baseline-frames FIRST", 0, 100000)
            stop = integer(stop, "--baseline-frames STOP", 0, 100000)
            if stop - first < 2:
                raise InputError(f"--baseline-frames {first} {stop} holds {max(stop - first, 0)} frames; give "
                                 "FIRST STOP with at least 2 pre-bolus frames [FIRST, STOP), counted from 0")
            self.baseline_frames = (first, stop)

    @property
    def scale(self) -> float:
        """kH/ρ: the hematocrit and density factor applied to CBV and CBF."""
        return self.kh / self.density

    @property
    def tissue_unit(self) -> str:
        """What CBV and CBF are given per: "100 g" (dividing by the density ρ turns a volume of tissue into its
        mass), or "100 ml" with ρ = 1 (no conversion: per volume of tissue, as digital reference objects give them)."""
        return "100 ml" if self.density == 1 else "100 g"

    def to_json(self) -> dict:
        from ..core.report import parameters_to_json

        return parameters_to_json(self)

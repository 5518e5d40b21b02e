"""Parameters of the DCE leakage pipeline (a typed dataclass, scikit-learn style defaults)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Model(str, enum.Enum):
    """Pharmacokinetic model of the classic reference maps (see :mod:`.models`)."""

    TOFTS = "tofts"  # Ktrans, ve (kep = Ktrans/ve)
    EXTENDED_TOFTS = "extended-tofts"  # + vp·Cp: the usual choice in brain tumors
    PATLAK = "patlak"  # Ktrans, vp; no backflux (ve -> infinity), for low leakage
    TWO_CXM = "2cxm"  # two-compartment exchange: Fp, PS, ve, vp (see .exchange)
    TWO_CUM = "2cum"  # two-compartment uptake: Fp, PS, vp; no backflux


class InputKind(str, enum.Enum):
    SIGNAL = "signal"  # T1-weighted SPGR signal: converted to concentration (or relative enhancement)
    CONCENTRATION = "concentration"  # already Gd concentration in mM; used as is


class RLSSource(str, enum.Enum):
    AUTO = "auto"  # per case where that is reliable, else the bundled weights; the report says which and why (default)
    CASE = "case"  # train the autoencoder on this case's normal-appearing brain (seconds on CPU)
    BUNDLED = "bundled"  # the pretrained weights shipped in BBBAnomalyLib/weights (or --rls-weights FILE)
    NONE = "none"  # classic maps only


#: Map name -> (unit, description); a run writes its maps in this order (the first is the headline map). The
#: pipeline's report, `bbbanomaly dce --help` and :func:`output_maps` read this table (kept here, beside the
#: parameters, so that --help imports no numpy).
MAP_INFO = {
    "rls": ("% SER", "residual leakage signal: positive mean residual of the autoencoder (leakage)"),
    "rls_abs": ("% SER", "mean absolute residual of the autoencoder (its normal-brain level is the network's own "
                         "reconstruction error, not abnormality)"),
    "rls_uncertainty": ("% SER", "standard error of the RLS from the curve's own noise: RLS below ~2x this is noise"),
    "ktrans": ("1/min", "volume transfer constant Ktrans"),
    "ve": ("fraction", "extravascular extracellular volume fraction (Ktrans/kep); 0 where the data do not "
                       "determine it (report: ve_determination)"),
    "vp": ("fraction", "plasma volume fraction"),
    "kep": ("1/min", "rate constant kep = Ktrans/ve; 0 where ve is not determined"),
    "fp": ("ml/100 ml/min", "plasma flow Fp (two-compartment models)"),
    "ps": ("1/min", "permeability-surface area product PS (two-compartment models)"),
    "e": ("fraction", "extraction fraction E = PS/(Fp + PS)"),
    "tc": ("s", "capillary transit time Tc = vp/Fp"),
    "te": ("s", "interstitial mean transit time Te = ve/PS (2CXM); 0 where ve is not determined"),
    "delay": ("s", "bolus delay of the voxel relative to the AIF (best of the delay grid)"),
    "fit_r2": ("1", "coefficient of determination of the model fit (fit quality)"),
}
#: The RLS maps (:func:`.rls.residual_maps`), written unless --rls none (or the per-case RLS was skipped).
RLS_MAPS = ("rls", "rls_abs", "rls_uncertainty")
#: The maps of each pharmacokinetic model, in the order written.
MODEL_MAPS = {"tofts": ("ktrans", "ve", "kep"), "extended-tofts": ("ktrans", "ve", "vp", "kep"),
              "patlak": ("ktrans", "vp"), "2cxm": ("fp", "ps", "ve", "vp", "ktrans", "e", "tc", "te"),
              "2cum": ("fp", "ps", "vp", "ktrans", "e", "tc")}
#: Maps set to 0 (not analysed) where the data do not determine ve (backflux.ve_determined).
VE_DEPENDENT_MAPS = ("ve", "kep", "te")
#: The masks a run writes beside its maps: aif_mask only when AIF voxels were used (--aif-mask, --aif auto).
MASK_OUTPUTS = ("brain_mask", "aif_mask")
#: The other files of a run's output folder.
OTHER_OUTPUTS = ("aif.csv", "report.json")


def output_maps(model, rls: bool = True, delay: bool = True) -> list[str]:
    """The maps a run writes, in order: the RLS maps (``rls``), the model's, delay (``delay``: --max-delay > 0)
    and fit_r2."""
    return [*(RLS_MAPS if rls else ()), *MODEL_MAPS[Model(model).value], *(("delay",) if delay else ()), "fit_r2"]


#: The r1 [1/(s·mM)] a run converts with when none is given (``DCEParameters.relaxivity`` None, ``--relaxivity`` left
#: out, the panel's field at "default"): near gadobutrol's and gadodiamide's at 1.5-3 T. Kept apart from a given
#: r1 (session 24): the header's agent is warned about only where the r1 was not chosen (.stated_relaxivity).
DEFAULT_RELAXIVITY = 4.5

#: Largest --max-delay [s]: bolus delays between an artery and tissue are seconds, and the delay
#: grid (1 s steps) costs one model fit per step.
MAX_DELAY_S = 60.0


@dataclass
class DCEParameters:
    """Everything that shapes a DCE run. Units: s for times and T10, degrees for the flip angle,
    1/(s·mM) for the relaxivity; Ktrans and kep come out per minute, ve and vp as fractions.

    t10: baseline T1 [s] of all voxels when no T10 map is given; None (and no map) means relative
    enhancement, and Ktrans is then semi-quantitative (the report says so).
    blood_t10: baseline T1 [s] of arterial blood, used for the measured AIF's voxels (mask, search
    region, automatic) in place of ``t10`` or the T10 map there; None converts the AIF with the tissue's
    T10 (see :func:`.aif.blood_t10_in_use`). Not used for a population AIF (already in mM).
    population_aif: a population AIF ("parker", "georgiou", "fritz-hansen", "weinmann", "mcgrath")
    shifted to the detected bolus arrival, used when no AIF mask is given; aif_auto: choose arterial
    voxels automatically instead (the chosen voxels are returned as the aif_mask).
    relaxivity: r1 of the agent [1/(s·mM)]; None = :data:`DEFAULT_RELAXIVITY` (4.5), resolved in ``__post_init__``
    (the field then holds the number the run converts with) with ``relaxivity_given`` False; a number given (4.5
    too) is the user's choice, ``relaxivity_given`` True. ``relaxivity_given`` is decided once and kept by
    ``dataclasses.replace``; a report's parameters hold both.
    dose: the contrast dose [mmol/kg] (0.01-0.3); a population AIF is scaled by dose / its model's dose
    (:mod:`.aif_dose`); None = the model's own dose (0.1 mmol/kg). A measured AIF carries the dose itself: not used.
    hematocrit: blood -> plasma (Cp = Cb/(1 - Hct)); 0 when the AIF is already plasma.
    max_delay: per-voxel bolus delay searched from 0 to this many seconds (0 = off).
    refine: a batched nonlinear least-squares refinement (torch, Levenberg-Marquardt) after the
    linear fit.
    rls: where the RLS autoencoder comes from (see :class:`RLSSource`); rls_weights: a bundled name
    or a .pt file for ``rls='bundled'``. rls_frames: the time grid length the curves are resampled
    to before the network (the network's input is rls_frames + 4 reference entries).
    """

    model: Model = Model.EXTENDED_TOFTS
    input_kind: InputKind = InputKind.SIGNAL
    t10: float | None = None  # [s]
    blood_t10: float | None = None  # [s]; arterial blood's, for the measured AIF only
    flip_angle: float | None = None  # [deg]; from the file's metadata when not given
    tr: float | None = None  # [s]; from the file's metadata when not given
    relaxivity: float | None = None  # r1 [1/(s·mM)]; None = DEFAULT_RELAXIVITY, resolved in __post_init__
    relaxivity_given: bool | None = None  # decided from relaxivity when None (given unless None); then kept
    hematocrit: float = 0.42
    population_aif: str | None = None  # a name of BBBAnomalyLib.perfusion.population_aif.POPULATION_AIFS
    dose: float | None = None  # [mmol/kg]; scales a population AIF (.aif_dose); None = the model's own dose
    aif_auto: bool = False  # automatic arterial-voxel selection when no AIF mask is given (.aif.auto_aif)
    # True: the AIF mask is a search region (a ROI box around an artery); only its arterial voxels
    # (by peak height) are averaged and signal-free (air) voxels are ignored. False: all are averaged.
    aif_region: bool = False
    baseline_frames: int | None = None  # pre-contrast frames; None = detected from the bolus arrival
    max_delay: float = 6.0  # [s]
    refine: bool = False
    refine_iterations: int = 15
    rls: RLSSource = RLSSource.AUTO
    rls_weights: str = "dce-rls-world"
    rls_frames: int = 60
    rls_epochs: int = 8
    rls_max_training_voxels: int = 60000
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None = torch's default
    chunk_voxels: int = 65536
    # head motion (perfusion/motion.py): "rigid" registers every frame to the first, reports the displacement (a
    # warning over half a voxel) and resamples the frames that moved; "detect" reports and warns only; "none" does
    # not look
    motion_correct: str = "none"
    # slice timing of a 2D multi-slice series (perfusion/slice_timing.py): "auto" fits each slice with the AIF moved
    # to its acquisition time where the file gives the slice times; "none" (default, as DSC's) ignores them, with a
    # warning where they differ
    slice_timing: str = "none"
    extra: dict = field(default_factory=dict)
    # session 22 (.aif_t2star): the echo time [s] for the measured AIF's blood T2* (None: the series' metadata), and
    # whether the AIF's T2*-aware conversion replaces its T1-only one (off: the run says what it would change)
    te: float | None = None
    aif_t2star_correct: bool = False

    def __post_init__(self):
        from ..core.checks import integer, number, optional_number
        from ..core.errors import InputError

        try:
            self.model = Model(self.model)
            self.input_kind = InputKind(self.input_kind)
            self.rls = RLSSource(self.rls)
        except ValueError as exc:
            raise InputError(f"{exc}; see `bbbanomaly dce --help` for the choices") from None
        from ..perfusion.population_aif import POPULATION_AIFS

        if self.population_aif is not None and self.population_aif not in POPULATION_AIFS:
            raise InputError(f"population AIF {self.population_aif!r} is not known; use one of "
                             f"{', '.join(POPULATION_AIFS)}")
        # Numbers are checked for finiteness and a physical range here, so the CLI, the worker and
        # Python callers all get one clear line (NaN passes plain comparisons; inf and 1e6 in
        # --max-delay asked for an endless delay grid).
        self.t10 = optional_number(self.t10, "--t10", 0.05, 10.0,
                                   hint="T10 in seconds, e.g. 1.4 (a value above 10 is probably in ms)")
        self.blood_t10 = optional_number(self.blood_t10, "--blood-t10", 0.05, 10.0,
                                         hint="arterial blood's T10 in seconds, e.g. 1.65 at 3 T (a value above 10 "
                                              "is probably in ms)")
        self.flip_angle = optional_number(self.flip_angle, "--flip-angle", 0.0, 90.0, low_open=True, high_open=True,
                                          hint="the flip angle in degrees, e.g. 15")
        self.tr = optional_number(self.tr, "--tr", 0.0, 1.0, low_open=True, high_open=True,
                                  hint="TR in seconds, e.g. 0.005 for 5 ms")
        # the default r1 resolved here, once: the field holds the number converted with, relaxivity_given whether it
        # was chosen (an explicit 4.5 is not the default: the header's agent is then compared, not warned about)
        if self.relaxivity_given is None:
            self.relaxivity_given = self.relaxivity is not None
        self.relaxivity = number(DEFAULT_RELAXIVITY if self.relaxivity is None else self.relaxivity, "--relaxivity",
                                 0.0, 100.0, low_open=True, hint="r1 in 1/(s·mM), e.g. 4.5")
        if not isinstance(self.relaxivity_given, bool):
            raise InputError(f"relaxivity_given must be true or false, got {self.relaxivity_given!r}")
        if not self.relaxivity_given and self.relaxivity != DEFAULT_RELAXIVITY:
            self.relaxivity_given = True  # (another number is a choice, whatever the flag said)
        from .aif_dose import check_dose

        self.dose = check_dose(self.dose)
        self.hematocrit = number(self.hematocrit, "--hematocrit", 0.0, 1.0, high_open=True,
                                 hint="0.42 typical; 0 when the AIF is already plasma")
        self.max_delay = number(self.max_delay, "--max-delay", 0.0, MAX_DELAY_S,
                                hint=f"the largest bolus delay searched, in seconds (default 6; 0 = off; at most "
                                     f"{MAX_DELAY_S:g}: longer delays are not physiological and grow the delay grid)")
        if self.baseline_frames is not None:
            self.baseline_frames = integer(self.baseline_frames, "--baseline-frames", 1, 100000,
                                           hint="the number of pre-contrast frames")
        if str(getattr(self.device, "value", self.device)).lower() not in ("auto", "cpu", "cuda"):
            raise InputError(f"device {self.device!r} is not one of auto, cpu, cuda")
        if self.motion_correct not in ("rigid", "detect", "none"):
            raise InputError(f"--motion-correct must be rigid, detect or none; got {self.motion_correct!r}")
        if self.slice_timing not in ("auto", "none"):
            raise InputError(f"--slice-timing must be auto or none; got {self.slice_timing!r}")
        if self.threads is not None:
            self.threads = integer(self.threads, "--threads", 1, 1024, hint="torch CPU threads, e.g. 1 or 2")
        self.refine_iterations = integer(self.refine_iterations, "refine_iterations", 1, 1000)
        self.rls_frames = integer(self.rls_frames, "rls_frames", 8, 1000)
        self.rls_epochs = integer(self.rls_epochs, "--rls-epochs", 1, 10000)
        self.rls_max_training_voxels = integer(self.rls_max_training_voxels, "rls_max_training_voxels", 100, 10**8)
        self.chunk_voxels = integer(self.chunk_voxels, "chunk_voxels", 1, 10**8)
        self.seed = integer(self.seed, "--seed", 0, 2**32 - 1)
        from .aif_t2star import check_te  # (session 22: --te in seconds, one line otherwise)

        self.te = check_te(self.te)

    def to_json(self) -> dict:
        from ..core.report import parameters_to_json

        return parameters_to_json(self)

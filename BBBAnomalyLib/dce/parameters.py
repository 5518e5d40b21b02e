"""Parameters of the DCE leakage pipeline (a typed dataclass, scikit-learn style defaults)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Model(str, enum.Enum):
    """Pharmacokinetic model of the classic reference maps (see :mod:`.models`)."""

    TOFTS = "tofts"  # Ktrans, ve (kep = Ktrans/ve)
    EXTENDED_TOFTS = "extended-tofts"  # + vp·Cp: the usual choice in brain tumors
    PATLAK = "patlak"  # Ktrans, vp; no backflux (ve -> infinity), for low leakage


class InputKind(str, enum.Enum):
    SIGNAL = "signal"  # T1-weighted SPGR signal: converted to concentration (or relative enhancement)
    CONCENTRATION = "concentration"  # already Gd concentration in mM; used as is


class RLSSource(str, enum.Enum):
    CASE = "case"  # train the autoencoder on this case's normal-appearing brain (default; seconds on CPU)
    BUNDLED = "bundled"  # the pretrained weights shipped in BBBAnomalyLib/weights (or --rls-weights FILE)
    NONE = "none"  # classic maps only


@dataclass
class DCEParameters:
    """Everything that shapes a DCE run. Units: s for times and T10, degrees for the flip angle,
    1/(s·mM) for the relaxivity; Ktrans and kep come out per minute, ve and vp as fractions.

    t10: baseline T1 [s] of all voxels when no T10 map is given; None (and no map) means relative
    enhancement, and Ktrans is then semi-quantitative (the report says so).
    population_aif: "parker" uses the Parker 2006 population AIF shifted to the detected bolus
    arrival; otherwise an AIF mask must be given to run_dce.
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
    flip_angle: float | None = None  # [deg]; from the file's metadata when not given
    tr: float | None = None  # [s]; from the file's metadata when not given
    relaxivity: float = 4.5  # r1 [1/(s·mM)]
    hematocrit: float = 0.42
    population_aif: str | None = None  # "parker"
    # True: the AIF mask is a search region (a ROI box around an artery); only its arterial voxels
    # (by peak height) are averaged and signal-free (air) voxels are ignored. False: all are averaged.
    aif_region: bool = False
    baseline_frames: int | None = None  # pre-contrast frames; None = detected from the bolus arrival
    max_delay: float = 6.0  # [s]
    refine: bool = False
    refine_iterations: int = 15
    rls: RLSSource = RLSSource.CASE
    rls_weights: str = "dce-rls-phantom"
    rls_frames: int = 60
    rls_epochs: int = 8
    rls_max_training_voxels: int = 60000
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None = torch's default
    chunk_voxels: int = 65536
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        from ..errors import InputError

        try:
            self.model = Model(self.model)
            self.input_kind = InputKind(self.input_kind)
            self.rls = RLSSource(self.rls)
        except ValueError as exc:
            raise InputError(f"{exc}; see `bbbanomaly dce --help` for the choices") from None
        if self.population_aif is not None and self.population_aif not in ("parker",):
            raise InputError(f"population AIF {self.population_aif!r} is not known; use 'parker'")
        if self.t10 is not None and not 0.05 <= self.t10 <= 10:
            raise InputError(f"T10 = {self.t10} does not look like seconds; give --t10 in seconds (e.g. 1.4)")
        if self.flip_angle is not None and not 0 < self.flip_angle < 90:
            raise InputError(f"flip angle {self.flip_angle} is not in (0, 90) degrees; give --flip-angle in degrees")
        if self.tr is not None and not 0 < self.tr < 1:
            raise InputError(f"TR = {self.tr} does not look like seconds; give --tr in seconds (e.g. 0.005 for 5 ms)")
        if not self.relaxivity > 0:
            raise InputError("--relaxivity must be positive, in 1/(s·mM) (e.g. 4.5)")
        if not 0 <= self.hematocrit < 1:
            raise InputError("--hematocrit must lie in [0, 1) (0.42 typical; 0 when the AIF is already plasma)")
        if self.max_delay < 0:
            raise InputError("--max-delay must be >= 0 seconds")
        if self.baseline_frames is not None and self.baseline_frames < 1:
            raise InputError("--baseline-frames must be at least 1")
        if str(getattr(self.device, "value", self.device)).lower() not in ("auto", "cpu", "cuda"):
            raise InputError(f"device {self.device!r} is not one of auto, cpu, cuda")
        if self.rls_frames < 8 or self.rls_epochs < 1:
            raise InputError("rls_frames must be >= 8 and rls_epochs >= 1")

    def to_json(self) -> dict:
        from ..report import parameters_to_json

        return parameters_to_json(self)

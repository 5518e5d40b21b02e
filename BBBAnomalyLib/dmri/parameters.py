"""Parameters of the diffusion anomaly pipeline (a typed dataclass with validated enums)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .gradients import DEFAULT_MIN_DIRECTIONS


class Model(str, enum.Enum):
    VAE = "vae"  # 3D variational autoencoder ("DAE"); anomaly = reconstruction residual (vae_score)
    RECDISC = "recdisc"  # reconstruction network + discriminative U-Net (DRAEM-style); anomaly = probability


class Threshold(str, enum.Enum):
    """Label-free thresholds for the anomaly mask (ground-truth ones live in the evaluation tools only)."""

    FIXED = "fixed"  # a number: the model card's healthy-data threshold, or threshold_value
    OTSU = "otsu"  # Otsu on the anomaly scores of the analysed voxels
    MEANPOOL = "meanpool"  # max of the mean-pooled map (window of 16 voxels of the seed's 2.4 mm grid)


class MotionCorrect(str, enum.Enum):
    """Head motion between the volumes (:mod:`.motion`)."""

    RIGID = "rigid"  # each volume registered rigidly into the first b0's frame, b-vectors rotated
    NONE = "none"  # every volume read at the same voxel, as stored


class GradientFrame(str, enum.Enum):
    RAS = "ras"  # gradient directions in world RAS (Slicer DWI nodes, read_dwi)
    FSL = "fsl"  # FSL bvec convention: image axes, x flipped when det(affine) > 0 (NIfTI + .bvec)


#: Bundled weights used when ``weights`` is None.
DEFAULT_WEIGHTS = {Model.VAE: "dmri-vae-phantom", Model.RECDISC: "dmri-recdisc-phantom"}


@dataclass
class DMRIParameters:
    """Everything that shapes a diffusion-anomaly run.

    The models were trained on one shell near b = 1000 s/mm² resampled (spherical harmonics) to
    their canonical gradient set; a 6-14 direction shell goes through a diffusion tensor instead. See
    :mod:`.gradients` for what acquisitions are accepted.
    """

    model: Model = Model.RECDISC  # the better of the two on the phantom patients (docs/validation.md)
    threshold: Threshold = Threshold.FIXED
    threshold_value: float | None = None  # fixed threshold; None = the model card's healthy-data value
    weights: str | None = None  # bundled name or a .pt path from `bbbanomaly train dmri-*`; None = default
    device: str = "auto"  # auto, cpu or cuda
    vae_score: str = "abs-mean"  # VAE residual: "abs-mean" over directions (the seed's code) or "rms"
    gradient_frame: GradientFrame = GradientFrame.RAS
    b0_threshold: float = 150.0  # volumes with b below this are b0 (s/mm²)
    # fewest unique directions on the shell: 15+ are resampled with spherical harmonics, 6-14 (clinical DTI)
    # through a diffusion tensor with a warning (held-apart phantom patients, docs/reliability.md session 20)
    min_directions: int = DEFAULT_MIN_DIRECTIONS
    shell_tolerance: float = 0.3  # accept a shell within ±30 % of the model's b-value (rescaled mono-exponentially)
    meanpool_mm: float = 38.4  # mean-pool window of the 'meanpool' threshold (16 × 2.4 mm, as in the seed)
    opening: bool = True  # 3×3×3 morphological opening of the anomaly mask
    erode_mask: bool = True  # erode the brain mask by one voxel (3³), as the seed does, to drop the rim
    chunk_voxels: int = 65536  # voxels per batch of the per-voxel steps (SH fit, resampling)
    # head motion between volumes: registered and undone (b-vectors rotated) or left as stored. "none" by a rule
    # written before the held-apart patients (docs/reliability.md, session 21): on motion-free series the estimate
    # found 0.3-0.4 mm (the rule asked < 0.2) and the registration costs ~35x the rest of the run's CPU; without it
    # RecDiscNet's map moved little under random motion (AUC within 0.01 up to 4 mm RMS) but a 4 mm/4° step half-way
    # through added 12-16 % anomaly volume. No motion estimate with "none" (the registration is the detector)
    motion_correct: MotionCorrect = MotionCorrect.NONE
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        from ..core.errors import InputError

        try:
            self.model = Model(getattr(self.model, "value", self.model))
            self.threshold = Threshold(getattr(self.threshold, "value", self.threshold))
            self.gradient_frame = GradientFrame(getattr(self.gradient_frame, "value", self.gradient_frame))
            self.motion_correct = MotionCorrect(getattr(self.motion_correct, "value", self.motion_correct))
        except ValueError as exc:
            raise InputError(f"{exc}; see `bbbanomaly dmri --help` for the choices") from None
        if str(getattr(self.device, "value", self.device)).lower() not in ("auto", "cpu", "cuda"):
            raise InputError(f"device {self.device!r} is not one of auto, cpu, cuda")
        # Finite numbers first (NaN passes comparisons; a job may send text): one line (issue 12).
        from ..core.checks import number, optional_number

        self.threshold_value = optional_number(self.threshold_value, "--threshold-value", 0.0, 1e6, low_open=True)
        self.meanpool_mm = number(self.meanpool_mm, "meanpool_mm", 0.0, 1000.0, low_open=True)
        self.b0_threshold = number(self.b0_threshold, "b0_threshold", 0.0, 1000.0)
        if self.vae_score not in ("abs-mean", "rms"):
            raise InputError(f"vae_score {self.vae_score!r} is not one of abs-mean, rms")
        if self.threshold_value is not None and not self.threshold_value > 0:
            raise InputError("--threshold-value must be positive (anomaly scores are >= 0)")
        if self.threshold_value is not None and self.threshold is not Threshold.FIXED:
            raise InputError("--threshold-value belongs to --threshold fixed")
        if self.min_directions < 6:
            raise InputError("min_directions must be at least 6 (a tensor has 6 unknowns)")
        if not 0 < self.shell_tolerance < 1:
            raise InputError("shell_tolerance must lie in (0, 1), e.g. 0.3 for ±30 %")
        if self.meanpool_mm <= 0 or self.chunk_voxels < 1 or self.b0_threshold < 0:
            raise InputError("meanpool_mm and chunk_voxels must be positive, b0_threshold non-negative")

    @property
    def weights_name(self) -> str:
        return self.weights or DEFAULT_WEIGHTS[self.model]

    def to_json(self) -> dict:
        from ..core.report import parameters_to_json

        return parameters_to_json(self)

"""Parameters of the T1/FLAIR pipeline (typed dataclass; defaults are the bundled demo models)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..core.errors import InputError

DEFAULT_SYNTHESIS = "t1flair-diffusion-demo"
DEFAULT_IDENTIFIER = "t1flair-identifier-demo"
DEFAULT_CAE = "t1flair-cae-population"  # normal anatomy of three template brains, no real case
DEFAULT_ENHANCER = "t1flair-enhancer-real"  # voxel-feature enhancement predictor, three real cases (model card)
STATUS_EVIDENCE = ("real", "phantom")  # how far p(disrupted) is trusted (real_evidence.py)
BIAS_CORRECTION = ("n4", "none", "n4-lesion-out")  # intensity bias-field correction of the T1 and FLAIR (bias_field.py)
REGISTRATION = ("rigid", "none")  # the FLAIR registered to the T1 after the world resampling (alignment.py)


@dataclass
class T1FlairParameters:
    """steps: DDIM sampler steps (the seed used 100; 4 keeps a whole brain under a minute on a CPU).
    size: the network's in-plane size; None = the size the synthesis weights were trained at.
    Weights: a bundled name or a .pt file with its .json model card beside it."""

    steps: int = 4
    device: str = "auto"  # auto, cpu or cuda
    synthesis_weights: str = DEFAULT_SYNTHESIS
    identifier_weights: str = DEFAULT_IDENTIFIER
    cae_weights: str = DEFAULT_CAE
    enhancer_weights: str | None = DEFAULT_ENHANCER  # None/"": the synthetic T1Gd from the diffusion syntheses
    size: int | None = None
    seed: int = 0  # the sampler's starting noise: same seed, same synthesis
    slice_threshold: float = 0.5  # λc: a tumor slice counts for a label when its score reaches this
    segmentation_threshold: float = 0.5  # tumor = segmentation-head probability >= this
    min_tumor_ml: float = 1.0  # a segmented tumor smaller than this gives an indeterminate BBB status
    indeterminate_band: tuple = (0.35, 0.65)  # p(disrupted) inside it = indeterminate (chosen on phantoms 6000-6019)
    # "real": p(disrupted) is weighed by the identifier's leave-one-case-out record on real scans (real_evidence.py;
    # the bundled identifiers are at chance there, so a real scan gets p = 0.5, indeterminate); "phantom": the
    # phantom calibration as it is, for research on the project's simulated phantoms only
    status_evidence: str = "real"
    samples: int = 2  # sampler noises per ET label: their spread is part of the enhancement's uncertainty
    shrinkage: float | None = None  # k of max(0, 1 - k V / E^2); None = 1 with the enhancer (enhancer.py), else
    # band[1] / (1 - band[1]) for the diffusion syntheses' estimate (enhancement.py)
    anomaly_map: bool = True  # run the 3D autoencoder
    detail_from_t1: bool = True  # per-label syntheses: their change added to the native-resolution T1 (pipeline.py)
    chunk_slices: int = 16  # slices per network batch (x2: both ET labels); bounds memory
    threads: int | None = None  # torch CPU threads during the run (None = torch's default); 1 is fastest on a busy CPU
    # "n4": N4 bias-field correction of the T1 and of the FLAIR inside the brain before normalisation (bias_field.py);
    # "none" (default): the images as given. Not the default because on the real cases N4 also flattened the
    # tumour's FLAIR signal (anomaly tumour AUC 0.86 -> 0.45 on TCGA-FG-6692; scripts/t1flair_bias_field.py);
    # "n4-lesion-out": N4 fitted with the FLAIR-hyperintense lesion left out (bias_field.lesion_estimate)
    bias_correct: str = "none"
    # "rigid": the FLAIR registered to the T1 (mutual information inside the brain, alignment.py): a T1 and a FLAIR
    # of one session are not registered (the patient moves between series); "none" (default): placed by the files'
    # coordinates alone, with a warning when a quick estimate finds them misaligned by more than 2 mm. Not the
    # default by the rule written before measuring: on the unmoved real cases it raised the anomaly tumour AUC by
    # 0.016 and 0.021 (allowed: 0.01) and found 2.1 mm on BraTS-GLI-00001-000 (scripts/t1flair_misregistration.py)
    register: str = "none"

    def __post_init__(self):
        from ..core.checks import integer, number, optional_number

        # Whole numbers and finite floats first (a worker job may send NaN or a string; int(nan) is a
        # ValueError, nan passes comparisons): one InputError line instead (issue 12).
        self.steps = integer(self.steps, "--steps", 1, 1000, hint="4 is the CPU default; the seed used 100")
        self.size = None if self.size is None else integer(self.size, "--size", 16, 4096, hint="e.g. 64, 96, 128")
        self.threads = None if self.threads is None else integer(self.threads, "--threads", 1, 1024)
        self.chunk_slices = integer(self.chunk_slices, "chunk_slices", 1, 100000)
        self.samples = integer(self.samples, "samples", 1, 16, hint="2 is the default")
        self.min_tumor_ml = number(self.min_tumor_ml, "min_tumor_ml", 0.0, 1e6)
        self.shrinkage = optional_number(self.shrinkage, "shrinkage", 0.0, 1e6)
        for name in ("slice_threshold", "segmentation_threshold"):
            setattr(self, name, number(getattr(self, name), name, 0.0, 1.0, low_open=True, high_open=True))
        self.enhancer_weights = str(self.enhancer_weights) if self.enhancer_weights else None
        if self.enhancer_weights is not None and not self.enhancer_weights.strip():
            raise InputError("enhancer_weights must be a bundled name or a .pt path (or empty for none)")
        if str(getattr(self.device, "value", self.device)).lower() not in ("auto", "cpu", "cuda"):
            raise InputError(f"device {self.device!r} is not one of auto, cpu, cuda")
        if self.size is not None and (int(self.size) < 16 or int(self.size) % 8):
            raise InputError("--size must be a multiple of 8 and at least 16 (e.g. 64, 96, 128)")
        for name in ("slice_threshold", "segmentation_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise InputError(f"{name} must lie in (0, 1)")
        if self.threads is not None and int(self.threads) < 1:
            raise InputError("--threads must be >= 1")
        if self.chunk_slices < 1 or self.min_tumor_ml < 0:
            raise InputError("chunk_slices must be >= 1 and min_tumor_ml >= 0")
        if str(self.status_evidence) not in STATUS_EVIDENCE:
            raise InputError(f"status_evidence {self.status_evidence!r} is not one of {', '.join(STATUS_EVIDENCE)} "
                             "('real' for patient scans; 'phantom' only for the project's simulated phantoms)")
        self.status_evidence = str(self.status_evidence)
        if str(self.bias_correct) not in BIAS_CORRECTION:
            raise InputError(f"bias_correct {self.bias_correct!r} is not one of {', '.join(BIAS_CORRECTION)} "
                             "('n4' corrects the T1 and FLAIR's intensity bias field; 'none' for images already "
                             "bias-corrected)")
        self.bias_correct = str(self.bias_correct)
        if str(self.register) not in REGISTRATION:
            raise InputError(f"register {self.register!r} is not one of {', '.join(REGISTRATION)} ('rigid' registers "
                             "the FLAIR to the T1; 'none' for a pair already registered)")
        self.register = str(self.register)
        low, high = (float(v) for v in self.indeterminate_band)
        if not 0.0 <= low < 0.5 < high <= 1.0:
            raise InputError("indeterminate_band must be (low, high) with 0 <= low < 0.5 < high <= 1, e.g. (0.35, 0.65)")
        self.indeterminate_band = (low, high)
        if not 1 <= int(self.samples) <= 16:
            raise InputError("samples must be between 1 and 16 (2 is the default)")
        self.samples = int(self.samples)
        if self.shrinkage is not None and self.shrinkage < 0:
            raise InputError("shrinkage must be >= 0 (0 = no shrinkage; default: from the indeterminate band)")

    @property
    def effective_shrinkage(self) -> float:
        """k such that an enhancement predicted by the ET+ synthesis alone is not added unless p(disrupted)
        reaches the band's upper edge: with mu_0 = 0 the shrinkage factor is 1 - k (1 - p) / p."""
        high = self.indeterminate_band[1]
        return float(self.shrinkage) if self.shrinkage is not None else high / (1.0 - high) if high < 1 else 1.0

    def to_json(self) -> dict:
        out = asdict(self)
        out["indeterminate_band"] = list(self.indeterminate_band)
        return out

"""DCE leakage: signal -> concentration -> AIF -> Tofts/extended Tofts/Patlak, and the model-free
residual leakage signal (RLS) of an autoencoder of normal enhancement curves.

Entry point: :func:`run_dce` with :class:`DCEParameters`. Building blocks (usable alone):
:class:`PKModel` (batched linear least squares + optional refinement), the conversion functions,
and :mod:`.rls` (the autoencoder, its preprocessing and training).
"""

from .conversion import concentration_from_ser, detect_baseline_frames, enhancement_ratio, ser_from_concentration
from .models import PKFit, PKModel, exp_convolution, model_curves
from .parameters import DCEParameters, InputKind, Model, RLSSource
from .pipeline import MAP_INFO, DCEResult, run_dce

__all__ = [
    "run_dce", "DCEParameters", "DCEResult", "Model", "InputKind", "RLSSource", "MAP_INFO",
    "PKModel", "PKFit", "exp_convolution", "model_curves",
    "concentration_from_ser", "ser_from_concentration", "enhancement_ratio", "detect_baseline_frames",
]

"""DCE leakage: signal -> concentration -> AIF -> Tofts/extended Tofts/Patlak, and the model-free
residual leakage signal (RLS) of an autoencoder of normal enhancement curves.

Entry point: :func:`run_dce` with :class:`DCEParameters`. Building blocks (usable alone):
:class:`PKModel` (batched linear least squares + optional refinement), the conversion functions,
and :mod:`.rls` (the autoencoder, its preprocessing and training).
"""

from ..core._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    'conversion': ['concentration_from_ser', 'detect_baseline_frames', 'enhancement_ratio', 'ser_from_concentration'],
    'models': ['PKFit', 'PKModel', 'exp_convolution', 'model_curves'],
    'parameters': ['DCEParameters', 'InputKind', 'Model', 'RLSSource'],
    'pipeline': ['MAP_INFO', 'DCEResult', 'run_dce'],
})

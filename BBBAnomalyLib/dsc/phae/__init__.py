"""DSC physics-informed autoencoder (PHAE; Fayolle et al., ISBI 2025), self-supervised.

encoder (1D CNN on the (C, Ca) pair) -> MTT and delay; flow from areas; decoder = Lorentzian residue
× flow convolved with the AIF on the data's sampled window; loss = MAE of the reconstruction.

Modules: ``physics`` (decoder), ``network`` (encoder + PHAE), ``inference`` (PHAEModel: fit and
per-case adaptation), ``simulate`` (training curves), ``training`` (loop, DDP, data from folders),
``command`` (`bbbanomaly train phae`). torch is imported only when PHAE is used.
"""

from ...core._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    'inference': ['DEFAULT_WEIGHTS', 'PHAEFit', 'PHAEModel', 'load_network'],
})

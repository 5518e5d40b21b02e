"""DSC physics-informed autoencoder (PHAE; Fayolle et al., ISBI 2025), self-supervised.

encoder -> MTT and delay (and the SD of log CBF); flow from areas; decoder = Lorentzian residue × flow
convolved with the AIF on the data's sampled window; loss = MAE of the reconstruction (plus supervised terms
on simulated truth for the bundled dsc-phae-world, dsc-phae-grid and the default dsc-phae-wide; distillation toward
dsc-phae-world for dsc-phae-fast). Two encoders: the seed-like strided 1D CNN on the (C, Ca) pair (``dsc-phae-sim``,
``dsc-phae-world``) and the grid encoder, an MLP on the curve resampled onto a fixed time grid around the AIF
peak with its linear steps folded per case (``dsc-phae-grid``, ``dsc-phae-fast``; ~1/50 of the CNN's cost), in
``dsc-phae-wide`` also reading the curve deconvolved by the case's AIF at three Tikhonov thresholds.

Modules: ``physics`` (decoder), ``network`` (encoder + PHAE), ``inference`` (PHAEModel: fit and
per-case adaptation), ``transit_gate`` (do the case's curves reject the weights' transit prior?), ``simulate``
(training curves), ``training`` (loop, DDP, data from folders), ``command`` (`bbbanomaly train phae`). torch is imported only when PHAE is used.
"""

from ...core._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    'inference': ['DEFAULT_WEIGHTS', 'PHAEFit', 'PHAEModel', 'load_network'],
    'transit_gate': ['TransitGate', 'transit_gate'],
})

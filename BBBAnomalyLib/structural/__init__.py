"""T1/FLAIR: synthetic T1Gd and BBB status without contrast agent, and a 3D autoencoder anomaly map.

Entry point: :func:`run_t1flair` with :class:`T1FlairParameters` (seeds cbsi-contrast-free-bbb-status
and cae-brain-anomaly). Building blocks: :mod:`.normalisation` (histogram-mode normalisation),
:mod:`.preprocessing` (grids, brain mask, slices), :mod:`.diffusion` (ET-guided conditional
diffusion), :mod:`.identification` (contrastive maximum), :mod:`.cae` (3D autoencoder),
:mod:`.training` (the three `bbbanomaly train` commands). torch is imported when a run starts.
"""

from ..core._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    'parameters': ['T1FlairParameters'],
    'pipeline': ['run_t1flair', 'T1FlairResult', 'MAP_INFO'],
})

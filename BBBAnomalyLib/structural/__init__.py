"""T1/FLAIR: synthetic T1Gd and BBB status without contrast agent, and a 3D autoencoder anomaly map.

Entry point: :func:`run_t1flair` with :class:`T1FlairParameters` (seeds cbsi-contrast-free-bbb-status
and cae-brain-anomaly). Building blocks: :mod:`.normalisation` (histogram-mode normalisation),
:mod:`.preprocessing` (grids, brain mask, slices), :mod:`.diffusion` (ET-guided conditional
diffusion), :mod:`.identification` (contrastive maximum), :mod:`.cae` (3D autoencoder),
:mod:`.training` (the three `bbbanomaly train` commands). torch is imported when a run starts.
"""

from .parameters import T1FlairParameters

__all__ = ["T1FlairParameters", "run_t1flair", "T1FlairResult", "MAP_INFO"]


def __getattr__(name):  # the pipeline imports torch: load it on first use
    if name in ("run_t1flair", "T1FlairResult", "MAP_INFO"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Diffusion-MRI anomaly detection (seed dmri-anomaly-detection-glioma): models trained only on
healthy brains flag tumor and infiltration in a patient's raw diffusion-weighted signal.

* :func:`run_dmri` -> :class:`DMRIResult` (maps ``anomaly``, ``anomaly_mask``, ``mean_attenuation``)
* :class:`DMRIParameters` (model vae|recdisc, threshold fixed|otsu|meanpool, device, weights)
* :func:`read_dwi`: a DWI with FSL bval/bvec as a Volume with RAS gradients
* :mod:`.gradients` says which acquisitions are supported; :mod:`.training` trains the models.
"""

from ..core._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    'dwi_io': ['read_dwi'],
    'parameters': ['DMRIParameters', 'GradientFrame', 'Model', 'Threshold'],
    'pipeline': ['MAP_INFO', 'DMRIResult', 'run_dmri'],
})

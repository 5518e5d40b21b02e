"""DSC perfusion: signal -> ΔR2* -> AIF -> (leakage correction) -> deconvolution -> CBV/CBF/MTT/Tmax.

Entry point: :func:`run_dsc` with :class:`DSCParameters`. Building blocks (usable alone):
:class:`DeconvolutionModel` (sSVD/cSVD/oSVD/Tikhonov), :func:`fit_bsw`, :func:`auto_aif`;
the learned method PHAE is ``BBBAnomalyLib.dsc.phae.PHAEModel`` (imported on use: it needs torch).
"""

from ..core._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    'aif': ['AIFSelection', 'aif_from_mask', 'auto_aif'],
    'deconvolution': ['DeconvolutionFit', 'DeconvolutionModel', 'oscillation_index'],
    'leakage': ['BSWFit', 'fit_bsw'],
    'parameters': ['DeconvolutionMethod', 'DSCParameters', 'InputKind', 'LeakageCorrection'],
    'pipeline': ['MAP_INFO', 'DSCResult', 'run_dsc'],
    'phae': ['PHAEModel', 'PHAEFit'],
})

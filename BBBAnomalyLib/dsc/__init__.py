"""DSC perfusion: signal -> ΔR2* -> AIF -> (leakage correction) -> deconvolution -> CBV/CBF/MTT/Tmax.

Entry point: :func:`run_dsc` with :class:`DSCParameters`. Building blocks (usable alone):
:class:`DeconvolutionModel` (sSVD/cSVD/oSVD/Tikhonov), :func:`fit_bsw`, :func:`auto_aif`;
the learned method PHAE is ``BBBAnomalyLib.dsc.phae.PHAEModel`` (imported on use: it needs torch).
"""

from .aif import AIFSelection, aif_from_mask, auto_aif
from .deconvolution import DeconvolutionFit, DeconvolutionModel, oscillation_index
from .leakage import BSWFit, fit_bsw
from .parameters import DeconvolutionMethod, DSCParameters, InputKind, LeakageCorrection
from .pipeline import MAP_INFO, DSCResult, run_dsc

__all__ = [
    "run_dsc", "DSCParameters", "DSCResult", "DeconvolutionMethod", "InputKind", "LeakageCorrection",
    "DeconvolutionModel", "DeconvolutionFit", "oscillation_index", "fit_bsw", "BSWFit",
    "aif_from_mask", "auto_aif", "AIFSelection", "MAP_INFO",
]


def __getattr__(name):  # PHAEModel / PHAEFit on first use, so importing dsc does not import torch
    if name in ("PHAEModel", "PHAEFit"):
        from . import phae

        return getattr(phae, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Digital reference objects with known ground truth (for the demo, the tests and validation sweeps).

* :mod:`.dsc_physics` — curve-level DSC forward model (AIF, residues, tissue curves, BSW leakage,
  signal and Rician noise), independent of any deconvolution code.
* :mod:`.dsc` — :func:`make_dsc_phantom`: a glioma DSC series in the MNI152 brain with truth maps.
* :mod:`.anatomy` — the shipped 2 mm MNI152 tissue fractions (see ``data/NOTICE.txt``).
"""

from .anatomy import Anatomy, load_anatomy
from .dsc import DSCPhantom, DSCPhantomParameters, default_tissues, make_dsc_phantom

__all__ = ["Anatomy", "load_anatomy", "DSCPhantom", "DSCPhantomParameters", "default_tissues", "make_dsc_phantom"]

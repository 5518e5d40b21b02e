"""Digital reference objects with known ground truth (for the demo, the tests and validation sweeps).

* :mod:`.dsc_physics` — curve-level DSC forward model (AIF, residues, tissue curves, BSW leakage,
  signal and Rician noise), independent of any deconvolution code.
* :mod:`.dsc` — :func:`make_dsc_phantom`: a glioma DSC series in the MNI152 brain with truth maps.
* :mod:`.dce_physics` — curve-level DCE forward model (plasma AIF, extended Tofts on a fine grid, SPGR).
* :mod:`.dce` — :func:`make_dce_phantom`: a leaky glioma DCE series in the MNI152 brain with truth maps.
* :mod:`.dmri_physics` — voxel-level diffusion forward model (tensors, orientation field, Rician noise).
* :mod:`.dmri` — :func:`make_dmri_phantom`: healthy diffusion subjects and glioma patients on MNI152 anatomy.
* :mod:`.structural` — :func:`make_structural_phantom`: T1, FLAIR, T1Gd and BraTS labels of enhancing
  and non-enhancing gliomas (or normal anatomy) on MNI152 anatomy, with the ET label.
* :mod:`.anatomy` — the shipped 2 mm MNI152 tissue fractions (see ``data/NOTICE.txt``).
"""

from ..core._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    'anatomy': ['Anatomy', 'load_anatomy'],
    'dce': ['DCEPhantom', 'DCEPhantomParameters', 'make_dce_phantom'],
    'dmri': ['DMRIPhantom', 'DMRIPhantomParameters', 'make_dmri_phantom'],
    'dsc': ['DSCPhantom', 'DSCPhantomParameters', 'default_tissues', 'make_dsc_phantom'],
    'structural': ['StructuralPhantom', 'make_structural_phantom'],
})

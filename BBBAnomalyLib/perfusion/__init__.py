"""Perfusion physics that DSC and DCE share: :mod:`.population_aif` (published AIFs),
:mod:`.arterial` (the arterial voxels of a drawn search region) and :mod:`.arterial_auto`
(automatic arterial-voxel selection, Mouridsen 2006), :mod:`.guided_pooling` (S0-guided pooling of curves) and
:mod:`.motion` (head motion during a dynamic series: detection and rigid correction) and :mod:`.slice_timing` (each
slice's acquisition time within a frame of a 2D multi-slice series: the AIF moved to it)."""

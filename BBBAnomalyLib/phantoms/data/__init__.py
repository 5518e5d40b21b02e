"""Package data of the phantoms (an importable package so that setuptools ships its *.nii.gz/*.txt)."""

"""Parts of the BBBAnomaly module's panel (BBBAnomaly.py), one file per concern: the parameter form
(form.py), the parameter node (parameters.py), the Results section (results.py) and the logic's
work (logic.py). Imported at Slicer's start-up with the module: qt and slicer only, nothing heavy."""

"""Core data and plumbing every pipeline uses: :mod:`.volume` (Volume + Acquisition), :mod:`.errors`,
:mod:`.outputs` (claimed, complete-or-absent output folders), :mod:`.report`, :mod:`.progress`,
:mod:`.checks` (parameter validation), :mod:`.devices` (torch devices), :mod:`.processes`,
:mod:`.registration` (rigid alignment of two images of one patient, shared by the structural and perfusion pipelines).
File reading and writing is :mod:`BBBAnomalyLib.io`."""

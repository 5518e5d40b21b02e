"""Core data and plumbing every pipeline uses: :mod:`.volume` (Volume + Acquisition), :mod:`.errors`,
:mod:`.outputs` (claimed, complete-or-absent output folders), :mod:`.report`, :mod:`.progress`,
:mod:`.checks` (parameter validation), :mod:`.devices` (torch devices), :mod:`.processes`.
File reading and writing is :mod:`BBBAnomalyLib.io`."""

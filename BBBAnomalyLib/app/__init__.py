"""What the Slicer panel stands on: :mod:`.pipelines` (the registry the panel and the worker are
driven by), :mod:`.jobs` (a run as a validated JSON job), :mod:`.runners` and :mod:`.worker` (the
background process), :mod:`.curves` and :mod:`.display` (what the panel shows), and :mod:`.mrml`
(the MRML bridge: the only place that imports slicer, lazily)."""

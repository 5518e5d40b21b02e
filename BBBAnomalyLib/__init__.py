"""BBBAnomalyLib: the plain-Python science core of the BBBAnomaly 3D Slicer extension.

Pipelines take :class:`Volume` objects and a parameter dataclass and return named output
Volumes with a JSON-serialisable report. Nothing here imports slicer or qt (except lazily in
:mod:`BBBAnomalyLib.app.mrml`).
"""

__version__ = "0.1.0"

from .core.errors import CancelledError, InputError  # noqa: E402
from .core.volume import Acquisition, Volume  # noqa: E402

__all__ = ["Volume", "Acquisition", "InputError", "CancelledError", "__version__"]

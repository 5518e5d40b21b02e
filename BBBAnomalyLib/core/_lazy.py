"""Package namespaces that import their modules on first use (PEP 562).

``import BBBAnomalyLib.dsc`` must stay cheap: the command line builds its parser from every
pipeline (``bbbanomaly --help`` in well under a second), and the Slicer panel imports packages
whose heavy parts (torch, nibabel, scikit-learn) Slicer may not have yet. A package lists which
name lives in which module; the module is imported when a name is first read.
"""

from __future__ import annotations

import importlib


def attach(package: str, exports: dict[str, list[str]]):
    """``(__getattr__, __dir__, __all__)`` for ``package`` from {module: [names]} (module relative)."""
    where = {name: module for module, names in exports.items() for name in names}
    names = sorted(where)

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # the next read is a plain attribute
        return value

    def __dir__():
        return sorted(set(names) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__, names

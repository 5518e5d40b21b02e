"""What the command line prints after a run, for the Slicer panel's log (session 24).

Why: `bbbanomaly dsc|dce|dmri|t1flair` end with a summary of the run's report (each command's ``print_summary``): the
AIF, the brain and tumour medians, the tumour/NAWM ratios with the caveat a ratio keeps (PHAE CBF's), the T1/FLAIR
BBB status with every reason behind it (a resection cavity or blood products in the tumour ROI: read with care) and
the dMRI threshold and tumour/NAWM score. The panel showed the maps and the warnings only: its user never read the
BBB status unless it was indeterminate, nor the reasons a post-operative scan gives. Here the commands' own
``print_summary`` is run on the panel run's report (so the two cannot drift apart), without the lines about files
(where they were written, their names) and the warnings (the panel lists those itself).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
from types import SimpleNamespace

#: pipeline -> the command module whose ``print_summary(result, written)`` a run's summary is (light modules: they
#: import no numpy at the top)
COMMANDS = {"dsc": "BBBAnomalyLib.dsc.command", "dce": "BBBAnomalyLib.dce.command",
            "dmri": "BBBAnomalyLib.dmri.command", "t1flair": "BBBAnomalyLib.structural.command"}
#: what stands for the output folder in the first line ("... written to <folder>"), cut from it
_WRITTEN = "<output folder>"


def summary_lines(pipeline: str, report: dict, map_names) -> list[str]:
    """The lines `bbbanomaly <pipeline>` prints after a run with this ``report`` and maps, but for those about the
    files and the warnings; [] for a pipeline without a command summary. A report the summary cannot read (written by
    another version) gives one line saying so, never an exception in the panel."""
    if pipeline not in COMMANDS:
        return []
    printed = io.StringIO()
    result = SimpleNamespace(report=report, maps={name: None for name in map_names})
    try:
        with contextlib.redirect_stdout(printed):
            importlib.import_module(COMMANDS[pipeline]).print_summary(result, _WRITTEN)
    except Exception as exc:  # noqa: BLE001 - the maps and warnings are shown anyway
        logging.getLogger("BBBAnomalyLib").info("the run's summary could not be made", exc_info=True)
        return [f"(the command line's summary of this run could not be made: {type(exc).__name__}: {exc})"]
    lines = []
    for n, line in enumerate(printed.getvalue().splitlines()):
        if n == 0:
            line = line.replace(f" written to {_WRITTEN}", "")
        if line.strip().startswith(("maps:", "warning:")) or not line.strip():
            continue
        lines.append(line.rstrip())
    return lines

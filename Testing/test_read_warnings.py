"""What a reader says about a file reaches the run's report (session 22).

A DICOM folder holding the same 3D series twice (new SOPInstanceUIDs) is read once with a warning
(Testing/test_io_dicom_echoes.py), but the warning went only to the log and to ``acquisition.extra``: the report,
the panel's and roi-stats' warnings never showed it. Readers now append to ``acquisition.extra["read_warnings"]``
and every pipeline starts its warnings with them (core.volume.read_warnings).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from test_io_dicom_echoes import SHAPE, _sent_twice
from test_io_dicom_round17 import _keep_locale, frames  # noqa: F401  (the fixture is autouse)

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.volume import READ_WARNINGS, Volume, read_warnings
from BBBAnomalyLib.dsc import run_dsc


def test_read_warnings_collects_each_warning_once_and_skips_what_has_none():
    a = Volume(np.zeros((2, 2, 2)), np.eye(4))
    a.acquisition.extra[READ_WARNINGS] = ["one", "two"]
    b = Volume(np.zeros((2, 2, 2)), np.eye(4))
    b.acquisition.extra[READ_WARNINGS] = ["two", "three"]
    assert read_warnings(a, None, np.zeros(3), b) == ["one", "two", "three"]


def test_a_vfa_fit_of_folders_each_sent_twice_says_so_in_its_report(tmp_path, capsys):
    data = frames(*SHAPE, nt=1).astype(np.float64) + 100.0
    folders = []
    for name, scale in (("fa02", 1.0), ("fa12", 0.6)):
        _sent_twice(tmp_path / name, (data * scale).astype(np.int16), renumber=True)
        folders.append(str(tmp_path / name))
    out = tmp_path / "t1"
    assert main(["t1map", *folders, "--flip-angles", "2", "12", "--tr", "0.005", "--out", str(out)]) == 0
    warnings = json.loads((out / "report.json").read_text(encoding="utf-8"))["warnings"]
    copies = [w for w in warnings if "pixel-identical copies" in w]
    assert len(copies) == 2 and all(any(f in w for w in copies) for f in folders)
    assert "pixel-identical copies" in capsys.readouterr().out  # printed with the run's warnings


def test_the_dsc_report_starts_with_the_readers_warnings(dsc_phantom):
    series = dsc_phantom.signal
    said = "the reader's note about this series (test)"
    extra = dict(series.acquisition.extra, **{READ_WARNINGS: [said]})
    series = dataclasses.replace(series, acquisition=dataclasses.replace(series.acquisition, extra=extra))
    result = run_dsc(series, aif_mask=dsc_phantom.masks["aif"], brain_mask=dsc_phantom.masks["brain"])
    assert result.report["warnings"][0] == said

"""`dce --vfa`: what the VFA fit warns about is a warning of the DCE run (session 22).

The T10 fit's own warnings (e.g. several Philips series without their private tags: their relative scale is unknown,
so T10 and every concentration may be off; Testing/test_io_dicom_scaling.py) were kept only inside
report["t10_from_vfa"]: neither printed nor in the run's warnings list, which the panel and roi-stats show.
"""

from __future__ import annotations

import json

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.io import read_volume
from BBBAnomalyLib.phantoms.dce import make_dce_phantom
from BBBAnomalyLib.t1map import pipeline as t1map_pipeline

WARNING = "3 of the 3 VFA series are Philips DICOM without their private tags (test stand-in)"


def test_the_vfa_fits_warnings_are_the_runs(tmp_path, monkeypatch, capsys):
    case = tmp_path / "case"
    make_dce_phantom(snr=40, slices=4, seed=0).write(case)
    truth_t10 = read_volume(case / "truth_t10.nii.gz")

    def fitted(paths, series, flip_angles=None, tr=None, b1_path=None):  # the fit itself is tested in t1map's tests
        return truth_t10, {"source": "vfa", "warnings": [WARNING]}

    monkeypatch.setattr(t1map_pipeline, "t10_map_from_vfa", fitted)
    out = tmp_path / "run"
    code = main(["dce", str(case / "signal.nii.gz"), "--aif-mask", str(case / "mask_aif.nii.gz"),
                 "--mask", str(case / "mask_brain.nii.gz"), "--vfa", str(case / "truth_t10.nii.gz"),
                 "--rls", "none", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert WARNING in report["warnings"] and report["warnings"].count(WARNING) == 1
    assert f"warning: {WARNING}" in capsys.readouterr().out

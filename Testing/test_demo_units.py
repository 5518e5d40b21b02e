"""Issue 12, items 10-11: `demo --pipeline all` runs the four pipelines, the DSC demo figure shows the
truth in the estimate's units, and `roi-stats` prints units and withholds meaningless ratios."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bad_input_helpers import save_nifti

from BBBAnomalyLib.cli import main


def test_demo_all_runs_the_four_pipelines_into_one_folder(tmp_path, monkeypatch, capsys):
    """DSC runs for real (4 slices); DCE, diffusion and T1/FLAIR are replaced by recorders, so the test
    checks that 'all' means all four, each inside the one all-or-nothing output folder."""
    from BBBAnomalyLib.dce import demo as dce_demo
    from BBBAnomalyLib.dmri import demo as dmri_demo
    from BBBAnomalyLib.structural import demo as t1flair_demo

    ran = []

    def recorder(name):
        def run(*args, **kwargs):
            tmp = next(a for a in args if hasattr(a, "mkdir"))
            (tmp / name).mkdir()
            ran.append(name)
            return (name,)
        return run

    monkeypatch.setattr(dce_demo, "run_inside", lambda args, tmp, printer: recorder("dce")(tmp))
    monkeypatch.setattr(dmri_demo, "run_demo", recorder("dmri"))
    monkeypatch.setattr(t1flair_demo, "run_demo", recorder("t1flair"))
    for module in (dce_demo, dmri_demo, t1flair_demo):
        monkeypatch.setattr(module, "print_summary", lambda *a: print(f"summary {a[0]}"))
    out = tmp_path / "demo"
    assert main(["demo", "--pipeline", "all", "--slices", "4", "--out", str(out), "--quiet"]) == 0
    assert ran == ["dce", "dmri", "t1flair"]
    assert all((out / name).is_dir() for name in ("dsc", "dce", "dmri", "t1flair"))
    printed = capsys.readouterr().out
    assert all(f"summary {name}" in printed for name in ("dce", "dmri", "t1flair"))


class _Result:
    """A run's result as far as the figure reads it: the units as run_dsc records them for these kH and ρ."""

    def __init__(self, kh, density):
        from BBBAnomalyLib.dsc import DSCParameters
        from BBBAnomalyLib.dsc.pipeline import map_info

        info = map_info(DSCParameters(kh=kh, density=density))
        self.report = {"parameters": {"kh": kh, "density": density},
                       "maps": {name: {"unit": info[name][0]} for name in ("cbv", "cbv_corrected", "cbf")}}
        self.maps = {"cbv": None, "cbv_corrected": None}


def test_dsc_figure_shows_the_truth_in_the_estimates_units():
    """True CBV (ml/100 ml) next to an estimate in ml/100 g was a 1.42x mismatch on one colour scale."""
    from BBBAnomalyLib.figures import dsc_unit, truth_in_estimate_units
    from BBBAnomalyLib.core.volume import Volume

    truth = Volume(np.full((2, 2, 2), 4.0, np.float32), np.eye(4))
    shown, unit = truth_in_estimate_units(truth, _Result(0.73, 1.04))
    np.testing.assert_allclose(shown.data, 4.0 * 0.73 / 1.04, rtol=1e-6)
    assert unit == "ml/100 g"
    shown, unit = truth_in_estimate_units(truth, _Result(1.0, 1.0))
    np.testing.assert_allclose(shown.data, 4.0)
    assert unit == "ml/100 ml" and dsc_unit(_Result(1.0, 1.0), "cbf") == "ml/100 ml/min"


def test_roi_stats_prints_units_and_no_ratio_to_a_reference_of_zero(tmp_path, capsys):
    rng = np.random.default_rng(0)
    roi = np.zeros((10, 10, 4), bool)
    roi[:3] = True
    ref = np.zeros_like(roi)
    ref[5:] = True
    cbv = np.where(roi, 6.0, 2.0).astype(np.float32) + rng.normal(0, 0.1, roi.shape).astype(np.float32)
    k2 = rng.normal(0.0, 1e-3, roi.shape).astype(np.float32)
    k2[ref] -= k2[ref].mean() - np.float32(1e-9)  # NAWM K2: noise around 0
    k2[roi] = 0.01
    run = tmp_path / "run"
    run.mkdir()
    files = [save_nifti(run / f"{name}.nii.gz", data) for name, data in (("cbv", cbv), ("k2", k2))]
    (run / "report.json").write_text(json.dumps({"maps": {"cbv": {"unit": "ml/100 ml"}}}))
    masks = [save_nifti(tmp_path / f"{n}.nii.gz", m.astype(np.uint8)) for n, m in (("roi", roi), ("ref", ref))]
    stats_file = tmp_path / "stats.json"
    assert main(["roi-stats", *map(str, files), "--roi", str(masks[0]), "--reference", str(masks[1]),
                 "--json", str(stats_file)]) == 0
    table = capsys.readouterr().out
    header, cbv_row, k2_row = table.splitlines()[:3]
    assert "unit" in header and "ml/100 ml" in cbv_row and "1/s" in k2_row  # report.json first, then MAP_INFO
    assert "n/a" in k2_row and "note: ratio n/a" in table and "indistinguishable from 0" in table
    stats = json.loads(stats_file.read_text())
    assert stats["maps"]["cbv"]["unit"] == "ml/100 ml" and stats["maps"]["cbv"]["ratio_mean"] == pytest.approx(3.0, rel=0.02)
    assert stats["maps"]["k2"]["ratio_mean"] is None

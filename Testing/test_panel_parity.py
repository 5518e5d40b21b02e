"""What a panel run is told, against the same run on the command line (session 24, round 2 of the panel's parity).

1. The contrast agent's relaxivity: ``bbbanomaly dce FOLDER --relaxivity header`` applies the published r1 of the
   agent the DICOM header names at its field strength (``dce/stated_relaxivity.py``). The panel shows that r1 under
   its Relaxivity field with a Use button, as it shows the stated dose (``app/header_hints.py``); a panel run with
   the value Use fills in gives the command line's maps bit for bit.

The series is a small DCE DICOM series naming Dotarem (gadoterate, 3.32 /s/mM in plasma at 1.5 T) at 1.5 T, loaded
as Slicer's DICOM module loads it (Testing/test_panel_header_facts.py's ``slicer_loaded_dce``); every run is
`--t10 1.4 --rls none` with the Parker population AIF (where the r1 does not cancel).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from bad_input_helpers import dce_signal
from test_dce_header_dose import write_dicom
from test_io_dicom_round17 import _keep_locale  # noqa: F401  (autouse: the writer's locale)
from test_panel_header_facts import CLI, PARAMETERS, run_job, scene, slicer_loaded_dce  # noqa: F401  (fixture)

from BBBAnomalyLib.app import handover, mrml
from BBBAnomalyLib.app.header_hints import parameter_hints
from BBBAnomalyLib.app.pipelines import get_pipeline
from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.io import read_dicom_series, read_volume

#: the header of a gadoterate series at 1.5 T (the field strength overrides the writer's 3 T)
DOTAREM_15 = {"0018|0010": "Dotarem", "0018|0087": "1.5"}
GADOTERATE_15 = 3.32  # dce/stated_relaxivity.R1_BY_AGENT, human plasma at 1.5 T
MAPS = ("ktrans", "ve", "vp", "kep", "fit_r2", "delay")


def cli_run(folder: Path, out: Path, *extra: str) -> tuple[dict, dict, str]:
    """({map: array in the library's (x, y, z) order}, report, what it printed) of `bbbanomaly dce FOLDER --t10 1.4
    --rls none`."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(["dce", str(folder), *CLI, *extra, "--out", str(out), "--quiet", "--format", "nrrd"]) == 0
    maps = {name: read_volume(out / f"{name}.nrrd").data for name in MAPS}
    return maps, json.loads((out / "report.json").read_text(encoding="utf-8")), printed.getvalue()


def job_maps(output_dir) -> dict:
    return {name: handover.read_volume(Path(output_dir) / f"{name}.npy").data for name in MAPS}


def relaxivity_warnings(report) -> list[str]:
    return [w for w in report["warnings"] if "published r1" in w]


@pytest.fixture(scope="module")
def dotarem(tmp_path_factory):
    """(folder, series, CLI without --relaxivity, CLI with --relaxivity header): each (maps, report)."""
    root = tmp_path_factory.mktemp("panel_parity")
    folder = write_dicom(root / "dce_dicom", dce_signal(), DOTAREM_15)
    return (folder, read_dicom_series(folder), cli_run(folder, root / "plain"),
            cli_run(folder, root / "header", "--relaxivity", "header"))


def panel_hints(node) -> dict:
    """The hints the panel shows for ``node`` (BBBAnomalyPanel/header_hints.py: the acquisition a run of the node
    gets, its header facts and field strength)."""
    acquisition = mrml.with_header_facts(mrml.describe_input(node).acquisition, node)
    return parameter_hints("dce", acquisition.extra, acquisition.field_strength)


# --- 1. the relaxivity hint -------------------------------------------------------------------------------------
def test_the_relaxivity_hint_says_the_agents_r1_at_the_series_field():
    hint = parameter_hints("dce", {"contrast_bolus": {"agent": "Dotarem"}}, 1.5)["relaxivity"]
    assert hint.value == GADOTERATE_15
    assert hint.text == "header: 3.32 /s/mM (gadoterate meglumine at 1.5 T)"
    assert "'Dotarem'" in hint.details and "Szomolanyi" in hint.details and "3.9 /s/mM" in hint.details
    assert "-26 %" in hint.details and "not applied by itself" in hint.details
    # the value fits the field it fills (2 decimals, inside its range)
    spec = next(p for p in get_pipeline("dce").parameters if p.name == "relaxivity")
    assert spec.minimum < hint.value <= spec.maximum and round(hint.value, spec.decimals) == hint.value
    # gadobenate reads the other way
    assert parameter_hints("dce", {"contrast_bolus": {"agent": "MultiHance"}}, 1.5)["relaxivity"].value == 6.2
    # no field strength, no value at that field, an agent without a value: said why, nothing to fill in
    for record, field, why in (({"agent": "Gadovist"}, None, "no MagneticFieldStrength"),
                               ({"agent": "Gadovist"}, 1.0, "near 1 T"),
                               ({"agent": "Elucirem"}, 3.0, "high-relaxivity"),
                               ({"agent": "Contrast X"}, 3.0, "not an agent")):
        hint = parameter_hints("dce", {"contrast_bolus": record}, field)["relaxivity"]
        assert hint.value is None and ", no r1 (" in hint.text and why in hint.text, (record, hint.text)
    # a series naming no agent (only the weight), or another pipeline: no hint
    assert "relaxivity" not in parameter_hints("dce", {"contrast_bolus": {"patient_weight_kg": 75.0}}, 3.0)
    assert parameter_hints("dsc", {"contrast_bolus": {"agent": "Dotarem"}}, 1.5) == {}


def test_use_gives_the_maps_of_relaxivity_header_bit_for_bit(dotarem, scene, tmp_path):
    """The sequence Slicer loads from the folder: its hint is the r1 `--relaxivity header` applies, and the panel's
    run with it has the command line's maps exactly; the run without it warns word for word as the command line."""
    folder, series, (plain_maps, plain_report, _), (header_maps, header_report, _) = dotarem
    _, proxy, _ = slicer_loaded_dce(folder, series.affine)
    hint = panel_hints(proxy)["relaxivity"]
    assert hint.value == header_report["parameters"]["relaxivity"] == GADOTERATE_15
    warned = relaxivity_warnings(plain_report)
    assert len(warned) == 1 and f"--relaxivity {GADOTERATE_15:g}" in warned[0]

    job, _ = mrml.prepare_job(mrml.RunRequest("dce", {"series": proxy}, dict(PARAMETERS), {}), tmp_path / "plain")
    report = run_job(job)
    assert relaxivity_warnings(report) == warned
    assert report["conversion"]["header_relaxivity"] == plain_report["conversion"]["header_relaxivity"]

    used = {**PARAMETERS, "relaxivity": hint.value}
    job, _ = mrml.prepare_job(mrml.RunRequest("dce", {"series": proxy}, used, {}), tmp_path / "used")
    report = run_job(job)
    assert relaxivity_warnings(report) == relaxivity_warnings(header_report) == []
    assert report["parameters"]["relaxivity"] == header_report["parameters"]["relaxivity"]
    assert report["conversion"]["header_relaxivity"]["differs_by"] == 0.0
    got = job_maps(job.output_dir)
    for name in MAPS:  # the same voxels, times and r1: the same float32 maps
        assert np.any(header_maps[name] != 0), name
        assert np.array_equal(got[name], header_maps[name]), (name, np.abs(got[name] - header_maps[name]).max())
        assert not np.array_equal(got[name], plain_maps[name]) or name in ("kep", "delay", "fit_r2"), name


# --- 4. what the command line prints after a run, for the panel's log ------------------------------------------
#: the parts of a T1/FLAIR report the command line's summary reads (structural/command.py::print_summary), for a
#: post-operative scan: the BBB status and the reasons behind it, one of them the resection cavity in the ROI
T1FLAIR_REPORT = {
    "bbb_status": {"call": "disrupted", "probability": 0.81, "indeterminate_band": [0.35, 0.65],
                   "per_label_scores": {"enhancing": 0.7, "non_enhancing": 0.3}, "tumor_slices": 12,
                   "tumor_roi": "user",
                   "reasons": ["a resection cavity lies in the tumour ROI (12.0 ml): read with care"]},
    "warnings": ["the scan looks post-operative: 14.2 ml of CSF-like fluid lined by FLAIR-abnormal tissue"]}


def test_the_run_summary_is_the_command_lines_without_its_files_and_warnings(capsys):
    from BBBAnomalyLib.app.run_summary import summary_lines
    from BBBAnomalyLib.structural.command import print_summary

    print_summary(SimpleNamespace(report=T1FLAIR_REPORT, maps={"enhancement": None}), Path("/out/t1flair"))
    printed = capsys.readouterr().out.splitlines()
    lines = summary_lines("t1flair", T1FLAIR_REPORT, ["enhancement"])
    assert lines[0] == "T1/FLAIR results" and printed[0] == "T1/FLAIR results written to /out/t1flair"
    assert lines[1:] == [line for line in printed[1:] if not line.strip().startswith(("maps:", "warning:"))]
    assert any("BBB status: disrupted (p(disrupted) = 0.81" in line for line in lines)
    assert "    reason: a resection cavity lies in the tumour ROI (12.0 ml): read with care" in lines
    assert not any("warning" in line or "/out" in line for line in lines)
    # a report the summary cannot read: one line, no exception in the panel; a pipeline without one: nothing
    broken = summary_lines("t1flair", {"warnings": []}, [])
    assert len(broken) == 1 and "could not be made" in broken[0] and "KeyError" in broken[0]
    assert summary_lines("t1map", T1FLAIR_REPORT, []) == []


# --- 3. caveats beside the panel's ROI ratio table ----------------------------------------------------------------
def test_the_ratio_table_says_the_spin_echo_caveat_and_why_a_ratio_is_na(scene, tmp_path):
    """A spin-echo DSC DICOM series (EP\\SE), loaded as Slicer loads it and run as the panel runs it: its maps carry
    the run's spin-echo caveats into the ratio table (session 23's bridge: a guard), and the table now also says, in
    the map's row, why a ratio is n/a, in `bbbanomaly roi-stats`' words (``roistats.table_notes``)."""
    from bad_input_helpers import dsc_signal

    from BBBAnomalyLib.roistats import table_notes

    folder = write_dicom(tmp_path / "se", dsc_signal()[0], {"0018|0020": "EP\\SE", "0018|0024": "*epse2d1_128",
                                                          "0018|0081": "30"}, dt=1.5)
    _, proxy, _ = slicer_loaded_dce(folder, read_dicom_series(folder).affine)
    reference, _ = mrml.reference_grid(proxy)
    tumor, nawm = np.zeros(reference.spatial_shape, bool), np.zeros(reference.spatial_shape, bool)
    tumor[1:4, 1:9, :], nawm[6:9, 1:9, :] = True, True  # (the artery is at x = 4)
    segmentation, ids = mrml.add_segmentation({"tumor": tumor, "nawm": nawm}, reference, "regions")
    regions = {"tumor_mask": (segmentation, ids["tumor"]), "nawm_mask": (segmentation, ids["nawm"])}
    job, _ = mrml.prepare_job(mrml.RunRequest("dsc", {"series": proxy, **regions}, {"method": "ssvd"}, {}),
                              tmp_path / "run")
    report = run_job(job)
    outputs = mrml.import_results(job.output_dir, proxy, "spin-echo run")
    table, stats = mrml.ratio_table(outputs.map_nodes, tumor, nawm)
    names, rows = mrml.table_rows(table)
    by_map = {row[0]: dict(zip(names, row)) for row in rows}
    for name in ("cbv", "cbf", "rcbv"):
        assert by_map[name]["caveat"] == report["maps"][name]["caveat"] and "spin-echo DSC" in by_map[name]["caveat"]
    notes = table_notes(stats, caveats=False)
    assert notes and all(note.startswith("note: ratio n/a for ") for note in notes)
    for note in notes:
        name = note.split(" of ", 1)[1].split(":", 1)[0]
        assert note.removeprefix("note: ratio n/a for ") in by_map[name]["ratio note"]
        assert np.isnan(float(by_map[name]["tumor/NAWM mean"]))
    assert by_map["cbv"]["ratio note"] == ""

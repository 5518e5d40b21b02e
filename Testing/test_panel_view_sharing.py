"""A view-shared DCE series run from the Slicer panel is recognised as the command line recognises it (session 24).

Siemens names a TWIST series in its SeriesDescription ("t1_twist_tra_dyn", dcm2niix issue 689) and not in its
SequenceName, and `io/view_sharing.py` reads the series description the DICOM reader keeps in
``acquisition.description``. A node Slicer loaded from DICOM carries no description, so the panel's run of the same
series lost the view-sharing record and, with a drawn or automatic AIF, its warning (docs/reliability.md, "View-shared
DCE"). The MRML bridge now reads the description from the node's files, as it reads the field strength.
"""

from __future__ import annotations

import json

from bad_input_helpers import dce_signal
from test_dce_header_dose import write_dicom
from test_io_dicom_round17 import _keep_locale  # noqa: F401  (autouse: the writer's locale)
from test_panel_header_facts import CLI, PARAMETERS, job_header, run_job, scene, slicer_loaded_dce  # noqa: F401

from BBBAnomalyLib.app import mrml
from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.io import read_dicom_series
from BBBAnomalyLib.io.dicom import series_description_of


def test_a_twist_series_from_the_panel_carries_the_view_sharing_record_of_the_command_line(scene, tmp_path):  # noqa: F811
    folder = write_dicom(tmp_path / "twist", dce_signal(n_frames=12), {"0008|103e": "t1_twist_tra_dyn"})
    series = read_dicom_series(folder)
    assert series.acquisition.description == "t1_twist_tra_dyn"
    assert series_description_of(sorted(folder.iterdir())) == "t1_twist_tra_dyn"
    out = tmp_path / "cli"
    assert cli_main(["dce", str(folder), *CLI, "--out", str(out), "--quiet"]) == 0
    cli_report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert cli_report["view_sharing"]["scheme"] == "twist"

    _, proxy, _ = slicer_loaded_dce(folder, series.affine)
    assert mrml.node_header(proxy).acquisition.description == "t1_twist_tra_dyn"
    job, _ = mrml.prepare_job(mrml.RunRequest("dce", {"series": proxy}, dict(PARAMETERS), {}), tmp_path / "run")
    assert job_header(job)["acquisition"]["description"] == "t1_twist_tra_dyn"
    report = run_job(job)
    assert report["view_sharing"] == cli_report["view_sharing"]  # the record and its note (a population AIF here)


def test_a_node_that_has_a_description_keeps_it(scene, tmp_path):  # noqa: F811
    """The node's own acquisition (e.g. written by the library into a NRRD) is not replaced by its files'."""
    folder = write_dicom(tmp_path / "dce", dce_signal(n_frames=6), {"0008|103e": "t1_twist_tra_dyn"})
    series = read_dicom_series(folder)
    _, proxy, _ = slicer_loaded_dce(folder, series.affine)
    acquisition = mrml.describe_input(proxy).acquisition
    acquisition.description = "as the user named it"
    assert mrml.with_header_facts(acquisition, proxy).description == "as the user named it"

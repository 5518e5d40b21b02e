"""`bbbanomaly dsc`'s summary prints each map's caveat beside its tumour/NAWM ratios, as roi-stats does (session 24).

Before, the summary's "tumor/NAWM: cbv .., cbv_corrected .., cbf .." line was followed by cbf's caveat only (PHAE's
transit-shape bias), while the report gives caveats to other maps too: on a spin-echo series cbv, cbv_corrected and
cbf ("absolute value not comparable ... read the ratio to NAWM") and rcbv, rcbf ("tumour ratios run lower than on
gradient-echo DSC"), which `roi-stats` and the panel's ratio table show beside the same ratios. Now the summary prints
the caveat of every map on its ratio line and of their ratio maps (rcbv, rcbf), in roi-stats' own words
(roistats.caveat_notes).

The series: the DSC reference object (4 slices, SNR 50) with a BIDS sidecar naming a spin-echo EPI.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom
from BBBAnomalyLib.roistats import caveat_notes


def _run(args) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(args) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def spin_echo_run(tmp_path_factory):
    """(the dsc command's output, its report, the folders) of a spin-echo DSC run with NAWM and tumour masks."""
    root = tmp_path_factory.mktemp("dsc_summary_caveats")
    folder = make_dsc_phantom(snr=50.0, slices=4, seed=1).write(root / "object")
    sidecar = json.loads((folder / "signal.json").read_text(encoding="utf-8"))
    sidecar.update({"MagneticFieldStrength": 3, "ScanningSequence": "EP\\SE", "SequenceName": "*epse2d1_128"})
    (folder / "signal.json").write_text(json.dumps(sidecar), encoding="utf-8")
    masks = ["--aif-mask", str(folder / "mask_aif.nii.gz"), "--nawm-mask", str(folder / "mask_nawm.nii.gz"),
             "--tumor-mask", str(folder / "mask_tumor.nii.gz")]
    printed = _run(["dsc", str(folder / "signal.nii.gz"), *masks, "--method", "ssvd", "--out", str(root / "maps")])
    report = json.loads((root / "maps" / "report.json").read_text(encoding="utf-8"))
    return printed, report, folder, root / "maps"


def test_each_ratio_has_its_maps_caveat_beside_it(spin_echo_run):
    printed, report, _, _ = spin_echo_run
    lines = printed.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  tumor/NAWM: "))
    shown = [item.split()[0] for item in lines[at].removeprefix("  tumor/NAWM: ").split(", ")]
    assert shown == ["cbv", "cbv_corrected", "cbf", "mtt"]  # (mtt: its ratio of medians, test_dsc_mtt_ratio.py)
    expected = [f"  note: {name}: {report['maps'][name]['caveat']}" for name in (*shown, "rcbv", "rcbf")
                if report["maps"][name].get("caveat")]
    assert len(expected) == 5 and "caveat" not in report["maps"]["mtt"]  # spin echo: cbv, cbf and their ratio maps
    assert lines[at + 1: at + 1 + len(expected)] == expected  # right under the ratio line, in its order
    assert "spin-echo DSC: absolute value not comparable" in expected[0]
    assert "spin-echo DSC: tumour ratios run lower" in expected[3]
    assert lines[at + 1 + len(expected)].startswith("  warning: ")  # and nothing else (tmax, k2 have no caveat)


def test_the_notes_are_roi_stats_own(spin_echo_run):
    """The same maps through `bbbanomaly roi-stats`: its note of each map is the summary's line, word for word."""
    printed, report, folder, maps = spin_echo_run
    names = ("cbv", "cbv_corrected", "cbf", "rcbv", "rcbf")
    table = _run(["roi-stats", *(str(maps / f"{n}.nii.gz") for n in names), "--roi", str(folder / "mask_tumor.nii.gz"),
                  "--reference", str(folder / "mask_nawm.nii.gz")])
    notes = [line for line in table.splitlines() if line.startswith("note: ") and line.split(":")[1].strip() in names]
    assert len(notes) == len(names)
    assert all(f"  {note}" in printed.splitlines() for note in notes), (notes, printed)
    assert caveat_notes({"cbv": "x", "k2": None, "cbf": ""}) == ["note: cbv: x"]

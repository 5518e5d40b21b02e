"""GE multi-phase EPI: each slice's time within its frame from its TriggerTime (session 23, io/dicom_ge.py).

GE's product EPI with the multi-phase option (a GE DSC series) writes each slice's time within the frame, in ms, to
TriggerTime (0018,1060), the same in every frame (dcm2niix GE/README.md); its AcquisitionTime is one time per frame
(or whole seconds). `--slice-timing auto` read the slices as acquired together (all zeros) or found no slice times.
Now the TriggerTime offsets are used, with the reader's guards (the same in every frame within 10 ms, shorter than
the frame interval and RepetitionTime, not all equal) and not for GE HyperBand series (private (0043,10B6) > 1,
whose TriggerTime holds single-band times, dcm2niix issue 336).

Series are written with SimpleITK/GDCM (Testing/test_io_dicom_round17.py's writer), 6x5x4 voxels, 5 frames 1.5 s
apart, slices interleaved (0, 2, 1, 3) 0.3 s apart.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_io_dicom_round17 import _keep_locale, frames, tm, write_images  # noqa: F401  (the fixture is autouse)

from BBBAnomalyLib.io import read_volume
from BBBAnomalyLib.perfusion import slice_timing

DATA = frames(6, 5, 4, 5)
#: the writer's interleaved order (0, 2, 1, 3) at 0.3 s: slice k (along the normal) is acquired at
INTERLEAVED = [0.0, 0.6, 0.3, 0.9]


def ge(manufacturer="GE MEDICAL SYSTEMS", fraction=True, multiband=None, trigger_jitter_ms=0.0, trigger_scale=1.0):
    """Tags as GE writes them: one AcquisitionTime per frame, TriggerTime = the slice's offset (ms)."""
    def tags_of(tags, t, k):
        tags["0008|0070"] = manufacturer
        tags["0008|0032"] = tm(36000.0 + t * 1.5, fraction)
        order = [0, 2, 1, 3].index(k)
        late = trigger_jitter_ms if t % 2 and order == 1 else 0.0  # one slice, every other frame
        tags["0018|1060"] = f"{(order * 300.0 + late) * trigger_scale:g}"
        if multiband is not None:
            tags["0043|0010"], tags["0043|10b6"] = "GEMS_PARM_01", f"{multiband}\\0\\1"
    return tags_of


def times_read(folder):
    volume = read_volume(folder)
    assert np.array_equal(volume.data, DATA)  # the frames are right either way: TriggerTime is no frame key
    return volume, volume.acquisition.extra.get("slice_timing")


@pytest.mark.parametrize("fraction", [True, False], ids=["sub-second AcquisitionTime", "whole-second"])
def test_ge_trigger_time_gives_each_slices_time(tmp_path, fraction):
    write_images(tmp_path / "ge", DATA, tpi=False, instance="restart", extra=ge(fraction=fraction))
    volume, timing = times_read(tmp_path / "ge")
    # before: [0, 0, 0, 0] (slices at one time) with the sub-second clock, nothing with the whole-second one
    assert timing["times_s"] == pytest.approx(INTERLEAVED, abs=1e-9) and "GE TriggerTime" in timing["source"]
    used = slice_timing.series_timing(volume.acquisition, volume.spatial_shape, 1.5, "auto", "x")
    assert np.allclose(used.times, INTERLEAVED) and "TriggerTime" in used.source


def test_the_guards_leave_doubtful_trigger_times_unused(tmp_path):
    cases = {
        "other vendor": ge(manufacturer="SIEMENS"),
        "HyperBand": ge(multiband=2),  # dcm2niix issue 336: single-band times in TriggerTime
        "changes between frames": ge(trigger_jitter_ms=20.0),  # beyond the 10 ms jitter guard
        "beyond the frame": ge(trigger_scale=2.0),  # 0-1.8 s in 1.5 s frames (and TR)
        "all equal": ge(trigger_scale=0.0),  # dcm2niix: simulated GE DICOMs (ABCD) fill it so
    }
    for name, tags in cases.items():
        write_images(tmp_path / name, DATA, tpi=False, instance="restart", extra=tags)
        _, timing = times_read(tmp_path / name)
        assert timing["times_s"] == [0.0] * 4 and "AcquisitionTime" in timing["source"], name  # as before
    # within the jitter guard: used (the clocks round to 1-2.5 ms)
    write_images(tmp_path / "rounded", DATA, tpi=False, instance="restart", extra=ge(trigger_jitter_ms=2.5))
    assert times_read(tmp_path / "rounded")[1]["times_s"] == pytest.approx(INTERLEAVED, abs=2e-3)
    # HyperBand factor 1 (written, single band): used
    write_images(tmp_path / "mb1", DATA, tpi=False, instance="restart", extra=ge(multiband=1))
    assert times_read(tmp_path / "mb1")[1]["times_s"] == pytest.approx(INTERLEAVED, abs=1e-9)


def test_a_ge_series_whose_acquisition_times_give_slice_times_keeps_them(tmp_path):
    """Where the frame clock itself gives each slice's time, it is kept (nothing changes for such series)."""
    def also_trigger(tags, t, k):
        tags["0008|0070"] = "GE MEDICAL SYSTEMS"
        tags["0018|1060"] = f"{[3, 1, 2, 0].index(k) * 100:g}"  # another order: not the one used
    write_images(tmp_path / "timed", DATA, extra=also_trigger)
    _, timing = times_read(tmp_path / "timed")
    assert timing["times_s"] == pytest.approx(INTERLEAVED) and "AcquisitionTime" in timing["source"]
    # GE DCE: TriggerTime as the frame clock (time since the first frame) gives frames and slices as before
    def frame_clock(tags, t, k):
        tags["0008|0070"] = "GE MEDICAL SYSTEMS"
        tags["0018|1060"] = f"{t * 1500 + [0, 2, 1, 3].index(k) * 300:g}"
    write_images(tmp_path / "dce", DATA, tpi=False, extra=frame_clock)
    volume, timing = times_read(tmp_path / "dce")
    assert volume.acquisition.extra["frame_timing"] == "TriggerTime"
    assert timing["times_s"] == pytest.approx(INTERLEAVED) and "the DICOM TriggerTime" in timing["source"]


def test_dsc_on_a_ge_folder_applies_the_trigger_time_slice_offsets(tmp_path):
    """`bbbanomaly dsc FOLDER --slice-timing auto` (the default) on a GE-like DSC series: the report's slice timing
    comes from TriggerTime and is applied (before: all zeros from AcquisitionTime, nothing to apply)."""
    import json

    from test_io_dicom_echoes import _masks, dual_echo_signal

    from BBBAnomalyLib.cli import main

    data = dual_echo_signal()[0]  # 16x16x4, 20 frames 1.5 s apart
    write_images(tmp_path / "ge", data, tpi=False, instance="restart", extra=ge())
    aif, brain = _masks(tmp_path, read_volume(tmp_path / "ge").affine)
    out = tmp_path / "out"
    assert main(["dsc", str(tmp_path / "ge"), "--te", "0.015", "--aif-mask", aif, "--mask", brain, "--out", str(out),
                 "--quiet", "--motion-correct", "none", "--slice-timing", "auto"]) == 0
    entry = json.loads((out / "report.json").read_text(encoding="utf-8"))["slice_timing"]
    assert entry["applied"] and "GE TriggerTime" in entry["source"]
    assert entry["times_s"] == pytest.approx(INTERLEAVED)

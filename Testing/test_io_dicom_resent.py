"""A dynamic (DSC/DCE) DICOM series sent twice to the workstation (session 23, io/dicom_resent.py).

PACS or a console that sends a series again gives every image a new SOPInstanceUID (perhaps a new InstanceNumber,
perhaps a new SeriesInstanceUID for the whole transmission); header and pixels stay as they were. Before: the copies
in one series were refused as "one slice twice at TemporalPositionIdentifier/AcquisitionTime" (or, with a
whole-second clock and renumbered copies, read as twice the frames with no word); under a second SeriesInstanceUID
the folder was refused as holding two series. Now pixel-identical copies are read once with a warning that reaches
the run's report; a second transmission whose pixels differ is refused in one line that says so.

Series are written with SimpleITK/GDCM (Testing/test_io_dicom_round17.py's writer): 6x5x3 voxels, 4 frames.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from bad_input_helpers import assert_refused
from test_io_dicom_echoes import _masks, dual_echo_signal
from test_io_dicom_round17 import _keep_locale, frames, write_images  # noqa: F401  (the fixture is autouse)

from BBBAnomalyLib import InputError
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.volume import READ_WARNINGS
from BBBAnomalyLib.io import read_volume
from BBBAnomalyLib.io.dicom_echoes import read_dicom_echoes

DATA = frames(6, 5, 3, 4)


def renumbered(tags, t, k):
    tags["0020|0013"] = str(int(tags["0020|0013"]) + 100)  # the second export numbers its images anew


def send_again(folder, data, *, series="1", only_frames=None, only_slice=None, **kw):
    """The series written again with new SOPInstanceUIDs ('r_*.dcm'); ``only_frames``/``only_slice``: part of it."""
    staging = folder.parent / (folder.name + "_again")
    paths = write_images(staging, data, uid_tag="r", series=series, **kw)
    nz = data.shape[2]
    for n, p in enumerate(paths):
        t, i = divmod(n, nz)
        if (only_frames is None or t in only_frames) and (only_slice is None or i == only_slice):
            shutil.move(str(p), folder / p.name)
    shutil.rmtree(staging)


VARIANTS = {  # name: (keyword arguments of the first and of the second transmission, send_again's part, copies)
    "one series, renumbered": (dict(), dict(extra=renumbered), {}, 12),
    "one series, same InstanceNumbers": (dict(), dict(), {}, 12),
    "second SeriesInstanceUID": (dict(), dict(series="2", extra=renumbered), {}, 12),
    "frames 3-4 again, one series": (dict(), dict(extra=renumbered), dict(only_frames=(2, 3)), 6),
    "frames 3-4 again, second series": (dict(), dict(series="2"), dict(only_frames=(2, 3)), 6),
    "one slice of frame 2 again": (dict(), dict(extra=renumbered), dict(only_frames=(1,), only_slice=0), 1),
    "no TPI, sub-second clock": (dict(tpi=False), dict(tpi=False, extra=renumbered), {}, 12),
    "no TPI, whole-second clock": (dict(tpi=False, fraction=False), dict(tpi=False, fraction=False,
                                                                         extra=renumbered), {}, 12),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_dynamic_series_sent_twice_is_read_once_with_a_warning(tmp_path, variant, caplog):
    first, second, part, copies = VARIANTS[variant]
    clean = tmp_path / "clean"
    write_images(clean, DATA, **first)
    reference = read_volume(clean)
    twice = tmp_path / "twice"
    write_images(twice, DATA, **first)
    send_again(twice, DATA, **second, **part)
    with caplog.at_level("WARNING", logger="BBBAnomalyLib"):
        volume = read_volume(twice)
    # before: refused (TPI / sub-second clock / two series), or 8 frames in silence (whole-second clock)
    assert volume.shape == DATA.shape and np.array_equal(volume.data, DATA)
    assert np.array_equal(volume.data, reference.data) and np.array_equal(volume.affine, reference.affine)
    assert (volume.times is None) == (reference.times is None)
    if reference.times is not None:
        assert np.array_equal(volume.times, reference.times)
    assert volume.acquisition.extra.get("slice_timing", {}).get("times_s") == \
        reference.acquisition.extra.get("slice_timing", {}).get("times_s")
    warning = volume.acquisition.extra["duplicate_images"]
    assert f"{copies} pixel-identical cop" in warning and "r_0" in warning and warning in caplog.text
    assert volume.acquisition.extra[READ_WARNINGS] == [warning]


def test_copies_of_a_dual_echo_series_are_left_out_of_each_echo(tmp_path):
    folder = tmp_path / "dual"
    echoes = tuple(e[:6, :5, :3, :4] for e in dual_echo_signal())

    def writer(uid_tag, extra=None):
        for n, (data, te) in enumerate(zip(echoes, (15.0, 45.0)), start=1):
            def echo(tags, t, k, n=n, te=te):
                tags["0018|0081"], tags["0018|0086"] = f"{te:g}", str(n)
                tags["0020|0013"] = str(2 * (t * 3 + k) + n + (0 if extra is None else 1000))
            write_images(folder, data, uid_tag=f"{uid_tag}{n}", extra=echo)
    writer("a")
    writer("r", extra=True)
    volumes = read_dicom_echoes(folder)
    assert [v.shape for v in volumes] == [echoes[0].shape] * 2
    assert all(np.array_equal(v.data, e) for v, e in zip(volumes, echoes))
    assert all("12 pixel-identical copies" in v.acquisition.extra["duplicate_images"] for v in volumes)


def test_a_second_transmission_with_other_pixels_is_refused_in_one_line(tmp_path, capsys):
    """Not copies: one slice at one time with other pixels (reprocessed, another reconstruction)."""
    out = tmp_path / "out"
    for name, second in (("tpi", {}), ("clock", {"tpi": False})):
        folder = tmp_path / name
        write_images(folder, DATA, **second)
        send_again(folder, DATA + 1, extra=renumbered, only_frames=(2,), **second)
        with pytest.raises(InputError, match="pixels differ"):
            read_volume(folder)
        line = assert_refused(["dsc", str(folder), "--te", "0.03", "--out", str(out), "--quiet"], capsys, folder, out,
                              ("a_0007.dcm", "r_0007.dcm", "pixels differ", "sent twice", "one transmission"))
        assert "SOPInstanceUID" in line
    # under a second SeriesInstanceUID: the two-series refusal, saying that they are not copies
    folder = tmp_path / "second_series"
    write_images(folder, DATA)
    send_again(folder, DATA + 1, series="2")
    assert_refused(["dsc", str(folder), "--te", "0.03", "--out", str(out), "--quiet"], capsys, folder, out,
                   ("2 DICOM series", "not their pixels", "folder of its own"))
    # copies in part and other pixels in part are no resend either
    folder = tmp_path / "mixed"
    write_images(folder, DATA)
    send_again(folder, DATA, only_frames=(0,), extra=renumbered)
    send_again(folder, DATA + 1, only_frames=(3,), extra=lambda tags, t, k: tags.update({"0020|0013": f"9{t}{k}"}))
    with pytest.raises(InputError, match="pixels differ"):
        read_volume(folder)


def test_other_series_in_one_folder_are_still_refused_with_the_listing(tmp_path):
    """A folder of two different acquisitions (other description) or a smaller series that is not all copies."""
    folder = tmp_path / "two"
    write_images(folder, DATA)
    write_images(folder, DATA, series="2", uid_tag="b", extra=lambda tags, t, k: tags.update({"0008|103e": "t1"}))
    with pytest.raises(InputError, match="holds 2 DICOM series.*folder of its own"):
        read_volume(folder)
    folder = tmp_path / "more"
    write_images(folder, DATA)
    write_images(folder, DATA[..., :2], series="2", uid_tag="b", frame_interval=2.0)  # other times: not copies
    with pytest.raises(InputError, match="holds 2 DICOM series"):
        read_volume(folder)


def test_the_dsc_report_names_the_copies_and_the_maps_are_the_clean_runs(tmp_path, capsys):
    data = dual_echo_signal()[0]
    clean, twice = tmp_path / "clean", tmp_path / "twice"
    write_images(clean, data)
    write_images(twice, data)
    send_again(twice, data, series="2")
    aif, brain = _masks(tmp_path, read_volume(clean).affine)
    reports = {}
    for name, folder in (("clean", clean), ("twice", twice)):
        out = tmp_path / f"out_{name}"
        assert main(["dsc", str(folder), "--te", "0.015", "--aif-mask", aif, "--mask", brain, "--out", str(out),
                     "--quiet", "--motion-correct", "none"]) == 0
        reports[name] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    copies = [w for w in reports["twice"]["warnings"] if "pixel-identical copies" in w]
    assert len(copies) == 1 and "another SeriesInstanceUID" in copies[0] and "r_0001.dcm" in copies[0]
    assert not any("pixel-identical" in w for w in reports["clean"]["warnings"])
    for name in ("cbv", "cbf"):
        a = np.asarray(nib.load(tmp_path / "out_clean" / f"{name}.nii.gz").dataobj)
        b = np.asarray(nib.load(tmp_path / "out_twice" / f"{name}.nii.gz").dataobj)
        assert np.any(a != 0) and np.array_equal(a, b), name

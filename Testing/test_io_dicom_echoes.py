"""DICOM folders a clinic sends that the reader got wrong or refused (session 22):

1. a dual-echo DSC series exported as ONE series whose images alternate EchoTime: read as one Volume per echo
   (io/dicom_echoes.py); `bbbanomaly dsc FOLDER` runs it as dual-echo input, with the same maps as the two-file
   run; other readers keep the one-line refusal;
2. a 3D series exported twice with new SOPInstanceUIDs (pixel-identical copies at every slice position): read as
   the 3D series with a warning, where it became a 2-frame series with no time between its frames (a VFA fit given
   two flip angles fitted the two copies in silence).

Series are written with SimpleITK/GDCM (Testing/test_io_dicom_round17.py's writer), 16x16x4 voxels, 20 frames.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from bad_input_helpers import assert_refused, gamma_variate
from test_io_dicom_round17 import _keep_locale, frames, write_images  # noqa: F401  (the fixture is autouse)

from BBBAnomalyLib import InputError
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.io import read_dicom_series, read_volume, write_volume

TE_MS = (15.0, 45.0)
SHAPE = (16, 16, 4)
N_FRAMES = 20


def dual_echo_signal() -> tuple[np.ndarray, np.ndarray]:
    """(echo 1, echo 2) int16 (x, y, z, t): S_i = S0 exp(-TE_i ΔR2*), S0 1000 in a box, one artery column."""
    t = np.arange(N_FRAMES) * 1.5
    rng = np.random.default_rng(3)
    dr2 = np.zeros(SHAPE + (N_FRAMES,))
    brain = np.zeros(SHAPE, bool)
    brain[2:-2, 2:-2, :] = True
    dr2[brain] = 6.0 * gamma_variate(t, 9.0) * rng.uniform(0.5, 1.5, (int(brain.sum()), 1))
    dr2[5, 5, :] = 40.0 * gamma_variate(t, 7.5)
    s0 = np.where(brain, 1000.0, 0.0)[..., None] * (1 + 0.01 * rng.standard_normal(SHAPE + (N_FRAMES,)))
    return tuple(np.round(s0 * np.exp(-te * 1e-3 * dr2)).astype(np.int16) for te in TE_MS)


def write_dual_echo(folder, echoes) -> None:
    """One series, each frame's images alternating echo 1 and echo 2 (one excitation: one acquisition time)."""
    for n, (data, te) in enumerate(zip(echoes, TE_MS), start=1):
        def echo(tags, t, k, n=n, te=te):
            tags["0018|0081"] = f"{te:g}"
            tags["0018|0086"] = str(n)
            tags["0020|0013"] = str(2 * (t * SHAPE[2] + k) + n)  # the echoes interleaved in InstanceNumber
        write_images(folder, data, uid_tag=f"e{n}", extra=echo)


@pytest.fixture(scope="module")
def dual_echo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dual") / "dsc_dicom"
    echoes = dual_echo_signal()
    write_dual_echo(folder, echoes)
    return folder, echoes


def test_a_dual_echo_folder_is_read_as_one_volume_per_echo(dual_echo):
    from BBBAnomalyLib.io.dicom_echoes import read_dicom_echoes

    folder, echoes = dual_echo
    volumes = read_dicom_echoes(folder)
    assert len(volumes) == 2
    for volume, data, te in zip(volumes, echoes, TE_MS):
        assert volume.shape == SHAPE + (N_FRAMES,)
        assert np.array_equal(volume.data, data)  # each echo's frames in order, nothing of the other echo
        assert volume.acquisition.echo_time == pytest.approx(te * 1e-3)
        assert np.allclose(volume.times, np.arange(N_FRAMES) * 1.5, atol=1e-6)
    assert np.array_equal(volumes[0].affine, volumes[1].affine)
    # one Volume cannot hold two echoes: the ordinary reader (t1flair, dce, ...) keeps the one-line refusal, now
    # naming dsc as the analysis that takes both
    with pytest.raises(InputError, match="2 echo times.*bbbanomaly dsc"):
        read_dicom_series(folder)
    # a single-echo folder gives the one Volume read_dicom_series gives
    single = folder.parent / "single"
    write_images(single, echoes[0])
    (only,) = read_dicom_echoes(single)
    assert np.array_equal(only.data, read_dicom_series(single).data) and only.acquisition.echo_time == 0.03


def _masks(tmp_path, affine) -> tuple[str, str]:
    aif, brain = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    aif[5, 5, :] = 1
    brain[2:-2, 2:-2, :] = 1
    paths = []
    for name, m in (("aif", aif), ("brain", brain)):
        write_volume(Volume(m, affine), tmp_path / f"{name}.nii.gz")
        paths.append(str(tmp_path / f"{name}.nii.gz"))
    return paths[0], paths[1]


def _run_dsc(args, out) -> dict:
    assert main(["dsc", *args, "--out", str(out), "--quiet", "--motion-correct", "none"]) == 0
    return json.loads((out / "report.json").read_text())


def test_dsc_on_a_dual_echo_folder_equals_the_two_file_run(dual_echo, tmp_path, capsys):
    from BBBAnomalyLib.io.dicom_echoes import read_dicom_echoes

    folder, _ = dual_echo
    first, second = read_dicom_echoes(folder)
    aif, brain = _masks(tmp_path, first.affine)
    common = ["--aif-mask", aif, "--mask", brain]
    report = _run_dsc([str(folder), *common], tmp_path / "folder")
    assert report["input"]["echo_time_s"] == pytest.approx(0.015)
    assert report["input"]["second_echo_time_s"] == pytest.approx(0.045)
    assert "second echo" in report["input"]["second_echo_source"]
    write_volume(first, tmp_path / "e1.nii.gz")
    write_volume(second, tmp_path / "e2.nii.gz")
    two_files = _run_dsc([str(tmp_path / "e1.nii.gz"), "--second-echo", str(tmp_path / "e2.nii.gz"),
                          "--te", "0.015", "0.045", *common], tmp_path / "files")
    assert two_files["input"]["second_echo_time_s"] == pytest.approx(0.045)
    for name in ("cbv", "cbf", "mtt", "cbv_corrected", "k2"):
        a = np.asarray(nib.load(tmp_path / "folder" / f"{name}.nii.gz").dataobj)
        b = np.asarray(nib.load(tmp_path / "files" / f"{name}.nii.gz").dataobj)
        assert np.any(a != 0), name
        # the same int16 voxels in both runs (NIfTI stores them exactly): only float32 rounding of the maps differs
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max()), name
    # the single-echo reading of echo 1 gives other maps (the T1-free dual-echo ΔR2* is what the folder gave)
    single = _run_dsc([str(tmp_path / "e1.nii.gz"), *common], tmp_path / "single")
    assert single["input"]["second_echo_time_s"] is None
    # two --te values replace the headers' echo times
    given = _run_dsc([str(folder), "--te", "0.016", "0.046", *common], tmp_path / "given")
    assert (given["input"]["echo_time_s"], given["input"]["second_echo_time_s"]) == pytest.approx((0.016, 0.046))


def test_dual_echo_folder_conflicts_are_one_line(dual_echo, tmp_path, capsys):
    folder, _ = dual_echo
    out = tmp_path / "out"
    assert_refused(["dsc", str(folder), "--second-echo", str(folder), "--out", str(out), "--quiet"], capsys,
                   folder, out, ("both echoes", "leave out --second-echo"))
    assert_refused(["dsc", str(folder), "--te", "0.03", "--out", str(out), "--quiet"], capsys, folder, out,
                   ("dual-echo", "15", "45", "two values"))
    # other pipelines keep the refusal of a multi-echo series, in one line
    assert_refused(["t1flair", "--t1", str(folder), "--flair", str(folder), "--out", str(out), "--quiet"], capsys,
                   folder, out, ("2 echo times", "one folder per echo"))


def _sent_twice(folder, data, renumber: bool) -> None:
    """A 3D series (no TemporalPositionIdentifier, one acquisition time) exported twice with new
    SOPInstanceUIDs; the second export renumbers InstanceNumber (renumber) or keeps it."""
    write_images(folder, data, tpi=False, slice_dt=0.0)

    def again(tags, t, k):
        if renumber:
            tags["0020|0013"] = str(int(tags["0020|0013"]) + 100)
    write_images(folder, data, tpi=False, slice_dt=0.0, uid_tag="r", extra=again)


@pytest.mark.parametrize("renumber", [True, False])
def test_a_3d_series_sent_twice_is_read_once_with_a_warning(tmp_path, renumber, caplog):
    data = frames(*SHAPE, nt=1)
    clean = tmp_path / "clean"
    write_images(clean, data, tpi=False, slice_dt=0.0)
    twice = tmp_path / "twice"
    _sent_twice(twice, data, renumber)
    with caplog.at_level("WARNING", logger="BBBAnomalyLib"):
        volume = read_volume(twice)
    # was (16, 16, 4, 2) frames with no time between them (renumbered), or "frames cannot be told apart"
    assert volume.shape == SHAPE
    reference = read_volume(clean)
    assert np.array_equal(volume.data, reference.data) and np.array_equal(volume.affine, reference.affine)
    warning = volume.acquisition.extra["duplicate_images"]
    assert "4 pixel-identical copies" in warning and "r_0001.dcm" in warning
    assert warning in caplog.text


def test_a_vfa_fit_no_longer_takes_the_two_copies_as_two_flip_angles(tmp_path, capsys):
    """Before: `t1map FOLDER --flip-angles 2 5` fitted the two copies as two flip angles (T1 3.3 s, silent)."""
    data = frames(*SHAPE, nt=1)
    twice = tmp_path / "twice"
    _sent_twice(twice, data, renumber=True)
    out = tmp_path / "out"
    assert_refused(["t1map", str(twice), "--flip-angles", "2", "5", "--tr", "0.005", "--out", str(out), "--quiet"],
                   capsys, twice, out, ("3D",))


def test_copies_that_differ_in_pixels_are_not_merged(tmp_path):
    """Two images of one slice with one header but other pixels are no copies: nothing is dropped."""
    data = frames(*SHAPE, nt=1)
    folder = tmp_path / "two_recons"
    write_images(folder, data, tpi=False, slice_dt=0.0)

    def again(tags, t, k):
        tags["0020|0013"] = str(int(tags["0020|0013"]) + 100)
    write_images(folder, data + 1, tpi=False, slice_dt=0.0, uid_tag="r", extra=again)
    volume = read_volume(folder)
    assert volume.shape == SHAPE + (2,) and "duplicate_images" not in volume.acquisition.extra

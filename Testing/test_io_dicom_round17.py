"""DICOM reader, round 17 (outside audit D1-D8): series that used to be read wrongly in silence, with a
traceback or with a misleading line, each written here with SimpleITK/GDCM (no pydicom).

Every case is now either read right (geometry, frame order, frame times) or refused with one line that
says what is wrong and how to fix it: exit status 2 on the command line, no traceback, nothing written,
the DICOM folder byte-identical.
"""

from __future__ import annotations

import itertools
import locale
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from bad_input_helpers import assert_refused, dsc_signal, error_lines, run_subprocess, tree_hashes

from BBBAnomalyLib import InputError
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.io import read_dicom_series, read_volume, write_volume

UID = "1.2.826.0.1.3680043.2.1125.17"
AXIAL = (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
OBLIQUE = (np.array([np.cos(0.3), np.sin(0.3), 0.0]),
           np.array([-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)]))
ORIGIN = np.array([-100.5, -80.25, 30.0])


@pytest.fixture(autouse=True)
def _keep_locale():
    """GDCM's DICOM writer leaves the process in the C locale; later tests decode child output with it."""
    before = locale.setlocale(locale.LC_ALL, None)
    yield
    locale.setlocale(locale.LC_ALL, before)


def tm(seconds: float, fraction: bool = True) -> str:
    h, rem = divmod(seconds % 86400, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}" if fraction else f"{int(h):02d}{int(m):02d}{int(s):02d}"


def frames(nx=6, ny=5, nz=3, nt=4) -> np.ndarray:
    """(x, y, z, t) int16 where every (slice, frame) image is different: frame order errors show."""
    x = np.arange(nx * ny).reshape(nx, ny, 1, 1)
    return (x + 100 * np.arange(nz).reshape(1, 1, nz, 1) + 1000 * np.arange(nt).reshape(1, 1, 1, nt)).astype(np.int16)


def write_images(folder, data, *, axes=AXIAL, spacing=(2.0, 2.0), dz=3.0, step=None, frame_interval=1.5,
                 slice_dt=0.3, tpi=True, series="1", image_type="ORIGINAL\\PRIMARY\\M\\ND", uid_tag="a",
                 names=None, instance="continuous", trigger=None, fraction=True, ipp_decimals=6,
                 shift_per_frame=None, extra=None, compressor=None):
    """One file per (slice, frame) of ``data`` (x, y, z, t); returns the paths.

    step: LPS vector between slices (default: the normal * dz; gantry tilt when not along the normal).
    names: None (``<uid_tag>_<n>.dcm``) or a function n -> file name. trigger: None, 'per_slice' (slice
    offset in ms, the same in every frame, as GE writes it). extra: function (tags, t, k) to change tags.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, col = axes
    normal = np.cross(row, col)
    step = normal * dz if step is None else np.asarray(step, float)
    nz, nt = data.shape[2], data.shape[3]
    order = list(range(0, nz, 2)) + list(range(1, nz, 2))  # interleaved acquisition
    paths, n = [], 0
    for t in range(nt):
        for i, k in enumerate(order):
            n += 1
            img = sitk.GetImageFromArray(np.ascontiguousarray(data[:, :, k, t].T)[None])
            img.SetSpacing((spacing[0], spacing[1], 1.0))
            pos = ORIGIN + k * step + (np.zeros(3) if shift_per_frame is None else t * np.asarray(shift_per_frame))
            tags = {
                "0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|103e": "perf",
                "0008|0008": image_type, "0020|000d": f"{UID}.1", "0020|000e": f"{UID}.2.{series}",
                "0008|0018": f"{UID}.3.{series}.{uid_tag}.{n}",
                "0020|0013": str(n if instance == "continuous" else i + 1),
                "0020|0032": "\\".join(f"{v:.{ipp_decimals}f}" for v in pos),
                "0020|0037": "\\".join(f"{v:.8f}" for v in np.r_[row, col]),
                "0008|0032": tm(36000.0 + t * frame_interval + i * slice_dt, fraction),
                "0018|0050": f"{np.linalg.norm(step):g}", "0018|0081": "30", "0018|0080": "1500",
                "0018|1314": "90", "0018|0087": "3",
            }
            if tpi:
                tags["0020|0100"] = str(t + 1)
            if trigger == "per_slice":
                tags["0018|1060"] = f"{i * slice_dt * 1000:g}"
            if extra is not None:
                extra(tags, t, k)
            for key, value in tags.items():
                img.SetMetaData(key, value)
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            if compressor:
                writer.SetUseCompression(True)
                writer.SetCompressor(compressor)
            path = folder / (names(n) if names else f"{uid_tag}_{n:04d}.dcm")
            writer.SetFileName(str(path))
            writer.Execute(img)
            paths.append(path)
    return paths


def expected_affine(axes=AXIAL, spacing=(2.0, 2.0), step=None, dz=3.0):
    row, col = axes
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * spacing[0], col * spacing[1]
    lps[:3, 2] = np.cross(row, col) * dz if step is None else step
    lps[:3, 3] = ORIGIN
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def refused_by_cli(folder, tmp_path, capsys, *keywords) -> str:
    """`bbbanomaly dsc FOLDER`: exit 2, one line holding the key words, nothing written, the folder unchanged."""
    out = tmp_path / "out"
    line = assert_refused(["dsc", str(folder), "--te", "0.03", "--out", str(out), "--quiet"], capsys, folder, out,
                          keywords)
    assert "no frame times" not in line and "Traceback" not in line
    return line


# --- D1 -----------------------------------------------------------------------------------------------
def test_d1_siemens_mosaic_is_refused_with_dcm2niix_as_the_fix(tmp_path, capsys):
    """One file per time point, all slices tiled in one image at one position: it was read as one 2D slice
    of tiles (and dsc wrote maps). Detected from ImageType MOSAIC and from Siemens' (0019,100A)."""
    tiles = np.zeros((12, 12, 1, 12), np.int16)
    tiles[:6, :6], tiles[6:, :6], tiles[:6, 6:], tiles[6:, 6:] = 100, 200, 300, 400  # 4 slices of 6 x 6
    mosaic = tmp_path / "mosaic"

    def siemens(tags, t, k):
        tags["0019|0010"], tags["0019|100a"] = "SIEMENS MR HEADER", "4"

    write_images(mosaic, tiles, tpi=False, image_type="ORIGINAL\\PRIMARY\\M\\ND\\NORM\\MOSAIC", extra=siemens)
    with pytest.raises(InputError, match=r"(?i)mosaic.*dcm2niix"):
        read_dicom_series(mosaic)
    refused_by_cli(mosaic, tmp_path, capsys, "mosaic", "dcm2niix")
    # The private tag alone (an exporter that dropped MOSAIC from ImageType) is enough.
    private_only = tmp_path / "private_only"
    write_images(private_only, tiles[..., :2], tpi=False, extra=siemens)
    with pytest.raises(InputError, match=r"(?i)mosaic.*dcm2niix"):
        read_dicom_series(private_only)


# --- D2 -----------------------------------------------------------------------------------------------
def test_d2_exact_copies_are_ignored_and_other_extra_images_are_refused(tmp_path, capsys):
    data = frames()
    clean = tmp_path / "clean"
    write_images(clean, data)
    reference = read_dicom_series(clean)
    # (a) every file copied once ("IM (1).dcm", an export done twice): the same SOPInstanceUIDs, no effect;
    # a 3D series copied twice stays 3D.
    copies = tmp_path / "copies"
    shutil.copytree(clean, copies)
    for p in sorted(copies.glob("*.dcm")):
        shutil.copy(p, p.with_name(p.stem + " (1).dcm"))
    vol = read_dicom_series(copies)
    assert np.array_equal(vol.data, reference.data) and np.allclose(vol.times, reference.times)
    assert np.allclose(vol.affine, reference.affine)
    three_d = tmp_path / "three_d"
    write_images(three_d, data[..., :1], tpi=False)
    for p in sorted(three_d.glob("*.dcm")):
        shutil.copy(p, p.with_name(p.stem + " (1).dcm"))
    assert read_volume(three_d).data.shape == (6, 5, 3)
    # (b) a derived volume (scanner mean) at the same positions, same series, frame 1's time, no TPI
    derived = tmp_path / "derived"
    shutil.copytree(clean, derived)
    write_images(derived, data[..., :1], image_type="DERIVED\\SECONDARY\\MEAN", uid_tag="d", tpi=False)
    line = refused_by_cli(derived, tmp_path, capsys, "DERIVED", "d_0001.dcm")
    assert "move" in line or "remove" in line
    # (c) magnitude and phase images in one series (Philips)
    phase = tmp_path / "phase"
    shutil.copytree(clean, phase)
    write_images(phase, data, image_type="ORIGINAL\\PRIMARY\\P\\ND", uid_tag="p")
    refused_by_cli(phase, tmp_path, capsys, "phase", "ORIGINAL\\PRIMARY\\P\\ND")
    # (d) the series sent twice with new SOPInstanceUIDs: refused in round 17 (one frame would hold each slice
    # twice); since session 23 the pixel-identical copies are read once with a warning
    # (test_io_dicom_resent.py), and a second transmission with other pixels is refused in one line.
    resent = tmp_path / "resent"
    shutil.copytree(clean, resent)
    write_images(resent, data, uid_tag="r")
    vol = read_dicom_series(resent)
    assert np.array_equal(vol.data, reference.data) and "r_0001.dcm" in vol.acquisition.extra["duplicate_images"]
    other_pixels = tmp_path / "other_pixels"
    shutil.copytree(clean, other_pixels)
    write_images(other_pixels, data + 1, uid_tag="r")
    refused_by_cli(other_pixels, tmp_path, capsys, "twice", "pixels differ", "r_0001.dcm")
    resent_no_tpi = tmp_path / "resent_no_tpi"
    write_images(resent_no_tpi, data, tpi=False)
    write_images(resent_no_tpi, data + 1, uid_tag="r", tpi=False)
    refused_by_cli(resent_no_tpi, tmp_path, capsys, "twice", "pixels differ")


# --- D3 -----------------------------------------------------------------------------------------------
def test_d3_whole_second_acquisition_times_are_not_used_as_exact(tmp_path, capsys):
    """HHMMSS without a fraction, frames 1.5 s apart: the clock reads 0, 1, 3, 4, 6, ... s. Not used as
    frame times; the command asks for --frame-interval (RepetitionTime 1.5 s fits) and works with it."""
    folder = tmp_path / "whole_seconds"
    write_images(folder, frames(nx=4, ny=4, nz=2, nt=12), fraction=False, slice_dt=0.0)
    vol = read_dicom_series(folder)
    assert vol.times is None and "whole-second" in vol.acquisition.extra["frame_timing"]
    line = refused_by_cli(folder, tmp_path, capsys, "whole-second", "--frame-interval", "RepetitionTime 1.5 s")
    assert "resampled" not in line
    assert np.allclose(read_volume(folder, frame_interval=1.5).times, np.arange(12) * 1.5)
    # A whole-second clock whose frames are a whole number of seconds apart is exact: kept.
    even = tmp_path / "two_seconds"
    write_images(even, frames(nx=4, ny=4, nz=2, nt=5), fraction=False, frame_interval=2.0, slice_dt=0.0)
    assert np.allclose(read_dicom_series(even).times, [0, 2, 4, 6, 8])


# --- D4 -----------------------------------------------------------------------------------------------
def test_d4_corrupt_pixel_data_is_one_line_naming_the_file(tmp_path):
    folder = tmp_path / "j2k"
    paths = write_images(folder, frames(nx=32, ny=32, nz=2, nt=3) * 7, compressor="JPEG2000")
    bad = paths[3]
    raw = bytearray(bad.read_bytes())
    start = raw.find(b"\xff\x4f\xff\x51")  # the JPEG 2000 codestream (SOC, SIZ)
    assert start > 0
    raw[start + 64:len(raw) - 12] = np.random.default_rng(0).integers(0, 256, len(raw) - 12 - start - 64,
                                                                       dtype=np.uint8).tobytes()
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=rf"{bad.name}.*pixel data.*could not be decoded"):
        read_dicom_series(folder)
    # A user's terminal: one line on stderr (no traceback, no codec chatter), exit 2, nothing written.
    before = tree_hashes(folder)
    proc = run_subprocess(["dsc", str(folder), "--te", "0.03", "--out", str(tmp_path / "out")], tmp_path)
    lines = error_lines(proc.stderr)  # (the progress line "[  0%] reading ..." aside)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert bad.name in lines[0] and "could not be decoded" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and tree_hashes(folder) == before


# --- D5 -----------------------------------------------------------------------------------------------
def test_d5_per_slice_trigger_time_does_not_scramble_frames(tmp_path):
    """GE: TriggerTime = the slice's offset in the TR (the same in every frame), InstanceNumber restarting
    every frame, files named by UID (no TPI). Frames come from AcquisitionTime."""
    data = frames(nz=5, nt=6)
    folder = tmp_path / "ge"
    names = np.random.default_rng(7).permutation(30)
    write_images(folder, data, tpi=False, trigger="per_slice", instance="restart",
                 names=lambda n: f"1.2.840.113619.{names[n - 1] * 7919 % 100003}.dcm")
    vol = read_dicom_series(folder)
    assert np.array_equal(vol.data, data)
    assert np.allclose(vol.times, np.arange(6) * 1.5)
    assert vol.acquisition.extra["frame_grouping"] == "AcquisitionTime"
    assert vol.acquisition.extra["frame_timing"] == "AcquisitionTime"
    # No key orders the frames (no TPI, one AcquisitionTime for all, InstanceNumber restarting): refused
    # instead of frames taken in file order.
    untimed = tmp_path / "untimed"
    write_images(untimed, data, tpi=False, instance="restart", names=lambda n: f"{names[n - 1]:05d}.dcm",
                 extra=lambda tags, t, k: tags.update({"0008|0032": "100000.000000"}))
    with pytest.raises(InputError, match="cannot be told apart"):
        read_dicom_series(untimed)


# --- D6 -----------------------------------------------------------------------------------------------
def _itk_worst_offset(path, volume) -> float:
    img = sitk.ReadImage(str(path))
    worst = 0.0
    for ijk in itertools.product(*[(0, n - 1) for n in volume.spatial_shape]):
        lps = np.array(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk]))
        worst = max(worst, np.linalg.norm(np.r_[-lps[0], -lps[1], lps[2]] - (volume.affine @ np.r_[ijk, 1])[:3]))
    return worst


def test_d6_a_gantry_tilted_grid_is_not_written_as_nifti(tmp_path, capsys):
    """A 15 degree tilt: the reader's affine is sheared (right). NIfTI's qform cannot hold a shear and
    ITK/Slicer read such a file several mm off, so NIfTI is refused with one line pointing to NRRD."""
    tilt = np.deg2rad(15)
    axes = (np.array([1.0, 0, 0]), np.array([0, np.cos(tilt), np.sin(tilt)]))
    signal = np.round(dsc_signal(n_frames=20)[0] * 10).astype(np.int16)  # (10, 10, 3, 20)
    folder = tmp_path / "tilted"
    write_images(folder, signal, axes=axes, step=(0, 0, 3.0), tpi=True)
    vol = read_volume(folder)
    assert np.allclose(vol.affine, expected_affine(axes, step=np.array([0, 0, 3.0])), atol=1e-5)
    with pytest.raises(InputError, match=r"sheared.*--format nrrd"):
        write_volume(vol, tmp_path / "tilted.nii.gz")
    assert not (tmp_path / "tilted.nii.gz").exists()
    nrrd = write_volume(Volume(vol.data[..., 0], vol.affine), tmp_path / "tilted.nrrd")
    assert _itk_worst_offset(nrrd, vol) < 1e-3  # NRRD holds the tilt exactly
    # An untilted oblique grid is still written as NIfTI and read back by ITK where it is.
    oblique = Volume(vol.data[..., 0], expected_affine(OBLIQUE))
    assert _itk_worst_offset(write_volume(oblique, tmp_path / "oblique.nii.gz"), oblique) < 1e-3
    # The command line: refused (nothing written) with the default NIfTI output, written with --format nrrd.
    brain, aif = np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)
    brain[1:-1, 1:-1], aif[4, 4] = 1, 1
    masks = tmp_path / "masks"
    write_volume(Volume(brain, vol.affine), masks / "brain.nrrd")
    write_volume(Volume(aif, vol.affine), masks / "aif.nrrd")
    args = ["dsc", str(folder), "--te", "0.03", "--mask", str(masks / "brain.nrrd"), "--aif-mask",
            str(masks / "aif.nrrd"), "--quiet", "--out"]
    assert_refused(args + [str(tmp_path / "maps")], capsys, folder, tmp_path / "maps", ("sheared", "--format nrrd"))
    assert main(args + [str(tmp_path / "maps_nrrd"), "--format", "nrrd"]) == 0
    cbv = read_volume(tmp_path / "maps_nrrd" / "cbv.nrrd")
    assert np.allclose(cbv.affine, vol.affine, atol=1e-6)


# --- D7 -----------------------------------------------------------------------------------------------
def test_d7_no_itk_missing_slices_warning_on_stderr(tmp_path, capfd):
    """IPP written with 3 decimals on an oblique series: accepted by the reader's own checks; ITK's
    'Non uniform sampling or missing slices detected' warning (3 lines per frame) no longer reaches stderr."""
    folder = tmp_path / "rounded"
    data = frames(nz=5, nt=3)
    write_images(folder, data, axes=OBLIQUE, dz=3.3, ipp_decimals=3)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    capfd.readouterr()
    vol = read_dicom_series(folder)
    err = capfd.readouterr().err
    assert np.array_equal(vol.data, data)
    assert "missing slices" not in err and err.strip() == "", err
    assert sitk.ProcessObject.GetGlobalWarningDisplay() == shown  # ITK's own setting is put back


# --- D8 -----------------------------------------------------------------------------------------------
def test_d8_refusals_name_the_cause_an_example_file_and_a_fix(tmp_path, capsys):
    data = frames()
    # One file copied once: a duplicate, not a missing slice; it is simply ignored.
    one_copy = tmp_path / "one_copy"
    paths = write_images(one_copy, data)
    shutil.copy(paths[5], one_copy / "a_0006 (1).dcm")
    assert np.array_equal(read_dicom_series(one_copy).data, data)
    # Several series: the command line has no series option, so the line says what to do with folders.
    several = tmp_path / "several"
    write_images(several, data)
    write_images(several, np.zeros((8, 8, 1, 1), np.int16), series="9", uid_tag="loc",
                 image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    line = refused_by_cli(several, tmp_path, capsys, "2 DICOM series", "folder of its own", "loc_0001.dcm")
    assert "series_uid" in line  # still named for Python callers
    # A localizer of another size in the same series: the odd file is named and the fix given.
    sizes = tmp_path / "sizes"
    write_images(sizes, data)
    write_images(sizes, np.zeros((8, 8, 1, 1), np.int16), uid_tag="loc", tpi=False)
    refused_by_cli(sizes, tmp_path, capsys, "image sizes", "loc_0001.dcm", "8x8", "move")
    # ... and one of another orientation (same size).
    sagittal = tmp_path / "sagittal"
    write_images(sagittal, data)
    write_images(sagittal, data[..., :1, :1], uid_tag="sag", tpi=False,
                 axes=(np.array([0, 1.0, 0]), np.array([0, 0, -1.0])))
    refused_by_cli(sagittal, tmp_path, capsys, "orientation", "sag_0001.dcm", "move")
    # PACE-like prospective motion correction: each frame 0.05 mm further along the normal. One short
    # line on the cause (frames moved), not a list of every slice step and "a slice may be missing".
    pace = tmp_path / "pace"
    write_images(pace, frames(nz=5, nt=12), shift_per_frame=(0, 0, 0.05))
    line = refused_by_cli(pace, tmp_path, capsys, "differ between frames", "0.55 mm")
    assert "missing" not in line and len(line) < 400
    # A non-uniform slice spacing is summarised, never a list of hundreds of numbers.
    gap = tmp_path / "gap"
    write_images(gap, frames(nz=120, nt=1), tpi=False, extra=lambda tags, t, k: tags.update(
        {"0020|0032": "\\".join(f"{v:.6f}" for v in ORIGIN + (k * 3.0 + (3.0 if k >= 60 else 0)) * np.r_[0, 0, 1])}))
    with pytest.raises(InputError, match="not uniform") as info:
        read_dicom_series(gap)
    assert len(str(info.value)) < 400, str(info.value)
    # One derived reformatted image at a position no frame has: named as not belonging, not "missing".
    mpr = tmp_path / "mpr"
    write_images(mpr, data)
    write_images(mpr, data[..., :1, :1], uid_tag="mpr", tpi=False, extra=lambda tags, t, k: tags.update(
        {"0020|0032": "\\".join(f"{v:.6f}" for v in ORIGIN + np.r_[0, 0, 1.5])}))
    line = refused_by_cli(mpr, tmp_path, capsys, "mpr_0001.dcm")
    assert "miss" not in line

"""NIfTI / NRRD / times / mask I/O: geometry, data, dtype, frame times and metadata survive, errors are clear."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from BBBAnomalyLib import Acquisition, InputError, Volume
from BBBAnomalyLib.io import read_mask, read_times, read_volume, write_volume


def oblique_affine() -> np.ndarray:
    """Rotated about two axes, anisotropic voxels (0.9 x 1.1 x 2.5 mm), realistic offsets."""
    a, b = np.deg2rad(20), np.deg2rad(12)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rx @ rz @ np.diag([0.9, 1.1, 2.5])
    aff[:3, 3] = [-120.3, 95.7, -40.25]
    return aff


TIMES = np.array([0.0, 1.5, 3.0, 4.5, 7.25, 11.0])  # non-uniform on purpose
ACQ = dict(echo_time=0.03, repetition_time=1.55, flip_angle=90.0, field_strength=3.0)


def dynamic(times=TIMES, dtype=np.float32) -> Volume:
    data = np.random.default_rng(1).normal(100, 10, (5, 4, 3, len(times))).astype(dtype)
    return Volume(data, oblique_affine(), times, Acquisition(**ACQ, echo_times=(0.03, 0.08), extra={"site": "A"}))


def assert_acquisition(acq: Acquisition):
    for key, value in ACQ.items():
        assert getattr(acq, key) == pytest.approx(value, abs=1e-9), key


# --- NIfTI ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dce.nii.gz", "dce.nii"])
def test_nifti_4d_roundtrip_keeps_geometry_times_and_metadata(tmp_path, name):
    vol = dynamic()
    write_volume(vol, tmp_path / name)
    back = read_volume(tmp_path / name)
    # NIfTI-1 stores the affine as float32: the round trip returns exactly that (rotation,
    # anisotropic zooms, obliquity, LPS/RAS sense), which is on the same grid as the original.
    assert np.allclose(back.affine, vol.affine.astype(np.float32), atol=1e-6, rtol=0)
    assert back.same_grid(vol)
    assert back.data.dtype == np.float32 and np.array_equal(back.data, vol.data)
    assert np.allclose(back.times, TIMES, atol=1e-6)
    assert_acquisition(back.acquisition)
    assert back.acquisition.echo_times == (0.03, 0.08) and back.acquisition.extra == {"site": "A"}
    side = json.loads((tmp_path / "dce.json").read_text(encoding="utf-8"))
    assert side["EchoTime"] == 0.03 and side["RepetitionTime"] == 1.55 and side["VolumeTiming"] == TIMES.tolist()
    hdr = nib.load(str(tmp_path / name)).header
    assert hdr.get_xyzt_units() == ("mm", "sec") and hdr.get_zooms()[3] > 0


def test_nifti_affine_matches_itk_reading_of_same_file(tmp_path):
    """Independent check of the orientation convention: ITK reads our NIfTI to the same LPS geometry."""
    vol = dynamic()
    write_volume(vol.frame(0), tmp_path / "f.nii.gz")
    img = sitk.ReadImage(str(tmp_path / "f.nii.gz"))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    assert np.allclose(np.asarray(img.GetDirection()).reshape(3, 3) * img.GetSpacing(), lps[:3, :3], atol=1e-5)
    assert np.allclose(img.GetOrigin(), lps[:3, 3], atol=1e-4)


def test_nifti_uniform_times_written_to_header_and_read_without_sidecar(tmp_path):
    vol = dynamic(times=np.arange(6) * 1.5 + 2.0)
    write_volume(vol, tmp_path / "u.nii.gz")
    (tmp_path / "u.json").unlink()  # the header alone must carry uniform timing
    back = read_volume(tmp_path / "u.nii.gz")
    assert np.allclose(back.times, np.arange(6) * 1.5 + 2.0, atol=1e-6)


def test_nifti_header_ms_units_and_unknown_placeholder(tmp_path):
    img = nib.Nifti1Image(np.zeros((2, 2, 2, 4), np.float32), np.eye(4))
    img.header.set_xyzt_units("mm", "msec")
    img.header.set_zooms((1, 1, 1, 1500))
    nib.save(img, str(tmp_path / "ms.nii.gz"))
    assert np.allclose(read_volume(tmp_path / "ms.nii.gz").times, [0, 1.5, 3.0, 4.5])
    # nibabel's default (unit unknown, pixdim[4] = 1) is not a real interval: times stay unknown
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 4), np.float32), np.eye(4)), str(tmp_path / "unk.nii.gz"))
    assert read_volume(tmp_path / "unk.nii.gz").times is None
    assert np.allclose(read_volume(tmp_path / "unk.nii.gz", frame_interval=2.0).times, [0, 2, 4, 6])


def test_nifti_bval_bvec_written_and_read(tmp_path):
    bvals = np.array([0.0, 1000.0, 1000.0, 2000.0])
    bvecs = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    vol = Volume(np.ones((3, 3, 3, 4), np.float32), oblique_affine(), None, Acquisition(bvals=bvals, bvecs=bvecs))
    write_volume(vol, tmp_path / "dwi.nii.gz")
    assert np.loadtxt(tmp_path / "dwi.bvec").shape == (3, 4)  # FSL layout
    back = read_volume(tmp_path / "dwi.nii.gz")
    assert np.array_equal(back.acquisition.bvals, bvals) and np.array_equal(back.acquisition.bvecs, bvecs)


def test_rewrite_removes_stale_sidecar(tmp_path):
    write_volume(dynamic(), tmp_path / "m.nii.gz")
    write_volume(Volume(np.zeros((5, 4, 3), np.float32), oblique_affine()), tmp_path / "m.nii.gz")
    assert not (tmp_path / "m.json").exists()
    assert read_volume(tmp_path / "m.nii.gz").acquisition.echo_time is None


# --- dtypes (both formats) --------------------------------------------------------------
@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("dtype, stored", [(np.float64, np.float32), (np.int16, np.int16), (np.uint8, np.uint8),
                                           (bool, np.uint8), (np.int64, np.int32)])
def test_dtype_policy(tmp_path, ext, dtype, stored):
    data = (np.arange(60).reshape(5, 4, 3) % 3).astype(dtype)
    back = read_volume(write_volume(Volume(data, oblique_affine()), tmp_path / "sub" / ("x" + ext)))
    assert back.data.dtype == stored and np.array_equal(back.data, data.astype(stored))


# --- NRRD -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dce.nrrd", "dce.seq.nrrd", "dce.nhdr"])
@pytest.mark.parametrize("times", [TIMES, np.arange(6) * 2.0])
def test_nrrd_4d_roundtrip_exact(tmp_path, name, times):
    vol = dynamic(times=times)
    write_volume(vol, tmp_path / name)
    back = read_volume(tmp_path / name)
    assert np.allclose(back.affine, vol.affine, atol=1e-6, rtol=0)
    assert back.data.dtype == np.float32 and np.array_equal(back.data, vol.data)
    assert np.allclose(back.times, times, atol=1e-6)
    assert_acquisition(back.acquisition)
    assert back.acquisition.extra == {"site": "A"}


def test_nrrd_header_has_slicer_fields(tmp_path):
    write_volume(dynamic(), tmp_path / "s.seq.nrrd")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp_path / "s.seq.nrrd"))
    reader.ReadImageInformation()
    assert reader.GetNumberOfComponents() == 6  # frames are the (first-axis) components
    assert [float(v) for v in reader.GetMetaData("axis 0 index values").split()] == TIMES.tolist()
    assert reader.GetMetaData("MultiVolume.DICOM.EchoTime") == "30.0"  # Slicer's key, DICOM units (ms)
    assert float(reader.GetMetaData("MultiVolume.DICOM.RepetitionTime")) == pytest.approx(1550)


def test_nrrd_lps_header_maps_to_ras_affine(tmp_path):
    """A NRRD written by ITK in LPS: origin (1, 2, 3), axes along +L, +P, +S -> RAS negates x and y."""
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    img.SetSpacing((1.5, 2.0, 3.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "lps.nrrd"))
    back = read_volume(tmp_path / "lps.nrrd")
    assert back.data.shape == (5, 4, 3)
    assert np.allclose(back.affine, [[-1.5, 0, 0, -1], [0, -2, 0, -2], [0, 0, 3, 3], [0, 0, 0, 1]])


def _slicer_vector_nrrd(path, n, meta):
    """A Slicer-style sequence/MultiVolume file: frames as vector components, header fields set."""
    img = sitk.GetImageFromArray(np.arange(3 * 4 * 5 * n, dtype=np.int16).reshape(3, 4, 5, n), isVector=True)
    for key, value in meta.items():
        img.SetMetaData(key, value)
    sitk.WriteImage(img, str(path))


def test_slicer_sequence_fields_give_times(tmp_path):
    _slicer_vector_nrrd(tmp_path / "seq.seq.nrrd", 4, {
        "DataNodeClassName": "vtkMRMLScalarVolumeNode", "axis 0 index type": "numeric",
        "axis 0 index values": "0 2.5 5 9.5"})
    back = read_volume(tmp_path / "seq.seq.nrrd")
    assert back.data.shape == (5, 4, 3, 4)
    assert np.array_equal(back.times, [0, 2.5, 5, 9.5])
    assert back.data[1, 2, 0, 3] == np.arange(240).reshape(3, 4, 5, 4)[0, 2, 1, 3]  # frame = component


def test_multivolume_fields_give_times_and_acquisition(tmp_path):
    _slicer_vector_nrrd(tmp_path / "mv.nrrd", 3, {
        "MultiVolume.FrameLabels": "0,1500,3000", "MultiVolume.FrameIdentifyingDICOMTagName": "TriggerTime",
        "MultiVolume.FrameIdentifyingDICOMTagUnits": "ms", "MultiVolume.NumberOfFrames": "3",
        "MultiVolume.DICOM.EchoTime": "25", "MultiVolume.DICOM.FlipAngle": "60"})
    back = read_volume(tmp_path / "mv.nrrd")
    assert np.allclose(back.times, [0, 1.5, 3.0])
    assert back.acquisition.echo_time == pytest.approx(0.025) and back.acquisition.flip_angle == 60


def test_multivolume_by_flip_angle_is_not_time(tmp_path):
    _slicer_vector_nrrd(tmp_path / "vfa.nrrd", 3, {"MultiVolume.FrameLabels": "2,10,15",
                                                   "MultiVolume.FrameIdentifyingDICOMTagName": "FlipAngle",
                                                   "MultiVolume.FrameIdentifyingDICOMTagUnits": "degrees"})
    back = read_volume(tmp_path / "vfa.nrrd")
    assert back.times is None and back.acquisition.extra["frame_labels"]["values"] == [2, 10, 15]


def _raw_nrrd(path, header_lines, data):
    path.write_bytes(("NRRD0004\n" + "\n".join(header_lines) + "\n\n").encode() + data.astype("<i2").tobytes())


def test_current_slicer_layout_list_axis_last_with_ms_units(tmp_path):
    """Slicer >= 5.7 writes the list axis last with a units field; values are URL-encoded text."""
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # file order (t, z, y, x)
    _raw_nrrd(tmp_path / "new.seq.nrrd", [
        "type: short", "dimension: 4", "space: left-posterior-superior", "sizes: 5 4 3 2",
        "space directions: (1.2,0,0) (0,1.2,0) (0,0,2) none", "kinds: domain domain domain list",
        'labels: "" "" "" "time"', 'units: "" "" "" "ms"', "endian: little", "encoding: raw",
        "space origin: (-62.2,-68,16)", "axis 3 index type:=numeric", "axis 3 index values:=0 1500"], data)
    back = read_volume(tmp_path / "new.seq.nrrd")
    assert np.array_equal(back.times, [0, 1.5])
    assert np.array_equal(back.data, data.transpose(3, 2, 1, 0))
    assert np.allclose(back.affine[:3, 3], [62.2, 68, 16])


def test_sequence_of_frame_numbers_has_unknown_times(tmp_path):
    data = np.zeros((3, 2, 2, 2))
    _raw_nrrd(tmp_path / "frames.seq.nrrd", [
        "type: short", "dimension: 4", "space: left-posterior-superior", "sizes: 3 2 2 2",
        "space directions: none (1,0,0) (0,1,0) (0,0,1)", "kinds: list domain domain domain",
        'labels: "frame" "" "" ""', "endian: little", "encoding: raw", "space origin: (0,0,0)",
        "axis 0 index type:=numeric", "axis 0 index values:=0 1 2"], data)
    assert read_volume(tmp_path / "frames.seq.nrrd").times is None
    assert np.array_equal(read_volume(tmp_path / "frames.seq.nrrd", frame_interval=4.0).times, [0, 4, 8])


def test_slicer_opens_our_sequence_and_we_read_slicers(tmp_path):
    slicer = pytest.importorskip("slicer")
    vtk = pytest.importorskip("vtk")
    vol = dynamic()
    write_volume(vol, tmp_path / "ours.seq.nrrd")
    scene = slicer.vtkMRMLScene()
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(tmp_path / "ours.seq.nrrd"))
    assert storage.ReadData(seq)
    assert [float(seq.GetNthIndexValue(i)) for i in range(seq.GetNumberOfDataNodes())] == TIMES.tolist()
    m = vtk.vtkMatrix4x4()
    seq.GetNthDataNode(0).GetIJKToRASMatrix(m)
    assert np.allclose([[m.GetElement(i, j) for j in range(4)] for i in range(4)], vol.affine, atol=1e-6)
    # ... and Slicer writing it back (its current layout) reads to the same volume
    storage.SetFileName(str(tmp_path / "slicer.seq.nrrd"))
    assert storage.WriteData(seq)
    back = read_volume(tmp_path / "slicer.seq.nrrd")
    assert np.allclose(back.affine, vol.affine, atol=1e-6) and np.array_equal(back.data, vol.data)
    assert np.allclose(back.times, TIMES)


# --- times and overrides ----------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("time\n0\n1.5\n3\n", [0, 1.5, 3]),
    ("0, 2, 4.5\n", [0, 2, 4.5]),
    ("0 2\t4.5\n# trailing comment\n", [0, 2, 4.5]),
    ("time_ms\n0\n1500\n", [0, 1.5]),
    ("frame,time\n0,0\n1,2.5\n2,5\n", [0, 2.5, 5]),
])
def test_read_times_formats(tmp_path, text, expected):
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    assert np.allclose(read_times(tmp_path / "t.txt"), expected)


@pytest.mark.parametrize("text, match", [("", "empty"), ("time\n0\n1.5\nabc\n", "line 4.*'abc'"),
                                         ("0\n2\n1\n", "increase"), ("time\n", "no times")])
def test_read_times_errors(tmp_path, text, match):
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=match):
        read_times(tmp_path / "t.txt")


def test_times_override_and_mismatch(tmp_path):
    write_volume(dynamic(), tmp_path / "d.nrrd")
    assert np.array_equal(read_volume(tmp_path / "d.nrrd", times=[0, 1, 2, 3, 4, 5]).times, [0, 1, 2, 3, 4, 5])
    assert np.array_equal(read_volume(tmp_path / "d.nrrd", frame_interval=2).times, np.arange(6) * 2.0)
    with pytest.raises(InputError, match="5 frame times given but .* 6 frames"):
        read_volume(tmp_path / "d.nrrd", times=[0, 1, 2, 3, 4])
    with pytest.raises(InputError, match="not both"):
        read_volume(tmp_path / "d.nrrd", times=np.arange(6), frame_interval=1.0)
    with pytest.raises(InputError, match="positive"):
        read_volume(tmp_path / "d.nrrd", frame_interval=0)
    write_volume(dynamic().frame(0), tmp_path / "3d.nrrd")
    with pytest.raises(InputError, match="3D volume"):
        read_volume(tmp_path / "3d.nrrd", frame_interval=1.0)


# --- paths and masks --------------------------------------------------------------------
def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.img").write_bytes(b"0")
    with pytest.raises(InputError, match=r"cannot tell the format.*\.nii\.gz"):
        read_volume(tmp_path / "x.img")
    with pytest.raises(InputError, match="cannot tell the format"):
        write_volume(dynamic(), tmp_path / "out.mat")


def test_failed_write_leaves_nothing(tmp_path):
    vol = Volume(np.zeros((2, 2, 2), np.complex64), np.eye(4))
    with pytest.raises(InputError, match="complex64"):
        write_volume(vol, tmp_path / "c.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_read_mask_accepts_labels_on_grid(tmp_path):
    ref = dynamic()
    labels = np.zeros(ref.spatial_shape, np.int16)
    labels[1:3, 1, 0] = 2
    write_volume(Volume(labels[..., None], ref.affine), tmp_path / "lab.nii.gz")  # (x, y, z, 1) is fine
    mask = read_mask(tmp_path / "lab.nii.gz", ref, "tumor")
    assert mask.dtype == bool and mask.sum() == 2 and mask[1, 1, 0]
    assert read_mask(labels, ref, "tumor").sum() == 2


def test_read_mask_errors(tmp_path):
    ref = dynamic()
    four_d = np.ones(ref.spatial_shape + (2,), np.uint8)
    write_volume(Volume(four_d, ref.affine), tmp_path / "m4.nii.gz")
    with pytest.raises(InputError, match="mask 'aif-mask' .* is 4D"):
        read_mask(tmp_path / "m4.nii.gz", ref, "aif-mask")
    shifted = ref.affine.copy()
    shifted[0, 3] += 2.0
    write_volume(Volume(np.ones((5, 4, 3), np.uint8), shifted), tmp_path / "off.nrrd")
    with pytest.raises(InputError, match=r"not on the input's voxel grid \(same shape 5x4x3 .* origin 2 mm apart\)"
                       r".*Resample.*SimpleITK") as excinfo:
        read_mask(tmp_path / "off.nrrd", ref, "tumor")
    assert "\n" not in str(excinfo.value)  # one line; the affines go to the log
    with pytest.raises(InputError, match=r"shape \(4, 4, 3\)"):
        read_mask(np.ones((4, 4, 3)), ref, "tumor")
    write_volume(Volume(np.zeros((5, 4, 3), np.uint8), ref.affine), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="mask 'aif-mask' is empty"):
        read_mask(tmp_path / "empty.nii.gz", ref, "aif-mask")


@pytest.mark.parametrize("name", ["dyn.nii.gz", "dyn.nii"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_lazy_nifti_series_reads_the_same_frames_and_stays_in_its_file(tmp_path, name, dtype):
    """read_volume(lazy=True): a 4D NIfTI stays unread (its `source` gives frame blocks) with the
    eager read's shape, dtype, times and metadata; frame blocks, or `.data` on first use, hold the
    same voxels; times given on the command line keep it unread."""
    vol = dynamic(dtype=dtype)
    write_volume(vol, tmp_path / name)
    eager = read_volume(tmp_path / name)
    lazy = read_volume(tmp_path / name, lazy=True)
    assert lazy.source is not None and lazy.shape == eager.data.shape and lazy.dtype == eager.data.dtype
    np.testing.assert_array_equal(lazy.times, eager.times)
    assert lazy.acquisition.echo_time == eager.acquisition.echo_time
    for prefetch in (False, True):  # two frames a block, read in turn or the next on a thread
        blocks = list(lazy.source.blocks(max_bytes=2 * 5 * 4 * 3 * np.dtype(dtype).itemsize, prefetch=prefetch))
        assert [first for first, _ in blocks] == [0, 2, 4]
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks], axis=3), eager.data)
    retimed = read_volume(tmp_path / name, lazy=True, frame_interval=2.0)
    assert retimed.source is not None and retimed.times[1] == 2.0
    np.testing.assert_array_equal(lazy.data, eager.data)  # first use reads it whole
    assert lazy.source is None
    mask = read_volume(tmp_path / name, lazy=True)  # 3D images are read at once
    write_volume(Volume(np.ones((2, 2, 2), np.uint8), np.eye(4)), tmp_path / "m.nii.gz")
    assert read_volume(tmp_path / "m.nii.gz", lazy=True).source is None and mask.source is not None


def test_lazy_truncated_nifti_fails_with_one_line_when_its_frames_are_read(tmp_path):
    noise = np.random.default_rng(2).normal(100, 10, (16, 16, 8, 12)).astype(np.float32)  # barely compressible
    write_volume(Volume(noise, np.eye(4), np.arange(12.0)), tmp_path / "dyn.nii.gz")
    raw = (tmp_path / "dyn.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    lazy = read_volume(tmp_path / "cut.nii.gz", lazy=True)  # the header is readable
    with pytest.raises(InputError, match="could not read NIfTI file .*cut.nii.gz.*Check that the file is complete"):
        lazy.source.load()


@pytest.mark.parametrize("dtype", [np.float32, np.int16, ">f4"])
def test_lazy_gzip_series_is_inflated_by_zlib_with_nibabels_bytes(tmp_path, dtype):
    """An unscaled .nii.gz series is read by io.nifti._GzipFrames (one zlib stream, 256 KiB per call)
    instead of nibabel's gzip reader, and returns exactly nibabel's frames: in order, out of order
    (the stream restarts), with the read-ahead thread, big-endian data in native order, and a
    file of concatenated gzip members."""
    import gzip

    import nibabel as nib

    from BBBAnomalyLib.io.nifti import _GzipFrames

    rng = np.random.default_rng(5)
    data = (rng.normal(300, 40, (7, 6, 5, 9))).astype(dtype)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, str(tmp_path / "dyn.nii.gz"))
    expected = np.asanyarray(nib.load(str(tmp_path / "dyn.nii.gz")).dataobj)
    lazy = read_volume(tmp_path / "dyn.nii.gz", lazy=True)
    assert isinstance(lazy.source._stream, _GzipFrames)
    for prefetch in (False, True):
        blocks = list(lazy.source.blocks(max_bytes=2 * 7 * 6 * 5 * np.dtype(dtype).itemsize, prefetch=prefetch))
        got = np.concatenate([b for _, b in blocks], axis=3)
        assert got.dtype == expected.dtype and got.dtype.isnative
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(lazy.source.read(6, 9), expected[..., 6:9])
    np.testing.assert_array_equal(lazy.source.read(1, 3), expected[..., 1:3])  # backwards: restarts
    # The same bytes as two gzip members (what `cat a.gz b.gz` makes): read across the join.
    raw = gzip.decompress((tmp_path / "dyn.nii.gz").read_bytes())
    cut = len(raw) // 3
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]))
    two = read_volume(tmp_path / "two.nii.gz", lazy=True)
    assert isinstance(two.source._stream, _GzipFrames)
    np.testing.assert_array_equal(two.source.load(), expected)


def test_lazy_scaled_gzip_series_is_left_to_nibabel(tmp_path):
    """A series with scl_slope/inter is read through nibabel's proxy (which applies the scaling)."""
    import nibabel as nib

    data = np.arange(7 * 6 * 5 * 4, dtype=np.int16).reshape(7, 6, 5, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    lazy = read_volume(tmp_path / "scaled.nii.gz", lazy=True)
    assert lazy.source._stream is None
    np.testing.assert_array_equal(lazy.source.load(), data * 0.5 + 10.0)


def test_lazy_gzip_series_cut_short_fails_with_one_line(tmp_path):
    """A .nii.gz whose stream ends before its last frame: one line naming the file, from the zlib reader."""
    noise = np.random.default_rng(3).normal(100, 10, (16, 16, 8, 12)).astype(np.float32)
    write_volume(Volume(noise, np.eye(4), np.arange(12.0)), tmp_path / "dyn.nii.gz")
    raw = (tmp_path / "dyn.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: int(len(raw) * 0.8)])
    lazy = read_volume(tmp_path / "cut.nii.gz", lazy=True)
    assert lazy.source._stream is not None
    first = lazy.source.read(0, 2)  # the start is intact
    np.testing.assert_array_equal(first, noise[..., :2])
    with pytest.raises(InputError, match=r"could not read NIfTI file .*cut.nii.gz.*ends .* bytes short.*complete"):
        lazy.source.read(2, 12)

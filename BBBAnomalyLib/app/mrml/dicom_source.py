"""A series Slicer loaded from a DICOM series that holds two echo times (dual-echo DSC): found, and handed over as
its DICOM files.

What Slicer's DICOM module makes of such a series (MultiVolumeImporterPlugin.py, fedorov/MultiVolumeImporter; the
Sequences extension only exports volume sequences, and DICOMScalarVolumePlugin does not split by EchoTime): its
frame-tag strategy (``examineFiles``) rejects EchoTime, AcquisitionTime and TemporalPositionIdentifier as frame keys
(each group holds one slice position twice); two position-based strategies accept the series, both loadables are
selected by default (their file lists differ), each loaded as a volume sequence whose attributes keep
``MultiVolume.FrameFileList`` (the DICOM files of its frames, in frame order):

* ``... - 2T frames ... by InstanceNumber`` (``examineFilesIPPInstanceNumber``): every image, each slice position's
  images ordered by InstanceNumber: the two echoes interleaved frame by frame (or one after the other, by how the
  scanner numbers them), labelled RepetitionTime x frame number, with ``MultiVolume.DICOM.EchoTime`` of the last
  frame's file only;
* ``... - T frames ... by AcquisitionTime`` (``examineFilesIPPAcqTime``): images keyed by (position, AcquisitionTime);
  both echoes of one excitation share that key, so one of each pair overwrites the other: half the images, from one
  echo or from both, by the order of the database's file list.

Neither can be run as it is (the first is no time series; the second reads a mixture as one echo). The files can:
:func:`dicom_echoes_of` finds the series behind such a node (its folder, SeriesInstanceUID and echo times, from the
headers of a sample of its folder's files), and :func:`link_series` gives its files a folder of their own, which the worker reads as dual-echo input
exactly as ``bbbanomaly dsc FOLDER`` does (:mod:`BBBAnomalyLib.app.echoes`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import InputError


def _itk_warnings_off():
    """The library reader's :func:`...io._common.itk_warnings_off`, imported when used: importing this bridge module
    stays free of the io package (SimpleITK, the readers) until a node's DICOM files are read."""
    from ...io._common import itk_warnings_off

    return itk_warnings_off()


FRAME_FILES = "MultiVolume.FrameFileList"
#: EchoTime values [ms] closer than this are one echo (as io.dicom_echoes.ECHO_TIME_TOL_MS)
ECHO_TIME_TOL_MS = 1e-3


#: headers read to find a node's echo times: files spread evenly over its folder (1-2 ms a file: a 2400-file series
#: costs a fraction of a second, not seconds, in the GUI thread); the worker reads every file and checks them all
SAMPLED_FILES = 240


@dataclass
class DicomEchoes:
    """The DICOM series behind a node: its folder, UID and echo times [ms] (two or more)."""

    folder: str
    series_uid: str
    echo_times_ms: list
    node_frames: int  # frames of the node as Slicer loaded it

    def summary(self) -> str:
        tes = " and ".join(f"{te:g}" for te in self.echo_times_ms)
        return (f"its DICOM series holds {len(self.echo_times_ms)} echoes (TE {tes} ms), which Slicer's DICOM import "
                f"mixes into one sequence ({self.node_frames} frames)")

    def series_files(self) -> list[str]:
        """Every file of the series in its folder (GDCM reads the folder's headers)."""
        import SimpleITK as sitk

        with _itk_warnings_off():
            return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(self.folder, self.series_uid))


def _frame_files(node) -> list[str]:
    """The node's DICOM files in frame order: a sequence's ``MultiVolume.FrameFileList``; a MultiVolume node (that
    attribute removed after loading) keeps ``DICOM.instanceUIDs``, found in Slicer's DICOM database (the first,
    middle and last only: enough to find the series' folder)."""
    from .common import _slicer
    from .inputs import find_sequence

    sequence, _ = find_sequence(node)
    for holder in (sequence, node):
        if holder is not None and holder.GetAttribute(FRAME_FILES):
            return [f for f in holder.GetAttribute(FRAME_FILES).split(",") if f]
    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(_slicer(), "dicomDatabase", None)
    if not uids or database is None:
        return []
    return [database.fileForInstance(uids[i]) or "" for i in sorted({0, len(uids) // 2, len(uids) - 1})]


def dicom_echoes_of(node) -> DicomEchoes | None:
    """The multi-echo DICOM series a sequence (or its proxy) was loaded from; None when the node names no DICOM
    files (not loaded from DICOM, or its files have gone) or its series has one echo time."""
    import SimpleITK as sitk

    files = _frame_files(node)
    if not files or not all(os.path.isfile(f) for f in files):
        return None
    folders = {os.path.dirname(os.path.abspath(f)) for f in files}
    if len(folders) != 1:
        return None
    folder = folders.pop()
    names = sorted(os.listdir(folder))
    step = max(1, len(names) // SAMPLED_FILES)
    sample = list(dict.fromkeys([files[0], files[len(files) // 2]]
                                + [os.path.join(folder, n) for n in names[::step]]))
    reader = sitk.ImageFileReader()
    reader.LoadPrivateTagsOff()
    uid, echo = None, []
    with _itk_warnings_off():
        for path in sample:
            reader.SetFileName(path)
            try:
                reader.ReadImageInformation()
            except RuntimeError:  # not a DICOM file (a DICOMDIR, a note): not part of the series
                continue
            tags = {tag: reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
                    for tag in ("0020|000e", "0018|0081")}
            uid = uid or tags["0020|000e"]  # the node's own first file is read first
            if tags["0020|000e"] == uid:
                try:
                    echo.append(float(tags["0018|0081"]))
                except ValueError:  # no EchoTime: the worker's reader says what is wrong with such a series
                    continue
    echo = np.array(echo)
    values = np.unique(np.round(echo[np.isfinite(echo)] / ECHO_TIME_TOL_MS) * ECHO_TIME_TOL_MS)
    if not uid or values.size < 2:
        return None
    from .inputs import _input_parts

    return DicomEchoes(folder, uid, [round(float(v), 6) for v in values], _input_parts(node)[4])


def link_series(echoes: DicomEchoes, folder) -> Path:
    """A folder holding the series' files alone (links, or copies where links cannot be made), for the worker."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=False)
    for n, source in enumerate(echoes.series_files()):
        target = folder / f"{n:06d}_{os.path.basename(source)}"
        try:
            os.symlink(source, target)
        except (OSError, NotImplementedError):  # Windows without the privilege
            try:
                shutil.copyfile(source, target)
            except OSError as exc:
                raise InputError(f"cannot hand over the DICOM file '{source}': {exc.strerror or exc}") from None
    return folder

"""NRRD reading and writing through SimpleITK, including Slicer's volume-sequence layout.

Geometry: ITK works in LPS; the affine is RAS, so the first two rows of direction*spacing and
of the origin are negated both ways. NRRD files declared in RAS space are converted to LPS by
ITK's reader already.

What we read
- 3D scalar images.
- 4D ITK images (four ``domain`` axes): frames along the 4th axis. Times from the 4th spacing,
  except that exactly 1.0 (ITK's default when nothing was set) means unknown.
- Vector images whose components are the frames. This is how ITK presents Slicer's
  ``.seq.nrrd`` files (the ``list`` axis first in files from Slicer <= 5.6, last in newer ones,
  ``kinds: domain domain domain list``) and MultiVolume NRRDs. Times, first match wins:
  1. sequence index ``axis <A> index values`` with an explicit time unit (``units`` field, e.g.
     ``s``, as Slicer writes it; URL-encoded values as Slicer writes them);
  2. ``MultiVolume.FrameLabels`` (comma-separated) with ``MultiVolume.FrameIdentifyingDICOMTagUnits``
     ``ms``/``s``, unless the frames are identified by EchoTime/FlipAngle/b-value (then the
     labels go to ``acquisition.extra['frame_labels']``, b-values to ``bvals``);
  3. sequence index values with no unit, taken as seconds (Slicer's default sequence unit)
     unless the axis label names something else (``frame``: Slicer's frame numbers -> unknown).
  A source is only used when it has one value per frame. TE/TR/flip from our
  ``BBBAnomaly.Acquisition`` JSON key, else Slicer's ``MultiVolume.DICOM.EchoTime`` /
  ``RepetitionTime`` (ms) / ``FlipAngle`` (deg). Slice times of a 2D multi-slice series: that JSON's
  ``extra.slice_timing`` (or BIDS ``SliceTiming``/``SliceEncodingDirection`` keys in it), named after the file.

What we write (4D)
  Slicer's original volume-sequence layout: a vector image with the frames as the first
  (fastest) NRRD axis, ``sizes: t x y z``, ``space directions: none (...) (...) (...)``; ITK labels
  that axis kind ``vector`` (Slicer writes ``list``; both are read as frames by ITK and Slicer).
  Header fields: ``DataNodeClassName:=vtkMRMLScalarVolumeNode``, ``axis 0 index type:=numeric``,
  ``axis 0 index values:=<times in s>``, the MultiVolume fields (``FrameLabels`` in ms with
  units ``ms``, ``NumberOfFrames``, ``DICOM.EchoTime``/``RepetitionTime`` in ms, ``DICOM.FlipAngle``)
  and ``BBBAnomaly.Acquisition`` (all acquisition metadata as JSON, SI units). Slicer opens such
  a file as a volume sequence with the frame times as index values (checked with Slicer's own
  vtkMRMLVolumeSequenceStorageNode from the slicer-core wheel); name it ``*.seq.nrrd`` so that
  Slicer's Add Data picks the sequence reader by default. Frames with unknown times get no
  index values (Slicer then numbers them). A one-frame 4D volume is stored as a 3D image and
  re-expanded on reading from these fields.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.volume import Acquisition, Volume
from ._common import (
    TIME_UNITS, acquisition_from_dict, affine_to_itk, check_echo_time, itk_to_affine, staged_files, storable
)

ACQ_KEY = "BBBAnomaly.Acquisition"
_MV = "MultiVolume."
#: MultiVolume frame tags that are not time (multi-echo, variable flip angle, diffusion series).
_NOT_TIME_TAGS = {"echotime", "repetitiontime", "flipangle", "temporalpositionidentifier"}


# --- reading ----------------------------------------------------------------------------
def read_nrrd(path: Path) -> Volume:
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(f"could not read NRRD file '{path}': {str(e).strip().splitlines()[-1]}; check that the file "
                         "is complete and its header valid (type, sizes, non-zero space directions)") from e
    meta = {k: img.GetMetaData(k) for k in img.GetMetaDataKeys()}
    arr = sitk.GetArrayFromImage(img)
    dim, ncomp = img.GetDimension(), img.GetNumberOfComponentsPerPixel()
    itk_times = None
    if dim == 3:
        affine = itk_to_affine(img.GetSpacing(), img.GetOrigin(), img.GetDirection())
        data = arr.transpose(2, 1, 0, 3) if ncomp > 1 else arr.transpose(2, 1, 0)
    elif dim == 4 and ncomp == 1:
        d4 = np.asarray(img.GetDirection(), dtype=np.float64).reshape(4, 4)
        if np.abs(d4[:3, 3]).max() > 1e-6 or np.abs(d4[3, :3]).max() > 1e-6:
            raise InputError(f"'{path}' mixes its 4th (time) axis with space; cannot map it to 3D + time")
        sp, org = img.GetSpacing(), img.GetOrigin()
        affine = itk_to_affine(sp[:3], org[:3], d4[:3, :3].ravel())
        data = arr.transpose(3, 2, 1, 0)
        if sp[3] > 0 and sp[3] != 1.0:
            itk_times = org[3] + np.arange(data.shape[3]) * sp[3]
    else:
        raise InputError(
            f"'{path}' is a {dim}D image with {ncomp} components per voxel; expected a 3D volume, "
            "a 4D series or a Slicer volume sequence"
        )
    if data.ndim == 3 and _declared_frames(meta) == 1:
        data = data[..., None]
    n = data.shape[3] if data.ndim == 4 else 0
    acq = _acquisition(meta, path)
    times = _frame_times(meta, n, acq) if n else None
    if times is None and itk_times is not None:
        times = itk_times
    return Volume(data, affine, times, acq)


def raw_header(path: Path) -> dict[str, str]:
    """The NRRD header as written: ``field: value`` and ``key:=value`` lines, before ITK touches them.

    ITK turns ``space`` into LPS and does not expose the ``measurement frame``; DWI gradients need
    both exactly as the file states them.
    """
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    text = head.split(b"\n\n", 1)[0].decode("latin-1")  # attached data follow the first blank line
    fields: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":=")
        if not sep:
            key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


#: NRRD spaces whose world axes are RAS or LPS; the sign flips to RAS.
_SPACE_TO_RAS = {"right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
                 "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1)}


def dwmri_gradients(path: Path, n_volumes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(b-values, unit directions in world RAS) of a DWMRI NRRD (Slicer's DWI files), else None.

    NRRD's DWMRI convention: ``DWMRI_b-value`` is the largest b; each ``DWMRI_gradient_NNNN`` is
    given in the ``measurement frame`` (default: the space's axes) and its squared length scales
    that b-value, so b_i = b * |g_i|^2 and a zero vector is a b0.
    """
    fields = raw_header(path)
    if fields.get("modality", "").upper() != "DWMRI" and "DWMRI_b-value" not in fields:
        return None
    if any(k.startswith("DWMRI_NEX_") for k in fields):
        raise InputError(f"'{path}' repeats gradients with DWMRI_NEX keys, which are not read; write the DWI "
                         "with one DWMRI_gradient per volume (Slicer's Save does), or give --bval/--bvec")
    b_max = _floats(fields.get("DWMRI_b-value", ""), None)
    keys = sorted(k for k in fields if re.fullmatch(r"DWMRI_gradient_\d+", k))
    grads = [_floats(fields[k], None) for k in keys]
    if b_max is None or b_max.size != 1 or len(keys) != n_volumes or any(g is None or g.size != 3 for g in grads):
        raise InputError(f"'{path}' is a DWMRI NRRD but its gradient table is incomplete: {len(keys)} "
                         f"DWMRI_gradient keys for {n_volumes} volumes and DWMRI_b-value "
                         f"{fields.get('DWMRI_b-value')!r}; give --bval/--bvec instead")
    g = np.asarray(grads, np.float64)
    frame = np.eye(3)
    if "measurement frame" in fields:
        rows = re.findall(r"\(([^)]*)\)", fields["measurement frame"])
        vectors = [_floats(r, ",") for r in rows]
        if len(vectors) != 3 or any(v is None or v.size != 3 for v in vectors):
            raise InputError(f"'{path}': cannot read the measurement frame {fields['measurement frame']!r}")
        frame = np.asarray(vectors, np.float64).T  # NRRD lists the frame's column vectors
    space = fields.get("space", "right-anterior-superior").lower()
    if space not in _SPACE_TO_RAS:
        raise InputError(f"'{path}' has NRRD space {space!r}; DWI gradients are read for RAS or LPS spaces only")
    world = (g @ frame.T) * np.asarray(_SPACE_TO_RAS[space], np.float64)
    norms = np.linalg.norm(g, axis=1)
    bvals = float(b_max[0]) * norms ** 2
    directions = np.divide(world, np.linalg.norm(world, axis=1, keepdims=True),
                           out=np.zeros_like(world), where=norms[:, None] > 1e-8)
    return bvals, directions


def _declared_frames(meta: dict) -> int | None:
    for key, value in meta.items():
        if re.fullmatch(r"axis \d+ index values", key):
            return len(value.split())
    if meta.get(_MV + "NumberOfFrames", "").strip().isdigit():
        return int(meta[_MV + "NumberOfFrames"])
    return None


def _floats(text: str, sep: str | None) -> np.ndarray | None:
    try:
        return np.asarray([float(unquote(v)) for v in text.strip().split(sep) if v.strip()], dtype=np.float64)
    except ValueError:
        return None


def _frame_times(meta: dict, n: int, acq: Acquisition) -> np.ndarray | None:
    seq = None
    for key, value in meta.items():
        m = re.fullmatch(r"axis (\d+) index values", key)
        if m and meta.get(f"axis {m.group(1)} index type", "numeric").strip() != "text":
            vals = _floats(value, None)
            if vals is not None and vals.size == n:
                seq = vals
    unit = (meta.get("NRRD_units[pixel]") or meta.get("NRRD_units[3]") or "").strip().lower()
    label = (meta.get("NRRD_labels[pixel]") or meta.get("NRRD_labels[3]") or "").strip().lower()
    if seq is not None and unit in TIME_UNITS:
        return seq * TIME_UNITS[unit]
    mv = _multivolume_times(meta, n, acq)
    if mv is not None:
        return mv
    if seq is not None and not unit and (not label or "time" in label):
        return seq
    if seq is not None:
        acq.extra["sequence_index"] = {"name": label, "unit": unit, "values": seq.tolist()}
    return None


def _multivolume_times(meta: dict, n: int, acq: Acquisition) -> np.ndarray | None:
    vals = _floats(meta.get(_MV + "FrameLabels", ""), ",")
    if vals is None or vals.size != n or n == 0:
        return None
    unit = meta.get(_MV + "FrameIdentifyingDICOMTagUnits", "").strip().lower()
    tag = meta.get(_MV + "FrameIdentifyingDICOMTagName", "").strip()
    if unit in TIME_UNITS and tag.lower() not in _NOT_TIME_TAGS:
        return vals * TIME_UNITS[unit]
    if "b-value" in tag.lower() or unit in ("sec/mm2", "s/mm2", "s/mm^2"):
        acq.bvals = vals
    acq.extra["frame_labels"] = {"name": tag, "unit": unit, "values": vals.tolist()}
    return None


def _acquisition(meta: dict, path: Path) -> Acquisition:
    if ACQ_KEY in meta:
        try:
            fields = json.loads(meta[ACQ_KEY])
        except (ValueError, TypeError) as e:
            raise InputError(f"the '{ACQ_KEY}' field in '{path}' is not valid JSON ({e}); remove it") from e
        except RecursionError:
            raise InputError(f"the '{ACQ_KEY}' field in '{path}' is nested too deeply; remove it") from None
        acq = acquisition_from_dict(fields, f"the '{ACQ_KEY}' field of '{path}'")  # its own one-line errors
        _slice_timing(acq, path)
    else:
        acq = Acquisition()

    def dicom_value(name: str) -> float | None:
        v = _floats(meta.get(_MV + "DICOM." + name, ""), "\\")
        return float(v[0]) if v is not None and v.size else None

    if acq.echo_time is None and dicom_value("EchoTime") is not None:
        acq.echo_time = dicom_value("EchoTime") / 1000.0
    if acq.repetition_time is None and dicom_value("RepetitionTime") is not None:
        acq.repetition_time = dicom_value("RepetitionTime") / 1000.0
    if acq.flip_angle is None:
        acq.flip_angle = dicom_value("FlipAngle")
    check_echo_time(acq.echo_time, f"'{path}'")
    return acq


def _slice_timing(acq: Acquisition, path: Path) -> None:
    """Slice times in the acquisition JSON (``extra.slice_timing``, as written from a sidecar's or a DICOM series',
    or BIDS ``SliceTiming``/``SliceEncodingDirection`` keys): kept as given, named after this file (the one to fix);
    checked by the pipelines that use them (perfusion/slice_timing.py)."""
    bids = acq.extra.pop("SliceTiming", None)
    direction = acq.extra.pop("SliceEncodingDirection", "k")
    if bids is not None and "slice_timing" not in acq.extra:
        acq.extra["slice_timing"] = {"times_s": bids, "direction": direction}
    entry = acq.extra.get("slice_timing")
    if isinstance(entry, dict):
        acq.extra["slice_timing"] = {**entry, "source": f"the slice_timing in the '{ACQ_KEY}' field of '{path}'"}


def metadata_from_fields(fields: dict, n_frames: int, source: str) -> tuple[np.ndarray | None, Acquisition]:
    """Frame times [s] and acquisition from Slicer-style key/values (NRRD header fields, or the
    attributes of a sequence or MultiVolume node: ``MultiVolume.FrameLabels``, ``MultiVolume.DICOM.EchoTime``
    in ms, ``BBBAnomaly.Acquisition`` JSON). Times are None when the fields do not give them."""
    acq = _acquisition(dict(fields), Path(source))
    times = _multivolume_times(dict(fields), n_frames, acq) if n_frames else None
    return times, acq


# --- writing ----------------------------------------------------------------------------
def write_nrrd(volume: Volume, path: Path, compress: bool = True) -> None:
    """``compress=False`` for files that live for one run (the panel's job inputs): gzip of a
    whole-brain series costs seconds, in Slicer's GUI thread."""
    data = storable(volume.data)
    spacing, origin, direction = affine_to_itk(volume.affine)
    if volume.is_4d:  # frames become the vector components: Slicer's sequence layout
        img = sitk.GetImageFromArray(data.transpose(2, 1, 0, 3), isVector=True)
    else:
        img = sitk.GetImageFromArray(data.transpose(2, 1, 0), isVector=False)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    for key, value in header_fields(volume).items():
        img.SetMetaData(key, value)
    with staged_files(path) as scratch:
        sitk.WriteImage(img, str(scratch / path.name), useCompression=compress)


def header_fields(volume: Volume) -> dict[str, str]:
    """NRRD key/values (Slicer sequence + MultiVolume + our acquisition JSON) for a Volume."""
    a = volume.acquisition
    out = {}
    acq_json = a.to_json()
    if acq_json:
        out[ACQ_KEY] = json.dumps(acq_json, separators=(",", ":"))
    if not volume.is_4d:
        return out
    n = volume.n_frames
    out["DataNodeClassName"] = "vtkMRMLScalarVolumeNode"
    out[_MV + "NumberOfFrames"] = str(n)
    if volume.times is not None:
        out["axis 0 index type"] = "numeric"
        out["axis 0 index values"] = " ".join(repr(float(t)) for t in volume.times)
        out[_MV + "FrameLabels"] = ",".join(repr(float(t) * 1000.0) for t in volume.times)
        out[_MV + "FrameIdentifyingDICOMTagName"] = "Time"
        out[_MV + "FrameIdentifyingDICOMTagUnits"] = "ms"
    for name, value, scale in (("EchoTime", a.echo_time, 1000.0), ("RepetitionTime", a.repetition_time, 1000.0),
                               ("FlipAngle", a.flip_angle, 1.0)):
        if value is not None:
            out[_MV + "DICOM." + name] = repr(float(value) * scale)
    return out

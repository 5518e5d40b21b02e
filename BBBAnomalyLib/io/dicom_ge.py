"""GE multi-phase EPI: each slice's time within its frame from its TriggerTime (0018,1060).

GE's product EPI with the multi-phase option (the usual GE DSC series) stores in TriggerTime the slice's time within
the frame in ms, the same in every frame (dcm2niix GE/README.md, "Slice Timing": "fMRI acquired using GE product
sequence (PSD) 'epi' with the multiphase option will store slice timing in the Trigger Time (DICOM 0018,1060)
element"); its AcquisitionTime is no per-slice clock (dcm2niix reads slice times from AcquisitionTime for Siemens and
UIH only). The reader's slice times come from the clock that gave the frame times (:func:`.dicom_frames._slice_times`),
so a GE series read all zeros (slices at one time) or none. What dcm2niix did with TriggerTime before it moved to
GE's private protocol block (oldSliceTimingGE in console/nii_dicom_batch.cpp, commented out in 2020, "Unify GE slice
timing"): each slice's TriggerTime, minus the smallest ("0018,1060 provides time at end of acquisition, not start"),
and no slice times when all are equal ("ABCD simulated GE DICOMs do not populate 0018,1060 correctly"). The same is
done here, with the reader's own guards: the offsets must be the same in every frame within
:data:`.dicom_frames.SLICE_TIME_JITTER_S` and shorter than the frame interval and the RepetitionTime. Not used for
HyperBand (multiband) series, GE's private (0043,10B6) above 1: there TriggerTime holds the times of a single-band
acquisition (dcm2niix issue 336: "the values stored in this field [are] clearly incorrect for GE multi band
sequences").
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .dicom_frames import SLICE_TIME_JITTER_S, _column

#: GE's private multiband factor (value 1 of an LO list), in the group its creator GEMS_PARM_01 reserves.
GE_MULTIBAND = "0043|10b6"


def is_ge(header: dict) -> bool:
    return header.get("manufacturer", "").strip().upper().startswith("GE")  # as dcm2niix: "GE MEDICAL SYSTEMS"


def _multiband_factor(path) -> int:
    """GE's multiband factor (0043,10B6) of one file; 1 when absent or unreadable."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOn()
    try:
        reader.ReadImageInformation()
        key = next((k for k in reader.GetMetaDataKeys() if k.lower() == GE_MULTIBAND), None)
        return int(float(reader.GetMetaData(key).split("\\")[0])) if key else 1
    except (RuntimeError, ValueError):
        return 1


def ge_trigger_slice_times(headers, files, grid, frame_times, time_source: str, repetition_time: float | None,
                           directory) -> dict | None:
    """``Acquisition.extra['slice_timing']`` from GE's per-slice TriggerTime (see the module docstring), or None
    when the series is not GE's, TriggerTime is the frame clock or missing, or a guard fails."""
    frames, slices = grid.shape
    if frames < 2 or slices < 2 or time_source == "TriggerTime" or not is_ge(headers[grid[0, 0]]):
        return None
    trigger = _column(headers, "trigger") / 1000.0  # ms -> s
    if not np.all(np.isfinite(trigger)):
        return None
    per_slice = trigger[grid]  # (frames, slices)
    offsets = per_slice - per_slice.min(axis=1, keepdims=True)
    typical = np.median(offsets, axis=0)
    if float(np.abs(offsets - typical).max()) > SLICE_TIME_JITTER_S or np.ptp(typical) <= SLICE_TIME_JITTER_S:
        return None
    limits = [t for t in (repetition_time,
                          float(np.median(np.diff(frame_times))) if frame_times is not None else None) if t]
    if any(typical.max() >= limit for limit in limits):
        return None
    if _multiband_factor(files[grid[0, 0]]) > 1:
        return None
    return {"times_s": [round(float(t), 6) for t in typical], "direction": "k",
            "source": f"the GE TriggerTime (0018,1060) of each slice within its frame in '{directory}'"}

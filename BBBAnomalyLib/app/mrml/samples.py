"""Putting library data into a scene: volumes, series, segmentations, ROIs, and the sample data.

The sample data are the project's own digital reference objects (``BBBAnomalyLib.phantoms``),
made on this computer in seconds, nothing downloaded: one per pipeline, each with the regions the
panel needs (AIF box, tumor and NAWM segments), so that a new user sees a result in a minute.
:data:`SAMPLES` lists them by pipeline; the module registers each with Slicer's Sample Data
module and the panel's "Load sample data" button loads the current pipeline's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...core.errors import InputError
from ...core.volume import Volume
from .common import _array_to_matrix, _scratch_nodes, _slicer


def add_volume_node(volume: Volume, name: str, labelmap: bool = False):
    """A 3D Volume as a new scalar (or labelmap) volume node with its geometry."""
    slicer = _slicer()
    if volume.is_4d:
        raise InputError("add_volume_node takes a 3D volume; use add_series for 4D")
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = slicer.mrmlScene.AddNewNodeByClass(cls, name)
    _fill_volume_node(node, volume.data, volume.affine)
    node.CreateDefaultDisplayNodes()
    return node


def _fill_volume_node(node, data: np.ndarray, affine: np.ndarray) -> None:
    slicer = _slicer()
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.swapaxes(np.asarray(data), 0, 2)))
    node.SetIJKToRASMatrix(_array_to_matrix(affine))


def add_series(volume: Volume, name: str):
    """A 4D Volume as a volume sequence with a browser and a proxy node, as Slicer loads 4D DICOM.

    The sequence index is the frame time in seconds; TE/TR/flip angle are stored as the DICOM
    MultiVolume attributes (ms, deg) that Slicer's importer writes. Returns (sequence, browser, proxy).
    """
    slicer = _slicer()
    if not volume.is_4d:
        raise InputError("add_series takes a 4D volume")
    scene = slicer.mrmlScene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name + " sequence"))
    times = volume.times if volume.times is not None else np.arange(volume.n_frames, dtype=np.float64)
    sequence.SetIndexName("time" if volume.times is not None else "frame")
    sequence.SetIndexUnit("s" if volume.times is not None else "")
    sequence.SetIndexType(sequence.NumericIndex)
    for t in range(volume.n_frames):
        frame = slicer.vtkMRMLScalarVolumeNode()
        _fill_volume_node(frame, volume.data[..., t], volume.affine)
        sequence.SetDataNodeAtValue(frame, f"{times[t]:.6g}")
    acq = volume.acquisition
    for attribute, value, scale in (("EchoTime", acq.echo_time, 1e3), ("RepetitionTime", acq.repetition_time, 1e3),
                                    ("FlipAngle", acq.flip_angle, 1.0)):
        if value is not None:
            sequence.SetAttribute(f"MultiVolume.DICOM.{attribute}", f"{value * scale:.6g}")
    if not scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):  # plain slicer-core scenes lack it
        scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(name + " browser"))
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    proxy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    _fill_volume_node(proxy, volume.data[..., 0], volume.affine)
    proxy.CreateDefaultDisplayNodes()
    browser.AddProxyNode(proxy, sequence, False)
    return sequence, browser, proxy


def add_segmentation(masks: dict, reference: Volume, name: str = "Segmentation"):
    """Boolean masks on the reference grid as one segmentation node, one segment per mask name
    (masks may overlap, e.g. a tumor inside a brain mask). Returns (segmentation node, {mask name: segment id})."""
    slicer = _slicer()
    scene = slicer.mrmlScene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    segmentation.CreateDefaultDisplayNodes()
    seg = segmentation.GetSegmentation()
    ids = {}
    for key, mask in masks.items():
        before = {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())}
        with _scratch_nodes():  # one labelmap per mask, so overlapping masks stay whole
            labelmap = add_volume_node(Volume(np.asarray(mask, np.uint8), reference.affine), "__bbbanomaly_labels__",
                                       labelmap=True)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
                raise InputError(f"could not convert the mask '{key}' to a segment")
        added = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())
                 if seg.GetNthSegmentID(i) not in before]
        if len(added) != 1:
            raise InputError(f"the mask '{key}' is empty; nothing to add as a segment")
        seg.GetSegment(added[0]).SetName(key)
        ids[key] = added[0]
    return segmentation, ids


def add_roi(center, size, name: str = "AIF ROI"):
    """An axis-aligned markups ROI box (RAS centre and size in mm)."""
    slicer = _slicer()
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenter(*[float(v) for v in center])
    roi.SetSize(*[float(v) for v in size])
    return roi


def roi_around(mask: np.ndarray, affine: np.ndarray, name: str = "AIF ROI", margin_mm: float = 1.0):
    """An axis-aligned ROI just enclosing the voxel centres of ``mask`` (plus ``margin_mm``)."""
    idx = np.argwhere(mask)
    world = (affine @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    low, high = world.min(axis=0), world.max(axis=0)
    return add_roi((low + high) / 2, high - low + margin_mm, name)



def add_dwi(volume: Volume, name: str):
    """A 4D diffusion Volume (b-values, RAS gradients) as a DWI node, as Slicer loads a DWMRI NRRD."""
    slicer = _slicer()
    acq = volume.acquisition
    if not volume.is_4d or acq.bvals is None or acq.bvecs is None:
        raise InputError("add_dwi takes a 4D volume with b-values and gradients")
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", name)
    _fill_volume_node(node, volume.data, volume.affine)
    node.SetNumberOfGradients(volume.n_frames)
    for i, (b, g) in enumerate(zip(acq.bvals, acq.bvecs)):  # RAS, as Slicer keeps them (identity measurement frame)
        node.SetBValue(i, float(b))
        node.SetDiffusionGradient(i, [float(v) for v in g])
    node.CreateDefaultDisplayNodes()
    return node


@dataclass
class Sample:
    """A sample case in the scene: the panel's inputs by key (nodes, or (segmentation, segment id)
    for regions), the AIF source to select, and the phantom it came from (truth and masks)."""

    pipeline: str
    inputs: dict
    aif_source: str = "auto"
    phantom: object = None
    nodes: list = field(default_factory=list)  # every node added, for callers that clean up

    def __getitem__(self, key):  # load_dsc_demo's older dict interface
        legacy = {"series": self.inputs.get("series"), "aif_roi": self.inputs.get("aif_mask"),
                  "phantom": self.phantom}
        if key in ("segmentation", "segments"):
            segmentation, _ = self.inputs["tumor_mask"]
            return segmentation if key == "segmentation" else {
                "tumor": self.inputs["tumor_mask"][1], "nawm": self.inputs["nawm_mask"][1]}
        return legacy[key]


def _slab(volume: Volume, k: slice) -> Volume:
    """Slices ``k`` of a volume, with the affine moved so the slab stays where it was."""
    offset = np.eye(4)
    offset[2, 3] = k.start
    data = np.ascontiguousarray(volume.data[:, :, k])
    return Volume(data, volume.affine @ offset, volume.times, volume.acquisition)


def load_dsc_demo(slices: int | str = 8, snr: float = 50.0, seed: int = 0) -> Sample:
    """The DSC digital reference object: the series as a volume sequence (as 4D DICOM loads), an AIF
    ROI box on its artery, and a segmentation with tumor and NAWM segments."""
    from ...phantoms.dsc import make_dsc_phantom

    phantom = make_dsc_phantom(snr=snr, slices=slices, seed=seed)
    _, _, proxy = add_series(phantom.signal, "DSC demo")
    roi = roi_around(phantom.masks["aif"], phantom.signal.affine, "DSC demo AIF")
    segmentation, ids = add_segmentation({"tumor": phantom.masks["tumor"], "nawm": phantom.masks["nawm"]},
                                         phantom.signal, "DSC demo segments")
    return Sample("dsc", {"series": proxy, "aif_mask": roi, "tumor_mask": (segmentation, ids["tumor"]),
                          "nawm_mask": (segmentation, ids["nawm"])}, "roi", phantom)


def load_dce_demo(slices: int | str = 12, snr: float = 40.0, seed: int = 0) -> Sample:
    """The DCE digital reference object (SPGR series with TR and flip angle), an AIF ROI box on its
    artery, tumor and NAWM segments."""
    from ...phantoms.dce import make_dce_phantom

    phantom = make_dce_phantom(snr=snr, slices=slices, seed=seed)
    _, _, proxy = add_series(phantom.signal, "DCE demo")
    roi = roi_around(phantom.masks["aif"], phantom.signal.affine, "DCE demo AIF")
    segmentation, ids = add_segmentation({"tumor": phantom.masks["tumor"], "nawm": phantom.masks["nawm"]},
                                         phantom.signal, "DCE demo segments")
    return Sample("dce", {"series": proxy, "aif_mask": roi, "tumor_mask": (segmentation, ids["tumor"]),
                          "nawm_mask": (segmentation, ids["nawm"])}, "roi", phantom)


def load_dmri_demo(voxel_mm: float = 3.0, snr: float = 30.0, seed: int = 1001) -> Sample:
    """A patient's single-shell DWI (b = 1000, 48 directions) from the diffusion phantom, with tumor
    and NAWM segments."""
    from ...phantoms.dmri import make_dmri_phantom

    phantom = make_dmri_phantom(seed, voxel_mm=voxel_mm, n_directions=48, snr=snr, tumor=True)
    node = add_dwi(phantom.dwi, "DWI demo")
    segmentation, ids = add_segmentation({"tumor": phantom.masks["tumor"], "nawm": phantom.masks["nawm"]},
                                         phantom.dwi, "DWI demo segments")
    return Sample("dmri", {"dwi": node, "tumor_mask": (segmentation, ids["tumor"]),
                           "nawm_mask": (segmentation, ids["nawm"])}, "auto", phantom)


def load_t1flair_demo(slices: int | None = None, seed: int = 5001) -> Sample:
    """Non-contrast T1 and FLAIR of an enhancing-tumor phantom, with tumor and NAWM segments.
    ``slices``: keep that many slices around the tumor (None: the whole brain)."""
    from ...phantoms.structural import make_structural_phantom

    phantom = make_structural_phantom(seed, enhancing=True)
    tumor = phantom.whole_tumor
    k = slice(0, tumor.shape[2])
    if slices is not None:
        centre = int(np.flatnonzero(tumor.any(axis=(0, 1))).mean())
        k = slice(max(centre - slices // 2, 0), min(centre - slices // 2 + slices, tumor.shape[2]))
    t1, flair = _slab(phantom.t1, k), _slab(phantom.flair, k)
    nawm = phantom.brain & ~tumor
    from scipy import ndimage

    nawm &= ~ndimage.binary_dilation(tumor, iterations=3)  # normal-appearing: away from the edema
    t1_node, flair_node = add_volume_node(t1, "T1 demo"), add_volume_node(flair, "FLAIR demo")
    segmentation, ids = add_segmentation({"tumor": tumor[:, :, k], "nawm": nawm[:, :, k]}, t1, "T1/FLAIR demo segments")
    return Sample("t1flair", {"t1": t1_node, "flair": flair_node, "tumor_mask": (segmentation, ids["tumor"]),
                              "nawm_mask": (segmentation, ids["nawm"])}, "auto", phantom)


#: pipeline name -> (sample name shown in Slicer's Sample Data module, loader). A loader's keyword
#: arguments make the case smaller (tests, self-test); the defaults are what a user loads.
SAMPLES = {
    "dsc": ("BBBAnomaly DSC phantom", load_dsc_demo),
    "dce": ("BBBAnomaly DCE phantom", load_dce_demo),
    "dmri": ("BBBAnomaly DWI phantom", load_dmri_demo),
    "t1flair": ("BBBAnomaly T1/FLAIR phantom", load_t1flair_demo),
}


def load_sample(pipeline: str, **options) -> Sample:
    """The sample case of a pipeline in the scene (see :data:`SAMPLES`)."""
    if pipeline not in SAMPLES:
        raise InputError(f"no sample data for pipeline {pipeline!r}; choose one of {', '.join(SAMPLES)}")
    return SAMPLES[pipeline][1](**options)

"""The Slicer-facing logic (BBBAnomalyLib.app.mrml) with real MRML nodes from the slicer-core wheel.

What the panel does, without the Slicer application: a DSC phantom loaded as a volume sequence
(as Slicer loads 4D DICOM), an AIF markups ROI or segment, NAWM/tumor segments, a run, the
output nodes, the ratio table and the curves; and the bad inputs the panel must refuse without
touching the scene.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import slicer

from BBBAnomalyLib import InputError
from BBBAnomalyLib.app import mrml
from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.app.curves import CurveSet, curves_in
from BBBAnomalyLib.io import read_volume, write_volume
from BBBAnomalyLib.app.jobs import InProcessRunner, read_job_input
from BBBAnomalyLib.core.volume import Volume


@pytest.fixture
def scene():
    """A fresh scene with its subject hierarchy (Slicer always has one)."""
    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(True)


def node_ids(scene):
    return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


def aif_roi_around(mask: np.ndarray, affine: np.ndarray):
    return mrml.roi_around(mask, affine)


def node_array(node) -> np.ndarray:
    return np.swapaxes(slicer.util.arrayFromVolume(node), 0, 2)


def run_in_scene(request, tmp_path):
    job, reference = mrml.prepare_job(request, tmp_path / "job")
    events = InProcessRunner(job).start().poll()
    assert events[-1]["event"] == "done", events[-1]
    return job, reference, events


def test_sequence_node_reads_as_the_series_with_geometry_times_and_te(scene, dsc_phantom):
    signal = dsc_phantom.signal
    sequence, browser, proxy = mrml.add_series(signal, "DSC")
    for node in (proxy, sequence):  # the proxy (what a user picks) and the sequence itself
        volume = mrml.volume_from_node(node)
        assert np.array_equal(volume.data, signal.data)
        assert np.allclose(volume.affine, signal.affine)
        assert np.allclose(volume.times, signal.times)
        assert volume.acquisition.echo_time == pytest.approx(signal.acquisition.echo_time)
    info = mrml.describe_input(proxy)
    assert info.kind == "sequence" and info.frames == signal.n_frames
    assert info.frame_interval == pytest.approx(signal.times[1] - signal.times[0])
    assert "60 frames" in info.summary()
    # Frame times in ms on the sequence index are converted to seconds
    sequence.SetIndexUnit("ms")
    assert np.allclose(mrml.volume_from_node(proxy).times, signal.times / 1000)


def test_frame_times_unknown_are_reported_and_can_be_entered(scene, dsc_phantom, tmp_path):
    signal = Volume(dsc_phantom.signal.data, dsc_phantom.signal.affine, None, dsc_phantom.signal.acquisition)
    _, _, proxy = mrml.add_series(signal, "no times")
    assert mrml.describe_input(proxy).times is None
    before = node_ids(scene)
    with pytest.raises(InputError, match="frame interval"):
        mrml.prepare_job(mrml.RunRequest("dsc", {"series": proxy}), tmp_path / "a")
    assert node_ids(scene) == before
    volume = mrml.volume_from_node(proxy, frame_interval=1.5, acquisition={"echo_time": 0.025})
    assert np.allclose(volume.times, np.arange(signal.n_frames) * 1.5)
    assert volume.acquisition.echo_time == 0.025


def test_multivolume_and_dwi_nodes(scene, dsc_phantom):
    signal = dsc_phantom.signal
    data = signal.data[..., :5]
    mv = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "mv")
    slicer.util.updateVolumeFromArray(mv, np.ascontiguousarray(np.swapaxes(data, 0, 2)))
    mv.SetIJKToRASMatrix(mrml._array_to_matrix(signal.affine))
    mv.SetAttribute("MultiVolume.NumberOfFrames", "5")
    mv.SetAttribute("MultiVolume.FrameLabels", "0,1500,3000,4500,6000")
    mv.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "TriggerTime")
    mv.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "ms")
    mv.SetAttribute("MultiVolume.DICOM.EchoTime", "30")
    volume = mrml.volume_from_node(mv)
    assert mrml.describe_input(mv).kind == "multivolume"
    assert np.array_equal(volume.data, data) and np.allclose(volume.times, [0, 1.5, 3, 4.5, 6])
    assert volume.acquisition.echo_time == pytest.approx(0.03)

    dwi = scene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "dwi")
    slicer.util.updateVolumeFromArray(dwi, np.ascontiguousarray(np.swapaxes(data[..., :4], 0, 2)))
    dwi.SetIJKToRASMatrix(mrml._array_to_matrix(signal.affine))
    dwi.SetNumberOfGradients(4)
    for i, (b, g) in enumerate([(0, (0, 0, 0)), (1000, (1, 0, 0)), (1000, (0, 1, 0)), (1000, (0, 0, 1))]):
        dwi.SetBValue(i, b)
        dwi.SetDiffusionGradient(i, g)
    volume = mrml.volume_from_node(dwi)
    assert mrml.describe_input(dwi).kind == "dwi"
    assert volume.data.shape[-1] == 4 and np.allclose(volume.acquisition.bvals, [0, 1000, 1000, 1000])
    assert np.allclose(volume.acquisition.bvecs[1:], np.eye(3))


def test_parent_transform_moves_the_geometry_and_outputs_keep_it(scene, dsc_phantom):
    import vtk

    _, _, proxy = mrml.add_series(dsc_phantom.signal, "DSC")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    transform.SetMatrixTransformToParent(shift)
    proxy.SetAndObserveTransformNodeID(transform.GetID())
    volume = mrml.volume_from_node(proxy)
    assert np.allclose(volume.affine[:3, 3], dsc_phantom.signal.affine[:3, 3] + [25, 0, 0])


def test_roi_mask_is_the_voxel_centres_inside_the_box(scene, dsc_phantom):
    signal = dsc_phantom.signal
    aif = dsc_phantom.masks["aif"]
    roi = aif_roi_around(aif, signal.affine)
    mask = mrml.mask_from_roi(roi, signal)
    idx = np.argwhere(aif)
    box = np.zeros_like(aif)
    box[tuple(slice(a, b + 1) for a, b in zip(idx.min(axis=0), idx.max(axis=0)))] = True
    assert np.array_equal(mask, box)  # exactly the voxels of the enclosing box, nothing else


def test_dsc_run_from_a_sequence_and_aif_roi_matches_the_command_line(scene, dsc_phantom, dsc_files, tmp_path):
    signal = dsc_phantom.signal
    _, _, proxy = mrml.add_series(signal, "DSC")
    roi = aif_roi_around(dsc_phantom.masks["aif"], signal.affine)
    segmentation, ids = mrml.add_segmentation({"tumor": dsc_phantom.masks["tumor"],
                                               "nawm": dsc_phantom.masks["nawm"]}, signal)
    before = node_ids(scene)
    request = mrml.RunRequest("dsc", {"series": proxy, "aif_mask": roi, "nawm_mask": (segmentation, "nawm"),
                                      "tumor_mask": (segmentation, ids["tumor"])}, {"method": "osvd"})
    job, reference, events = run_in_scene(request, tmp_path)
    assert node_ids(scene) == before  # preparing and running add nothing to the scene
    assert any(e["event"] == "progress" for e in events)
    outputs = mrml.import_results(job.output_dir, proxy, "DSC run")

    # The same run from the command line on the NIfTI files, with the ROI's mask
    roi_mask = mrml.mask_from_roi(roi, reference)
    write_volume(Volume(roi_mask.astype(np.uint8), signal.affine), tmp_path / "aif_roi.nii.gz")
    cli_out = tmp_path / "cli"
    assert job.parameters["aif_region"] is True  # a ROI box is searched for its arterial voxels
    assert cli_main([ "dsc", str(dsc_files / "signal.nii.gz"), "--aif-mask", str(tmp_path / "aif_roi.nii.gz"),
                      "--aif-search",
                      "--nawm-mask", str(dsc_files / "mask_nawm.nii.gz"), "--tumor-mask",
                      str(dsc_files / "mask_tumor.nii.gz"), "--out", str(cli_out), "--quiet"]) == 0
    expected_maps = list(json.loads((cli_out / "report.json").read_text(encoding="utf-8"))["maps"])
    chosen = read_job_input(f"{job.output_dir}/aif_mask.npy").data > 0
    assert chosen.sum() >= 5 and not (chosen & ~dsc_phantom.masks["aif"]).any()  # only the artery of the box
    assert list(outputs.map_nodes) == expected_maps
    for name, node in outputs.map_nodes.items():
        assert np.array_equal(mrml.ijk_to_ras(node), mrml.ijk_to_ras(proxy)), name
        assert node.GetName() == f"DSC {name}"
        np.testing.assert_allclose(node_array(node), read_volume(cli_out / f"{name}.nii.gz").data,
                                   rtol=1e-5, atol=1e-6, err_msg=name)
        display = node.GetDisplayNode()
        assert not display.GetAutoWindowLevel() and display.GetColorNodeID().startswith("vtkMRMLColorTableNode")
    assert outputs.map_nodes["k2"].GetDisplayNode().GetColorNodeID().endswith("DivergingBlueRed.txt")
    assert outputs.map_nodes["cbv"].GetAttribute("BBBAnomaly.Unit") == "ml/100 g"

    # The ratio table equals `bbbanomaly roi-stats` on the command-line maps
    table, stats = mrml.ratio_table(outputs.map_nodes, dsc_phantom.masks["tumor"], dsc_phantom.masks["nawm"])
    cli_stats = tmp_path / "roi.json"
    assert cli_main(["roi-stats", *[str(cli_out / f"{n}.nii.gz") for n in expected_maps], "--roi",
                     str(dsc_files / "mask_tumor.nii.gz"), "--reference", str(dsc_files / "mask_nawm.nii.gz"),
                     "--roi-name", "tumor", "--reference-name", "NAWM", "--json", str(cli_stats)]) == 0
    reference_stats = json.loads(cli_stats.read_text(encoding="utf-8"))
    assert table.GetNumberOfRows() == len(expected_maps)
    columns = {table.GetColumnName(c): c for c in range(table.GetNumberOfColumns())}
    for row, name in enumerate(expected_maps):
        assert table.GetCellText(row, columns["map"]) == name
        ref = reference_stats["maps"][name]
        for column, value in (("tumor mean", ref["tumor"]["mean"]), ("NAWM median", ref["NAWM"]["median"]),
                              ("tumor sd", ref["tumor"]["sd"]), ("tumor/NAWM mean", ref["ratio_mean"])):
            cell = float(table.GetCellText(row, columns[column]))
            if value is None:  # a ratio withheld by roi-stats (reference mean ~0, e.g. NAWM K2) is NaN here
                assert np.isnan(cell), (name, column)
            else:
                assert cell == pytest.approx(value, rel=1e-4), (name, column)
    assert stats["maps"]["cbv_corrected"]["ratio_mean"] > 1.3  # the phantom's tumor has raised CBV
    assert "caveat" not in columns  # oSVD's maps carry no ROI-mean caveat


def test_dsc_run_with_segment_aif_and_curves(scene, dsc_phantom, dsc_files, tmp_path):
    signal = dsc_phantom.signal
    _, _, proxy = mrml.add_series(signal, "DSC")
    segmentation, ids = mrml.add_segmentation({"artery": dsc_phantom.masks["aif"], "nawm": dsc_phantom.masks["nawm"],
                                               "tumor": dsc_phantom.masks["tumor"]}, signal)
    request = mrml.RunRequest("dsc", {"series": proxy, "aif_mask": (segmentation, "artery"),
                                      "nawm_mask": (segmentation, "nawm")}, {"method": "tikhonov"})
    job, _, _ = run_in_scene(request, tmp_path)
    outputs = mrml.import_results(job.output_dir, proxy, "DSC tikhonov")
    cli_out = tmp_path / "cli"
    assert cli_main(["dsc", str(dsc_files / "signal.nii.gz"), "--aif-mask", str(dsc_files / "mask_aif.nii.gz"),
                     "--nawm-mask", str(dsc_files / "mask_nawm.nii.gz"), "--method", "tikhonov",
                     "--out", str(cli_out), "--quiet"]) == 0
    for name, node in outputs.map_nodes.items():
        assert np.array_equal(mrml.ijk_to_ras(node), mrml.ijk_to_ras(proxy))
        np.testing.assert_allclose(node_array(node), read_volume(cli_out / f"{name}.nii.gz").data, rtol=1e-5, atol=1e-6)
    assert "rcbv" in outputs.map_nodes  # the NAWM segment reached the pipeline

    curves = CurveSet.load(curves_in(job.output_dir))
    assert isinstance(curves.measured, np.memmap)  # the panel's curves are read lazily, a click at a time
    voxel = tuple(np.argwhere(dsc_phantom.masks["tumor"])[0])
    chart, table, labels = mrml.curve_plot(curves, {"tumor": dsc_phantom.masks["tumor"],
                                                    "NAWM": dsc_phantom.masks["nawm"]}, voxel=voxel)
    assert labels[:5] == ["AIF", "tumor", "tumor (Tikhonov fit)", "NAWM", "NAWM (Tikhonov fit)"]
    assert f"voxel {tuple(int(v) for v in voxel)}" in labels
    assert chart.GetNumberOfPlotSeriesNodes() == len(labels) and table.GetNumberOfRows() == curves.times.size
    aif_column = slicer.util.arrayFromTableColumn(table, "AIF")
    # the plotted AIF is the one the same run gives on the command line
    assert np.allclose(aif_column, np.loadtxt(cli_out / "aif.csv", delimiter=",", skiprows=1)[:, 1], rtol=1e-4)
    tumor = slicer.util.arrayFromTableColumn(table, "tumor")
    fit = slicer.util.arrayFromTableColumn(table, "tumor (Tikhonov fit)")
    assert np.corrcoef(tumor, fit)[0, 1] > 0.95  # the model's curve follows the measured one
    assert tumor.max() < 0.5 * aif_column.max()


def test_rerun_keeps_or_replaces_previous_outputs_on_request(scene, dsc_phantom, tmp_path):
    _, _, proxy = mrml.add_series(dsc_phantom.signal, "DSC")
    job, _, _ = run_in_scene(mrml.RunRequest("dsc", {"series": proxy}, {"method": "csvd"}), tmp_path)
    first = mrml.import_results(job.output_dir, proxy, "DSC csvd")
    second = mrml.import_results(job.output_dir, proxy, "DSC csvd")
    sh = mrml._subject_hierarchy()
    assert sh.GetItemName(second.folder_item) == "DSC csvd (2)" and len(mrml.run_folders("DSC csvd")) == 2
    assert all(scene.GetNodeByID(n.GetID()) is not None for n in first.map_nodes.values())
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    third = mrml.import_results(job.output_dir, proxy, "DSC csvd", replace=True)
    assert len(mrml.run_folders("DSC csvd")) == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes - len(first.map_nodes)  # 2 runs out, 1 in
    assert all(scene.GetNodeByID(n.GetID()) is None for n in first.map_nodes.values())
    assert all(scene.GetNodeByID(n.GetID()) is not None for n in third.map_nodes.values())
    assert sh.GetItemParent(sh.GetItemByDataNode(third.map_nodes["cbv"])) == third.folder_item


def test_overlay_is_set_in_every_slice_view(scene, dsc_phantom, tmp_path):
    _, _, proxy = mrml.add_series(dsc_phantom.signal, "DSC")
    views = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    job, _, _ = run_in_scene(mrml.RunRequest("dsc", {"series": proxy}, {"method": "ssvd"}), tmp_path)
    outputs = mrml.import_results(job.output_dir, proxy, "DSC")
    assert mrml.show_overlay(proxy, outputs.map_nodes["cbv"], 0.4) == 3
    for view in views:
        assert view.GetBackgroundVolumeID() == proxy.GetID()
        assert view.GetForegroundVolumeID() == outputs.map_nodes["cbv"].GetID()
        assert view.GetForegroundOpacity() == pytest.approx(0.4)
    mrml.set_overlay_opacity(0.8)
    assert all(v.GetForegroundOpacity() == pytest.approx(0.8) for v in views)


def test_bad_inputs_leave_the_scene_as_it_was(scene, dsc_phantom, tmp_path):
    signal = dsc_phantom.signal
    _, _, proxy = mrml.add_series(signal, "DSC")
    frame = mrml.add_volume_node(signal.frame(0), "one frame")
    far = mrml.add_roi((500.0, 500.0, 500.0), (5.0, 5.0, 5.0), "far ROI")
    unplaced = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced")
    empty_seg, _ = mrml.add_segmentation({"nawm": dsc_phantom.masks["nawm"]}, signal)
    empty_seg.GetSegmentation().AddEmptySegment("empty", "empty")
    before = node_ids(scene)
    cases = [
        ({"series": frame}, "single 3D volume"),
        ({"series": proxy, "aif_mask": far}, "lies outside the volume"),
        ({"series": proxy, "aif_mask": unplaced}, "has not been placed"),
        ({"series": proxy, "nawm_mask": (empty_seg, "empty")}, "is empty"),
        ({"series": proxy, "nawm_mask": (empty_seg, "no such segment")}, "has no segment"),
        ({"aif_mask": far}, "needs a DSC series"),
    ]
    for inputs, message in cases:
        with pytest.raises(InputError, match=message):
            mrml.prepare_job(mrml.RunRequest("dsc", inputs), tmp_path / "job")
        assert node_ids(scene) == before, message
    for request, message in ((mrml.RunRequest("t1flair", {"t1": proxy, "flair": frame}), "must be a single 3D"),
                             (mrml.RunRequest("t1flair", {"t1": frame}), "needs a FLAIR"),
                             (mrml.RunRequest("dmri", {"dwi": frame}), "single 3D volume")):
        with pytest.raises(InputError, match=message):
            mrml.prepare_job(request, tmp_path / "job")
        assert node_ids(scene) == before, message
    # A worker-side error (too few frames) arrives as one readable event; nothing is written
    short = Volume(signal.data[..., :6], signal.affine, signal.times[:6], signal.acquisition)
    _, _, short_proxy = mrml.add_series(short, "short")
    before = node_ids(scene)
    job, _ = mrml.prepare_job(mrml.RunRequest("dsc", {"series": short_proxy}), tmp_path / "short")
    event = InProcessRunner(job).start().poll()[-1]
    assert event["event"] == "error" and event["kind"] == "input" and "frames" in event["message"]
    assert not (tmp_path / "short" / "output").exists() and node_ids(scene) == before


def test_demo_loads_a_ready_to_run_case(scene, tmp_path):
    demo = mrml.load_dsc_demo(slices=4, snr=100)
    phantom = demo["phantom"]
    request = mrml.RunRequest("dsc", {"series": demo["series"], "aif_mask": demo["aif_roi"],
                                      "nawm_mask": (demo["segmentation"], demo["segments"]["nawm"])})
    job, reference, _ = run_in_scene(request, tmp_path)
    assert np.array_equal(read_job_input(job.inputs["aif_mask"]).data > 0, mrml.mask_from_roi(demo["aif_roi"], reference))
    assert (read_job_input(job.inputs["aif_mask"]).data > 0)[phantom.masks["aif"]].all()
    outputs = mrml.import_results(job.output_dir, demo["series"], "demo")
    rcbv = node_array(outputs.map_nodes["rcbv"])
    assert rcbv[phantom.masks["nawm"]].mean() == pytest.approx(1.0, rel=1e-4)


def test_cancelled_background_run_leaves_the_scene_as_it_was(scene, dsc_phantom, tmp_path):
    from BBBAnomalyLib.app.jobs import WorkerProcess

    _, _, proxy = mrml.add_series(dsc_phantom.signal, "DSC")
    before = node_ids(scene)
    job, _ = mrml.prepare_job(mrml.RunRequest("dsc", {"series": proxy}, {"method": "tikhonov"}), tmp_path / "job")
    worker = WorkerProcess(job, tmp_path / "job" / "job.json").start()
    worker.cancel()
    events = worker.wait(timeout=120)
    assert events[-1]["event"] == "cancelled"
    assert node_ids(scene) == before and not (tmp_path / "job" / "output").exists()


def test_phae_from_the_panel_gives_maps_and_its_reconstruction(scene, dsc_phantom, tmp_path):
    _, _, proxy = mrml.add_series(dsc_phantom.signal, "DSC")
    segmentation, ids = mrml.add_segmentation({"artery": dsc_phantom.masks["aif"]}, dsc_phantom.signal)
    request = mrml.RunRequest("dsc", {"series": proxy, "aif_mask": (segmentation, "artery")},
                              {"method": "phae", "device": "cpu"})
    job, _, _ = run_in_scene(request, tmp_path)
    outputs = mrml.import_results(job.output_dir, proxy, "DSC phae")
    assert outputs.report["phae"]["weights"] == "dsc-phae-wide"  # the default PHAE weights
    cbv = node_array(outputs.map_nodes["cbv"])
    gm, wm = dsc_phantom.masks["gm"], dsc_phantom.masks["wm"]
    assert cbv[gm].mean() > 1.5 * cbv[wm].mean()
    curves = CurveSet.load(curves_in(job.output_dir))
    # SNR 100: above the automatic guided pooling's tSNR limit, so the network read each voxel's own curve
    label = "PHAE reconstruction"
    assert list(curves.fitted) == [label] and not outputs.report["phae"]["guided_pooling"]["applied"]
    assert "phae_pooled_curves" not in outputs.map_nodes
    mean = curves.mean(gm)
    assert np.corrcoef(mean["measured"], mean[label])[0, 1] > 0.95
    # the ROI-mean bias by transit shape (dsc/phae/systematic.py) rides on the CBF node into the ratio table
    note = outputs.report["maps"]["cbf"]["caveat"]
    assert outputs.map_nodes["cbf"].GetAttribute("BBBAnomaly.Caveat") == note and "plug flow" in note
    assert outputs.map_nodes["cbv"].GetAttribute("BBBAnomaly.Caveat") is None
    table, _ = mrml.ratio_table(outputs.map_nodes, dsc_phantom.masks["tumor"], dsc_phantom.masks["nawm"])
    columns = {table.GetColumnName(c): c for c in range(table.GetNumberOfColumns())}
    rows = {table.GetCellText(r, columns["map"]): r for r in range(table.GetNumberOfRows())}
    assert table.GetCellText(rows["cbf"], columns["caveat"]) == note
    assert table.GetCellText(rows["cbv"], columns["caveat"]) == ""


def test_dce_aif_roi_box_from_the_panel_is_searched_for_its_artery(scene, tmp_path):
    from BBBAnomalyLib.dce import DCEParameters, run_dce
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    phantom = make_dce_phantom(snr=40, slices=5, seed=3)
    _, _, proxy = mrml.add_series(phantom.signal, "DCE")
    roi = aif_roi_around(phantom.masks["aif"], phantom.signal.affine)
    request = mrml.RunRequest("dce", {"series": proxy, "aif_mask": roi}, {"t10": 1.4, "rls": "none", "device": "cpu"})
    job, reference, _ = run_in_scene(request, tmp_path)
    assert job.parameters["aif_region"] is True
    box = mrml.mask_from_roi(roi, reference)
    assert box.sum() > 2 * phantom.masks["aif"].sum()  # the box holds more than the artery
    report = json.loads((tmp_path / "job" / "output" / "report.json").read_text(encoding="utf-8"))
    exact = run_dce(phantom.signal, DCEParameters(t10=1.4, rls="none"), aif_mask=phantom.masks["aif"])
    assert report["aif"]["source"] == "region"
    assert report["aif"]["peak"] == pytest.approx(float(exact.aif.max()), rel=0.1)


def test_dce_from_the_panel_with_population_aif_and_ratio_table(scene, tmp_path):
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    phantom = make_dce_phantom(snr=40, slices=5, seed=3)
    signal = phantom.signal
    _, _, proxy = mrml.add_series(signal, "DCE")
    info = mrml.describe_input(proxy)
    assert info.acquisition.repetition_time == pytest.approx(signal.acquisition.repetition_time)
    assert info.acquisition.flip_angle == pytest.approx(signal.acquisition.flip_angle)
    segmentation, ids = mrml.add_segmentation({"tumor": phantom.masks["tumor"], "nawm": phantom.masks["nawm"]}, signal)
    request = mrml.RunRequest("dce", {"series": proxy, "aif_mask": None, "tumor_mask": (segmentation, "tumor"),
                                      "nawm_mask": (segmentation, "nawm")},
                              {"model": "extended-tofts", "t10": 1.4, "device": "cpu"})
    job, _, _ = run_in_scene(request, tmp_path)
    assert "nawm_mask" not in job.inputs  # NAWM is the ratio table's reference, not a DCE input
    outputs = mrml.import_results(job.output_dir, proxy, "DCE")
    assert list(outputs.map_nodes)[:3] == ["rls", "rls_abs", "rls_uncertainty"] and "ktrans" in outputs.map_nodes
    for node in outputs.map_nodes.values():
        assert np.array_equal(mrml.ijk_to_ras(node), mrml.ijk_to_ras(proxy))
    masks = mrml.masks_on_input(proxy, {"tumor": (segmentation, "tumor"), "NAWM": (segmentation, "nawm")})
    _, stats = mrml.ratio_table(outputs.map_nodes, masks["tumor"], masks["NAWM"])
    assert stats["maps"]["ktrans"]["ratio_mean"] > 5  # the phantom's tumor leaks, its NAWM barely
    assert stats["maps"]["rls"]["tumor"]["mean"] > stats["maps"]["rls"]["NAWM"]["mean"]
    curves = CurveSet.load(curves_in(job.output_dir))
    assert "AIF" in curves.reference and len(curves.fitted) == 2


def test_dmri_from_a_dwi_node_matches_the_library(scene, tmp_path):
    from BBBAnomalyLib.dmri.parameters import DMRIParameters
    from BBBAnomalyLib.dmri.pipeline import run_dmri
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    phantom = make_dmri_phantom(1001, voxel_mm=3.0, n_directions=48, snr=30.0, tumor=True)
    dwi = phantom.dwi
    node = scene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "patient DWI")
    mrml._fill_volume_node(node, dwi.data, dwi.affine)
    node.SetNumberOfGradients(dwi.n_frames)
    for i, (b, g) in enumerate(zip(dwi.acquisition.bvals, dwi.acquisition.bvecs)):  # RAS, as Slicer keeps them
        node.SetBValue(i, float(b))
        node.SetDiffusionGradient(i, [float(v) for v in g])
    volume = mrml.volume_from_node(node)
    assert np.array_equal(volume.data, dwi.data)
    assert np.allclose(volume.acquisition.bvals, dwi.acquisition.bvals)
    assert np.allclose(volume.acquisition.bvecs, dwi.acquisition.bvecs)
    segmentation, _ = mrml.add_segmentation({"tumor": phantom.masks["tumor"], "nawm": phantom.masks["nawm"]}, dwi)
    request = mrml.RunRequest("dmri", {"dwi": node, "tumor_mask": (segmentation, "tumor"),
                                       "nawm_mask": (segmentation, "nawm")}, {"device": "cpu"})
    job, _, _ = run_in_scene(request, tmp_path)
    outputs = mrml.import_results(job.output_dir, node, "DWI anomaly")
    expected = run_dmri(dwi, DMRIParameters(device="cpu"), tumor_mask=phantom.masks["tumor"],
                        nawm_mask=phantom.masks["nawm"])
    assert list(outputs.map_nodes) == list(expected.maps)
    for name, map_node in outputs.map_nodes.items():
        assert np.array_equal(mrml.ijk_to_ras(map_node), mrml.ijk_to_ras(node))
        np.testing.assert_allclose(node_array(map_node), expected.maps[name].data, rtol=1e-4, atol=1e-5)
    anomaly = node_array(outputs.map_nodes["anomaly"])
    assert anomaly[phantom.masks["tumor"]].mean() > anomaly[phantom.masks["nawm"]].mean()


def test_t1flair_from_two_scalar_volumes_reports_the_bbb_status(scene, tmp_path):
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    phantom = make_structural_phantom(5001, enhancing=True)
    tumor = phantom.whole_tumor
    k = np.flatnonzero(tumor.any(axis=(0, 1)))
    slab = slice(max(k.min() - 2, 0), k.max() + 3)  # the slices around the tumor keep the test fast
    t1, flair = (Volume(np.ascontiguousarray(v.data[:, :, slab]), v.affine.copy()) for v in (phantom.t1, phantom.flair))
    offset = np.eye(4)
    offset[2, 3] = slab.start
    t1 = Volume(t1.data, phantom.t1.affine @ offset)
    flair = Volume(flair.data, phantom.flair.affine @ offset)
    t1_node, flair_node = mrml.add_volume_node(t1, "T1"), mrml.add_volume_node(flair, "FLAIR")
    segmentation, _ = mrml.add_segmentation({"tumor": tumor[:, :, slab], "brain": phantom.brain[:, :, slab]}, t1)
    request = mrml.RunRequest("t1flair", {"t1": t1_node, "flair": flair_node, "tumor_mask": (segmentation, "tumor"),
                                          "brain_mask": (segmentation, "brain")}, {"steps": 2, "device": "cpu"})
    job, _, _ = run_in_scene(request, tmp_path)
    outputs = mrml.import_results(job.output_dir, t1_node, "T1/FLAIR")
    status = outputs.report["bbb_status"]
    from BBBAnomalyLib.structural.identification import call_from_probability

    assert 0 <= status["probability"] <= 1  # the call reaches the scene as the report made it
    assert status["call"] == call_from_probability(status["probability"], tuple(status["indeterminate_band"])) \
        or status["call"] == "indeterminate"  # indeterminate may also come from an implausible segmentation
    assert status["tumor_roi"] == "user"
    assert list(outputs.map_nodes)[0] == "synthetic_t1gd"
    for node in outputs.map_nodes.values():
        assert np.array_equal(mrml.ijk_to_ras(node), mrml.ijk_to_ras(t1_node))
    assert outputs.map_nodes["synthetic_t1gd"].GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeGrey"
    assert curves_in(tmp_path / "job" / "output") is None  # this pipeline has no curves


def test_a_dwi_saved_by_slicer_as_nrrd_reads_with_its_gradients_in_ras(scene, tmp_path):
    """Slicer's DWI NRRD (DWMRI keys, rotated measurement frame) through read_dwi and the CLI."""
    import vtk

    from BBBAnomalyLib.dmri import read_dwi
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    dwi = make_dmri_phantom(1001, voxel_mm=3.0, n_directions=48, snr=30.0, tumor=True).dwi
    node = scene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "patient DWI")
    mrml._fill_volume_node(node, dwi.data, dwi.affine)
    angle = np.deg2rad(30.0)  # measurement frame: a rotation about z and x, not symmetric
    rz = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(angle / 2), -np.sin(angle / 2)], [0, np.sin(angle / 2), np.cos(angle / 2)]])
    frame = rz @ rx
    matrix = vtk.vtkMatrix4x4()
    for i in range(3):
        for j in range(3):
            matrix.SetElement(i, j, frame[i, j])
    node.SetMeasurementFrameMatrix(matrix)
    node.SetNumberOfGradients(dwi.n_frames)
    for i, (b, g) in enumerate(zip(dwi.acquisition.bvals, dwi.acquisition.bvecs)):
        node.SetBValue(i, float(b))  # the NRRD writer scales the unit gradients by sqrt(b / b_max)
        node.SetDiffusionGradient(i, [float(v) for v in frame.T @ g])  # unit vectors in the frame
    expected = mrml.volume_from_node(node)
    assert np.allclose(expected.acquisition.bvecs[expected.acquisition.bvals > 50],
                       dwi.acquisition.bvecs[dwi.acquisition.bvals > 50], atol=1e-6)
    path = tmp_path / "patient_dwi.nrrd"
    storage = scene.AddNewNodeByClass("vtkMRMLNRRDStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    assert "DWMRI_gradient_0001" in path.read_bytes()[:20000].decode("latin-1")
    read = read_dwi(path)
    assert np.array_equal(read.data, dwi.data) and np.allclose(read.affine, dwi.affine, atol=1e-5)
    np.testing.assert_allclose(read.acquisition.bvals, dwi.acquisition.bvals, rtol=1e-4, atol=1e-3)
    weighted = read.acquisition.bvals > 50
    np.testing.assert_allclose(read.acquisition.bvecs[weighted], dwi.acquisition.bvecs[weighted], atol=1e-5)
    assert cli_main(["dmri", str(path), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 0
    assert (tmp_path / "out" / "anomaly.nii.gz").is_file()
    # an LPS-space header with the same numbers means directions with x and y negated
    text = path.read_bytes()
    lps = tmp_path / "lps.nrrd"
    lps.write_bytes(text.replace(b"space: right-anterior-superior", b"space: left-posterior-superior", 1))
    flipped = read_dwi(lps).acquisition.bvecs[weighted]
    np.testing.assert_allclose(flipped, dwi.acquisition.bvecs[weighted] * [-1, -1, 1], atol=1e-5)
    incomplete = tmp_path / "incomplete.nrrd"
    incomplete.write_bytes(text.replace(b"DWMRI_gradient_0003:=", b"DWMRI_note_0003:=", 1))
    with pytest.raises(InputError, match="gradient table is incomplete"):
        read_dwi(incomplete)


# --- issue 13: what the panel relies on ---------------------------------------------------------------
def test_a_volume_without_image_data_is_an_input_error(scene, dsc_phantom):
    """Defect 9: arrayFromVolume raises on an empty node (it never returns None); say which volume."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty T1")
    with pytest.raises(InputError, match="empty T1"):
        mrml.volume_from_node(node)
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "empty labels")  # a brain mask not drawn yet
    _, _, proxy = mrml.add_series(dsc_phantom.signal, "DSC")
    with pytest.raises(InputError, match="empty labels"):
        mrml.mask_from_region(labels, *mrml.reference_grid(proxy), "brain mask")


def test_job_inputs_are_the_nodes_memory_uncompressed_and_read_back_exactly(scene, dsc_phantom, tmp_path):
    """Defect 6 and issue 17: nothing heavy in the GUI thread. A series goes to the worker as its
    frames' own bytes, one after another (no gzip, no stacking or transposing here); the worker
    reads back exactly the library's Volume, in C order, with geometry, times and TE. Masks, DWI
    (multi-component) and scalar volumes take the same way."""
    from BBBAnomalyLib.app import handover

    signal = Volume(dsc_phantom.signal.data[..., :7], dsc_phantom.signal.affine, dsc_phantom.signal.times[:7],
                    dsc_phantom.signal.acquisition)
    sequence, _, proxy = mrml.add_series(signal, "DSC")
    segmentation, ids = mrml.add_segmentation({"nawm": dsc_phantom.masks["nawm"]}, signal)
    job, reference = mrml.prepare_job(mrml.RunRequest("dsc", {"series": proxy, "nawm_mask": (segmentation, "nawm")}),
                                      tmp_path / "job")
    assert job.output_format == "arrays" and reference.spatial_shape == signal.spatial_shape
    raw = np.load(job.inputs["series"])  # (t, k, j, i): frame after frame, each as Slicer holds it
    assert raw.shape == (7,) + signal.spatial_shape[::-1]
    for t in range(7):
        np.testing.assert_array_equal(raw[t], slicer.util.arrayFromVolume(sequence.GetNthDataNode(t)))
    assert not any(p.suffix == ".gz" for p in (tmp_path / "job").iterdir())
    back = read_job_input(job.inputs["series"])
    assert back.data.flags.c_contiguous and back.data.dtype == np.float32
    np.testing.assert_array_equal(back.data, signal.data.astype(np.float32))
    np.testing.assert_array_equal(back.affine, mrml.world_affine(proxy))  # float64, exactly
    np.testing.assert_allclose(back.times, signal.times)
    assert back.acquisition.echo_time == pytest.approx(signal.acquisition.echo_time)
    nawm = read_job_input(job.inputs["nawm_mask"])
    assert nawm.data.dtype == np.uint8 and np.array_equal(nawm.data > 0, dsc_phantom.masks["nawm"])

    # a multi-component volume (DWI): (k, j, i, c) in the file, (i, j, k, c) back
    dwi = scene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "dwi")
    data = np.ascontiguousarray(signal.data[..., :4].astype(np.int16))
    slicer.util.updateVolumeFromArray(dwi, np.ascontiguousarray(np.swapaxes(data, 0, 2)))
    dwi.SetIJKToRASMatrix(mrml._array_to_matrix(signal.affine))
    axes, parts = mrml.node_arrays(dwi)
    path = handover.write_arrays(tmp_path / "dwi.npy", parts, axes, signal.affine)
    assert axes == "kjic" and np.array_equal(handover.read_volume(path).data, data)
    assert handover.read_volume(path).data.dtype == np.int16  # an integer series stays integer
    # a header that does not match its array is refused in one line
    header = json.loads(handover.header_path(path).read_text(encoding="utf-8"))
    handover.header_path(path).write_text(json.dumps({**header, "shape": [1, 2, 3, 4]}), encoding="utf-8")
    with pytest.raises(InputError, match="does not match its header"):
        handover.read_volume(path)


def test_maps_are_readable_zero_transparent_with_legend_and_presets(scene, tmp_path):
    """Defect 7: zero (not analysed) is transparent, every map has a legend with its unit, and the
    windows radiologists expect (rCBV 0-4, Ktrans 0-0.2 /min) are fixed presets."""
    data = np.zeros((6, 6, 3), np.float32)
    data[2:4, 2:4] = 1.5
    for name, unit, window in (("rcbv", "ratio", (0, 4)), ("ktrans", "1/min", (0, 0.2)), ("cbv", "ml/100 g", None)):
        node = mrml.add_volume_node(Volume(data, np.eye(4)), name)
        legend = mrml.apply_map_display(node, name, data, unit)
        display = node.GetDisplayNode()
        assert display.GetApplyThreshold() and 0 < display.GetLowerThreshold() < 1e-6
        assert display.GetUpperThreshold() >= data.max()
        assert legend is mrml.legend_of(node) and legend.GetTitleText() == mrml.legend_title(name, unit)
        assert (unit in legend.GetTitleText()) == (unit != "ratio")
        if window:
            assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx(window)
    k2 = mrml.add_volume_node(Volume(data - 1, np.eye(4)), "k2")
    mrml.apply_map_display(k2, "k2", data - 1, "1/s")
    assert not k2.GetDisplayNode().GetApplyThreshold()  # signed: zero is a value, not "not analysed"


def test_curve_clicks_reuse_one_chart_with_distinct_colours(scene):
    """Defect 5: three clicks left 15 black series and 3 tables; now one chart, one table, the
    series of the last click only, each in its own colour."""
    from BBBAnomalyLib.app.curves import CurveSet

    mask = np.zeros((4, 4, 2), bool)
    mask[1:3, 1:3] = True
    n, t = int(mask.sum()), np.arange(10.0)
    curves = CurveSet(t, mask, np.random.default_rng(0).random((n, 10)), "ΔR2* (1/s)",
                      {"oSVD fit": np.ones((n, 10))}, {"AIF": np.sin(t)})
    chart = None
    for voxel in ((1, 1, 0), (2, 2, 1), (1, 2, 0)):
        chart, table, labels = mrml.curve_plot(curves, {"tumor": mask}, voxel, chart)
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == chart.GetNumberOfPlotSeriesNodes() == len(labels) == 5
    colours = [chart.GetNthPlotSeriesNode(i).GetColor() for i in range(5)]
    assert len({tuple(np.round(c, 3)) for c in colours}) == 5 and all(max(c) > 0 for c in colours)
    assert "voxel (1, 2, 0)" in labels and "voxel (1, 1, 0)" not in labels
    scene.Clear(False)  # File > Close Scene: the kept chart node is gone, a new one is made
    assert not mrml.node_alive(chart)
    chart2, _, _ = mrml.curve_plot(curves, {}, None, chart)
    assert mrml.node_alive(chart2) and chart2 is not chart


def test_voxel_under_a_point_is_none_off_the_image(scene, dsc_phantom):
    """Defect 9: an unplaced crosshair (at the origin, often off the image) is not a voxel."""
    reference = dsc_phantom.signal
    inside = reference.affine @ np.r_[2, 3, 1, 1.0]
    assert mrml.voxel_in_grid(reference, inside[:3]) == (2, 3, 1)
    assert mrml.voxel_in_grid(reference, [1e4, 1e4, 1e4]) is None


@pytest.mark.parametrize("pipeline,options", [("dsc", {"slices": 3}), ("dce", {"slices": 3})])
def test_sample_cases_hold_what_the_pipeline_needs(scene, pipeline, options):
    from BBBAnomalyLib.app.pipelines import get_pipeline

    sample = mrml.load_sample(pipeline, **options)
    spec = get_pipeline(pipeline)
    assert spec.missing(sample.inputs, {"frame_interval": 1.0, "echo_time": 0.03}, {"t10": None}) == []
    info = mrml.describe_input(sample.inputs["series"])
    assert info.frames > 1 and info.frame_interval
    assert mrml.mask_from_region(sample.inputs["tumor_mask"], *mrml.reference_grid(sample.inputs["series"])).any()


def test_maps_a_pipeline_adds_later_get_a_style_by_their_name():
    """New maps (e.g. uncertainty maps) come from the run's report, not a list in the panel."""
    from BBBAnomalyLib.app import display

    assert display.map_style("ktrans_uncertainty")[0] == display.VIRIDIS
    assert display.map_style("lesion_mask") == (display.LABELS, "mask")
    assert display.map_style("something_new") == (display.RAINBOW, "positive")

"""The bridge between Slicer's MRML scene and the library (the only package that imports slicer).

Everything the Slicer panel does with nodes lives here, as plain functions, so that it runs
(and is tested in CI) with the ``slicer-core`` wheel, without the Slicer application or qt.
By what it does:

* :mod:`.inputs`  nodes -> library data: :func:`describe_input`, :func:`volume_from_node`,
  :func:`mask_from_region` (markups ROI, segment or labelmap -> mask), :func:`voxel_in_grid`;
* :mod:`.dicom_source` a series Slicer loaded from a DICOM series holding two echoes (:func:`dicom_echoes_of`),
  handed over as its DICOM files for a dual-echo run;
* :mod:`.dicom_header` what a node's DICOM files say beyond the image (:func:`dicom_header_facts`: the contrast
  given, spin or gradient echo), put into the acquisition a run receives, as the library's DICOM reader does;
* :mod:`.runs`    a run: :func:`prepare_job` (inputs -> raw arrays in the nodes' memory order + Job;
  nothing added to the scene) and :func:`import_results` (maps -> volume nodes in a subject-hierarchy folder);
* :mod:`.views`   how maps look: :func:`apply_map_display` (colour, window preset, zero
  transparent, colour legend with the unit), :func:`show_overlay`;
* :mod:`.plots`   :func:`ratio_table`, :func:`curve_plot` (one reused chart, distinct colours),
  :func:`export_table`;
* :mod:`.samples` library data -> nodes (:func:`add_series`, :func:`add_segmentation`, ...) and the
  sample case of every pipeline (:data:`SAMPLES`, :func:`load_sample`);
* :mod:`.common`  geometry and scene helpers they share.

``from BBBAnomalyLib import mrml; mrml.prepare_job(...)`` keeps working: every public name (and
the few private helpers tests use) is re-exported here.
"""

from .common import (
    ATTRIBUTE_PREFIX, RUN_FOLDER_ATTRIBUTE, _array, _array_to_matrix, _matrix_to_array, _scratch_nodes, _slicer,
    _subject_hierarchy, ijk_to_ras, node_alive, to_world, world_affine
)
from .inputs import (
    InputInfo, _input_parts, describe_input, find_sequence, mask_from_region, mask_from_roi, mask_from_segment,
    masks_on_input, node_arrays, node_header, ras_to_voxel, reference_grid, volume_from_node, voxel_in_grid
)
from .dicom_source import DicomEchoes, dicom_echoes_of, link_series
from .dicom_header import HEADER_READERS, dicom_header_facts, with_header_facts
from .plots import PALETTE, curve_plot, export_table, map_caveats, ratio_table, table_rows
from .runs import (
    RunOutputs, RunRequest, check_companions, companion_problems, import_results, prepare_job, remove_run, run_folders, write_job_input
)
from .samples import (
    SAMPLES, Sample, _fill_volume_node, add_dwi, add_roi, add_segmentation, add_series, add_volume_node,
    load_dce_demo, load_dmri_demo, load_dsc_demo, load_sample, load_t1flair_demo, roi_around
)
from .views import apply_map_display, legend_of, legend_title, set_overlay_opacity, show_overlay

__all__ = [
    "ATTRIBUTE_PREFIX", "RUN_FOLDER_ATTRIBUTE", "ijk_to_ras", "to_world", "world_affine", "node_alive",
    "InputInfo", "describe_input", "find_sequence", "mask_from_region", "mask_from_roi", "mask_from_segment",
    "masks_on_input", "node_arrays", "node_header", "ras_to_voxel", "reference_grid", "volume_from_node",
    "voxel_in_grid",
    "PALETTE", "curve_plot", "export_table", "map_caveats", "ratio_table", "table_rows",
    "DicomEchoes", "dicom_echoes_of", "link_series", "HEADER_READERS", "dicom_header_facts", "with_header_facts",
    "RunOutputs", "RunRequest", "check_companions", "companion_problems", "import_results", "prepare_job", "remove_run", "run_folders", "write_job_input",
    "SAMPLES", "Sample", "add_dwi", "add_roi", "add_segmentation", "add_series", "add_volume_node",
    "load_dce_demo", "load_dmri_demo", "load_dsc_demo", "load_sample", "load_t1flair_demo", "roi_around",
    "apply_map_display", "legend_of", "legend_title", "set_overlay_opacity", "show_overlay",
]

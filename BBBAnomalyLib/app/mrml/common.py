"""What every part of the MRML bridge shares: the lazy ``slicer`` import, matrices, geometry,
voxel arrays, the subject hierarchy and scratch nodes.

This package is the only place in BBBAnomalyLib that imports slicer, and only inside functions,
so that ``import BBBAnomalyLib.app.mrml`` works without Slicer (and without slicer-core).
"""

from __future__ import annotations

import contextlib

import numpy as np

from ...core.errors import InputError

ATTRIBUTE_PREFIX = "BBBAnomaly."
RUN_FOLDER_ATTRIBUTE = ATTRIBUTE_PREFIX + "RunFolder"


def _slicer():
    try:
        import slicer
    except ImportError as exc:  # pragma: no cover - message for people running outside Slicer
        raise ImportError("BBBAnomalyLib.app.mrml needs Slicer's MRML layer: run inside 3D Slicer, "
                          "or `pip install slicer-core`") from exc
    if getattr(slicer, "mrmlScene", None) is None:
        raise RuntimeError("slicer.mrmlScene is not set; with slicer-core, set slicer.mrmlScene = slicer.vtkMRMLScene()")
    return slicer


def _matrix_to_array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _array_to_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijk_to_ras(node) -> np.ndarray:
    """The node's own IJKToRAS (without parent transforms)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return _matrix_to_array(matrix)


def to_world(node) -> np.ndarray:
    """4x4 parent-transform-to-world matrix of a node (identity when untransformed)."""
    import vtk

    transform = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(f"'{node.GetName()}' is under a non-linear transform; harden it first "
                         "(Data module: right-click the transform, 'Harden transform')")
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _matrix_to_array(matrix)


def world_affine(node, geometry_node=None) -> np.ndarray:
    """Voxel (i, j, k) -> world RAS of ``geometry_node`` (default ``node``), parent transform of ``node``."""
    return to_world(node) @ ijk_to_ras(geometry_node or node)


def _array(volume_node) -> np.ndarray:
    """Voxel array in (i, j, k[, component]) order, copied (never a view of the node's data).

    ``slicer.util.arrayFromVolume`` raises (it never returns None) when the node has no image
    data; that case is checked first so the user reads which volume is empty.
    """
    slicer = _slicer()
    if volume_node.GetImageData() is None:
        raise InputError(f"volume '{volume_node.GetName()}' has no image data; load or compute it first")
    arr = slicer.util.arrayFromVolume(volume_node)
    return np.ascontiguousarray(np.swapaxes(arr, 0, 2))


def _subject_hierarchy():
    slicer = _slicer()
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)


def node_alive(node) -> bool:
    """Whether a node we kept a reference to is still in the current scene (File > Close Scene
    and scene replacement remove nodes without telling the Python objects)."""
    if node is None:
        return False
    scene = _slicer().mrmlScene
    return node.GetScene() is scene and scene.GetNodeByID(node.GetID()) is node


@contextlib.contextmanager
def _scratch_nodes():
    """Remove every node added to the scene inside the block (temporary labelmaps, their display
    and colour nodes), so that reading a segment leaves the scene as it was."""
    scene = _slicer().mrmlScene
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield scene
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(node)

"""The library runs on the numpy/scipy that Slicer ships, not only on the newest.

Why: the panel's worker runs under PythonSlicer with Slicer's own packages. Slicer 5.10 (Python 3.12) ships
numpy 2.0.2 and scipy 1.13.1; the project is developed on newer ones, and pyproject.toml promises numpy >= 1.24 and
scipy >= 1.10. Round 17's Slicer audit found two calls newer than that (read in Slicer's SuperBuild files):
``scipy.special.sph_harm_y`` (scipy 1.15) broke every dMRI run in Slicer 5.10, and ``np.trapezoid`` (numpy 2.0) broke
PHAE training on numpy 1.x. The whole suite was also run once against Slicer 5.10's stack (docs/slicer_panel.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import scipy.special

from BBBAnomalyLib.dmri import gradients

ROOT = Path(__file__).resolve().parents[1]

# numpy >= 2.0 / scipy >= 1.15 names the library must not use while pyproject.toml allows older ones
NEWER_NUMPY = {"trapezoid", "concat", "permute_dims", "unique_values", "unique_counts", "unique_inverse", "unique_all",
               "isdtype", "bitwise_count", "cumulative_sum", "cumulative_prod", "astype", "matrix_transpose", "vecdot"}
NEWER_SCIPY_SPECIAL = {"sph_harm_y", "sph_harm_y_all", "sph_legendre_p", "assoc_legendre_p"}


def _directions(n: int = 30) -> np.ndarray:
    rng = np.random.default_rng(3)
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def test_the_sh_basis_is_the_real_symmetric_harmonics_in_closed_form():
    """Columns 0 (Y00) and 3 (Y20) against their formulas, and the basis orthonormal on a dense sphere."""
    d = _directions()
    basis = gradients.sh_basis(d, 2)
    assert basis.shape == (30, 6)
    np.testing.assert_allclose(basis[:, 0], 0.5 / np.sqrt(np.pi), rtol=1e-12)
    y20 = np.sqrt(5 / (16 * np.pi)) * (3 * d[:, 2] ** 2 - 1)
    np.testing.assert_allclose(basis[:, 3], y20, rtol=1e-10, atol=1e-12)
    # orthonormal: mean of B^T B over many uniform directions * 4 pi -> identity
    dense = _directions(200_000)
    gram = gradients.sh_basis(dense, 4).T @ gradients.sh_basis(dense, 4) * (4 * np.pi / len(dense))
    np.testing.assert_allclose(gram, np.eye(15), atol=0.03)


def test_scipy_without_sph_harm_y_gives_the_same_basis_through_the_older_function(monkeypatch):
    """Slicer 5.10's scipy 1.13 has only sph_harm(m, n, azimuth, polar): the fallback maps the arguments."""
    reference = gradients.sh_basis(_directions(), 6)
    if hasattr(scipy.special, "sph_harm_y"):
        newer = scipy.special.sph_harm_y
        monkeypatch.delattr(scipy.special, "sph_harm_y")
        # the older function, as scipy < 1.15 defines it: order first, azimuth before polar
        monkeypatch.setattr(scipy.special, "sph_harm", lambda m, n, azimuth, polar: newer(n, m, polar, azimuth),
                            raising=False)
    else:  # an old scipy: compare the fallback with the closed form above instead
        pytest.skip("this scipy predates sph_harm_y; the closed-form test covers the fallback")
    np.testing.assert_array_equal(gradients.sh_basis(_directions(), 6), reference)


def _dotted(node: ast.AST) -> str | None:
    """``scipy.special`` for the expression scipy.special; None for anything but names and attributes."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _attribute_uses(tree: ast.AST, module_names: set[str]) -> set[str]:
    """Names read as <alias>.<name> where <alias> is one of ``module_names``, plus names imported from them."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _dotted(node.value) in module_names:
            used.add(node.attr)
        if isinstance(node, ast.ImportFrom) and node.module in module_names:
            used.update(alias.name for alias in node.names)
    return used


def test_the_library_uses_no_numpy_or_scipy_name_newer_than_its_declared_minimum():
    offenders = []
    for path in sorted((ROOT / "BBBAnomalyLib").rglob("*.py")) + sorted((ROOT / "BBBAnomaly").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name in _attribute_uses(tree, {"np", "numpy"}) & NEWER_NUMPY:
            offenders.append(f"{path.relative_to(ROOT)}: numpy.{name}")
        for name in _attribute_uses(tree, {"scipy.special", "special"}) & NEWER_SCIPY_SPECIAL:
            if not (path.name == "gradients.py" and name == "sph_harm_y"):  # read through hasattr, with the fallback
                offenders.append(f"{path.relative_to(ROOT)}: scipy.special.{name}")
    assert not offenders, offenders
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"numpy>=1.24"' in text and '"scipy>=1.10"' in text  # the minima this test keeps true

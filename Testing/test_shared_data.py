"""Tests over the large reference data in ../shared/data (run in CI; skipped where it is absent)."""

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.phantoms import anatomy

pytestmark = pytest.mark.shared_data
REPO = Path(__file__).resolve().parents[1]


def test_shipped_anatomy_is_exactly_what_the_mni_templates_give(shared_data, tmp_path):
    """The demo's tissue map is derived, not invented: re-derive it and compare byte for byte."""
    spec = importlib.util.spec_from_file_location("make_anatomy", REPO / "scripts" / "make_phantom_anatomy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.derive(shared_data / "templates" / "mni152_fsl", tmp_path)
    shipped = Path(anatomy.__file__).parent / "data"
    for name in ("mni152_2mm_pve.nii.gz", "mni152_2mm_brain_mask.nii.gz"):
        new, old = nib.load(tmp_path / name), nib.load(shipped / name)
        np.testing.assert_array_equal(np.asarray(new.dataobj), np.asarray(old.dataobj))
        np.testing.assert_allclose(new.affine, old.affine)


def test_osipi_references_in_testing_data_are_copies_of_shared(shared_data):
    for name in ("ParkerAIF_ref.csv", "GeorgiouAIF_ref.csv", "LICENSE_head.txt"):
        assert (REPO / "Testing" / "Data" / "osipi" / name).read_bytes() == (shared_data / "osipi" / name).read_bytes()


def test_real_images_texture_level_for_the_s0_pooling(shared_data):
    """scripts/validate_guided_pooling.py --real-texture: the S0-texture level the pooling meets, measured on the real
    cases' T2 images (measured 2026-12-06: neighbourhood CoV 4.6-6.2 %, noise 3.1-3.4 %, whole-WM CoV 13-18 %). The
    validation's 5 % and 6 % texture rows rest on these numbers."""
    spec = importlib.util.spec_from_file_location("validate_guided_pooling", REPO / "scripts" / "validate_guided_pooling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.real_texture(shared_data / "brats")
    assert {r["case"] for r in rows} == {case for case, _, _ in module.REAL_CASES} and len(rows) == 6
    for r in rows:
        assert r["wm_voxels"] > (200_000 if r["grid"] == "1 mm" else 20_000), r
        assert 2.0 < r["noise_pct"] < r["local_cov_pct"] < 8.0 < r["cov_pct"] < 25.0, r
    # the spatially correlated S0 factor of the "real texture" rows: texture without tissue contrast or shading
    factor = module.real_texture_factor((74, 92, 12), shared_data / "brats")
    textured = factor != 1.0
    assert factor.shape == (74, 92, 12) and 0.7 <= factor.min() and factor.max() <= 1.3
    assert 0.15 < textured.mean() < 0.6  # tissue interiors of the real brain (measured 0.28 of the block)
    assert abs(float(factor[textured].mean()) - 1.0) < 0.03  # no tissue contrast left: a ratio to its class mean
    assert 0.04 < float(factor[textured].std()) < 0.15  # measured 0.09

"""The T1/FLAIR pipeline end to end with the bundled demo weights, on small phantom slabs."""

import json

import numpy as np
import pytest

from BBBAnomalyLib import CancelledError, InputError
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.io import read_volume, write_volume
from BBBAnomalyLib.structural import MAP_INFO, T1FlairParameters, run_t1flair
from BBBAnomalyLib.core.volume import Volume

FAST = T1FlairParameters(steps=2, device="cpu")


def _slab(phantom, n=10):
    """Axial slices around the tumor (or the brain's middle), with the affine moved accordingly."""
    from BBBAnomalyLib.phantoms.structural import StructuralPhantom

    seg = phantom.seg.data
    k = int(np.argmax((seg > 0).sum(axis=(0, 1)))) if seg.any() else seg.shape[2] // 2
    k0 = max(0, k - n // 2)
    shift = np.eye(4)
    shift[2, 3] = k0
    affine = phantom.t1.affine @ shift
    cut = lambda a: np.ascontiguousarray(a[:, :, k0:k0 + n])
    vol = lambda v: Volume(cut(v.data), affine)
    return StructuralPhantom(vol(phantom.t1), vol(phantom.flair), vol(phantom.t1gd), vol(phantom.seg),
                             cut(phantom.brain), phantom.enhancing)


@pytest.fixture(scope="module")
def slab():
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    return _slab(make_structural_phantom(5001, enhancing=True))


def test_maps_on_the_t1_grid_and_a_complete_report(slab, tmp_path):
    t1_before = slab.t1.data.copy()
    seen = []
    res = run_t1flair(slab.t1, slab.flair, FAST, brain_mask=slab.brain, tumor_mask=slab.whole_tumor,
                      progress=lambda f, m: seen.append(f))
    assert np.array_equal(slab.t1.data, t1_before)  # input untouched
    assert list(res.maps)[:4] == ["synthetic_t1gd", "enhancement", "enhancement_uncertainty", "anomaly"]
    assert set(res.maps) <= set(MAP_INFO)
    for vol in res.maps.values():
        assert vol.data.shape == slab.t1.spatial_shape and np.array_equal(vol.affine, slab.t1.affine)
        assert np.isfinite(vol.data).all() and np.all(vol.data[~slab.brain] == 0)
    synth = res.maps["synthetic_t1gd"].data[slab.brain]
    assert 0 <= synth.min() and synth.max() <= 255 and 40 < np.median(synth) < 200
    # the synthetic T1Gd is the normalised T1 plus the (non-negative) enhancement map, voxel for voxel
    from BBBAnomalyLib.structural.normalisation import normalise_0_255

    t1_0255 = normalise_0_255(slab.t1.data, slab.brain, "t1")
    added = res.maps["enhancement"].data
    assert np.all(added >= 0) and np.all(res.maps["enhancement_uncertainty"].data >= 0)
    np.testing.assert_allclose(res.maps["synthetic_t1gd"].data, np.clip(t1_0255 + added, 0, 255), atol=1e-3)
    bbb = res.report["bbb_status"]
    p, (low, high) = bbb["probability"], bbb["indeterminate_band"]
    assert bbb["call"] == ("disrupted" if p >= high else "intact" if p <= low else "indeterminate") or (
        bbb["call"] == "indeterminate" and bbb["reasons"])
    assert bbb["tumor_roi"] == "user" and bbb["low_confidence"] is (bbb["call"] == "indeterminate")
    assert rep_has_applicability(res.report)
    assert set(bbb["per_label_scores"]) >= {"enhancing", "non_enhancing"}
    rep = res.report
    assert rep["pipeline"] == "t1flair" and rep["parameters"]["steps"] == 2
    assert {"synthesis", "identifier", "cae"} <= set(rep["weights"]) and rep["weights"]["synthesis"]["sha256"]
    assert {"versions", "summary", "timings_s", "warnings"} <= set(rep)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and res.curves() is None
    json.dumps(rep)
    out = res.write(tmp_path / "nrrd", suffix=".nrrd")
    back = read_volume(out / "synthetic_t1gd.nrrd")
    assert np.allclose(back.affine, slab.t1.affine) and np.allclose(back.data, res.maps["synthetic_t1gd"].data)
    with pytest.raises(InputError, match="already exists"):
        res.write(tmp_path / "nrrd")


def rep_has_applicability(report):
    block = report["applicability"]
    names = {c["name"] for c in block["checks"]}
    return {"slice_thickness", "in_plane_spacing", "coverage_extent", "coverage_slices", "skull_stripped",
            "t1_contrast", "flair_contrast", "registration_overlap"} <= names and set(block["maps"]) >= {"anomaly"}


def test_same_seed_same_synthesis(slab):
    import torch

    threads = torch.get_num_threads()
    a = run_t1flair(slab.t1, slab.flair, T1FlairParameters(steps=1, device="cpu", anomaly_map=False, threads=1),
                    brain_mask=slab.brain, tumor_mask=slab.whole_tumor)
    b = run_t1flair(slab.t1, slab.flair, T1FlairParameters(steps=1, device="cpu", anomaly_map=False),
                    brain_mask=slab.brain, tumor_mask=slab.whole_tumor)
    assert np.allclose(a.maps["synthetic_t1gd"].data, b.maps["synthetic_t1gd"].data, atol=1e-3)
    assert "anomaly" not in a.maps and torch.get_num_threads() == threads  # the thread setting is restored


def test_no_tumor_roi_on_normal_anatomy_is_reported_as_low_confidence():
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    normal = _slab(make_structural_phantom(5002, tumor=False), n=6)
    res = run_t1flair(normal.t1, normal.flair, T1FlairParameters(steps=1, device="cpu", anomaly_map=False))
    bbb = res.report["bbb_status"]
    assert bbb["tumor_roi"] == "segmentation head" and bbb["call"] == "indeterminate" and bbb["low_confidence"] is True
    assert not bbb["roi_plausible"] and bbb["reasons"]
    assert any("INDETERMINATE" in w for w in res.report["warnings"])
    assert any("brain mask computed" in w for w in res.report["warnings"])


def test_flair_on_another_grid_is_resampled_with_a_notice(slab):
    fine = np.repeat(np.repeat(slab.flair.data, 2, axis=0), 2, axis=1)  # 1 mm in-plane, same field of view
    affine = slab.flair.affine.copy()
    affine[:3, 0] /= 2
    affine[:3, 1] /= 2
    affine[:3, 3] -= 0.25 * (slab.flair.affine[:3, 0] + slab.flair.affine[:3, 1])  # keep the voxel corners
    flair = Volume(fine, affine)
    res = run_t1flair(slab.t1, flair, T1FlairParameters(steps=1, device="cpu", anomaly_map=False),
                      brain_mask=slab.brain, tumor_mask=slab.whole_tumor)
    assert any("resampled onto the T1 grid" in w for w in res.report["warnings"])
    assert res.maps["synthetic_t1gd"].data.shape == slab.t1.spatial_shape
    plain = run_t1flair(slab.t1, slab.flair, T1FlairParameters(steps=1, device="cpu", anomaly_map=False,
                                                                detail_from_t1=False),
                        brain_mask=slab.brain, tumor_mask=slab.whole_tumor).maps["synthetic_t1gd"].data
    assert np.all(plain[~slab.brain] == 0) and 0 <= plain.min() and plain.max() <= 255
    far = Volume(fine, affine @ np.diag([1, 1, 1, 1.0]) + np.array([[0, 0, 0, 900]] + [[0, 0, 0, 0]] * 3))
    with pytest.raises(InputError, match="do not overlap"):
        run_t1flair(slab.t1, far, FAST, brain_mask=slab.brain)


def test_cancel_stops_cleanly_and_bad_input_is_refused(slab, tmp_path):
    def cancel(fraction, message):
        if fraction > 0.2:
            raise CancelledError("user cancelled")

    with pytest.raises(CancelledError):
        run_t1flair(slab.t1, slab.flair, FAST, brain_mask=slab.brain, progress=cancel)
    with pytest.raises(InputError, match="steps"):
        T1FlairParameters(steps=0)
    with pytest.raises(InputError, match="not on the input's voxel grid|shape"):
        run_t1flair(slab.t1, slab.flair, FAST, brain_mask=np.ones((3, 3, 3), bool))


def test_command_line_writes_the_maps_and_report(slab, tmp_path):
    for name, vol in (("t1", slab.t1), ("flair", slab.flair)):
        write_volume(vol, tmp_path / f"{name}.nii.gz")
    write_volume(Volume(slab.whole_tumor.astype(np.uint8), slab.t1.affine), tmp_path / "tumor.nii.gz")
    write_volume(Volume(slab.brain.astype(np.uint8), slab.t1.affine), tmp_path / "brain.nii.gz")
    out = tmp_path / "out"
    code = main(["t1flair", "--t1", str(tmp_path / "t1.nii.gz"), "--flair", str(tmp_path / "flair.nii.gz"),
                 "--mask", str(tmp_path / "brain.nii.gz"), "--tumor-mask", str(tmp_path / "tumor.nii.gz"),
                 "--steps", "1", "--device", "cpu", "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["bbb_status"]["tumor_roi"] == "user"
    for name in ("synthetic_t1gd", "anomaly"):
        vol = read_volume(out / f"{name}.nii.gz")
        assert vol.data.shape == slab.t1.spatial_shape and np.allclose(vol.affine, slab.t1.affine, atol=1e-4)
    assert main(["t1flair", "--t1", str(tmp_path / "t1.nii.gz"), "--flair", str(tmp_path / "flair.nii.gz"),
                 "--steps", "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.shared_data
def test_runs_on_a_real_brats_space_case(shared_data):
    from BBBAnomalyLib.structural.cases import find_case_files

    files = find_case_files(shared_data / "brats" / "TCGA-DU-7294")
    t1, flair = read_volume(files["t1"]), read_volume(files["flair"])
    res = run_t1flair(t1, flair, T1FlairParameters(steps=1, device="cpu"))
    for vol in res.maps.values():
        assert vol.data.shape == t1.spatial_shape and np.array_equal(vol.affine, t1.affine)
    brain = res.brain_mask
    assert 0.5e6 < brain.sum() < 3e6  # an adult brain at 1 mm: about 1-2 litres
    synth = res.maps["synthetic_t1gd"].data[brain]
    assert 0 <= synth.min() and synth.max() <= 255 and 30 < np.median(synth) < 200
    assert np.all(res.maps["anomaly"].data >= 0)
    assert res.report["bbb_status"]["call"] in ("intact", "disrupted", "indeterminate")


def test_an_identifier_at_chance_on_real_scans_gives_a_patient_scan_no_call(slab, tmp_path):
    """Issue 15: the bundled identifiers' leave-one-case-out record on real scans is at chance (their cards'
    real_evidence), so on a patient scan p(disrupted) is shrunk to 0.5 and the call is indeterminate, saying why;
    the phantom calibration is what `status_evidence="phantom"` reports; weights with a good real record keep
    their p. The synthetic T1Gd (the enhancer's) does not depend on any of it."""
    import shutil

    from BBBAnomalyLib.structural.identification import call_from_probability
    from BBBAnomalyLib.weights import WEIGHTS_DIR

    base = dict(steps=1, device="cpu", anomaly_map=False)
    run = lambda **kw: run_t1flair(slab.t1, slab.flair, T1FlairParameters(**base, **kw), brain_mask=slab.brain,
                                   tumor_mask=slab.whole_tumor)
    patient, phantom = run(), run(status_evidence="phantom")
    real, own = patient.report["bbb_status"], phantom.report["bbb_status"]
    assert real["probability"] == 0.5 and real["call"] == "indeterminate" and real["low_confidence"]
    assert real["identifier_probability"] == pytest.approx(own["probability"], abs=1e-12)
    assert real["real_evidence"]["weight"] == 0.0 and real["real_evidence"]["runs"] >= 4
    assert any("record on real scans" in r for r in real["reasons"])
    assert any("INDETERMINATE" in w and "record on real scans" in w for w in patient.report["warnings"])
    assert own["real_evidence"] is None and patient.report["parameters"]["status_evidence"] == "real"
    assert own["call"] == call_from_probability(own["probability"], own["indeterminate_band"]) or (
        own["call"] == "indeterminate" and own["reasons"])
    assert np.array_equal(patient.maps["synthetic_t1gd"].data, phantom.maps["synthetic_t1gd"].data)
    from BBBAnomalyLib.structural.figures import t1flair_figure  # the figure shows both p's and the reason

    drawn = t1flair_figure(tmp_path / "patient.png", slab.t1, slab.flair.data, patient, tumor=slab.whole_tumor)
    assert drawn.stat().st_size > 10_000

    # the same weights with a (made-up) record that separates 6 + 6 real runs perfectly: p is not shrunk
    card = json.loads((WEIGHTS_DIR / "t1flair-identifier-demo.json").read_text(encoding="utf-8"))
    card["real_evidence"] = {"runs": [{"label": k % 2, "p": 0.2 + 0.6 * (k % 2)} for k in range(12)], "source": "test"}
    shutil.copy(WEIGHTS_DIR / "t1flair-identifier-demo.pt", tmp_path / "strong.pt")
    (tmp_path / "strong.json").write_text(json.dumps(card), encoding="utf-8")
    strong = run(identifier_weights=str(tmp_path / "strong.pt")).report["bbb_status"]
    assert strong["real_evidence"]["weight"] == 1.0 and strong["probability"] == pytest.approx(own["probability"])
    with pytest.raises(InputError, match="status_evidence"):
        T1FlairParameters(status_evidence="clinical")

"""Issue 14, round 13: the ROI-mean bias of PHAE CBF that no per-voxel map shows (dsc/phae/systematic.py) reaches
the reader of a ROI: the report, `bbbanomaly roi-stats` and (test_mrml.py) the panel's ratio table."""

import copy
import json

import numpy as np
import pytest

from BBBAnomalyLib.cli import main as cli_main
from BBBAnomalyLib.dsc.phae.systematic import CARD_METRIC, roi_systematic_bias
from BBBAnomalyLib.io import write_volume
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.weights import read_card


def _card(name="dsc-phae-wide"):
    return read_card(name)[0]


def test_the_numbers_are_the_cards_own_and_a_card_without_them_states_nothing():
    card = _card()
    metric = card["metrics"][CARD_METRIC]["mean_roi_bias_pct_noiseless_snr50"]
    out = roi_systematic_bias(card)
    shapes = out["cbf_roi_mean_bias_pct_by_residue_shape"]
    assert shapes["plug flow"] == sorted(float(v) for v in metric["box"])
    assert shapes["exponential"] == sorted(float(v) for v in metric["exponential"])
    assert out["cbf_roi_mean_bias_pct_transport_dispersion"] == {
        k: float(v) for k, v in card["metrics"][CARD_METRIC]["vascular_dispersion_exponential_gm_pct_noiseless"].items()}
    # the sentence is built from those numbers: change the card and the note follows
    changed = copy.deepcopy(card)
    changed["metrics"][CARD_METRIC]["mean_roi_bias_pct_noiseless_snr50"]["box"] = [70, 90]
    assert "+90 %" in roi_systematic_bias(changed)["note"] and "+90 %" not in out["note"]
    lo = min(v[0] for k, v in shapes.items() if k not in ("exponential", "Lorentzian"))
    hi = max(v[1] for v in shapes.values())
    assert f"{lo:+.0f}..{hi:+.0f} %" in out["note"] and "phae_cbf_uncertainty does not include" in out["note"]
    assert roi_systematic_bias({"metrics": {CARD_METRIC: {"mean_roi_bias_pct_noiseless_snr50": {"box": "n/a"}}}}) is None


def test_the_ratio_ranges_join_the_note_where_the_card_has_them():
    """Round 15: the tumour/NAWM ratio's bias by pair of shapes, from the card, in the order the note says them."""
    from BBBAnomalyLib.dsc.phae.systematic import CARD_RATIO_METRIC

    card = copy.deepcopy(_card())
    card["metrics"].pop(CARD_RATIO_METRIC, None)
    plain = roi_systematic_bias(card)
    assert "tumour/NAWM" not in plain["note"] and plain["tumour_nawm_ratio_bias_pct_by_shape_pair"] == {}
    card["metrics"][CARD_RATIO_METRIC] = {"mean_ratio_bias_pct": {"tumour_less_homogeneous": [-50, -15],
                                                                  "same_shape": [-24, 0],
                                                                  "tumour_more_homogeneous": [53, 4]}}
    out = roi_systematic_bias(card)
    assert list(out["tumour_nawm_ratio_bias_pct_by_shape_pair"]) == ["same_shape", "tumour_more_homogeneous",
                                                                     "tumour_less_homogeneous"]
    assert out["tumour_nawm_ratio_bias_pct_by_shape_pair"]["tumour_more_homogeneous"] == [4.0, 53.0]
    assert out["note"].startswith(plain["note"])
    assert ("As a tumour/NAWM ratio it reads on average -24..+0 % where both share a transit shape, +4..+53 % where "
            "the tumour's transit is more homogeneous than NAWM's and -50..-15 % where it is less homogeneous") in out["note"]
    card["metrics"][CARD_RATIO_METRIC] = {"mean_ratio_bias_pct": {"same_shape": "n/a"}}
    assert roi_systematic_bias(card)["note"] == plain["note"]


torch = pytest.importorskip("torch")


@pytest.mark.usefixtures("one_torch_thread")
def test_a_phae_run_carries_the_note_to_its_cbf_entry_and_roi_stats_prints_it(dsc_phantom, tmp_path, capsys):
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc

    m = dsc_phantom.masks
    runs = {}
    for method in ("phae", "osvd"):
        res = run_dsc(dsc_phantom.signal, DSCParameters(method=method, kh=1.0, density=1.0, device="cpu"),
                      aif_mask=m["aif"], brain_mask=m["brain"])
        runs[method] = res.write(tmp_path / method)
    report = json.loads((runs["phae"] / "report.json").read_text(encoding="utf-8"))
    note = report["phae"]["roi_systematic_bias"]["note"]
    assert report["maps"]["cbf"]["caveat"] == note
    assert [k for k, v in report["maps"].items() if "caveat" in v] == ["cbf"]  # the other maps state nothing
    assert not any("caveat" in v for v in json.loads((runs["osvd"] / "report.json").read_text())["maps"].values())
    for label in ("tumor", "nawm"):
        write_volume(Volume(m[label].astype(np.uint8), dsc_phantom.signal.affine), tmp_path / f"{label}.nii.gz")
    capsys.readouterr()
    args = ["--roi", str(tmp_path / "tumor.nii.gz"), "--reference", str(tmp_path / "nawm.nii.gz")]
    assert cli_main(["roi-stats", str(runs["phae"] / "cbf.nii.gz"), str(runs["phae"] / "cbv.nii.gz"), *args]) == 0
    printed = capsys.readouterr().out
    assert f"note: cbf: {note}" in printed and "note: cbv" not in printed
    assert cli_main(["roi-stats", str(runs["osvd"] / "cbf.nii.gz"), *args, "--json", "-"]) == 0
    assert "caveat" not in json.loads(capsys.readouterr().out)["maps"]["cbf"]
    assert cli_main(["roi-stats", str(runs["phae"] / "cbf.nii.gz"), *args, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["maps"]["cbf"]["caveat"] == note


def test_bids_roistats_keep_the_caveat_of_the_runs_report(tmp_path):
    """`bbbanomaly bids ... participant` reads the caveats from the run's report.json before its outputs are moved
    into BIDS names, and the participant's *_roistats.json keeps them beside the ratios."""
    from types import SimpleNamespace

    from BBBAnomalyLib.bids.derivatives import roi_ratios
    from BBBAnomalyLib.bids.participant import _report_maps
    from BBBAnomalyLib.roistats import map_caveat

    work = tmp_path / "work"
    work.mkdir()
    note = "an ROI mean of this map reads high for plug flow"
    (work / "report.json").write_text(json.dumps({"maps": {"cbf": {"unit": "ml/100 g/min", "caveat": note},
                                                           "cbv": {"unit": "ml/100 g"}}}), encoding="utf-8")
    caveats = {name: map_caveat(name, work) for name in _report_maps(work)}
    assert caveats == {"cbf": note, "cbv": ""}
    assert _report_maps(tmp_path / "missing") == [] and map_caveat("cbf", tmp_path / "missing") == ""
    affine = np.eye(4)
    rng = np.random.default_rng(0)
    tumor = np.zeros((6, 6, 4), bool)
    tumor[1:3, 1:3] = True
    nawm = np.zeros_like(tumor)
    nawm[4:, 4:] = True
    paths = {}
    for name in ("cbf", "cbv"):
        paths[name] = tmp_path / f"{name}.nii.gz"
        write_volume(Volume(rng.uniform(1, 2, tumor.shape).astype(np.float32), affine), paths[name])
    for label, mask in (("tumor", tumor), ("nawm", nawm)):
        write_volume(Volume(mask.astype(np.uint8), affine), tmp_path / f"{label}.nii.gz")
    job = SimpleNamespace(masks={"tumor": tmp_path / "tumor.nii.gz", "nawm": tmp_path / "nawm.nii.gz"},
                          source=SimpleNamespace(path=tmp_path / "sub-01_dsc.nii.gz"), pipeline="dsc")
    stats = roi_ratios(paths, job, None, caveats)
    assert stats["maps"]["cbf"]["caveat"] == note and "caveat" not in stats["maps"]["cbv"]
    assert stats["maps"]["cbf"]["ratio_mean"] is not None


@pytest.mark.usefixtures("one_torch_thread")
def test_the_dsc_command_prints_the_note_beside_a_phae_cbf_ratio(dsc_files, tmp_path, capsys):
    args = ["--aif-mask", str(dsc_files / "mask_aif.nii.gz"), "--nawm-mask", str(dsc_files / "mask_nawm.nii.gz"),
            "--tumor-mask", str(dsc_files / "mask_tumor.nii.gz")]
    for method in ("phae", "osvd"):
        capsys.readouterr()
        device = ["--device", "cpu"] if method == "phae" else []
        assert cli_main(["dsc", str(dsc_files / "signal.nii.gz"), *args, "--method", method, *device,
                         "--out", str(tmp_path / method)]) == 0
        printed = capsys.readouterr().out
        assert "tumor/NAWM:" in printed and "cbf" in printed.split("tumor/NAWM:")[1].splitlines()[0]
        report = json.loads((tmp_path / method / "report.json").read_text(encoding="utf-8"))
        if method == "phae":
            assert f"  note: cbf: {report['maps']['cbf']['caveat']}" in printed
        else:
            assert "note: cbf" not in printed


def test_every_bundled_phae_card_holds_its_own_measured_numbers():
    """The cards' metric is computed by phae_world.residue_card_metric from a `residues` run kept in docs/figures
    (round 12 for the default, round 13 for the others), never typed: recomputing gives the card's numbers."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))
    try:
        import phae_world
    finally:
        sys.path.remove(str(root / "scripts"))
    from BBBAnomalyLib.dsc.phae.systematic import CARD_RATIO_METRIC

    others = ("dsc-phae-fast", "dsc-phae-world", "dsc-phae-grid", "dsc-phae-sim")

    def kept(default_run, others_run):  # {weights: its kept run}: the default's, then the other weights'
        runs = {"dsc-phae-wide": default_run, **{name: others_run for name in others}}
        return {name: json.loads((root / "docs" / "figures" / f).read_text(encoding="utf-8")) for name, f in runs.items()}

    for name, res in kept("phae_round12_residues.json", "phae_round13_residues_other_weights.json").items():
        computed = phae_world.residue_card_metric(res, f"PHAE {name}")
        card = _card(name)["metrics"][CARD_METRIC]
        for key in ("mean_roi_bias_pct_noiseless_snr50", "vascular_dispersion_exponential_gm_pct_noiseless"):
            assert card[key] == computed[key], (name, key)
        assert roi_systematic_bias(_card(name)) is not None
    # round 15: the tumour/WM ratio by pair of shapes
    for name, pairs in kept("phae_round15_shape_pairs.json", "phae_round15_shape_pairs_other_weights.json").items():
        assert _card(name)["metrics"][CARD_RATIO_METRIC] == phae_world.shape_pair_card_metric(pairs, f"PHAE {name}"), name
        assert "As a tumour/NAWM ratio" in roi_systematic_bias(_card(name))["note"]


@pytest.mark.usefixtures("one_torch_thread")
def test_after_adapt_the_note_says_the_numbers_are_the_bundled_weights(dsc_phantom):
    from BBBAnomalyLib.dsc import DSCParameters, run_dsc

    m = dsc_phantom.masks
    res = run_dsc(dsc_phantom.signal, DSCParameters(method="phae", kh=1.0, density=1.0, device="cpu",
                                                     phae_weights="dsc-phae-sim", phae_adapt=True, phae_adapt_steps=2),
                  aif_mask=m["aif"], brain_mask=m["brain"])
    note = res.report["phae"]["roi_systematic_bias"]["note"]
    assert "--adapt fine-tuned them on this case" in note and res.report["maps"]["cbf"]["caveat"] == note
    assert note.startswith(roi_systematic_bias(_card("dsc-phae-sim"))["note"])

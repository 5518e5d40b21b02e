"""`--blood-t10` (DCEParameters.blood_t10): the measured AIF converted with arterial blood's own T10.

A single --t10 of tissue used for the artery too read the DCE reference object's arterial AIF 2.4 times high
(25 mM for 10.4) and Ktrans, ve, vp low by that factor; a T10 map whose artery is wrong (inflow in a VFA map) does
the same. With --blood-t10 the AIF's voxels (drawn, a search region's, the automatic AIF's) are converted with
blood's T10 and the tissue keeps its own; without it nothing changes. Real runs of the phantom, no mocks.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from bad_input_helpers import assert_refused

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dce import DCEParameters, run_dce

#: The tissue T10 a user gives as one number (the README's example): grey matter-like, shorter than blood's.
TISSUE_T10 = 1.4


@pytest.fixture(scope="module")
def phantom():
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    return make_dce_phantom(snr=40, slices=4, seed=3)


@pytest.fixture(scope="module")
def blood_t10(phantom):
    """The phantom's own arterial T10 [s] (1.6 s: blood at 3 T), read from its truth in the artery."""
    values = phantom.truth["t10"].data[phantom.masks["aif"]]
    assert np.ptp(values) < 1e-6
    return float(values[0])


@pytest.fixture(scope="module")
def files(phantom, tmp_path_factory):
    return phantom.write(tmp_path_factory.mktemp("dce_blood_t10"))


def _run(phantom, aif="mask", rls="none", t10_map=None, brain=None, **params):
    m = phantom.masks
    params = {"rls": rls, **({} if t10_map is not None else {"t10": TISSUE_T10}), **params}
    return run_dce(phantom.signal, DCEParameters(aif_region=aif == "region", **params),
                   aif_mask=m["aif"], brain_mask=m["brain"] if brain is None else brain, tumor_mask=m["tumor"],
                   t10_map=t10_map)


def _cli(files, out, *extra) -> dict:
    args = ["dce", str(files / "signal.nii.gz"), "--aif-mask", str(files / "mask_aif.nii.gz"),
            "--mask", str(files / "mask_brain.nii.gz"), "--tumor-mask", str(files / "mask_tumor.nii.gz"),
            "--rls", "none", "--out", str(out), "--quiet", *map(str, extra)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    report["aif_curve"] = np.loadtxt(out / "aif.csv", delimiter=",", skiprows=1)[:, 1]
    report["ktrans"] = nib.load(out / "ktrans.nii.gz").get_fdata()
    return report


def _tumour_ktrans(phantom, ktrans) -> float:
    return float(np.mean(np.asarray(ktrans)[phantom.masks["enhancing"]]))


# --- 1, 2, 5: the command line, against the phantom's truth -------------------------------------------------------
def test_the_cli_aif_and_tumour_ktrans_reach_the_truth_and_the_report_says_which_t10(phantom, blood_t10, files,
                                                                                        tmp_path):
    without = _cli(files, tmp_path / "without", "--t10", TISSUE_T10)
    given = _cli(files, tmp_path / "with", "--t10", TISSUE_T10, "--blood-t10", blood_t10)
    true_peak = float(phantom.aif.max())  # plasma, as aif.csv
    # the AIF: 2.4 times high with the tissue's T10; within a few % of the truth with blood's
    assert without["aif_curve"].max() > 2.0 * true_peak
    assert given["aif_curve"].max() == pytest.approx(true_peak, rel=0.05)
    assert abs(given["aif_curve"].max() - true_peak) < 0.1 * abs(without["aif_curve"].max() - true_peak)
    assert given["aif"]["peak"] == pytest.approx(given["aif_curve"].max(), rel=1e-5)
    # Ktrans of the enhancing tumour (ROI mean) moves to the truth (~25 % low before, within 15 % now)
    truth = _tumour_ktrans(phantom, phantom.truth["ktrans"].data)
    k_without, k_with = _tumour_ktrans(phantom, without["ktrans"]), _tumour_ktrans(phantom, given["ktrans"])
    assert k_without < 0.8 * truth
    assert abs(k_with - truth) < 0.6 * abs(k_without - truth)
    assert k_with == pytest.approx(truth, rel=0.15)
    # the report: the T10 the AIF was converted with and where it came from; the parameter; no stale warning
    assert without["aif"]["t10"] == {"value": TISSUE_T10, "source": "scalar --t10"}
    assert given["aif"]["t10"] == {"value": blood_t10, "source": "--blood-t10",
                                   "replaces": {"value": TISSUE_T10, "source": "scalar --t10"}}
    assert given["parameters"]["blood_t10"] == blood_t10 and without["parameters"]["blood_t10"] is None
    assert given["configuration"]["options"]["blood_t10"] == blood_t10  # recorded for `bbbanomaly rerun`
    assert any("arterial blood's T10" in w and "--blood-t10" in w for w in without["warnings"]), without["warnings"]
    assert not any("arterial blood's T10" in w or "--blood-t10" in w for w in given["warnings"]), given["warnings"]


@pytest.mark.parametrize("aif, rls, outside", [("mask", "none", False), ("mask", "bundled", False),
                                               ("region", "none", False), ("region", "bundled", False),
                                               ("mask", "none", True), ("mask", "bundled", True)],
                         ids=["mask", "mask-rls", "search-region", "search-region-rls", "mask-outside-brain",
                              "mask-outside-brain-rls"])
def test_every_measured_aif_path_converts_its_voxels_with_blood_t10(phantom, blood_t10, aif, rls, outside):
    """With and without the RLS (which keeps the SER until after the AIF), a drawn mask or a search region, the AIF
    rows inside the analysed brain or outside it (converted apart): the AIF reads the truth."""
    brain = phantom.masks["brain"] & ~phantom.masks["aif"] if outside else None
    without = _run(phantom, aif, rls, brain=brain)
    given = _run(phantom, aif, rls, brain=brain, blood_t10=blood_t10)
    true_peak = float(phantom.aif.max())
    assert without.aif.max() > 2.0 * true_peak
    assert given.aif.max() == pytest.approx(true_peak, rel=0.05)
    assert given.report["aif"]["t10"]["source"] == "--blood-t10"


def test_blood_t10_overrides_a_t10_map_in_the_aif_voxels_only(phantom, blood_t10, files, tmp_path):
    """A T10 map whose artery is wrong (a VFA map's inflow error; here 1.1 s for 1.6) reads the AIF high; with
    --blood-t10 the map is overridden in the AIF's voxels and kept for the tissue."""
    t10 = phantom.truth["t10"].data.copy()
    t10[phantom.masks["aif"]] = 1.1
    nib.save(nib.Nifti1Image(t10.astype(np.float32), phantom.signal.affine), tmp_path / "t10_bad_artery.nii.gz")
    without = _cli(files, tmp_path / "map", "--t10", tmp_path / "t10_bad_artery.nii.gz")
    given = _cli(files, tmp_path / "map_blood", "--t10", tmp_path / "t10_bad_artery.nii.gz", "--blood-t10", blood_t10)
    true_peak = float(phantom.aif.max())
    assert without["aif_curve"].max() > 1.5 * true_peak
    assert given["aif_curve"].max() == pytest.approx(true_peak, rel=0.05)
    assert without["aif"]["t10"] == {"value": pytest.approx(1.1), "source": "map",
                                     "statistic": "median over the AIF voxels"}
    assert given["aif"]["t10"]["source"] == "--blood-t10" and given["aif"]["t10"]["value"] == blood_t10
    assert given["aif"]["t10"]["replaces"]["source"] == "map"
    # the tissue kept the map's T10: with the right AIF its Ktrans is the truth's (the true map gives the same)
    truth = _tumour_ktrans(phantom, phantom.truth["ktrans"].data)
    assert _tumour_ktrans(phantom, given["ktrans"]) == pytest.approx(truth, rel=0.1)


def test_the_report_names_a_vfa_map_as_such(phantom, blood_t10, files, tmp_path):
    """With --vfa the map the AIF would have taken is named "map (--vfa)", and --blood-t10 overrides it (1.8 s here,
    longer than the map's 1.6 s in the artery: a lower AIF)."""
    from BBBAnomalyLib.t1map.vfa import spgr_signal

    t10 = phantom.truth["t10"].data
    safe = np.where(t10 > 0, t10, 1.0)
    angles = [2.0, 5.0, 15.0]
    vfa = spgr_signal(np.full(safe.size, 1000.0), 1 / safe.ravel(), angles, 0.005).reshape(safe.shape + (3,))
    nib.save(nib.Nifti1Image(vfa.astype(np.float32), phantom.signal.affine), tmp_path / "vfa.nii.gz")
    vfa_args = ["--vfa", tmp_path / "vfa.nii.gz", "--vfa-flip-angles", *angles, "--vfa-tr", 0.005]
    plain = _cli(files, tmp_path / "vfa", *vfa_args)
    given = _cli(files, tmp_path / "vfa_blood", *vfa_args, "--blood-t10", 1.8)
    assert plain["aif"]["t10"]["source"] == "map (--vfa)"
    assert plain["aif"]["t10"]["value"] == pytest.approx(blood_t10, rel=0.01)
    assert plain["aif_curve"].max() == pytest.approx(float(phantom.aif.max()), rel=0.05)
    assert given["aif_curve"].max() < 0.95 * plain["aif_curve"].max()
    assert given["aif"]["t10"] == {"value": 1.8, "source": "--blood-t10", "replaces": {
        "value": pytest.approx(blood_t10, rel=0.01), "source": "map (--vfa)", "statistic": "median over the AIF voxels"}}


def test_the_automatic_aif_converts_its_chosen_voxels_with_blood_t10(phantom):
    """The automatic AIF chooses its voxels on the tissue's T10 (here the true map, where it finds the artery) and
    converts those voxels with blood's: the same AIF as those voxels drawn as a mask."""
    m, t10_map = phantom.masks, phantom.truth["t10"]
    auto = run_dce(phantom.signal, DCEParameters(rls="none", aif_auto=True, blood_t10=1.8), brain_mask=m["brain"],
                   t10_map=t10_map)
    plain = run_dce(phantom.signal, DCEParameters(rls="none", aif_auto=True), brain_mask=m["brain"], t10_map=t10_map)
    np.testing.assert_array_equal(auto.aif_mask, plain.aif_mask)  # the choice is the tissue T10's
    drawn = run_dce(phantom.signal, DCEParameters(rls="none", blood_t10=1.8), aif_mask=auto.aif_mask,
                    brain_mask=m["brain"], t10_map=t10_map)
    np.testing.assert_allclose(auto.aif, drawn.aif, rtol=1e-6)
    assert auto.aif.max() < 0.95 * plain.aif.max()  # 1.8 s > the map's 1.6 s in the artery: lower
    assert auto.report["aif"]["t10"]["source"] == "--blood-t10"


# --- 3: without the option nothing changes; the tissue keeps its T10 with it -------------------------------------
def test_without_blood_t10_nothing_changes_and_with_it_only_the_aif_does(phantom, blood_t10):
    default = _run(phantom)
    explicit = _run(phantom, blood_t10=None)
    for name in default.maps:
        np.testing.assert_array_equal(default.maps[name].data, explicit.maps[name].data, err_msg=name)
    np.testing.assert_array_equal(default.aif, explicit.aif)
    strip = lambda r: {k: v for k, v in r.report.items() if k != "timings_s"}  # noqa: E731
    assert json.dumps(strip(default), default=str) == json.dumps(strip(explicit), default=str)
    # the existing warning stays, and now names the fix
    assert any("arterial blood's T10" in w and "--blood-t10" in w for w in default.report["warnings"])
    given = _run(phantom, blood_t10=blood_t10)
    assert not np.allclose(given.aif, default.aif, rtol=0.1)
    # the tissue's concentration curves are bit-identical: only the AIF's conversion changed
    np.testing.assert_array_equal(given.curves().measured, default.curves().measured)


def test_a_population_aif_and_inputs_without_a_t10_ignore_it_with_a_warning(phantom, blood_t10):
    """Nothing of a population AIF (already in mM), of a concentration input or of relative enhancement is converted
    with a T10: --blood-t10 is ignored there, the report says so, and the maps are those of a run without it."""
    m = phantom.masks
    cases = {"population AIF": (dict(t10=TISSUE_T10, population_aif="parker"), {}, "parker population AIF"),
             "relative": (dict(), dict(aif_mask=m["aif"]), "relative enhancement"),
             "concentration": (dict(input_kind="concentration"), dict(aif_mask=m["aif"]), "concentration")}
    for name, (params, kwargs, why) in cases.items():
        series = phantom.concentration if name == "concentration" else phantom.signal
        if name == "concentration":
            series = Volume(series.data, series.affine, series.times, phantom.signal.acquisition)
        runs = [run_dce(series, DCEParameters(rls="none", blood_t10=b, **params), brain_mask=m["brain"], **kwargs)
                for b in (None, blood_t10)]
        for key in runs[0].maps:
            np.testing.assert_array_equal(runs[0].maps[key].data, runs[1].maps[key].data, err_msg=f"{name}: {key}")
        told = [w for w in runs[1].report["warnings"] if w.startswith("--blood-t10")]
        assert len(told) == 1 and "ignored" in told[0] and why in told[0], (name, runs[1].report["warnings"])
        assert not any(w.startswith("--blood-t10") for w in runs[0].report["warnings"])
        assert runs[1].report["aif"]["t10"]["value"] is None
        assert runs[1].report["aif"]["t10"]["source"].startswith("not converted"), name


# --- 4: bad values --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, words", [("0", ("[0.05, 10]",)), ("-1", ("[0.05, 10]",)), ("nan", ("nan",)),
                                          ("100", ("ms",)), ("1600", ("ms",))],
                         ids=["zero", "negative", "nan", "100-s", "ms"])
def test_the_cli_refuses_a_bad_blood_t10_in_one_line(files, tmp_path, capsys, value, words):
    out = tmp_path / "out"
    assert_refused(_bad_argv(files, out, value), capsys, files, out, ("--blood-t10", *words))


def test_the_cli_refuses_a_blood_t10_that_is_not_a_number(files, tmp_path, capsys):
    """argparse's own refusal (type=float, as --hematocrit): exit 2, one line naming the option, nothing written."""
    out = tmp_path / "out"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:  # what a real process exits with
        main(_bad_argv(files, out, "abc"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exited.value.code == 2 and len(lines) == 1, lines
    assert "--blood-t10" in lines[0] and "invalid float value: 'abc'" in lines[0] and not out.exists()


def _bad_argv(files, out, value: str) -> list[str]:
    return ["dce", str(files / "signal.nii.gz"), "--aif-mask", str(files / "mask_aif.nii.gz"), "--t10",
            str(TISSUE_T10), "--blood-t10", value, "--rls", "none", "--out", str(out)]


@pytest.mark.parametrize("value", [0, -1.6, float("nan"), float("inf"), 100.0, "abc", "1.6 s"])
def test_the_library_refuses_a_bad_blood_t10(value):
    with pytest.raises(InputError, match="--blood-t10") as excinfo:
        DCEParameters(t10=TISSUE_T10, blood_t10=value)
    assert "\n" not in str(excinfo.value)


def test_good_values_are_kept_as_seconds():
    assert DCEParameters(blood_t10="1.65").blood_t10 == 1.65
    assert DCEParameters(blood_t10=1).blood_t10 == 1.0
    assert DCEParameters().blood_t10 is None


def test_help_teaches_the_option(capsys):
    with pytest.raises(SystemExit):
        main(["dce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    option = text[text.rindex("--blood-t10 S"):]  # (its help, after the usage line)
    for words in ("arterial blood", "measured AIF", "1.65 s at 3 T", "1.45 s at 1.5 T", "overrides the map",
                  "tissue keeps its T10", "population AIF"):
        assert words in option[:900], words


def test_the_panel_offers_blood_t10_beside_t10():
    from BBBAnomalyLib.app.pipelines import DCE

    names = [p.name for p in DCE.parameters]
    assert names[names.index("t10") + 1] == "blood_t10"
    spec = DCE.parameters[names.index("blood_t10")]
    assert spec.optional and not spec.advanced and DCE.default_parameters()["blood_t10"] is None


@pytest.mark.parametrize("params", [dict(rls="none", blood_t10=1.6), dict(rls="bundled")])
def test_an_aif_mask_reaching_outside_the_brain_is_still_compared_with_the_tissue(phantom, params):
    """With --blood-t10 or the RLS the SER is kept first and an AIF mask that reaches outside the analysed brain is
    gathered from both parts; the tissue check then had only the AIF's own rows to compare with, and a white-matter
    mask passed (AIF peak 0.18 mM, exit 0). It is refused as on the plain path."""
    m = phantom.masks
    rows = np.argwhere(m["nawm"] & ~m["aif"])[:40]
    wm = np.zeros_like(m["brain"])
    wm[tuple(rows.T)] = True
    brain = m["brain"].copy()
    brain[tuple(rows[0])] = False  # one of the mask's voxels outside the analysed brain
    with pytest.raises(InputError, match="looks like tissue, not an artery"):
        run_dce(phantom.signal, DCEParameters(**params), brain_mask=brain, aif_mask=wm, t10_map=phantom.truth["t10"])
    artery = m["aif"].copy()
    artery[tuple(rows[0])] = True  # the real artery with the same outside voxel still runs
    res = run_dce(phantom.signal, DCEParameters(**params), brain_mask=brain, aif_mask=artery,
                  t10_map=phantom.truth["t10"])
    assert res.aif.max() > 5.0

"""The measured DCE AIF's blood T2* at the echo time (session 22, BBBAnomalyLib/dce/aif_t2star.py).

The DCE object made with the blood's T2* (``te``): the drawn AIF reads its peak and area low, said in the report
(``report["aif"]["t2star"]``, a warning, caveats on ktrans/vp) and corrected with --aif-t2star-correct; the object
without ``te`` is unchanged and unwarned; a bad --te is refused in one line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.integrate import trapezoid

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Volume
from BBBAnomalyLib.dce.aif_t2star import (BLOOD_R2STAR, BloodSignalModel, t2star_corrected_blood,
                                          turning_concentration)
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.phantoms.dce import make_dce_phantom

SMALL = {"slices": 2, "seed": 0, "duration": 150.0, "frame_interval": 5.0}


def _run(phantom, **params):
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    return run_dce(phantom.signal, DCEParameters(rls="none", **params), aif_mask=phantom.masks["aif"],
                   brain_mask=phantom.masks["brain"], t10_map=t10)


def _t2star_warnings(result):
    return [w for w in result.report["warnings"] if "blood's T2*" in w]


def test_object_without_te_is_unchanged():
    """The new options' defaults give the object as before: bit-identical signal and no echo time in its metadata."""
    plain = make_dce_phantom(**SMALL)
    explicit = make_dce_phantom(**SMALL, te=None, dose=1.0, field_strength=None, blood_r2star=None)
    assert np.array_equal(plain.signal.data, explicit.signal.data)
    assert np.array_equal(plain.aif, explicit.aif)
    assert plain.signal.acquisition.echo_time is None
    # with a TE the artery's signal drops at the bolus and the tissue without blood does not change at all
    t2 = make_dce_phantom(**SMALL, te=0.002, field_strength=1.5)
    artery, wm = plain.masks["aif"], plain.masks["wm"] & plain.masks["pure"] & ~plain.masks["vessels"]
    assert t2.signal.acquisition.echo_time == 0.002
    assert np.all(t2.signal.data[artery].max(axis=1) < plain.signal.data[artery].max(axis=1))
    pure_tissue = wm & (plain.truth["vp"].data < 0.02)
    assert np.array_equal(t2.signal.data[pure_tissue], plain.signal.data[pure_tissue])


def test_inverse_recovers_the_concentration_below_the_turning_point():
    """The T2*-aware reading of the apparent (T1-only) concentration gives back the true one below the turning
    point (the table's step is 0.002 mM: linear interpolation is exact to well under 1e-3 mM there); the apparent
    concentration falls beyond it."""
    model = BloodSignalModel(1.6, 15.0, 0.005, 4.5, 0.002, BLOOD_R2STAR[1.5])
    turn = turning_concentration(model)
    assert 5.0 < turn < 8.0  # (6.3 mM: the Parker blood peak, 6.1 mM, lies just below it at 1.5 T and TE 2 ms)
    true = np.linspace(0.1, 0.98 * turn, 40)
    back, _ = t2star_corrected_blood(model.apparent(true), model)
    assert np.max(np.abs(back - true)) < 1e-3
    assert model.apparent(np.array([1.5 * turn]))[0] < model.apparent(np.array([turn]))[0]


def test_warning_fires_on_a_t2star_affected_aif_and_not_on_the_clean_object():
    """Dose 1 at TE 2 ms (1.5 T): the drawn AIF's peak reads about 40 % low; the run says so (warning, report
    entry, caveats on ktrans and vp). The clean object: recorded, not warned. Before session 22 neither existed."""
    clean = _run(make_dce_phantom(**SMALL))
    assert not _t2star_warnings(clean)
    record = clean.report["aif"]["t2star"]
    assert record["checked"] and record["echo_time_s"] is None and record["peak_t2star_corrected_mM"] is None
    assert "caveat" not in clean.report["maps"]["ktrans"]

    phantom = make_dce_phantom(**SMALL, te=0.002, field_strength=1.5)
    result = _run(phantom)
    assert result.aif.max() < 0.75 * phantom.aif.max()  # what the warning is about
    said = _t2star_warnings(result)
    assert len(said) == 1 and "TE 2 ms" in said[0]
    record = result.report["aif"]["t2star"]
    assert record["echo_time_source"] == "the series' metadata" and record["field_strength_t"] == 1.5
    assert record["area_corrected_over_measured"] > 1.05 and not record["corrected"]
    for name in ("ktrans", "vp"):
        assert "T2*" in result.report["maps"][name]["caveat"]
    # saying it changes no map: the same series without its echo time gives the same maps, unwarned
    acquisition = dataclasses.replace(phantom.signal.acquisition, echo_time=None)
    unknown_te = _run(dataclasses.replace(phantom, signal=Volume(phantom.signal.data, phantom.signal.affine,
                                                                 phantom.signal.times, acquisition)))
    assert not _t2star_warnings(unknown_te)
    assert unknown_te.report["aif"]["t2star"]["echo_time_source"].startswith("not given")
    for name, vol in result.maps.items():
        assert np.array_equal(vol.data, unknown_te.maps[name].data, equal_nan=True), name


def test_population_aif_records_why_nothing_was_checked():
    phantom = make_dce_phantom(**SMALL, te=0.002, field_strength=1.5)
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    result = run_dce(phantom.signal, DCEParameters(rls="none", population_aif="parker"),
                     brain_mask=phantom.masks["brain"], t10_map=t10)
    assert result.report["aif"]["t2star"]["checked"] is False
    assert not _t2star_warnings(result)


def test_correction_recovers_the_aif_area():
    """Below the turning point (dose 0.5: blood peak 3.0 mM, turn 6.3 mM) the corrected AIF's area is the true
    one's to within what the clean object's noise leaves (its own area within 1 %): bound 2 %, against 3.5 % low
    uncorrected; the maps then match the clean run's."""
    phantom = make_dce_phantom(**SMALL, te=0.002, field_strength=1.5, dose=0.5)
    t = phantom.times
    true_area = trapezoid(phantom.aif, t)
    plain = _run(phantom)
    corrected = _run(phantom, aif_t2star_correct=True)
    assert trapezoid(plain.aif, t) < 0.975 * true_area
    assert abs(trapezoid(corrected.aif, t) / true_area - 1) < 0.02
    assert abs(corrected.aif.max() / phantom.aif.max() - 1) < 0.03
    assert corrected.report["aif"]["t2star"]["corrected"] is True
    assert "caveat" not in corrected.report["maps"]["vp"]
    gm = phantom.masks["gm"] & phantom.masks["pure"]
    vp_true = np.median(phantom.truth["vp"].data[gm])
    assert abs(np.median(corrected.maps["vp"].data[gm]) / vp_true - 1) < 0.03
    assert np.median(plain.maps["vp"].data[gm]) / vp_true - 1 > 0.05


@pytest.mark.parametrize("te", [2.0, 0.0, -0.001, float("nan"), 0.5])
def test_bad_te_is_refused_in_one_line(te):
    with pytest.raises(InputError) as exc:
        DCEParameters(te=te)
    assert "\n" not in str(exc.value) and "--te" in str(exc.value)


def test_without_te_a_cut_peak_is_told_by_its_shape():
    """TE unknown (a NIfTI without its sidecar): an AIF whose peak the blood's T2* cut (dose 1.5, TE 2 ms, 1.5 T:
    area about 14 % low) has its peak under PEAK_OVER_LATE_MIN (5.7) times its level 90-150 s later and is warned,
    asking for --te; the whole AIF (7.2-8.9 on the object) is not."""
    long = {**SMALL, "duration": 240.0}
    clean = _run(make_dce_phantom(**long))
    assert clean.report["aif"]["t2star"]["peak_over_late_level"] > 6.5
    assert not [w for w in clean.report["warnings"] if "--te" in w]
    phantom = make_dce_phantom(**long, te=0.002, field_strength=1.5, dose=1.5)
    acquisition = dataclasses.replace(phantom.signal.acquisition, echo_time=None)
    result = _run(dataclasses.replace(phantom, signal=Volume(phantom.signal.data, phantom.signal.affine,
                                                             phantom.signal.times, acquisition)))
    assert result.report["aif"]["t2star"]["peak_over_late_level"] < 5.0
    said = [w for w in result.report["warnings"] if "--te" in w]
    assert len(said) == 1 and "echo time is not known" in said[0]
    assert "may read high" in result.report["maps"]["vp"]["caveat"]


def test_cli_reads_the_echo_time_from_the_sidecar_and_refuses_a_bad_te(tmp_path, capsys):
    """`bbbanomaly dce` on the written object: its BIDS sidecar's EchoTime reaches the check (report aif.t2star);
    --te in ms exits 2 with one line and writes nothing."""
    import json

    from BBBAnomalyLib.cli import main

    case = make_dce_phantom(**SMALL, te=0.002, field_strength=1.5).write(tmp_path / "case")
    args = ["dce", str(case / "signal.nii.gz"), "--aif-mask", str(case / "mask_aif.nii.gz"), "--mask",
            str(case / "mask_brain.nii.gz"), "--t10", str(case / "truth_t10.nii.gz"), "--rls", "none", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "report.json").read_text())["aif"]["t2star"]
    assert record["echo_time_s"] == 0.002 and record["echo_time_source"] == "the series' metadata"
    assert record["field_strength_t"] == 1.5
    capsys.readouterr()
    assert main(args + ["--te", "2", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--te" in err and "\n" not in err and not (tmp_path / "bad").exists()

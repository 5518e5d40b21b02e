"""Round 17's user audit, DCE outputs: ve (and kep) only where the data determine it (F5), the two-compartment
models on slow frames and values at the fit's bounds (F6), what the dotted RLS curve of the figure is (F8), and the
help texts against what a run writes (F9, F10). Small reference objects (3 slices)."""

import re

import numpy as np
import pytest

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.dce import DCEParameters, run_dce


@pytest.fixture(scope="module")
def phantom():
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    return make_dce_phantom(snr=40, slices=3, seed=3)


@pytest.fixture(scope="module")
def result(phantom):
    m = phantom.masks
    return run_dce(phantom.signal, DCEParameters(rls="bundled"), aif_mask=m["aif"], brain_mask=m["brain"],
                   tumor_mask=m["tumor"], t10_map=phantom.truth["t10"])


# --- F5: ve is not presented as a measurement where the data do not determine it -----------------------------
def test_ve_and_kep_are_0_where_ve_is_not_determined_and_the_rim_keeps_its_ve(phantom, result):
    m, truth = phantom.masks, phantom.truth
    ve, kep = result.maps["ve"].data, result.maps["kep"].data
    brain = m["brain"]
    # before: ve sat at its bound 1.0 in ~40 % of normal brain (Ktrans ~ 0: an empty compartment's size)
    assert not np.any(ve[brain] >= 0.999)
    assert np.mean(ve[m["nawm"]] == 0) > 0.8
    np.testing.assert_array_equal(kep[brain & (ve == 0)], 0)  # kep = Ktrans/ve is not determined either
    assert np.all(kep[brain & (ve > 0)] > 0)
    # the enhancing rim (true ve 0.35) keeps its ve
    rim = m["enhancing"] & m["pure"]
    assert rim.sum() > 100
    assert np.mean(ve[rim] > 0) >= 0.95
    known = rim & (ve > 0)
    assert np.median(np.abs(ve[known] - truth["ve"].data[known])) < 0.03
    # the report: the share, one warning, summaries of ve/kep over the determined voxels only
    info = result.report["ve_determination"]
    undetermined = int((ve[brain] == 0).sum())
    assert info["undetermined_voxels"] == undetermined
    assert info["undetermined_share"] == pytest.approx(undetermined / brain.sum())
    assert info["non_tumor_undetermined_share"] > 0.8 and info["tumor_undetermined_share"] < 0.2
    told = [w for w in result.report["warnings"] if w.startswith("ve was not determined")]
    assert len(told) == 1 and f"{100 * info['undetermined_share']:.1f} %" in told[0]
    non_tumor = brain & ~m["tumor"]
    for name in ("ve", "kep"):
        stats = result.report["summary"]["non_tumor"][name]
        assert stats["n"] == int((ve[non_tumor] > 0).sum())
        assert stats["median"] == pytest.approx(np.median(result.maps[name].data[non_tumor & (ve > 0)]), rel=1e-6)
    assert result.report["summary"]["brain"]["ktrans"]["n"] == int(brain.sum())  # the other maps: every voxel


def test_the_panel_curves_keep_the_fits_kep_where_the_maps_say_0(phantom, result):
    """kep is 0 in the map where ve is not determined, but the model curves are the fit's (its kep)."""
    from BBBAnomalyLib.dce.models import PKModel

    curves = result.curves()
    kept = PKModel("extended-tofts", result.aif, result.times, max_delay=6.0).fit(curves.measured)
    hidden = result.maps["ve"].data[result.brain_mask] == 0
    assert hidden.mean() > 0.5 and np.any(kept.kep[hidden] > 0)
    scale = np.abs(kept.fitted).max()
    np.testing.assert_allclose(curves.fitted["extended Tofts fit"], kept.fitted, rtol=0, atol=4 * np.spacing(scale))


def test_backflux_snr_of_the_fit_pass_equals_the_direct_formula(phantom, result):
    """PKModel.ve_backflux_snr (one pass over the frames, the fit's recursion) against models.backflux_norm (the
    exponential convolution and a projection onto {Cp, ∫Cp}) over sqrt(SSE/(T - p))."""
    from BBBAnomalyLib.dce.models import PKModel, backflux_norm, backflux_snr

    measured = result.curves().measured
    model = PKModel("extended-tofts", result.aif, result.times, max_delay=6.0)
    fit = model.fit(measured)
    fast = model.ve_backflux_snr(measured, fit)
    sse = ((measured - fit.fitted.astype(np.float64)) ** 2).sum(axis=1)
    direct = backflux_snr(backflux_norm(result.aif, result.times, fit.delay, fit.ktrans, fit.kep), sse,
                          result.times.size - 4)
    np.testing.assert_allclose(fast, direct, rtol=1e-4, atol=1e-3)


def test_ve_of_noise_free_normal_tissue_is_determined(phantom):
    """Noise-free curves determine ve everywhere Ktrans > 0 (the criterion is relative to the fit's residual)."""
    from BBBAnomalyLib.dce.models import PKModel, model_curves, ve_determined

    times = np.arange(0, 300, 5.0)
    from BBBAnomalyLib.perfusion.population_aif import parker_aif

    aif = np.asarray(parker_aif(np.maximum(times - 30.0, 0.0) / 60.0)) * (times >= 30.0) / 0.58
    ktrans, ve, vp = np.array([0.001, 0.0005, 0.1]), np.array([0.1, 0.1, 0.35]), np.array([0.04, 0.015, 0.06])
    curves = model_curves("extended-tofts", aif, times / 60.0, ktrans, ktrans / ve, vp).astype(np.float32)
    model = PKModel("extended-tofts", aif, times)
    fit = model.fit(curves)
    assert np.all(ve_determined(model.ve_backflux_snr(curves, fit), fit.ve, fit.kep))
    noisy = curves + np.random.default_rng(0).normal(0, 0.003, (200, 3, times.size)).astype(np.float32)
    fit = model.fit(noisy.reshape(-1, times.size))
    known = ve_determined(model.ve_backflux_snr(noisy.reshape(-1, times.size), fit), fit.ve, fit.kep).reshape(200, 3)
    assert known[:, :2].mean() < 0.2 and known[:, 2].mean() > 0.95  # GM/WM-like: not; the rim-like tissue: yes


def test_terminal_summary_prints_ve_with_its_share(result, tmp_path, capsys):
    from BBBAnomalyLib.dce.command import print_summary

    print_summary(result, tmp_path)
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if "non_tumor medians" in text)
    assert not re.search(r"\bve 1\b", line)
    assert re.search(r"ve [0-9.e+-]+ \(in the \d+ % of voxels where the data determine it\)", line)


# --- F6: two-compartment models on slow frames; values at the fit's bounds ---------------------------------------
def test_2cxm_on_5_s_frames_warns_about_the_interval_and_the_bounds(phantom):
    from BBBAnomalyLib.dce.parameters import output_maps

    m = phantom.masks
    region = m["brain"].copy()
    k = region.shape[2] // 2
    region[:, :, :k] = False
    region[:, :, k + 1:] = False  # one slice: the fit is slow
    region &= m["tumor"] | m["nawm"] | m["vessels"]
    res = run_dce(phantom.signal, DCEParameters(model="2cxm", rls="none"), aif_mask=m["aif"], brain_mask=region,
                  t10_map=phantom.truth["t10"])
    warnings = res.report["warnings"]
    assert any(w.startswith("2cxm: the frames are 5 s apart") and "~2 s" in w for w in warnings)
    fp = res.maps["fp"].data[region]
    share = float(np.mean(fp >= 2000 * (1 - 1e-5)))
    assert res.report["fit_bounds"]["fp_upper"]["share"] == pytest.approx(share)
    assert share >= 0.01  # this object's curves do not determine Fp at 5 s frames
    bound = next(w for w in warnings if w.startswith("fit bounds reached"))
    assert f"Fp at its upper bound (2000 ml/100 ml/min) in {100 * share:.1f} %" in bound
    assert list(res.maps) == output_maps("2cxm", rls=False)
    te, ve = res.maps["te"].data[region], res.maps["ve"].data[region]
    np.testing.assert_array_equal(te[ve == 0], 0)


def test_the_interval_warning_only_for_two_compartment_models_on_slow_frames():
    from BBBAnomalyLib.dce.parameters import Model
    from BBBAnomalyLib.dce.run_report import _check_two_compartment_sampling

    for model, step, warned in ((Model.TWO_CXM, 2.0, False), (Model.TWO_CUM, 1.0, False), (Model.TWO_CUM, 3.0, True),
                                (Model.EXTENDED_TOFTS, 5.0, False)):
        warnings = []
        _check_two_compartment_sampling(model, np.arange(0, 120, step), warnings)
        assert bool(warnings) is warned, (model, step)


# --- F8: the dotted curve is the network's output, mapped back exactly ------------------------------------------
def test_rls_reconstruction_is_mapped_back_exactly(phantom, result, monkeypatch):
    """With an identity network the 'RLS reconstruction' is the measured curve (mM) on every post-contrast frame
    and 0 before: the conversion, the fixed 5 s grid and the way back are exact, so the demo's dotted curve is
    what the network returns (not an indexing or grid error)."""
    import torch

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    rls_out = result.extras["curve_data"]["rls"]
    assert rls_out.step == 5.0 and rls_out.n_frames == 121  # dce-rls-world's fixed grid
    monkeypatch.setattr(rls_out, "model", Identity())
    curves = result.curves()
    rec, measured = curves.fitted["RLS reconstruction"], curves.measured
    post = result.times >= result.times[result.extras["baseline_frames"]]
    np.testing.assert_allclose(rec[:, post], measured[:, post], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rec[:, ~post], 0, atol=1e-9)  # (SER 0 through the SPGR inversion)


def test_the_bundled_network_is_projection_like_as_the_figure_and_readme_say(phantom, result):
    """dce-rls-world (early-stopped) does not reproduce the normal first pass: the NAWM mean curve comes back with
    a lower, later peak and above the measured tail (the demo: peak SER 0.33 vs 0.63). If retrained weights
    reproduce normal curves, the figure's note and the README's RLS bullet must change with them."""
    curves = result.curves()
    nawm = phantom.masks["nawm"][result.brain_mask]
    measured = curves.measured[nawm].mean(axis=0)
    network = curves.fitted["RLS reconstruction"][nawm].mean(axis=0)
    assert network.max() < 0.7 * measured.max()
    assert np.argmax(network) > np.argmax(measured)
    assert network[-1] > measured[-1]
    assert np.mean(result.maps["rls"].data[phantom.masks["nawm"]]) < 1.0  # near 0 ...
    assert np.mean(result.maps["rls_abs"].data[phantom.masks["nawm"]]) > 5.0  # ... while |residual| is not


def test_figure_labels_the_dotted_curve_as_the_networks_output(phantom, result, tmp_path, monkeypatch):
    import matplotlib.figure

    from BBBAnomalyLib.dce.figures import dce_figure

    legends = []
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        for ax in fig.axes:
            if ax.get_legend() is not None:
                legends.append([t.get_text() for t in ax.get_legend().get_texts()]
                               + [ax.get_legend().get_title().get_text(), ax.get_title()])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    dce_figure(tmp_path / "fig.png", phantom.signal, result, phantom.masks, phantom.truth)
    texts = [t for legend in legends for t in legend]
    assert "nawm RLS network output (not a fit)" in texts
    assert not any(t.endswith("RLS reconstruction") for t in texts)
    assert any("projection-like" in t for t in texts)


# --- F9 / F10: the help texts against what a run writes -----------------------------------------------------------
def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_dce_help_lists_what_a_run_writes(phantom, tmp_path, capsys):
    from BBBAnomalyLib.dce.parameters import MASK_OUTPUTS, MODEL_MAPS, OTHER_OUTPUTS, RLS_MAPS, output_maps

    text = _help(["dce", "--help"], capsys)
    assert "rls_vascular" not in text
    outputs = text[text.index("Outputs (in --out"):]
    for name in [*RLS_MAPS, *{n for maps in MODEL_MAPS.values() for n in maps}, "delay", "fit_r2", *MASK_OUTPUTS,
                 *OTHER_OUTPUTS]:
        assert re.search(rf"\b{re.escape(name)}\b", outputs), name
    # a run writes exactly the table's names (the CLI, with an AIF mask and the bundled RLS)
    case = tmp_path / "case"
    phantom.write(case)
    out = tmp_path / "out"
    assert main(["dce", str(case / "signal.nii.gz"), "--aif-mask", str(case / "mask_aif.nii.gz"), "--mask",
                 str(case / "mask_brain.nii.gz"), "--t10", str(case / "truth_t10.nii.gz"), "--rls", "bundled",
                 "--out", str(out), "--quiet"]) == 0
    written = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert written == ({f"{n}.nii.gz" for n in [*output_maps("extended-tofts"), *MASK_OUTPUTS]} | set(OTHER_OUTPUTS))
    capsys.readouterr()


def test_the_pipelines_map_order_is_the_tables(result):
    from BBBAnomalyLib.dce.parameters import MAP_INFO, output_maps
    from BBBAnomalyLib.dce.rls import residual_maps

    assert list(result.maps) == output_maps("extended-tofts")
    assert list(residual_maps(np.zeros((2, 9), np.float32), np.zeros((2, 9), np.float32),
                              np.arange(5) > 1)) == output_maps("patlak")[:3]
    assert set(output_maps("2cxm")) <= set(MAP_INFO)


def test_train_dce_rls_help_names_the_checkpoint(capsys):
    text = _help(["train", "dce-rls", "--help"], capsys)
    assert "<name>.checkpoint.pt" in text and "<name>.json" in text


def test_an_roi_reader_of_ve_is_told_about_its_zeros(phantom, result, tmp_path, capsys):
    """ve/kep are 0 where undetermined, and an ROI mean counts those zeros: roi-stats says so from the report."""
    share = result.report["ve_determination"]["undetermined_share"]
    for name in result.report["ve_determination"]["maps_set_to_0"]:
        caveat = result.report["maps"][name]["caveat"]
        assert f"{100 * share:.0f} % of this brain" in caveat and "counts those zeros" in caveat
    out = tmp_path / "run"
    result.write(out)
    from BBBAnomalyLib.io import write_volume

    roi = phantom.masks["tumor"].astype(np.uint8)
    write_volume(result.maps["ve"].with_data(roi), tmp_path / "tumor.nii.gz")
    assert main(["roi-stats", str(out / "ve.nii.gz"), "--roi", str(tmp_path / "tumor.nii.gz")]) == 0
    assert "counts those zeros" in capsys.readouterr().out

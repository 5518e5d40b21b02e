"""Round 19: options that were silently ignored where they do not apply, and `train` errors that did not name the model.

* `bbbanomaly dmri --model recdisc --vae-score rms`: the VAE's residual score, unused by RecDiscNet; the run's
  report now warns (as dsc's PHAE options given with another --method do, dsc.phae_step._phae_options_unused);
* `bbbanomaly train dmri-recdisc --latent N`: the VAE's latent size; RecDiscNet has none. Refused before any work,
  as the other trainers refuse an option that does nothing there (`--epochs 0` without --init);
* `bbbanomaly dce --rls bundled --rls-epochs N` (or --rls auto choosing the bundled weights): per-case training
  epochs, unused with the bundled weights; the report now warns;
* `bbbanomaly train phae --epochs -1` said "bbbanomaly train: error: ..." (argparse's own errors already named the
  model: "bbbanomaly train dmri-vae: error: ..."); every error line of a trainer now names it.

Each option left at its default gives no message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from BBBAnomalyLib.cli import main

from bad_input_helpers import one_line_refusal, write_dce_case

pytest.importorskip("torch")


# --- 1: dmri --vae-score with RecDiscNet ------------------------------------------------------------------------
def test_dmri_vae_score_with_recdisc_is_named_in_the_warnings():
    """recdisc + --vae-score rms: one warning; recdisc with the default score, and the VAE with rms: none."""
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    patient = make_dmri_phantom(1001, voxel_mm=3.0, n_directions=48, snr=30.0, tumor=True)

    def vae_score_warnings(model, **kw):
        params = DMRIParameters(model=model, threshold="otsu", device="cpu", **kw)
        report = run_dmri(patient.dwi, params, brain_mask=patient.masks["brain"]).report
        return [w for w in report["warnings"] if "vae-score" in w or "vae_score" in w]

    assert vae_score_warnings("recdisc", vae_score="rms") == [
        "--vae-score rms applies to --model vae only and was ignored (this run used recdisc)"]
    assert vae_score_warnings("recdisc") == []  # the default: nothing to say
    assert vae_score_warnings("vae", vae_score="rms") == []  # the VAE reads it


# --- 2: train dmri-recdisc --latent ---------------------------------------------------------------------------
def test_train_recdisc_refuses_latent_before_any_work_and_says_nothing_at_the_default(tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()  # empty: what is refused after the options is "holds no case folders"
    out = tmp_path / "tx"
    for latent in ("64", "-1"):  # -1: the option does not apply, whatever its value
        one_line_refusal(["train", "dmri-recdisc", str(cases), "--latent", latent, "--out", str(out)], capsys,
                         f"--latent {latent}", "`train dmri-vae` only", "RecDiscNet has no latent", "leave --latent out")
        assert not out.exists()
    # a config file sets the parser's defaults: the refusal compares with the VAE's default, not the parser's
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"latent": 64}), encoding="utf-8")
    one_line_refusal(["train", "dmri-recdisc", str(cases), "--config", str(config), "--out", str(out)], capsys,
                     "--latent 64", "`train dmri-vae` only")
    # left at its default (or the default typed), and for the VAE: refused for the next reason only, no word of it
    for model, extra in (("dmri-recdisc", []), ("dmri-recdisc", ["--latent", "128"]), ("dmri-vae", ["--latent", "64"])):
        line = one_line_refusal(["train", model, str(cases), *extra, "--out", str(out)], capsys,
                                "holds no case folders")
        assert "latent" not in line
        assert not out.exists()


# --- 3: dce --rls-epochs with the bundled weights -------------------------------------------------------------
@pytest.fixture(scope="module")
def dce_case(tmp_path_factory):
    return write_dce_case(tmp_path_factory.mktemp("dce") / "in")


def _dce(case, out: Path, capsys, *extra) -> tuple[dict, str]:
    capsys.readouterr()
    code = main(["dce", str(case["series"]), "--mask", str(case["mask"]), "--aif-mask", str(case["aif"]),
                 "--threads", "1", "--device", "cpu", *extra, "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return json.loads((out / "report.json").read_text(encoding="utf-8")), printed.out


def _epochs_warnings(report) -> list[str]:
    return [w for w in report["warnings"] if "rls-epochs" in w or "rls_epochs" in w]


@pytest.mark.parametrize("rls, how", [("bundled", "--rls bundled"), ("auto", "chosen by --rls auto")])
def test_dce_rls_epochs_with_the_bundled_weights_is_named_in_the_warnings(dce_case, rls, how, tmp_path, capsys):
    report, printed = _dce(dce_case, tmp_path / "given", capsys, "--rls", rls, "--rls-epochs", "3")
    assert report["rls"]["source"] == "bundled"
    expected = (f"RLS: the bundled weights were used ({how}), so --rls-epochs 3 was ignored; it applies to the "
                "per-case network (--rls case) only")
    assert _epochs_warnings(report) == [expected]
    assert f"warning: {expected}" in printed  # the CLI prints the report's warnings
    default, _ = _dce(dce_case, tmp_path / "default", capsys, "--rls", rls)  # left at its default: nothing to say
    assert default["rls"]["source"] == "bundled" and _epochs_warnings(default) == []


def test_dce_rls_options_with_no_rls_or_per_case_are_named(dce_case, tmp_path, capsys):
    """--rls none ignores every RLS option, --rls case the bundled weights' name: each is named, the defaults not."""
    report, _ = _dce(dce_case, tmp_path / "none", capsys, "--rls", "none", "--rls-epochs", "3")
    assert "--rls-epochs applies to the RLS only and was ignored (this run used --rls none)" in report["warnings"]
    report, _ = _dce(dce_case, tmp_path / "none_default", capsys, "--rls", "none")
    assert not [w for w in report["warnings"] if "--rls" in w and "ignored" in w]
    from BBBAnomalyLib.dce import DCEParameters
    from BBBAnomalyLib.dce.pipeline import _rls_options_unused

    # the command line refuses --rls-weights with none or case; the Python API and the panel reach run_dce directly
    said: list[str] = []
    _rls_options_unused(DCEParameters(rls="none", rls_weights="other.pt", rls_epochs=3), said)
    assert said == ["--rls-weights, --rls-epochs apply to the RLS only and were ignored (this run used --rls none)"]
    said.clear()
    _rls_options_unused(DCEParameters(rls="case", rls_weights="other.pt"), said)
    assert said == ["--rls-weights names bundled weights and was ignored: --rls case trains the RLS network on this "
                    "case (use --rls bundled to use the weights)"]
    said.clear()
    _rls_options_unused(DCEParameters(rls="case", rls_epochs=3), said)
    _rls_options_unused(DCEParameters(rls="bundled", rls_weights="other.pt"), said)
    assert said == []


def test_run_rls_warns_only_where_the_epochs_are_not_used():
    """The RLS step itself (what the Slicer panel and the worker reach through run_dce): bundled weights with
    other epochs warn; at the default, or per case (which trains with them), nothing."""
    import contextlib

    import numpy as np

    from BBBAnomalyLib.dce import DCEParameters
    from BBBAnomalyLib.dce.rls_inference import run_rls

    rng = np.random.default_rng(0)
    times = np.arange(30) * 5.0
    ser = (0.2 * np.clip((times - 20.0) / 30.0, 0, 1) + 0.005 * rng.standard_normal((300, 30))).astype(np.float32)
    s0 = np.full(300, 100.0, np.float32)
    exclude = np.zeros(300, bool)

    def epochs_warnings(**kw):
        warnings: list[str] = []
        out = run_rls(ser.copy(), times, 4, DCEParameters(device="cpu", threads=1, **kw), exclude, s0,
                      lambda name: contextlib.nullcontext(), warnings, lambda f, m: None)
        assert out.info["source"] == kw["rls"]
        return [w for w in warnings if "--rls-epochs" in w]

    assert epochs_warnings(rls="bundled", rls_epochs=12) == [
        "RLS: the bundled weights were used (--rls bundled), so --rls-epochs 12 was ignored; it applies to the "
        "per-case network (--rls case) only"]
    assert epochs_warnings(rls="bundled") == []
    assert epochs_warnings(rls="case", rls_epochs=1) == []


# --- 4: train errors name the model ---------------------------------------------------------------------------
@pytest.mark.parametrize("model, extra, words", [
    ("phae", ["--epochs", "-1"], ("--epochs", "between 1 and 100000")),  # a range check said "bbbanomaly train"
    ("dmri-vae", ["nonexistent", "--lr", "-1"], ("--lr",)),
    ("dmri-recdisc", ["nonexistent"], ("cases folder nonexistent does not exist",)),  # the trainer's own refusal
    ("dce-rls", ["nonexistent", "--frames", "0"], ("--frames",)),
    ("cae", ["nonexistent", "--epochs", "0"], ("--epochs 0", "--init")),
])
def test_every_train_error_line_names_the_model(model, extra, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative cases folder that does not exist, as typed in an empty folder
    line = one_line_refusal(["train", model, *extra, "--out", str(tmp_path / "tx")], capsys, *words)
    assert line.startswith(f"bbbanomaly train {model}: error: "), line
    assert not (tmp_path / "tx").exists()


def test_a_refused_value_is_said_like_argparses_own_errors(tmp_path, capsys, monkeypatch):
    """`--lr abc` (argparse) always said "bbbanomaly train dmri-vae: error"; `--lr -1` (our range) now says the same."""
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:  # argparse's error exits
        main(["train", "dmri-vae", "nonexistent", "--lr", "abc", "--out", "tx"])
    assert exited.value.code == 2
    argparse_line = capsys.readouterr().err.strip()
    ours = one_line_refusal(["train", "dmri-vae", "nonexistent", "--lr", "-1", "--out", "tx"], capsys, "--lr")
    assert argparse_line.startswith("bbbanomaly train dmri-vae: error: argument --lr"), argparse_line
    assert ours.split(": error: ")[0] == argparse_line.split(": error: ")[0] == "bbbanomaly train dmri-vae"


def test_python_train_recdisc_refuses_a_latent_before_any_work(tmp_path):
    """dmri.training.train from Python refuses latent= for recdisc, as the command line does (it was ignored)."""
    from BBBAnomalyLib.core.errors import InputError
    from BBBAnomalyLib.dmri.training import train

    with pytest.raises(InputError, match="latent=64 is the VAE's latent size"):
        train({}, tmp_path / "out", "recdisc", latent=64)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, said", [
    (["--simulate", "2", "--max-curves", "100"], "--max-curves 100 samples the curves of real CASES"),
    (["CASES", "--curves-per-case", "100"], "--curves-per-case 100 applies to --simulate only"),
])
def test_train_phae_refuses_the_other_sources_curve_count(args, said, tmp_path, capsys):
    """train phae: --max-curves with --simulate and --curves-per-case with CASES were ignored without a word."""
    cases = tmp_path / "cases"
    (cases / "c1").mkdir(parents=True)
    argv = ["train", "phae", *[str(cases) if a == "CASES" else a for a in args], "--out", str(tmp_path / "out")]
    line = one_line_refusal(argv, capsys, said)
    assert line.startswith("bbbanomaly train phae: error:")
    assert not (tmp_path / "out").exists()

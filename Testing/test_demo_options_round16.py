"""`bbbanomaly demo`: --snr and --slices reach every demo that can use them and are refused, in one line, by a demo
that cannot (the diffusion and T1/FLAIR demos ignored both before; audit of round 15)."""

from __future__ import annotations

import pytest

from BBBAnomalyLib.cli import main


@pytest.mark.parametrize("argv, words", [
    (["--pipeline", "dmri", "--slices", "4"], ("--slices", "diffusion", "fixed")),
    (["--pipeline", "t1flair", "--slices", "all"], ("--slices", "T1/FLAIR", "fixed")),
    (["--pipeline", "t1flair", "--snr", "20"], ("--snr", "T1/FLAIR", "leave --snr out")),
])
def test_a_demo_refuses_an_option_it_cannot_use(tmp_path, capsys, argv, words):
    out = tmp_path / "d"
    assert main(["demo", *argv, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not out.exists()


def _record_dmri(monkeypatch):
    from BBBAnomalyLib.dmri import demo as dmri_demo

    seen = {}

    def run_demo(tmp, printer, seed=0, **kw):
        seen.update(kw, seed=seed)
        (tmp / "dmri").mkdir()
        return ("result", "phantom")

    monkeypatch.setattr(dmri_demo, "run_demo", run_demo)
    monkeypatch.setattr(dmri_demo, "print_summary", lambda *a: None)
    return seen


def test_the_diffusion_demo_gets_the_users_snr_and_keeps_its_own_default(tmp_path, monkeypatch):
    seen = _record_dmri(monkeypatch)
    assert main(["demo", "--pipeline", "dmri", "--snr", "12", "--seed", "3", "--out", str(tmp_path / "a"),
                 "--quiet"]) == 0
    assert seen == {"snr": 12.0, "seed": 3}
    seen.clear()
    assert main(["demo", "--pipeline", "dmri", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert seen == {"seed": 0}  # no --snr: the phantom's own b0 SNR (30), not the DSC object's 50


def test_demo_all_passes_the_snr_to_the_diffusion_demo_and_says_the_t1flair_keeps_its_own(tmp_path, monkeypatch, capsys):
    from BBBAnomalyLib.dce import demo as dce_demo
    from BBBAnomalyLib.structural import demo as t1flair_demo

    seen = _record_dmri(monkeypatch)
    monkeypatch.setattr(dce_demo, "run_inside", lambda args, tmp, printer: ((tmp / "dce").mkdir(), args.snr)[1:])
    monkeypatch.setattr(dce_demo, "print_summary", lambda *a: print(f"dce snr {a[0]}"))
    monkeypatch.setattr(t1flair_demo, "run_demo", lambda tmp, printer, seed=0: ((tmp / "t1flair").mkdir(),)[1:])
    monkeypatch.setattr(t1flair_demo, "print_summary", lambda *a: None)
    assert main(["demo", "--pipeline", "all", "--slices", "3", "--snr", "80", "--out", str(tmp_path / "all")]) == 0
    printed = capsys.readouterr().out
    assert seen["snr"] == 80.0
    assert "dce snr 80.0" in printed
    assert "the T1/FLAIR phantom keeps its own noise level" in printed

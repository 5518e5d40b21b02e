"""The three T1/FLAIR trainers: a step, a checkpoint, resume, and DistributedDataParallel (gloo)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from BBBAnomalyLib import weights
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.structural.cases import enhancing_label, et_label, find_case_files, load_case
from BBBAnomalyLib.structural.models import load


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    root = tmp_path_factory.mktemp("t1flair_cases")
    for seed, enhancing in ((1, True), (2, False)):
        make_structural_phantom(seed, enhancing=enhancing).write(root / "tumor" / f"c{seed}", f"c{seed}")
    make_structural_phantom(3, tumor=False).write(root / "normal" / "n3", "n3")
    return root


def test_brats_layout_and_both_label_conventions(cases, tmp_path):
    files = find_case_files(cases / "tumor" / "c1")
    assert {"t1", "flair", "t1gd", "seg", "brain"} <= set(files)
    for name in ("TCGA-DU-7294_t1_bet.nii.gz", "TCGA-DU-7294_fla_bet.nii.gz", "TCGA-DU-7294_t1c_bet.nii.gz",
                 "TCGA-DU-7294_seg_fusion.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert set(find_case_files(tmp_path)) == {"t1", "flair", "t1gd", "seg"}
    seg_2021 = np.array([0, 1, 2, 4] * 10)
    seg_2023 = np.array([0, 1, 2, 3] * 10)
    assert enhancing_label(seg_2021) == 4 and enhancing_label(seg_2023) == 3
    assert et_label(seg_2021) == et_label(seg_2023) == 1 and et_label(np.array([0, 1, 2] * 10)) == 0
    case = load_case(cases / "tumor" / "c1", 16)
    assert case.et == 1 and case.t1.shape[1:] == (16, 16) and case.tumor.max() == 1
    assert load_case(cases / "tumor" / "c2", 16).et == 0


def _run(args):
    assert main(args) == 0


def _announced_weights(err: str) -> list[str]:
    """The files a trainer's last "weights: PATH (+ CARD ...)" line names."""
    import re

    lines = [line for line in err.splitlines() if line.startswith("weights: ")]
    assert lines, err
    match = re.match(r"weights: (\S+) \(\+ (\S+?)[;)]", lines[-1])
    assert match, lines[-1]
    return [match.group(1), os.path.join(os.path.dirname(match.group(1)), match.group(2))]


def test_training_commands_run_a_step_and_resume(cases, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--device", "cpu", "--max-batches", "1", "--batch-size", "4", "--width", "4"]
    _run(["train", "t1gd-diffusion", str(cases / "tumor"), "--out", str(out), "--size", "16", "--epochs", "1", *tiny])
    ckpt = out / "t1gd-diffusion.checkpoint.pt"
    first = json.loads((out / "t1gd-diffusion.json").read_text(encoding="utf-8"))
    assert ckpt.is_file() and first["sha256"] == weights.sha256(out / "t1gd-diffusion.pt")
    assert len(first["training"]["loss_per_epoch"]) == 1 and first["size"] == 16
    _run(["train", "t1gd-diffusion", str(cases / "tumor"), "--out", str(out), "--size", "16", "--epochs", "2",
          "--resume", *tiny])
    resumed = json.loads((out / "t1gd-diffusion.json").read_text(encoding="utf-8"))
    assert len(resumed["training"]["loss_per_epoch"]) == 1  # only epoch 2 ran
    import torch

    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    _run(["train", "bbb-identifier", str(cases / "tumor"), "--out", str(out), "--synthesis",
          str(out / "t1gd-diffusion.pt"), "--steps", "1", "--epochs", "1", *tiny])
    model, card = load(str(out / "bbb-identifier.pt"), "identifier", torch.device("cpu"))
    assert card["calibration"]["platt_a"] >= 0 and np.isclose(float(model.calibration[0]), card["calibration"]["platt_a"])
    assert not (out / "bbb-identifier.uncalibrated.pt").exists()
    # the files the command names at its end are the ones it kept (round 17: it named the deleted uncalibrated pair)
    assert _announced_weights(capsys.readouterr().err) == [str(out / "bbb-identifier.pt"), str(out / "bbb-identifier.json")]
    _run(["train", "cae", str(cases / "normal"), "--out", str(out), "--epochs", "1", "--shape", "16", "16", "16",
          "--device", "cpu", "--width", "4"])
    assert _announced_weights(capsys.readouterr().err) == [str(out / "cae.pt"), str(out / "cae.json")]
    cae_card = json.loads((out / "cae.json").read_text(encoding="utf-8"))
    assert cae_card["reshape"] == {"mode": "global", "shape": [16, 16, 16]}
    assert cae_card["calibration"]["patient_score_sd"] >= 0


def test_cae_trainer_leaves_out_cases_with_tumor(cases, tmp_path, capsys):
    root = tmp_path / "mixed"
    shutil.copytree(cases / "normal" / "n3", root / "n3")
    shutil.copytree(cases / "tumor" / "c1", root / "c1")
    _run(["train", "cae", str(root), "--out", str(tmp_path / "o"), "--epochs", "1", "--shape", "16", "16", "16",
          "--device", "cpu", "--width", "4"])
    assert "left out 1 case" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "cae.json").read_text(encoding="utf-8"))["training"]["cases"] == 1
    _run(["train", "cae", str(root), "--out", str(tmp_path / "c"), "--epochs", "1", "--reshape", "clustered",
          "--clusters", "2", "--device", "cpu", "--width", "4"])
    policy = json.loads((tmp_path / "c" / "cae.json").read_text(encoding="utf-8"))["reshape"]
    assert policy["mode"] == "clustered" and len(policy["shapes"]) == 1  # one normal case: one group


@pytest.mark.slow
def test_diffusion_trainer_with_two_gloo_processes_under_torchrun(cases, tmp_path, free_port):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", free_port, "-m", "BBBAnomalyLib",
                           "train", "t1gd-diffusion", str(cases / "tumor"), "--out", str(out), "--size", "16",
                           "--width", "4", "--epochs", "1", "--max-batches", "2", "--batch-size", "4",
                           "--device", "cpu"], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out / "t1gd-diffusion.json").read_text(encoding="utf-8"))
    assert card["training"]["processes"] == 2
    assert "2 process(es)" in proc.stderr


def test_several_case_folders_with_repeats_and_a_single_case_folder(cases, tmp_path, capsys):
    """Few real cases among many phantoms: CASES may be case folders, each used --repeat N times per epoch."""
    out = tmp_path / "rep"
    tiny = ["--device", "cpu", "--max-batches", "1", "--batch-size", "4", "--width", "4", "--size", "16", "--epochs", "1"]
    _run(["train", "t1gd-diffusion", str(cases / "tumor" / "c1"), "--out", str(out / "one"), *tiny])
    one = json.loads((out / "one" / "t1gd-diffusion.json").read_text(encoding="utf-8"))["training"]
    _run(["train", "t1gd-diffusion", str(cases / "tumor" / "c2"), "--out", str(out / "two"), *tiny])
    two = json.loads((out / "two" / "t1gd-diffusion.json").read_text(encoding="utf-8"))["training"]
    _run(["train", "t1gd-diffusion", str(cases / "tumor" / "c1"), str(cases / "tumor" / "c2"), "--repeat", "1", "3",
          "--out", str(out / "mix"), *tiny])
    mix = json.loads((out / "mix" / "t1gd-diffusion.json").read_text(encoding="utf-8"))["training"]
    assert one["cases"] == 1 and mix["case_names"] == ["c1", "c2"] and mix["repeats"] == [1, 3]
    assert mix["slices"] == one["slices"] + 3 * two["slices"]
    capsys.readouterr()
    assert main(["train", "t1gd-diffusion", str(cases / "tumor"), "--repeat", "1", "2", "--out", str(out / "bad"), *tiny]) == 2
    assert "one whole number >= 1 per CASES folder (1 given)" in capsys.readouterr().err


def test_init_fine_tunes_existing_weights_with_their_architecture(cases, tmp_path, capsys):
    import torch

    base = tmp_path / "base"
    tiny = ["--device", "cpu", "--max-batches", "1", "--batch-size", "4", "--epochs", "1"]
    _run(["train", "t1gd-diffusion", str(cases / "tumor"), "--out", str(base), "--size", "16", "--width", "4", *tiny])
    start = torch.load(base / "t1gd-diffusion.pt", weights_only=True)
    # zero epochs: the written weights are exactly the --init ones (the loaded state is what training starts from)
    _run(["train", "t1gd-diffusion", str(cases / "tumor"), "--out", str(tmp_path / "zero"), "--init",
          str(base / "t1gd-diffusion.pt"), "--width", "8", "--size", "32", "--device", "cpu", "--epochs", "0"])
    same = torch.load(tmp_path / "zero" / "t1gd-diffusion.pt", weights_only=True)
    assert all(torch.equal(start[k], same[k]) for k in start)
    card = json.loads((tmp_path / "zero" / "t1gd-diffusion.json").read_text(encoding="utf-8"))
    assert card["config"]["width"] == 4 and card["size"] == 16  # the weights' architecture, not --width/--size
    assert card["initialised_from"]["sha256"] == weights.sha256(base / "t1gd-diffusion.pt")
    _run(["train", "t1gd-diffusion", str(cases / "tumor"), "--out", str(tmp_path / "ft"), "--init",
          str(base / "t1gd-diffusion.pt"), *tiny])
    tuned = torch.load(tmp_path / "ft" / "t1gd-diffusion.pt", weights_only=True)
    assert any(not torch.equal(start[k], tuned[k]) for k in start)  # one step moved it
    capsys.readouterr()
    assert main(["train", "cae", str(cases / "normal"), "--out", str(tmp_path / "x"), "--init",
                 str(base / "t1gd-diffusion.pt"), "--device", "cpu", "--epochs", "0"]) == 2
    assert "are a diffusion model, not a cae model" in capsys.readouterr().err


def test_cae_trainer_can_use_tumor_cases_with_the_tumor_masked(cases, tmp_path, capsys):
    from BBBAnomalyLib.structural.cae import to_network
    from BBBAnomalyLib.structural.training import _normal_tissue_weights

    root = tmp_path / "mixed"
    shutil.copytree(cases / "normal" / "n3", root / "n3")
    shutil.copytree(cases / "tumor" / "c1", root / "c1")
    _run(["train", "cae", str(root), "--out", str(tmp_path / "m"), "--epochs", "1", "--shape", "16", "16", "16",
          "--device", "cpu", "--width", "4", "--tumor-cases", "mask", "--tumor-margin", "4"])
    assert "excluded from the loss" in capsys.readouterr().err
    card = json.loads((tmp_path / "m" / "cae.json").read_text(encoding="utf-8"))
    assert card["training"]["cases"] == 2 and card["training"]["used_with_tumor_masked"] == ["c1"]
    assert card["calibration"]["on"] == "the 1 normal training cases (in-sample)"
    case = load_case(root / "c1", 16, need_t1gd=False)
    w = _normal_tissue_weights(case, 4.0, (16, 16, 16))
    tumor_on_net = to_network([case.volumes["tumor"].astype(np.float32) * 2 - 1], case.volumes["brain"], (16, 16, 16))[0]
    assert np.all(w[tumor_on_net > -0.999] == 0)  # nothing the tumor touches is in the loss
    wider = _normal_tissue_weights(case, 12.0, (16, 16, 16))
    assert 0 < (wider == 0).sum() and (w == 0).sum() < (wider == 0).sum() < w.size  # the margin grows the hole
    normal = load_case(root / "n3", 16, need_t1gd=False)
    assert np.all(_normal_tissue_weights(normal, 4.0, (16, 16, 16)) == 1)


def test_cae_z_reference_can_be_held_apart_normal_brains_of_another_anatomy(cases, tmp_path):
    """--score-reference: the patient z is measured against normal brains that were not trained on (here one on
    a moved anatomy), and the card says so; the reference's own scores are kept."""
    import torch

    from BBBAnomalyLib.phantoms.anatomy import Anatomy, load_anatomy
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    base = load_anatomy()
    shifted = Anatomy(np.roll(base.fractions, 3, axis=1), np.roll(base.brain, 3, axis=1), base.affine)
    for seed in (40, 41):
        make_structural_phantom(seed, tumor=False, anatomy=shifted).write(tmp_path / "ref" / f"r{seed}", f"r{seed}")
    _run(["train", "cae", str(cases / "normal"), "--out", str(tmp_path / "m"), "--epochs", "1", "--shape", "16", "16",
          "16", "--device", "cpu", "--width", "4", "--score-reference", str(tmp_path / "ref")])
    card = json.loads((tmp_path / "m" / "cae.json").read_text(encoding="utf-8"))
    assert "2 held-apart normal cases" in card["calibration"]["on"] and card["score_reference"] == card["calibration"]["on"]
    scores = card["calibration"]["scores"]
    assert len(scores) == 2 and np.isclose(card["calibration"]["patient_score_mean"], np.mean(scores))
    model, _ = load(str(tmp_path / "m" / "cae.pt"), "cae", torch.device("cpu"))
    assert np.allclose(model.score_stats.numpy(), [np.mean(scores), np.std(scores, ddof=1) + 1e-6], rtol=1e-5)


@pytest.mark.shared_data
def test_fine_tuning_on_phantoms_plus_a_real_tcga_case_folder(cases, shared_data, tmp_path):
    """The demo recipe's path: a real case folder given directly, oversampled, from bundled weights."""
    real = shared_data / "brats" / "TCGA-FG-6692"
    out = tmp_path / "ft"
    _run(["train", "t1gd-diffusion", str(cases / "tumor"), str(real), "--repeat", "1", "2", "--init",
          "t1flair-diffusion-phantom", "--out", str(out), "--epochs", "1", "--max-batches", "1", "--batch-size", "4",
          "--device", "cpu"])
    card = json.loads((out / "t1gd-diffusion.json").read_text(encoding="utf-8"))
    assert card["training"]["case_names"] == ["c1", "c2", "TCGA-FG-6692"] and card["training"]["repeats"] == [1, 1, 2]
    assert card["size"] == 48 and card["initialised_from"]["name"] == "t1flair-diffusion-phantom"
    _run(["train", "cae", str(cases / "normal"), str(real), "--tumor-cases", "mask", "--init", "t1flair-cae-phantom",
          "--out", str(out), "--epochs", "1", "--device", "cpu"])
    cae_card = json.loads((out / "cae.json").read_text(encoding="utf-8"))
    assert cae_card["training"]["used_with_tumor_masked"] == ["TCGA-FG-6692"]


def test_random_labels_off_tumor_keep_tumor_slices_and_draw_both_labels_elsewhere():
    import torch

    from BBBAnomalyLib.structural.training import random_labels_off_tumor

    tumor = torch.zeros(200, 1, 8, 8)
    tumor[:100, 0, 2:5, 2:5] = 1  # the first 100 slices hold 9 tumor pixels, the rest none
    labels = torch.ones(200, dtype=torch.long)
    out = random_labels_off_tumor(labels, tumor, torch.Generator().manual_seed(0))
    assert out.dtype == labels.dtype and torch.all(out[:100] == 1)  # a tumor slice keeps its case's label
    assert 30 < int((out[100:] == 0).sum()) < 70  # elsewhere the label carries no information

"""`bbbanomaly train dmri-*`: DistributedDataParallel with two CPU processes (gloo), resume, model card,
and the trained weights in `run_dmri`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TINY = ["--grid", "16", "16", "16", "--voxel-mm", "12", "--widths", "4", "8", "8", "--directions", "16",
        "--threads", "1", "--batch-size", "1"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom

    root = tmp_path_factory.mktemp("dmri_cases")
    for seed in range(3):
        make_dmri_phantom(seed, voxel_mm=8.0, n_directions=20).write(root / "cases" / f"h{seed}")
    return root


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def test_ddp_two_cpu_processes_then_resume(cases, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "run"
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-port", str(29600 + os.getpid() % 300), "-m",
           "BBBAnomalyLib", "train", "dmri-recdisc", str(cases / "cases"), "--out", str(out), "--epochs", "2",
           "--name", "tiny", *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 process(es) on cpu" in done.stdout and "epoch 2/2" in done.stdout
    card = json.loads((out / "tiny.json").read_text(encoding="utf-8"))
    assert card["training"]["processes"] == 2 and card["kind"] == "recdisc" and card["fixed_threshold"] == 0.5
    assert card["training"]["n_train"] == 2 and card["training"]["n_val"] == 1
    state = torch.load(out / "tiny.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    first = torch.load(out / "tiny.checkpoint.pt", weights_only=True)
    assert first["epoch"] == 1 and len(first["history"]) == 2

    resume = [sys.executable, "-m", "BBBAnomalyLib", "train", "dmri-recdisc", str(cases / "cases"), "--out",
              str(out), "--epochs", "3", "--name", "tiny", "--resume", *TINY]
    done = subprocess.run(resume, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed after epoch 2 of 3" in done.stdout and "epoch 3/3" in done.stdout and "epoch 1/3" not in done.stdout
    after = torch.load(out / "tiny.checkpoint.pt", weights_only=True)
    assert after["epoch"] == 2 and [h["epoch"] for h in after["history"]] == [1, 2, 3]
    changed = [k for k in first["state_dict"] if not torch.equal(first["state_dict"][k], after["state_dict"][k])]
    assert changed  # the resumed epoch trained the restored model further


def test_single_process_vae_weights_run_in_the_pipeline(cases, tmp_path):
    from BBBAnomalyLib.dmri import DMRIParameters, read_dwi, run_dmri
    from BBBAnomalyLib.dmri.training import train

    torch.set_num_threads(1)
    path = train(cases / "cases", tmp_path / "vae", "vae", epochs=2, batch_size=2, latent=4, widths=(4, 8, 8),
                 grid=(16, 16, 16), voxel_mm=12.0, directions=16, val_fraction=0.34, device="cpu", threads=1)
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert card["input"]["shape"] == [16, 16, 16] and len(card["input"]["directions"]) == 16
    for score in ("abs-mean", "rms"):
        q = card["healthy_score_quantiles"][score]
        assert q["0.99"] <= card["fixed_threshold"][score] <= q["0.999"]  # the 99.5th percentile
    dwi = read_dwi(cases / "cases" / "h0" / "dwi.nii.gz")
    result = run_dmri(dwi, DMRIParameters(model="vae", weights=str(path), device="cpu"))
    assert result.report["model"]["grid"] == {"shape": [16, 16, 16], "voxel_mm": 12.0}
    assert np.isfinite(result.maps["anomaly"].data).all()
    # the weights must match the requested model kind, and a tampered file is refused
    from BBBAnomalyLib.core.errors import InputError

    with pytest.raises(InputError, match="not 'recdisc'"):
        run_dmri(dwi, DMRIParameters(model="recdisc", weights=str(path), device="cpu"))
    # --init: fine-tuning starts from these weights (recorded in the card); another configuration is refused
    tuned = train(cases / "cases", tmp_path / "tuned", "vae", epochs=1, batch_size=2, latent=4, widths=(4, 8, 8),
                  grid=(16, 16, 16), voxel_mm=12.0, directions=16, val_fraction=0.34, device="cpu", threads=1,
                  init=str(path), lr=1e-12)
    tuned_card = json.loads(tuned.with_suffix(".json").read_text(encoding="utf-8"))
    assert tuned_card["training"]["initialised_from"] == {"name": card["name"], "sha256": card["sha256"]}
    start, end = torch.load(path, weights_only=True), torch.load(tuned, weights_only=True)
    assert all(torch.allclose(start[k].float(), end[k].float(), atol=1e-3) for k in start)  # lr 1e-12: unchanged
    with pytest.raises(InputError, match="differs"):
        train(cases / "cases", tmp_path / "bad", "vae", epochs=1, batch_size=2, latent=8, widths=(4, 8, 8),
              grid=(16, 16, 16), voxel_mm=12.0, directions=16, device="cpu", threads=1, init=str(path))
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(InputError, match="checksum"):
        run_dmri(dwi, DMRIParameters(model="vae", weights=str(path), device="cpu"))

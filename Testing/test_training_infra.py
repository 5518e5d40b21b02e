"""Shared learned-model plumbing: device choice, the weights registry, checkpoints."""

import json

import pytest
import torch

from BBBAnomalyLib import InputError, weights
from BBBAnomalyLib.core.devices import describe_devices, device_summary, resolve_device
from BBBAnomalyLib.training import distributed_context, load_checkpoint, save_checkpoint


def test_device_choices_on_this_machine():
    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="not one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
    info = describe_devices()
    assert info["torch"] == torch.__version__
    assert torch.__version__ in device_summary(info)


def test_weights_are_checked_before_loading(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "toy.pt"
    torch.save(model.state_dict(), path)
    card = weights.write_entry({"name": "toy", "trained_on": "nothing", "command": "this test"}, path)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    assert weights.available() == ["toy"]
    assert json.loads(card.read_text(encoding="utf-8"))["sha256"] == weights.sha256(path)
    state = weights.load_state_dict("toy")
    assert torch.equal(state["weight"], model.weight.detach())
    path.write_bytes(path.read_bytes()[:-8])  # truncated file
    with pytest.raises(InputError, match="checksum"):
        weights.load_state_dict("toy")
    with pytest.raises(InputError, match="available: toy"):
        weights.entry("missing")


def test_checkpoint_round_trip_restores_model_and_optimizer(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, opt, epoch=3, best_loss=0.5)
    fresh = torch.nn.Linear(4, 1)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    rest = load_checkpoint(path, fresh, fresh_opt)
    assert rest["epoch"] == 3 and rest["best_loss"] == 0.5
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert not (tmp_path / "ckpt.pt.partial").exists()


def test_single_process_context_without_torchrun(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = distributed_context("cpu")
    assert not ctx.distributed and ctx.is_main and ctx.sampler([1, 2, 3]) is None
    model = ctx.wrap(torch.nn.Linear(2, 2))
    assert isinstance(model, torch.nn.Linear)

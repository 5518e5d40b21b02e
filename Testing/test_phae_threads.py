"""PHAE's voxel chunks on a thread pool (issue 14/17: the learned map no slower than oSVD on the same cores).

Each chunk is pooled, shifted and inferred by one thread with one torch thread, so a threaded run must give
the maps of a serial run over the same chunks bit for bit, and leave torch's thread setting as it found it."""

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from BBBAnomalyLib.dsc.phae import PHAEModel  # noqa: E402
from BBBAnomalyLib.dsc.phae.inference import chunk_workers  # noqa: E402
from BBBAnomalyLib.dsc.phae.simulate import simulate_case  # noqa: E402
from BBBAnomalyLib.perfusion.guided_pooling import GuidedPooling  # noqa: E402

FIELDS = ("cbf", "tmax", "mtt", "loss", "fit_error", "cbf_uncertainty", "pooled_curves")


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(7)
    shape = (16, 16, 20)  # a block of 5,120 voxels: several chunks of 1,024
    sim = simulate_case(rng, int(np.prod(shape)), frame_interval=1.5, n_frames=60, snr=30.0)
    brain = np.ones(shape, bool)
    s0 = rng.uniform(800.0, 1200.0, brain.sum()).astype(np.float32)
    delays = rng.uniform(0.0, 3.0, brain.sum()).astype(np.float32)
    return sim, brain, s0, delays


def _fit(sim, chunk, threads, **kw):
    before = torch.get_num_threads()
    try:
        model = PHAEModel(sim.aif, sim.frame_interval, device="cpu", chunk_voxels=chunk, threads=threads)
        torch.set_num_threads(1)  # what the model found, so that the check below sees the pool restore it
        seen = set()
        infer = model.network.infer

        def spy(*args, **kwargs):  # which threads ran the network
            seen.add(threading.get_ident())
            return infer(*args, **kwargs)

        model.network.infer = spy
        fit = model.fit(sim.curves, keep_curves=False, **kw)
        assert torch.get_num_threads() == 1, "the chunk pool must restore torch's thread count"
        return fit, seen
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("extras", ["plain", "delay", "pooling+delay"])
def test_threaded_chunks_give_the_serial_maps_bit_for_bit(case, extras):
    sim, brain, s0, delays = case
    kw = {}
    if "delay" in extras:
        kw["delay_shift"] = delays
    if "pooling" in extras:
        kw["pooling"] = GuidedPooling(brain, s0, 20.0, (2.0, 2.0, 2.0))
    serial, serial_threads = _fit(sim, 1024, threads=1, **kw)
    threaded, pool_threads = _fit(sim, 2048, threads=2, **kw)  # two workers share 2,048 rows: chunks of 1,024
    assert len(serial_threads) == 1 and len(pool_threads) == 2, (serial_threads, pool_threads)
    assert threading.get_ident() not in pool_threads
    for name in FIELDS:
        a, b = getattr(serial, name), getattr(threaded, name)
        if a is None:
            assert b is None, name
            continue
        np.testing.assert_array_equal(a, b, err_msg=name)
    if extras == "plain":  # a real map, not two equal empty ones (measured: Spearman 0.76 with the true CBF)
        from scipy.stats import spearmanr

        assert spearmanr(threaded.cbf, sim.truth["cbf"]).correlation > 0.6
    if "pooling" in extras:
        assert threaded.pooled_curves.max() > 1.0  # the pooling really ran in the threaded tasks


def test_one_worker_on_cuda_or_for_a_single_chunk():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert chunk_workers(cpu, 2, 10_000, 4096) == 2
    assert chunk_workers(cpu, None, 10_000, 4096) >= 1
    assert chunk_workers(cpu, 2, 4096, 4096) == 1  # one chunk: nothing to share
    assert chunk_workers(cuda, 4, 10**6, 4096) == 1  # one stream: serial


def test_thread_counts_follow_the_cpus_this_process_may_use(monkeypatch):
    """On a cluster node a job may own 1 of 64 cores: neither PHAE nor the classic deconvolution may start more
    threads than the process's CPU affinity allows (os.cpu_count() would say 64)."""
    import os

    from BBBAnomalyLib.dsc import deconvolution

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform: the CPU count is all there is")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert chunk_workers(torch.device("cpu"), None, 10**6, 4096) == 1
    with deconvolution._chunk_workers(100, None) as pool:
        assert pool is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert chunk_workers(torch.device("cpu"), None, 10**6, 4096) == 4  # at most 4


def test_a_cancel_stops_the_threaded_chunks_without_running_the_rest(case):
    """The panel cancels through the progress callback: the chunks not yet started must not run on."""
    from BBBAnomalyLib.core.errors import CancelledError

    sim = case[0]
    before = torch.get_num_threads()
    try:
        model = PHAEModel(sim.aif, sim.frame_interval, device="cpu", chunk_voxels=512, threads=2)  # 20 chunks of 256
        torch.set_num_threads(1)
        calls = []
        infer = model.network.infer
        model.network.infer = lambda *a, **k: (calls.append(1), infer(*a, **k))[1]

        def cancel(fraction):
            raise CancelledError("cancelled by the user")

        with pytest.raises(CancelledError):
            model.fit(sim.curves, keep_curves=False, progress=cancel)
        assert len(calls) < 20 // 2, len(calls)  # measured: 2-4 of the 20 chunks ran
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

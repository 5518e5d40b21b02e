"""The library's own thread pools follow the CPUs this process may use and $BBBANOMALY_THREADS, and
`bbbanomaly bids --n-jobs N` gives each participant's process its share of the cores (no N x machine-size pools)."""

import os

import pytest

from BBBAnomalyLib import InputError
from BBBAnomalyLib.core.devices import THREADS_ENV, block_workers, thread_budget_env

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    for name in (THREADS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)


def test_block_workers_follow_affinity_cap_and_the_environment(eight_cpus, monkeypatch):
    assert block_workers() == 4  # at most 4: the pools' work is memory-bound beyond that
    monkeypatch.setenv(THREADS_ENV, "2")
    assert block_workers() == 2
    monkeypatch.setenv(THREADS_ENV, "16")
    assert block_workers() == 4
    for bad in ("two", "0", "-3"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(InputError, match=THREADS_ENV):
            block_workers()


def test_each_of_n_jobs_gets_its_share_and_user_settings_are_kept(eight_cpus, monkeypatch):
    assert thread_budget_env(4) == {THREADS_ENV: "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                                    "OPENBLAS_NUM_THREADS": "2"}
    assert thread_budget_env(16)[THREADS_ENV] == "1"  # never 0
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice stands
    assert "OMP_NUM_THREADS" not in thread_budget_env(2) and thread_budget_env(2)[THREADS_ENV] == "4"


def test_map_summaries_on_threads_are_the_serial_ones_in_the_maps_order(monkeypatch):
    import threading

    import numpy as np

    from BBBAnomalyLib.core import report

    rng = np.random.default_rng(0)
    values = {name: rng.gamma(2.0 + i, 10.0, 5000).astype(np.float32) for i, name in enumerate(("cbf", "cbv", "mtt", "tmax"))}
    values["mtt"][:7] = np.nan  # non-finite values are left out, as summarise does
    inside = rng.random(5000) < 0.3
    serial = {name: report.summarise(v) for name, v in values.items()}
    threads = set()
    original = report.summarise

    def recording(v):
        threads.add(threading.get_ident())
        return original(v)

    monkeypatch.setattr(report, "summarise", recording)
    got = report.summarise_maps(values, workers=2)
    assert list(got) == list(values) and got == serial
    assert report.summarise_maps(values, inside, workers=2) == {n: original(v[inside]) for n, v in values.items()}
    assert threading.get_ident() not in threads  # the maps went to the pool
    threads.clear()
    monkeypatch.setenv(THREADS_ENV, "1")  # one thread allowed: no pool at all
    assert report.summarise_maps(values) == serial and threads == {threading.get_ident()}

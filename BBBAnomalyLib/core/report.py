"""Pieces of the JSON report every pipeline writes: versions, timings, warnings, summaries."""

from __future__ import annotations

import dataclasses
import enum
import json
import platform
import time
from contextlib import contextmanager
from importlib import metadata

import numpy as np

from .. import __version__


def parameters_to_json(params) -> dict:
    """A pipeline's parameter dataclass as a JSON-ready dict (enums as their values), for reports."""
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in dataclasses.asdict(params).items()}


def versions() -> dict:
    """Versions of the software that produced a result (for reproducibility)."""
    out = {"BBBAnomalyLib": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "nibabel", "SimpleITK", "scikit-learn", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine_description() -> str:
    """'2-core CPU (Intel Xeon ...), Linux 6.x, Python 3.11.7, numpy 2.x': for benchmark and validation logs."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cores}-core CPU ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, numpy {np.__version__}")


class Timer:
    """Collects named wall-clock timings: ``with timer("deconvolution"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


def summarise(values: np.ndarray) -> dict:
    """mean / median / sd / 5th and 95th percentile of the finite values (JSON-ready)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(p50), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "p5": float(p5), "p95": float(p95)}


def summarise_maps(values: dict, inside: np.ndarray | None = None, workers: int | None = None) -> dict:
    """{name: summarise(map[inside])} for every map, the maps on threads (numpy's partition, the percentiles'
    cost, releases the GIL: a whole brain's dozen maps take about half the time on two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    from .devices import block_workers

    def one(item):
        name, v = item
        return name, summarise(v if inside is None else v[inside])

    workers = block_workers() if workers is None else workers
    if workers <= 1 or len(values) <= 1:
        return dict(map(one, values.items()))
    with ThreadPoolExecutor(min(workers, len(values))) as pool:
        return dict(pool.map(one, values.items()))


def _default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dump_json(data: dict, path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=_default)
        fh.write("\n")

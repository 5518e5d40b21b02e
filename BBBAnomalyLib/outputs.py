"""Write a result folder completely or not at all.

Everything goes into a hidden temporary folder beside the destination, which is renamed into
place only when every file is written. A crash or an error leaves no partial folder behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary folder; on success it becomes `out_dir`, on error it is removed.

    An existing non-empty `out_dir` is an error unless `overwrite`; then it is replaced as a whole
    (never merged: stale maps from another run must not survive).
    """
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; choose another output folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} already exists and is not empty; pass --overwrite or choose another")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

"""Write a result folder completely or not at all, and never touch what this program did not write.

The promises (docs/reliability.md lists the tests behind each):

* **Complete or absent.** Everything goes into a hidden partial folder beside the destination,
  ``.<name>.partial-XXXX``, which is renamed into place only when every file is written. An error,
  Ctrl-C or SIGTERM removes it; after a SIGKILL or a power cut the next run that claims the same
  destination removes it (its owner process is gone).
* **Only our own folders are replaced.** A finished folder holds a manifest, ``.bbbanomaly.json``,
  listing every file written. ``--overwrite`` replaces a folder only when it has that manifest and
  nothing else in it: a folder holding the user's files, an input of the run, or a folder from
  before manifests existed is refused, whatever the flag says.
* **Claimed before the work.** :func:`claim_output_dir` checks the destination and takes a lock
  (``.<name>.bbbanomaly-lock``, created atomically) *before* the computation, so a run that cannot
  write fails in a second instead of after minutes, and two runs cannot both write one folder.
  :func:`atomic_output_dir` uses the claim this process holds on the folder, or claims it itself.
* **Ordinary permissions.** The partial folder is made private while it is written and gets the
  user's umask (like ``mkdir``) when it is published.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from .errors import InputError
from .processes import pid_alive

MANIFEST = ".bbbanomaly.json"
_PARTIAL_MARK = ".bbbanomaly-partial"  # inside a partial or retired folder: who made it
_PROGRAM = "bbbanomaly"

#: The claims this process holds: resolved destination -> OutputClaim.
_CLAIMS: dict[Path, "OutputClaim"] = {}


# --- which process owns a leftover ----------------------------------------------------------------
def _owner_record() -> dict:
    return {"program": _PROGRAM, "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _owner_gone(record_file: Path) -> bool:
    """True when a lock/partial marker was written by a bbbanomaly process that no longer runs here.

    Anything unreadable, from another program, or from another host is never called gone: we only
    remove leftovers we can prove are ours and abandoned.
    """
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("program") != _PROGRAM:
        return False
    if record.get("host") != socket.gethostname():
        return False
    pid = record.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid)


def clean_stale_partials(out: Path) -> list[Path]:
    """Remove ``.<name>.partial-*`` / ``.<name>.old-*`` folders beside ``out`` whose bbbanomaly
    process has died (SIGKILL, power cut). Returns what was removed."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for kind in ("partial", "old"):
        for leftover in out.parent.glob(f".{out.name}.{kind}-*"):
            if leftover.is_dir() and not leftover.is_symlink() and _owner_gone(leftover / _PARTIAL_MARK):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed


# --- is a folder ours? ----------------------------------------------------------------------------
def _files_in(folder: Path) -> list[str]:
    """Every entry below ``folder`` as a relative POSIX path (folders end with '/'; symlinks count as files)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel_root = Path(root).relative_to(folder)
        for d in dirs:
            p = Path(root) / d
            if p.is_symlink():
                found.append((rel_root / d).as_posix())
            else:
                found.append((rel_root / d).as_posix() + "/")
        found.extend((rel_root / f).as_posix() for f in files)
    return sorted(found)


def write_manifest(folder: Path) -> Path:
    """List every file of a finished result folder in its manifest (the proof that we wrote it)."""
    entries = [f for f in _files_in(folder) if f != MANIFEST and f != _PARTIAL_MARK]
    from .. import __version__

    manifest = {"program": _PROGRAM, "version": __version__,
                "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "files": entries}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path


def foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that this program did not write (all of them when it has no manifest)."""
    entries = [f for f in _files_in(folder) if f != MANIFEST]
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        ours = set(manifest["files"]) if manifest.get("program") == _PROGRAM else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return entries or [MANIFEST + " (missing)"]
    return [f for f in entries if f not in ours]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _resolve(out_dir) -> Path:
    """The absolute destination; a symbolic link as the folder itself is refused (replacing it would
    act on whatever it points to)."""
    raw = Path(out_dir).expanduser()
    if raw.is_symlink():
        raise InputError(f"output folder {raw} is a symbolic link; give the real folder or another --out")
    return raw.resolve()


def _check_destination(out: Path, overwrite: bool, inputs) -> None:
    """Refuse a destination we may not write (see the module's promises)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose another --out")
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp).resolve()
        if inp == out or _inside(inp, out):
            raise InputError(f"the output folder {out} holds the input {inp}; choose an --out outside the inputs' folders")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise InputError(f"output folder {out} already exists and is not empty; choose another --out, or pass "
                         "--overwrite to replace a folder that bbbanomaly wrote")
    foreign = foreign_entries(out)
    if foreign:
        example = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"--overwrite refused: {out} holds files bbbanomaly did not write ({example}); only a folder "
                         "written by bbbanomaly is replaced: move those files or choose another --out")


# --- the claim ------------------------------------------------------------------------------------
class OutputClaim:
    """The right of this process to write one destination folder (see :func:`claim_output_dir`)."""

    def __init__(self, out: Path, overwrite: bool, inputs=()):
        self.out = out
        self.overwrite = overwrite
        self.inputs = [Path(p).resolve() for p in inputs if p is not None]
        self.lock = out.parent / f".{out.name}.bbbanomaly-lock"
        self._held = False
        self._writers: list = []

    def add_writer(self, write) -> None:
        """``write(folder)`` runs inside the partial folder after the result's own files, so extra
        files (e.g. the panel's curves.npz) are part of the all-or-nothing write."""
        self._writers.append(write)

    def acquire(self) -> "OutputClaim":
        _check_destination(self.out, self.overwrite, self.inputs)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the folder {self.out.parent} ({exc.strerror or exc}); "
                             "choose an --out where you can write") from None
        clean_stale_partials(self.out)
        for attempt in (1, 2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if attempt == 1 and _owner_gone(self.lock):
                    with contextlib.suppress(OSError):
                        self.lock.unlink()
                    continue
                raise InputError(f"another bbbanomaly run is writing {self.out} (lock {self.lock.name}); wait for it "
                                 "to finish or choose another --out") from None
            except OSError as exc:
                raise InputError(f"cannot write in {self.out.parent} ({exc.strerror or exc}); choose an --out where "
                                 "you can write") from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(_owner_record(), fh)
            break
        self._held = True
        _CLAIMS[self.out] = self
        return self

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(OSError):
                self.lock.unlink()
            self._held = False
        if _CLAIMS.get(self.out) is self:
            del _CLAIMS[self.out]

    def __enter__(self) -> "OutputClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_output_dir(out_dir: str | os.PathLike, overwrite: bool = False, inputs=()) -> OutputClaim:
    """Check and lock the destination before a run starts; use as ``with claim_output_dir(...):``.

    ``inputs``: the run's input files; an output folder that holds one of them is refused (replacing
    it would delete the input). Raises :class:`InputError` with a one-line reason.
    """
    out = _resolve(out_dir)
    if out in _CLAIMS:  # already claimed by this process (e.g. the command, then the worker code)
        return _CLAIMS[out]
    return OutputClaim(out, overwrite, inputs).acquire()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask can only be read by
    setting it, which would briefly loosen a private umask for files other threads create)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # elsewhere: set the strictest while reading, then restore
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False):
    """Yield a partial folder; on success it becomes ``out_dir`` (with its manifest), on error it is removed.

    An existing non-empty ``out_dir`` is an error unless ``overwrite``; then it is replaced as a whole
    (never merged: stale maps from another run must not survive) -- and only when bbbanomaly wrote it.
    Uses this process's claim on ``out_dir`` when it holds one (:func:`claim_output_dir`), otherwise
    claims it for the duration of the write.
    """
    out = _resolve(out_dir)
    claim = _CLAIMS.get(out)
    own_claim = claim is None
    if own_claim:
        claim = OutputClaim(out, overwrite, ()).acquire()
    try:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
            (tmp / _PARTIAL_MARK).write_text(json.dumps(_owner_record()), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write in {out.parent} ({exc.strerror or exc}); choose an --out where you can "
                             "write") from None
        try:
            yield tmp
            for write in claim._writers:
                write(tmp)
            (tmp / _PARTIAL_MARK).unlink()
            write_manifest(tmp)
            os.chmod(tmp, 0o777 & ~_umask())
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"could not write the results in {out.parent} ({exc.strerror or exc}); free some space "
                             "or choose another --out; nothing was written") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # The folder may have changed while we computed: check again just before replacing it.
        try:
            _check_destination(out, overwrite or claim.overwrite, claim.inputs)
        except InputError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if out.exists():
            if not any(out.iterdir()):
                out.rmdir()
            else:
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                out.rename(old)
                (old / _PARTIAL_MARK).write_text(json.dumps(_owner_record()), encoding="utf-8")
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if own_claim:
            claim.release()

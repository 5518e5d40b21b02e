"""Write a result folder completely or not at all, and never touch what this program did not write.

The promises (docs/reliability.md lists the tests behind each):

* **Complete or absent.** Everything goes into a hidden partial folder beside the destination,
  ``.<name>.partial-XXXX``, which is renamed into place only when every file is written. An error,
  Ctrl-C or SIGTERM removes it; after a SIGKILL or a power cut the next run that claims the same
  destination removes it (its owner process is gone).
* **Only our own folders are replaced.** A finished folder holds a manifest, ``.bbbanomaly.json``,
  listing every file written with its size and sha256. ``--overwrite`` replaces a folder only when it
  has that manifest, nothing else in it, and every listed file is still what we wrote: a folder
  holding the user's files (added, edited or swapped in under one of our names), an input of the run,
  a mount point, or a folder from before manifests existed is refused, whatever the flag says.
* **Claimed before the work.** :func:`claim_output_dir` checks the destination and takes a lock
  (``.<name>.bbbanomaly-lock``, created atomically) *before* the computation, so a run that cannot
  write fails in a second instead of after minutes, and two runs cannot both write one folder.
  :func:`atomic_output_dir` uses the claim this process holds on the folder, or claims it itself.
  The parent folders a claim creates are removed again (when still empty) if nothing was published.
* **Ordinary permissions.** The partial folder is made private while it is written and gets the
  user's umask (like ``mkdir``) when it is published.
* **A cancel never lands half-way through publishing.** Ctrl-C and SIGTERM (the CLI's, the panel's Cancel) are
  held during the few renames that replace the destination: one that arrives there puts the previous folder back
  and cancels with nothing written; one that arrives while the previous results are being removed cancels after the
  new ones are complete. :data:`PUBLISHED` lists what this process published, so a cancel can say which.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from .errors import InputError
from .no_clobber import differences, snapshot
from .processes import pid_alive

MANIFEST = ".bbbanomaly.json"
_PARTIAL_MARK = ".bbbanomaly-partial"  # inside a partial or retired folder: who made it
_PROGRAM = "bbbanomaly"

#: The claims this process holds: resolved destination -> OutputClaim.
_CLAIMS: dict[Path, "OutputClaim"] = {}
#: every folder this process published (in order): what a cancel that came after a publication reports as written
PUBLISHED: list[Path] = []


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM (and Windows' SIGBREAK) in the main thread: their handlers only record them. Yields
    the list of the signals received; the previous handlers are back on exit. In another thread (no signal handler
    can be set there) nothing is held and the list stays empty."""
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    names = [n for n in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, n)]
    saved = {}
    try:
        for name in names:
            sig = getattr(signal, name)
            if signal.getsignal(sig) is None:
                # a handler installed outside Python (an application embedding it, e.g. Slicer's): Python could not
                # put it back, so it is left alone
                continue
            try:
                saved[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
            except (ValueError, OSError):  # not settable here: that signal is simply not held
                pass
        yield received
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):  # in chunks: a map can be hundreds of MB
            digest.update(block)
    return digest.hexdigest()


def _checksum(path: Path) -> dict | None:
    """{"size", "sha256"} of a regular file; None for a folder or a symbolic link."""
    if path.is_symlink() or not path.is_file():
        return None
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def write_manifest(folder: Path) -> Path:
    """List every file of a finished result folder in its manifest (the proof that we wrote it).

    Each file's size and sha256 are recorded so that ``--overwrite`` can tell our file from the
    user's edit of it (or the user's own file put under our name). Hashing reads every file back once
    more when it is written (about a second per GB, small beside the run); "files" stays the plain
    list of names that manifests without checksums had, so both kinds read alike.
    """
    entries = [f for f in _files_in(folder) if f != MANIFEST and f != _PARTIAL_MARK]
    from .. import __version__

    checksums = {f: c for f in entries if (c := _checksum(folder / f)) is not None}
    manifest = {"program": _PROGRAM, "version": __version__,
                "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "files": entries, "checksums": checksums}
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


def changed_entries(folder: Path) -> list[str]:
    """Files listed with a checksum in the manifest of ``folder`` that are no longer what bbbanomaly
    wrote (the user edited them, or put a file of their own under that name).

    A manifest without checksums (written before they were recorded) lists none, as before; a file
    that is gone is no loss. The size is compared first, so only a same-size file is hashed; each
    check reads the listed files once (twice per ``--overwrite`` run: before the work and before the
    swap), which is the price of never deleting an edited map.
    """
    try:
        checksums = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("checksums", {})
    except (OSError, ValueError, AttributeError):
        return []  # no readable manifest: foreign_entries refuses the folder already
    if not isinstance(checksums, dict):
        return [MANIFEST + " (its checksums are unreadable)"]
    changed = []
    for name, recorded in sorted(checksums.items()):
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        try:
            same = (isinstance(recorded, dict) and not path.is_symlink() and path.is_file()
                    and path.stat().st_size == recorded.get("size") and _sha256(path) == recorded.get("sha256"))
        except OSError:
            same = False  # unreadable: we cannot prove it is ours
        if not same:
            changed.append(name)
    return changed


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _resolve(out_dir) -> Path:
    """The absolute destination; a symbolic link as the folder itself is refused (replacing it would
    act on whatever it points to)."""
    try:
        raw = Path(out_dir).expanduser()
        if raw.is_symlink():
            raise InputError(f"output folder {raw} is a symbolic link; give the real folder or another --out")
        return raw.resolve()
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a symbolic-link loop
        raise InputError(f"output folder {str(out_dir)!r} cannot be used: {getattr(exc, 'strerror', None) or exc}; "
                         "choose another --out") from None


def _check_destination(out: Path, overwrite: bool, inputs) -> None:
    """Refuse a destination we may not write (see the module's promises)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose another --out")
    if out.is_dir() and os.path.ismount(out):  # the folder is replaced by a rename, which a mount point refuses
        raise InputError(f"output folder {out} is a mount point, which bbbanomaly cannot replace; choose a folder "
                         f"inside it (e.g. --out {out / 'results'}) or another --out")
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp).resolve()
        if inp == out or _inside(inp, out):
            raise InputError(f"the output folder {out} holds the input {inp}; choose an --out outside the inputs' folders")
    try:
        empty = not out.exists() or not any(out.iterdir())
    except OSError as exc:  # a folder we may not list (permissions): we cannot know what it holds
        raise InputError(f"cannot look inside the output folder {out} ({exc.strerror or exc}); choose an --out you "
                         "can read and write") from None
    if empty:
        return
    if not overwrite:
        raise InputError(f"output folder {out} already exists and is not empty; choose another --out, or pass "
                         "--overwrite to replace a folder that bbbanomaly wrote")
    foreign = foreign_entries(out)
    if foreign:
        example = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"--overwrite refused: {out} holds files bbbanomaly did not write ({example}); only a folder "
                         "written by bbbanomaly is replaced: move those files or choose another --out")
    changed = changed_entries(out)
    if changed:
        example = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        it = "them" if len(changed) > 1 else "it"
        raise InputError(f"--overwrite refused: in {out}, {example} changed after bbbanomaly wrote {it} (edited or "
                         f"replaced by another file); move {it} out of the folder to keep {it}, or choose another --out")


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
        self._made: list[Path] = []  # parent folders this claim created, outermost first

    def add_writer(self, write) -> None:
        """``write(folder)`` runs inside the partial folder after the result's own files, so extra
        files (e.g. the panel's curves.npz) are part of the all-or-nothing write."""
        self._writers.append(write)

    def acquire(self) -> "OutputClaim":
        _check_destination(self.out, self.overwrite, self.inputs)
        try:
            self._made = make_parents(self.out)
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
                self._remove_made()
                raise InputError(f"another bbbanomaly run is writing {self.out} (lock {self.lock.name}); wait for it "
                                 "to finish or choose another --out") from None
            except OSError as exc:
                self._remove_made()
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
        if not self.out.exists():  # nothing was published: a failed run leaves no empty folders of its own
            self._remove_made()

    def _remove_made(self) -> None:
        remove_empty_folders(self._made)
        self._made = []

    def __enter__(self) -> "OutputClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; returns those created, outermost first, so that
    a failed run can remove exactly them (:func:`remove_empty_folders`) and never a folder it found."""
    missing = [p for p in path.parents if not p.exists()][::-1]
    made = []
    for folder in missing:
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                remove_empty_folders(made)
                raise
            continue  # made meanwhile by someone else: not ours to remove
        except OSError:
            remove_empty_folders(made)
            raise
        made.append(folder)
    if not path.parent.is_dir():  # an existing file where the folder should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent))
    return made


def remove_empty_folders(made: list[Path]) -> None:
    """Remove folders from :func:`make_parents`, innermost first, each only while it is empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()  # fails on a folder that is not empty: what is in it stays
        except OSError:
            return


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


def _listing_before_check(out: Path) -> dict[str, tuple]:
    """:func:`.no_clobber.snapshot` of a destination folder ({} when there is none to replace)."""
    if out.is_symlink() or not out.is_dir():
        return {}
    try:
        return snapshot(out)
    except OSError as exc:
        raise InputError(f"cannot look inside the output folder {out} ({exc.strerror or exc}); choose an --out you "
                         "can read and write") from None


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
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
            (tmp / _PARTIAL_MARK).write_text(json.dumps(_owner_record()), encoding="utf-8")
        except OSError as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
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
        old, emptied = None, False

        def put_back():
            """What was there before (the user's empty folder, our previous results) back in place; ours dropped."""
            with contextlib.suppress(OSError):
                if old is not None and not out.exists():
                    (old / _PARTIAL_MARK).unlink(missing_ok=True)
                    old.rename(out)
                elif emptied and not out.exists():
                    out.mkdir()
            shutil.rmtree(tmp, ignore_errors=True)

        # A cancel is held from the last check to the end of the renames: arriving there it would otherwise leave
        # the new results published and the previous ones in a hidden folder while the run reports "cancelled".
        with _signals_held() as held:
            # The folder may have changed while we computed: check again just before replacing it. Its listing is
            # taken first, so that a file dropped in or edited after the check shows once it is renamed aside.
            try:
                before = _listing_before_check(out)
                _check_destination(out, overwrite or claim.overwrite, claim.inputs)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            try:
                if out.exists():
                    if not any(out.iterdir()):
                        out.rmdir()
                        emptied = True
                    else:
                        old = out.with_name(f".{out.name}.old-{os.getpid()}")
                        out.rename(old)
                        touched = differences(before, snapshot(old))
                        if touched:  # put back by put_back() below, with everything in it
                            example = ", ".join(touched[:3]) + (f" and {len(touched) - 3} more" if len(touched) > 3
                                                                else "")
                            raise InputError(f"--overwrite refused: {out} changed while the results were being put "
                                             f"in place ({example}); nothing was replaced: run again when nothing "
                                             "else writes there, or choose another --out")
                        (old / _PARTIAL_MARK).write_text(json.dumps(_owner_record()), encoding="utf-8")
                tmp.rename(out)
            except BaseException as exc:
                put_back()
                if not isinstance(exc, OSError):
                    raise
                hint = (" (a mount point or a folder in use cannot be replaced: choose a folder inside it)"
                        if exc.errno == errno.EBUSY else "")
                raise InputError(f"could not put the results in place at {out} ({exc.strerror or exc}){hint}; "
                                 "choose another --out; nothing was written") from None
            rolled_back = False
            if held:  # cancelled while publishing: the user asked for nothing to change, so nothing does
                try:
                    out.rename(tmp)
                    rolled_back = True
                except OSError:  # cannot take it back: the new results stay, complete, and the cancel says so
                    pass
                if rolled_back:
                    put_back()
        if rolled_back:
            from .errors import CancelledError

            raise CancelledError("cancelled; nothing was written")
        # The previous results go; a cancel now comes after the new ones are complete, and says so (PUBLISHED).
        late = list(held)
        with _signals_held() as held:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            PUBLISHED.append(out)
        if held or late:
            from .errors import CancelledError

            raise CancelledError(f"cancelled after the results were complete in {out}")
    finally:
        if own_claim:
            claim.release()

"""One output file (``roi-stats --json``, the BIDS app's own tables): checked before the work, written complete or
not at all, and never put over a file that is an input or that arrived after the check (see :mod:`.no_clobber`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import InputError
from .no_clobber import Taken, link_into_place
from .outputs import _umask, make_parents, remove_empty_folders


def check_output_file(path: str | os.PathLike, overwrite: bool = False, inputs=(), option: str = "--json") -> Path:
    """Refuse a destination file we may not write, before the work; returns it as an absolute path.

    An input of the command (``inputs``, compared by path and by inode, so a hard link counts) is
    never replaced, whatever ``overwrite`` says; nor a folder, a symbolic link or a device. Any other
    existing file is replaced only with ``overwrite``. Raises :class:`InputError` with a one-line reason.
    """
    raw = Path(path).expanduser()
    if raw.is_symlink():  # replacing it would act on the link or on whatever it points to: neither is asked
        raise InputError(f"{option} {raw} is a symbolic link; give the real file or another name")
    target = raw.resolve()
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp)
        same = target == inp.resolve()
        with contextlib.suppress(OSError):
            same = same or (target.exists() and os.path.samefile(target, inp))
        if same:
            raise InputError(f"{option} {target} is an input of this command and is never overwritten; choose "
                             "another file name")
    if target.is_dir():
        raise InputError(f"{option} {target} is a folder; give a file name, e.g. {option} {target / 'stats.json'}")
    if target.exists():
        if not target.is_file():
            raise InputError(f"{option} {target} exists and is not a regular file; choose another file name")
        if not overwrite:
            raise InputError(f"{option} {target} already exists; choose another file name, or pass --overwrite to "
                             "replace it")
    for folder in target.parents:  # the nearest existing folder on the way must be a folder we may write in
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"cannot write {option} {target}: {folder} is a file, not a folder; choose another "
                                 "file name")
            if not os.access(folder, os.W_OK | os.X_OK):  # also EROFS: a read-only filesystem
                raise InputError(f"cannot write {option} {target}: no permission to write in {folder} (or it is "
                                 "read-only); choose a file in a folder where you can write")
            break
    return target


def write_output_file(path: str | os.PathLike, text: str, overwrite: bool = False, inputs=(),
                      option: str = "--json", may_replace=None) -> Path:
    """Write ``text`` to ``path`` complete or not at all: a temporary file beside it, then linked into place.

    The destination is checked again (:func:`check_output_file`) just before, in case it appeared
    while the command worked, and the link itself never replaces a file that arrived after that check
    (:func:`.no_clobber.link_into_place`): without ``overwrite`` nothing is replaced; with it, any regular file
    but an input is, or only what ``may_replace(path)`` accepts when it is given (the app's own earlier file).
    Missing parent folders are created, like ``--out``'s, and removed again if the write fails. Returns the
    absolute path written.
    """
    target = check_output_file(path, overwrite, inputs, option)
    try:
        made = make_parents(target)
    except OSError as exc:
        raise InputError(f"cannot create the folder {target.parent} for {option} ({exc.strerror or exc}); choose a "
                         "file in a folder where you can write") from None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the name points at it (power cut)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; a written file gets the umask, like open()
        link_into_place(Path(tmp), target, _replaceable(overwrite, inputs, may_replace))
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        remove_empty_folders(made)
        if isinstance(exc, Taken):
            where = "" if exc.path == target else f" (it was moved to {exc.path} while another one appeared)"
            raise InputError(f"{option} {target} appeared while the command ran and was not written by it{where}; "
                             "nothing was replaced: choose another file name, or run again") from None
        if not isinstance(exc, OSError):
            raise
        raise InputError(f"cannot write {option} {target} ({exc.strerror or exc}); choose a file in a folder where "
                         "you can write; nothing was written") from None
    return target


def _replaceable(overwrite: bool, inputs, may_replace):
    """What write_output_file may drop at its destination: nothing without ``overwrite``; else ``may_replace``'s
    choice, or any file that is not an input of the command."""
    if not overwrite:
        return None
    if may_replace is not None:
        return may_replace

    def not_an_input(path: Path) -> bool:
        for inp in inputs:
            with contextlib.suppress(OSError):
                if inp is not None and os.path.samefile(path, inp):
                    return False
        return True
    return not_an_input

"""Put a finished output in place without ever replacing what another hand put there meanwhile.

:mod:`.outputs` checks a destination twice: before the work and just before it replaces it. Between that last check
and the rename a user (or another program) could still drop a file into a folder we are about to retire, or put a
file under the name we are about to write: ``os.replace`` and ``shutil.rmtree`` would then destroy it. The two
helpers here close that window with what the filesystem makes atomic:

* :func:`snapshot` lists a folder with each entry's type, size, modification time and inode. A folder renamed aside
  (an atomic step: from then on nobody reaches it by its old name) is compared with its snapshot taken *before* the
  last check; any difference means a hand touched it after we looked, and the rename is undone.
* :func:`link_into_place` gives a finished temporary file its final name with ``os.link``, which fails instead of
  replacing an existing name. A name that is taken is renamed aside first, and only a file that ``may_replace``
  accepts (the program's own earlier file) is dropped; anything else is put back and refused.

Filesystems without hard links (FAT/exFAT drives, some network shares) get the previous behaviour, ``os.replace``
after the check, and the window stays open there; ``link_into_place`` says which way it went.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

#: errors of os.link that mean "this filesystem has no hard links here", not "the name is taken"
_NO_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EACCES,
             getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.EOPNOTSUPP}


class Taken(Exception):
    """The final name holds a file that is not ours (``path``); nothing was replaced."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def snapshot(folder: Path) -> dict[str, tuple]:
    """{relative path: (mode, size, mtime_ns, inode)} of every entry below ``folder`` (links not followed)."""
    found = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            found[os.path.relpath(path, folder)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def differences(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """Entries added, removed or changed between two snapshots of one folder, sorted."""
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def link_into_place(tmp: Path, target: Path, may_replace: Callable[[Path], bool] | None = None) -> str:
    """Give the finished file ``tmp`` the name ``target``; ``tmp``'s name is gone afterwards.

    A taken ``target`` is replaced only when ``may_replace(path)`` accepts the file found there (it is handed the
    file after it was moved aside, so what it judges is exactly what would be dropped); otherwise that file is put
    back under its name and :class:`Taken` is raised. Returns "linked", or "replaced" where the filesystem has no hard
    links and ``os.replace`` was used (only when ``may_replace`` accepts whatever is there, or nothing is).
    """
    for attempt in range(8):  # another task of the same program may put its own copy back in between
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            if target.exists() or target.is_symlink():
                if may_replace is None or not (target.is_file() and not target.is_symlink() and may_replace(target)):
                    raise Taken(target) from None
            os.replace(tmp, target)
            return "replaced"
        else:
            os.unlink(tmp)
            return "linked"
        if may_replace is None:
            raise Taken(target)
        aside = target.with_name(f".{target.name}.aside-{os.getpid()}-{attempt}")
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            continue  # it went away by itself: try the link again
        if aside.is_file() and not aside.is_symlink() and may_replace(aside):
            os.unlink(aside)
            continue
        try:
            if aside.is_dir() and not aside.is_symlink():
                os.rename(aside, target)  # a folder's rename never replaces a file or a non-empty folder
            else:
                os.link(aside, target, follow_symlinks=False)  # put it back; never over a newer arrival
                os.unlink(aside)
        except OSError:
            raise Taken(aside) from None  # two foreign entries: this one stays, under the name the error gives
        raise Taken(target)
    raise Taken(target)

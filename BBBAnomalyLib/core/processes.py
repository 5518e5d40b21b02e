"""Whether a process still runs: for the worker's Cancel (runners.py) and for leftovers of killed
runs (outputs.py). One place, because the platforms differ in ways that matter."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists on this machine; a zombie (ended, not yet reaped)
    counts as gone."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - Windows only; os.kill(pid, 0) would *terminate* it there
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): the kill probe said it exists
        return True

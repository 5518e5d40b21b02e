"""Shared fixtures: small DSC reference objects written to disk once per session."""

import locale
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: The process's locale when the tests start. GDCM's DICOM writer leaves the process in the C locale, and a later
#: test that decodes a child's output with ``text=True`` (the locale's encoding: ASCII in C) then fails on the
#: child's "ΔR2*". A test file's own function-scoped fixture cannot undo it when a module-scoped fixture wrote the
#: DICOM files (its "before" is already C), so the starting locale is put back after every test here.
_STARTING_LOCALE = locale.setlocale(locale.LC_ALL, None)


@pytest.fixture(autouse=True)
def _starting_locale_after_each_test():
    yield
    if locale.setlocale(locale.LC_ALL, None) != _STARTING_LOCALE:
        locale.setlocale(locale.LC_ALL, _STARTING_LOCALE)


@pytest.fixture(scope="session")
def dsc_phantom():
    """A 6-slice DSC phantom at SNR 100 (fast; tumor, artery, NAWM included)."""
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    return make_dsc_phantom(snr=100, slices=6, seed=1)


@pytest.fixture(scope="session")
def dsc_files(dsc_phantom, tmp_path_factory):
    """The same phantom written as NIfTI files: signal.nii.gz (+ signal.json with TE), mask_*.nii.gz."""
    out = tmp_path_factory.mktemp("dsc_phantom")
    dsc_phantom.write(out)
    return out


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the large reference data ({SHARED_DATA}) is not next to this checkout")
    return SHARED_DATA


@pytest.fixture
def free_port():
    """A TCP port nobody listens on now, for torchrun's rendezvous (a fixed port fails when another
    torchrun -- a parallel test run, a training -- holds it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module: the test machine's 2 cores are shared, and two torch
    threads competing with other processes are many times slower than one."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

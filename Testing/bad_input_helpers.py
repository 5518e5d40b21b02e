"""Small synthetic inputs and the assertions shared by the bad-input suites (Testing/test_bad_input_*.py).

Every bad-input case runs the real command line in-process (``BBBAnomalyLib.cli.main``) and must
end the same way: exit status 2, one error line on stderr that names the problem and the fix, no
traceback, no output folder (nor a hidden partial one), and the input files byte-identical.

The inputs are tiny (a few hundred voxels) so that a case costs milliseconds, not a pipeline run:
a bad input must be refused before any computation anyway.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from BBBAnomalyLib.cli import main

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

#: The shape of every synthetic series (x, y, z): small, with a background rim around a "brain".
SHAPE = (10, 10, 3)
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def brain_mask(shape=SHAPE) -> np.ndarray:
    """A box inside the field of view with one voxel of background all round."""
    m = np.zeros(shape, bool)
    m[1:-1, 1:-1, :] = True
    return m


def gamma_variate(t: np.ndarray, t0: float, alpha: float = 3.0, beta: float = 1.5) -> np.ndarray:
    s = np.clip(t - t0, 0.0, None)
    g = s ** alpha * np.exp(-s / beta)
    return g / g.max()


def dsc_signal(n_frames: int = 40, dt: float = 1.5, te: float = 0.03, seed: int = 0) -> tuple[np.ndarray, float]:
    """(4D T2*-weighted signal, TE): background 0, tissue S0 100 with a bolus at ~12 s, one artery column."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) * dt
    brain = brain_mask()
    data = np.zeros(SHAPE + (n_frames,), np.float32)
    tissue = 4.0 * gamma_variate(t, 12.0)  # ΔR2* [1/s]
    artery = 40.0 * gamma_variate(t, 10.5)
    data[brain] = 100.0 * np.exp(-te * tissue)
    data[4, 4, :] = 100.0 * np.exp(-te * artery)
    data[brain] *= 1.0 + 0.005 * rng.standard_normal((int(brain.sum()), n_frames)).astype(np.float32)
    return data, te


def dce_signal(n_frames: int = 30, dt: float = 5.0, seed: int = 0) -> np.ndarray:
    """4D T1-weighted signal: background 0, tissue S0 100 enhancing from ~20 s, one artery column."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) * dt
    brain = brain_mask()
    data = np.zeros(SHAPE + (n_frames,), np.float32)
    rise = np.clip((t - 20.0) / 30.0, 0.0, 1.0)
    data[brain] = 100.0 * (1.0 + 0.2 * rise)
    data[4, 4, :] = 100.0 * (1.0 + 1.5 * gamma_variate(t, 18.0, beta=6.0) + 0.3 * rise)
    data[brain] *= 1.0 + 0.005 * rng.standard_normal((int(brain.sum()), n_frames)).astype(np.float32)
    return data


def dwi_signal(n_dirs: int = 30, b: float = 1000.0, adc: float = 0.8e-3, seed: int = 0):
    """(4D DWI, bvals, bvecs in FSL layout (3, n)): one b0 then ``n_dirs`` directions on a b shell."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((n_dirs, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    bvals = np.r_[0.0, np.full(n_dirs, b)]
    bvecs = np.r_[np.zeros((1, 3)), dirs].T
    shape = (12, 12, 8)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 1:-1] = True
    data = np.zeros(shape + (n_dirs + 1,), np.float32)
    data[brain] = 500.0 * np.exp(-bvals * adc)
    data[brain] *= 1.0 + 0.01 * rng.standard_normal((int(brain.sum()), n_dirs + 1)).astype(np.float32)
    return data, bvals, bvecs


def structural_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T1, FLAIR) 3D arrays: a bright ellipsoid on a dark background."""
    rng = np.random.default_rng(seed)
    shape = (24, 24, 8)
    ijk = np.indices(shape).astype(np.float32)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    r = np.sqrt((((ijk - centre) / (np.array([10, 10, 3.5])[:, None, None, None])) ** 2).sum(0))
    head = (r < 1).astype(np.float32)
    t1 = head * (300 + 20 * rng.standard_normal(shape)).astype(np.float32)
    flair = head * (200 + 20 * rng.standard_normal(shape)).astype(np.float32)
    return t1, flair


def tissue_mask(masks, name: str, n: int = 40) -> np.ndarray:
    """``n`` voxels of one tissue of a phantom, away from its artery: what a user draws as the AIF when the artery was
    missed (rounds 17 and 18's tests of AIFs drawn on tissue)."""
    from scipy.ndimage import binary_dilation

    chosen = np.argwhere(masks[name] & ~binary_dilation(masks["aif"], iterations=2))[:n]
    out = np.zeros(masks["brain"].shape, bool)
    out[tuple(chosen.T)] = True
    return out


def sloppy_artery_mask(masks, reach: int) -> np.ndarray:
    """A phantom's arterial mask widened in-plane by ``reach`` voxels: 2x2 arterial voxels in 4x4 (reach 1: 25 % of
    the mask is artery) or 6x6 (reach 2: 11 %), a partial-volume AIF as a hurried ROI gives."""
    from scipy.ndimage import binary_dilation

    size = 2 * reach + 1
    return binary_dilation(masks["aif"], structure=np.ones((size, size, 1), bool)) & masks["brain"]


def save_nifti(path: Path, data, affine=AFFINE, *, dt: float | None = None, sidecar: str | None = None,
               dtype=None) -> Path:
    """Write ``data`` as NIfTI (frame interval ``dt`` in the header, optional JSON sidecar text)."""
    data = np.asarray(data)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64), dtype=dtype or data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    if dt is not None and data.ndim == 4:
        img.header.set_zooms(tuple(img.header.get_zooms()[:3]) + (float(dt),))
    nib.save(img, str(path))
    if sidecar is not None:
        Path(str(path).replace(".nii.gz", ".json").replace(".nii", ".json")).write_text(sidecar)
    return Path(path)


def save_nifti_raw_affine(path: Path, data, sform, *, dt: float | None = None) -> Path:
    """Write a NIfTI whose header holds ``sform`` as given (NaN, zero scale, singular: what a broken
    converter writes); nibabel would refuse to build such an image from an affine."""
    data = np.asarray(data)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    hdr.set_xyzt_units("mm", "sec")
    if dt is not None and data.ndim == 4:
        hdr["pixdim"][4] = dt
    sform = np.asarray(sform, dtype=np.float64)
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = sform[0], sform[1], sform[2]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    nib.save(nib.Nifti1Image(data, None, header=hdr), str(path))
    return Path(path)


def write_dsc_case(folder: Path, **kw) -> dict[str, Path]:
    """signal.nii.gz (+ TE sidecar) and brain/tumor/nawm/aif masks in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data, te = dsc_signal(**kw)
    dt = kw.get("dt", 1.5)
    files = {"series": save_nifti(folder / "signal.nii.gz", data, dt=dt, sidecar=f'{{"EchoTime": {te}}}')}
    brain = brain_mask()
    tumor = np.zeros(SHAPE, bool)
    tumor[6:8, 6:8, 1] = True
    nawm = brain & ~tumor
    nawm[4, 4, :] = False
    aif = np.zeros(SHAPE, bool)
    aif[4, 4, :] = True
    for name, m in (("mask", brain), ("tumor", tumor), ("nawm", nawm), ("aif", aif)):
        files[name] = save_nifti(folder / f"{name}.nii.gz", m.astype(np.uint8))
    return files


def write_dce_case(folder: Path, **kw) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data = dce_signal(**kw)
    files = {"series": save_nifti(folder / "dce.nii.gz", data, dt=kw.get("dt", 5.0))}
    aif = np.zeros(SHAPE, bool)
    aif[4, 4, :] = True
    files["mask"] = save_nifti(folder / "mask.nii.gz", brain_mask().astype(np.uint8))
    files["aif"] = save_nifti(folder / "aif.nii.gz", aif.astype(np.uint8))
    return files


def write_dwi_case(folder: Path, **kw) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data, bvals, bvecs = dwi_signal(**kw)
    files = {"series": save_nifti(folder / "dwi.nii.gz", data)}
    np.savetxt(folder / "dwi.bval", bvals[None, :], fmt="%g")
    np.savetxt(folder / "dwi.bvec", bvecs, fmt="%.6f")
    files["bval"], files["bvec"] = folder / "dwi.bval", folder / "dwi.bvec"
    return files


def write_structural_case(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    t1, flair = structural_pair()
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    return {"t1": save_nifti(folder / "t1.nii.gz", t1, affine), "flair": save_nifti(folder / "flair.nii.gz", flair, affine)}


# --- the assertions --------------------------------------------------------------------------------
def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not progress lines (the console printer's ``[ nn%]`` lines)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.lstrip().startswith("[")]


def one_line_refusal(argv: list[str], capsys, *keywords: str) -> str:
    """Run the CLI: exit 2, exactly one error line holding every keyword (case-insensitive), no traceback; returns
    the line (the checks on inputs and outputs are the caller's; :func:`assert_refused` does both)."""
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert code == 2, f"exit {code}; stderr:\n{captured.err}\nstdout:\n{captured.out}"
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for word in keywords:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def assert_refused(argv: list[str], capsys, inputs: Path, out: Path, keywords: tuple[str, ...]) -> str:
    """Run the CLI; assert exit 2, one error line holding every keyword (case-insensitive), no
    traceback, nothing written at ``out`` (nor a hidden partial folder beside it), inputs unchanged.
    Returns the error line."""
    before = tree_hashes(inputs)
    siblings_before = set(out.parent.iterdir()) if out.parent.exists() else set()
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert code == 2, f"exit {code}; stderr:\n{captured.err}\nstdout:\n{captured.out}"
    assert len(lines) == 1, f"expected one error line, got:\n{captured.err}"
    line = lines[0]
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert line.startswith("bbbanomaly ") and ": error: " in line, line
    for word in keywords:
        assert word.lower() in line.lower(), f"{word!r} not in the error line: {line}"
    assert not out.exists(), f"{out} was written"
    if out.parent.exists():
        new = set(out.parent.iterdir()) - siblings_before
        assert not new, f"left behind: {sorted(p.name for p in new)}"
    assert tree_hashes(inputs) == before, "an input file changed"
    return line


def run_subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m BBBAnomalyLib ARGV` in a child process (what a user's shell sees)."""
    return subprocess.run([PYTHON, "-m", "BBBAnomalyLib", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})

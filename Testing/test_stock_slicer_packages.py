"""The library's NRRD path and a classic DSC run need only what Slicer bundles (numpy, scipy,
SimpleITK, vtk): nibabel, torch, scikit-learn and matplotlib are imported on first use, and a
NIfTI read without nibabel is one clear line, not an ImportError traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('nibabel', 'torch', 'sklearn', 'matplotlib'):
            raise ImportError('not bundled with Slicer: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_nrrd_and_a_classic_dsc_run_need_no_extra_package(dsc_phantom, tmp_path):
    from BBBAnomalyLib.io import write_volume
    from BBBAnomalyLib.core.volume import Volume

    write_volume(dsc_phantom.signal, tmp_path / "series.nrrd")
    aif = dsc_phantom.masks["aif"].astype("uint8")
    write_volume(Volume(aif, dsc_phantom.signal.affine), tmp_path / "aif.nrrd")
    code = BLOCK + f"""
from BBBAnomalyLib.io import read_volume, read_mask, write_volume
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.core.errors import InputError
series = read_volume({str(tmp_path / 'series.nrrd')!r})
aif = read_mask({str(tmp_path / 'aif.nrrd')!r}, series, 'aif-mask')
result = run_dsc(series, DSCParameters(method='osvd'), aif_mask=aif)
write_volume(result.maps['cbf'], {str(tmp_path / 'cbf.nrrd')!r})
try:
    read_volume({str(tmp_path / 'missing.nii.gz')!r})
except InputError as exc:
    print('NIFTI:', exc)
print('OK', sorted(m for m in ('nibabel', 'torch', 'sklearn', 'matplotlib') if m in sys.modules))
"""
    (tmp_path / "missing.nii.gz").write_bytes(b"\x00" * 400)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "OK []" in proc.stdout
    assert "NIFTI:" in proc.stdout and "nibabel" in proc.stdout
    assert (tmp_path / "cbf.nrrd").exists()

#!/usr/bin/env python
"""Session 23: a GE-like DSC DICOM series (per-slice TriggerTime, one AcquisitionTime per frame) read and analysed.

The DSC reference object with slice z acquired o_z s after each frame time (scripts/dsc_slice_timing.py's
timed_object: seed 2, 12 slices, interleaved or ascending, frame interval = TR 1.5 s), written as int16 DICOM
(20000 full scale) the way GE multi-phase EPI writes it: Manufacturer "GE MEDICAL SYSTEMS", TriggerTime = the slice's
offset in ms, AcquisitionTime one per frame (sub-second). The same object with every slice at its frame time is
written the same way (TriggerTime 0) as the reference. Each folder is read by the reader on PYTHONPATH and analysed
with `--slice-timing auto` (run_dsc, AIF in the two lowest slices); per-slice GM medians against the reference.

    PYTHONPATH=<tree> OMP_NUM_THREADS=1 python scripts/dicom_ge_slice_timing.py OUT.json
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
import BBBAnomalyLib  # noqa: E402

ROOT = Path(BBBAnomalyLib.__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from dsc_slice_timing import UNITLESS, errors, per_slice, slice_times, timed_object  # noqa: E402

from BBBAnomalyLib.dsc import DSCParameters, run_dsc  # noqa: E402
from BBBAnomalyLib.io import read_volume  # noqa: E402


def tm(seconds):
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}"


def write_ge(folder, volume, offsets, scale):
    folder.mkdir(parents=True)
    data = np.round(np.asarray(volume.data) * scale).astype(np.int16)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row, col = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    n = 0
    for t in range(data.shape[3]):
        for z in np.argsort(offsets, kind="stable"):
            n += 1
            img = sitk.GetImageFromArray(np.ascontiguousarray(data[:, :, z, t].T)[None])
            img.SetSpacing((spacing[0], spacing[1], 1.0))
            tags = {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0070": "GE MEDICAL SYSTEMS",
                    "0008|103e": "DSC", "0008|0008": "ORIGINAL\\PRIMARY\\OTHER", "0020|000d": "1.2.3.4",
                    "0020|000e": "1.2.3.4.1", "0008|0018": f"1.2.3.4.1.{n}", "0020|0013": str(z + 1),
                    "0020|0032": "\\".join(f"{v:.6f}" for v in lps[:3, 3] + z * lps[:3, 2]),
                    "0020|0037": "\\".join(f"{v:.8f}" for v in np.r_[row, col]),
                    "0008|0032": tm(36000.0 + t * 1.5), "0018|1060": f"{offsets[z] * 1000:g}",
                    "0018|0081": "30", "0018|0080": "1500", "0018|0050": f"{spacing[2]:g}"}
            for key, value in tags.items():
                img.SetMetaData(key, value)
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            writer.SetFileName(str(folder / f"i{n:05d}.dcm"))
            writer.Execute(img)


def main(out_path):
    rows = {}
    tmp = Path(tempfile.mkdtemp())
    for order in ("interleaved", "ascending"):
        for snr in (None, 50.0):
            offsets = slice_times(order, 12, 1.5)
            ph, timed = timed_object(offsets, slices=12, seed=2, snr=snr, frame_interval=1.5)
            scale = 20000.0 / float(np.max(ph.signal.data))
            tag = f"{order}_{snr}"
            write_ge(tmp / f"ref_{tag}", ph.signal, np.zeros(12), scale)
            write_ge(tmp / f"ge_{tag}", timed, offsets, scale)
            got = {}
            for name in ("ref", "ge"):
                series = read_volume(tmp / f"{name}_{tag}")
                # the reader orders slices along the row x column normal, here opposite to the object's slice axis
                flip = not np.allclose(series.affine, ph.signal.affine)
                assert np.array_equal(series.data, np.flip(np.round(np.asarray((timed if name == "ge" else ph.signal)
                                                                               .data) * scale), 2) if flip else
                                      np.round(np.asarray((timed if name == "ge" else ph.signal).data) * scale))
                masks = {k: (np.flip(v, 2) if flip else v) for k, v in ph.masks.items()}
                gm = masks["gm"] & ~masks["aif"]
                aif = masks["aif"].copy()
                aif[:, :, :-2 if flip else 2] = False  # the two lowest slices of the object
                st = series.acquisition.extra.get("slice_timing")
                for method in ("osvd", "ssvd"):
                    r = run_dsc(series, DSCParameters(method=method, slice_timing="auto", **UNITLESS), aif_mask=aif,
                                brain_mask=masks["brain"], nawm_mask=masks["nawm"], tumor_mask=masks["tumor"])
                    m = r.maps
                    ratio = lambda v: v[masks["enhancing"]].mean() / v[masks["nawm"]].mean()  # noqa: E731
                    got[(name, method)] = {"cbf": per_slice(m["cbf"].data, gm), "tmax": per_slice(m["tmax"].data, gm),
                                           "cbv": per_slice(m["cbv"].data, gm), "rcbf": ratio(m["cbf"].data),
                                           "rcbv": ratio(m.get("cbv_corrected", m["cbv"]).data),
                                           "slice_times": None if st is None else st["times_s"],
                                           "applied": r.report["slice_timing"]["applied"]}
            for method in ("osvd", "ssvd"):
                e = errors(got[("ge", method)], got[("ref", method)])
                rows[f"{tag}_{method}"] = {k: float(v) for k, v in e.items()} | {
                    "slice_times_read": got[("ge", method)]["slice_times"], "applied": got[("ge", method)]["applied"]}
                print(tag, method, {k: round(float(v), 3) for k, v in e.items()}, got[("ge", method)]["applied"],
                      flush=True)
    Path(out_path).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])

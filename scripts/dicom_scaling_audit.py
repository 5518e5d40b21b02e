"""Philips DICOM intensity scaling across and within series: the measurements of session 22's audit.

Philips classic MR DICOM stores SV (integers), shows DV = SV*RS + RI and has the precise value FP = DV/(RS*SS) with
the private MR Scale Slope SS (2005,100E); only FP is proportional to the signal across series
(BBBAnomalyLib/io/dicom_scaling.py). This script writes Philips-like DICOM series with SimpleITK, whose FP values
are known, and reads them back through the reader as `bbbanomaly t1map` and `dce --vfa` do:

  (a) a VFA T1 fit from three DICOM series (2, 5, 12 degrees, TR 5 ms) of the DCE reference object's T10 map, each
      series with its own RS*SS: T1 of WM/GM/rim and then DCE Ktrans (arterial mask, rim) with that T10 map;
  (b) one dynamic series whose images carry their own RS and SS: S/S0 at the peak in the rim, as read;
  (c) B1 and T10 maps as DICOM folders (--b1, --t10) hold their unit in the display value: no numbers here, the
      rules are in Testing/test_io_dicom_scaling.py;
  (d) an ordinary Philips DSC series (one RS and SS for the series): the maps from display and precise values.

"DV read" is what a reader that applies only RS and RI gives (the reader before session 22, and the reader now for
files whose private tags were removed); "FP read" is the reader now, with the private tags. Noise-free FP values, so
the numbers are the scaling's effect alone (plus 12-bit quantisation).

    python scripts/dicom_scaling_audit.py            # all of it (about a minute)
    python scripts/dicom_scaling_audit.py --no-dce   # (a) without its DCE runs
"""

from __future__ import annotations

import argparse
import locale
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

UID = "1.2.826.0.1.3680043.2.1125.22"
PHILIPS = "Philips Medical Systems"
FLIP_ANGLES = (2.0, 5.0, 12.0)
TR_S = 0.005
#: RS*SS (display per precise value) of three series of one session, from dcm2niix's log in its issue 546 (Philips
#: RS:RI:SS 0.862271:0:0.0541967, 0.830769:0:0.0553062, 2.99267:0:0.0156413): 1.7 % apart.
LOGGED_RS_SS = ((0.862271, 0.0541967), (0.830769, 0.0553062), (2.99267, 0.0156413))


def write_philips_series(folder, fp, *, rs=1.0, ss=0.01, ri=0.0, series="1", flip=15.0, tr_s=TR_S,
                         frame_interval=2.0, manufacturer=PHILIPS, private=True, scale_text=None,
                         image_type="ORIGINAL\\PRIMARY\\M\\FFE", rescale_type=None, spacing=2.0) -> list[Path]:
    """One classic MR file per (slice, frame) of ``fp`` (x, y, z[, t]), precise values, as a Philips scanner stores
    them: SV = round(FP*SS - RI/RS), DV = SV*RS + RI, SS in (2005,100E) under "Philips MR Imaging DD 001".

    rs, ri, ss: scalars or arrays broadcast to (z, t). private False: the same pixels without the private tags (an
    anonymised export). scale_text: function (k, t) -> the text written as SS for that image (None leaves the tag
    out, the creator kept), for damaged exports."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _first_write(folder)
    fp = np.asarray(fp, np.float64)
    fp = fp[..., None] if fp.ndim == 3 else fp
    nz, nt = fp.shape[2:]
    rs_, ri_ = np.broadcast_to(rs, (nz, nt)), np.broadcast_to(ri, (nz, nt))
    ss_ = np.broadcast_to(ss, (nz, nt))
    paths, n = [], 0
    for t in range(nt):
        for k in range(nz):
            n += 1
            sv = np.clip(np.round(fp[:, :, k, t] * ss_[k, t] - ri_[k, t] / rs_[k, t]), -32768, 32767)
            dv = sv * rs_[k, t] + ri_[k, t]
            img = sitk.GetImageFromArray(np.ascontiguousarray(dv.T)[None])  # GDCM stores (DV - RI)/RS = SV
            img.SetSpacing((spacing, spacing, 1.0))
            tags = {
                "0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0070": manufacturer,
                "0008|0008": image_type, "0008|103e": f"series {series}", "0020|000d": f"{UID}.1",
                "0020|000e": f"{UID}.2.{series}", "0008|0018": f"{UID}.3.{series}.{n}", "0020|0013": str(n),
                "0020|0032": f"-10\\-20\\{k * spacing:.6f}", "0020|0037": "1\\0\\0\\0\\1\\0",
                "0008|0032": f"1000{t * frame_interval + 0.1 * k:09.6f}", "0020|0100": str(t + 1),
                "0018|0050": f"{spacing:g}", "0018|0081": "2", "0018|0080": f"{tr_s * 1000:g}",
                "0018|1314": f"{flip:g}", "0018|0087": "3",
                "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1",
                "0028|1053": f"{rs_[k, t]:.10g}", "0028|1052": f"{ri_[k, t]:.10g}",
            }
            if rescale_type is not None:
                tags["0028|1054"] = rescale_type
            text = f"{ss_[k, t]:.7g}" if scale_text is None else scale_text(k, t)
            if private:
                tags["2005|0010"] = "Philips MR Imaging DD 001"
                if text is not None:
                    tags["2005|100e"] = text
            for key, value in tags.items():
                img.SetMetaData(key, value)
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            path = folder / f"IM_{series}_{n:04d}.dcm"
            writer.SetFileName(str(path))
            writer.Execute(img)
            paths.append(path)
    return paths


_WRITTEN = []


def _first_write(folder: Path) -> None:
    """GDCM (SimpleITK 2.5) writes rescaled float images as Enhanced MR images (the rescale in a functional group, no
    ImagePositionPatient at the top level) until the process has read a DICOM file, and as classic MR images after:
    one is written and read first."""
    if not _WRITTEN:
        path = folder / ".first_write.dcm"
        sitk.WriteImage(sitk.Image(2, 2, 1, sitk.sitkInt16), str(path))
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        path.unlink()
        _WRITTEN.append(True)


def vfa_signals(t1: np.ndarray, m0: np.ndarray) -> list[np.ndarray]:
    from BBBAnomalyLib.t1map.vfa import spgr_signal

    inside = t1 > 0
    out = []
    for angle in FLIP_ANGLES:
        s = np.zeros(t1.shape)
        s[inside] = spgr_signal(m0[inside], 1.0 / t1[inside], [angle], TR_S)[:, 0]
        out.append(s)
    return out


def auto_scaled(signal: np.ndarray, product: float) -> tuple[float, float]:
    """(RS, SS) of a series scaled as a Philips scanner does: SS fills 12 bits, RS = product / SS."""
    ss = 4000.0 / signal.max()
    return product / ss, ss


def t1_fit(root: Path, signals, scalings, private=True) -> np.ndarray:
    """The VFA series written as one Philips DICOM series per angle and read back as `t1map` reads them."""
    from BBBAnomalyLib.t1map.inputs import read_vfa
    from BBBAnomalyLib.t1map.pipeline import run_t1map

    folders = []
    for i, (s, (rs, ss)) in enumerate(zip(signals, scalings)):
        folder = root / f"fa{i}"
        write_philips_series(folder, s, rs=rs, ss=ss, private=private, series=str(10 + i), flip=FLIP_ANGLES[i])
        folders.append(str(folder))
    result = run_t1map(read_vfa(folders))
    return result.maps["t1"].data, result


def scenarios():
    """(label, [(RS, SS) per angle] from each signal's maximum)."""
    out = [("same RS*SS in every series", lambda sig: [auto_scaled(s, 0.0467) for s in sig])]
    out.append(("logged session (RS*SS 0.0467, 0.0459, 0.0468)",
                lambda sig: [auto_scaled(s, rs * ss) for s, (rs, ss) in zip(sig, LOGGED_RS_SS)]))
    for ratio in (0.9, 0.8, 0.5, 2.0):
        out.append((f"12 deg series RS*SS x{ratio:g}",
                    lambda sig, r=ratio: [auto_scaled(s, 0.0467 * (r if i == 2 else 1.0)) for i, s in enumerate(sig)]))
    out.append(("each series normalised to one display maximum",
                lambda sig: [auto_scaled(s, 3000.0 / s.max()) for s in sig]))
    return out


def part_a(work: Path, with_dce: bool) -> None:
    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.dce.parameters import DCEParameters
    from BBBAnomalyLib.dce.pipeline import run_dce
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom

    phantom = make_dce_phantom(slices=4, seed=1, snr=40.0)
    truth_t1 = phantom.truth["t10"].data.astype(np.float64)
    m = phantom.masks
    regions = {"WM": m["wm"] & m["pure"], "GM": m["gm"] & m["pure"], "rim": m["enhancing"] & m["pure"]}
    m0 = np.where(truth_t1 > 0, 1000.0, 0.0)
    signals = vfa_signals(truth_t1, m0)
    ktrans_true = None
    if with_dce:  # the maps with the true T10 map: the reference of each AIF
        ktrans_true = [dce_rim(phantom, truth_t1, run_dce, DCEParameters, Volume, population)
                       for population in (False, True)]
    print("(a) VFA T1 from three Philips DICOM series, then DCE rim Ktrans with that T10 map (against the same run "
          "with the true T10 map)")
    print("| RS*SS of the 2/5/12 deg series | read | T1 WM | T1 GM | T1 rim | Ktrans rim, arterial mask | "
          "Ktrans rim, Parker | warned |")
    print("|---|---|---|---|---|---|---|---|")
    for label, make in scenarios():
        scalings = make(signals)
        products = "/".join(f"{rs * ss:.3g}" for rs, ss in scalings)
        for private in (False, True):
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                t1, result = t1_fit(Path(tmp), signals, scalings, private)
            errs = [float(np.median(t1[r] / truth_t1[r]) - 1) for r in regions.values()]
            ktrans = " | "
            if with_dce:
                ok = t1 > 0
                t10 = np.where(ok, t1, np.median(t1[ok]))
                ktrans = " | ".join(f"{dce_rim(phantom, t10, run_dce, DCEParameters, Volume, pop) / ref - 1:+.1%}"
                                    for pop, ref in zip((False, True), ktrans_true))
            warned = "yes" if any("(2005,100E)" in w for w in result.report["warnings"]) else "-"
            print(f"| {label} ({products}) | {'FP' if private else 'DV'} | "
                  + " | ".join(f"{e:+.1%}" for e in errs) + f" | {ktrans} | {warned} |")


def dce_rim(phantom, t10, run_dce, DCEParameters, Volume, population=False) -> float:
    """Median rim Ktrans with a T10 map (the arterial mask as AIF, or Parker's population AIF; no RLS); NaN where the
    run is refused."""
    from BBBAnomalyLib.core.errors import InputError

    params = DCEParameters(rls="none", population_aif="parker") if population else DCEParameters(rls="none")
    try:
        result = run_dce(phantom.signal, params, aif_mask=None if population else phantom.masks["aif"],
                         brain_mask=phantom.masks["brain"], t10_map=Volume(t10, phantom.signal.affine))
    except InputError as exc:
        print(f"  (refused: {str(exc)[:90]}...)")
        return float("nan")
    rim = phantom.masks["enhancing"] & phantom.masks["pure"]
    return float(np.median(result.maps["ktrans"].data[rim]))


def part_b(work: Path) -> None:
    """A dynamic series of 8 frames whose frames carry their own RS and SS."""
    from BBBAnomalyLib.io import read_volume

    rng = np.random.default_rng(0)
    base = 800.0 + 200.0 * rng.random((16, 16, 4))
    curve = np.array([1, 1, 1, 1.6, 2.2, 1.9, 1.6, 1.4])  # S/S0 of a DCE rim voxel
    fp = base[..., None] * curve
    print("\n(b) one dynamic series (16x16x4, 8 frames), S/S0 at the peak (true 2.2)")
    print("| RS, SS per frame | read | S/S0 peak | max error of S/S0 |")
    print("|---|---|---|---|")
    full = 4000.0 / fp.max()  # SS filling 12 bits
    gain = np.linspace(1.0, 2.0, 8)[None, :]
    cases = {
        "constant RS, SS": (1.2, full),
        "RS per frame, RS*SS constant (display-consistent)": (1.2 * gain, full / gain),
        "SS per frame (12-bit auto-scaling of each frame), RS constant":
            (1.2, 4000.0 / fp.max(axis=(0, 1, 2))[None, :]),
        "RS and SS per image (per-slice and per-frame)":
            (1.0 + rng.random((4, 8)), full * (0.5 + 0.5 * rng.random((4, 8)))),
    }
    for label, (rs, ss) in cases.items():
        for private in (False, True):
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                write_philips_series(Path(tmp) / "d", fp, rs=rs, ss=ss, private=private, series="30")
                vol = read_volume(Path(tmp) / "d")
            ratio = vol.data[..., 4] / vol.data[..., 0]
            err = np.abs(vol.data / vol.data[..., :1] - curve).max()
            print(f"| {label} | {'FP' if private else 'DV'} | {np.median(ratio):.3f} | {err:.3f} |")


def part_d(work: Path) -> None:
    """An ordinary Philips DSC series (one RS and SS for the series): the maps from its display and precise values."""
    from BBBAnomalyLib.dsc.parameters import DSCParameters
    from BBBAnomalyLib.dsc.pipeline import run_dsc
    from BBBAnomalyLib.io import read_volume
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    phantom = make_dsc_phantom(slices=4, seed=1)
    signal = np.asarray(phantom.signal.data, np.float64)
    rs, ss = auto_scaled(signal, 0.0467)
    maps = {}
    for private in (False, True):
        folder = work / f"dsc_{private}"
        write_philips_series(folder, signal, rs=rs, ss=ss, private=private, series="60",
                             frame_interval=float(np.diff(phantom.signal.times[:2])[0]), tr_s=1.5)
        series = read_volume(folder)
        result = run_dsc(series, DSCParameters(echo_time=0.03), aif_mask=phantom.masks["aif"],
                         brain_mask=phantom.masks["brain"])
        maps[private] = {k: np.asarray(result.maps[k].data, np.float64) for k in ("cbv", "cbf", "mtt")}
    brain = phantom.masks["brain"]
    print("\n(d) an ordinary Philips DSC series (one RS*SS for the series): maps from the precise vs the display "
          "values")
    for k in ("cbv", "cbf", "mtt"):
        a, b = maps[True][k][brain], maps[False][k][brain]
        diff = np.abs(a - b) / np.median(np.abs(b))
        print(f"  {k}: |precise - display| / median: 99th percentile {np.percentile(diff, 99):.2g}, largest "
              f"{diff.max():.2g}; voxels over 1e-3: {np.mean(diff > 1e-3):.2%}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-dce", action="store_true", help="skip the DCE runs of (a)")
    args = parser.parse_args(argv)
    before = locale.setlocale(locale.LC_ALL, None)
    with tempfile.TemporaryDirectory() as tmp:
        part_a(Path(tmp), not args.no_dce)
        part_b(Path(tmp))
        part_d(Path(tmp))
    locale.setlocale(locale.LC_ALL, before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

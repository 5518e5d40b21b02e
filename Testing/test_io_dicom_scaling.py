"""Philips DICOM intensity scaling (session 22): precise values FP = DV / (RS * SS) per image, so that a VFA fit from
one series per flip angle and a dynamic series with per-image scale factors read the signal, not the display value.

The series are written with SimpleITK by scripts/dicom_scaling_audit.py's writer (stored value SV = round(FP * SS),
RescaleSlope RS, private MR Scale Slope SS in (2005,100E) under "Philips MR Imaging DD 001"), so FP is known.
"""

from __future__ import annotations

import importlib.util
import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bad_input_helpers import assert_refused

from BBBAnomalyLib import InputError
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.io import read_dicom_series, read_volume
from BBBAnomalyLib.io.dicom_scaling import scaling_plan
from BBBAnomalyLib.t1map.inputs import read_vfa
from BBBAnomalyLib.t1map.pipeline import run_t1map
from BBBAnomalyLib.t1map.vfa import spgr_signal

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "dicom_scaling_audit.py"
_spec = importlib.util.spec_from_file_location("dicom_scaling_audit", SCRIPT)
audit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit)
write = audit.write_philips_series

ANGLES, TR = (2.0, 5.0, 12.0), 0.005


@pytest.fixture(autouse=True)
def _keep_locale():
    """GDCM's DICOM writer leaves the process in the C locale; later tests decode child output with it."""
    before = locale.setlocale(locale.LC_ALL, None)
    yield
    locale.setlocale(locale.LC_ALL, before)


def t1_phantom():
    """(T1 [s], VFA signals per angle) on 16x16x4: T1 0.8-2.0 s, M0 1000."""
    t1 = np.linspace(0.8, 2.0, 16 * 16 * 4).reshape(16, 16, 4)
    m0 = np.full(t1.size, 1000.0)
    signals = [spgr_signal(m0, 1.0 / t1.ravel(), [a], TR)[:, 0].reshape(t1.shape) for a in ANGLES]
    return t1, signals


def write_vfa(root: Path, signals, products, private=True) -> list[str]:
    """One Philips series per flip angle, each auto-scaled (SS fills 12 bits) with its own RS*SS."""
    folders = []
    for i, (s, product) in enumerate(zip(signals, products)):
        rs, ss = audit.auto_scaled(s, product)
        write(root / f"fa{i}", s, rs=rs, ss=ss, private=private, series=str(10 + i), flip=ANGLES[i], tr_s=TR)
        folders.append(str(root / f"fa{i}"))
    return folders


def gdcm_display_values(folder: Path) -> np.ndarray:
    """(x, y, z) as GDCM reads the files sorted by name (RescaleSlope/Intercept only), for a one-frame series."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sorted(str(p) for p in folder.glob("*.dcm")))
    return sitk.GetArrayFromImage(reader.Execute()).transpose(2, 1, 0)


def test_philips_vfa_series_with_different_scale_factors_give_the_right_t1(tmp_path):
    """The 12 degree series scaled 0.8x and the 5 degree one 1.3x (display per precise value) of the 2 degree one:
    the display values gave T1 +18-35 % (scripts/dicom_scaling_audit.py); the precise values give the true T1."""
    t1, signals = t1_phantom()
    folders = write_vfa(tmp_path, signals, (0.0467, 0.0467 * 1.3, 0.0467 * 0.8))
    vfa = read_vfa(folders)
    result = run_t1map(vfa)
    fitted = result.maps["t1"].data
    # Each series fills 12 bits (SV up to 4000): the smallest signal, 2 degrees at T1 2 s, is about 0.26 of its
    # series' maximum, SV >= 1000, so each signal is within 0.5/1000 of FP; the three-angle fit amplifies that by
    # less than 10 here (d ln T1 / d ln S), T1 within 0.5 %: 1 % leaves room, and the display values are 18 % off.
    assert np.abs(fitted / t1 - 1).max() < 0.01
    scaling = result.report["input"]["intensity_scaling"]
    assert all("precise" in v for v in scaling.values()) and len(scaling) == 3
    assert not any("(2005,100E)" in w for w in result.report["warnings"])
    assert read_volume(folders[1]).acquisition.extra["intensity_scaling"] == "philips_precise"


def test_philips_vfa_series_without_their_private_tags_are_fitted_with_a_warning(tmp_path, capsys):
    """An export without the private tags holds only display values: they are read as before (nothing better is
    known) and the T1 map's report, and `bbbanomaly t1map`, say the series' relative scale is unknown."""
    t1, signals = t1_phantom()
    folders = write_vfa(tmp_path, signals, (0.0467, 0.0467 * 1.3, 0.0467 * 0.8), private=False)
    assert main(["t1map", *folders, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "warning: 3 of the 3 VFA series" in capsys.readouterr().out
    result = run_t1map(read_vfa(folders))
    assert np.median(result.maps["t1"].data / t1) - 1 > 0.1  # the display values' T1 error, now warned
    warning = next(w for w in result.report["warnings"] if "(2005,100E)" in w)
    assert "3 of the 3 VFA series" in warning and "private tags" in warning
    assert all("display" in v for v in result.report["input"]["intensity_scaling"].values())
    extra = read_volume(folders[0]).acquisition.extra
    assert extra["intensity_scaling"] == "display" and "private tags removed" in extra["philips_scaling"]["why"]
    data = read_volume(folders[0]).data
    assert np.array_equal(data, gdcm_display_values(Path(folders[0])).astype(data.dtype))  # as before


def test_philips_dynamic_series_with_per_image_scale_factors_gives_the_right_enhancement(tmp_path):
    """Each frame auto-scaled to 12 bits (its own SS) and each image its own RS: the display values made the
    enhancement vanish (S/S0 = 1 at the peak instead of 2.2); the precise values give S/S0 exactly."""
    rng = np.random.default_rng(3)
    base = 800.0 + 200.0 * rng.random((16, 16, 4))
    curve = np.array([1.0, 1.0, 1.6, 2.2, 1.8, 1.5])
    fp = base[..., None] * curve
    ss = 4000.0 / fp.max(axis=(0, 1, 2))[None, :] * (0.8 + 0.2 * rng.random((4, 6)))
    rs = 0.8 + rng.random((4, 6))
    write(tmp_path / "dyn", fp, rs=rs, ss=ss, series="30")
    vol = read_dicom_series(tmp_path / "dyn")
    assert vol.data.shape == (16, 16, 4, 6) and vol.data.dtype == np.float32
    # SV >= 0.8 * 4000 * 800 / 2200 > 1100 in every image: each value within 0.5/1100 of FP, a ratio within 1e-3
    assert np.abs(vol.data / vol.data[..., :1] - curve).max() < 1e-3
    assert np.abs(vol.data / fp - 1).max() < 1e-3
    info = vol.acquisition.extra["philips_scaling"]
    assert vol.acquisition.extra["intensity_scaling"] == "philips_precise" and info["varies_within_series"]


def test_non_philips_series_are_read_as_before(tmp_path):
    """Another vendor's files, even with a rescale and a stray Philips-like private block, are read bit for bit as
    GDCM gives them (integer type kept where there is no rescale), with no scaling key in the metadata."""
    fp = 100.0 + np.arange(16 * 16 * 3, dtype=float).reshape(16, 16, 3)
    for name, rs, ri in (("plain", 1.0, 0.0), ("rescaled", 0.37, 5.0)):
        folder = tmp_path / name
        write(folder, fp, rs=rs, ri=ri, ss=1.0, manufacturer="SIEMENS", series=name)
        vol = read_dicom_series(folder)
        expected = gdcm_display_values(folder)
        assert vol.data.dtype == (np.int16 if name == "plain" else np.float32)
        assert np.array_equal(vol.data, expected.astype(vol.data.dtype))
        assert "intensity_scaling" not in vol.acquisition.extra and "philips_scaling" not in vol.acquisition.extra


def test_philips_maps_made_on_the_scanner_keep_their_display_values(tmp_path):
    """A DERIVED image (an ADC, T1 or B1 map) or one whose RescaleType names a unit holds quantitative display
    values: dividing by RS*SS would destroy its unit (a B1 map in percent)."""
    values = 80.0 + np.arange(16 * 16 * 4, dtype=float).reshape(16, 16, 4) / 40
    # the writer takes precise values: these display as round(values / RS) * RS, within RS / 2 of ``values``;
    # Philips marks its B0/B1 maps ORIGINAL with the map in the third value
    for name, kind in (("derived", "DERIVED\\PRIMARY\\B1"), ("b1", "ORIGINAL\\PRIMARY\\B1 MAP\\B1\\UNSPECIFIED")):
        write(tmp_path / name, values / (0.05 * 0.2), rs=0.05, ss=0.2, image_type=kind, series=name)
        vol = read_dicom_series(tmp_path / name)
        assert np.allclose(vol.data, values, rtol=0, atol=0.025 + 1e-4)
        assert vol.acquisition.extra["intensity_scaling"] == "display"
    t1, signals = t1_phantom()
    vfa = read_vfa(write_vfa(tmp_path / "vfa", signals, (0.0467,) * 3))
    b1 = np.full((16, 16, 4), 1.0)
    assert run_t1map(vfa, b1=read_volume(tmp_path / "b1")).report["b1"]["median"] == pytest.approx(0.9, abs=0.1)
    # a map the rules do not recognise is read as precise values: as a B1 map that is refused, not used
    write(tmp_path / "unmarked", 100 * b1, rs=0.05, ss=0.2, image_type="ORIGINAL\\PRIMARY\\M\\FFE", series="51")
    with pytest.raises(InputError, match=r"B1 map is a Philips DICOM series .* dcm2niix -p n"):
        run_t1map(vfa, b1=read_volume(tmp_path / "unmarked"))
    # GDCM writes RescaleType US for every MR image, so a unit is given to the plan directly
    header = {"manufacturer": "Philips Medical Systems", "image_type": "ORIGINAL\\PRIMARY\\T1", "rescale_slope": "0.05",
              "philips_scale_slope": "0.2"}
    assert scaling_plan([{**header, "rescale_type": "ms"}], ["a.dcm"], "d").divisors is None
    for unitless in ("US", "normalized", ""):
        assert np.allclose(scaling_plan([{**header, "rescale_type": unitless}], ["a.dcm"], "d").divisors, 0.01)


@pytest.mark.parametrize("damage", ["missing", "zero", "text"])
def test_philips_series_with_some_images_lacking_a_usable_scale_slope_is_refused(tmp_path, capsys, damage):
    """Some images with SS and others without (or with 0 or garbage): they cannot be put on one scale. One line
    naming a file and the fix; nothing read."""
    fp = 500.0 + np.arange(16 * 16 * 3, dtype=float).reshape(16, 16, 3, 1) * np.array([1.0, 1.5])
    text = {"missing": None, "zero": "0", "text": "n/a"}[damage]
    write(tmp_path / "dyn", fp, rs=1.1, ss=4.0, series="40",
          scale_text=lambda k, t: text if (k, t) == (1, 1) else "4")
    with pytest.raises(InputError, match=r"1 of the 6 Philips images .*\(2005,100E\).*IM_40_0005\.dcm.*private tags"):
        read_dicom_series(tmp_path / "dyn")
    out = tmp_path / "out"
    assert_refused(["dsc", str(tmp_path / "dyn"), "--te", "0.03", "--frame-interval", "1.5", "--out", str(out),
                    "--quiet"], capsys, tmp_path / "dyn", out, ("2005,100E", "IM_40_0005.dcm", "private tags"))

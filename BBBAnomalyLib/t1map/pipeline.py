"""T1 mapping pipeline: a VFA series in, R1, T1 and M0 maps out (``run_t1map``; `bbbanomaly t1map`
and `bbbanomaly dce --vfa` are thin layers over it)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import InputError
from ..core.report import Timer, dump_json, summarise, versions
from ..core.volume import Volume, read_warnings
from .inputs import PYTHON_FLAGS, VFASeries, check_vfa
from .vfa import R1_BOUNDS, fit_vfa_linear, fit_vfa_nonlinear

MAP_INFO = {
    "r1": ("1/s", "longitudinal relaxation rate R1 = 1/T1"),
    "t1": ("s", "longitudinal relaxation time T1"),
    "m0": ("a.u.", "equilibrium signal M0 (receive gain included)"),
    "fit_ok": ("1", "1 where the fit gave a physical T1, 0 where it failed (T1 and R1 are 0 there)"),
}
SUFFIXES = (".nii.gz", ".nii", ".nrrd")
CHUNK = 262144


class T1Method(str, enum.Enum):
    LINEAR = "linear"  # DESPOT1 straight line
    NONLINEAR = "nonlinear"  # least squares on the signal, from the linear solution (default)


@dataclass
class T1MapResult:
    maps: dict[str, Volume]
    mask: np.ndarray
    report: dict

    def write(self, out_dir, overwrite: bool = False, suffix: str = ".nii.gz") -> Path:
        """<map><suffix> for r1, t1, m0, fit_ok, the mask and report.json: all or nothing."""
        from ..io import write_volume
        from ..core.outputs import atomic_output_dir

        if suffix not in SUFFIXES:
            raise InputError(f"output suffix {suffix!r} is not one of {', '.join(SUFFIXES)}")
        template = next(iter(self.maps.values()))
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            for name, vol in self.maps.items():
                write_volume(vol, tmp / f"{name}{suffix}")
            write_volume(Volume(self.mask.astype(np.uint8), template.affine), tmp / f"mask{suffix}")
            dump_json(self.report, tmp / "report.json")
        return Path(out_dir).resolve()


def run_t1map(vfa: VFASeries, method: T1Method | str = T1Method.NONLINEAR, b1: Volume | None = None,
              mask=None, progress: Callable[[float, str], None] | None = None) -> T1MapResult:
    """R1 [1/s], T1 [s] and M0 maps from a VFA series.

    b1: relative flip-angle map (actual/nominal, ~1; a percent map is recognised and divided by 100), a Volume
        (resampled onto the series grid when it is on another: :mod:`.b1`) or an array on the series grid; mask: voxels to fit (default: signal above 5 % of the 99th percentile at
        the largest-signal angle, i.e. not background)."""
    from ..io import read_mask

    if not isinstance(vfa, VFASeries):  # a tuple or dict was an AttributeError ('signals')
        raise InputError(f"run_t1map takes a VFASeries(signals, flip_angles, tr), e.g. from read_vfa(paths), got "
                         f"{type(vfa).__name__}")
    # A VFASeries built in Python has not been through read_vfa's checks: flip angles as a list were an
    # AttributeError, one too few a bare ValueError, radians, TR in ms or TR 0 T1 maps of 1000 s or 1 s with fit_ok 1
    vfa = check_vfa(vfa.signals, vfa.flip_angles, vfa.tr, PYTHON_FLAGS)
    try:
        method = T1Method(str(getattr(method, "value", method)).lower())
    except ValueError:
        raise InputError(f"{method!r} is not a T1 method; choose one of "
                         f"{', '.join(m.value for m in T1Method)}") from None
    report_progress = progress or (lambda f, m: None)
    timer = Timer()
    signals = vfa.signals
    warnings: list[str] = read_warnings(signals)  # what the readers said about the files
    scaling = signals.acquisition.extra  # read_vfa's notes on Philips DICOM intensity scaling, if any
    if scaling.get("vfa_scaling_warning"):
        warnings.append(scaling["vfa_scaling_warning"])
    data = np.asarray(signals.data, dtype=np.float64)
    with timer("mask"):
        if mask is not None:
            inside = read_mask(mask, signals, "mask")
            # only the mask's voxels are fitted: a NaN outside it (e.g. a scanner's NaN background) was refused too,
            # with no word of the mask
            bad = int(np.count_nonzero(~np.isfinite(data[inside]).all(axis=1)))
        else:
            bad = int(np.count_nonzero(~np.isfinite(data).all(axis=3)))
        if bad:
            raise InputError(f"{bad} voxels {'inside the mask ' if mask is not None else ''}of the VFA series contain "
                             "NaN or infinite values; replace them (e.g. with 0) or give a mask that leaves them out")
        if mask is None:
            brightest = data.max(axis=3)
            inside = brightest > 0.05 * np.percentile(brightest, 99)
        if not inside.any():
            raise InputError("no voxel with signal in the VFA series (or the mask is empty)")
    angles = np.broadcast_to(vfa.flip_angles, (int(inside.sum()), vfa.flip_angles.size))
    b1_info = None
    if b1 is not None:
        from .b1 import b1_volume, on_vfa_grid, relative_b1

        values, note = on_vfa_grid(b1_volume(b1, signals), signals, inside)
        if note:
            warnings.append(note)
        values = relative_b1(values, warnings)
        angles = angles * values[:, None]
        b1_info = summarise(values)
    report_progress(0.1, f"fitting T1 ({method.value})")
    fit = fit_vfa_linear if method is T1Method.LINEAR else fit_vfa_nonlinear
    s = data[inside]
    m0 = np.empty(s.shape[0])
    r1 = np.empty(s.shape[0])
    with timer("fit"):
        for start in range(0, s.shape[0], CHUNK):
            rows = slice(start, start + CHUNK)
            m0[rows], r1[rows] = fit(s[rows], angles[rows], vfa.tr)
            report_progress(0.1 + 0.85 * min(1.0, (start + CHUNK) / s.shape[0]), "fitting T1")
    # A T1 at the fit's bounds (10 ms, 1000 s: vfa.R1_BOUNDS) is not tissue but the nonlinear fit clipped there: TR
    # in microseconds gave T1 = 10 ms in every voxel with fit_ok 1. A negative M0 is a negative signal, not tissue.
    ok = np.isfinite(r1) & (r1 > R1_BOUNDS[0]) & (r1 < R1_BOUNDS[1]) & np.isfinite(m0) & (m0 > 0)
    if (~ok).any():
        units = ("; that is most of the voxels: check that the flip angles are in degrees and TR in seconds"
                 if (~ok).sum() > 0.5 * ok.size else "")
        warnings.append(f"{int((~ok).sum())} voxels gave no physical T1 (no T1 weighting between the angles or no "
                        f"signal); their T1/R1 are 0 and fit_ok is 0{units}")
    negative = int((s < 0).any(axis=1).sum())
    if negative:  # magnitude images are >= 0 (dmri's check, round 17): a signed or offset series fits nonsense
        warnings.append(f"{negative} voxels have negative VFA signal (magnitude images are >= 0: an intensity offset, "
                        "a signed difference or a phase image?); their T1 is not meaningful")
    values = {"r1": np.where(ok, r1, 0.0), "t1": np.where(ok, 1.0 / np.where(ok, r1, 1.0), 0.0),
              "m0": np.where(ok, m0, 0.0), "fit_ok": ok.astype(np.float64)}
    maps = {}
    for name, v in values.items():
        grid = np.zeros(signals.spatial_shape, np.float32)
        grid[inside] = v
        maps[name] = Volume(grid, signals.affine.copy())
    report = {
        "pipeline": "t1map",
        "input": {"shape": list(signals.data.shape), "flip_angles_deg": vfa.flip_angles.tolist(), "tr_s": vfa.tr,
                  **({"intensity_scaling": scaling["vfa_intensity_scaling"]}
                     if scaling.get("vfa_intensity_scaling") else {})},
        "parameters": {"method": method.value, "b1_map": b1 is not None},
        "versions": versions(),
        "voxels": int(inside.sum()),
        "units": {name: MAP_INFO[name][0] for name in maps},
        "maps": {name: {"unit": MAP_INFO[name][0], "description": MAP_INFO[name][1]} for name in maps},
        "summary": {name: summarise(values[name][ok]) for name in ("r1", "t1", "m0")},
        **({"b1": b1_info} if b1_info else {}),
        "timings_s": timer.seconds,
        "warnings": warnings,
    }
    report_progress(1.0, "done")
    return T1MapResult(maps, inside, report)


def t10_map_from_vfa(paths: list[str], series: Volume, flip_angles=None, tr: float | None = None,
                     b1_path: str | None = None) -> tuple[Volume, dict]:
    """The T10 map [s] for a DCE series from VFA files (nonlinear fit), and what the report should say about it.

    On the DCE grid, voxels where the fit failed get the median T10 of the others (counted). On another grid (a VFA
    series of another resolution or field of view) the map is returned on the VFA grid with 0 where the fit failed:
    run_dce reads it at the series' voxels from the fitted voxels only (dce.validation.check_t10_map)."""
    from ..io import read_volume
    from .inputs import read_vfa

    vfa = read_vfa(paths, flip_angles, tr, flags=("--vfa-flip-angles", "--vfa-tr"))
    same_grid = series.same_grid(vfa.signals)
    b1 = read_volume(b1_path) if b1_path else None
    # Fit where the VFA series has signal (run_t1map's automatic mask), not everywhere: a real B1 map is 0 outside
    # the head, and fitting there made every `dce --b1` fail on the background; the background takes the median
    # T10 below, like any voxel whose fit failed.
    result = run_t1map(vfa, T1Method.NONLINEAR, b1=b1)
    t1 = result.maps["t1"].data.astype(np.float64)
    ok = result.maps["fit_ok"].data > 0
    if not ok.any():
        raise InputError("no voxel of the VFA series gave a T1; check the flip angles and TR of --vfa")
    info = {"flip_angles_deg": vfa.flip_angles.tolist(), "tr_s": vfa.tr, "b1_map": b1 is not None,
            "method": "nonlinear", "t10_median_s": float(np.median(t1[ok]))}
    if "intensity_scaling" in result.report["input"]:  # Philips DICOM: which values were fitted
        info["intensity_scaling"] = result.report["input"]["intensity_scaling"]
    if vfa.signals.acquisition.extra.get("vfa_scaling_warning"):
        info["warnings"] = [vfa.signals.acquisition.extra["vfa_scaling_warning"]]
    if not same_grid:
        info.update(grid="VFA grid, resampled onto the DCE series", vfa_shape=list(vfa.signals.spatial_shape),
                    voxels_not_fitted=int((~ok).sum()))
        return Volume(np.where(ok, t1, 0.0), vfa.signals.affine.copy()), info
    filled = np.where(ok, t1, np.median(t1[ok]))
    info["voxels_filled_with_median"] = int((~ok).sum())
    return Volume(filled, series.affine.copy()), info

"""Issue 14, round 18: the transit gate (BBBAnomalyLib/dsc/phae/transit_gate.py), its calibration and what it does.

The gate asks whether a case's curves decisively reject the exponential-leaning capillary transit PHAE's weights were
trained for (the median over the informative voxels of a noise-normalised excess of the prior's best fit). This script
regenerates every number of docs/validation.md, "Issue 14, round 18":

    python scripts/phae_transit_gate.py calibrate   # development set: the threshold (~4 min)
    python scripts/phae_transit_gate.py object      # the held-apart OSIPI-style object, 6 shapes x 9 settings (~6 min)
    python scripts/phae_transit_gate.py object --aif parker   # the same on the development (Parker) object
    python scripts/phae_transit_gate.py own --anatomy icbm2009a   # the own phantom on another brain (~5 min)
    python scripts/phae_transit_gate.py sweep       # the held-apart curve sweep (~3 min)
    python scripts/phae_transit_gate.py dispersion  # strong AIF-to-tissue dispersion: gate, oSVD and PHAE (~2 min)

``object`` also scores the two map switches the round measured and did not adopt, on the same curves: where the gate
fires, oSVD's CBF (``PHAE switch-oSVD``), or PHAE's decoder fitted under the gate's homogeneous shape by grid least
squares (``PHAE switch-fit``, with the 95 % profile-likelihood interval's coverage). Add ``--json OUT`` to keep the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

EXP_LIKE = ("exponential", "lorentzian", "gamma1.5")


def _gate(curves, aif, dt) -> dict:
    from BBBAnomalyLib.dsc.phae.transit_gate import transit_gate

    return transit_gate(curves, aif, dt).report()


def _own_phantom_rows(anatomy: str | None, geometry: bool, extra=()) -> list[dict]:
    """The gate on the own DSC phantom's ΔR2* brain curves and automatic AIF, as run_dsc measures them."""
    import phae_own_phantom as own

    from BBBAnomalyLib.dsc.parameters import DSCParameters
    from BBBAnomalyLib.dsc.pipeline import run_dsc

    if anatomy not in (None, "MNI152"):
        own.use_anatomy(anatomy)
    rows = []
    for setting in own.settings() + (own.geometry_settings() if geometry else []) + list(extra):
        phantom, _ = own.make_setting(setting)
        res = run_dsc(phantom.signal, DSCParameters(method="csvd"), aif_mask=phantom.masks.get("aif"),
                      brain_mask=phantom.masks.get("brain"), keep_curves=True)
        rows.append({"anatomy": anatomy or "MNI152", "setting": setting,
                     **_gate(res.delta_r2s.data[res.brain_mask], res.aif, float(res.times[1] - res.times[0]))})
        print(rows[-1], flush=True)
    return rows


def calibrate() -> dict:
    """The development set's largest statistic among exponential-like truths, and the threshold (twice that)."""
    from phae_world import OBJECT_SNRS, OBJECT_TIMINGS, reference_object

    rows = _own_phantom_rows(None, geometry=False)
    for shape in EXP_LIKE:
        for dt, frames in OBJECT_TIMINGS:
            for snr in OBJECT_SNRS:
                c, a, dt_, *_ = reference_object(snr, dt=dt, n_frames=frames, residue=shape, aif="parker")
                rows.append({"object": "parker", "shape": shape, "dt": dt, "snr": snr, **_gate(c, a, dt_)})
    largest = max(r["statistic"] for r in rows)
    return {"rows": rows, "largest": largest, "threshold": round(2.0 * largest, 2)}


# --- the switch candidates (measured, not adopted) -------------------------------------------------
FIT_MTT_GRID_S = (0.7, 30.0, 153)  # 2.5 % steps: the evidence's 10 % steps misread CBF by up to 14 % without noise
FIT_DELAY_GRID_S = (-3.0, 5.0, 0.125)


def grid_fit(curves, aif, dt, shape, chunk=512):
    """Per curve under ``shape``: CBF [1/s] at the least-squares cell of the MTT x delay grid (flow in closed form)
    and the flow's 95 % profile-likelihood interval (RSS within RSS_min·(1 + 3.84/(T - 3)) at any cell)."""
    import torch

    from BBBAnomalyLib.dsc.phae.shape_evidence import templates

    c = torch.from_numpy(np.ascontiguousarray(curves, np.float64))
    unit = templates(torch.from_numpy(np.asarray(aif, np.float32)), dt, shape, FIT_MTT_GRID_S, FIT_DELAY_GRID_S)
    norm = (unit * unit).sum(dim=0).clamp_min(1e-300)
    cbf, lo, hi = (np.empty(c.shape[0]) for _ in range(3))
    for s in range(0, c.shape[0], chunk):
        x = c[s:s + chunk]
        energy = (x * x).sum(dim=-1)
        proj = x @ unit
        flow = proj.clamp_min(0.0) / norm
        rss = (energy[:, None] - 2.0 * flow * proj + flow * flow * norm).clamp_min(0.0)
        rmin, best = rss.min(dim=1)
        limit = rmin + (rmin + 1e-10 * energy) * (3.841 / max(c.shape[1] - 3, 1))
        half = ((limit[:, None] - rss).clamp_min(0.0) / norm).sqrt()
        inside = rss <= limit[:, None]
        cbf[s:s + chunk] = flow.gather(1, best[:, None])[:, 0].numpy()
        lo[s:s + chunk] = torch.where(inside, flow - half, torch.full_like(flow, math.inf)).amin(dim=1).numpy()
        hi[s:s + chunk] = torch.where(inside, flow + half, torch.full_like(flow, -math.inf)).amax(dim=1).numpy()
    return cbf / dt, lo / dt, hi / dt  # the templates' flow is CBF·Δt


class _Switch:
    """PHAE where the gate stays quiet; where it fires, oSVD's CBF (``to="osvd"``) or the grid fit (``to="fit"``)."""

    log: list = []

    def __init__(self, aif, dt, to):
        self.aif, self.dt, self.to = aif, dt, to

    def fit(self, curves, keep_curves=False):
        from BBBAnomalyLib.dsc.deconvolution import DeconvolutionModel
        from BBBAnomalyLib.dsc.phae import PHAEModel
        from BBBAnomalyLib.dsc.phae.inference import PHAEFit

        gate = _gate(curves, self.aif, self.dt)
        _Switch.log.append(gate)
        if not gate["fired"]:
            return PHAEModel(self.aif, self.dt).fit(curves, domain_check=False)
        zeros = np.zeros(len(curves), np.float32)
        if self.to == "osvd":
            f = DeconvolutionModel(self.aif, self.dt, "osvd", oi_target=0.095).fit(curves)
            return PHAEFit(cbf=f.cbf, tmax=f.tmax, mtt=zeros, loss=zeros)
        cbf, lo, hi = grid_fit(curves, self.aif, self.dt, gate["homogeneous_shape"])
        fit = PHAEFit(cbf=cbf, tmax=zeros, mtt=zeros, loss=zeros)
        fit.interval = (lo, hi)
        return fit


def object_rows(aif: str = "georgiou") -> list[dict]:
    """Per shape and setting of the OSIPI-style object: the gate, and tissues within the object's tolerance / CBF median
    error for oSVD 0.095, the default PHAE and the two switches; the switch-fit interval's coverage where it fired."""
    from BBBAnomalyLib.dsc.phae import PHAEModel
    from phae_world import OBJECT_RESIDUES, OBJECT_SNRS, OBJECT_TIMINGS, _score_object_timing, reference_object

    factories = {"default": lambda a, d: PHAEModel(a, d), "switch-oSVD": lambda a, d: _Switch(a, d, "osvd")}
    rows = []
    for shape in OBJECT_RESIDUES:
        for dt, frames in OBJECT_TIMINGS:
            for snr in OBJECT_SNRS:
                make = partial(reference_object, residue=shape, aif=aif)
                n0 = len(_Switch.log)
                scores = _score_object_timing(factories, snr, dt, frames, make)
                gate = _Switch.log[n0]
                row = {"shape": shape, "dt": dt, "frames": frames, "snr": snr, "gate": gate,
                       **{m: {"within": v["within"], "cbf_median_error_pct": round(v["cbf_median_error_pct"], 1)}
                          for m, v in scores.items() if m in ("oSVD 0.095", "PHAE default", "PHAE switch-oSVD")}}
                if gate["fired"]:  # the decoder fitted under the gate's shape, scored as the object scores
                    fit_scores = _score_object_timing({"switch-fit": lambda a, d: _Switch(a, d, "fit")}, snr, dt,
                                                      frames, make)["PHAE switch-fit"]
                    c, a, dt_, cbf_true, _, _ = make(snr, dt=dt, n_frames=frames)
                    _, lo, hi = grid_fit(c, a, dt_, gate["homogeneous_shape"])
                    truth = cbf_true / 6000.0
                    row["PHAE switch-fit"] = {"within": fit_scores["within"],
                                              "cbf_median_error_pct": round(fit_scores["cbf_median_error_pct"], 1),
                                              "coverage_95": round(float(np.mean((truth >= lo) & (truth <= hi))), 3)}
                else:
                    row["PHAE switch-fit"] = row["PHAE default"]
                rows.append(row)
                print(row, flush=True)
    return rows


def object_table(rows) -> str:
    methods = ("oSVD 0.095", "PHAE default", "PHAE switch-oSVD", "PHAE switch-fit")
    lines = ["| shape | settings where the gate fires | " + " | ".join(f"{m}: settings ≥ 13/14" for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        rs = [r for r in rows if r["shape"] == shape]
        fired = sum(r["gate"]["fired"] for r in rs)
        lines.append(f"| {shape} | {fired}/{len(rs)} | "
                     + " | ".join(f"{sum(r[m]['within'] >= 13 for r in rs)}" for m in methods) + " |")
    return "\n".join(lines)


def sweep_rows() -> list[dict]:
    """The gate on the held-apart curve sweep (phae_world.sweep's generator and seeds: Georgiou AIF, dispersed
    measured AIF, noise on the signal): the four-shape mix, all-exponential and all-plug-flow tissue."""
    from phae_world import SWEEP_TISSUES

    from BBBAnomalyLib.phantoms import dsc_curves as dc

    rows = []
    for residue in (None, "exponential", "box"):
        for gain in (4.0, 1.0):
            for dt in (1.0, 1.6, 2.2):
                for snr in (10, 20, 50, 100):
                    for case in range(2):
                        rng = np.random.default_rng(10_000 + 97 * case + int(10 * dt) + int(snr) * 1000 + int(gain) * 7)
                        par = np.repeat(np.array(list(SWEEP_TISSUES.values())), 200, axis=0)
                        cc = dc.simulate_curve_case(rng, len(par), dc.HELD_APART, frame_interval=dt,
                                                    n_frames=int(round(90.0 / dt)), snr=float(snr), tissue_gain=gain,
                                                    mtt=60.0 * par[:, 1] / par[:, 0], cbv=par[:, 1] / 100.0,
                                                    delay=par[:, 2], residue=residue)
                        rows.append({"residue": residue or "mix", "gain": gain, "dt": dt, "snr": snr, "case": case,
                                     **_gate(cc.curves, cc.aif, dt)})
    return rows


DISPERSION_SETTINGS = tuple(dict(snr=snr, seed=5, dispersion=disp, tissue_delay=delay)
                            for disp in (1.5, 3.0) for delay in (0.0, 3.0) for snr in (None, 100, 50, 20))


def dispersion_rows() -> list[dict]:
    """Strong AIF-to-tissue dispersion on the own phantom (exponential tissue): the gate, and the GM/WM CBF bias of oSVD
    and the default PHAE where it fires (would its advice, oSVD, be better there?)."""
    import phae_own_phantom as own
    from validate_phae import accuracy_record, run

    rows = []
    for setting in DISPERSION_SETTINGS:
        phantom, _ = own.make_setting(setting)
        res, _ = run(phantom, {"method": "phae", "device": "cpu"})
        row = {"setting": setting, "gate": res.report["phae"]["transit_gate"]}
        if row["gate"]["fired"]:
            rec = accuracy_record(phantom, res)
            row["PHAE"] = {"gm": rec["gm"]["cbf"], "wm": rec["wm"]["cbf"]}
            rec = accuracy_record(phantom, run(phantom, {"method": "osvd", "osvd_oi_target": 0.095})[0])
            row["oSVD 0.095"] = {"gm": rec["gm"]["cbf"], "wm": rec["wm"]["cbf"]}
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("part", choices=("calibrate", "object", "own", "sweep", "dispersion"))
    ap.add_argument("--aif", choices=("georgiou", "parker"), default="georgiou",
                    help="object: the held-apart Georgiou AIF (default) or the development Parker AIF")
    ap.add_argument("--anatomy", default="icbm2009a",
                    help="own: the brain (MNI152, icbm2009a or colin27; geometry settings included)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.part == "calibrate":
        out = calibrate()
        print(f"largest development statistic {out['largest']:.4f}: threshold {out['threshold']:g}")
    elif args.part == "object":
        out = object_rows(args.aif)
        print(object_table(out))
    elif args.part == "own":
        out = _own_phantom_rows(args.anatomy, geometry=True)
        print(f"fired in {sum(r['fired'] for r in out)} of {len(out)}; largest {max(r['statistic'] for r in out):.4f}")
    elif args.part == "sweep":
        out = sweep_rows()
        for residue in ("mix", "exponential", "box"):
            rs = [r for r in out if r["residue"] == residue]
            print(f"{residue}: fired in {sum(r['fired'] for r in rs)} of {len(rs)} cases; "
                  f"largest {max(r['statistic'] for r in rs):.4f}")
    else:
        out = dispersion_rows()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

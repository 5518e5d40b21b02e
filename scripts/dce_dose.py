"""The contrast dose behind the DCE population AIF (session 22; BBBAnomalyLib/dce/aif_dose.py).

The DCE object is made at 0.5, 0.75, 1 and 1.5 x the Parker curve's dose (``make_dce_phantom(dose=...)``; the
Parker AIF's own dose is 0.1 mmol/kg) and fitted three ways: the Parker population AIF without --dose (as before
session 22), with --dose at the object's dose, and with the drawn arterial mask (a measured AIF, which scales
itself). Printed: the median of each map over GM, WM (pure voxels, no vessels), the enhancing rim and the tumour core,
as the error of that median against the truth's median, in %.

    .venv/bin/python scripts/dce_dose.py [--slices 6] [--snr 40] [--seed 1] [--model extended-tofts]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from BBBAnomalyLib.core.volume import Volume  # noqa: E402
from BBBAnomalyLib.dce.parameters import DCEParameters  # noqa: E402
from BBBAnomalyLib.dce.pipeline import run_dce  # noqa: E402
from BBBAnomalyLib.perfusion.population_aif import MODEL_DOSE_MMOL_PER_KG  # noqa: E402
from BBBAnomalyLib.phantoms.dce import make_dce_phantom  # noqa: E402

DOSES = (0.5, 0.75, 1.0, 1.5)  # x the Parker curve's dose
MAPS = ("ktrans", "vp", "ve")


def regions(phantom) -> dict[str, np.ndarray]:
    m = phantom.masks
    clean = m["pure"] & ~m["vessels"]
    return {"GM": m["gm"] & clean, "WM": m["wm"] & clean, "rim": m["enhancing"], "core": m["core"]}


def errors(result, phantom) -> dict[str, dict[str, float]]:
    """{region: {map: % error of the region's median}}."""
    out = {}
    for region, mask in regions(phantom).items():
        out[region] = {}
        for name in MAPS:
            if name not in result.maps:  # (Patlak: no ve)
                out[region][name] = float("nan")
                continue
            truth = float(np.median(phantom.truth[name].data[mask]))
            found = float(np.median(result.maps[name].data[mask]))
            out[region][name] = 100.0 * (found / truth - 1.0) if truth > 0 else float("nan")
    return out


def run(phantom, how: str, model: str):
    t10 = Volume(phantom.truth["t10"].data, phantom.signal.affine)
    dose = phantom.params.dose * MODEL_DOSE_MMOL_PER_KG["parker"]
    common = dict(rls="none", model=model)
    if how == "measured":
        return run_dce(phantom.signal, DCEParameters(**common), aif_mask=phantom.masks["aif"],
                       brain_mask=phantom.masks["brain"], t10_map=t10)
    params = DCEParameters(population_aif="parker", dose=dose if how == "parker --dose" else None, **common)
    return run_dce(phantom.signal, params, brain_mask=phantom.masks["brain"], t10_map=t10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=6)
    ap.add_argument("--snr", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="extended-tofts")
    a = ap.parse_args(argv)
    header = "dose(x) AIF             " + " ".join(f"{r + ' ' + n:>11s}" for r in ("GM", "WM", "rim", "core")
                                                   for n in MAPS)
    print(f"# {a.model}, {a.slices} slices, SNR {a.snr:g}, seed {a.seed}; % error of the region's median map value")
    print(header)
    for dose in DOSES:
        phantom = make_dce_phantom(slices=a.slices, snr=a.snr, seed=a.seed, dose=dose)
        for how in ("parker", "parker --dose", "measured"):
            err = errors(run(phantom, how, a.model), phantom)
            cells = " ".join(f"{err[r][n]:+11.1f}" for r in ("GM", "WM", "rim", "core") for n in MAPS)
            print(f"{dose:<7g} {how:<15s} {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

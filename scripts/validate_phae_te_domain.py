"""Single-echo PHAE at echo times inside and outside the TE range its weights were trained on (issue 14, session 24)

The default weights' card states the TE range of their training cases (``training_distribution["te"]``, 20-45 ms for
dsc-phae-wide), but TE was not one of the statistics ``training_domain`` compares a case with, so a run at TE 15 ms
or 60 ms said nothing. ΔR2* = -ln(S/S0)/TE itself does not depend on TE; what TE changes is the noise of ΔR2*
(sigma/(S0·TE): a short TE is a noisy curve) and how close an artery comes to the noise floor at the bolus peak (a
long TE saturates the AIF). This script writes the project's DSC reference object (8 slices, exponential residue,
BSW leakage in the rim) as one echo at TE 10/15/20/30/45/60 ms, S = S0·exp(-TE·ΔR2*) + Rician noise of
sigma = S0_WM/SNR (SNR 20/50/100, two noise draws), runs PHAE (default weights, automatic guided pooling) and
records the GM / WM / tumour-rim ROI-mean CBF bias (%), Lin's CCC over the brain, the 95 % coverage of
``phae_cbf_uncertainty`` and which of the run's warnings fired (curve CNR outside the trained range,
AIF saturation, the TE line). The pairs of equal SNR x TE (PAIRS) give the numbers of
``dsc/phae/domain.py: echo_time_warning``.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python scripts/validate_phae_te_domain.py [--seeds 1 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from validate_phae_dual_echo import echoes, noiseless_object, record, run  # noqa: E402

TES_MS = (10, 15, 20, 30, 45, 60)
SNRS = (20, 50, 100)
#: (SNR, TE ms) outside the trained TE range, each with a run inside it whose SNR x TE (so the noise of ΔR2*) is the
#: same: what TE does apart from the noise is their difference (the noise draws are the same standard normals)
PAIRS = (((20, 10), (10, 20)), ((100, 10), (50, 20)), ((20, 15), (10, 30)), ((40, 15), (20, 30)),
         ((100, 15), (50, 30)), ((20, 60), (40, 30)), ((50, 60), (100, 30)), ((100, 60), (200, 30)))
#: which of the run's warnings are which (substrings of the lines)
FLAGS = {"te": "were trained at", "cnr": "tissue curve contrast-to-noise", "saturation": "noise floor in",
         "low_cnr": "low contrast-to-noise"}


def settings(snrs=SNRS, tes_ms=TES_MS, pairs=PAIRS) -> list[tuple[int, int]]:
    """The grid (SNR x TE) and every (SNR, TE) a pair needs, in order, each once."""
    out = [(snr, te) for snr in snrs for te in tes_ms]
    for pair in pairs:
        out.extend(s for s in pair if s not in out)
    return out


def measure(slices: int = 8, grid=None, seeds=(1, 2), log=print) -> list[dict]:
    phantom, s0, r2s = noiseless_object(slices)
    rows = []
    for snr, te_ms in (settings() if grid is None else grid):
        te = te_ms / 1000.0
        for seed in seeds:
            echo = echoes(phantom, s0, r2s, (te, te + 0.03), 0.0, snr, seed)[0]
            res, sec = run(phantom, echo, None, (te, None), "single", {"method": "phae", "device": "cpu"})
            rec = record(phantom, res)
            lines = rec.pop("warnings")
            gp = res.report.get("phae", {}).get("guided_pooling", {})
            rows.append({"snr": snr, "te_ms": te_ms, "seed": seed, **rec,
                         "contrast_to_noise": res.report.get("contrast_to_noise"),
                         "pooling": bool(gp.get("applied")),
                         "warned": sorted(k for k, s in FLAGS.items() if any(s in w for w in lines))})
            r = rows[-1]
            log(f"SNR {snr} TE {te_ms} ms seed {seed}: GM {r['GM']:+.1f} WM {r['WM']:+.1f} rim {r['rim']:+.1f} "
                f"CCC {r['ccc']:.3f} coverage {r.get('coverage', float('nan')):.2f} CNR {r['contrast_to_noise']} "
                f"pooling {r['pooling']} warned {r['warned']}")
    return rows


def pair_differences(rows: list[dict], pairs=PAIRS) -> list[dict]:
    """Per pair and seed: the out-of-range TE run minus the in-range run of equal SNR x TE (points; CCC)."""
    at = {(r["snr"], r["te_ms"], r["seed"]): r for r in rows}
    out = []
    for (snr_a, te_a), (snr_b, te_b) in pairs:
        for seed in sorted({r["seed"] for r in rows}):
            a, b = at.get((snr_a, te_a, seed)), at.get((snr_b, te_b, seed))
            if a is None or b is None:
                continue
            out.append({"outside": (snr_a, te_a), "inside": (snr_b, te_b), "seed": seed,
                        **{k: a[k] - b[k] for k in ("GM", "WM", "rim", "ccc")}})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    rows = measure(args.slices, seeds=tuple(args.seeds), log=lambda s: print(s, flush=True))
    diffs = pair_differences(rows)
    for d in diffs:
        print(f"SNR {d['outside'][0]} TE {d['outside'][1]} ms minus SNR {d['inside'][0]} TE {d['inside'][1]} ms, seed "
              f"{d['seed']}: GM {d['GM']:+.1f} WM {d['WM']:+.1f} rim {d['rim']:+.1f} points, CCC {d['ccc']:+.3f}")
    worst = {k: max(abs(d[k]) for d in diffs) for k in ("GM", "WM", "rim", "ccc")} if diffs else {}
    print("largest |difference| over the pairs:", {k: round(v, 3) for k, v in worst.items()})
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "pairs": diffs, "largest": worst}, indent=1,
                                              default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

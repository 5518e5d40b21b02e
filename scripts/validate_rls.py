#!/usr/bin/env python
"""RLS (DCE residual leakage signal) on an *independent* phantom: other tumor site and size, other AIF
(Georgiou 2019: never used in any RLS training), other timing (3.5 s x 70 frames), flip angle 25°, TR
4 ms, other T10s and rim physiology, SNR 30, noise seeds >= 500. Learned (RLS per case / bundled weights)
beside the classic map (extended Tofts Ktrans with the artery mask as AIF) and a trivial baseline
(mean post-contrast SER, i.e. an IAUC-like enhancement map).

Parts:
  truth       r(RLS, true Ktrans) in the enhancing rim and the tumor, AUC leaky vs non-leaky, vessel AUC,
              with and without a tumor mask, per RLS source.
  seeds       five training seeds: per-case RLS (seed 0-4) and, with --retrain, the cohort weights
              retrained with seeds 0-4 (bbbanomaly train dce-rls on the project phantom) — the spread of rim
              r and AUC.
  robustness  the seed's experiment: RLS from D_under / D_trunc / D_hybrid against RLS from the full
              series (r², SSIM inside the brain), Ktrans beside it: the default (--rls auto, tumor mask
              given), the bundled weights, per case (training seeds 0-2).
  world       the dce-rls-world recipe (scripts/train_rls_world.py) retrained with seeds 0-4: rim r, AUC and
              the robustness experiment for each.
  protocols   the independent phantom at 180 s / 2 s, 420 s / 7 s and 600 s / 10 s.
  walltime    whole brain (78 slices), classic only / bundled / per case, run_dce's timings and the load.
  memory      tracemalloc peak of run_dce over the series' bytes (whole head, 120 frames), per RLS source.

  OMP_NUM_THREADS=1 python scripts/validate_rls.py all --json docs/figures/rls_validation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from BBBAnomalyLib.dce import DCEParameters, run_dce  # noqa: E402
from BBBAnomalyLib.metrics import pearson_r, roc_auc, ssim  # noqa: E402
from BBBAnomalyLib.phantoms.dce import make_dce_phantom  # noqa: E402
from BBBAnomalyLib.core.volume import Volume  # noqa: E402

INDEPENDENT = dict(snr=30.0, aif="georgiou", frame_interval=3.5, duration=245.0, bolus_arrival=42.0, flip_angle=25.0,
                   tr=0.004, tumor_center_mm=(-30.0, -18.0, 22.0), tumor_radii_mm=(12.0, 14.0, 11.0), slices=10,
                   tissues={"gm": {"t10": 1.4}, "wm": {"t10": 0.9}, "rim": {"t10": 1.3, "ve": 0.25, "vp": 0.04}})
SOURCES = {"per case, tumor mask given": dict(rls="case"), "per case, no tumor mask": dict(rls="case", _no_tumor=True),
           "bundled dce-rls-phantom": dict(rls="bundled", rls_weights="dce-rls-phantom"),
           "bundled dce-rls-world": dict(rls="bundled", rls_weights="dce-rls-world"),
           "auto, tumor mask given": dict(rls="auto"), "auto, no tumor mask": dict(rls="auto", _no_tumor=True)}
BUNDLED = dict(rls="bundled", rls_weights="dce-rls-world")


def independent_phantom(seed: int = 501, **overrides):
    return make_dce_phantom(**{**INDEPENDENT, "seed": seed, **overrides})


def run(ph, series=None, **params):
    no_tumor = params.pop("_no_tumor", False)
    m = ph.masks
    return run_dce(series or ph.signal, DCEParameters(**params), aif_mask=m["aif"], brain_mask=m["brain"],
                   tumor_mask=None if no_tumor else m["tumor"], t10_map=ph.truth["t10"])


def scores(ph, maps: dict) -> dict:
    m = ph.masks
    k = ph.truth["ktrans"].data
    tissue = m["brain"] & ~m["vessels"]
    out = {}
    for name, v in maps.items():
        out[name] = {"r_rim": pearson_r(v, k, m["enhancing"]), "r_tumor": pearson_r(v, k, m["tumor"]),
                     "auc_leaky": roc_auc(m["leaky"][tissue], v[tissue]),
                     "auc_vessels": roc_auc(m["vessels"][m["brain"] & ~m["tumor"]], v[m["brain"] & ~m["tumor"]]),
                     "rim_mean": float(v[m["enhancing"]].mean()), "nawm_mean": float(v[m["nawm"]].mean())}
    return out


def trivial_map(ph, res) -> np.ndarray:
    """Mean post-contrast SER (%): what any enhancement map shows without a model or a network."""
    sig = ph.signal.data.astype(np.float64)
    n_base = int(res.report.get("baseline_frames", res.report.get("baseline", {}).get("frames", 8)) or 8)
    s0 = sig[..., 1:n_base].mean(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ser = np.where(s0 > 0, sig / s0 - 1.0, 0.0)
    return 100.0 * ser[..., n_base:].mean(-1)


def part_truth(extra_weights=(), log=print) -> dict:
    ph = independent_phantom()
    out = {}
    for label, kw in SOURCES.items():
        t = time.perf_counter()
        res = run(ph, **kw)
        maps = {"rls": res.maps["rls"].data}
        if label.startswith("per case, tumor"):
            maps["ktrans (extended Tofts)"] = res.maps["ktrans"].data
            maps["trivial: mean post-contrast SER"] = trivial_map(ph, res)
        sc = scores(ph, maps)
        sc["rls"]["seconds"] = round(time.perf_counter() - t, 1)
        sc["rls"]["report"] = {k: v for k, v in res.report.get("rls", {}).items() if k != "sha256"}
        for name, row in sc.items():
            key = f"{label}: {name}" if name == "rls" else name
            out[key] = row
            log(f"{key}: " + ", ".join(f"{a} {b:.3f}" for a, b in row.items() if isinstance(b, float)))
    for path in extra_weights:
        res = run(ph, rls="bundled", rls_weights=str(path), _no_tumor=True)
        out[f"cohort weights {Path(path).name}: rls"] = scores(ph, {"rls": res.maps["rls"].data})["rls"]
        log(f"{path}: {out[f'cohort weights {Path(path).name}: rls']}")
    return out


def part_seeds(retrain: bool, log=print) -> dict:
    ph = independent_phantom()
    out = {"per case": []}
    for seed in range(5):
        res = run(ph, rls="case", seed=seed)
        out["per case"].append(scores(ph, {"rls": res.maps["rls"].data})["rls"])
        log(f"per case seed {seed}: {out['per case'][-1]}")
    if retrain:  # the bundled model's recipe (its card's command) with seeds 0-4, and with other epoch counts
        import subprocess
        import tempfile

        from validate_dce import write_cases

        with tempfile.TemporaryDirectory() as tmp:
            cases = Path(tmp) / "cases"
            write_cases(cases, 8)
            for key, runs in (("cohort (2 epochs)", [(seed, 2) for seed in range(5)]),
                              ("cohort epochs", [(0, e) for e in (1, 4, 8)])):
                out[key] = []
                for seed, epochs in runs:
                    name = f"rls-s{seed}-e{epochs}"
                    subprocess.run([sys.executable, "-m", "BBBAnomalyLib", "train", "dce-rls", str(cases), "--out", tmp,
                                    "--name", name, "--epochs", str(epochs), "--seed", str(seed), "--device", "cpu"],
                                   check=True, cwd=ROOT, capture_output=True)
                    res = run(ph, rls="bundled", rls_weights=str(Path(tmp) / f"{name}.pt"))
                    row = {"seed": seed, "epochs": epochs, **scores(ph, {"rls": res.maps["rls"].data})["rls"]}
                    out[key].append(row)
                    log(f"{key} seed {seed} epochs {epochs}: {row}")
    for key in list(out):
        rows = out[key]
        if not rows:
            continue
        out[key + " spread"] = {m: [float(np.min([r[m] for r in rows])), float(np.max([r[m] for r in rows]))]
                                for m in ("r_rim", "auc_leaky", "rim_mean")}
    return out


def subsample(series: Volume, kind: str) -> Volume:
    n = series.n_frames
    idx = {"D_under": np.arange(0, n, 2), "D_trunc": np.arange(int(0.6 * n)),
           "D_hybrid": np.arange(0, int(0.8 * n), 2)}[kind]
    return Volume(series.data[..., idx], series.affine, series.times[idx], series.acquisition)


def robustness_rows(ph, kw, label, log=print, with_ktrans=False) -> dict:
    """r² and SSIM (inside the brain) of RLS (and Ktrans) from each subsampled series against the full one."""
    brain = ph.masks["brain"]
    full = run(ph, **kw)
    out = {}
    for kind in ("D_under", "D_trunc", "D_hybrid"):
        sub = run(ph, subsample(ph.signal, kind), **kw)
        row = {"source": sub.report.get("rls", {}).get("source"),
               "full_source": full.report.get("rls", {}).get("source")}
        for name in ("rls", "ktrans") if with_ktrans else ("rls",):
            a, b = full.maps[name].data, sub.maps[name].data
            row[f"r2_{name}"] = pearson_r(a, b, brain) ** 2
            row[f"ssim_{name}"] = ssim(a, b, brain)
        out[f"{label} {kind}"] = row
        log(f"{label} {kind}: {row}")
    return out


def part_robustness(log=print) -> dict:
    ph = independent_phantom(seed=502)
    out = {}
    sources = [("default (auto, tumor mask given)", dict(rls="auto")), (f"bundled {BUNDLED['rls_weights']}", BUNDLED),
               ("bundled dce-rls-phantom", dict(rls="bundled", rls_weights="dce-rls-phantom"))]
    sources += [(f"per case seed {seed}", dict(rls="case", seed=seed)) for seed in range(3)]
    for i, (label, kw) in enumerate(sources):
        out.update(robustness_rows(ph, kw, label, log, with_ktrans=i == 0))
    # the same for other noise seeds and for the project's own phantom (Parker AIF, 5 s x 60, SNR 40: the
    # set-up of the older "seed's robustness experiment" section of docs/validation.md)
    others = [(f"noise seed {seed}", independent_phantom(seed=seed)) for seed in (501, 503)]
    others.append(("project phantom (seed 102)", make_dce_phantom(snr=40.0, slices=12, seed=102)))
    for name, other in others:
        for label, kw in (("default", dict(rls="auto")), ("per case seed 0", dict(rls="case"))):
            out.update(robustness_rows(other, kw, f"{label}, {name}", log))
    return out


def part_world(seeds=range(5), log=print) -> dict:
    """The bundled dce-rls-world recipe retrained with other seeds: truth and robustness for each."""
    import subprocess
    import tempfile

    ph_truth, ph_rob = independent_phantom(), independent_phantom(seed=502)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            name = f"world-s{seed}"
            subprocess.run([sys.executable, str(ROOT / "scripts" / "train_rls_world.py"), "--seed", str(seed),
                            "--out", tmp, "--name", name], check=True, cwd=ROOT, capture_output=True)
            card = json.loads((Path(tmp) / f"{name}.json").read_text(encoding="utf-8"))
            kw = dict(rls="bundled", rls_weights=str(Path(tmp) / f"{name}.pt"))
            res = run(ph_truth, **kw)
            row = {"seed": seed, "kept_step": card["training"]["early_stopping"]["kept_step"],
                   **scores(ph_truth, {"rls": res.maps["rls"].data})["rls"]}
            for key, value in robustness_rows(ph_rob, kw, "", log=lambda *a: None).items():
                row[key.strip() + " r2"], row[key.strip() + " ssim"] = value["r2_rls"], value["ssim_rls"]
            out[f"seed {seed}"] = row
            log(f"world seed {seed}: {row}")
    rows = list(out.values())
    out["spread"] = {k: [float(min(r[k] for r in rows)), float(max(r[k] for r in rows))]
                     for k in rows[0] if k not in ("seed",) and isinstance(rows[0][k], (int, float))}
    return out


def part_protocols(log=print) -> dict:
    out = {}
    for dur, dt in ((180.0, 2.0), (245.0, 3.5), (420.0, 7.0), (600.0, 10.0)):
        ph = independent_phantom(seed=503, duration=dur, frame_interval=dt)
        for label, kw in ((f"bundled {BUNDLED['rls_weights']}", BUNDLED), ("per case", dict(rls="case")),
                          ("auto", dict(rls="auto", rls_weights=BUNDLED["rls_weights"]))):
            res = run(ph, **kw)
            row = scores(ph, {"rls": res.maps["rls"].data})["rls"]
            row["choice"] = res.report.get("rls", {}).get("choice")
            out[f"{dur:.0f} s at {dt:g} s: {label}"] = row
            log(f"{dur:.0f} s at {dt:g} s {label}: r_rim {row['r_rim']:.2f} auc {row['auc_leaky']:.3f}")
    return out


def part_walltime(repeats: int = 2, log=print) -> dict:
    """Whole brain (all 78 slices of the independent phantom), one thread: run_dce's own timings per RLS source,
    with the 1-min load average beside each run (the machine is shared: only compare within one run)."""
    import os

    ph = independent_phantom(slices="all")
    out = {"brain_voxels": int(ph.masks["brain"].sum()), "frames": int(ph.signal.n_frames)}
    for label, kw in (("classic only", dict(rls="none")), ("bundled dce-rls-world", BUNDLED),
                      ("bundled dce-rls-phantom", dict(rls="bundled", rls_weights="dce-rls-phantom")),
                      ("per case", dict(rls="case"))):
        for rep in range(repeats):
            load = os.getloadavg()[0]
            t = time.perf_counter()
            res = run(ph, **kw)
            row = {"end_to_end_s": time.perf_counter() - t, "load_1min": load,
                   **{k: v for k, v in res.report.get("timings_s", {}).items()
                      if k in ("model_fit", "rls_training", "rls_inference")}}
            out[f"{label} #{rep}"] = row
            log(f"{label} #{rep}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    return out


def part_memory(log=print) -> dict:
    """tracemalloc peak of run_dce over the series' bytes (whole head, 120 frames at 2 s), without RLS, with the
    bundled weights and per case (numpy's and torch-CPU's Python-visible allocations; imports done before)."""
    import tracemalloc

    ph = independent_phantom(slices="all", frame_interval=2.0, duration=240.0)
    series = ph.signal.data.nbytes
    run(ph, rls="none")  # warm caches and lazy imports
    out = {"series_mb": series / 1e6, "brain_fraction": float(ph.masks["brain"].mean())}
    for label, kw in (("no RLS", dict(rls="none")), ("bundled dce-rls-world", BUNDLED), ("per case", dict(rls="case"))):
        tracemalloc.start()
        res = run(ph, **kw)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del res
        out[label] = peak / series
        log(f"{label}: peak {peak / series:.2f}x the series")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["all", "truth", "seeds", "robustness", "world", "protocols", "walltime", "memory"])
    ap.add_argument("--retrain", action="store_true", help="seeds: also retrain the cohort weights 5 times (~10 min)")
    ap.add_argument("--cohort-weights", nargs="*", default=[],
                    help="truth: also score these .pt cohort weights (e.g. from scripts/train_rls_world.py)")
    ap.add_argument("--bundled", default="dce-rls-world", help="the cohort weights of robustness/protocols")
    ap.add_argument("--world-seeds", type=int, default=5, help="world: how many training seeds (default 5)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    BUNDLED["rls_weights"] = args.bundled
    import torch

    torch.set_num_threads(1)
    parts = {"truth": lambda: part_truth(args.cohort_weights), "seeds": lambda: part_seeds(args.retrain),
             "robustness": part_robustness,
             "world": lambda: part_world(range(args.world_seeds)), "protocols": part_protocols,
             "walltime": part_walltime, "memory": part_memory}
    chosen = list(parts) if args.part == "all" else [args.part]
    result = {}
    for name in chosen:
        t = time.perf_counter()
        result[name] = parts[name]()
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

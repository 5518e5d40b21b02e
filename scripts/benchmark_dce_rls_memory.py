"""Peak memory of run_dce WITH the learned RLS map (issue 17: <= 2x the input series), two measures.

Input: the whole-brain DCE reference object of ``benchmark_dce_floor.py`` (``make_dce_phantom(snr=40,
slices="all", seed=7)``: 262,245 brain voxels x 60 frames, 74x92x78x60 float32 = 122 MiB), written once as
uncompressed NIfTI; brain, AIF and tumor masks and the T10 map given; ``rls="auto"`` (the default: the bundled
``dce-rls-world`` weights inside their training domain), ``DCEResult.write`` included.

Each measurement runs in a fresh Python process, with and without ``consume_input=True`` (which
``bbbanomaly dce`` passes):

* tracemalloc: the peak of numpy arrays alive at once during run_dce, the series (an F-ordered float32 copy in
  memory, made under tracing) counted as 1x, as Testing/test_dce_memory.py measures it (torch's tensors are not
  seen);
* RSS: the series read as the floor benchmark reads it (memory-mapped .nii), peak RSS (VmHWM) minus the RSS after the imports (torch and the library imported, the weights not yet
  loaded), over the series' bytes; torch's import itself is reported apart (RSS after imports minus RSS
  before torch);
* torch's first use (with the RLS): in a process of its own, after the same imports, the bundled weights
  loaded and one inference block of this case's size (zeros) run, freed and the heap trimmed: what stays
  resident (torch's code pages, its allocator's and the weights') does not scale with the series, and is
  inside the RSS figure above.

--aif: ``mask`` (the given AIF mask, default), ``region`` (that mask dilated twice as an AIF search region,
``aif_region=True``: a box around the artery holding tissue too) or ``auto`` (no AIF mask, ``aif_auto=True``).
With ``auto``, scikit-learn's k-means is imported with the other imports (its modules are ~45 MiB of Python
objects, not data; its import is reported apart, as torch's).

--repeats N measures every cell N times (fresh processes each); --kept-only leaves out the consume_input
cells; --case DIR keeps the written case in DIR (made there once, reused by later runs).

usage:  python scripts/benchmark_dce_rls_memory.py [--slices all] [--rls auto] [--aif mask] [--repeats 1]
        [--kept-only] [--case DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _torch_first_use(case: Path) -> dict:
    from benchmark_dce_floor import _rss_now

    import torch

    torch.set_num_threads(1)
    from BBBAnomalyLib.dce import DCEParameters, run_dce  # noqa: F401  (the imports of the RSS measure)
    from BBBAnomalyLib.core.memory import release_freed_memory
    from BBBAnomalyLib.dce import rls
    from BBBAnomalyLib.dce.rls_inference import inference_block, load_bundled

    import numpy as np

    info = json.loads((case / "case.json").read_text())
    rss0 = _rss_now()
    model, n_frames, _ = load_bundled(DCEParameters().rls_weights)
    x = np.zeros((inference_block(info["voxels"], DCEParameters().chunk_voxels), n_frames + rls.BOX_ENTRIES), np.float32)
    x_hat = rls.reconstruct(model, x)
    block_mib = (x.nbytes + x_hat.nbytes) / 2**20
    del x, x_hat
    release_freed_memory()
    return {"measure": "torch first use", "block_rows": inference_block(info["voxels"], DCEParameters().chunk_voxels),
            "block_mib": block_mib, "resident_after_mib": (_rss_now() - rss0) / 2**20}


def _child(case: Path, measure: str, consume: bool, rls: str, aif: str = "mask") -> dict:
    from benchmark_dce_floor import _inputs, _peak_rss, _rss_now

    if measure == "torch":
        return _torch_first_use(case)

    rss_start = _rss_now()
    import torch

    torch.set_num_threads(1)
    rss_torch = _rss_now()
    from BBBAnomalyLib.dce import DCEParameters, run_dce

    rss_sklearn = _rss_now()
    if aif == "auto":
        import sklearn.cluster  # noqa: F401  (the automatic AIF's k-means: an import, not data)
    rss0 = _rss_now()
    tracing = measure == "tracemalloc"
    if tracing:
        import tracemalloc

        tracemalloc.start()
    info, series, masks, t10 = _inputs(case)
    series_bytes = series.data.size * 4
    if tracing:  # the uncompressed NIfTI is memory-mapped (not a traced array): an F-ordered float32 copy in
        # memory, as a .nii.gz gives it (Testing/test_dce_memory.py measures the same way)
        import numpy as np

        series.data = np.array(series.data, dtype=np.float32, order="F")
    aif_mask, settings = masks["aif"], {}
    if aif == "region":
        from scipy import ndimage

        aif_mask, settings = ndimage.binary_dilation(masks["aif"], iterations=2), {"aif_region": True}
    elif aif == "auto":
        aif_mask, settings = None, {"aif_auto": True}
    params = DCEParameters(rls=rls, flip_angle=info["flip"], tr=info["tr"], baseline_frames=6, **settings)
    if tracing:
        before, _ = tracemalloc.get_traced_memory()  # the series, masks and T10 map
        tracemalloc.reset_peak()
    result = run_dce(series, params, aif_mask=aif_mask, brain_mask=masks["brain"], tumor_mask=masks["tumor"],
                     t10_map=t10, consume_input=consume)
    with tempfile.TemporaryDirectory() as tmp:
        result.write(Path(tmp) / "out")
    out = {"rls_source": result.report.get("rls", {}).get("source"), "aif_source": result.report["aif"]["source"],
           "aif_voxels": result.report["aif"]["n_voxels"], "series_mib": series_bytes / 2**20,
           "torch_import_x_series": (rss_torch - rss_start) / series_bytes}
    if aif == "auto":
        out["sklearn_import_x_series"] = (rss0 - rss_sklearn) / series_bytes
    if tracing:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_x_series"] = (peak - before + series_bytes) / series_bytes
    else:
        peak = _peak_rss()
        out["peak_rss_x_series"] = peak / series_bytes
        out["peak_above_imports_x_series"] = (peak - rss0) / series_bytes
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", default="all")
    ap.add_argument("--rls", default="auto")
    ap.add_argument("--aif", default="mask", choices=("mask", "region", "auto"))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--kept-only", action="store_true", help="only the runs with the series kept")
    ap.add_argument("--case", help="folder holding the written case (made once, reused)")
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case, measure, consume = args.child.split(",")
        print("RESULT " + json.dumps(_child(Path(case), measure, consume == "1", args.rls, args.aif)))
        return 0
    from benchmark_dce_floor import make_case

    print(f"load average at start: {os.getloadavg()}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(args.case) if args.case else Path(tmp)
        if (case / "case.json").exists():
            info = json.loads((case / "case.json").read_text())
        else:
            case.mkdir(parents=True, exist_ok=True)
            info = make_case(case, "all" if args.slices == "all" else int(args.slices))
        print(f"input: {info['voxels']} brain voxels x {info['frames']} frames; rls={args.rls}, aif={args.aif}")
        for consume in (0,) if args.kept_only else (0, 1):
            for measure in ("tracemalloc", "rss"):
                for repeat in range(args.repeats):
                    proc = subprocess.run([sys.executable, __file__, "--rls", args.rls, "--aif", args.aif, "--child",
                                           f"{case},{measure},{consume}"], capture_output=True, text=True, check=True)
                    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
                    res["load_1min"] = os.getloadavg()[0]
                    key = f"{measure}, consume_input={bool(consume)}" + (f", run {repeat + 1}" if args.repeats > 1 else "")
                    rows[key] = res
                    print(f"{measure:<12} consume_input={bool(consume)!s:<6} {json.dumps(res)}", flush=True)
        if args.rls != "none":
            proc = subprocess.run([sys.executable, __file__, "--child", f"{case},torch,0"], capture_output=True,
                                  text=True, check=True)
            res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
            rows["torch first use"] = res
            print(f"torch first use: {json.dumps(res)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
  before torch).

usage:  python scripts/benchmark_dce_rls_memory.py [--slices all] [--rls auto] [--json out.json]
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


def _child(case: Path, measure: str, consume: bool, rls: str) -> dict:
    from benchmark_dce_floor import _inputs, _peak_rss, _rss_now

    rss_start = _rss_now()
    import torch

    torch.set_num_threads(1)
    rss_torch = _rss_now()
    from BBBAnomalyLib.dce import DCEParameters, run_dce

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
    params = DCEParameters(rls=rls, flip_angle=info["flip"], tr=info["tr"], baseline_frames=6)
    if tracing:
        before, _ = tracemalloc.get_traced_memory()  # the series, masks and T10 map
        tracemalloc.reset_peak()
    result = run_dce(series, params, aif_mask=masks["aif"], brain_mask=masks["brain"], tumor_mask=masks["tumor"],
                     t10_map=t10, consume_input=consume)
    with tempfile.TemporaryDirectory() as tmp:
        result.write(Path(tmp) / "out")
    out = {"rls_source": result.report.get("rls", {}).get("source"), "series_mib": series_bytes / 2**20,
           "torch_import_x_series": (rss_torch - rss_start) / series_bytes}
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
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case, measure, consume = args.child.split(",")
        print("RESULT " + json.dumps(_child(Path(case), measure, consume == "1", args.rls)))
        return 0
    from benchmark_dce_floor import make_case

    print(f"load average at start: {os.getloadavg()}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        info = make_case(Path(tmp), "all" if args.slices == "all" else int(args.slices))
        print(f"input: {info['voxels']} brain voxels x {info['frames']} frames; rls={args.rls}")
        for consume in (0, 1):
            for measure in ("tracemalloc", "rss"):
                proc = subprocess.run([sys.executable, __file__, "--rls", args.rls, "--child",
                                       f"{tmp},{measure},{consume}"], capture_output=True, text=True, check=True)
                res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
                res["load_1min"] = os.getloadavg()[0]
                rows[f"{measure}, consume_input={bool(consume)}"] = res
                print(f"{measure:<12} consume_input={bool(consume)!s:<6} {json.dumps(res)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

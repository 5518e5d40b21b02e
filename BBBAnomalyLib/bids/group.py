"""`bbbanomaly bids BIDS_DIR OUT_DIR group`: one cohort table of ROI ratios from the participants' runs.

Reads every ``sub-*/[ses-*/]<datatype>/*_roistats.json`` that `participant` wrote (tumor vs NAWM, or
vs the analysed brain outside the tumor when no NAWM mask was given) and writes one row per
participant, session, run and map to ``<root>/group/roi_ratios.tsv`` (or ``.csv``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..core.errors import InputError
from .derivatives import write_text_atomic

COLUMNS = ["participant_id", "session_id", "pipeline", "desc", "source", "map", "roi", "reference",
           "roi_mean", "reference_mean", "ratio_mean", "roi_median", "reference_median", "ratio_median",
           "roi_n_voxels", "reference_n_voxels"]


def cohort_rows(root: Path, labels: list[str] | None = None) -> list[dict]:
    rows = []
    for path in sorted(root.glob("sub-*/**/*_roistats.json")):
        participant = path.relative_to(root).parts[0]
        if labels and participant[4:] not in labels:
            continue
        stats = json.loads(path.read_text(encoding="utf-8"))
        entities = dict(p.split("-", 1) for p in path.name.split("_")[:-1] if "-" in p)
        roi, ref = stats["roi"], stats["reference"]
        for name, entry in stats["maps"].items():
            rows.append({
                "participant_id": participant, "session_id": f"ses-{entities['ses']}" if "ses" in entities else "n/a",
                "pipeline": stats.get("pipeline", ""), "desc": entities.get("desc", ""),
                "source": stats.get("source", ""), "map": name, "roi": roi, "reference": ref,
                "roi_mean": entry[roi]["mean"], "reference_mean": entry[ref]["mean"],
                "ratio_mean": entry.get("ratio_mean"), "roi_median": entry[roi]["median"],
                "reference_median": entry[ref]["median"], "ratio_median": entry.get("ratio_median"),
                "roi_n_voxels": entry[roi]["n_voxels"], "reference_n_voxels": entry[ref]["n_voxels"]})
    return rows


def write_table(root: Path, labels: list[str] | None = None, fmt: str = "tsv") -> tuple[Path, list[dict]]:
    if not (root / "dataset_description.json").is_file():
        raise InputError(f"no BBBAnomaly derivatives in '{root}'; run `bbbanomaly bids BIDS_DIR OUT_DIR participant` first")
    rows = cohort_rows(root, labels)
    if not rows:
        raise InputError(f"no ROI statistics under '{root}': participants need a tumor mask (--masks DIR with "
                         "*_label-tumor_mask) for ROI ratios")
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("n/a" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    out = root / "group" / f"roi_ratios.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text.getvalue())
    return out, rows

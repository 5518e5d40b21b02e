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
from .derivatives import check_description, check_folder, check_own_file, write_own_file

COLUMNS = ["participant_id", "session_id", "pipeline", "desc", "source", "map", "roi", "reference",
           "roi_mean", "reference_mean", "ratio_mean", "roi_median", "reference_median", "ratio_median",
           "roi_n_voxels", "reference_n_voxels"]


def cohort_rows(root: Path, labels: list[str] | None = None) -> list[dict]:
    rows = []
    for path in sorted(root.glob("sub-*/**/*_roistats.json")):
        participant = path.relative_to(root).parts[0]
        if labels and participant[4:] not in labels:
            continue
        try:
            rows.extend(_rows(path, participant))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise InputError(f"{path} is not ROI statistics as `bbbanomaly bids` writes them ({type(exc).__name__}: "
                             f"{exc})".splitlines()[0] + f"; move it out of {root} or rerun {participant} with "
                             "--overwrite") from None
    return rows


def _rows(path: Path, participant: str) -> list[dict]:
    rows = []
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


#: what else a user can do when the cohort table's name is taken (group reads OUT_DIR: it cannot move)
_OTHER = ""


def is_table(text: str, fmt: str) -> bool:
    """True when ``text`` is a cohort table exactly as :func:`write_table` writes it (``fmt`` tsv or csv)."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ","))
    except csv.Error:
        return False
    return (bool(rows) and rows[0] == COLUMNS and text.endswith("\n")
            and all(len(r) == len(COLUMNS) and r[0].startswith("sub-") for r in rows[1:]))


def check_table(root: Path, fmt: str = "tsv") -> Path:
    """Before the work: the cohort table's folder and file are absent or the app's own (see derivatives)."""
    check_folder(root / "group", "cohort table", other=_OTHER)
    out = root / "group" / f"roi_ratios.{fmt}"
    check_own_file(out, "cohort table", lambda text: is_table(text, fmt), _OTHER)
    return out


def write_table(root: Path, labels: list[str] | None = None, fmt: str = "tsv") -> tuple[Path, list[dict]]:
    if not (root / "dataset_description.json").is_file():
        raise InputError(f"no BBBAnomaly derivatives in '{root}'; run `bbbanomaly bids BIDS_DIR OUT_DIR participant` first")
    check_description(root)  # another dataset's folder is not ours to add a table to
    out = check_table(root, fmt)
    rows = cohort_rows(root, labels)
    if not rows:
        raise InputError(f"no ROI statistics under '{root}': participants need a tumor mask (--masks DIR with "
                         "*_label-tumor_mask) for ROI ratios")
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("n/a" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    check_folder(root / "group", "cohort table", other=_OTHER)
    write_own_file(out, text.getvalue(), "cohort table", lambda existing: is_table(existing, fmt), _OTHER)
    return out, rows

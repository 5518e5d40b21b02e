"""Writing BIDS derivatives: names, sidecars, dataset_description.json and the ROI ratios per run.

A pipeline writes its usual folder (``cbv.nii.gz``, ``aif.csv``, ``report.json`` ...); this module
renames every file into the participant's datatype folder:

    sub-<label>[_ses-<label>][_<source entities>]_desc-<method>_<map>.nii.gz   (+ .json sidecar)
    sub-<label>..._label-<name>_desc-<method>_mask.nii.gz                    (brain_mask, aif_mask ...)
    sub-<label>..._desc-<method>_report.json | _aif.tsv | _roistats.json | _curves.npz | _<figure>.png

<method> per pipeline: dsc -> the deconvolution (osvd, csvd, ssvd, tikhonov, phae); dce -> the
kinetic model (tofts, extendedtofts, patlak) and ``rls`` for the RLS maps; dmri -> the network
(recdisc, vae); t1flair -> ``cbsi`` (synthesis, tumor probability) and ``cae`` (anomaly). <map> is
the pipeline's map name without underscores (cbv_corrected -> cbvcorrected). The source's
``echo-`` entity is dropped for a dual-echo run, a ``desc-`` is replaced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.errors import InputError
from .layout import DATATYPE, Job

NAME = "BBBAnomaly"
BIDS_VERSION = "1.9.0"


def alnum(name: str) -> str:
    return "".join(ch for ch in name if ch.isalnum())


def method_label(job: Job, report: dict, map_name: str) -> str:
    params = report.get("parameters", {})
    if job.pipeline == "dsc":
        return alnum(str(params.get("method", "dsc")))
    if job.pipeline == "dce":
        return "rls" if map_name.startswith("rls") else alnum(str(params.get("model", "dce")))
    if job.pipeline == "dmri":
        return alnum(str(params.get("model", "dmri")))
    return "cae" if map_name == "anomaly" else "cbsi"


def prefix(job: Job) -> str:
    drop = {"desc"} | ({"echo"} if "second_echo" in job.options else set())
    return "_".join(f"{k}-{v}" for k, v in job.source.entities.items() if k not in drop)


def target_folder(participant_root: Path, job: Job) -> Path:
    folder = participant_root
    if job.session:
        folder = folder / f"ses-{job.session}"
    return folder / DATATYPE[job.pipeline]


def place_outputs(work: Path, participant_root: Path, job: Job, bids_dir: Path,
                  renamed: dict[str, Path] | None = None) -> tuple[dict[str, Path], str]:
    """Move a pipeline's output folder into BIDS names; returns ({map name: new path}, the run's method).

    ``renamed``, when given, is filled with {file name in ``work``: the file written for it}: every output the
    pipeline wrote (a map's own sidecar gives the new sidecar, aif.csv the _aif.tsv), so that what the pipeline
    printed about its folder can name the files where they are now."""
    renamed = {} if renamed is None else renamed
    report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    info = {**_map_info(job.pipeline), **_report_info(report)}
    dest = target_folder(participant_root, job)
    dest.mkdir(parents=True, exist_ok=True)
    pre = prefix(job)
    main_desc = method_label(job, report, "")
    sources = [f"bids:raw:{p.relative_to(bids_dir).as_posix()}" if _inside(p, bids_dir) else str(p)
               for p in job.sources]
    maps: dict[str, Path] = {}
    images = {_split(p.name)[0] for p in work.iterdir() if _split(p.name)[1] in (".nii.gz", ".nii", ".nrrd")}
    for path in sorted(work.iterdir()):
        name, ext = _split(path.name)
        if path.name.startswith("."):
            continue  # the pipeline folder's own manifest: the participant folder gets one
        if ext == ".json" and name in images:
            continue  # a map's own sidecar: merged into the new one below
        if ext in (".nii.gz", ".nii", ".nrrd"):
            if name.endswith("_mask") or name == "tumor_roi":
                label = name[: -len("_mask")] if name.endswith("_mask") else "tumorroi"
                new = dest / f"{pre}_label-{alnum(label)}_desc-{main_desc}_mask{ext}"
            else:
                new = dest / f"{pre}_desc-{method_label(job, report, name)}_{alnum(name)}{ext}"
                maps[name] = new
            shutil.move(str(path), new)
            renamed[path.name] = new
            side = _sidecar(work / f"{name}.json", info.get(name), sources, name)
            new_side = new.with_name(new.name[: -len(ext)] + ".json")
            new_side.write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")
            if (work / f"{name}.json").is_file():
                renamed[f"{name}.json"] = new_side
        elif path.name == "aif.csv":
            rows = [line.split(",") for line in path.read_text(encoding="utf-8").splitlines() if line]
            renamed[path.name] = dest / f"{pre}_desc-{main_desc}_aif.tsv"
            renamed[path.name].write_text("\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")
        elif path.is_file():
            renamed[path.name] = dest / f"{pre}_desc-{main_desc}_{alnum(name)}{ext}"
            shutil.move(str(path), renamed[path.name])
    return maps, main_desc


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _split(filename: str) -> tuple[str, str]:
    for ext in (".nii.gz", ".nii", ".nrrd"):
        if filename.endswith(ext):
            return filename[: -len(ext)], ext
    stem, dot, ext = filename.rpartition(".")
    return (stem, "." + ext) if dot else (filename, "")


def _map_info(pipeline: str) -> dict:
    import importlib

    module = {"dsc": "dsc", "dce": "dce", "dmri": "dmri", "t1flair": "structural"}[pipeline]
    return getattr(importlib.import_module(f"BBBAnomalyLib.{module}.pipeline"), "MAP_INFO", {})


def _report_info(report: dict) -> dict:
    """{map: (unit, description)} as the run's report gives them: the run knows what its parameters made of each
    map (a DSC run with density 1 is per 100 ml, a PHAE CBF is no residue maximum); the pipeline's table is the
    fallback."""
    maps = report.get("maps")
    out = {}
    for name, entry in (maps.items() if isinstance(maps, dict) else ()):
        if isinstance(entry, dict) and isinstance(entry.get("unit"), str) and isinstance(entry.get("description"), str):
            out[name] = (entry["unit"], entry["description"])
    return out


def _sidecar(own: Path, info, sources: list[str], name: str) -> dict:
    side = json.loads(own.read_text(encoding="utf-8")) if own.is_file() else {}
    side["Sources"] = sources
    if info:
        side["Units"], side["Description"] = info[0], info[1]
    else:
        side.setdefault("Description", name)
    return side


# --- dataset_description.json ---------------------------------------------------------------------
def dataset_description(bids_dir: Path) -> dict:
    from ..core.report import versions

    v = versions()
    packages = ", ".join(f"{k} {val}" for k, val in v.items() if val and k != "BBBAnomalyLib")
    return {
        "Name": "BBBAnomaly derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": NAME, "Version": __version__,
            "Description": ("blood-brain-barrier leakage, DSC/DCE perfusion and tissue-anomaly maps "
                            f"(`bbbanomaly bids ... participant`); software: {packages}"),
        }],
        "SourceDatasets": [{"URL": bids_dir.resolve().as_uri()}],
    }


def ensure_dataset_description(root: Path, bids_dir: Path) -> None:
    """Write <root>/dataset_description.json (atomically; safe from parallel tasks), refuse a foreign one.

    A description this app wrote and nobody edited is refreshed (the version and the source dataset of
    the latest run); one naming BBBAnomaly in GeneratedBy that the user edited (Authors, License, a DOI
    as source ...) is kept as it is: BIDS curators edit the description of a derivatives dataset, and
    losing that to a rerun would surprise them more than a GeneratedBy version of an earlier run.
    """
    path = root / "dataset_description.json"
    if check_description(root) == "edited":
        return
    write_own_file(path, json.dumps(dataset_description(bids_dir), indent=2) + "\n", "dataset_description.json",
                   _unedited_description)


def check_description(root: Path) -> str:
    """"absent", "ours" (written by this app, unedited: may be refreshed) or "edited" (ours, edited by the
    user: kept); InputError for another dataset's description, a link, a folder, unreadable bytes."""
    path = root / "dataset_description.json"
    text = read_existing(path, "dataset_description.json")
    if text is None:
        return "absent"
    if _unedited_description(text):
        return "ours"
    try:
        existing = json.loads(text)
        names = [g.get("Name") for g in existing.get("GeneratedBy", []) if isinstance(g, dict)]
    except (ValueError, AttributeError, TypeError, RecursionError):
        names = []
    if NAME not in names:
        raise InputError(f"'{root}' holds another dataset (its dataset_description.json was not written by "
                         f"{NAME}); choose another OUT_DIR")
    return "edited"


def _unedited_description(text: str) -> bool:
    """True when ``text`` is a dataset_description.json exactly as :func:`dataset_description` writes it
    (byte for byte), whatever the version, package list, BIDS version and local source folder it names."""
    try:
        existing = json.loads(text)
        generated, = existing["GeneratedBy"]
        source, = existing["SourceDatasets"]
        template = dataset_description(Path("/"))
        ours = template["GeneratedBy"][0]
        fixed = ours["Description"].partition("software: ")[0]
        if not (isinstance(generated["Version"], str) and isinstance(existing["BIDSVersion"], str)
                and str(generated["Description"]).startswith(fixed) and set(source) == {"URL"}
                and str(source["URL"]).startswith("file:")):
            return False
        template["BIDSVersion"] = existing["BIDSVersion"]
        template["SourceDatasets"] = [{"URL": source["URL"]}]
        ours["Version"], ours["Description"] = generated["Version"], generated["Description"]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return False
    return text == json.dumps(template, indent=2) + "\n"


# --- the app's own files beside the participants' folders -----------------------------------------
# Besides the sub-<label>/ folders (written complete-or-absent with a checksummed manifest, see
# core.outputs) the app writes four kinds of file in OUT_DIR/bbbanomaly/ that every later run rewrites:
# dataset_description.json, failures.tsv, logs/sub-<label>_status.json and group/roi_ratios.tsv|csv.
# Several processes write them at once (--n-jobs, a SLURM array task per participant), so they cannot
# share a record of checksums without a lock that a killed task on another node would leave behind.
# Instead each file is recognised as the app's by its content: it must be exactly what the app writes
# (the same columns or keys, the same layout, byte for byte). What a BIDS-app user expects: the app
# refreshes its own summary and status files on every run, and never replaces a file of theirs. Anything
# else under one of these names (their own table or notes, a symbolic link, a folder, binary bytes) is
# refused with one line before any participant runs, whatever --overwrite says (that flag is about the
# participants' folders); they move it away or choose another OUT_DIR. dataset_description.json is
# kept as it is when the user edited one that names BBBAnomaly (see ensure_dataset_description).
_MAX_OWN_FILE = 64 << 20  # a failures or cohort table of a large study is a few MB; beyond this, not ours


def check_folder(folder: Path, what: str, link_ok: bool = False, other: str = "choose another OUT_DIR") -> None:
    """A folder the app writes in (its logs/ and group/; OUT_DIR/bbbanomaly with ``link_ok``, where a
    link to another disk is the user's own setup): absent or a real folder."""
    if folder.is_symlink() and not link_ok:
        raise InputError(f"{folder} is a symbolic link; bbbanomaly writes its {what} there and never writes "
                         f"through a link: remove the link{_or(other)}")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder; bbbanomaly needs a folder there for its {what}: "
                         f"move that file away{_or(other)}")


def read_existing(path: Path, what: str, other: str = "choose another OUT_DIR") -> str | None:
    """The text of an existing file where the app writes ``what``; None when there is none. A symbolic
    link, a folder, a device or bytes that are not UTF-8 text are refused (one line)."""
    if path.parent.exists() and not path.parent.is_dir():
        check_folder(path.parent, what, other=other)
    if path.is_symlink():
        raise InputError(f"{path} is a symbolic link, not the {what} bbbanomaly wrote; it never replaces a link: "
                         f"remove the link{_or(other)}")
    if not path.exists():
        return None
    if not path.is_file():
        raise InputError(f"{path} is not a regular file, so not the {what} bbbanomaly wrote; move it "
                         f"away{_or(other)}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_OWN_FILE + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc}), so cannot tell whether bbbanomaly wrote "
                         f"it; make it readable or move it away{_or(other)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or len(data) > _MAX_OWN_FILE:
        raise InputError(not_ours(path, what, other))
    return text


def not_ours(path: Path, what: str, other: str = "choose another OUT_DIR") -> str:
    return (f"{path} was not written by bbbanomaly (it is not a {what} as bbbanomaly writes it) and is never "
            f"replaced: move it out of {path.parent} to keep it{_or(other)}")


def _or(other: str) -> str:
    return f", or {other}" if other else ""


def check_own_file(path: Path, what: str, is_ours, other: str = "choose another OUT_DIR") -> bool:
    """Before the work: True when ``path`` holds the app's own earlier ``what`` (``is_ours(text)``), False
    when there is no file; InputError for anything else."""
    text = read_existing(path, what, other)
    if text is None:
        return False
    if not is_ours(text):
        raise InputError(not_ours(path, what, other))
    return True


def write_own_file(path: Path, text: str, what: str, is_ours, other: str = "choose another OUT_DIR") -> Path:
    """Write ``text`` to ``path`` complete or not at all, replacing only the app's own earlier file
    (checked again just before: a user's file may have been put there while the participants ran)."""
    from ..core.output_file import write_output_file

    check_own_file(path, what, is_ours, other)
    # A file found there when it is linked into place (another task's: a SLURM array starts all at once, each
    # writing dataset_description.json) is replaced only when it is still the app's own; a user's file put there
    # since the check above is put back and the write refused.
    return write_output_file(path, text, overwrite=True, option=f"the {what}",
                             may_replace=lambda found: _is_own(found, is_ours))


def _is_own(path: Path, is_ours) -> bool:
    """True when the regular file ``path`` is the app's own (``is_ours`` of its text)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_OWN_FILE + 1)
        return len(data) <= _MAX_OWN_FILE and bool(is_ours(data.decode("utf-8")))
    except (OSError, UnicodeDecodeError):
        return False


# --- ROI ratios per run ---------------------------------------------------------------------------
def roi_ratios(maps: dict[str, Path], job: Job, dest_brain_mask: Path | None, caveats: dict | None = None) -> dict | None:
    """Tumor vs NAWM (else vs the analysed brain outside the tumor) statistics of every map, or None
    without a tumor mask. Written as *_roistats.json; `bids ... group` collects them. caveats: map name -> what the
    run's report says an ROI mean of it keeps (roistats.map_caveat), kept in the map's entry."""
    from ..io import read_mask, read_volume
    from ..roistats import roi_statistics

    tumor_path = job.masks.get("tumor")
    if not tumor_path or not maps:
        return None
    volumes = {name: read_volume(path) for name, path in maps.items()}
    volumes = {n: v for n, v in volumes.items() if not v.is_4d and np.issubdtype(v.data.dtype, np.floating)}
    if not volumes:
        return None
    grid = next(iter(volumes.values()))
    volumes = {n: v for n, v in volumes.items() if v.same_grid(grid)}
    tumor = read_mask(str(tumor_path), grid, "tumor mask")
    if job.masks.get("nawm"):
        reference, ref_name = read_mask(str(job.masks["nawm"]), grid, "nawm mask"), "nawm"
    elif dest_brain_mask is not None and dest_brain_mask.exists():
        reference, ref_name = read_mask(str(dest_brain_mask), grid, "brain mask") & ~tumor, "brain_outside_tumor"
    else:
        return None
    stats = roi_statistics(volumes, tumor, reference, "tumor", ref_name, caveats=caveats)
    stats["source"] = job.source.path.name
    stats["pipeline"] = job.pipeline
    return stats

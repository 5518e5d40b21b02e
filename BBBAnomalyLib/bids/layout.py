"""Reading a BIDS dataset: file names, entities, sidecar inheritance and what each pipeline can run on.

Recognised (``.nii`` or ``.nii.gz``; ``sub-<label>/[ses-<label>/]<datatype>/``):

========  ==========================================  =============================================
pipeline  files                                       metadata used
========  ==========================================  =============================================
dsc       ``perf/`` or ``anat/`` ``*_dsc``; two files  EchoTime (-> --te; both echoes for dual echo),
          differing only in ``echo-1``/``echo-2`` are  VolumeTiming / FrameTimesStart (frame times)
          one dual-echo run (--second-echo)
dce       ``perf/`` or ``anat/`` ``*_dce``; a          FlipAngle, RepetitionTimeExcitation (else
          ``anat/*_T1map`` of the same subject and     RepetitionTime) -> --flip-angle, --tr;
          session is its T10 map (--t10), else an      VolumeTiming / FrameTimesStart; the VFA
          ``anat/*_flip-<i>_VFA`` collection (--vfa)   files' FlipAngle and TR -> --vfa-flip-angles,
                                                       --vfa-tr
dmri      ``dwi/*_dwi`` with ``.bval``/``.bvec``       the FSL gradient files (inherited ones too)
t1flair   ``anat/*_T1w`` without a ``ce-`` entity and  --
          ``anat/*_FLAIR``, paired by their entities
          (acq/ce/rec ignored; one of each always pairs)
========  ==========================================  =============================================

Sidecars follow the BIDS inheritance principle: every ``.json`` from the dataset root down to the
image's folder whose entities are a subset of the image's and whose suffix matches applies, the
closer one winning. RepetitionTime is never read as the frame interval (for a 3D SPGR DCE it is the
excitation TR); frame times come from VolumeTiming/FrameTimesStart, else from the NIfTI header.

Masks (optional, ``--masks DIR``, a derivatives dataset): ``sub-<label>/[ses-<label>/]<datatype>/
*_label-<name>_mask.nii[.gz]`` in the same datatype folder as the image, whose other entities
(except ``desc`` and ``space``) all equal the image's. Names: ``tumor`` -> --tumor-mask, ``nawm`` ->
--nawm-mask, ``brain`` -> --mask, ``aif`` -> --aif-mask (where the pipeline takes it). The tumor and
NAWM masks also give every run's ROI ratios (the NAWM mask even where the pipeline does not take it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import InputError

PIPELINES = ("dsc", "dce", "dmri", "t1flair")
#: output datatype folder per pipeline
DATATYPE = {"dsc": "perf", "dce": "perf", "dmri": "dwi", "t1flair": "anat"}
#: mask label -> the command's option (per pipeline, only the masks it takes)
MASK_OPTIONS = {
    "dsc": {"tumor": "tumor_mask", "nawm": "nawm_mask", "brain": "mask", "aif": "aif_mask"},
    "dce": {"tumor": "tumor_mask", "brain": "mask", "aif": "aif_mask"},
    "dmri": {"tumor": "tumor_mask", "nawm": "nawm_mask", "brain": "mask"},
    "t1flair": {"tumor": "tumor_mask", "brain": "mask"},
}
_NAME = re.compile(r"^(?P<entities>sub-[A-Za-z0-9]+(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*)_(?P<suffix>[A-Za-z0-9]+)"
                   r"(?P<ext>\.nii\.gz|\.nii|\.json|\.bval|\.bvec)$")
_SIDECAR = re.compile(r"^(?P<entities>(?:[A-Za-z0-9]+-[A-Za-z0-9]+_)*)(?P<suffix>[A-Za-z0-9]+)\.(?P<ext>json|bval|bvec)$")


@dataclass(frozen=True)
class BIDSFile:
    path: Path
    entities: dict  # ordered as in the name: {"sub": "01", "ses": "pre", "acq": "gre", ...}
    suffix: str
    datatype: str

    @property
    def subject(self) -> str:
        return self.entities["sub"]

    @property
    def session(self) -> str | None:
        return self.entities.get("ses")


def parse_name(path: Path) -> BIDSFile | None:
    """A BIDS image file name -> BIDSFile, or None when the name is not BIDS."""
    m = _NAME.match(path.name)
    if not m or m["ext"] not in (".nii", ".nii.gz"):
        return None
    entities = dict(pair.split("-", 1) for pair in m["entities"].split("_"))
    return BIDSFile(path, entities, m["suffix"], path.parent.name)


def label_of(value: str, kind: str = "participant") -> str:
    """'sub-01' or '01' -> '01' (BIDS labels are alphanumeric)."""
    label = value[4:] if value.startswith(("sub-", "ses-")) else value
    if not re.fullmatch(r"[A-Za-z0-9]+", label):
        raise InputError(f"{kind} label {value!r} is not a BIDS label (letters and digits only, e.g. 01 or sub-01)")
    return label


def check_dataset(bids_dir: Path) -> Path:
    try:
        bids_dir = Path(bids_dir).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a symbolic-link loop
        raise InputError(f"BIDS folder {str(bids_dir)!r} cannot be used ({getattr(exc, 'strerror', None) or exc}); "
                         "give the dataset's root folder") from None
    if not bids_dir.is_dir():
        raise InputError(f"BIDS folder '{bids_dir}' not found; give the dataset's root folder")
    if not (bids_dir / "dataset_description.json").is_file():
        raise InputError(f"'{bids_dir}' has no dataset_description.json; give the root folder of a BIDS dataset")
    read_description(bids_dir)
    return bids_dir


#: a dataset_description.json is a few hundred bytes; one larger than this is not one
_MAX_DESCRIPTION = 1 << 20


def read_description(bids_dir: Path) -> dict:
    """The dataset's dataset_description.json as a dict; InputError (one line) when it cannot be read or is
    not a JSON object. No field is read from it today (the derivatives name the dataset by its folder), so
    wrong-typed or missing fields are tolerated; a field read in future must be checked here."""
    path = bids_dir / "dataset_description.json"
    fix = ('fix it: a JSON object such as {"Name": "my study", "BIDSVersion": "1.9.0"}, or give the root folder '
           "of another BIDS dataset")
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_DESCRIPTION + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc}); make it readable or give another BIDS "
                         "dataset") from None
    problem = None
    if len(data) > _MAX_DESCRIPTION:
        problem = f"is over {_MAX_DESCRIPTION >> 20} MB"
    else:
        try:
            description = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError:
            problem = "is not UTF-8 text"
        except ValueError as exc:
            where = f" (line {exc.lineno}, column {exc.colno}: {exc.msg})" if hasattr(exc, "lineno") else ""
            problem = f"is not valid JSON{where}"
        except RecursionError:
            problem = "is not valid JSON (nested too deeply)"
        else:
            if not isinstance(description, dict):
                kind = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(
                    type(description), "a number")
                problem = f"holds {kind} instead of a JSON object"
    if problem:
        raise InputError(f"'{bids_dir}' is not a valid BIDS dataset: its dataset_description.json {problem}; {fix}")
    return description


def participants(bids_dir: Path, labels: list[str] | None = None) -> list[str]:
    """Participant labels: the given ones (checked to exist) or every sub-* folder, sorted."""
    found = sorted(p.name[4:] for p in bids_dir.glob("sub-*") if p.is_dir())
    if not labels:
        if not found:
            raise InputError(f"no sub-* folders in '{bids_dir}'")
        return found
    wanted = [label_of(v) for v in labels]
    missing = [w for w in wanted if w not in found]
    if missing:
        raise InputError(f"participant(s) {', '.join('sub-' + m for m in missing)} not in '{bids_dir}'; "
                         f"present: {', '.join('sub-' + f for f in found) or 'none'}")
    return list(dict.fromkeys(wanted))


def images(bids_dir: Path, label: str) -> list[BIDSFile]:
    """Every BIDS image of a participant, sessions included, sorted by path."""
    out = []
    for path in sorted((bids_dir / f"sub-{label}").rglob("*.nii*")):
        f = parse_name(path)
        if f is not None and f.subject == label:
            out.append(f)
    return out


# --- sidecar inheritance --------------------------------------------------------------------------
def inherited(bids_dir: Path, image: BIDSFile, ext: str) -> list[Path]:
    """Sidecar files of `image` with extension `ext` that apply, from the root down (closest last)."""
    folders = [bids_dir]
    rel = image.path.parent.relative_to(bids_dir)
    for part in rel.parts:
        folders.append(folders[-1] / part)
    out = []
    for folder in folders:
        level = []
        for cand in sorted(folder.glob(f"*.{ext}")):
            m = _SIDECAR.match(cand.name) if not cand.name.startswith("sub-") else _NAME.match(cand.name)
            if not m or m["suffix"] != image.suffix:
                continue
            pairs = [p for p in m["entities"].strip("_").split("_") if p]
            ents = dict(p.split("-", 1) for p in pairs)
            if all(image.entities.get(k) == v for k, v in ents.items()):
                level.append((len(ents), cand))
        out.extend(c for _, c in sorted(level))  # fewer entities first: the more specific one wins
    return out


def metadata(bids_dir: Path, image: BIDSFile) -> tuple[dict, dict]:
    """(merged sidecar, the image's own sidecar) following the inheritance principle."""
    merged, own = {}, {}
    own_path = image.path.with_name(image.path.name.split(".nii")[0] + ".json")
    for path in inherited(bids_dir, image, "json"):
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"sidecar '{path}' is not valid JSON ({exc}); fix it") from exc
        except RecursionError:  # nested thousands deep: no sidecar looks like that
            raise InputError(f"sidecar '{path}' is nested too deeply to be a sidecar; fix it") from None
        if not isinstance(d, dict):
            raise InputError(f"sidecar '{path}' must hold a JSON object")
        merged.update(d)
        if path == own_path:
            own = d
    return merged, own


# --- what to run ----------------------------------------------------------------------------------
@dataclass
class Job:
    """One pipeline run: the command's options (keys as in --config) and the BIDS files it reads."""

    pipeline: str
    source: BIDSFile  # the image whose entities name the outputs
    options: dict
    sources: list[Path] = field(default_factory=list)
    masks: dict = field(default_factory=dict)  # every matching mask by label (for ROI ratios too)

    @property
    def session(self) -> str | None:
        return self.source.session


def discover(bids_dir: Path, label: str, pipelines=PIPELINES, masks_dir: Path | None = None) -> list[Job]:
    """Every job of one participant for the requested pipelines (all sessions)."""
    files = images(bids_dir, label)
    jobs: list[Job] = []
    if "dsc" in pipelines:
        jobs += _dsc_jobs(bids_dir, [f for f in files if f.suffix == "dsc" and f.datatype in ("perf", "anat")])
    if "dce" in pipelines:
        t1maps = [f for f in files if f.suffix == "T1map" and f.datatype == "anat"]
        vfa = [f for f in files if f.suffix == "VFA" and f.datatype == "anat" and f.entities.get("part", "mag") == "mag"]
        for f in (f for f in files if f.suffix == "dce" and f.datatype in ("perf", "anat")):
            jobs.append(_dce_job(bids_dir, f, t1maps, vfa))
    if "dmri" in pipelines:
        for f in (f for f in files if f.suffix == "dwi" and f.datatype == "dwi"):
            jobs.append(_dwi_job(bids_dir, f))
    if "t1flair" in pipelines:
        jobs += _t1flair_jobs([f for f in files if f.datatype == "anat"])
    for job in jobs:
        _add_masks(job, masks_dir)
    return jobs


def _timing(bids_dir: Path, image: BIDSFile, options: dict) -> dict:
    merged, own = metadata(bids_dir, image)
    if not any(k in own for k in ("VolumeTiming", "FrameTimesStart")):  # the reader takes the own sidecar's
        for key in ("VolumeTiming", "FrameTimesStart"):
            if key in merged:
                times = np.asarray(merged[key], dtype=float).ravel()
                steps = np.diff(times)
                if times.size < 2 or np.any(steps <= 0) or np.ptp(steps) > 1e-6 * max(float(steps.mean()), 1e-9):
                    raise InputError(f"{image.path.name}: non-uniform {key} inherited from a higher-level sidecar; "
                                     "put the frame times in the image's own sidecar")
                options["frame_interval"] = float(steps.mean())
                break
    return merged


def _dsc_jobs(bids_dir: Path, dsc: list[BIDSFile]) -> list[Job]:
    groups: dict[tuple, list[BIDSFile]] = {}
    for f in dsc:
        key = (f.path.parent, tuple((k, v) for k, v in f.entities.items() if k != "echo"))
        groups.setdefault(key, []).append(f)
    jobs = []
    for members in groups.values():
        members.sort(key=lambda f: (int(f.entities["echo"]) if f.entities.get("echo", "").isdigit() else 0,
                                    f.entities.get("echo", "")))
        if len(members) > 2:
            raise InputError(f"{members[0].path.parent}: {len(members)} echoes of one DSC run; dual echo (2) is "
                             "the most supported")
        first = members[0]
        options = {"series": str(first.path)}
        te = []
        for m in members:
            merged = _timing(bids_dir, m, options)
            echo = merged.get("EchoTime")
            if isinstance(echo, (int, float)):
                te.append(float(echo))
        if len(members) == 2:
            options["second_echo"] = str(members[1].path)
        if len(te) == len(members):
            options["te"] = te
        jobs.append(Job("dsc", first, options, [m.path for m in members]))
    return jobs


def _dce_job(bids_dir: Path, f: BIDSFile, t1maps: list[BIDSFile], vfa: list[BIDSFile]) -> Job:
    options = {"series": str(f.path)}
    merged = _timing(bids_dir, f, options)
    if isinstance(merged.get("FlipAngle"), (int, float)):
        options["flip_angle"] = float(merged["FlipAngle"])
    tr = merged.get("RepetitionTimeExcitation", merged.get("RepetitionTime"))
    if isinstance(tr, (int, float)):
        options["tr"] = float(tr)
    sources = [f.path]
    same = [m for m in t1maps if m.session == f.session]
    if len(same) > 1:  # prefer the one sharing the DCE's acq/run
        same = [m for m in same if all(m.entities.get(k) == f.entities.get(k) for k in ("acq", "run"))] or same[:1]
    if same:
        options["t10"] = str(same[0].path)
        sources.append(same[0].path)
    else:
        _add_vfa(bids_dir, f, [m for m in vfa if m.session == f.session], options, sources)
    return Job("dce", f, options, sources)


def _add_vfa(bids_dir: Path, dce: BIDSFile, vfa: list[BIDSFile], options: dict, sources: list) -> None:
    """A qMRI VFA collection (``anat/*_flip-<i>_VFA``, one 3D file per flip angle) -> --vfa; FlipAngle and
    RepetitionTimeExcitation (else RepetitionTime) of each file's sidecars -> --vfa-flip-angles, --vfa-tr."""
    groups: dict[tuple, list[BIDSFile]] = {}
    for m in vfa:
        groups.setdefault(tuple((k, v) for k, v in m.entities.items() if k not in ("flip", "part")), []).append(m)
    if not groups:
        return
    if len(groups) > 1:  # several collections: the one sharing the DCE's acq/run, else refuse
        matching = [g for key, g in groups.items()
                    if all(dict(key).get(k) == dce.entities.get(k) for k in ("acq", "run"))]
        if len(matching) != 1:
            raise InputError(f"{dce.path.name}: {len(groups)} VFA collections and none (or several) sharing its "
                             "acq-/run-; keep one, or give a T10 with --pipeline-config dce=FILE (t10 key)")
        members = matching[0]
    else:
        members = next(iter(groups.values()))
    members.sort(key=lambda m: int(m.entities["flip"]) if m.entities.get("flip", "").isdigit() else 0)
    angles, trs = [], set()
    for m in members:
        merged, _ = metadata(bids_dir, m)
        if isinstance(merged.get("FlipAngle"), (int, float)):
            angles.append(float(merged["FlipAngle"]))
        tr = merged.get("RepetitionTimeExcitation", merged.get("RepetitionTime"))
        if isinstance(tr, (int, float)):
            trs.add(float(tr))
    options["vfa"] = [str(m.path) for m in members]
    if len(angles) == len(members):
        options["vfa_flip_angles"] = angles
    if len(trs) == 1:
        options["vfa_tr"] = trs.pop()
    sources.extend(m.path for m in members)


def _dwi_job(bids_dir: Path, f: BIDSFile) -> Job:
    options = {"dwi": str(f.path)}
    for ext in ("bval", "bvec"):
        found = inherited(bids_dir, f, ext)
        if not found:
            raise InputError(f"{f.path.name}: no .{ext} file (beside it or inherited); BIDS DWI needs bval and bvec")
        options[ext] = str(found[-1])
    return Job("dmri", f, options, [f.path])


def _t1flair_jobs(anat: list[BIDSFile]) -> list[Job]:
    t1s = [f for f in anat if f.suffix == "T1w" and "ce" not in f.entities]
    flairs = [f for f in anat if f.suffix == "FLAIR"]
    ignore = {"acq", "ce", "rec"}

    def key(f):
        return (f.session, tuple((k, v) for k, v in f.entities.items() if k not in ignore))

    jobs = []
    for session in dict.fromkeys(f.session for f in t1s):
        ts = [f for f in t1s if f.session == session]
        fs = [f for f in flairs if f.session == session]
        if len(ts) == 1 and len(fs) == 1:
            pairs = [(ts[0], fs[0])]
        else:
            pairs = [(t, next(f for f in fs if key(f) == key(t))) for t in ts if any(key(f) == key(t) for f in fs)]
        for t1, flair in pairs:
            jobs.append(Job("t1flair", t1, {"t1": str(t1.path), "flair": str(flair.path)}, [t1.path, flair.path]))
    return jobs


def _add_masks(job: Job, masks_dir: Path | None) -> None:
    if masks_dir is None:
        return
    src = job.source
    folder = Path(masks_dir) / f"sub-{src.subject}"
    if src.session:
        folder = folder / f"ses-{src.session}"
    folder = folder / src.datatype
    wanted = MASK_OPTIONS[job.pipeline]
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*_mask.nii*")):
        f = parse_name(path)
        if f is None or f.suffix != "mask" or f.entities.get("label") not in MASK_OPTIONS["dsc"]:
            continue
        others = {k: v for k, v in f.entities.items() if k not in ("label", "desc", "space")}
        if all(src.entities.get(k) == v for k, v in others.items()):
            label = f.entities["label"]
            if label in found:
                raise InputError(f"two {label} masks match {src.path.name} in {folder}: {found[label].name}, "
                                 f"{path.name}; add the image's entities (e.g. acq-, run-) to tell them apart")
            found[label] = path
    job.masks = dict(found)
    for label, path in found.items():
        if label in wanted:
            job.options[wanted[label]] = str(path)
            job.sources.append(path)

"""`bbbanomaly bids`: discovery from BIDS names and sidecars, derivatives, cohorts, failures."""

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from BBBAnomalyLib.bids.layout import discover, inherited, parse_name
from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.errors import InputError


def touch_nifti(path: Path, shape=(2, 2, 2)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))


def write_json(path: Path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


# --- discovery (names and sidecars only; no pipeline runs) ----------------------------------------
@pytest.fixture
def layout_dataset(tmp_path):
    root = tmp_path / "ds"
    write_json(root / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.9.0"})
    write_json(root / "dsc.json", {"EchoTime": 0.04, "VolumeTiming": [0, 1.5, 3.0, 4.5]})  # inherited
    write_json(root / "dce.json", {"FlipAngle": 12, "RepetitionTime": 0.004})
    (root / "dwi.bval").write_text("0 1000\n")
    (root / "dwi.bvec").write_text("0 1\n0 0\n0 0\n")
    s = root / "sub-01" / "ses-pre"
    touch_nifti(s / "perf" / "sub-01_ses-pre_echo-1_dsc.nii.gz")
    touch_nifti(s / "perf" / "sub-01_ses-pre_echo-2_dsc.nii.gz")
    write_json(s / "perf" / "sub-01_ses-pre_echo-1_dsc.json", {"EchoTime": 0.015})
    write_json(s / "perf" / "sub-01_ses-pre_echo-2_dsc.json", {"EchoTime": 0.045})
    touch_nifti(s / "perf" / "sub-01_ses-pre_acq-vibe_dce.nii.gz")
    write_json(s / "perf" / "sub-01_ses-pre_acq-vibe_dce.json", {"RepetitionTimeExcitation": 0.005})
    touch_nifti(s / "anat" / "sub-01_ses-pre_T1map.nii.gz")
    touch_nifti(s / "anat" / "sub-01_ses-pre_T1w.nii.gz")
    touch_nifti(s / "anat" / "sub-01_ses-pre_ce-gadolinium_T1w.nii.gz")  # contrast-enhanced: not an input
    touch_nifti(s / "anat" / "sub-01_ses-pre_FLAIR.nii.gz")
    touch_nifti(s / "dwi" / "sub-01_ses-pre_dwi.nii.gz")
    touch_nifti(root / "sub-01" / "ses-post" / "perf" / "sub-01_ses-post_dsc.nii.gz")
    touch_nifti(root / "sub-01" / "ses-post" / "perf" / "notbids_dsc.nii.gz")
    masks = tmp_path / "masks" / "sub-01" / "ses-pre" / "perf"
    touch_nifti(masks / "sub-01_ses-pre_label-tumor_mask.nii.gz")
    touch_nifti(masks / "sub-01_ses-pre_acq-vibe_label-aif_mask.nii.gz")  # only for the acq-vibe image
    touch_nifti(masks / "sub-01_ses-pre_label-nawm_desc-manual_mask.nii.gz")
    return root


def test_names_are_parsed_into_entities_and_suffix():
    f = parse_name(Path("/d/sub-01/ses-2/perf/sub-01_ses-2_acq-gre_run-3_echo-1_dsc.nii.gz"))
    assert f.entities == {"sub": "01", "ses": "2", "acq": "gre", "run": "3", "echo": "1"}
    assert (f.suffix, f.datatype, f.session) == ("dsc", "perf", "2")
    for bad in ("dsc.nii.gz", "sub-01_dsc.nii.gz.bak", "sub-01_ses_x_dsc.nii.gz", "sub-0 1_dsc.nii.gz"):
        assert parse_name(Path(bad)) is None


def test_discovery_reads_names_sidecars_inheritance_and_masks(layout_dataset, tmp_path):
    jobs = discover(layout_dataset, "01", masks_dir=tmp_path / "masks")
    by = {(j.pipeline, j.session): j for j in jobs}
    assert sorted(by) == [("dce", "pre"), ("dmri", "pre"), ("dsc", "post"), ("dsc", "pre"), ("t1flair", "pre")]
    dual = by["dsc", "pre"].options
    assert dual["series"].endswith("echo-1_dsc.nii.gz") and dual["second_echo"].endswith("echo-2_dsc.nii.gz")
    assert dual["te"] == [0.015, 0.045]  # the image's own sidecar beats the inherited dsc.json
    assert dual["frame_interval"] == 1.5  # uniform VolumeTiming inherited from the root
    assert dual["tumor_mask"].endswith("label-tumor_mask.nii.gz") and "aif_mask" not in dual  # acq-vibe mask only
    assert dual["nawm_mask"].endswith("label-nawm_desc-manual_mask.nii.gz")
    assert by["dsc", "post"].options["te"] == [0.04] and "tumor_mask" not in by["dsc", "post"].options
    dce = by["dce", "pre"].options
    assert dce["flip_angle"] == 12.0 and dce["tr"] == 0.005  # RepetitionTimeExcitation wins over RepetitionTime
    assert dce["t10"].endswith("_T1map.nii.gz") and dce["aif_mask"].endswith("acq-vibe_label-aif_mask.nii.gz")
    assert "frame_interval" not in dce  # RepetitionTime is never a frame interval
    assert "nawm_mask" not in dce and by["dce", "pre"].masks["nawm"].name.endswith("desc-manual_mask.nii.gz")
    t1f = by["t1flair", "pre"].options
    assert t1f["t1"].endswith("ses-pre_T1w.nii.gz") and "gadolinium" not in t1f["t1"]
    assert t1f["flair"].endswith("_FLAIR.nii.gz")
    dwi = by["dmri", "pre"].options
    assert dwi["bval"] == str(layout_dataset / "dwi.bval") and dwi["bvec"] == str(layout_dataset / "dwi.bvec")
    assert [j.pipeline for j in discover(layout_dataset, "01", ["dce"])] == ["dce"]


def test_a_vfa_collection_becomes_the_dce_t10_source_when_there_is_no_t1map(layout_dataset):
    anat = layout_dataset / "sub-01" / "ses-pre" / "anat"
    (anat / "sub-01_ses-pre_T1map.nii.gz").unlink()
    for index, angle in ((2, 15), (1, 3), (3, 25)):
        touch_nifti(anat / f"sub-01_ses-pre_flip-{index}_VFA.nii.gz")
        write_json(anat / f"sub-01_ses-pre_flip-{index}_VFA.json", {"FlipAngle": angle})
    write_json(layout_dataset / "VFA.json", {"RepetitionTimeExcitation": 0.0054})  # inherited
    touch_nifti(anat / "sub-01_ses-pre_flip-1_part-phase_VFA.nii.gz")  # phase images are not signal
    (dce,) = discover(layout_dataset, "01", ["dce"])
    assert [Path(p).name for p in dce.options["vfa"]] == [f"sub-01_ses-pre_flip-{i}_VFA.nii.gz" for i in (1, 2, 3)]
    assert dce.options["vfa_flip_angles"] == [3.0, 15.0, 25.0] and dce.options["vfa_tr"] == 0.0054
    assert "t10" not in dce.options


def test_inheritance_orders_from_root_to_image(layout_dataset):
    image = parse_name(layout_dataset / "sub-01/ses-pre/perf/sub-01_ses-pre_echo-1_dsc.nii.gz")
    found = inherited(layout_dataset, image, "json")
    assert [p.name for p in found] == ["dsc.json", "sub-01_ses-pre_echo-1_dsc.json"]


def test_non_uniform_inherited_timing_and_missing_bval_are_one_line_errors(layout_dataset):
    write_json(layout_dataset / "dsc.json", {"VolumeTiming": [0, 1, 3, 4]})
    with pytest.raises(InputError, match="non-uniform VolumeTiming"):
        discover(layout_dataset, "01", ["dsc"])
    (layout_dataset / "dwi.bvec").unlink()
    with pytest.raises(InputError, match="no .bvec"):
        discover(layout_dataset, "01", ["dmri"])


# --- running a small cohort -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three participants from the DSC and DCE reference objects (3 slices, noiseless): sub-01 has
    two sessions, sub-03's DSC is 3D (fails), masks in a derivatives dataset."""
    from BBBAnomalyLib.phantoms.dce import make_dce_phantom
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    root = tmp_path_factory.mktemp("cohort") / "study"
    dsc = make_dsc_phantom(slices=3, snr=None)
    dce = make_dce_phantom(slices=3, snr=None, duration=150)
    assert np.allclose(dsc.signal.affine, dce.signal.affine)
    write_json(root / "dataset_description.json", {"Name": "cohort", "BIDSVersion": "1.9.0"})
    write_json(root / "dsc.json", {"EchoTime": dsc.params.te})
    write_json(root / "dce.json", {"FlipAngle": 15.0, "RepetitionTimeExcitation": 0.005})

    def save(volume_data, affine, path, dt):
        path.parent.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(volume_data.astype(np.float32), affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = dt
        nib.save(img, str(path))

    for sub, ses in (("01", "a"), ("01", "b"), ("02", None), ("03", None)):
        folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "perf"
        name = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
        data = dsc.signal.data[..., 0] if sub == "03" else dsc.signal.data
        save(data, dsc.signal.affine, folder / f"{name}_dsc.nii.gz", dsc.params.frame_interval)
        save(dce.signal.data, dce.signal.affine, folder / f"{name}_dce.nii.gz", dce.params.frame_interval)
        masks = root / "derivatives" / "masks" / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "perf"
        for label in ("tumor", "nawm", "aif"):
            save(dsc.masks[label].astype(np.uint8), dsc.signal.affine, masks / f"{name}_label-{label}_mask.nii.gz", 0)
    write_json(root / "derivatives" / "masks" / "dataset_description.json",
               {"Name": "masks", "BIDSVersion": "1.9.0", "DatasetType": "derivative"})
    (root.parent / "dce.json").write_text(json.dumps({"rls": "none", "max_delay": 0.0}))
    return root


#: $BBBANOMALY_THREADS before any run of this module (a --n-jobs run sets it for its children only)
_THREADS_AT_IMPORT = __import__("os").environ.get("BBBANOMALY_THREADS")


def tree_digest(folder: Path, skip: str | None = None) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not (skip and skip in p.parts)}


@pytest.fixture(scope="module")
def cohort_run(cohort):
    before = tree_digest(cohort, skip="derivatives")
    rc = main(["bids", str(cohort), str(cohort / "derivatives"), "participant", "--pipelines", "dsc,dce",
               "--masks", str(cohort / "derivatives" / "masks"), "--pipeline-config", f"dce={cohort.parent / 'dce.json'}",
               "--n-jobs", "2"])
    return rc, before


def test_participants_run_in_parallel_and_a_failure_does_not_stop_the_others(cohort, cohort_run, capsys):
    rc, before = cohort_run
    assert rc == 1  # sub-03 failed
    out = cohort / "derivatives" / "bbbanomaly"
    assert (out / "sub-01").is_dir() and (out / "sub-02").is_dir()
    assert not (out / "sub-03").exists()  # complete or absent
    assert not list(out.glob(".sub-*"))  # no partial folders or locks left
    rows = (out / "failures.tsv").read_text().splitlines()
    assert rows[0] == "participant_id\tpipeline\terror" and len(rows) == 2
    assert rows[1].startswith("sub-03\tdsc\t") and "4D" in rows[1]
    assert tree_digest(cohort, skip="derivatives") == before  # the raw dataset is untouched


def test_derivatives_have_bids_names_sidecars_and_a_description(cohort, cohort_run):
    out = cohort / "derivatives" / "bbbanomaly"
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "BBBAnomaly"
    assert "numpy" in desc["GeneratedBy"][0]["Description"] and "CodeURL" not in desc["GeneratedBy"][0]
    perf = out / "sub-01" / "ses-a" / "perf"
    names = {p.name for p in perf.iterdir()}
    for expected in ("sub-01_ses-a_desc-osvd_cbv.nii.gz", "sub-01_ses-a_desc-osvd_cbvcorrected.nii.gz",
                     "sub-01_ses-a_desc-osvd_cbv.json", "sub-01_ses-a_desc-osvd_report.json",
                     "sub-01_ses-a_desc-osvd_aif.tsv", "sub-01_ses-a_label-brain_desc-osvd_mask.nii.gz",
                     "sub-01_ses-a_desc-extendedtofts_ktrans.nii.gz", "sub-01_ses-a_desc-osvd_roistats.json"):
        assert expected in names
    assert (out / "sub-01" / "ses-b" / "perf" / "sub-01_ses-b_desc-osvd_cbv.nii.gz").is_file()
    side = json.loads((perf / "sub-01_ses-a_desc-osvd_cbv.json").read_text())
    assert side["Sources"][0] == "bids:raw:sub-01/ses-a/perf/sub-01_ses-a_dsc.nii.gz" and side["Units"]
    cbv = nib.load(perf / "sub-01_ses-a_desc-osvd_cbv.nii.gz")
    assert np.allclose(cbv.affine, nib.load(cohort / "sub-01/ses-a/perf/sub-01_ses-a_dsc.nii.gz").affine)
    report = json.loads((perf / "sub-01_ses-a_desc-osvd_report.json").read_text())
    assert report["configuration"]["options"]["te"] == [0.03]  # from the inherited dsc.json
    assert report["configuration"]["options"]["aif_mask"].endswith("sub-01_ses-a_label-aif_mask.nii.gz")
    dce_report = json.loads((perf / "sub-01_ses-a_desc-extendedtofts_report.json").read_text())
    assert dce_report["configuration"]["options"]["rls"] == "none"  # from --pipeline-config


def test_each_participant_process_used_its_share_of_the_cores(cohort, cohort_run):
    """--n-jobs 2: each participant's process ran its pools on cores // 2 threads (at most 4), unless the user had
    set $BBBANOMALY_THREADS; the parent's environment is left as it was."""
    import os

    from BBBAnomalyLib.core.devices import THREADS_ENV

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = int(os.environ[THREADS_ENV]) if os.environ.get(THREADS_ENV) else max(1, cpus // 2)
    assert os.environ.get(THREADS_ENV) == _THREADS_AT_IMPORT  # the run restored the parent's environment
    perf = cohort / "derivatives" / "bbbanomaly" / "sub-01" / "ses-a" / "perf"
    for name in ("sub-01_ses-a_desc-osvd_report.json", "sub-01_ses-a_desc-extendedtofts_report.json"):
        assert json.loads((perf / name).read_text())["threads"] == max(1, min(cpus, share, 4)), name
    if cpus >= 4 and not os.environ.get(THREADS_ENV):  # where halving shows: the parent itself is not held to it
        from BBBAnomalyLib.core.devices import block_workers

        assert block_workers() == min(cpus, 4)


def test_group_table_holds_the_roi_ratios_of_every_run(cohort, cohort_run, capsys):
    assert main(["bids", str(cohort), str(cohort / "derivatives"), "group", "--table-format", "csv"]) == 0
    table = cohort / "derivatives" / "bbbanomaly" / "group" / "roi_ratios.csv"
    lines = table.read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert {(r["participant_id"], r["session_id"]) for r in rows} == {("sub-01", "ses-a"), ("sub-01", "ses-b"),
                                                                      ("sub-02", "n/a")}
    cbv = [r for r in rows if r["pipeline"] == "dsc" and r["map"] == "cbv"]
    assert len(cbv) == 3 and all(r["reference"] == "nawm" for r in cbv)
    # the table's ratio is the report's own tumor/NAWM CBV ratio (same masks, same maps)
    report = json.loads((cohort / "derivatives/bbbanomaly/sub-02/perf/sub-02_desc-osvd_report.json").read_text())
    ratio = float(next(r["ratio_mean"] for r in cbv if r["participant_id"] == "sub-02"))
    assert ratio == pytest.approx(report["summary"]["tumor_to_nawm"]["cbv"], rel=1e-5)
    assert ratio > 1.5  # the enhancing tumor's CBV is above NAWM's in the phantom
    assert {r["reference"] for r in rows if r["pipeline"] == "dce"} == {"nawm"}
    assert "1 participant(s) failed" in capsys.readouterr().out


def test_a_derivative_report_reruns_to_the_same_map(cohort, cohort_run, tmp_path):
    perf = cohort / "derivatives" / "bbbanomaly" / "sub-02" / "perf"
    assert main(["rerun", str(perf / "sub-02_desc-osvd_report.json"), "--out", str(tmp_path / "again"),
                 "--quiet"]) == 0
    a = np.asarray(nib.load(perf / "sub-02_desc-osvd_cbf.nii.gz").dataobj)
    b = np.asarray(nib.load(tmp_path / "again" / "cbf.nii.gz").dataobj)
    assert np.array_equal(a, b, equal_nan=True)


def test_existing_participants_are_kept_or_need_overwrite_and_one_can_be_selected(cohort, cohort_run, capsys):
    """A rerun over the dataset keeps a participant's complete results and does not call it failed (round 17's
    user audit: it was listed in failures.tsv, its results intact, with "choose another --out", an option bids
    lacks); a folder holding a user's file is refused with what to do; --overwrite computes again."""
    args = ["bids", str(cohort), str(cohort / "derivatives"), "participant", "--pipelines", "dsc",
            "--participant-label", "sub-02", "--masks", str(cohort / "derivatives" / "masks")]
    app = cohort / "derivatives" / "bbbanomaly"
    status_before = (app / "logs" / "sub-02_status.json").read_text()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sub-02: kept its results from an earlier run" in out and "1 kept from an earlier run, 0 failed" in out
    assert "sub-02" not in (app / "failures.tsv").read_text()
    assert (app / "logs" / "sub-02_status.json").read_text() == status_before
    notes = app / "sub-02" / "my_notes.txt"
    notes.write_text("the radiologist's notes")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "holds files bbbanomaly did not write" in err and "my_notes.txt" in err and "--out" not in err
    assert notes.read_text() == "the radiologist's notes"
    notes.unlink()
    assert main(args + ["--overwrite"]) == 0
    perf = cohort / "derivatives" / "bbbanomaly" / "sub-02" / "perf"
    assert not list(perf.glob("*extendedtofts*"))  # replaced as a whole: only what this run made
    assert "sub-03" in (cohort / "derivatives" / "bbbanomaly" / "failures.tsv").read_text()  # still failing


@pytest.mark.parametrize("extra, message", [
    (["--pipelines", "dsc,pet"], "choose from dsc, dce, dmri, t1flair"),
    (["--participant-label", "09"], "sub-09 not in"),
    (["--n-jobs", "0"], "at least 1"),
])
def test_bad_arguments_are_one_line_errors(cohort, extra, message, capsys):
    assert main(["bids", str(cohort), str(cohort.parent / "elsewhere"), "participant", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_output_inside_the_raw_dataset_is_refused(cohort, capsys):
    assert main(["bids", str(cohort), str(cohort / "sub-01"), "participant"]) == 2
    assert "inside the input dataset" in capsys.readouterr().err
    assert not (cohort / "sub-01" / "bbbanomaly").exists()


def test_pipeline_config_is_validated_and_may_not_set_inputs(cohort, tmp_path, capsys):
    bad = tmp_path / "dsc.json"
    for content, word in (({"series": "x.nii.gz"}, "set by `bbbanomaly bids`"), ({"methd": "csvd"}, "unknown key")):
        bad.write_text(json.dumps(content))
        assert main(["bids", str(cohort), str(tmp_path / "o"), "participant", "--pipeline-config",
                     f"dsc={bad}"]) == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_slurm_array_script_runs_the_task_s_participant(cohort, cohort_run, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("bash") is None or shutil.which("find") is None:
        pytest.skip("the SLURM example is a bash script")
    script = Path(__file__).resolve().parents[1] / "scripts" / "bids_slurm_array.sh"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "BBBANOMALY": f"{sys.executable} -m BBBAnomalyLib"}
    done = subprocess.run(["bash", str(script), str(cohort), str(tmp_path / "deriv"), "--pipelines", "dsc",
                           "--masks", str(cohort / "derivatives" / "masks")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sub-02: done" in done.stdout  # task 2 = the second sub-* folder
    assert sorted(p.name for p in (tmp_path / "deriv" / "bbbanomaly").glob("sub-*")) == ["sub-02"]


def test_dwi_and_t1flair_outputs_land_in_dwi_and_anat(tmp_path):
    """dwi/ (bval/bvec beside it) and anat/ T1w + FLAIR of one participant, from the dMRI and T1/FLAIR
    phantoms; the T1/FLAIR run is kept short through --pipeline-config (1 step, no autoencoder)."""
    import shutil

    from BBBAnomalyLib.io import write_volume
    from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom
    from BBBAnomalyLib.core.volume import Volume

    root = tmp_path / "ds"
    write_json(root / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.9.0"})
    dwi = make_dmri_phantom(seed=3, tumor=True, voxel_mm=4.0)
    dwi.write(tmp_path / "case")
    for ext in ("nii.gz", "bval", "bvec"):
        (root / "sub-01" / "dwi").mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "case" / f"dwi.{ext}", root / "sub-01" / "dwi" / f"sub-01_acq-b1000_dwi.{ext}")
    anat = make_structural_phantom(seed=1, enhancing=True)
    write_volume(anat.t1, root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    write_volume(anat.flair, root / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz")
    masks = tmp_path / "masks" / "sub-01"
    write_volume(Volume(anat.whole_tumor.astype(np.uint8), anat.t1.affine), masks / "anat" / "sub-01_label-tumor_mask.nii.gz")
    for label in ("tumor", "nawm"):
        write_volume(Volume(dwi.masks[label].astype(np.uint8), dwi.dwi.affine),
                     masks / "dwi" / f"sub-01_label-{label}_mask.nii.gz")
    (tmp_path / "t1flair.json").write_text(json.dumps({"steps": 1, "no_anomaly": True, "threads": 1}))
    assert main(["bids", str(root), str(tmp_path / "out"), "participant", "--pipelines", "dmri,t1flair",
                 "--masks", str(tmp_path / "masks"), "--pipeline-config", f"t1flair={tmp_path / 't1flair.json'}"]) == 0
    sub = tmp_path / "out" / "bbbanomaly" / "sub-01"
    dwi_names = {p.name for p in (sub / "dwi").iterdir()}
    assert {"sub-01_acq-b1000_desc-recdisc_anomaly.nii.gz", "sub-01_acq-b1000_label-anomaly_desc-recdisc_mask.nii.gz",
            "sub-01_acq-b1000_desc-recdisc_report.json", "sub-01_acq-b1000_desc-recdisc_roistats.json"} <= dwi_names
    stats = json.loads((sub / "dwi" / "sub-01_acq-b1000_desc-recdisc_roistats.json").read_text())
    assert stats["reference"] == "nawm" and stats["maps"]["anomaly"]["ratio_mean"] > 1  # the lesion scores higher
    anat_names = {p.name for p in (sub / "anat").iterdir()}
    assert {"sub-01_desc-cbsi_synthetict1gd.nii.gz", "sub-01_desc-cbsi_report.json",
            "sub-01_label-tumorroi_desc-cbsi_mask.nii.gz"} <= anat_names
    assert not any("cae" in n for n in anat_names)  # no_anomaly from the pipeline config
    report = json.loads((sub / "anat" / "sub-01_desc-cbsi_report.json").read_text())
    assert report["configuration"]["options"]["tumor_mask"].endswith("anat/sub-01_label-tumor_mask.nii.gz")


def test_a_participant_without_inputs_is_a_failure_line_not_a_crash(layout_dataset, tmp_path, capsys):
    touch_nifti(layout_dataset / "sub-02" / "anat" / "sub-02_T2w.nii.gz")  # nothing any pipeline reads
    out = layout_dataset / "derivatives"
    assert main(["bids", str(layout_dataset), str(out), "participant", "--participant-label", "02",
                 "--pipelines", "dsc"]) == 1
    assert "sub-02: FAILED" in capsys.readouterr().err
    rows = (out / "bbbanomaly" / "failures.tsv").read_text().splitlines()
    assert rows[1].startswith("sub-02\t") and "no input for dsc" in rows[1]
    assert not (out / "bbbanomaly" / "sub-02").exists()
    # below derivatives/ is still inside the dataset: refused (only derivatives/ itself is allowed)
    assert main(["bids", str(layout_dataset), str(out / "mine"), "participant"]) == 2
    assert "inside the input dataset" in capsys.readouterr().err

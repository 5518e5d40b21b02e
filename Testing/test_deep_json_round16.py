"""JSON nested thousands deep in a user's sidecar, NRRD field or model card: one clear line (exit 2) or a clean "not
ours", never a RecursionError (round 15's audit found it in the BIDS app's sidecars; the same parser read the others)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from BBBAnomalyLib.core.errors import InputError

from bad_input_helpers import dsc_signal, one_line_refusal, save_nifti

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on this, not ValueError


def test_the_deep_text_really_recurses():
    with pytest.raises(RecursionError):
        json.loads(DEEP)


def test_a_deep_nifti_sidecar_is_refused_in_one_line(tmp_path, capsys):
    data, te = dsc_signal()
    series = save_nifti(tmp_path / "dsc.nii.gz", data, dt=1.5, sidecar=DEEP)
    one_line_refusal(["dsc", str(series), "--out", str(tmp_path / "out"), "--quiet"], capsys,
                     "sidecar", "nested too deeply")
    assert not (tmp_path / "out").exists()


def test_a_deep_bids_sidecar_fails_its_participant_with_a_clear_line(tmp_path):
    from BBBAnomalyLib.bids.layout import images, metadata

    root = tmp_path / "ds"
    (root / "sub-01" / "perf").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    data, _ = dsc_signal()
    save_nifti(root / "sub-01" / "perf" / "sub-01_dsc.nii.gz", data, dt=1.5)
    (root / "sub-01" / "perf" / "sub-01_dsc.json").write_text(DEEP)
    image = next(i for i in images(root, "01") if i.path.name == "sub-01_dsc.nii.gz")
    with pytest.raises(InputError, match="nested too deeply"):
        metadata(root, image)


def test_a_deep_nrrd_acquisition_field_is_refused(tmp_path):
    from BBBAnomalyLib.io import nrrd

    with pytest.raises(InputError, match="nested too deeply"):
        nrrd._acquisition({nrrd.ACQ_KEY: DEEP}, Path("x.nrrd"))


def test_a_deep_model_card_is_refused_and_a_deep_training_card_is_not_ours(tmp_path):
    from BBBAnomalyLib import weights

    card = tmp_path / "m.json"
    card.write_text(DEEP)
    with pytest.raises(InputError, match="cannot be read"):
        weights._read_card_file(card, "the weights m")
    from BBBAnomalyLib import train_command

    pt = tmp_path / "m.pt"
    pt.write_bytes(b"weights")
    # a card next to weights is the training's own only if it is a JSON object naming their sha256: not this one
    assert train_command._card_of_weights(card, pt) is False

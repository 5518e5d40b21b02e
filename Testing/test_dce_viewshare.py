"""View-shared DCE (Siemens TWIST, GE DISCO, keyhole / Philips 4D-TRAK; session 24).

The object re-acquired with view sharing (BBBAnomalyLib/phantoms/dce_viewshare.py: numpy FFTs of each frame over the
phase-encode plane, the centre A kept per frame, the periphery B taken from the frames each subset was acquired in)
shows the silent error measured in scripts/validate_dce_viewshare.py: a drawn artery reads a blend of frames, its AIF
peaks low and the extended Tofts maps read vp high and ve low, while a population AIF (the tissue follows the
k-space centre) is barely moved. The header's names say view sharing (io/view_sharing.py) and the run warns where the
AIF is measured, or where the sharing is keyhole-type (dce/view_sharing.py); a series whose names say nothing gains
nothing. Small noiseless objects (2 slices) keep this file fast; the numbers the tests hold are far from their
limits (the sweep's sizes are in docs/reliability.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bad_input_helpers import dce_signal
from test_dce_header_dose import write_dicom

from BBBAnomalyLib.cli import main
from BBBAnomalyLib.core.volume import Acquisition, Volume
from BBBAnomalyLib.dce import view_sharing as dce_view_sharing
from BBBAnomalyLib.dce.parameters import DCEParameters
from BBBAnomalyLib.dce.pipeline import run_dce
from BBBAnomalyLib.io import read_dicom_series, view_sharing as io_view_sharing
from BBBAnomalyLib.io.sequence_type import EXTRA_KEY as SEQUENCE_KEY
from BBBAnomalyLib.phantoms.dce import make_dce_phantom
from BBBAnomalyLib.phantoms.dce_viewshare import (ViewSharing, sampling_regions, sharing_kernel, source_frames,
                                                  view_shared)

SMALL = {"slices": 2, "seed": 0, "duration": 180.0, "frame_interval": 4.0, "snr": None}
TWIST_DEEP = ViewSharing("twist", 0.1, 5)  # a small centre shared over 5 frames: the sweep's largest TWIST error


@pytest.fixture(scope="module")
def clean():
    return make_dce_phantom(**SMALL)


def _with_description(phantom, description: str):
    s = phantom.signal
    acq = Acquisition(repetition_time=s.acquisition.repetition_time, flip_angle=s.acquisition.flip_angle,
                      description=description, extra=dict(s.acquisition.extra))
    return Volume(s.data, s.affine, s.times, acq)


def _run(phantom, series, kind: str):
    params = DCEParameters(rls="none", population_aif="parker" if kind == "parker" else None)
    return run_dce(series, params, aif_mask=phantom.masks["aif"] if kind == "mask" else None,
                   brain_mask=phantom.masks["brain"], t10_map=Volume(phantom.truth["t10"].data, phantom.signal.affine))


# --- the acquisition ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme, fraction, subsets", [("twist", 0.2, 3), ("disco", 0.15, 4), ("keyhole", 0.1, 3)])
def test_the_sampling_pattern_has_its_centre_share_and_balanced_subsets_over_all_radii(scheme, fraction, subsets):
    labels = sampling_regions((60, 48), ViewSharing(scheme, fraction, subsets))
    assert abs((labels == -1).mean() - fraction) < 1.0 / labels.size + 1e-12
    kr = np.sqrt(np.add.outer(np.fft.fftfreq(60) ** 2, np.fft.fftfreq(48) ** 2))
    assert kr[labels == -1].max() <= kr[labels >= 0].min() + 1e-12  # A is the centre
    n = 1 if scheme == "keyhole" else subsets
    counts = np.bincount(labels[labels >= 0], minlength=n)
    assert counts.max() - counts.min() <= 1
    for j in range(n):  # every subset reaches the inner and the outer periphery
        assert kr[labels == j].min() < 0.05 + kr[labels >= 0].min() and kr[labels == j].max() > 0.9 * kr.max()


def test_twist_shares_backwards_and_disco_both_ways():
    twist = source_frames(7, ViewSharing("twist", 0.2, 3))
    disco = source_frames(7, ViewSharing("disco", 0.2, 3))
    # frame 4 acquired subset 1; TWIST takes subset 0 from frame 3 and subset 2 from frame 2 (both before it);
    # DISCO takes subset 0 from frame 3 and subset 2 from frame 5 (after it: the nearer on that side)
    assert twist[4].tolist() == [3, 4, 2] and disco[4].tolist() == [3, 4, 5]
    assert (twist <= np.maximum(np.arange(7)[:, None], 2)).all()  # never from the future once acquired
    assert np.allclose(sharing_kernel(7, ViewSharing("twist", 0.2, 3)).sum(1), 1.0)
    assert source_frames(5, ViewSharing("keyhole", 0.2)).ravel().tolist() == [4] * 5


def test_fully_sampled_without_noise_is_the_object_and_a_static_series_survives_sharing(clean):
    assert np.array_equal(view_shared(clean, None, snr=None).signal.data, clean.signal.data)
    static = make_dce_phantom(**SMALL)
    static.signal.data[:] = clean.signal.data[..., :1]  # no contrast: every frame the same
    for sharing in (TWIST_DEEP, ViewSharing("disco", 0.15, 4), ViewSharing("keyhole", 0.2, phase_axes=(1, 2))):
        shared = view_shared(static, sharing, snr=None).signal.data
        assert np.abs(shared - static.signal.data).max() < 1e-3 * static.signal.data.max()  # FFT round-off only


def test_the_same_noise_draws_with_and_without_sharing_and_the_object_needs_no_noise_of_its_own(clean):
    a = view_shared(clean, None, snr=30.0, seed=3).signal.data
    b = view_shared(clean, ViewSharing("twist", 0.999, 2), snr=30.0, seed=3).signal.data  # A is all but one point
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
    with pytest.raises(ValueError, match="noiseless"):
        view_shared(make_dce_phantom(**{**SMALL, "snr": 40.0}), TWIST_DEEP)


def test_the_artery_reads_a_blend_of_frames_while_large_regions_follow_the_centre(clean):
    shared = view_shared(clean, TWIST_DEEP, snr=None).signal.data
    full = clean.signal.data

    def enhancement(data, mask):
        curve = data[mask].mean(0)
        return curve.max() - curve[:5].mean(), curve[-1] - curve[:5].mean()  # peak and last frame

    artery = enhancement(shared, clean.masks["aif"])[0] / enhancement(full, clean.masks["aif"])[0]
    brain = enhancement(shared, clean.masks["brain"])[0] / enhancement(full, clean.masks["brain"])[0]
    rim_late = enhancement(shared, clean.masks["enhancing"])[1] / enhancement(full, clean.masks["enhancing"])[1]
    # measured 0.71, 1.010 and 1.0003 (a small region's own first pass is blended too: NAWM's faint peak +13 %)
    assert artery < 0.8 and abs(brain - 1.0) < 0.03 and abs(rim_late - 1.0) < 0.01


# --- the silent error, and the run's warning -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(clean):
    """Fully sampled and TWIST-shared series (the same object), with the drawn artery and with Parker."""
    out = {}
    for label, sharing in (("full", None), ("twist", TWIST_DEEP)):
        ph = view_shared(clean, sharing, snr=None)
        series = _with_description(ph, "t1_twist_tra_dyn" if sharing else "t1_vibe_tra_dyn")
        for kind in ("mask", "parker"):
            out[label, kind] = _run(clean, series, kind)
    return out


def test_a_drawn_aif_on_a_view_shared_series_peaks_low_and_vp_reads_high(clean, runs):
    rim = clean.masks["enhancing"]
    full, shared = runs["full", "mask"], runs["twist", "mask"]
    assert shared.aif.max() < 0.8 * full.aif.max()  # measured 0.34x (noiseless, 2 slices, 4 s frames)
    assert shared.maps["vp"].data[rim].mean() > 1.2 * full.maps["vp"].data[rim].mean()  # measured 2.06x
    parker_full, parker_shared = runs["full", "parker"], runs["twist", "parker"]
    ratio = parker_shared.maps["ktrans"].data[rim].mean() / parker_full.maps["ktrans"].data[rim].mean()
    assert abs(ratio - 1.0) < 0.15  # the population AIF: the tissue follows the centre (measured +6.5 %)


def test_the_run_warns_where_the_header_says_view_sharing_and_the_aif_is_measured(runs):
    shared = runs["twist", "mask"].report
    assert shared["view_sharing"]["scheme"] == "twist" and shared["view_sharing"]["warned"]
    told = [w for w in shared["warnings"] if "view-shared" in w]
    assert len(told) == 1 and "Siemens TWIST" in told[0] and "t1_twist_tra_dyn" in told[0]
    assert "--population-aif parker" in told[0]


def test_a_population_aif_is_recorded_with_a_note_and_an_ordinary_series_gains_nothing(runs):
    parker = runs["twist", "parker"].report
    assert parker["view_sharing"]["warned"] is False and "note" in parker["view_sharing"]
    assert not [w for w in parker["warnings"] if "view-shared" in w]
    for kind in ("mask", "parker"):
        report = runs["full", kind].report
        assert "view_sharing" not in report and not [w for w in report["warnings"] if "view-shared" in w]


def test_keyhole_is_warned_even_with_a_population_aif():
    entry, warning = dce_view_sharing.assess({"scheme": "4d-trak", "sequence": "Philips 4D-TRAK",
                                              "matched": {"series_description": "4D-TRAK dyn"}}, "parker")
    assert entry["warned"] and "keyhole" in warning and "4D-TRAK dyn" in warning
    assert dce_view_sharing.assess(None, "mask") == (None, None)


# --- what the header says -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, scheme", [
    ("t1_twist_tra_dyn", "twist"), ("TWIST-VIBE DCE", "twist"), ("Ax DISCO+C", "disco"), ("DISCO_Star", "disco"),
    ("4D-TRAK perfusion", "4d-trak"), ("dyn 4DTRAK", "4d-trak"), ("T1 keyhole dyn", "keyhole"),
    ("TRICKS", "tricks"), ("DRKS dynamic", "drks"),
    ("t1_vibe_dyn", None), ("disconnected", None), ("twisted", None), ("*fl3d1r_t70", None), ("", None)])
def test_names_of_view_sharing_sequences_are_matched_as_words(text, scheme):
    record = io_view_sharing.classify_texts({"series_description": text})
    assert (record or {}).get("scheme") == scheme


def test_the_record_reads_the_description_and_the_sequence_names_and_reports_conflicts():
    acq = Acquisition(description="perfusion", extra={SEQUENCE_KEY: {"pulse_sequence_details": "%SiemensSeq%\\twist"}})
    assert io_view_sharing.detect(acq)["matched"] == {"pulse_sequence_details": "%SiemensSeq%\\twist"}
    both = io_view_sharing.detect(Acquisition(description="DISCO", extra={SEQUENCE_KEY: {"sequence_name": "twist"}}))
    assert both["scheme"] is None and set(both["conflict"]) == {"disco", "twist"}
    assert io_view_sharing.detect(Acquisition(description="t1_vibe")) is None
    given = {"scheme": "disco", "sequence": "GE DISCO", "matched": {}}
    assert io_view_sharing.detect(Acquisition(extra={"view_sharing": given})) is given


def test_a_dicom_series_description_reaches_the_record_and_siemens_flash_names_alone_do_not(tmp_path):
    twist = read_dicom_series(write_dicom(tmp_path / "twist", dce_signal(n_frames=8),
                                          {"0008|103e": "t1_twist_tra_dyn", "0018|0024": "*fl3d1"}))
    record = io_view_sharing.detect(twist.acquisition)
    assert record["scheme"] == "twist" and record["matched"] == {"series_description": "t1_twist_tra_dyn"}
    plain = read_dicom_series(write_dicom(tmp_path / "plain", dce_signal(n_frames=8),
                                          {"0008|103e": "t1_vibe_tra_dyn", "0018|0024": "*fl3d1"}))
    assert io_view_sharing.detect(plain.acquisition) is None


def test_the_command_line_reads_the_sidecars_series_description_and_warns(clean, tmp_path):
    ph = view_shared(clean, TWIST_DEEP, snr=None)
    ph.write(tmp_path / "case")
    sidecar = tmp_path / "case" / "signal.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "SeriesDescription": "t1_twist_tra_dyn"}))
    case, out = tmp_path / "case", tmp_path / "out"
    code = main(["dce", str(case / "signal.nii.gz"), "--mask", str(case / "mask_brain.nii.gz"), "--aif-mask",
                 str(case / "mask_aif.nii.gz"), "--t10", str(case / "truth_t10.nii.gz"), "--rls", "none",
                 "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["view_sharing"]["warned"] and any("Siemens TWIST" in w for w in report["warnings"])

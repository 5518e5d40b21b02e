"""Series that are not what DSC and DCE assume, and spin-echo DSC (session 23).

Before: an ASL (label/control) series and a BOLD series run as DSC with an arterial mask gave CBV maps with exit 0; a
flat series without any bolus too; a T1-weighted DCE series, a diffusion series and a series starting mid-bolus run as
DSC were refused for "too few pre-bolus frames, lower --skip-frames"; the DCE side read a DSC or diffusion series as
an enhancement (Ktrans maps of fit R² about 0 and -10). Nothing read which pulse sequence a series was: a spin-echo DSC
series was quantified as gradient echo without a word. Now each such series is refused in one line that names what it
looks like (BBBAnomalyLib/perfusion/series_kind.py), and spin-echo DSC is recorded and warned about (dsc/spin_echo.py).
"""

import json

import numpy as np
import pytest

from BBBAnomalyLib.core.errors import InputError
from BBBAnomalyLib.core.volume import Acquisition, Volume
from BBBAnomalyLib.dsc import DSCParameters, run_dsc
from BBBAnomalyLib.perfusion import series_kind
from BBBAnomalyLib.io import read_volume
from BBBAnomalyLib.io.sequence_type import classify
from BBBAnomalyLib.phantoms.dce import make_dce_phantom
from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom


@pytest.fixture(scope="module")
def dsc():
    return make_dsc_phantom(snr=50.0, slices=4, seed=1)


@pytest.fixture(scope="module")
def dce():
    return make_dce_phantom(snr=40.0, slices=4, seed=1)


def _static(dsc, frames, step, modulate, acquisition, seed=0, snr=50.0):
    """A series without contrast: the DSC object's pre-bolus image, frame t scaled by modulate(t), Rician noise."""
    rng = np.random.default_rng(seed)
    image = dsc.signal.data[..., 1:8].mean(axis=3).astype(np.float64)
    clean = np.stack([image * modulate(t) for t in range(frames)], axis=3)
    sigma = 1000.0 / snr
    noisy = np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))
    return Volume(noisy.astype(np.float32), dsc.signal.affine, np.arange(frames) * step, acquisition)


def _asl(dsc):  # label frames 1 % darker in GM, 0.4 % elsewhere in the brain; 4 s per image
    gm, brain = dsc.masks["gm"], dsc.masks["brain"]
    return _static(dsc, 60, 4.0, lambda t: 1.0 - (t % 2) * (0.01 * gm + 0.004 * (brain & ~gm)),
                   Acquisition(echo_time=0.012))


def _bold(dsc, change=0.02):  # 20 s off / 20 s on blocks, GM 2 % brighter when on; TR 2 s
    gm = dsc.masks["gm"]
    return _static(dsc, 100, 2.0, lambda t: 1.0 + change * gm * ((t * 2.0 // 20) % 2), Acquisition(echo_time=0.03))


def _dwi(dsc, bvals=True):  # 3 b=0 then 30 b=1000 s/mm² volumes
    b = np.r_[np.zeros(3), np.full(30, 1000.0)]
    adc = np.where(dsc.masks["csf"], 3e-3, 0.8e-3)
    acquisition = Acquisition(echo_time=0.08, bvals=b if bvals else None,
                              bvecs=np.tile([1.0, 0.0, 0.0], (b.size, 1)) if bvals else None)
    return _static(dsc, b.size, 3.0, lambda t: np.exp(-b[t] * adc), acquisition, snr=30.0)


def _refused(series, aif_mask, *words):
    with pytest.raises(InputError) as error:
        run_dsc(series, DSCParameters(), aif_mask=aif_mask)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# --- DSC: series of another kind are refused, naming what they look like ---------------------------------------------
def test_an_asl_series_run_as_dsc_is_refused_as_asl(dsc):
    _refused(_asl(dsc), dsc.masks["aif"], "alternates frame by frame", "ASL")


def test_a_bold_series_run_as_dsc_is_refused_as_bold(dsc):
    _refused(_bold(dsc), dsc.masks["aif"], "5 separate times", "BOLD")


def test_a_series_without_any_bolus_is_refused(dsc):
    flat = _static(dsc, 100, 2.0, lambda t: 1.0, Acquisition(echo_time=0.03))
    _refused(flat, dsc.masks["aif"], "no contrast bolus found", "noise")


def test_a_dce_series_run_as_dsc_is_named_a_t1_weighted_series(dce):
    c = dce.signal
    series = Volume(c.data, c.affine, c.times, Acquisition(echo_time=0.0025, repetition_time=0.005, flip_angle=15))
    _refused(series, None, "rises instead of dropping", "bbbanomaly dce")


def test_a_diffusion_series_is_refused_by_its_b_values_and_without_them_by_its_shape(dsc):
    _refused(_dwi(dsc), None, "b-values", "diffusion", "bbbanomaly dmri")
    _refused(_dwi(dsc, bvals=False), None, "falls and does not come back", "diffusion")


def test_a_dsc_series_that_starts_mid_bolus_says_so(dsc):
    d = dsc.signal  # bolus at 15 s: the series cut to start at 18 s
    late = Volume(d.data[..., 12:], d.affine, d.times[12:] - d.times[12], d.acquisition)
    _refused(late, dsc.masks["aif"], "starts after its bolus arrived")


def test_an_asl_sidecar_is_refused_before_anything_is_read(dsc, tmp_path):
    series = _nifti_with_sidecar(dsc, tmp_path, "asl", {"EchoTime": 0.03, "ArterialSpinLabelingType": "PCASL"})
    with pytest.raises(InputError, match="arterial spin labelling series .*PCASL"):
        run_dsc(series, DSCParameters(), aif_mask=dsc.masks["aif"])


# --- the rules do not fire on ordinary objects ------------------------------------------------------------------------
ORDINARY_DSC = [dict(snr=5.0), dict(snr=20.0), dict(snr=None), dict(frame_interval=1.0, duration=180.0, bolus_arrival=5.0),
                dict(frame_interval=3.0), dict(duration=45.0), dict(te=0.08), dict(leakage=0.05), dict(tissue_delay=8.0),
                dict(aif_peak=30.0, snr=5.0)]


@pytest.mark.parametrize("settings", ORDINARY_DSC, ids=[str(s) for s in ORDINARY_DSC])
def test_ordinary_dsc_objects_pass_the_series_checks(settings):
    p = make_dsc_phantom(**{"slices": 4, "snr": 20.0, "seed": 2, **settings})
    curve = p.signal.data[p.masks["brain"]].astype(np.float64).mean(axis=0)
    series_kind.check_dsc_curve(curve, 1)  # no InputError
    series_kind.check_dsc_curve(curve, 1, (1, 8))


def test_an_ordinary_dsc_run_is_unchanged_and_records_no_sequence(dsc):
    result = run_dsc(dsc.signal, DSCParameters(), aif_mask=dsc.masks["aif"])
    assert "sequence" not in result.report["input"]
    assert not any("spin-echo" in w or "no contrast bolus" in w for w in result.report["warnings"])


# --- DCE: the brain-mean curve checked before its baseline is detected ---------------------------------------------
def test_dce_series_checks(dsc, dce):
    from BBBAnomalyLib.dce.conversion import detect_baseline_frames, detect_brain_baseline_frames

    def brain_mean(volume, mask):
        return volume.data[mask].astype(np.float64).mean(axis=0)

    brain = dsc.masks["brain"]
    for series, words in ((dsc.signal, ("drops and comes back", "bbbanomaly dsc")), (_dwi(dsc), ("stays down", "diffusion")),
                          (_asl(dsc), ("alternates", "ASL")), (_bold(dsc), ("separate times", "BOLD")),
                          (_bold(dsc, 0.0), ("no contrast enhancement found",))):
        with pytest.raises(InputError) as error:
            detect_brain_baseline_frames(brain_mean(series, brain))
        for word in words:
            assert word in str(error.value), str(error.value)
    for settings in (dict(), dict(snr=10.0), dict(frame_interval=1.0, duration=120.0), dict(bolus_arrival=6.0), dict(dose=0.5)):
        p = dce if not settings else make_dce_phantom(**{"slices": 4, "snr": 20.0, **settings})
        curve = brain_mean(p.signal, p.masks["brain"])
        assert detect_brain_baseline_frames(curve) == detect_baseline_frames(curve)


# --- spin-echo DSC ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("record, echo", [
    ({"scanning_sequence": "EP\\SE", "sequence_name": "*epse2d1_128"}, "spin_echo"),
    ({"scanning_sequence": "EP", "sequence_name": "*epfid2d1_128"}, "gradient_echo"),
    ({"scanning_sequence": "EP\\GR"}, "gradient_echo"),
    ({"scanning_sequence": "EP"}, None),
    ({"echo_pulse_sequence": "BOTH"}, "spin_and_gradient_echo"),
    ({"pulse_sequence_type": "Spin Echo EPI"}, "spin_echo"),
    ({"scanning_sequence": "SE", "sequence_name": "*epfid2d1_128"}, None),  # the fields disagree: not decided
])
def test_the_sequence_is_classified_from_what_the_file_says(record, echo):
    out = classify(record)
    assert out["echo"] == echo
    assert ("conflict" in out) == (record.get("scanning_sequence") == "SE")


def _nifti_with_sidecar(dsc, tmp_path, name, sidecar):
    import nibabel as nib

    d = dsc.signal
    image = nib.Nifti1Image(d.data, d.affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = float(d.times[1] - d.times[0])
    nib.save(image, tmp_path / f"{name}.nii.gz")
    (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
    return read_volume(tmp_path / f"{name}.nii.gz")


def test_a_spin_echo_dsc_run_says_what_is_not_comparable_and_keeps_its_maps(dsc, tmp_path):
    plain = run_dsc(dsc.signal, DSCParameters(), aif_mask=dsc.masks["aif"], nawm_mask=dsc.masks["nawm"],
                    tumor_mask=dsc.masks["tumor"])
    series = _nifti_with_sidecar(dsc, tmp_path, "se", {"EchoTime": 0.03, "MagneticFieldStrength": 3,
                                                       "ScanningSequence": "EP\\SE", "SequenceName": "*epse2d1_128"})
    assert series.acquisition.extra["sequence"]["echo"] == "spin_echo"
    result = run_dsc(series, DSCParameters(), aif_mask=dsc.masks["aif"], nawm_mask=dsc.masks["nawm"],
                     tumor_mask=dsc.masks["tumor"])
    report = result.report
    assert report["input"]["sequence"]["echo"] == "spin_echo"
    warning = [w for w in report["warnings"] if w.startswith("spin-echo DSC")]
    assert len(warning) == 1 and "*epse2d1_128" in warning[0] and "rCBV" in warning[0] and "not comparable" in warning[0]
    for name in ("cbv", "cbf", "cbv_corrected"):
        assert "spin-echo DSC: absolute value not comparable" in report["maps"][name]["caveat"]
    for name in ("rcbv", "rcbf"):
        assert "spin-echo DSC: tumour ratios run lower" in report["maps"][name]["caveat"]
    assert "caveat" not in report["maps"]["tmax"]
    for name, volume in plain.maps.items():  # the maps themselves are not changed
        np.testing.assert_array_equal(volume.data, result.maps[name].data)


def test_a_long_te_for_gradient_echo_is_a_warning_only(dsc, tmp_path):
    series = _nifti_with_sidecar(dsc, tmp_path, "ge", {"EchoTime": 0.08, "MagneticFieldStrength": 3,
                                                       "ScanningSequence": "EP\\GR"})
    report = run_dsc(series, DSCParameters(), aif_mask=dsc.masks["aif"]).report
    assert report["input"]["sequence"]["echo"] == "gradient_echo"
    assert any(w.startswith("TE 80 ms is long for gradient-echo DSC") for w in report["warnings"])
    assert not any("caveat" in entry and "spin-echo" in entry["caveat"] for entry in report["maps"].values())


def test_a_dicom_series_keeps_its_sequence(tmp_path, monkeypatch):
    import SimpleITK as sitk

    from test_io_dicom import series_data, write_series

    class TaggingWriter(sitk.ImageFileWriter):
        def Execute(self, image, *args):
            image.SetMetaData("0018|0020", "EP\\SE")
            image.SetMetaData("0018|0024", "*epse2d1_128")
            return super().Execute(image, *args)

    monkeypatch.setattr(sitk, "ImageFileWriter", TaggingWriter)
    write_series(tmp_path, series_data())
    monkeypatch.undo()
    sequence = read_volume(tmp_path).acquisition.extra["sequence"]
    assert sequence["scanning_sequence"] == "EP\\SE" and sequence["sequence_name"] == "*epse2d1_128"
    assert sequence["echo"] == "spin_echo"


def test_run_dce_refuses_the_dsc_object_and_a_diffusion_file(tmp_path):
    """The DCE side wired (session 23): the DSC reference object run as DCE, and a series carrying b-values, are
    refused in one line naming the right command (they gave Ktrans maps of fit R² -0.08 and -9.9 with exit 0)."""
    import dataclasses

    from BBBAnomalyLib.core.volume import Volume
    from BBBAnomalyLib.dce import DCEParameters, run_dce
    from BBBAnomalyLib.phantoms.dsc import make_dsc_phantom

    dsc = make_dsc_phantom(slices=4, snr=50, seed=1)
    params = DCEParameters(rls="none", t10=1.4, tr=0.005, flip_angle=15.0)
    with pytest.raises(InputError, match="bbbanomaly dsc"):
        run_dce(dsc.signal, params, brain_mask=dsc.masks["brain"])
    acquisition = dataclasses.replace(dsc.signal.acquisition, bvals=np.r_[0.0, np.full(dsc.signal.n_frames - 1, 1000.0)])
    with pytest.raises(InputError, match="bbbanomaly dmri"):
        run_dce(Volume(dsc.signal.data, dsc.signal.affine, dsc.signal.times, acquisition), params,
                brain_mask=dsc.masks["brain"])


def test_a_dce_series_cut_after_its_injection_run_as_dsc_names_dce():
    """Its signal washes out and stays above nothing: the DSC line names the DCE command, not only diffusion."""
    dce = make_dce_phantom(slices=4, snr=40, seed=1)
    keep = dce.signal.times >= 40.0  # the bolus arrives at 30 s
    cut = Volume(dce.signal.data[..., keep], dce.signal.affine, dce.signal.times[keep] - 40.0, dce.signal.acquisition)
    with pytest.raises(InputError, match="falls and does not come back.*bbbanomaly dce"):
        run_dsc(cut, DSCParameters(echo_time=0.03), brain_mask=dce.masks["brain"])

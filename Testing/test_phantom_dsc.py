"""DSC forward model (phantoms.dsc_physics) and the DSC digital reference object (phantoms.dsc).

The physics tests check identities that hold for the continuous model (areas, shifts, limits), so a
discretisation or sign error in the truth generator shows up here and not as a mysterious pipeline bias.
"""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy.integrate import quad, trapezoid

from BBBAnomalyLib.phantoms import dsc_physics as phys
from BBBAnomalyLib.phantoms import load_anatomy, make_dsc_phantom
from BBBAnomalyLib.phantoms.dsc import S0_WM, DSCPhantomParameters

LONG = np.arange(0.0, 300.0, 0.5)  # long window: the bolus has passed completely


def first_pass_only(t):
    """An AIF that returns to zero (no steady state), so areas are complete within LONG."""
    return phys.gamma_variate_aif(t, arrival=10.0, peak=50.0, steady_state_fraction=0.0)


# --- physics ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", phys.RESIDUES)
@pytest.mark.parametrize("mtt", [1.5, 4.5, 12.0])
def test_residue_integrates_to_mtt_and_is_a_residue(kind, mtt):
    area, _ = quad(lambda s: phys.residue(kind, s, mtt), 0, np.inf, limit=400, points=None)
    assert area == pytest.approx(mtt, rel=1e-6)
    assert phys.residue_integral(kind, 1e12, mtt) == pytest.approx(mtt, rel=1e-6)
    t = np.linspace(0, 5 * mtt, 501)
    r = phys.residue(kind, t, mtt)
    assert r[0] == 1.0 and np.all(np.diff(r) <= 1e-12) and phys.residue(kind, -1.0, mtt) == 0.0
    # the closed-form cumulative integral is the integral of R
    np.testing.assert_allclose(phys.residue_integral(kind, t[-1], mtt), quad(lambda s: phys.residue(kind, s, mtt), 0, t[-1], limit=400)[0], rtol=1e-7)


def test_lorentzian_is_the_phae_residue():
    t, mtt = np.array([0.0, 1.0, 4.0]), 4.0
    np.testing.assert_allclose(phys.residue("lorentzian", t, mtt), 1 / (1 + (np.pi * t / (2 * mtt)) ** 2))


def test_gamma_variate_aif_shape():
    t = np.arange(0, 120, 0.01)
    a = phys.gamma_variate_aif(t, arrival=15.0, peak=50.0, alpha=3.0, beta=1.5, steady_state_fraction=0.08)
    assert np.all(a[t <= 15.0] == 0.0)
    assert a.max() == pytest.approx(50.0, rel=1e-6) and t[a.argmax()] == pytest.approx(15.0 + 4.5, abs=0.01)
    assert a[-1] == pytest.approx(0.08 * 50.0, rel=1e-3)  # steady-state plateau
    no_recirc = phys.gamma_variate_aif(t, recirculation_fraction=0.0, steady_state_fraction=0.0)
    with_recirc = phys.gamma_variate_aif(t, recirculation_fraction=0.2, steady_state_fraction=0.0)
    assert trapezoid(with_recirc, t) == pytest.approx(1.2 * trapezoid(no_recirc, t), rel=1e-4)


@pytest.mark.parametrize("kind", phys.RESIDUES)
def test_tissue_area_is_cbv_times_aif_area(kind):
    cbv, mtt = 0.04, 4.5
    c = phys.tissue_concentration(LONG, first_pass_only, cbv, mtt, residue=kind)[0]
    a = first_pass_only(LONG)
    # exact finite-window identity: ∫_0^T C = CBF ∫_0^T Ca(s) ∫_0^{T-s} R ; -> CBV ∫Ca as T -> ∞
    s = np.arange(0, LONG[-1], 0.01)
    expected = cbv / mtt * trapezoid(first_pass_only(s) * phys.residue_integral(kind, LONG[-1] - s, mtt), s)
    assert trapezoid(c, LONG) == pytest.approx(expected, rel=2e-3)
    if kind != "lorentzian":  # its heavy tail keeps ~0.5 % beyond 300 s
        assert trapezoid(c, LONG) == pytest.approx(cbv * trapezoid(a, LONG), rel=2e-3)


def test_tissue_curve_is_not_the_frame_grid_convolution():
    """The truth uses the continuous AIF: it differs from a frame-grid rectangle convolution."""
    t = np.arange(0, 90, 1.5)
    a = phys.gamma_variate_aif(t)
    c = phys.tissue_concentration(t, lambda x: phys.gamma_variate_aif(x), 0.04, 4.5)[0]
    discrete = 0.04 / 4.5 * 1.5 * np.convolve(a, np.exp(-t / 4.5))[: t.size]
    assert np.abs(c - discrete).max() > 0.02 * c.max()
    sampled = phys.tissue_concentration(t, a, 0.04, 4.5)[0]  # array AIF: PCHIP in continuous time
    assert np.abs(sampled - c).max() < 0.03 * c.max()


def test_delay_shifts_the_curve():
    t = np.arange(0, 90, 1.5)
    aif = lambda x: phys.gamma_variate_aif(x)  # noqa: E731
    c = phys.tissue_concentration(t, aif, 0.04, 4.5, delay=[0.0, 3.0, 0.7])
    np.testing.assert_allclose(c[1, 2:], c[0, :-2], rtol=1e-9, atol=1e-12)  # 3 s = 2 frames
    fine = np.arange(0, 90, 0.05)
    cf = phys.tissue_concentration(fine, aif, 0.04, 4.5, delay=[0.0, 0.7])
    assert fine[cf[1].argmax()] - fine[cf[0].argmax()] == pytest.approx(0.7, abs=0.051)
    assert np.all(c[1, t < 15.0 + 3.0] == 0.0)


def test_dispersion_preserves_area_and_broadens():
    c = phys.tissue_concentration(LONG, first_pass_only, 0.04, 4.5, dispersion=[0.0, 1.0, 3.0])
    areas = trapezoid(c, LONG, axis=1)
    np.testing.assert_allclose(areas, areas[0], rtol=1e-3)
    assert c[0].max() > c[1].max() > c[2].max()
    assert LONG[c[0].argmax()] < LONG[c[2].argmax()]


def test_zero_mtt_is_intravascular_and_chunks_agree():
    t = np.arange(0, 90, 1.5)
    aif = lambda x: phys.gamma_variate_aif(x)  # noqa: E731
    np.testing.assert_allclose(phys.tissue_concentration(t, aif, 1.0, 0.0)[0], aif(t), rtol=1e-12, atol=1e-12)
    mtt = np.linspace(2, 8, 37)
    np.testing.assert_allclose(
        phys.tissue_concentration(t, aif, 0.03, mtt, chunk=5), phys.tissue_concentration(t, aif, 0.03, mtt), rtol=1e-10, atol=1e-12
    )
    with pytest.raises(ValueError, match="fraction"):
        phys.tissue_concentration(t, aif, 4.0, 4.5)  # ml/100 ml passed by mistake


def test_bsw_leakage_sign_and_magnitude():
    t = np.arange(0, 90, 1.5)
    ref = phys.tissue_concentration(t, lambda x: phys.gamma_variate_aif(x), 0.03, 5.0)[0]
    leak = phys.bsw_leakage(t, ref, np.array([0.01, -0.01, 0.0]))
    assert leak.shape == (3, t.size)
    assert np.all(leak[0] <= 0) and np.all(leak[1] >= 0) and np.all(leak[2] == 0)  # K2 > 0: ΔR2* goes down
    assert leak[0, -1] == pytest.approx(-0.01 * trapezoid(ref, t), rel=1e-12)
    assert np.all(np.diff(leak[0]) <= 0)  # cumulative: monotone
    np.testing.assert_allclose(phys.bsw_leakage(t, ref, 0.02), 2 * leak[0])


def test_signal_and_rician_noise():
    d = np.array([[0.0, 10.0, 50.0]])
    np.testing.assert_allclose(phys.signal_from_delta_r2s(np.array([1000.0]), d, 0.03), 1000 * np.exp(-0.03 * d))
    zero = np.zeros(200_000, dtype=np.float32)
    rayleigh = phys.add_rician_noise(zero, 10.0, np.random.default_rng(1))
    assert rayleigh.dtype == np.float32 and rayleigh.mean() == pytest.approx(10 * np.sqrt(np.pi / 2), rel=0.01)
    high = phys.add_rician_noise(np.full(200_000, 1000.0), 10.0, 2)
    assert high.std() == pytest.approx(10.0, rel=0.01) and high.mean() == pytest.approx(1000.05, abs=0.1)
    np.testing.assert_array_equal(phys.add_rician_noise(zero, 1.0, 7), phys.add_rician_noise(zero, 1.0, 7))


# --- phantom ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy():
    return make_dsc_phantom()


@pytest.fixture(scope="module")
def clean():
    return make_dsc_phantom(snr=None, leakage=0.0)


def delta_r2s(ph, mask):
    s = ph.signal.data[mask].astype(np.float64)
    return -np.log(s / s[:, :1]) / ph.params.te


def test_shapes_times_and_acquisition(noisy):
    p = noisy.params
    assert noisy.signal.data.shape == (74, 92, 12, 60) and noisy.signal.data.dtype == np.float32
    np.testing.assert_allclose(noisy.times, np.arange(60) * 1.5)
    assert noisy.signal.acquisition.echo_time == p.te == 0.03 and noisy.signal.acquisition.repetition_time == 1.5
    assert noisy.aif.shape == noisy.leakage_reference.shape == (60,)
    assert set(noisy.masks) >= {"brain", "tumor", "nawm", "aif", "gm", "wm", "csf"}
    assert set(noisy.truth) == {"cbv", "cbf", "mtt", "delay", "k2", "labels"}
    for v in noisy.truth.values():
        assert v.same_grid(noisy.signal)
    for m in noisy.masks.values():
        assert m.shape == (74, 92, 12) and m.dtype == bool
    assert np.all(noisy.signal.data[~noisy.masks["brain"]] == 0)


def test_geometry_is_the_shipped_anatomy(noisy):
    anat = load_anatomy()
    a = noisy.signal.affine
    np.testing.assert_array_equal(a[:3, :3], anat.affine[:3, :3])
    k0 = int(round((np.linalg.inv(anat.affine) @ a[:, 3])[2]))
    np.testing.assert_allclose(a[:3, 3], anat.affine[:3, 3] + k0 * anat.affine[:3, 2])
    np.testing.assert_array_equal(noisy.masks["brain"], anat.brain[:, :, k0:k0 + 12])
    tumor_k = np.flatnonzero(noisy.masks["tumor"].any(axis=(0, 1)))
    assert 0 < tumor_k.min() and tumor_k.max() < 11  # the slab holds the whole tumor


def test_truth_maps_are_consistent(noisy):
    t = {k: v.data for k, v in noisy.truth.items()}
    flow = t["cbf"] > 0
    np.testing.assert_allclose(t["cbf"][flow] * t["mtt"][flow] / 60.0, t["cbv"][flow], rtol=1e-5)
    np.testing.assert_allclose(t["cbv"][flow] / t["mtt"][flow] * 60.0, t["cbf"][flow], rtol=1e-5)
    assert np.all(t["cbv"][noisy.masks["aif"]] == 100.0) and np.all(t["labels"][noisy.masks["aif"]] == 7)
    assert np.all(t["k2"][~(noisy.masks["brain"])] == 0) and t["k2"].max() == pytest.approx(noisy.params.leakage)
    assert np.all(t["k2"][noisy.masks["nawm"]] == 0) and np.all(t["k2"][noisy.masks["enhancing"]] > 0)
    assert np.median(t["cbv"][noisy.masks["nawm"]]) == pytest.approx(2.0, abs=0.1)
    assert np.median(t["mtt"][noisy.masks["nawm"]]) == pytest.approx(2.0 / 22 * 60, rel=0.02)
    tumor, nawm = t["cbv"][noisy.masks["tumor"]].mean(), t["cbv"][noisy.masks["nawm"]].mean()
    assert t["cbv"][noisy.masks["enhancing"]].mean() > 2 * nawm and tumor > 2 * nawm


def test_noise_sigma_matches_snr(noisy):
    base = noisy.signal.data[noisy.masks["nawm"]][:, noisy.times < noisy.params.bolus_arrival].astype(np.float64)
    sigma = np.sqrt(base.var(axis=1, ddof=1).mean())
    assert sigma == pytest.approx(S0_WM / noisy.params.snr, rel=0.03)
    assert base.mean() == pytest.approx(S0_WM, rel=0.005)


def test_seed_determinism():
    a, b = make_dsc_phantom(seed=3), make_dsc_phantom(seed=3)
    c = make_dsc_phantom(seed=4)
    np.testing.assert_array_equal(a.signal.data, b.signal.data)
    assert not np.array_equal(a.signal.data, c.signal.data)
    for k in a.truth:
        np.testing.assert_array_equal(a.truth[k].data, c.truth[k].data)


def test_aif_voxels_carry_the_aif(clean):
    assert 20 <= clean.masks["aif"].sum() <= 60  # 2x2 voxels in (almost) every slice of the slab
    assert np.all(clean.masks["aif"].any(axis=(0, 1)))
    np.testing.assert_allclose(delta_r2s(clean, clean.masks["aif"]), np.broadcast_to(clean.aif, (clean.masks["aif"].sum(), 60)), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(clean.aif, phys.gamma_variate_aif(clean.times, arrival=15.0, peak=50.0))
    assert clean.aif.max() > 0.9 * 50.0


def test_noiseless_signal_agrees_with_truth_cbv(clean):
    """∫ΔR2*/∫Ca reproduces the truth CBV within the finite-window lag (3-4 %), tumor > 2 x NAWM."""
    area_a = trapezoid(clean.aif, clean.times)
    est = {}
    for name in ("gm", "wm", "nawm", "enhancing", "tumor"):
        m = clean.masks[name]
        ratio = trapezoid(delta_r2s(clean, m), clean.times, axis=1) / area_a * 100 / clean.truth["cbv"].data[m]
        assert np.median(ratio) == pytest.approx(0.965, abs=0.015), name
        est[name] = np.mean(trapezoid(delta_r2s(clean, m), clean.times, axis=1) / area_a * 100)
    assert est["tumor"] > 2 * est["nawm"] and est["enhancing"] > 3.5 * est["nawm"]


def test_default_leakage_biases_uncorrected_cbv_and_bsw_with_truth_k2_removes_it(clean):
    leaky = make_dsc_phantom(snr=None)  # default leakage
    m = leaky.masks["enhancing"]
    area = lambda ph: trapezoid(delta_r2s(ph, m), ph.times, axis=1)  # noqa: E731
    bias = 1 - np.median(area(leaky) / area(clean))
    assert 0.10 <= bias <= 0.30
    corrected = delta_r2s(leaky, m) - phys.bsw_leakage(leaky.times, leaky.leakage_reference, leaky.truth["k2"].data[m])
    np.testing.assert_allclose(corrected, delta_r2s(clean, m), rtol=1e-3, atol=2e-4)
    # the reference is the mean curve of the non-tumor brain: equal to it in the noiseless phantom
    nt = clean.masks["brain"] & ~clean.masks["aif"] & (clean.truth["k2"].data == 0) & (clean.truth["labels"].data != 5)
    assert np.allclose(delta_r2s(clean, nt).mean(0), leaky.leakage_reference, atol=0.01 * leaky.leakage_reference.max())


def test_delays_and_residue_options():
    ph = make_dsc_phantom(snr=None, leakage=0.0, tissue_delay=3.0, tumor_delay=1.5, residue="lorentzian", dispersion=1.0)
    base = make_dsc_phantom(snr=None, leakage=0.0, residue="lorentzian", dispersion=1.0)
    nawm = ph.masks["nawm"]
    rim = ph.masks["enhancing"] & np.isclose(ph.truth["delay"].data, 4.5)  # pure tumor: delay 3 + 1.5 s
    np.testing.assert_allclose(delta_r2s(ph, nawm)[:, 2:], delta_r2s(base, nawm)[:, :-2], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(delta_r2s(ph, rim)[:, 3:], delta_r2s(base, rim)[:, :-3], rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(delta_r2s(ph, ph.masks["aif"]), delta_r2s(base, base.masks["aif"]), rtol=1e-6)
    assert rim.sum() > 100 and np.allclose(ph.truth["delay"].data[nawm], 3.0)
    mixed = ph.masks["enhancing"] & ~rim  # partial-volume tumor edge: flow-weighted delay in between
    assert np.all((ph.truth["delay"].data[mixed] > 3.0) & (ph.truth["delay"].data[mixed] < 4.5))
    with pytest.raises(ValueError):
        make_dsc_phantom(residue="triangle")


def test_write_round_trip(tmp_path, noisy):
    out = noisy.write(tmp_path / "dro")
    img = nib.load(out / "signal.nii.gz")
    assert img.shape == noisy.signal.data.shape and np.allclose(img.affine, noisy.signal.affine)
    side = json.loads((out / "signal.json").read_text(encoding="utf-8"))
    assert side["EchoTime"] == 0.03 and side["VolumeTiming"] == list(noisy.times)
    for name in ("cbv", "cbf", "mtt", "delay", "k2", "labels"):
        assert np.allclose(nib.load(out / f"truth_{name}.nii.gz").get_fdata(), noisy.truth[name].data)
    assert np.array_equal(np.asarray(nib.load(out / "mask_aif.nii.gz").dataobj) > 0, noisy.masks["aif"])
    assert (out / "aif.tsv").read_text(encoding="utf-8").count("\n") == 61


def test_whole_brain_is_available():
    ph = make_dsc_phantom(DSCPhantomParameters(slices="all", snr=None, duration=6.0))
    assert ph.signal.data.shape == (74, 92, 78, 4) and ph.masks["brain"].sum() == 262245
    np.testing.assert_array_equal(ph.signal.affine, load_anatomy().affine)

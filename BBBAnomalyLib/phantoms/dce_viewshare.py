"""The DCE reference object re-acquired with view sharing (Siemens TWIST, GE DISCO, Philips/keyhole).

Why: most clinical brain DCE series are view-shared. The centre of k-space ("A", 10-25 % of the phase-encode plane)
is sampled every frame, the periphery ("B") in N sub-regions B_1..B_N of which one is acquired per frame, and each
frame is reconstructed from its own A and the other frames' B's. The stated frame interval is then shorter than the
time the frame's data cover: a small object (an artery: most of its energy lies in the periphery) reads a blend of
N frames, while large regions (tissue) follow A. Nothing in the object modelled it (its frames are instantaneous).

The schemes, as they are commonly described (not checked here against the vendors' code; read, not copied):

* ``twist``: Siemens TWIST (time-resolved angiography with interleaved stochastic trajectories; Laub & Kroeker,
  MAGNETOM Flash 2006; Song et al., MRM 2009): a central region A (pA, typically 10-25 %) every frame, the periphery
  B split into interleaved subsets spread over all of B; a frame combines its A with the most recent acquisition of
  each B subset (sharing backwards in time).
* ``disco``: GE DISCO (differential subsampling with Cartesian ordering; Saranathan et al., JMRI 2012,
  PMC3354015): a variable-density pseudo-random segmentation of the ky-kz plane, A plus one of a few B subsets per
  frame, each frame filled from the B acquisitions nearest to it in time (sharing both ways; here the subsets are
  pseudo-random with a uniform density, see :func:`sampling_regions`).
* ``keyhole``: the older keyhole (van Vaals et al., Jones et al., JMRI/MRM 1993; Philips' 4D-TRAK builds on it with
  CENTRA ordering): only A is updated; the periphery comes from one reference acquisition (here the last frame, a
  post-contrast reference; ``keyhole_reference='first'`` for a pre-contrast one).

The arithmetic is real: each frame (signal + complex Gaussian noise, the object's phase being zero) is Fourier
transformed over the phase-encode axes (numpy FFT, orthonormal so the noise keeps its σ per voxel), its k-space is
assembled from the frames each region comes from, transformed back, and the magnitude is taken. The readout axis is
fully sampled in every acquisition, so the sampling pattern is constant along it and no transform over it is needed.
``phase_axes=(0, 1)`` takes each slice's in-plane (x, y) as the phase-encode plane (a 3D acquisition read out along
z: the artery, a tube along z, then has its smallest cross-section in that plane: the worst case);
``phase_axes=(1, 2)`` is the usual axial 3D slab read out along x (ky, kz). ``view_shared`` with ``sharing=None``
gives the fully sampled series with the same noise draws (Rician magnitude), the like-for-like reference.
The object itself (:mod:`.dce`) is not changed: its series, made noiseless, is the input here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..core.volume import Volume
from . import dce_physics as phys
from .dce import M0_WM, DCEPhantom, _tissue_table

SCHEMES = ("twist", "disco", "keyhole")


@dataclass(frozen=True)
class ViewSharing:
    """scheme: one of :data:`SCHEMES`; center_fraction: A's share of the phase-encode plane (0 < f < 1); subsets: N,
    the number of B sub-regions (one acquired per frame; ignored by keyhole); phase_axes: the phase-encode axes of
    the (x, y, z) grid; keyhole_reference: 'last' or 'first'; pattern_seed: DISCO's pseudo-random segmentation."""

    scheme: str = "twist"
    center_fraction: float = 0.2
    subsets: int = 3
    phase_axes: tuple[int, ...] = (0, 1)
    keyhole_reference: str = "last"
    pattern_seed: int = 0

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, not {self.scheme!r}")
        if not 0.0 < self.center_fraction < 1.0 or self.subsets < 1:
            raise ValueError("need 0 < center_fraction < 1 and subsets >= 1")
        if not set(self.phase_axes) <= {0, 1, 2} or len(set(self.phase_axes)) != len(self.phase_axes):
            raise ValueError("phase_axes: distinct axes among 0, 1, 2")
        if self.keyhole_reference not in ("first", "last"):
            raise ValueError("keyhole_reference is 'first' or 'last'")
        object.__setattr__(self, "phase_axes", tuple(sorted(self.phase_axes)))


def _k_radius(shape: tuple[int, ...]) -> np.ndarray:
    """Normalised k-space radius on the phase-encode plane (1 at the edge along each axis), unshifted FFT order."""
    grids = np.meshgrid(*[np.fft.fftfreq(n) * 2.0 for n in shape], indexing="ij")
    return np.sqrt(sum(g ** 2 for g in grids))


def sampling_regions(plane_shape: tuple[int, ...], sharing: ViewSharing) -> np.ndarray:
    """Per k-point of the phase-encode plane (numpy FFT order): -1 in A, else the B subset 0..N-1 it belongs to.

    A is the centre (smallest radius) holding ``center_fraction`` of the points, ties broken by position. TWIST's
    subsets interleave B by radius (rank mod N: every subset covers every radius); DISCO's are pseudo-random (a
    permutation within bands of 4N radius-ordered points, so that each subset still spans all of B). Every subset
    samples B uniformly: the vendors' variable density (denser towards the centre) is not modelled. Keyhole: B is
    one region."""
    radius = _k_radius(plane_shape).ravel()
    order = np.argsort(radius, kind="stable")
    n_center = max(1, int(round(sharing.center_fraction * radius.size)))
    labels = np.full(radius.size, -1, np.int64)
    outer = order[n_center:]
    n_subsets = 1 if sharing.scheme == "keyhole" else sharing.subsets
    if sharing.scheme == "disco":
        rng = np.random.default_rng(sharing.pattern_seed)
        band = 4 * n_subsets  # permute within bands of 4N radius-ordered points: random, yet every subset spans B
        ranks = np.empty(outer.size, np.int64)
        for start in range(0, outer.size, band):
            ranks[start:start + band] = start + rng.permutation(min(band, outer.size - start))
        labels[outer[ranks]] = np.arange(outer.size) % n_subsets
    else:
        labels[outer] = np.arange(outer.size) % n_subsets
    return labels.reshape(plane_shape)


def source_frames(n_frames: int, sharing: ViewSharing) -> np.ndarray:
    """(n_frames, N): the frame whose acquisition of B subset j frame k is reconstructed with. Frame m acquires
    A and subset m mod N. TWIST: the latest m <= k (at the start, where none has been acquired yet, the first one);
    DISCO: the nearest m (the earlier on a tie); keyhole: the reference frame for its one B region."""
    if sharing.scheme == "keyhole":
        ref = n_frames - 1 if sharing.keyhole_reference == "last" else 0
        return np.full((n_frames, 1), ref, np.int64)
    n = sharing.subsets
    out = np.empty((n_frames, n), np.int64)
    frames = np.arange(n_frames)
    for j in range(n):
        acquired = frames[frames % n == j]
        if acquired.size == 0:  # fewer frames than subsets: the last frame stands in
            acquired = frames[-1:]
        for k in range(n_frames):
            if sharing.scheme == "twist":
                before = acquired[acquired <= k]
                out[k, j] = before[-1] if before.size else acquired[0]
            else:
                out[k, j] = acquired[np.argmin(np.abs(acquired - k))]
    return out


def _noise_sigma(phantom: DCEPhantom) -> float:
    """The object's noise σ for an SNR (baseline pure-WM signal / snr), as :func:`.dce.make_dce_phantom` sets it."""
    p = phantom.params
    t10_wm = _tissue_table(p)["wm"]["t10"]
    return float(phys.spgr_signal(M0_WM, np.array([1.0 / t10_wm]), p.flip_angle, p.tr)[0])


def view_shared(phantom: DCEPhantom, sharing: ViewSharing | None, snr: float | None = 40.0,
                seed: int = 0) -> DCEPhantom:
    """The object's series acquired with ``sharing`` (None: fully sampled), complex noise at ``snr`` (None: none).

    ``phantom`` must be noiseless (``make_dce_phantom(snr=None, ...)``): the noise is added here per acquisition,
    before the k-space is shared, so a shared region carries the noise of the frame it was acquired in, as on a
    scanner. The same ``seed`` gives the same noise draws with and without sharing. Truth, masks, the true AIF and
    the concentrations are the object's (the truth of the tissue does not change with the acquisition)."""
    if phantom.params.snr is not None:
        raise ValueError("view_shared needs the noiseless object (make_dce_phantom(snr=None, ...)): the noise is "
                         "added per acquisition here")
    clean = phantom.signal.data
    n_frames = clean.shape[-1]
    sigma = None if snr is None else _noise_sigma(phantom) / float(snr)
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n_frames):  # a loop over frames keeps one complex copy of the series, not several
        image = clean[..., t].astype(np.complex128)
        if sigma is not None:
            image = image + sigma * (rng.standard_normal(image.shape) + 1j * rng.standard_normal(image.shape))
        frames.append(image)
    if sharing is None:
        out = np.stack([np.abs(f) for f in frames], axis=-1).astype(np.float32)
    else:
        out = _share(frames, sharing)
    acq = dataclasses.replace(phantom.signal.acquisition, extra={
        **phantom.signal.acquisition.extra, "snr": snr, "seed": seed,
        "simulated_view_sharing": None if sharing is None else dataclasses.asdict(sharing)})
    signal = Volume(out, phantom.signal.affine, phantom.signal.times, acq)
    return DCEPhantom(signal, phantom.truth, phantom.masks, phantom.aif, phantom.concentration,
                      dataclasses.replace(phantom.params, snr=snr, seed=seed))


def _share(frames: list[np.ndarray], sharing: ViewSharing) -> np.ndarray:
    axes = tuple(sharing.phase_axes)  # sorted (ViewSharing sorts them)
    shape = frames[0].shape
    labels = sampling_regions(tuple(shape[a] for a in axes), sharing)
    # the plane's labels laid over the grid, constant along the readout axis (the pattern does not change along it)
    labels = np.broadcast_to(labels.reshape([shape[a] if a in axes else 1 for a in range(len(shape))]), shape)
    kspace = [np.fft.fftn(f, axes=axes, norm="ortho") for f in frames]
    sources = source_frames(len(frames), sharing)
    in_center = labels == -1
    out = np.empty(shape + (len(frames),), np.float32)
    for k in range(len(frames)):
        assembled = np.where(in_center, kspace[k], 0.0)
        for j in range(sources.shape[1]):
            assembled = np.where(labels == j, kspace[sources[k, j]], assembled)
        out[..., k] = np.abs(np.fft.ifftn(assembled, axes=axes, norm="ortho"))
    return out


def sharing_kernel(n_frames: int, sharing: ViewSharing) -> np.ndarray:
    """(n_frames, n_frames) weights W with W[k, m] = the share of the periphery B that frame k takes from frame m
    (rows sum to 1): what a fully peripheral object would read, as a blend of the true frames. A small object reads
    roughly (1 - e)·x_k + e·(W x)_k where e is the share of its energy outside A."""
    sources = source_frames(n_frames, sharing)
    weights = np.zeros((n_frames, n_frames))
    for k in range(n_frames):
        for j in range(sources.shape[1]):
            weights[k, sources[k, j]] += 1.0 / sources.shape[1]
    return weights


def describe(sharing: ViewSharing | None) -> str:
    """A short label: "twist A 20 % N 3", "keyhole A 20 % (last frame's periphery)", "fully sampled"."""
    if sharing is None:
        return "fully sampled"
    if sharing.scheme == "keyhole":
        return f"keyhole A {100 * sharing.center_fraction:.0f} % ({sharing.keyhole_reference} frame's periphery)"
    plane = "" if sharing.phase_axes == (0, 1) else f" plane {sharing.phase_axes}"
    return f"{sharing.scheme} A {100 * sharing.center_fraction:.0f} % N {sharing.subsets}{plane}"



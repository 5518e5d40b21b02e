"""Normal anatomy is plural: CSF/GM/WM fraction maps of several normal brains, for the T1/FLAIR autoencoder.

  python scripts/normal_templates.py cases OUT --per-template 8 --seed 0 [--templates mni152_fsl icbm2009a colin27]

Three different normal brains, each at 2 mm as a :class:`BBBAnomalyLib.phantoms.anatomy.Anatomy`:

* ``mni152_fsl`` -- the shipped MNI152 (FSL, 6th generation) 2 mm partial-volume maps (the phantoms' anatomy);
* ``icbm2009a``  -- ICBM 2009a nonlinear symmetric GM/WM probability maps (../shared/data/templates/mni152_2009a,
  as shipped in nilearn; MNI/McGill permissive notice), CSF = the filled brain minus GM and WM;
* ``colin27``    -- Colin27 (one individual, 27 scans averaged; "ch2bet" of Debian's ``mricron-data``,
  ``apt-get install mricron-data``; Colin27: Holmes et al. 1998, McConnell Brain Imaging Centre, MNI, as
  redistributed by MRIcron, debian/copyright BSD-3-clause), segmented here into CSF/GM/WM by a 3-class Gaussian
  mixture (scikit-learn) on its brain.

Nothing here ships with the package or runs in CI: the templates are read from where they are installed and only
what training derives from them (the autoencoder weights) is committed, with this provenance in its model card.
Each copy is the template moved by a random similarity transform (rotation +-6 deg, scaling +-6 % per axis)
and then a structural phantom without tumor on it (random bias field, scale, flip and noise; phantoms/structural.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from BBBAnomalyLib.phantoms.anatomy import Anatomy, load_anatomy  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "templates"
COLIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
TEMPLATES = ("mni152_fsl", "icbm2009a", "colin27")


def _to_2mm(fractions: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> Anatomy:
    """Average 2x2x2 blocks of a 1 mm map; crop to the brain's box (+2 voxels)."""
    shape = [s // 2 * 2 for s in brain.shape]
    f = fractions[: shape[0], : shape[1], : shape[2]]
    f = f.reshape(shape[0] // 2, 2, shape[1] // 2, 2, shape[2] // 2, 2, 3).mean(axis=(1, 3, 5))
    b = brain[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    b = b.reshape(shape[0] // 2, 2, shape[1] // 2, 2, shape[2] // 2, 2).mean(axis=(1, 3, 5)) >= 0.5
    new = affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    new[:3, 3] = affine[:3, :3] @ np.full(3, 0.5) + affine[:3, 3]
    return _anatomy(f, b, new)


def _anatomy(fractions, brain, affine, pad: int = 2) -> Anatomy:
    coords = np.argwhere(brain)
    lo, hi = np.maximum(coords.min(0) - pad, 0), np.minimum(coords.max(0) + pad + 1, brain.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    f, b = fractions[box], brain[box]
    total = f.sum(-1, keepdims=True)
    f = np.where(b[..., None], f / np.maximum(total, 1e-6), 0.0).astype(np.float32)
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return Anatomy(f, b.copy(), shifted)


def icbm2009a() -> Anatomy:
    import nibabel as nib
    from scipy import ndimage

    folder = SHARED / "mni152_2009a"
    gm_img = nib.load(folder / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    gm = np.asarray(gm_img.dataobj, np.float32) / 255.0
    wm = np.asarray(nib.load(folder / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255.0
    tissue = gm + wm
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(tissue > 0.3, iterations=3))
    brain = ndimage.binary_dilation(brain, iterations=1) & ndimage.binary_fill_holes(
        ndimage.binary_dilation(tissue > 0.05, iterations=1))
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    return _to_2mm(np.stack([csf, gm * brain, wm * brain], -1), brain, gm_img.affine)


def colin27() -> Anatomy:
    import nibabel as nib
    from sklearn.mixture import GaussianMixture

    if not COLIN.is_file():
        raise SystemExit(f"{COLIN} is missing: apt-get install mricron-data (Colin27 = ch2bet)")
    img = nib.load(COLIN)
    t1 = np.asarray(img.dataobj, np.float32)
    brain = t1 > 0
    values = t1[brain][:, None].astype(np.float64)
    # one BLAS thread and float64: the mixture's sums (and so the segmentation) then do not depend on how many
    # threads the machine runs (with float32 and the default threads, 1 and 2 threads gave different fractions)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        gmm = GaussianMixture(3, random_state=0).fit(values[:: max(1, values.shape[0] // 200_000)])
        order = np.argsort(gmm.means_[:, 0])  # CSF darkest, WM brightest on a T1
        post = gmm.predict_proba(values)[:, order]
    fractions = np.zeros(t1.shape + (3,), np.float32)
    fractions[brain] = post
    return _to_2mm(fractions, brain, img.affine)


def template(name: str) -> Anatomy:
    if name == "mni152_fsl":
        a = load_anatomy()
        return Anatomy(np.array(a.fractions), np.array(a.brain), np.array(a.affine))
    return {"icbm2009a": icbm2009a, "colin27": colin27}[name]()


def x_flipped_to_las(anatomy: Anatomy) -> Anatomy:
    """The same brain with its first voxel axis pointing left (x spacing negative, as the shipped MNI152 map):
    the diffusion phantom builds its grid assuming that orientation."""
    if anatomy.affine[0, 0] < 0:
        return anatomy
    n = anatomy.brain.shape[0]
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, n - 1
    return Anatomy(anatomy.fractions[::-1].copy(), anatomy.brain[::-1].copy(), anatomy.affine @ flip)


def moved(anatomy: Anatomy, rng) -> Anatomy:
    """The anatomy under a random similarity transform about its centre (same grid)."""
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", rng.uniform(-6, 6, 3), degrees=True).as_matrix()
    matrix = rotation @ np.diag(1.0 / rng.uniform(0.94, 1.06, 3))  # output -> input voxel coordinates
    centre = (np.asarray(anatomy.brain.shape) - 1) / 2.0
    offset = centre - matrix @ centre
    fractions = np.stack([ndimage.affine_transform(anatomy.fractions[..., i], matrix, offset, order=1)
                          for i in range(3)], -1)
    brain = ndimage.affine_transform(anatomy.brain.astype(np.float32), matrix, offset, order=1) >= 0.5
    total = fractions.sum(-1, keepdims=True)
    fractions = np.where(brain[..., None], fractions / np.maximum(total, 1e-6), 0.0).astype(np.float32)
    return Anatomy(fractions, brain, anatomy.affine.copy())


def write_cases(out: Path, names, per_template: int, seed: int) -> list[Path]:
    from BBBAnomalyLib.phantoms.structural import make_structural_phantom

    folders = []
    for t, name in enumerate(names):
        base = template(name)
        for i in range(per_template):
            case_seed = seed + 1000 * t + i
            anatomy = moved(base, np.random.default_rng(case_seed))
            phantom = make_structural_phantom(case_seed, tumor=False, anatomy=anatomy)
            case = f"{name}-{case_seed:05d}"
            folders.append(phantom.write(out / case, case))
            print(f"{case}: brain {anatomy.brain.sum() * 8 / 1000:.0f} ml", file=sys.stderr)
    return folders


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cases", help="normal phantom cases (BraTS layout) on several templates")
    c.add_argument("out")
    c.add_argument("--templates", nargs="+", choices=TEMPLATES, default=list(TEMPLATES))
    c.add_argument("--per-template", type=int, default=8)
    c.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    folders = write_cases(Path(args.out), args.templates, args.per_template, args.seed)
    print(f"wrote {len(folders)} normal cases to {args.out}")


if __name__ == "__main__":
    main()

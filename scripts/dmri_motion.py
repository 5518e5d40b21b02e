"""Head motion between the volumes of a diffusion series: what it does to `run_dmri`'s maps, and the correction.

  python scripts/dmri_motion.py --out /tmp/dmri_motion audit --seeds 1000 1001             # development patients
  python scripts/dmri_motion.py --out /tmp/dmri_motion audit --seeds 3200 3201 3202 --held # held apart
  python scripts/dmri_motion.py --out /tmp/dmri_motion targets --seeds 1000               # b0 vs mean-DW target
  python scripts/dmri_motion.py --out /tmp/dmri_motion table                              # tables from stored rows
  python scripts/dmri_motion.py --out /tmp/dmri_motion timing --shape 96 96 60 --volumes 65         # CPU seconds

The object: the phantom patient ``seed`` (BBBAnomalyLib/phantoms/dmri.py; 1 b0 + 64 directions, b = 1000, SNR 30,
2.5 mm LAS). A head that moves between volumes is simulated with its physics:

* volume i is acquired with the head at pose P_i (rigid, array-axis mm: ``P_i(y) = R_i (y - c) + c + t_i`` maps a
  head point to where it is in the scanner); the b0 (volume 0) is the head's own frame (P_0 = identity);
* a rotated head sees the gradient rotated the other way: the signal of volume i is the one measured along
  ``A R_i^T A^T g_i`` in the head's frame (A: the grid's direction cosines). The patient is re-simulated noiseless
  (SNR 1e9: the same random draws as the plain patient, so the same subject and tumour) with that table, while the
  stored table keeps g_i (what the scanner writes);
* each moved volume is resampled with ``core.registration.resample_rigid`` (cubic B-spline of the noiseless image:
  less blur than trilinear, which would smooth the moved volumes only), then Rician noise at SNR 30 is added to
  every volume with one seed: the motion-free series of the same seed has the same noise, so the comparison
  isolates the motion.

Motions (per DW volume, seeded): ``random_<s>``: independent rigid motions, translation and rotation each of RMS
s mm / s degrees (0.5, 1, 2, 4); ``step_<s>``: the second half of the DW volumes moved by s mm and s degrees (2, 4);
``jerk``: 3 volumes moved by 5 mm and 5 degrees, the rest still; ``drift_<s>``: a linear drift to s mm / s degrees
at the last volume. Each series runs through ``run_dmri`` (RecDiscNet, default threshold, automatic mask) without
and with correction; the map is compared with the motion-free run of the same patient (r inside the analysed
brain; tumour voxel AUC and Dice inside GM+WM of the analysed brain, anomaly volume, NAWM flagged), as
scripts/dmri_unusual_acquisitions.py does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from BBBAnomalyLib.core.registration import RigidFit, resample_rigid  # noqa: E402
from BBBAnomalyLib.core.volume import Volume  # noqa: E402
from BBBAnomalyLib.phantoms import dmri_physics as phys  # noqa: E402
from BBBAnomalyLib.phantoms.dmri import make_dmri_phantom  # noqa: E402

SNR = 30.0


# --- motions -------------------------------------------------------------------------------------------------
def rotation_matrix(angles_deg) -> np.ndarray:
    """Rotation about the three array axes (x, then y, then z), degrees."""
    a, b, c = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose(center, translation_mm, angles_deg) -> RigidFit:
    return RigidFit(rotation_matrix(angles_deg), np.asarray(center, float), np.asarray(translation_mm, float))


def motions(kind: str, n_volumes: int, center, seed: int) -> list:
    """Head poses P_i per volume (None = still); volume 0 (the b0) is always still."""
    rng = np.random.default_rng(seed)
    poses: list = [None] * n_volumes
    dw = list(range(1, n_volumes))
    name, _, size = kind.partition("_")
    s = float(size) if size else 0.0
    if name == "none":
        return poses
    if name == "random":  # RMS |t| = s mm, RMS angle ~ s degrees: each component N(0, s / sqrt 3)
        for i in dw:
            poses[i] = pose(center, rng.normal(0, s / np.sqrt(3), 3), rng.normal(0, s / np.sqrt(3), 3))
    elif name == "step":
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        for i in dw[len(dw) // 2:]:
            poses[i] = pose(center, s * direction, s * axis)  # |angles| = s degrees (small-angle)
    elif name == "jerk":
        for i in rng.choice(dw, 3, replace=False):
            direction = rng.normal(size=3)
            axis = rng.normal(size=3)
            poses[int(i)] = pose(center, 5.0 * direction / np.linalg.norm(direction), 5.0 * axis / np.linalg.norm(axis))
    elif name == "shift":  # every DW volume by s mm (the head moved once, just after the b0)
        direction = rng.normal(size=3)
        for i in dw:
            poses[i] = pose(center, s * direction / np.linalg.norm(direction), (0.0, 0.0, 0.0))
    elif name == "drift":
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        for k, i in enumerate(dw):
            f = (k + 1) / len(dw)
            poses[i] = pose(center, f * s * direction, f * s * axis)
    else:
        raise ValueError(kind)
    return poses


def inverse(fit: RigidFit) -> RigidFit:
    """P^-1(x) = R^T (x - c - t) + c."""
    return RigidFit(fit.rotation.T, fit.center.copy(), -fit.rotation.T @ fit.translation)


# --- the moved patient --------------------------------------------------------------------------------------------

class Patient:
    def __init__(self, seed: int, n_directions: int = 64):
        self.seed = seed
        self.plain = make_dmri_phantom(seed, tumor=True, snr=1e9, n_directions=n_directions)
        self.affine = self.plain.dwi.affine
        self.voxel = self.plain.dwi.voxel_sizes
        acq = self.plain.dwi.acquisition
        self.bvals, self.bvecs = acq.bvals, acq.bvecs
        self.center = np.argwhere(self.plain.masks["brain"]).mean(axis=0) * self.voxel

    def series(self, poses, noise_seed: int = 0) -> Volume:
        """The series acquired with the head at ``poses`` (see the module docstring)."""
        a = self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)
        head = self.bvecs.copy()
        for i, p in enumerate(poses):
            if p is not None:
                head[i] = a @ p.rotation.T @ a.T @ self.bvecs[i]
        if any(p is not None for p in poses):
            with phys.gradient_table_as(self.bvals, head):
                noiseless = make_dmri_phantom(self.seed, tumor=True, snr=1e9, n_directions=len(self.bvals) - 1)
            data = noiseless.dwi.data.copy()
            for i, p in enumerate(poses):
                if p is not None:
                    data[..., i] = np.maximum(resample_rigid(noiseless.dwi.data[..., i], self.voxel, inverse(p),
                                                             order=3), 0.0)
        else:
            data = self.plain.dwi.data.copy()
        data = phys.rician(data, phys.S0["wm"] / SNR, np.random.default_rng(10_000 + noise_seed))
        acq = self.plain.dwi.acquisition
        return Volume(data.astype(np.float32), self.affine.copy(), None, acq)


def true_displacement(poses, brain, voxel) -> np.ndarray:
    return np.array([0.0 if p is None else float(p.displacement_mm(brain, voxel).max()) for p in poses])


# --- measuring -------------------------------------------------------------------------------------------------
def measure(result, patient: Patient, reference=None) -> dict:
    from BBBAnomalyLib.metrics import dice, roc_auc

    masks = patient.plain.masks
    anomaly = result.maps["anomaly"].data
    flagged = result.maps["anomaly_mask"].data > 0
    analysed = result.brain_mask
    region = masks["gm_wm"] & analysed
    truth = masks["tumor"]
    row = {"auc": roc_auc(truth[region], anomaly[region]), "dice": dice(flagged[region], truth[region]),
           "volume_ml": result.report["summary"]["anomaly_volume_ml"],
           "nawm_flagged": float(flagged[masks["nawm"] & analysed].mean()),
           "warnings": [w for w in result.report["warnings"] if "research option" not in w]}
    if reference is not None:
        ref_anomaly, ref_analysed = reference
        both = masks["brain"] & analysed & ref_analysed
        row["r"] = float(np.corrcoef(anomaly[both], ref_anomaly[both])[0, 1])
    return row


def run(dwi, correct: str):
    from BBBAnomalyLib.dmri import DMRIParameters, run_dmri

    params = DMRIParameters(device="cpu")
    if correct is not None:
        params = DMRIParameters(device="cpu", motion_correct=correct)
    return run_dmri(dwi, params)


MOTIONS = ("none", "random_0.5", "random_1", "random_2", "random_4", "step_2", "step_4", "jerk", "drift_3", "shift_0.5",
           "shift_1")


def audit(args) -> None:
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / ("held.json" if args.held else "dev.json")
    stored = json.loads(store.read_text()) if store.is_file() else {}
    for seed in args.seeds:
        patient = Patient(seed)
        reference = None
        for kind in args.motions or MOTIONS:
            key = f"{seed}/{kind}"
            poses = motions(kind, len(patient.bvals), patient.center, seed=7 * seed + len(kind))
            truth = true_displacement(poses, patient.plain.masks["brain"], patient.voxel)
            t0 = time.time()
            dwi = patient.series(poses)
            sim_s = time.time() - t0
            rows = {}
            for mode in ("none", "rigid"):
                t0 = time.time()
                result = run(dwi, mode)
                seconds = time.time() - t0
                if kind == "none" and mode == "none":
                    reference = (result.maps["anomaly"].data.copy(), result.brain_mask.copy())
                row = measure(result, patient, reference)
                row["seconds"] = seconds
                motion = result.report.get("motion") or {}
                if motion.get("largest_displacement_mm"):
                    found = np.asarray(motion["largest_displacement_mm"])
                    row["found_max_mm"] = float(found.max())
                    row["error_mm"] = float(np.abs(found - truth).max())  # the largest displacement's error
                rows[mode] = row
            stored[key] = {"seed": seed, "motion": kind, "true_max_mm": float(truth.max()),
                           "true_mean_max_mm": float(truth[1:].mean()), "simulate_s": sim_s, **rows}
            store.write_text(json.dumps(stored, indent=1, default=float))
            print(f"{key}: true max {truth.max():.2f} mm | " + " | ".join(
                f"{m}: r {rows[m].get('r', 1):.3f} AUC {rows[m]['auc']:.3f} Dice {rows[m]['dice']:.2f} "
                f"vol {rows[m]['volume_ml']:.1f} NAWM {100 * rows[m]['nawm_flagged']:.2f} % "
                f"{rows[m]['seconds']:.0f} s" + (f" found {rows[m].get('found_max_mm', 0):.2f} err "
                                                  f"{rows[m].get('error_mm', 0):.2f}" if m == "rigid" else "")
                + f" warn {len(rows[m]['warnings'])}" for m in rows), flush=True)
    table(args)


def table(args) -> None:
    out = Path(args.out)
    for name in ("dev", "held"):
        store = out / f"{name}.json"
        if not store.is_file():
            continue
        stored = json.loads(store.read_text())
        lines = [f"### {name}", "", "| patient | motion | true max mm | mode | r | AUC | Dice | ml | NAWM % | found mm "
                 "| err mm | s | warnings |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, e in stored.items():
            for mode in ("none", "rigid"):
                r = e[mode]
                lines.append(f"| {e['seed']} | {e['motion']} | {e['true_max_mm']:.2f} | {mode} | "
                             f"{r.get('r', 1):.3f} | {r['auc']:.3f} | {r['dice']:.2f} | {r['volume_ml']:.1f} | "
                             f"{100 * r['nawm_flagged']:.2f} | "
                             f"{r.get('found_max_mm', float('nan')):.2f} | {r.get('error_mm', float('nan')):.2f} | "
                             f"{r['seconds']:.0f} | {'; '.join(w[:80] for w in r['warnings'])} |")
        text = "\n".join(lines)
        (out / f"{name}.md").write_text(text + "\n")
        print(text)


def targets(args) -> None:
    """The registration target: each DW volume to the b0 vs to the mean DW (motion-free and random_2 series):
    the error of the largest displacement found, per volume."""
    from BBBAnomalyLib.core.registration import register_rigid
    from BBBAnomalyLib.dmri.motion import estimate_motion, registration_mask

    for seed in args.seeds:
        patient = Patient(seed)
        brain = patient.plain.masks["brain"]
        for kind in args.motions or ("none", "random_2", "step_4"):
            poses = motions(kind, len(patient.bvals), patient.center, seed=7 * seed + len(kind))
            dwi = patient.series(poses)
            data, v = dwi.data, patient.voxel
            region = registration_mask(brain, v)
            b0 = data[..., 0]
            t0 = time.time()
            to_b0 = [register_rigid(b0, data[..., i], v, region) for i in range(1, data.shape[3])]
            t_b0 = time.time() - t0
            # the true pose vs the estimate: the largest |P(x) - T(x)| over the brain
            pos_b0 = np.array([pose_error(f, poses[i + 1], brain, v) for i, f in enumerate(to_b0)])
            est = estimate_motion(data, v, [0], list(range(1, data.shape[3])), brain)
            pos_mean = np.array([pose_error(est.fits[i], poses[i], brain, v) for i in range(1, data.shape[3])])
            print(f"{seed} {kind}: to b0 {t_b0:.0f} s, pose error max over brain: median {np.median(pos_b0):.2f} "
                  f"p90 {np.percentile(pos_b0, 90):.2f} max {pos_b0.max():.2f} mm | mean-DW then b0 "
                  f"{est.seconds:.0f} s: median {np.median(pos_mean):.2f} p90 {np.percentile(pos_mean, 90):.2f} "
                  f"max {pos_mean.max():.2f} mm", flush=True)


def pose_error(fit, true_pose, brain, voxel) -> float:
    """Largest distance over the brain between where the estimate and the truth put a head point."""
    points = np.argwhere(brain) * np.asarray(voxel, float)
    truth = points if true_pose is None else true_pose.apply(points)
    return float(np.linalg.norm(fit.apply(points) - truth, axis=1).max())


def timing(args) -> None:
    """CPU time of the motion estimate against the rest of run_dmri on a whole-brain-sized series: the phantom (2.5 mm)
    padded (or cropped) to ``--shape`` at its own voxels, background Rician-like noise, one b0 + ``--volumes``-1
    directions, random_2 motion; single-threaded (``time.process_time``: the shared machine's load does not enter)."""
    import torch

    from BBBAnomalyLib.dmri.motion import estimate_motion

    torch.set_num_threads(1)
    patient = Patient(1000, n_directions=args.volumes - 1)
    poses = motions("random_2", len(patient.bvals), patient.center, seed=1)
    dwi = patient.series(poses)
    shape = dwi.data.shape[:3]
    before = [max(0, (t - n) // 2) for n, t in zip(shape, args.shape)]
    after = [max(0, t - n - b) for n, t, b in zip(shape, args.shape, before)]
    crop = [max(0, (n - t) // 2) for n, t in zip(shape, args.shape)]
    window = tuple(slice(c, c + t) for c, t in zip(crop, args.shape))
    data = np.pad(dwi.data, list(zip(before, after)) + [(0, 0)])[window]
    brain = np.pad(patient.plain.masks["brain"], list(zip(before, after)))[window]
    rng = np.random.default_rng(0)
    outside = data == 0
    data[outside] = np.abs(rng.normal(0.0, phys.S0["wm"] / SNR, int(outside.sum())))
    affine = dwi.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ (np.asarray(before, float) - np.asarray(crop, float))
    big = Volume(data.astype(np.float32), affine, None, dwi.acquisition)
    t0 = time.process_time()
    estimate = estimate_motion(big.data, big.voxel_sizes, [0], list(range(1, data.shape[3])), brain, threads=1)
    t1 = time.process_time()
    run(big, "none")
    t2 = time.process_time()
    print(f"{big.data.shape} at {big.voxel_sizes.round(2).tolist()} mm: motion estimate {t1 - t0:.1f} s CPU "
          f"({(t1 - t0) / (data.shape[3] - 1):.2f} s a DW volume; {len(estimate.moved())} to resample), the rest of "
          f"run_dmri {t2 - t1:.1f} s CPU", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("audit")
    p.add_argument("--seeds", type=int, nargs="+", default=[1000])
    p.add_argument("--motions", nargs="*")
    p.add_argument("--held", action="store_true")
    p = sub.add_parser("targets")
    p.add_argument("--seeds", type=int, nargs="+", default=[1000])
    p.add_argument("--motions", nargs="*")
    sub.add_parser("table")
    p = sub.add_parser("timing")
    p.add_argument("--shape", type=int, nargs=3, default=[96, 96, 60])
    p.add_argument("--volumes", type=int, default=65)
    args = parser.parse_args()
    {"audit": audit, "targets": targets, "table": table, "timing": timing}[args.command](args)


if __name__ == "__main__":
    main()

"""Retrain the bundled T1/FLAIR demo weights: phantoms plus the real BraTS-space cases.

  python scripts/train_t1flair_demo.py --out BBBAnomalyLib/weights                  # t1flair-*-demo
  python scripts/train_t1flair_demo.py --out folds/DU --hold-out TCGA-DU-7294       # t1flair-*-loo-DU

Each of the three models is fine-tuned (`--init`) from its phantom-only weights (t1flair-*-phantom,
whose model cards hold how they were trained) on phantoms plus the real cases of ../shared/data/brats
that have a segmentation (TCGA-DU-7294 and TCGA-FG-6692; BraTS-GLI-00001-000 has none, so it gives
neither the ET label nor the tumor mask that training needs). A real case is used several times per
epoch (--repeat) because it is one case among 20-40 phantoms. --hold-out leaves one real case out:
that is how docs/validation.md gets real-case numbers that are not in-sample.
--off-tumor-label random (an experiment, not the bundled recipe) gives the diffusion model a random
ET label on slices without tumor, so that with one real case per label the label does not come to
stand for that case's scanner; docs/validation.md compares the two.

About 15 min of one CPU core per set of three models; the phantom case folders are written once
under --cases and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_WITH_SEGMENTATION = ("TCGA-DU-7294", "TCGA-FG-6692")
PHANTOM_SEEDS = {"diffusion": (0, 40), "identifier": (100, 140), "calibration": (6000, 6020), "normal": (200, 220)}
REPEATS = {"diffusion": 8, "identifier": 10, "cae": 5}

LIMITATIONS = {
    "diffusion": ("Two real cases, one per ET label, so the label is confounded with the case: the enhancing synthesis "
                  "also learned TCGA-FG-6692's whole-brain T1 -> T1Gd contrast and applies it to other brains "
                  "(docs/validation.md, T1/FLAIR). Otherwise as t1flair-diffusion-phantom: 48x48 slices (about 4 mm "
                  "pixels), U-Net width 16 without attention, minutes of CPU training, 4 DDIM steps."),
    "identifier": ("Fine-tuned on syntheses of 40 phantoms plus the real case(s); Platt calibration fitted on 20 "
                   "phantoms (seeds 6000-6019). Identifiers memorise their training cases: status calls on the real "
                   "training cases are in-sample and say nothing about other patients."),
    "cae": ("Normal anatomy = 20 noisy copies of the MNI152 phantom plus the normal-appearing tissue of the real "
            "case(s) (tumor and 5 mm around it masked out of the loss); the patient-score z is against the 20 "
            "normal phantoms only, so every real brain scores high."),
}
DISCLAIMER = ("A DEMONSTRATION model: fine-tuned for minutes on a CPU from phantom-trained weights, on simulated "
              "phantoms plus {n} real glioma case(s) with algorithmic segmentations. Not clinically validated; never "
              "use it for a clinical decision. Retrain on your own BraTS-layout data (see `command`).")


def _bbbanomaly(*args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread is fastest on a shared 2-core CPU
    subprocess.run([sys.executable, "-m", "BBBAnomalyLib", *args], check=True, cwd=REPO, env=env)


def _phantom_cases(root: Path) -> dict[str, Path]:
    folders = {}
    for kind, (first, stop) in PHANTOM_SEEDS.items():
        folder = root / kind
        if not folder.is_dir() or len([p for p in folder.iterdir() if p.is_dir()]) != stop - first:
            cmd = [sys.executable, str(REPO / "scripts" / "validate_t1flair.py"), "cases", str(folder),
                   "--seeds", str(first), str(stop)] + (["--normal"] if kind == "normal" else [])
            subprocess.run(cmd, check=True)
        folders[kind] = folder
    return folders


def _finish_card(path: Path, real: list[str], held_out: str | None, what: str, retrain: str) -> None:
    card = json.loads(path.read_text(encoding="utf-8"))
    kind = card["kind"]
    seeds = PHANTOM_SEEDS["normal" if kind == "cae" else kind]
    real_text = ", ".join(real)
    card["trained_on"] = (
        f"fine-tuned from {card['initialised_from']['name']} (phantoms only) on structural phantoms "
        f"(BBBAnomalyLib.phantoms.structural, seeds {seeds[0]}-{seeds[1] - 1}"
        + (", normal anatomy" if kind == "cae" else "") + ") plus the real case(s) "
        f"{real_text} from ../shared/data/brats (TCGA-GBM/LGG via the BraTS-Toolkit examples, CC BY 3.0; "
        "BraTS space; algorithmic, not expert, segmentations), each used "
        f"{REPEATS[kind]} times per epoch"
        + (" with its tumor and 5 mm around it excluded from the loss" if kind == "cae" else "")
        + (f"; {held_out} held out (leave-one-case-out fold)" if held_out else
           "; BraTS-GLI-00001-000 not used (no segmentation)"))
    card["intended_use"] = f"bbbanomaly t1flair ({what}); demonstration and testing."
    card["limitations"] = LIMITATIONS[kind]
    card["disclaimer"] = DISCLAIMER.format(n=len(real))
    card["retrain"] = retrain
    card["reproducibility"] = ("Trained with one torch thread (OMP_NUM_THREADS=1) on a 2-core CPU; torch's CPU "
                               "kernels are not bit-reproducible across machines, so a retrained file has another sha256.")
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the weights and model cards")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "brats"), help="the real cases")
    ap.add_argument("--cases", default=str(Path("t1flair_phantom_cases").resolve()),
                    help="where the phantom case folders are written (reused when complete)")
    ap.add_argument("--hold-out", choices=REAL_WITH_SEGMENTATION, help="leave this real case out (a validation fold)")
    ap.add_argument("--off-tumor-label", choices=["case", "random"], default="case",
                    help="ET label of the diffusion model's slices without tumor: the case's (default, the bundled "
                         "recipe) or random (the experiment in docs/validation.md)")
    ap.add_argument("--models", nargs="+", choices=["diffusion", "identifier", "cae"],
                    default=["diffusion", "identifier", "cae"], help="which of the three to train (default all)")
    ap.add_argument("--synthesis", help="diffusion weights the identifier is trained on (default: the one trained here)")
    args = ap.parse_args()

    real = [c for c in REAL_WITH_SEGMENTATION if c != args.hold_out]
    real_dirs = [str(Path(args.data) / c) for c in real]
    if not all(Path(d).is_dir() for d in real_dirs):
        sys.exit(f"the real cases {', '.join(real)} are not all under {args.data} (--data)")
    tag = f"loo-{args.hold_out.split('-')[1]}" if args.hold_out else "demo"
    out = Path(args.out).resolve()
    phantoms = _phantom_cases(Path(args.cases))
    retrain = ("python scripts/train_t1flair_demo.py --out OUT" + (f" --hold-out {args.hold_out}" if args.hold_out else "")
               + ("" if args.off_tumor_label == "case" else " --off-tumor-label random"))
    names = {k: f"t1flair-{k}-{tag}" for k in ("diffusion", "identifier", "cae")}
    repeat = lambda k: ["--repeat", "1", *[str(REPEATS[k])] * len(real)]

    if "diffusion" in args.models:
        _bbbanomaly("train", "t1gd-diffusion", str(phantoms["diffusion"]), *real_dirs, *repeat("diffusion"),
                    "--init", "t1flair-diffusion-phantom", "--out", str(out), "--name", names["diffusion"],
                    "--epochs", "8", "--other-slices", "0.5", "--tumor-weight", "4", "--enhancement-weight", "20",
                    "--batch-size", "16", "--lr", "2e-4", "--off-tumor-label", args.off_tumor_label, "--device", "cpu")
        _finish_card(out / f"{names['diffusion']}.json", real, args.hold_out,
                     "synthetic T1Gd with both ET labels + whole-tumor segmentation head", retrain)
    if "identifier" in args.models:
        _bbbanomaly("train", "bbb-identifier", str(phantoms["identifier"]), *real_dirs, *repeat("identifier"),
                    "--init", "t1flair-identifier-phantom", "--synthesis", args.synthesis or str(out / f"{names['diffusion']}.pt"),
                    "--out", str(out), "--name", names["identifier"], "--epochs", "3", "--batch-size", "16",
                    "--lr", "5e-4", "--steps", "4", "--device", "cpu", "--calibration-cases", str(phantoms["calibration"]))
        _finish_card(out / f"{names['identifier']}.json", real, args.hold_out,
                     f"BBB status by contrastive maximum; only meaningful with {names['diffusion']}", retrain)
    if "cae" in args.models:
        _bbbanomaly("train", "cae", str(phantoms["normal"]), *real_dirs, *repeat("cae"), "--tumor-cases", "mask",
                    "--tumor-margin", "5", "--init", "t1flair-cae-phantom", "--out", str(out), "--name", names["cae"],
                    "--epochs", "15", "--batch-size", "4", "--lr", "1e-3", "--device", "cpu")
        _finish_card(out / f"{names['cae']}.json", real, args.hold_out, "voxel anomaly map and patient score", retrain)
    for stale in out.glob("t1flair-*.checkpoint.pt"):
        stale.unlink()
    print(f"wrote {', '.join(names.values())} to {out}")


if __name__ == "__main__":
    main()

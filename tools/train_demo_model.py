"""Train the bundled demo model on synthetic phantoms and register it in Resources/models.json.

    python tools/train_demo_model.py --iterations 1500 --out runs/demo

Trains on phantoms of seeds 1000..1000+N (never used for evaluation; held-out evaluation uses
seeds 0..4), reduced-width No-New-Net on the CPU. Resumes from runs/demo/checkpoint.pt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.model.registry import DEFAULT_MODEL, install_bundled
from BoneSegmentationLib.training.train import TrainConfig, prepare_case, train, write_history

TRAIN_SEED0 = 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--iterations", type=int, default=6000)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--spacing", type=float, default=4.0)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--width", type=int, default=12)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--validate-every", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-2,
                    help="higher than the paper's 1e-3, with poly decay: fits a CPU budget of hours")
    ap.add_argument("--lr-schedule", default="poly")
    ap.add_argument("--version", default="0.2")
    ap.add_argument("--init", default=None, help="fine-tune from this model file (its architecture must match)")
    args = ap.parse_args()

    cases = []
    for k in range(args.cases + 1):
        seed = TRAIN_SEED0 + k
        ct, lab, spec = make_phantom(seed, spacing=2.0, partial=None if k else False)
        cases.append(prepare_case(f"phantom_{seed}", ct, lab, args.spacing))
        print(f"phantom {seed}: {spec.posture}, fov {spec.fov}", flush=True)
    cfg = TrainConfig(
        out_dir=args.out, spacing=args.spacing, patch=args.patch, width=args.width, levels=args.levels,
        iterations=args.iterations, validate_every=args.validate_every, checkpoint_every=50, name=DEFAULT_MODEL,
        lr=args.lr, lr_schedule=args.lr_schedule, init_model=args.init,
        version=args.version,
        description=("DEMO ONLY: trained on synthetic skeleton phantoms, not on real CT. "
                     "Shows the pipeline; not for real anatomy."),
        data_description=f"synthetic phantoms, seeds {TRAIN_SEED0 + 1}..{TRAIN_SEED0 + args.cases} "
                         f"(validation seed {TRAIN_SEED0})",
        extra={"trained_on_synthetic_phantoms": True})
    history = Path(args.out) / "history.jsonl"
    Path(args.out).mkdir(parents=True, exist_ok=True)

    def log(record):
        write_history(history, record)
        if record["iteration"] % 25 == 0 or "val_dice" in record:
            print(json.dumps(record), flush=True)

    path = train(cfg, cases[1:], cases[:1], log)
    entry = install_bundled(path, DEFAULT_MODEL, args.version,
                            "Demo model trained on synthetic phantoms only (not for real anatomy)")
    print(f"installed {entry.bundled} ({entry.size / 2**20:.1f} MiB), sha256 {entry.sha256}", file=sys.stderr)


if __name__ == "__main__":
    main()

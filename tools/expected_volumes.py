"""Fill the bone table's expected-volume columns (``volume_ml_low``, ``volume_ml_high``).

    python tools/expected_volumes.py [--seeds 100 101 ...]

The review ranking flags a bone whose segmented volume falls outside this range. No 125-bone
volume statistics of real anatomy are available to this project yet, so the range is measured
on full-field phantoms (seeds reserved for this, used neither for training nor evaluation) and
widened (x0.5 below the smallest, x1.6 above the largest) for real inter-subject variation.
Replace with measurements on real labelled scans when they exist; the columns are the only
place the numbers live.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneSegmentationLib.core.files import atomic_write
from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.core.resources import resource_path

LOW_FACTOR, HIGH_FACTOR = 0.5, 1.6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(100, 106)))
    args = ap.parse_args()
    volumes = []
    for seed in args.seeds:
        _, labels, _ = make_phantom(seed, spacing=2.0, partial=False)
        voxel_ml = np.prod(labels.GetSpacing()) / 1000.0
        volumes.append(np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=126) * voxel_ml)
    v = np.array(volumes)
    path = resource_path("bones.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fields = [k for k in rows[0] if k not in ("volume_ml_low", "volume_ml_high")] + ["volume_ml_low", "volume_ml_high"]
    for r in rows:
        i = int(r["index"])
        low, high = (0.0, 0.0) if i == 0 else (LOW_FACTOR * v[:, i].min(), HIGH_FACTOR * v[:, i].max())
        r["volume_ml_low"], r["volume_ml_high"] = f"{low:.3g}", f"{high:.3g}"
    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields, lineterminator="\r\n")
            w.writeheader()
            w.writerows(rows)
    atomic_write(Path(path), write)
    print(f"updated {path} from seeds {args.seeds}")


if __name__ == "__main__":
    main()

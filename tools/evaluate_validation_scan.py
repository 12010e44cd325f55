"""Models side by side on the real validation CT (not the test set): bone in the heart and aorta,
and T12, on TotalSegmentator's own chest CT (``evaluation/validation_scan.py``).

    python tools/evaluate_validation_scan.py --model Resources/bones-phantom-demo.pt runs/realct46/bones-phantom-demo.pt

The scan is fetched once (38 MB archive from PyPI, verified) into ``--folder``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.core.imageio import read_ct
from BoneSegmentationLib.evaluation.validation_scan import fetch_validation_scan, measure
from BoneSegmentationLib.inference.options import InferenceOptions
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=[None], help="model files or registered names (default: bundled)")
    ap.add_argument("--folder", type=Path, default=Path("runs/validation-scan"), help="where the scan is kept")
    ap.add_argument("--no-anatomy", action="store_true", help="the network's labels without the anatomical step")
    ap.add_argument("--save", action="store_true", help="write each model's labels beside the scan")
    args = ap.parse_args(argv)
    folder = fetch_validation_scan(args.folder)
    ct, _ = read_ct(folder / "chest_ct.nii.gz")
    table = default_table()
    print("| model | heart called bone | aorta called bone | heart and aorta | T12 Dice | T12 found as bone | time |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.model:
        path = resolve_model(spec)
        start = time.perf_counter()
        result = Segmenter(load_model(path), InferenceOptions(anatomy=not args.no_anatomy)).segment(ct)
        seconds = time.perf_counter() - start
        f = measure(result.labels, folder, table)
        if args.save:
            sitk.WriteImage(result.labels, str(folder / f"labels-{path.parent.name}-{path.stem}.nii.gz"))
        print(f"| {path} | {100 * f.heart_called_bone:.2f} % | {100 * f.aorta_called_bone:.2f} % | "
              f"{100 * f.vessels_called_bone:.2f} % | {f.t12_dice:.3f} | {f.t12_found:.3f} | {seconds:.0f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

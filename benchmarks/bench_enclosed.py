"""Filling the cores walled by a bone and cortex (``consistency/marrow.fill_enclosed``) on each
slab's box of walls, against the whole slices it read until session 43, side by side in one process.

An in-slice hole lies inside the box of the voxels that wall it (labelled, or at 300 HU and
above), and a voxel outside the walls at the box's edge reaches the slice's edge through the
unwalled rest: the holes found in the box are the slice's, so the result is the same voxel for
voxel, which this script checks. The saving is the air and soft tissue around the bones across the
field of view. Input: the demo's phantom (seed 4, with surroundings) on a clinical thin-slice grid
(512 x 512 pixels over a 500 mm field of view, 1 mm slices), segmented by the bundled model without
the anatomical step (so the cores are still open), its labels, CT and bone probability as the
pipeline hands them to the fill.
    python benchmarks/bench_enclosed.py                  # 300 slices
    python benchmarks/bench_enclosed.py --slices 600 --repeat 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

import BoneSegmentationLib.consistency.marrow as marrow  # noqa: E402
from BoneSegmentationLib.core.bones import default_table  # noqa: E402
from BoneSegmentationLib.inference.options import InferenceOptions  # noqa: E402
from BoneSegmentationLib.inference.segmenter import Segmenter  # noqa: E402
from BoneSegmentationLib.model.modelfile import load_model  # noqa: E402
from BoneSegmentationLib.model.registry import resolve_model  # noqa: E402
from bench_orientation import thin_slice_phantom  # noqa: E402


def whole_slices(walled: np.ndarray, axis: int) -> tuple[slice, slice, slice]:
    """The box before session 43: every slice whole."""
    return tuple(slice(None) if a == axis else slice(0, n) for a, n in enumerate(walled.shape))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, alternating, best time kept")
    args = ap.parse_args()
    pixel = 500.0 / 512
    ct = thin_slice_phantom(512, args.slices, (pixel, pixel, 1.0))
    result = Segmenter(load_model(resolve_model(None)), InferenceOptions(device="cpu", anatomy=False)).segment(ct)
    labels, bone, table = result.labels, result.bone, default_table()
    print(f"CT 512 x 512 x {args.slices} at {pixel:.3f} x {pixel:.3f} x 1 mm; bundled model, no anatomical step")
    best, outputs = {}, {}
    box = marrow.walls_box
    for _ in range(args.repeat):
        for name, boxing in (("whole slices (before)", whole_slices), ("the walls' box", box)):
            marrow.walls_box = boxing
            try:
                with measure() as m:
                    filled, count = marrow.fill_enclosed(labels, ct, bone, table)
            finally:
                marrow.walls_box = box
            outputs[name] = (sitk.GetArrayFromImage(filled), count)
            if name not in best or m.elapsed_s < best[name][0]:
                best[name] = (m.elapsed_s, m.peak_mib)
    (t0, m0), (t1, m1) = best["whole slices (before)"], best["the walls' box"]
    for name, (t, m) in best.items():
        print(f"{name:22s} {t:6.2f} s, peak {m:6.0f} MiB above the start, {outputs[name][1]} voxels filled")
    same = np.array_equal(outputs["whole slices (before)"][0], outputs["the walls' box"][0])
    print(f"box / whole: time {t1 / t0:.2f}x, peak memory {m1 / max(m0, 1e-9):.2f}x; the same labels: {same}")


if __name__ == "__main__":
    main()

"""The 4 mm labels' way to the input CT's grid (``inference/to_input_grid.py``), resampling only
the bones' box against resampling the whole grid (the code before session 41), side by side in
one process, with the labels checked voxel for voxel.

The input grid is a clinical one: 512 x 512 voxels across at the in-plane spacing given (0.8 mm:
a 410 mm field of view, as an abdominal CT's), centred on phantom seed 4's chest, so that air,
table and soft tissue surround the skeleton as in a real scan.

    pip install -e ".[benchmark]"
    python benchmarks/bench_to_input_grid.py                      # 0.8 x 0.8 x 1 mm, 200 mm
    python benchmarks/bench_to_input_grid.py --spacing 0.75 0.33  # thin slices
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.inference import to_input_grid  # noqa: E402
from BoneSegmentationLib.inference.stitch import fine_grid  # noqa: E402
from BoneSegmentationLib.inference.to_input_grid import labels_to_input_grid  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import make_phantom  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--spacing", type=float, nargs=2, default=[0.8, 1.0], metavar=("IN_PLANE", "SLICE"))
    ap.add_argument("--mm", type=float, default=200.0, help="mm of the chest, head to foot (default 200)")
    ap.add_argument("--across", type=int, default=512, help="voxels across, each way (default 512)")
    args = ap.parse_args()
    ct2, ref2, _ = make_phantom(args.seed, spacing=2.0, partial=False)
    ref2 = sitk.DICOMOrient(ref2, "LPS")
    s_in, s_z = args.spacing
    size = ref2.GetSize()
    centre = np.array(ref2.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size]))
    grid = sitk.Image([args.across, args.across, int(args.mm / s_z)], sitk.sitkInt16)
    grid.SetSpacing((s_in, s_in, s_z))
    grid.SetOrigin(tuple(centre - np.array([args.across * s_in, args.across * s_in, args.mm]) / 2))
    coarse = sitk.Resample(ref2, fine_grid(ref2, (4.0, 4.0, 4.0), 1), sitk.Transform(), sitk.sitkNearestNeighbor)
    bone = sitk.SmoothingRecursiveGaussian(sitk.Cast(coarse > 0, sitk.sitkFloat32), 4.0)
    box = to_input_grid._input_box_of_bone(sitk.GetArrayViewFromImage(coarse) > 0, coarse, grid)
    print(f"phantom seed {args.seed}'s chest on a {grid.GetSize()} grid at {s_in:g} x {s_in:g} x {s_z:g} mm; "
          f"the bones' box: {box}")
    boxed_function = to_input_grid._input_box_of_bone
    to_input_grid._input_box_of_bone = lambda *a: ((0, 0, 0), grid.GetSize())
    try:
        with measure() as whole_run:
            whole = sitk.GetArrayFromImage(labels_to_input_grid(coarse, grid, bone=bone))
    finally:
        to_input_grid._input_box_of_bone = boxed_function
    with measure() as boxed_run:
        boxed = sitk.GetArrayFromImage(labels_to_input_grid(coarse, grid, bone=bone))
    same = np.array_equal(whole, boxed)
    print("| run | time s | peak MiB above start | time ratio to the reference |")
    print("|---|---|---|---|")
    print(f"| whole grid resampled (reference) | {whole_run.elapsed_s:.2f} | {whole_run.peak_mib:.0f} | 1.00x |")
    print(f"| the bones' box only | {boxed_run.elapsed_s:.2f} | {boxed_run.peak_mib:.0f} | "
          f"{boxed_run.elapsed_s / whole_run.elapsed_s:.2f}x |")
    print(f"identical labels: {same} ({np.count_nonzero(boxed)} bone voxels)")
    if not same:
        raise SystemExit("the label maps differ")


if __name__ == "__main__":
    main()

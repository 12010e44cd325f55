"""Edge growth on a fine CT (``inference/edges.py``), against the whole-slab growth it replaced,
side by side in one process.

Edge growth takes up to a model voxel of the input's voxels per axis (4 mm: 5 steps at 0.8 mm,
12 at 0.33 mm), each step a box maximum over a slab and the margins its reach needs. It ran over
every slab's full cross-section in 32-slice slabs, so on a thin-slice CT it cost more than the
network (a 0.75 x 0.75 x 0.33 mm abdomen: 31 s of 47). Now each slab is cut to the labelled bones'
box across the body plus the reach (a voxel that can be grown into lies within the steps of a
bone, and the opening that judges it reads two radii further, so the result is the same voxel for
voxel, which this script checks), and a slab is at least twice the reach deep, so that margins read
twice cost no more than the slab; and after the first step only the voxels the last step took are
read (``edges.grow_from_front``), not the whole box each step (``grow_dense``, sessions 39-40, run
here as a second reference through the same function). The references below are the previous code,
kept here only to be measured against.

    pip install -e ".[benchmark]"
    python benchmarks/bench_edges.py                      # phantom seed 4's chest, 0.8 x 0.8 x 1 mm
    python benchmarks/bench_edges.py --spacing 0.75 0.33  # thin slices
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.inference import edges  # noqa: E402
from BoneSegmentationLib.inference.edges import (BRIGHT_HU, EDGE_HU, SLAB_SLICES, growth_steps,  # noqa: E402
                                                 grow_into_edges, thick_bright, thick_radii)
from BoneSegmentationLib.inference.stitch import fine_grid  # noqa: E402
from BoneSegmentationLib.inference.to_input_grid import labels_to_input_grid  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import make_phantom  # noqa: E402


def grow_whole_slabs(labels: sitk.Image, ct: sitk.Image, model_mm: float) -> tuple[np.ndarray, int]:
    """The previous edge growth (session 35 to 38): every 32-slice slab whole, a 3 x 3 x 3 dilation per step."""
    steps = growth_steps(ct.GetSpacing(), model_mm)
    out = sitk.GetArrayViewFromImage(labels)
    hu = sitk.GetArrayViewFromImage(ct)
    radii = thick_radii(ct.GetSpacing())
    margin = steps[0] + 2 * radii[0]
    added = 0
    grown_all = sitk.GetArrayFromImage(labels)
    for z0 in range(0, out.shape[0], SLAB_SLICES):
        z1 = min(z0 + SLAB_SLICES, out.shape[0])
        lo, hi = max(0, z0 - margin), min(out.shape[0], z1 + margin)
        part = out[lo:hi].copy()
        if not part.any():
            continue
        block = hu[lo:hi]
        bright = (block >= EDGE_HU) & ~thick_bright((block >= BRIGHT_HU) & (part == 0), radii)
        for step in range(max(steps)):
            grown = ndimage.grey_dilation(part, size=tuple(3 if step < n else 1 for n in steps))
            take = (part == 0) & (grown > 0) & bright
            if not take.any():
                break
            part[take] = grown[take]
        core = part[z0 - lo:z0 - lo + (z1 - z0)]
        added += int(np.count_nonzero(core != out[z0:z1]))
        grown_all[z0:z1] = core
    return grown_all, added


def grow_dense(part: np.ndarray, bright: np.ndarray, steps: tuple[int, int, int]) -> None:
    """The previous growth inside a slab (sessions 39-40): every step a box maximum over the whole
    bones' box, one axis at a time."""
    for step in range(max(steps)):
        grown = part
        for axis, n in enumerate(steps):
            if step < n:
                grown = ndimage.maximum_filter1d(grown, 3, axis=axis, mode="constant", cval=0)
        take = (part == 0) & (grown > 0) & bright
        if not take.any():
            break
        part[take] = grown[take]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--spacing", type=float, nargs=2, default=[0.8, 1.0], metavar=("IN_PLANE", "SLICE"))
    ap.add_argument("--slices", type=int, default=200, help="mm of the chest, head to foot (default 200)")
    args = ap.parse_args()
    ct2, ref2, _ = make_phantom(args.seed, spacing=2.0, partial=False)
    ct2, ref2 = sitk.DICOMOrient(ct2, "LPS"), sitk.DICOMOrient(ref2, "LPS")
    size = ct2.GetSize()
    z0 = max(0, size[2] // 2 - args.slices // 4)  # the chest and upper abdomen, the middle of the phantom
    x0 = size[0] // 5
    ct2 = ct2[x0:size[0] - x0, :, z0:z0 + args.slices // 2]
    ref2 = ref2[x0:size[0] - x0, :, z0:z0 + args.slices // 2]
    s_in, s_z = args.spacing
    grid = sitk.Image([int(ct2.GetSize()[0] * 2 / s_in), int(ct2.GetSize()[1] * 2 / s_in),
                       int(ct2.GetSize()[2] * 2 / s_z)], sitk.sitkInt16)
    grid.SetSpacing((s_in, s_in, s_z))
    grid.SetOrigin(ct2.GetOrigin())
    grid.SetDirection(ct2.GetDirection())
    ct = sitk.Resample(ct2, grid, sitk.Transform(), sitk.sitkLinear, -1024, sitk.sitkInt16)
    coarse = sitk.Resample(ref2, fine_grid(ct2, (4.0, 4.0, 4.0), 1), sitk.Transform(), sitk.sitkNearestNeighbor)
    bone = sitk.SmoothingRecursiveGaussian(sitk.Cast(coarse > 0, sitk.sitkFloat32), 4.0)
    labels = labels_to_input_grid(coarse, ct, bone=bone)  # the 4 mm labels as they reach the input grid
    print(f"phantom seed {args.seed}'s chest at {s_in:g} x {s_in:g} x {s_z:g} mm: {ct.GetSize()} voxels, "
          f"{growth_steps(ct.GetSpacing(), 4.0)} growth steps (z, y, x)")
    with measure() as old_run:
        old, old_added = grow_whole_slabs(labels, ct, 4.0)
    front_step = edges.grow_from_front
    edges.grow_from_front = grow_dense
    try:
        with measure() as box_run:
            box, box_added = grow_into_edges(labels, ct, 4.0)
    finally:
        edges.grow_from_front = front_step
    with measure() as new_run:
        new, new_added = grow_into_edges(labels, ct, 4.0)
    same = all(np.array_equal(old, sitk.GetArrayViewFromImage(other)) for other in (box, new))
    print("| run | time s | peak MiB above start | voxels grown | time ratio to the reference |")
    print("|---|---|---|---|---|")
    print(f"| whole-slab growth (reference) | {old_run.elapsed_s:.2f} | {old_run.peak_mib:.0f} | {old_added} | 1.00x |")
    for name, run, added in (("bones' box, every step over the box", box_run, box_added),
                             ("grow_into_edges (bones' box, then the front)", new_run, new_added)):
        print(f"| {name} | {run.elapsed_s:.2f} | {run.peak_mib:.0f} | {added} | "
              f"{run.elapsed_s / old_run.elapsed_s:.2f}x |")
    print(f"identical labels: {same}")
    if not same:
        raise SystemExit("the growths differ")


if __name__ == "__main__":
    main()

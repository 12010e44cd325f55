"""The long bones' canals filled on the input grid (``consistency.marrow.fill_canals``), measured
on fresh synthetic images: the pipeline runs once per image, and the labels that reach the fill are
scored against the image's labels as they are, with their holes filled, and with their open rings
closed too at each ratio of a piece to its convex hull (``OPEN_RING``, the default, in each row).

    python tools/evaluate_canal_fill.py --seeds 1996 1997 1998 1999 --fov abdomen --spacing 1.5 3

The synthesiser paints the femora's and humeri's shafts with fatty marrow (-80-60 HU), as a real
adult's are; the real scans of ../shared/data/real are the test set, never the place to choose.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import BoneSegmentationLib.inference.segmenter as segmenter_module
from BoneSegmentationLib.consistency.marrow import OPEN_RING
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.evaluation.metrics import dice_per_class
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.synthetic.anatomy import FOV_KINDS, load_source, synthesise
from shared_data import ANATOMY  # ../shared, named once for the tools

LONG_BONES = ("femur_left", "femur_right", "humerus_left", "humerus_right")
RATIOS = tuple(sorted({0.5, 0.6, 0.7, 0.8, 1.0, OPEN_RING}))  # a piece filled to its convex hull when it covers less than this of it


def scores(labels: sitk.Image, reference: sitk.Image) -> tuple[float, dict[str, float]]:
    """Bone foreground Dice, and the Dice of each long bone with at least 100 reference voxels."""
    table = default_table()
    pred, ref = sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(reference)
    fg = 2 * np.count_nonzero((pred > 0) & (ref > 0)) / max(1, np.count_nonzero(pred > 0) + np.count_nonzero(ref > 0))
    per_class = dice_per_class(pred, ref, table.num_classes)
    counts = np.bincount(ref.ravel(), minlength=table.num_classes)
    return fg, {name: per_class[table.by_name(name).index] for name in LONG_BONES
                if counts[table.by_name(name).index] >= 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bones-phantom-demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1996, 1997, 1998, 1999])
    ap.add_argument("--spacing", type=float, nargs="+", default=[1.5, 3.0])
    ap.add_argument("--fov", choices=FOV_KINDS, default=None)
    ap.add_argument("--anatomy", default=str(ANATOMY))
    args = ap.parse_args()

    seen: dict[str, sitk.Image] = {}
    real_fill = segmenter_module.fill_canals

    def recording_fill(labels, table):  # the labels on the input grid before and after the fill
        seen["before"] = labels
        filled, n = real_fill(labels, table)  # as the pipeline runs it
        seen["after"], _ = real_fill(labels, table, open_ring=0.0)
        for ratio in RATIOS:
            seen[f"convex {ratio}"], _ = real_fill(labels, table, open_ring=ratio)
        return filled, n

    segmenter_module.fill_canals = recording_fill
    segmenter = Segmenter(load_model(resolve_model(args.model, allow_download=False)))
    source = load_source(Path(args.anatomy))
    variants = ["after"] + [f"convex {ratio}" for ratio in RATIOS]
    totals = {key: [] for key in ["before"] + variants}
    print(f"| seed | spacing | view | filled voxels | fg before -> holes / open rings under {OPEN_RING} | "
          f"long bones' Dice before -> holes / open rings under {OPEN_RING} |")
    print("|---|---|---|---|---|---|")
    for seed, spacing in itertools.product(args.seeds, args.spacing):
        case = synthesise(source, seed, spacing=spacing, fov=args.fov)
        result = segmenter.segment(case.ct)
        scored = {key: scores(seen[key], case.labels) for key in totals}
        for key in totals:
            totals[key].extend(scored[key][1].values())
        (fg0, bones0), (fg1, bones1), (fg2, bones2) = scored["before"], scored["after"], scored[f"convex {OPEN_RING}"]
        pairs = ", ".join(f"{name} {bones0[name]:.3f} -> {bones1[name]:.3f} / {bones2[name]:.3f}" for name in bones0)
        print(f"| {seed} | {spacing:g} | {case.spec.get('fov', '')} | {result.anatomy.canals_filled} | "
              f"{fg0:.4f} -> {fg1:.4f} / {fg2:.4f} | {pairs} |", flush=True)
    if totals["before"]:
        before = np.array(totals["before"])
        for key, what in [("after", "holes filled")] + [(f"convex {r}", f"holes, and pieces under {r} of their convex hull "
                                                                      "filled to it") for r in RATIOS]:
            after = np.array(totals[key])
            print(f"long bones' mean Dice over {len(before)}, {what}: {before.mean():.4f} -> {after.mean():.4f} "
                  f"({np.count_nonzero(after > before + 1e-4)} up, {np.count_nonzero(after < before - 1e-4)} down)")


if __name__ == "__main__":
    main()

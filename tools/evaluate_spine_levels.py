"""Whether the anatomical step keeps the network's vertebral levels, on held-out synthetic images:
the development check for the spine's reading that needs no test scan.

For each seed an image is synthesised from the real anatomy (``synthetic/anatomy.py``, abdomens by
default), each model's network runs once without the step, and the step is then applied to the
same labels on the model's grid (``make_consistent_on_grid``), so the two columns differ only by the
step. Per image and model: the vertebrae T9-L5 in the image named right by the majority of their
labelled voxels, by the network alone and after the step, and how many vertebrae the step
renumbered. Session 43 found the step renumbering a whole column against a network that had it
mostly right (seeds 4405 and 4406: 6/9 and 7/9 right alone, 0/9 after the step, with every model,
1.9 included), the same collapse as on the test abdomen with runs 46 and 48. Session 44 mended the
step's reading (rib-long pieces, each rib to one vertebra, fragments sharing a level) on seeds
4405-4426 and confirmed it on 4427-4438 (``docs/real-ct-training.md``).

    python tools/evaluate_spine_levels.py                                   # bundled model, seeds 4401-4408
    python tools/evaluate_spine_levels.py --models Resources/bones-phantom-demo.pt runs/realct48/bones-phantom-demo.pt
    python tools/evaluate_spine_levels.py --cache runs/levels   # keep the networks' labels: a rerun runs only the step
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneSegmentationLib.consistency.step import make_consistent_on_grid
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.inference.options import InferenceOptions
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.synthetic.anatomy import FOV_KINDS, load_source, synthesise
from shared_data import ANATOMY  # ../shared, named once for the tools

SCORED = ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
MIN_VOXELS = 5  # a vertebra with fewer voxels on the model's grid is not scored (cut by the view)


def levels_right(labels: np.ndarray, truth: np.ndarray, indices: list[int]) -> tuple[int, int]:
    """(vertebrae named right by the majority of their labelled voxels, vertebrae scored)."""
    right = scored = 0
    for index in indices:
        inside = truth == index
        if np.count_nonzero(inside) < MIN_VOXELS:
            continue
        scored += 1
        named = labels[inside]
        named = named[named > 0]
        right += int(named.size > 0 and np.bincount(named).argmax() == index)
    return right, scored


def network_labels(segmenter: Segmenter, ct: sitk.Image, cache: Path | None) -> sitk.Image:
    """The network's labels on the model's grid (the step off), from ``cache`` when kept there."""
    if cache is not None and cache.is_file():
        return sitk.ReadImage(str(cache))
    labels = segmenter.segment(ct).labels_model_grid
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(labels, str(cache))
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[None], help="model files or registered names (default: bundled)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(4401, 4409)))
    ap.add_argument("--fov", choices=FOV_KINDS, default="abdomen")
    ap.add_argument("--anatomy", default=str(ANATOMY))
    ap.add_argument("--cache", default=None, help="folder for the networks' labels (reused when present)")
    args = ap.parse_args()
    table = default_table()
    indices = [table.by_name(f"vertebra_{v}").index for v in SCORED]
    source = load_source(Path(args.anatomy))
    models = [load_model(resolve_model(m)) for m in args.models]
    names = [f"{m.info.name} {m.info.version} ({Path(str(m.path)).parent.name})" for m in models]
    segmenters = [Segmenter(m, InferenceOptions(anatomy=False)) for m in models]
    print("| seed | " + " | ".join(f"{n}: right alone; after the step; renumbered" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    totals = np.zeros((len(models), 3), int)  # right alone, right after the step, scored
    for seed in args.seeds:
        case = synthesise(source, seed, fov=args.fov)
        cells = []
        for k, (model, segmenter) in enumerate(zip(models, segmenters)):
            cache = Path(args.cache) / f"{seed}-{args.fov}-{model.sha256[:12]}.nii.gz" if args.cache else None
            grid = network_labels(segmenter, case.ct, cache)
            alone = sitk.GetArrayFromImage(grid)
            truth = sitk.GetArrayFromImage(sitk.Resample(case.labels, grid, sitk.Transform(),
                                                         sitk.sitkNearestNeighbor, 0))
            stepped, report = make_consistent_on_grid(alone.copy(), grid, case.ct)
            a, n = levels_right(alone, truth, indices)
            b, _ = levels_right(stepped, truth, indices)
            renumbered = sum(1 for c in report.changes if c.kind == "renumbered" and c.bone.startswith("vertebra"))
            totals[k] += (a, b, n)
            cells.append(f"{a}/{n}; {b}/{n}; {renumbered}")
        print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)
    print("| all | " + " | ".join(f"{a}/{n}; {b}/{n}" for a, b, n in totals) + " |")


if __name__ == "__main__":
    main()

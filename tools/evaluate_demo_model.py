"""The demo model's table on held-out phantoms (seeds 0..4, never used in training, which uses
1000 and above), at the model's own spacing and at 2 mm, with the resampling ceiling beside it.

    python tools/evaluate_demo_model.py [--model bones-phantom-demo] [--out runs/heldout]

At 2 mm, nearest-neighbour resampling of a perfect coarser label map already costs Dice; the
"ceiling" column is that cost alone (reference labels -> model spacing -> back), so the model's
figure can be read against it. Each spacing has the model with and without left-right mirror
averaging (``--no-mirror``, see mirror.py) side by side. ``--stitch`` adds the same model run
with shift-and-stitch at 2 mm, whose labels are not bound by that ceiling (8 passes per phantom,
16 with mirroring: about an hour on 2 CPU cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import SimpleITK as sitk

from BoneSegmentationLib.evaluation.compare import compare_models
from BoneSegmentationLib.training.dataset import check_dataset, init_dataset, label_path, update_count, write_case
from BoneSegmentationLib.evaluation.metrics import evaluate_arrays, pool_results, side_by_side_table
from BoneSegmentationLib.model.modelfile import read_metadata
from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.inference.preprocess import to_model_grid
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.inference.options import InferenceOptions

HELD_OUT_SEEDS = range(5)


def phantom_dataset(folder: Path, spacing: float) -> Path:
    if not (folder / "dataset.json").is_file() or len(check_dataset(folder)) < len(HELD_OUT_SEEDS):
        init_dataset(folder, description=f"held-out phantoms, seeds 0-4, {spacing:g} mm")
        for seed in HELD_OUT_SEEDS:
            ct, labels, _ = make_phantom(seed, spacing=spacing, partial=False)
            write_case(folder, f"phantom_{seed:04d}", ct, labels, overwrite=True)
        update_count(folder)
    return folder


def resampling_ceiling(folder: Path, spacing: float) -> dict:
    results = []
    for case_id in check_dataset(folder):
        ref = sitk.ReadImage(str(label_path(folder, case_id)))
        coarse = to_model_grid(ref, (spacing,) * 3, interpolator=sitk.sitkNearestNeighbor, default_value=0)
        back = sitk.Resample(coarse, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, ref.GetPixelID())
        results.append(evaluate_arrays(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(ref)))
    return pool_results(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bones-phantom-demo")
    ap.add_argument("--out", default="runs/heldout")
    ap.add_argument("--stitch", action="store_true",
                    help="add the shift-and-stitch column at 2 mm (8 passes per phantom, x2 with mirroring)")
    args = ap.parse_args()
    path = resolve_model(args.model)
    model_spacing = float(read_metadata(path)["spacing_mm"][0])
    out = Path(args.out)
    report = []
    for spacing in sorted({model_spacing, 2.0}, reverse=True):
        folder = phantom_dataset(out / f"phantoms_{spacing:g}mm", spacing)
        results = {}
        for mirror in (False, True):
            run = compare_models(folder, [str(path)], progress=print, options=InferenceOptions(mirror={None: "model", True: "on", False: "off"}[mirror]))
            results.update({f"{name}{', mirror' if mirror else ''}": r for name, r in run.items()})
        if spacing != model_spacing:
            factor = round(model_spacing / spacing)
            if args.stitch and factor > 1:
                stitched = compare_models(folder, [str(path)], progress=print, options=InferenceOptions(stitch=factor, mirror="on"))
                results.update({f"{name}, mirror, stitch {factor}": r for name, r in stitched.items()})
            results[f"ceiling ({model_spacing:g} mm resampling)"] = resampling_ceiling(folder, model_spacing)
        report.append(f"### Held-out phantoms (seeds 0-4) at {spacing:g} mm\n\n{side_by_side_table(results)}")
    text = "\n".join(report)
    (out / "evaluation.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

"""The bundled model's tables: on the real scans of ../shared/data/real against their
TotalSegmentator references, and on held-out phantoms (seeds 0..4, never used in training, which
uses 1000 and above) at the model's own spacing and at 2 mm, with the resampling ceiling beside it.

    python tools/evaluate_demo_model.py [--model bones-phantom-demo] [--out runs/heldout]
    python tools/evaluate_demo_model.py --model runs/realct/best.pt --baseline runs/realct/parent.pt
    python tools/evaluate_demo_model.py --real-only --edges-both-ways   # edge growth on and off, side by side

The real validation scan (``evaluation/validation_scan.py``; ``--no-validation-scan`` leaves it
out) is reported beside them: models may be chosen on it, not on the test scans.

``--baseline`` puts a second model beside the first in every table (real scans: 1 min per model
on 2 CPU cores; phantoms: about 10 min per model and spacing).

At 2 mm, nearest-neighbour resampling of a perfect coarser label map already costs Dice; the
"ceiling" column is that cost alone (reference labels -> model spacing -> back), so the model's
figure can be read against it. Each spacing has the model with and without left-right mirror
averaging (``--no-mirror``, see mirror.py) side by side. ``--stitch`` adds the same model run
with shift-and-stitch at 2 mm, whose labels are not bound by that ceiling, on the real scans (a few
minutes) and on the 2 mm phantoms (8 passes per phantom, 16 with mirroring: about an hour on 2 CPU
cores; ``--real-only --stitch`` skips them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import SimpleITK as sitk

from BoneSegmentationLib.core.errors import DownloadError
from BoneSegmentationLib.core.files import atomic_write_text
from BoneSegmentationLib.core.imageio import read_ct, read_image
from BoneSegmentationLib.evaluation.compare import compare_models
from BoneSegmentationLib.evaluation.totalsegmentator import evaluate_against_totalsegmentator, not_bone_lines
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.training.dataset import check_dataset, init_dataset, label_path, update_count, write_case
from BoneSegmentationLib.evaluation.metrics import evaluate_arrays, pool_results, side_by_side_table
from BoneSegmentationLib.model.modelfile import read_metadata
from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.inference.preprocess import to_model_grid
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.inference.options import InferenceOptions
from evaluate_validation_scan import validation_table
from shared_data import REAL  # ../shared, named once for the tools

HELD_OUT_SEEDS = range(5)
REAL_SCANS = {"abdomen (NIfTI)": ("ts_abdomen_ct.nii.gz", "ts_abdomen_totalseg.nii.gz"),
              "thorax (DICOM)": ("ts_thorax_dicom", "ts_thorax_totalseg.nii.gz")}


def real_scan_tables(models: dict[str, Path], stitch: int = 1, edges: bool = False) -> str:
    """Each real scan segmented by each model (with the default options, with ``stitch`` > 1
    also shift-and-stitched, with ``edges`` also with edge growth switched the other way), against
    TotalSegmentator (the test set: never trained or tuned on)."""
    report = []
    runs = [(label, path, InferenceOptions()) for label, path in models.items()]
    if edges:
        flipped = not InferenceOptions().edges
        runs += [(f"{label}, {'grown' if flipped else 'no'} edges", path, InferenceOptions(edges=flipped))
                 for label, path in models.items()]
    if stitch > 1:
        runs += [(f"{label}, stitch {stitch}", path, InferenceOptions(stitch=stitch)) for label, path in models.items()]
    for scan, (ct_name, ref_name) in REAL_SCANS.items():
        ct = read_ct(REAL / ct_name)[0]
        reference = read_image(REAL / ref_name)
        results, lines = {}, []
        for label, path, options in runs:
            result = Segmenter(load_model(path), options).segment(ct)
            evaluation = evaluate_against_totalsegmentator(result.labels, reference, ct)
            results[label] = evaluation
            lines += [f"- {label}: " + "; ".join(not_bone_lines(evaluation)) +
                      f"; {result.timings['total_s']:.0f} s"]
            print(f"{scan}, {label}: foreground Dice {evaluation.foreground_dice:.3f}", flush=True)
        report.append(f"### Real scan: {scan}, against TotalSegmentator\n\n{side_by_side_table(results)}\n"
                      + "\n".join(lines) + "\n")
    return "\n".join(report)


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
    ap.add_argument("--baseline", default=None, help="a second model to put beside --model")
    ap.add_argument("--real-only", action="store_true", help="only the real-scan tables")
    ap.add_argument("--quick", action="store_true",
                    help="phantoms at the model's spacing only, with mirroring as each model's metadata says")
    ap.add_argument("--out", default="runs/heldout")
    ap.add_argument("--stitch", action="store_true",
                    help="add shift-and-stitch columns at 2 mm: on the real scans, and on the 2 mm phantoms "
                         "(8 passes per phantom, x2 with mirroring)")
    ap.add_argument("--no-validation-scan", action="store_true",
                    help="leave out the real validation scan (TotalSegmentator's chest CT, fetched on first use)")
    ap.add_argument("--edges-both-ways", action="store_true",
                    help="add, on the real scans, each model with edge growth (inference/edges.py) switched the "
                         "other way from the default")
    args = ap.parse_args()
    path = resolve_model(args.model)
    model_spacing = float(read_metadata(path)["spacing_mm"][0])
    models = {_label(path): path}
    if args.baseline:
        models[_label(resolve_model(args.baseline)) + " (baseline)"] = resolve_model(args.baseline)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    factor = round(model_spacing / 2.0)
    report = [real_scan_tables(models, stitch=factor if args.stitch else 1, edges=args.edges_both_ways)]
    if not args.no_validation_scan:
        title = "### Real validation scan (not the test set): TotalSegmentator's arterial chest CT\n\n"
        try:
            report.append(title + validation_table(models) + "\n")
        except DownloadError as e:  # offline: the test scans' and phantoms' tables still come out
            report.append(title + f"not measured: {e}\n")
    spacings = [model_spacing] if args.quick else sorted({model_spacing, 2.0}, reverse=True)
    for spacing in ([] if args.real_only else spacings):
        folder = phantom_dataset(out / f"phantoms_{spacing:g}mm", spacing)
        results = {}
        for mirror in (["model"] if args.quick else ["off", "on"]):
            run = compare_models(folder, [str(p) for p in models.values()], progress=print,
                                 options=InferenceOptions(mirror=mirror))
            results.update({f"{name}{', mirror' if mirror == 'on' else ''}": r for name, r in run.items()})
        if spacing != model_spacing:
            if args.stitch and factor > 1:
                stitched = compare_models(folder, [str(path)], progress=print, options=InferenceOptions(stitch=factor, mirror="on"))
                results.update({f"{name}, mirror, stitch {factor}": r for name, r in stitched.items()})
            results[f"ceiling ({model_spacing:g} mm resampling)"] = resampling_ceiling(folder, model_spacing)
        report.append(f"### Held-out phantoms (seeds 0-4) at {spacing:g} mm\n\n{side_by_side_table(results)}")
    text = "\n".join(report)
    atomic_write_text(out / "evaluation.md", text)
    print(text)


def _label(path: Path) -> str:
    meta = read_metadata(path)
    return f"{meta['name']} {meta['version']}"


if __name__ == "__main__":
    main()

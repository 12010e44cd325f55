"""Models side by side on the real validation CT (not the test set): bone in the heart and aorta,
and T12, on TotalSegmentator's own chest CT (``evaluation/validation_scan.py``).

    python tools/evaluate_validation_scan.py --model Resources/bones-phantom-demo.pt runs/realct46/bones-phantom-demo.pt
    python tools/evaluate_validation_scan.py --slabs   # also 40 mm slabs of it, each read alone

``--slabs`` cuts the scan into 40 mm slabs (half overlapping; the test set's DICOM slab is 40 mm)
and reads each alone: how much of the bone the model finds with the whole scan it still finds in a
slab, the heart and aorta called bone, T12 found. A short-scan failure measured on real anatomy
that is not the test set (``validation_scan.measure_slabs``). The slabs cost about four readings of the
whole scan more; the whole scan itself is read once for both tables.

The scan is fetched once (38 MB archive from PyPI, verified) into ``--folder``;
``tools/evaluate_demo_model.py`` adds the same table to its report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.core.imageio import read_ct
from BoneSegmentationLib.evaluation.validation_scan import SLAB_MM, fetch_validation_scan, measure, measure_slabs
from BoneSegmentationLib.inference.options import InferenceOptions
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model

FOLDER = Path(__file__).resolve().parents[1] / "runs" / "validation-scan"
HEADER = ("| model | heart called bone | aorta called bone | heart and aorta | T12 Dice | T12 found as bone |\n"
          "|---|---|---|---|---|---|")
SLAB_HEADER = (f"| model | {SLAB_MM:g} mm slabs | bone agreement with its whole-scan reading: mean; lowest | bone kept | "
               "heart and aorta called bone: slabs; whole scan | T12 found |\n|---|---|---|---|---|---|")


def validation_table(models: dict[str, Path], folder: Path = FOLDER, options: InferenceOptions = InferenceOptions(),
                     save: bool = False, readings: Optional[dict[str, sitk.Image]] = None) -> str:
    """One row per model on the validation scan (fetched into ``folder`` on first use); each
    model's labels go into ``readings`` when given (``slab_table`` then need not read it again)."""
    folder = fetch_validation_scan(folder)
    ct, _ = read_ct(folder / "chest_ct.nii.gz")
    table = default_table()
    rows = [HEADER]
    for label, path in models.items():
        start = time.perf_counter()
        result = Segmenter(load_model(path), options).segment(ct)
        f = measure(result.labels, folder, table)
        if readings is not None:
            readings[label] = result.labels
        if save:
            sitk.WriteImage(result.labels, str(folder / f"labels-{path.parent.name}-{path.stem}.nii.gz"))
        rows.append(f"| {label} | {100 * f.heart_called_bone:.2f} % | {100 * f.aorta_called_bone:.2f} % | "
                    f"{100 * f.vessels_called_bone:.2f} % | {f.t12_dice:.3f} | {f.t12_found:.3f} |")
        print(rows[-1] + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return "\n".join(rows)


def slab_table(models: dict[str, Path], folder: Path = FOLDER, options: InferenceOptions = InferenceOptions(),
               readings: Optional[dict[str, sitk.Image]] = None) -> str:
    """One row per model: the scan read in slabs, each alone, against the model's whole-scan reading
    (from ``readings`` when ``validation_table`` made it with the same options)."""
    folder = fetch_validation_scan(folder)
    ct, _ = read_ct(folder / "chest_ct.nii.gz")
    rows = [SLAB_HEADER]
    for label, path in models.items():
        start = time.perf_counter()
        segmenter = Segmenter(load_model(path), options)
        f = measure_slabs(lambda image: segmenter.segment(image).labels, ct, folder,
                          whole=(readings or {}).get(label))
        rows.append(f"| {label} | {f.slabs} | {f.agreement:.3f}; {f.lowest_agreement:.3f} | {f.bone_kept:.2f} | "
                    f"{100 * f.vessels_called_bone:.2f} %; {100 * f.whole_vessels_called_bone:.2f} % | {f.t12_found:.3f} |")
        print(rows[-1] + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=[None], help="model files or registered names (default: bundled)")
    ap.add_argument("--folder", type=Path, default=FOLDER, help="where the scan is kept")
    ap.add_argument("--no-anatomy", action="store_true", help="the network's labels without the anatomical step")
    ap.add_argument("--no-grow-edges", action="store_true", help="without edge growth")
    ap.add_argument("--save", action="store_true", help="write each model's labels beside the scan")
    ap.add_argument("--slabs", action="store_true", help=f"also read {SLAB_MM:g} mm slabs of the scan, each alone")
    args = ap.parse_args(argv)
    models = {str(resolve_model(spec)): resolve_model(spec) for spec in args.model}
    options = InferenceOptions(anatomy=not args.no_anatomy, edges=not args.no_grow_edges)
    readings: dict[str, sitk.Image] = {}
    print(HEADER)
    validation_table(models, args.folder, options, args.save, readings)
    if args.slabs:
        print(SLAB_HEADER)
        slab_table(models, args.folder, options, readings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

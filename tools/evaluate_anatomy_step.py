"""The anatomical consistency step measured: the bundled model's labels with and without it,
side by side, on held-out phantoms (full field of view and three crops) and on the real scans.

    python tools/evaluate_anatomy_step.py                 # seeds 0-4, all views, real scans; writes docs/anatomy-step-evaluation.md
    python tools/evaluate_anatomy_step.py --seeds 4 --views skull_to_shoulders --no-real

Each view is segmented twice, as a user would get it with ``--no-anatomy`` and by default (the
network is deterministic, so the two columns differ only by the step and what follows it on the
input grid). Crops are cut from the 2 mm phantom
by its ground truth (the crop is a clinical field of view, not something the step is told):
- skull_to_shoulders: the top 320 mm (the crop of ``benchmarks/bench_passes.py``);
- mid_thorax: from the top of T4 to the bottom of T9;
- lumbar_sacrum: from the top of L1 to the bottom of the sacrum.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.core.imageio import read_ct, read_image
from BoneSegmentationLib.evaluation.metrics import evaluate_images
from BoneSegmentationLib.evaluation.totalsegmentator import evaluate_against_totalsegmentator
from BoneSegmentationLib.inference.options import InferenceOptions
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.synthetic.phantom import make_phantom
from shared_data import REAL  # ../shared, named once for the tools

REAL_SCANS = {"abdomen (NIfTI)": ("ts_abdomen_ct.nii.gz", "ts_abdomen_totalseg.nii.gz"),
              "thorax (DICOM)": ("ts_thorax_dicom", "ts_thorax_totalseg.nii.gz")}
VIEWS = ("full", "skull_to_shoulders", "mid_thorax", "lumbar_sacrum")
GROUPS = ("spine", "ribs", "hands", "large_bones", "all")


def crop(ct: sitk.Image, ref: sitk.Image, view: str) -> tuple[sitk.Image, sitk.Image]:
    """A clinical field of view cut from a phantom by its ground truth (slices along z)."""
    if view == "full":
        return ct, ref
    n = ct.GetSize()[2]
    if view == "skull_to_shoulders":
        k = int(round(320 / ct.GetSpacing()[2]))
        return ct[:, :, n - k:], ref[:, :, n - k:]
    table = default_table()
    top, bottom = {"mid_thorax": ("vertebra_T4", "vertebra_T9"), "lumbar_sacrum": ("vertebra_L1", "sacrum")}[view]
    arr = sitk.GetArrayViewFromImage(ref)
    zs_top = np.flatnonzero((arr == table.by_name(top).index).any(axis=(1, 2)))
    zs_bottom = np.flatnonzero((arr == table.by_name(bottom).index).any(axis=(1, 2)))
    lo, hi = int(min(zs_top.min(), zs_bottom.min())), int(max(zs_top.max(), zs_bottom.max())) + 1
    return ct[:, :, lo:hi], ref[:, :, lo:hi]


def both(without: Segmenter, with_step: Segmenter, ct: sitk.Image) -> tuple[sitk.Image, sitk.Image, float, list[str]]:
    """Labels on the CT's grid without and with the step, each as the pipeline gives them (the
    network runs twice: the step's labels then go through the same input-grid steps as a user's),
    the step's seconds and its change list. Until session 44 the step was applied to the first
    run's model-grid labels and brought to the input grid bare, so the "with" column missed the
    edge growth and the fills added since session 34, and looked worse than it is."""
    plain = without.segment(ct)
    fixed = with_step.segment(ct)
    return plain.labels, fixed.labels, fixed.anatomy.seconds, [c.text for c in fixed.anatomy.changes]


def medians(labels: sitk.Image, ref: sitk.Image) -> dict[str, float]:
    groups = {r.group: r for r in evaluate_images(labels, ref).groups}
    return {g: groups[g].median for g in GROUPS if g in groups}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--views", default=",".join(VIEWS))
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--out", default=None, help="markdown file for the tables (default: print only)")
    args = ap.parse_args()
    model = load_model(resolve_model(args.model))
    segmenters = (Segmenter(model, InferenceOptions(device="cpu", anatomy=False)),
                  Segmenter(model, InferenceOptions(device="cpu", anatomy=True)))
    name = f"{model.info.name} {model.info.version}"
    rows: dict[str, list[tuple[dict, dict]]] = {}
    step_seconds = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        ct_full, ref_full, _ = make_phantom(seed, spacing=2.0, partial=False)
        for view in args.views.split(","):
            ct, ref = crop(ct_full, ref_full, view)
            t0 = time.perf_counter()
            plain, fixed, seconds, changes = both(*segmenters, ct)
            step_seconds.append(seconds)
            a, b = medians(plain, ref), medians(fixed, ref)
            rows.setdefault(view, []).append((a, b))
            print(f"seed {seed} {view}: spine {a.get('spine', float('nan')):.3f} -> {b.get('spine', float('nan')):.3f}, "
                  f"ribs {a.get('ribs', float('nan')):.3f} -> {b.get('ribs', float('nan')):.3f} "
                  f"({len(changes)} changes, step {seconds:.1f} s, {time.perf_counter() - t0:.0f} s)", flush=True)
    lines = [f"Model: {name}; held-out phantoms (seeds {args.seeds}), 2 mm; the pipeline with `--no-anatomy` "
             "and by default. Median per-bone Dice over the seeds' medians (mean of the per-seed group medians).", "",
             "| view | " + " | ".join(f"{g} without | {g} with" for g in GROUPS) + " |",
             "|---|" + "---|---|" * len(GROUPS)]
    for view, pairs in rows.items():
        cells = []
        for g in GROUPS:
            a = [p[0][g] for p in pairs if g in p[0] and np.isfinite(p[0][g])]
            b = [p[1][g] for p in pairs if g in p[1] and np.isfinite(p[1][g])]
            cells += [f"{np.mean(a):.3f}" if a else "-", f"{np.mean(b):.3f}" if b else "-"]
        lines.append(f"| {view} | " + " | ".join(cells) + " |")
    if step_seconds:
        lines += ["", f"Step time on the model grid: median {np.median(step_seconds):.2f} s, max {max(step_seconds):.2f} s."]
    if not args.no_real:
        lines += ["", "Real scans against TotalSegmentator (the test set: reported, never chosen on):", "",
                  "| scan | level agreement without | with | foreground Dice without | with | spine without | with | "
                  "ribs without | with | bone outside the body without | with |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for scan, (ct_name, ref_name) in REAL_SCANS.items():
            ct = read_ct(REAL / ct_name)[0]
            reference = read_image(REAL / ref_name)
            plain, fixed, seconds, changes = both(*segmenters, ct)
            e = [evaluate_against_totalsegmentator(x, reference, ct) for x in (plain, fixed)]
            g = [x.medians() for x in e]
            lines.append(f"| {scan} | {e[0].level_agreement:.2f} | {e[1].level_agreement:.2f} | "
                         f"{e[0].foreground_dice:.3f} | {e[1].foreground_dice:.3f} | "
                         f"{g[0].get('spine', float('nan')):.3f} | {g[1].get('spine', float('nan')):.3f} | "
                         f"{g[0].get('ribs', float('nan')):.3f} | {g[1].get('ribs', float('nan')):.3f} | "
                         f"{100 * e[0].bone_outside_body:.2f} % | {100 * e[1].bone_outside_body:.2f} % |")
            print(lines[-1], flush=True)
            print("  changes:", "; ".join(changes[:25]), flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

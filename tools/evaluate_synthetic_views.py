"""A model on fresh synthetic images, by field of view: the development check that needs no test scan.

    python tools/evaluate_synthetic_views.py [--model bones-phantom-demo] [--baseline runs/realct2/bones-phantom-demo.pt]
    python tools/evaluate_synthetic_views.py --seeds 1992 1993 --spacing 2.5
    python tools/evaluate_synthetic_views.py --seeds 3100 3101 3102 --fov clinical_crop --spacing 2   # short slabs
    python tools/evaluate_synthetic_views.py --seeds 3200 3201 3202 --fov thorax --phase arterial   # contrast
    python tools/evaluate_synthetic_views.py --seeds 1991 1993 --spacing 0.9 1.0   # thin slices
    python tools/evaluate_synthetic_views.py --seeds 1996 1997 --drawn-spacing --stitch 1 2   # finer labels
    python tools/evaluate_synthetic_views.py --seeds 1996 1997 1998 1999 --fov abdomen --implants on   # metal
    python tools/evaluate_synthetic_views.py --seeds 1996 1997 --fov abdomen --iliac-shift -20 0 20   # crests' height
    python tools/evaluate_synthetic_views.py --seeds 1996 1997 --fov abdomen --trabecular-hu 80 160 260   # density
    python tools/evaluate_synthetic_views.py --seeds 1996 1997 --fov thorax --body-size 1 1.28   # a larger body
    python tools/evaluate_synthetic_views.py --seeds 1996 1997 1998 1999 --fov abdomen --spacing 3 --tilt 0 15 -15
    python tools/evaluate_synthetic_views.py --seeds 1996 1997 1998 1999 --mirror on off   # mirror averaging
    python tools/evaluate_synthetic_views.py --seeds 1996 1998 --fov thorax --spacing 1 2 --slab 20 \
        --diaphragm-shift -35 0 35   # lower-thorax slabs with the diaphragm lower, as drawn, higher
    python tools/evaluate_synthetic_views.py --seeds 1996 1997 1998 1999 --fov thorax --phase arterial \
        --spacing 1.5 2 --slab 20   # 40 mm slabs of the lower thorax, as the test set's DICOM slab

Each seed is synthesised from the real anatomy (``synthetic/anatomy.py``) with the seeds training
never uses (1990-1999; 1990 and 1991 are the training's validation images, forced to a whole and a
clinical-crop view), segmented by the full pipeline with the default options, and scored by the
bone foreground Dice against its labels, by the share of predicted bone given a class the image
cannot hold (hands, forearms, skull parts, C1-C6: the source body has none of them), and by the
share of the heart, aorta and venae cavae called bone (as on the real scans), and by the share of
predicted bone outside the evaluation's body mask that is not true bone (table, air), and, where an
image holds metal implants (``--implants on``), by the mean Dice of the bones that hold the metal
(a prosthesis counts as its femur, as in TotalSegmentator's references), and by the median Dice of
the lumbar vertebrae in view (where the iliac crests sit against the spine, ``--iliac-shift``, moves
a network that names the lumbar levels from the pelvis), and by the share of the vertebrae called
bone of any name (what a short slab of the lower thorax loses), and, with ``--trabecular-hu``, at
forced bone densities (the synthesiser draws one per body for an age, ``tissue.trabecular_for_age``),
and, with ``--body-size``, at forced sizes across (``anatomy.BODY_SIZE``: a network taught one body's
size calls a larger body's spine pelvis, or misses it), and, with ``--tilt``, at forced sagittal
tilts (``anatomy.SAGITTAL_TILT_DEG``: the lumbar vertebrae lean as a person's lordosis makes them),
and, with ``--diaphragm-shift``, at forced heights of the diaphragm and the organs that move with it
(``anatomy.DIAPHRAGM_SHIFT_MM``: breath and build move them a vertebra or more against the spine).
With ``--slab N`` each image is cut to N slices about the middle of each vertebra of
``--slab-levels`` (a short scan, filled by mirroring at inference) and each slab scored alone.
The real scans
of ``../shared/data/real`` are the test set; this is what to develop against.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneSegmentationLib.consistency.spine import column_indices
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.evaluation.metrics import dice_per_class
from BoneSegmentationLib.evaluation.totalsegmentator import body_mask, bone_in_vessels
from BoneSegmentationLib.inference.options import MIRROR_MODES, InferenceOptions
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model, read_metadata
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.synthetic.anatomy import FOV_KINDS, SyntheticCase, load_source, synthesise
from BoneSegmentationLib.synthetic.tissue import PHASES
from shared_data import ANATOMY  # ../shared, named once for the tools

DEV_SEEDS = (1990, 1991, 1992, 1993, 1994, 1995)
FORCED_VIEW = {1990: "whole", 1991: "clinical_crop"}  # as the training's validation images


def not_bone_outside_body(case: SyntheticCase) -> np.ndarray:
    """Outside the body (``evaluation.totalsegmentator.body_mask``) where the image has no bone either:
    predicted bone there is what the real scans' "outside the body" counts, less the mask's errors."""
    body = sitk.GetArrayFromImage(body_mask(case.ct)).astype(bool)
    return ~body & ~(sitk.GetArrayViewFromImage(case.labels) > 0)


def score(case: SyntheticCase, labels: sitk.Image) -> tuple[float, float]:
    """(bone foreground Dice, share of predicted bone in classes the image cannot hold)."""
    table = default_table()
    possible = np.zeros(table.num_classes, bool)
    possible[0] = True
    possible[[table.by_name(name).index for name in case.labelled]] = True
    pred = sitk.GetArrayViewFromImage(labels)
    ref = sitk.GetArrayViewFromImage(case.labels) > 0
    bone = pred > 0
    dice = 2 * np.count_nonzero(bone & ref) / max(1, np.count_nonzero(bone) + np.count_nonzero(ref))
    return dice, np.count_nonzero(~possible[pred]) / max(1, np.count_nonzero(bone))


METAL_HU = 2000  # above any bone the synthesiser draws: an implant, or its blurred edge


def implanted_bone_dice(case: SyntheticCase, labels: sitk.Image) -> float | None:
    """Mean Dice of the bones with at least 3 voxels of metal inside (None without implants: a
    small metal object in soft tissue, blurred into a bone beside it, does not count)."""
    if not case.spec.get("implants"):
        return None
    ct = sitk.GetArrayViewFromImage(case.ct)
    ref = sitk.GetArrayViewFromImage(case.labels)
    pred = sitk.GetArrayViewFromImage(labels)
    values, counts = np.unique(ref[(ct > METAL_HU) & (ref > 0)], return_counts=True)
    dices = [2 * np.count_nonzero((pred == v) & (ref == v)) / max(1, np.count_nonzero(pred == v) + np.count_nonzero(ref == v))
             for v, c in zip(values, counts) if c >= 3]
    return float(np.mean(dices)) if dices else None


LUMBAR = tuple(f"vertebra_L{i}" for i in range(1, 6))


def lumbar_dice(case: SyntheticCase, labels: sitk.Image) -> float | None:
    """Median Dice of the lumbar vertebrae with at least 50 voxels in the image (None without)."""
    table = default_table()
    ref = sitk.GetArrayViewFromImage(case.labels)
    per_class = dice_per_class(sitk.GetArrayViewFromImage(labels), ref, table.num_classes)
    counts = np.bincount(ref.ravel(), minlength=table.num_classes)
    dices = [per_class[i] for i in (table.by_name(name).index for name in LUMBAR) if counts[i] >= 50]
    return float(np.median(dices)) if dices else None


def vertebrae_found(case: SyntheticCase, labels: sitk.Image) -> float | None:
    """Share of the vertebrae's voxels (sacrum and coccyx included) called bone of any name (None
    with under 500 of them in view): a 40 mm slab of the lower thorax loses half its vertebral
    bodies to the background, which foreground Dice mixes with ribs and labels ignore."""
    spine = column_indices(default_table())
    ref = np.isin(sitk.GetArrayViewFromImage(case.labels), spine)
    if np.count_nonzero(ref) < 500:
        return None
    return np.count_nonzero(ref & (sitk.GetArrayViewFromImage(labels) > 0)) / np.count_nonzero(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bones-phantom-demo")
    ap.add_argument("--baseline", default=None, help="a second model beside the first")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(DEV_SEEDS))
    ap.add_argument("--spacing", type=float, nargs="+", default=[2.5],
                    help="synthesised image spacing, mm: one value (isotropic) or in-plane and slice")
    ap.add_argument("--drawn-spacing", action="store_true",
                    help="each seed draws its spacing as the synthesiser does (in-plane 1.6-2.6, slices 1.6-5 mm)")
    ap.add_argument("--fov", choices=FOV_KINDS, default=None,
                    help="force this field of view for every seed (default: drawn; 1990/1991 forced as in training)")
    ap.add_argument("--phase", choices=PHASES, default=None, help="force this contrast phase (default: drawn)")
    ap.add_argument("--implants", choices=("drawn", "on", "off"), default="drawn",
                    help="metal implants in the bones: as the synthesiser draws them, in every image, or none")
    ap.add_argument("--stitch", type=int, nargs="+", default=[1], metavar="F",
                    help="shift-and-stitch factors to run each model with, side by side (default: 1, off)")
    ap.add_argument("--iliac-shift", type=float, nargs="+", default=[None], metavar="MM",
                    help="force the iliac crests this many mm above their place against the spine; several: "
                         "each seed at each (default: drawn)")
    ap.add_argument("--trabecular-hu", type=float, nargs="+", default=[None], metavar="HU",
                    help="force the body's vertebral cancellous density (each bone its own factor of it); several: "
                         "each seed at each (default: drawn for an age)")
    ap.add_argument("--body-size", type=float, nargs="+", default=[None], metavar="FACTOR",
                    help="force the body's size across against the source's (1: the source's); several: each "
                         "seed at each (default: drawn, anatomy.BODY_SIZE)")
    ap.add_argument("--tilt", type=float, nargs="+", default=[None], metavar="DEGREES",
                    help="force the body's sagittal tilt (degrees, -45 to 45); several: each seed at each "
                         "(default: drawn, anatomy.SAGITTAL_TILT_DEG)")
    ap.add_argument("--slab", type=int, default=None, metavar="SLICES",
                    help="score slabs of this many slices about each vertebra of --slab-levels instead of the image")
    ap.add_argument("--slab-levels", nargs="+", default=["vertebra_T8", "vertebra_T12"], metavar="VERTEBRA",
                    help="bone table names of the vertebrae the slabs are centred on (default: T8 and T12)")
    ap.add_argument("--diaphragm-shift", type=float, nargs="+", default=[None], metavar="MM",
                    help="force the diaphragm's height against the skeleton, mm up (down, negative), one row each")
    ap.add_argument("--mirror", nargs="+", default=["model"], choices=MIRROR_MODES, metavar="MODE",
                    help="left-right mirror averaging, one column per mode: model (as its metadata says), on, off")
    ap.add_argument("--anatomy", default=str(ANATOMY))
    args = ap.parse_args()
    if any(f is not None and not 0.5 <= f <= 2.0 for f in args.body_size):
        ap.error(f"--body-size: factors of the source body's size across, 0.5-2, not {args.body_size}")
    if any(d is not None and not -100 <= d <= 100 for d in args.diaphragm_shift):
        ap.error(f"--diaphragm-shift: mm from -100 to 100, not {args.diaphragm_shift}")
    if any(t is not None and not -45 <= t <= 45 for t in args.tilt):
        ap.error(f"--tilt: degrees from -45 to 45, not {args.tilt}")
    if args.slab is not None and args.slab < 1:
        ap.error(f"--slab is a number of slices, at least 1, not {args.slab}")
    unknown = [name for name in args.slab_levels if name not in default_table().names()]
    if unknown:
        ap.error(f"--slab-levels: {', '.join(unknown)} not in the bone table (e.g. vertebra_T12)")
    paths = [resolve_model(args.model)] + ([resolve_model(args.baseline)] if args.baseline else [])
    names, segmenters = [], []
    for path in paths:
        meta, model = read_metadata(path), load_model(path)
        for factor, mirror in itertools.product(args.stitch, args.mirror):
            names.append(f"{meta['name']} {meta['version']}" + (f" (stitch {factor})" if factor > 1 else "")
                         + (f" (mirror {mirror})" if len(args.mirror) > 1 else ""))
            segmenters.append(Segmenter(model, InferenceOptions(stitch=factor, mirror=mirror)))
    source = load_source(Path(args.anatomy))
    header = ("| seed | field of view, contrast phase | "
              + " | ".join(f"{n}: foreground; impossible classes; heart and vessels; false bone outside the body"
                           for n in names) + " |")
    rows = [header, "|" + "---|" * (2 + len(names))]
    for seed, iliac, density, size, tilt, breath in itertools.product(
            args.seeds, args.iliac_shift, args.trabecular_hu, args.body_size, args.tilt, args.diaphragm_shift):
        spacing = None if args.drawn_spacing else args.spacing[0] if len(args.spacing) == 1 else tuple(args.spacing[:2])
        case = synthesise(source, seed, spacing=spacing, fov=args.fov or FORCED_VIEW.get(seed), phase=args.phase,
                          implants={"drawn": None, "on": True, "off": False}[args.implants], iliac_shift_mm=iliac,
                          trabecular_hu=density, body_size=size, tilt_deg=tilt, diaphragm_shift_mm=breath)
        for where, case in views(case, args.slab, args.slab_levels):
            rows.append(row(seed, where, case, segmenters))
            print(rows[-1], flush=True)
    print("\n".join(rows))


def views(case: SyntheticCase, slab: int | None, levels: list[str]) -> list[tuple[str, SyntheticCase]]:
    """The image itself, or its ``slab``-slice cuts about the middle of each vertebra of ``levels`` in it."""
    if slab is None:
        return [("", case)]
    table = default_table()
    labels = sitk.GetArrayViewFromImage(case.labels)
    out = []
    for name in levels:
        rows = np.nonzero((labels == table.by_name(name).index).any(axis=(1, 2)))[0]
        if not len(rows):
            continue
        z0 = int(np.clip(round(rows.mean()) - slab // 2, 0, max(0, labels.shape[0] - slab)))
        cut = {k: getattr(case, k)[:, :, z0:z0 + slab] for k in ("ct", "labels", "source_labels")
               if getattr(case, k) is not None}
        out.append((f", {slab}-slice slab at {name}", dataclasses.replace(case, **cut)))
    return out


def row(seed: int, where: str, case: SyntheticCase, segmenters: list[Segmenter]) -> str:
    """One table row: every model on one image (or slab)."""
    cells = []
    outside_body = not_bone_outside_body(case)  # once per image, whatever the number of models
    for seg in segmenters:
        labels = seg.segment(case.ct).labels
        dice, impossible = score(case, labels)
        vessels = bone_in_vessels(sitk.GetArrayViewFromImage(labels),
                                  sitk.GetArrayViewFromImage(case.source_labels))
        bone = sitk.GetArrayViewFromImage(labels) > 0
        outside = np.count_nonzero(bone & outside_body) / max(1, np.count_nonzero(bone))
        implanted = implanted_bone_dice(case, labels)
        lumbar = lumbar_dice(case, labels)
        spine = vertebrae_found(case, labels)
        cells.append(f"{dice:.3f}; {100 * impossible:.1f} %; {100 * vessels:.2f} %; {100 * outside:.3f} %"
                     + (f"; implanted bones {implanted:.3f}" if implanted is not None else "")
                     + (f"; lumbar {lumbar:.3f}" if lumbar is not None else "")
                     + (f"; vertebrae found {spine:.2f}" if spine is not None else ""))
    view = f"{case.spec['fov']}, {case.ct.GetSize()[2]} x {case.spec['spacing_mm'][2]:g} mm, {case.spec['phase']}"
    view += "".join(f", {k.replace('_', ' ')}" for k in case.spec["implants"])
    view += f", crests {case.spec['iliac_shift_mm']:+g} mm, cancellous {case.spec['trabecular_hu']:g} HU"
    view += f", body x{case.spec['body_size']:g}, tilt {case.spec['sagittal_tilt_deg']:+g} deg"
    view += f", diaphragm {case.spec['diaphragm_shift_mm']:+g} mm" + where
    return f"| {seed} | {view} | " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()

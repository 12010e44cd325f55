"""How a scan shorter than the network's patch is filled, compared on fresh synthetic crops.

    python tools/compare_short_scan_fill.py                       # seeds 3100-3135, clinical crops, 2 mm slices
    python tools/compare_short_scan_fill.py --model runs/realct10/bones-phantom-demo.pt --seeds 3100 3101

The pipeline fills a short scan head to foot with mirrored copies of itself
(``inference/sliding_window.fill_to_patch``); before, it padded every short axis with air at the
far end. Both run here side by side on the same images and model: the air padding is put back for
the first column only. Scored as ``evaluate_synthetic_views.py`` scores (bone foreground Dice;
share of predicted bone in classes the image cannot hold). Never the real test scans.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from BoneSegmentationLib.inference import sliding_window
from BoneSegmentationLib.inference.options import InferenceOptions
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.synthetic.anatomy import FOV_KINDS, load_source, synthesise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_synthetic_views import score  # noqa: E402
from shared_data import ANATOMY  # noqa: E402  ../shared, named once for the tools


def air_at_the_far_end(array: np.ndarray, patch, pad_value: float) -> tuple[np.ndarray, int]:
    """The fill before mirroring: every short axis padded with air after the scan."""
    pads = [(0, max(0, p - s)) for s, p in zip(array.shape, patch)]
    return np.pad(array, pads, constant_values=pad_value), 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bones-phantom-demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(3100, 3136)))
    ap.add_argument("--spacing", type=float, default=2.0, help="synthesised image spacing, mm")
    ap.add_argument("--fov", choices=FOV_KINDS, default="clinical_crop")
    ap.add_argument("--anatomy", default=str(ANATOMY))
    args = ap.parse_args()
    seg = Segmenter(load_model(resolve_model(args.model)), InferenceOptions())
    source = load_source(Path(args.anatomy))
    mirrored_fill = sliding_window.fill_to_patch
    fills = {"air (before)": air_at_the_far_end, "mirrored (now)": mirrored_fill}
    dice = {name: [] for name in fills}
    print("| seed | slices | " + " | ".join(f"{n}: foreground; impossible classes" for n in fills) + " |")
    print("|---|---|" + "---|" * len(fills))
    try:
        for seed in args.seeds:
            case = synthesise(source, seed, spacing=args.spacing, fov=args.fov)
            cells = []
            for name, fill in fills.items():
                sliding_window.fill_to_patch = fill
                d, impossible = score(case, seg.segment(case.ct).labels)
                dice[name].append(d)
                cells.append(f"{d:.3f}; {100 * impossible:.1f} %")
            print(f"| {seed} | {case.ct.GetSize()[2]} x {args.spacing:g} mm | " + " | ".join(cells) + " |", flush=True)
    finally:
        sliding_window.fill_to_patch = mirrored_fill
    wins = sum(m > a for a, m in zip(*dice.values()))
    print("| mean (median) | | " + " | ".join(f"{np.mean(v):.3f} ({np.median(v):.3f})" for v in dice.values())
          + f" |\nmirrored better on {wins} of {len(args.seeds)} images")


if __name__ == "__main__":
    main()

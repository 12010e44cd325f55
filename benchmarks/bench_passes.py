"""The price of extra passes: the bundled 4 mm model run once, with left-right mirror averaging
(2 passes) and with shift-and-stitch (F^3 passes), on the same phantom, side by side in one process
(wall time, peak RSS above baseline, Dice, and ratios against the single pass).

    pip install -e ".[benchmark]"
    python benchmarks/bench_passes.py                        # 2 mm phantom of seed 4, cropped: plain, mirror
    python benchmarks/bench_passes.py --runs plain,stitch    # one pass against 8 shifted ones
    python benchmarks/bench_passes.py --slices 0             # the whole phantom (minutes on a CPU)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.evaluation.metrics import evaluate_images  # noqa: E402
from BoneSegmentationLib.model.modelfile import load_model  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import make_phantom  # noqa: E402
from BoneSegmentationLib.model.registry import resolve_model  # noqa: E402
from BoneSegmentationLib.inference.segmenter import segment_image  # noqa: E402
from BoneSegmentationLib.inference.options import InferenceOptions


def run_options(name: str, factor: int) -> tuple[int, dict]:
    """Passes per window position and the inference options for one named run."""
    return {"plain": (1, {"mirror": "off"}),
            "mirror": (2, {"mirror": "on"}),
            "stitch": (factor ** 3, {"mirror": "off", "stitch": factor}),
            "mirror+stitch": (2 * factor ** 3, {"mirror": "on", "stitch": factor})}[name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--slices", type=int, default=160, help="keep this many 2 mm slices from the top (0: all)")
    ap.add_argument("--runs", default="plain,mirror", help="comma-separated: plain, mirror, stitch, mirror+stitch "
                                                            "(the first is the reference)")
    ap.add_argument("--stitch", type=int, default=2, help="stitch factor F of the stitch runs")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    ct, ref, _ = make_phantom(args.seed, spacing=2.0, partial=False)
    if args.slices:
        ct, ref = ct[:, :, -args.slices:], ref[:, :, -args.slices:]
    model = load_model(resolve_model(args.model))
    print(f"phantom {ct.GetSize()} at 2 mm, model {model.metadata['name']} {model.metadata['version']} "
          f"at {model.spacing[0]:g} mm")
    rows = {}
    for name in args.runs.split(","):
        passes, options = run_options(name, args.stitch)
        with measure() as m:
            result = segment_image(ct, model, InferenceOptions(device="cpu", **options))
        groups = evaluate_images(result.labels, ref).medians()
        rows[name] = (passes, m.elapsed_s, m.peak_mib, groups)
    _, t0, m0, _ = next(iter(rows.values()))
    print("| run | passes | time s | peak MiB | time ratio | memory ratio | spine | large bones | all |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (passes, t, mib, g) in rows.items():
        print(f"| {name} | {passes} | {t:.1f} | {mib:.0f} | {t / t0:.2f}x | {mib / max(m0, 1e-9):.2f}x | "
              f"{g.get('spine', float('nan')):.3f} | {g.get('large_bones', float('nan')):.3f} | "
              f"{g.get('all', float('nan')):.3f} |")


if __name__ == "__main__":
    main()

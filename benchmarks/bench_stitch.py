"""Shift-and-stitch's price: one pass versus F^3 shifted passes of the bundled 4 mm model on the
same phantom, side by side in one process (wall time, peak RSS above baseline, their ratios).

    pip install -e ".[benchmark]"
    python benchmarks/bench_stitch.py                 # 2 mm phantom of seed 4, cropped, F = 2
    python benchmarks/bench_stitch.py --slices 0      # the whole phantom (minutes on a CPU)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.evaluation import evaluate_images  # noqa: E402
from BoneSegmentationLib.modelfile import load_model  # noqa: E402
from BoneSegmentationLib.phantom import make_phantom  # noqa: E402
from BoneSegmentationLib.registry import resolve_model  # noqa: E402
from BoneSegmentationLib.segment import segment_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--slices", type=int, default=160, help="keep this many 2 mm slices from the top (0: all)")
    ap.add_argument("--stitch", type=int, default=2)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    ct, ref, _ = make_phantom(args.seed, spacing=2.0, partial=False)
    if args.slices:
        ct, ref = ct[:, :, -args.slices:], ref[:, :, -args.slices:]
    model = load_model(resolve_model(args.model))
    print(f"phantom {ct.GetSize()} at 2 mm, model {model.metadata['name']} {model.metadata['version']} "
          f"at {model.spacing[0]:g} mm")
    rows = {}
    for factor in (1, args.stitch):
        with measure() as m:
            result = segment_image(ct, model, device="cpu", stitch=factor)
        groups = {r.group: r.median for r in evaluate_images(result.labels, ref)["groups"]}
        rows[factor] = (m.elapsed_s, m.peak_mib, groups)
    print("| passes | time s | peak MiB | spine | large bones | all |")
    print("|---|---|---|---|---|---|")
    for factor, (t, mib, g) in rows.items():
        print(f"| {factor ** 3} | {t:.1f} | {mib:.0f} | {g.get('spine', float('nan')):.3f} | "
              f"{g.get('large_bones', float('nan')):.3f} | {g.get('all', float('nan')):.3f} |")
    (t1, m1, _), (tf, mf, _) = rows[1], rows[args.stitch]
    print(f"stitch {args.stitch} / single pass: time {tf / t1:.2f}x, memory {mf / max(m1, 1e-9):.2f}x")


if __name__ == "__main__":
    main()

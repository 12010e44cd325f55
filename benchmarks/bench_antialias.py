"""What anti-aliased resampling costs a user: a whole segmentation of a thin-slice CT by a model
whose metadata asks for it, against the same network without, side by side in one process.

Both models are real TorchScript files with the bundled model's architecture (width 12, 4 levels,
4 mm, patch 64) and the same random weights, so only the preprocessing differs. The CT is
synthetic noise around a body-like block at thin-slice spacing (the case smoothing is for).
Reports wall time and peak memory (RSS above baseline) of ``Segmenter.segment``, their ratios,
and the sampling alone: linear, smoothed while sampled (``smooth_onto``, what the pipeline runs),
and the whole CT smoothed first (``antialias``, what it ran until session 24).

    python benchmarks/bench_antialias.py                    # 512 x 512 x 300 at 0.8 x 0.8 x 1 mm
    python benchmarks/bench_antialias.py --slices 600 --repeat 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.inference.options import InferenceOptions  # noqa: E402
from BoneSegmentationLib.inference.preprocess import (antialias, grid_geometry, resample_onto,  # noqa: E402
                                                      smooth_onto)
from BoneSegmentationLib.inference.segmenter import Segmenter  # noqa: E402
from BoneSegmentationLib.model.modelfile import load_model  # noqa: E402
from BoneSegmentationLib.model.random_weights import save_random_model  # noqa: E402


def thin_slice_ct(size: int, slices: int, spacing: tuple[float, float, float]) -> sitk.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(-60, 60, (slices, size, size), dtype=np.int16)  # noise, a thin-slice kernel's
    array[:, size // 4: 3 * size // 4, size // 6: 5 * size // 6] += 40  # soft tissue
    array[:, size // 2 - 20: size // 2 + 20, size // 2 - 15: size // 2 + 15] += 600  # a spine-like column
    array[:, : size // 8] = -1000  # air in front
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="pixels across")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.0], metavar=("X", "Y", "Z"))
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, best time kept")
    args = ap.parse_args()
    ct = thin_slice_ct(args.size, args.slices, tuple(args.spacing))
    options = InferenceOptions(device="cpu", anatomy=False, mirror="off")
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: load_model(save_random_model(Path(tmp) / f"{name}.pt", base_features=12, levels=4, patch=64,
                                                     spacing=4.0, antialias=name == "smoothed"))
                  for name in ("linear", "smoothed")}
        print(f"CT {args.size} x {args.size} x {args.slices} at {' x '.join(map(str, args.spacing))} mm "
              f"({np.prod(ct.GetSize()) * 2 / 2**20:.0f} MiB int16); model grid 4 mm, width 12, patch 64")
        results = {}
        for name, model in models.items():
            segmenter = Segmenter(model, options)
            best = None
            for _ in range(args.repeat):
                with measure() as m:
                    result = segmenter.segment(ct)
                if best is None or m.elapsed_s < best[0]:
                    best = (m.elapsed_s, m.peak_mib, result.timings["preprocess_s"])
            results[name] = best
            print(f"{name:9s} segment {best[0]:6.1f} s, peak {best[1]:6.0f} MiB, preprocessing {best[2]:5.1f} s")
        oriented = sitk.DICOMOrient(ct, "LPS")  # the segmenter has this copy before it samples
        size, origin = grid_geometry(oriented, (4.0, 4.0, 4.0))
        for label, sample in (("linear sampling alone", lambda: resample_onto(oriented, size, origin, (4.0,) * 3)),
                              ("smoothed while sampled (smooth_onto)",
                               lambda: smooth_onto(oriented, size, origin, (4.0,) * 3)),
                              ("the whole CT smoothed, then sampled (antialias, session 22)",
                               lambda: resample_onto(antialias(oriented, (4.0,) * 3), size, origin, (4.0,) * 3))):
            with measure() as m:
                grid = sample()
            print(f"{label}: {m.elapsed_s:.2f} s, peak {m.peak_mib:.0f} MiB above the oriented CT")
            del grid
        (t0, m0, _), (t1, m1, _) = results["linear"], results["smoothed"]
        print(f"ratio smoothed / linear: time {t1 / t0:.2f}x, peak memory {m1 / m0:.2f}x")


if __name__ == "__main__":
    main()

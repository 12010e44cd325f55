"""The GPU path measured: a full 2 mm upper body (250 x 250 x 500) through the paper-width
No-New-Net (width 30, 5 levels, 126 classes), streamed as ``bonesegmentation segment`` runs it.

For each window size (128^3, 160^3), precision (bf16 / fp16 autocast, fp32) and windows per
network call, side by side in one process: seconds for the whole volume (CUDA synchronised), peak
GPU memory (``torch.cuda.max_memory_allocated``), and voxel agreement of the label map with the
fp32 run of the same window size. The ring buffer is float16 on the GPU (``--accumulate float16``;
a float32 ring of 126 x 160 x 250 x 250 alone is 5 GB). ``--compile`` adds ``torch.compile``
(mode max-autotune-no-cudagraphs) rows. Goal (issue 20): <= 3 s and <= 6 GB on an H100-class GPU.

    python benchmarks/bench_gpu.py                       # on a CUDA machine (minutes)
    python benchmarks/bench_gpu.py --compile
    python benchmarks/bench_gpu.py --device cpu --smoke  # the script itself, tiny sizes, any machine

Random weights: the timing and memory do not depend on them; agreement between precisions is a
lower bound (a random network's near-ties are far more common than a trained one's).
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch

from BoneSegmentationLib.inference.sliding_window import predict_streaming
from BoneSegmentationLib.model.network import NoNewNet

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass
class Row:
    window: int
    precision: str
    batch: int
    compiled: bool
    seconds: float
    peak_gib: float
    agreement: float  # voxels with the fp32 run's label (same window), 1.0 for that run itself


def _gib(value: float) -> str:
    """GPU memory for the tables; '-' on the CPU, where it is not measured."""
    return "-" if np.isnan(value) else f"{value:.2f}"


def run_once(net, volume, classes, window, precision, batch, device):
    """Labels, seconds and peak memory of one full-volume run."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    labels = predict_streaming(net, volume, classes, (window,) * 3, overlap=0.5, device=device,
                               autocast_dtype=PRECISIONS[precision], batch_size=batch,
                               accumulate_dtype=torch.float16 if device.type == "cuda" else None).labels
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    return labels, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, nargs=3, default=[250, 250, 500], metavar=("X", "Y", "Z"))
    ap.add_argument("--width", type=int, default=30)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--classes", type=int, default=126)
    ap.add_argument("--windows", type=int, nargs="+", default=[128, 160])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp16", "fp32"], choices=list(PRECISIONS))
    ap.add_argument("--compile", action="store_true", help="also torch.compile the network (bf16 rows)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script on any machine")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.width, args.levels, args.windows, args.batches = [40, 36, 48], 4, 3, [16, 32], [1, 2]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here: run on a GPU machine, or --device cpu --smoke to check the script")

    torch.manual_seed(0)
    eager = NoNewNet(args.classes, base_features=args.width, levels=args.levels).eval().to(device)
    nets = {False: eager}
    if args.compile:
        nets[True] = torch.compile(eager, mode="max-autotune-no-cudagraphs", dynamic=False)
    x, y, z = args.size
    volume = torch.randn(z, y, x)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}; volume {x} x {y} x {z} (2 mm), No-New-Net width {args.width}, "
          f"{args.levels} levels, {args.classes} classes, overlap 0.5"
          f"{', float16 ring' if device.type == 'cuda' else ''}")

    rows: list[Row] = []
    for window in args.windows:
        reference = None
        order = sorted(args.precisions, key=lambda p: p != "fp32")  # fp32 first: the agreement reference
        for precision, batch, compiled in itertools.product(order, args.batches, sorted(nets)):
            if compiled and precision != "bf16":
                continue
            net = nets[compiled]
            try:
                run_once(net, volume[: window + 8], args.classes, window, precision, batch, device)  # warm-up
                labels, seconds, peak = run_once(net, volume, args.classes, window, precision, batch, device)
            except torch.cuda.OutOfMemoryError:
                print(f"window {window}^3 {precision} batch {batch}: out of GPU memory")
                torch.cuda.empty_cache()
                continue
            if reference is None:
                reference = labels
            rows.append(Row(window, precision, batch, compiled, seconds, peak, float(np.mean(labels == reference))))
            print(f"  window {window}^3 {precision:>4} batch {batch} {'compiled' if compiled else 'eager':>8}: "
                  f"{seconds:6.2f} s, peak {_gib(peak)} GiB", flush=True)

    print("\n| window | precision | windows per call | torch.compile | seconds | peak GPU GiB | voxels as fp32 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.window}^3 | {r.precision} | {r.batch} | {'yes' if r.compiled else 'no'} | {r.seconds:.2f} | "
              f"{_gib(r.peak_gib)} | {100 * r.agreement:.3f} % |")
    best = min(rows, key=lambda r: r.seconds)
    print(f"\nfastest: {best.window}^3 {best.precision} batch {best.batch}"
          f"{' compiled' if best.compiled else ''}: {best.seconds:.2f} s, {_gib(best.peak_gib)} GiB "
          f"(goal <= 3 s and <= 6 GB on an H100-class GPU)")


if __name__ == "__main__":
    main()

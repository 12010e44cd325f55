"""Streaming sliding-window inference versus MONAI's ``sliding_window_inference``.

Same network, same 126-class job, same Gaussian blending, side by side in one process. Both
produce what a user needs: a label map and a top-1 confidence map. Reports wall time and peak
memory (RSS above baseline) and their ratios, then this engine's peak as the volume length
doubles.

    pip install -e ".[benchmark]"
    python benchmarks/bench_inference.py                      # 160x160x320, 96^3, overlap 0.5
                                                              # (float32 ring, float16 ring, MONAI)
    python benchmarks/bench_inference.py --lengths 160 320 640 --width 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.model.network import NoNewNet  # noqa: E402
from BoneSegmentationLib.inference.sliding_window import predict_streaming  # noqa: E402


def run_ours(net, volume, classes, patch, overlap, device):
    return predict_streaming(net, volume, classes, (patch,) * 3, overlap, device=device).labels


def run_ours_float16(net, volume, classes, patch, overlap, device):
    """``--accumulate float16``: the ring holds running means in float16."""
    return predict_streaming(net, volume, classes, (patch,) * 3, overlap, device=device,
                             accumulate_dtype=torch.float16).labels


def run_monai(net, volume, classes, patch, overlap, device):
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        logits = sliding_window_inference(volume[None, None].to(device), (patch,) * 3, 1, net,
                                          overlap=overlap, mode="gaussian", sigma_scale=0.125)
        labels = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        probabilities = torch.softmax(logits, 1)  # what ours reduces to as well: top-1 and bone probability
        outputs = (labels, probabilities.amax(1)[0].half().cpu().numpy(), (1 - probabilities[0, 0]).half().cpu().numpy())
    return outputs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cross-section", type=int, default=160)
    ap.add_argument("--length", type=int, default=320)
    ap.add_argument("--lengths", type=int, nargs="*", default=[160, 320, 640],
                    help="lengths for the scaling series (this engine only)")
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--classes", type=int, default=126)
    ap.add_argument("--width", type=int, default=4, help="No-New-Net base features (30 = paper)")
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    net = torch.jit.script(NoNewNet(args.classes, base_features=args.width, levels=args.levels)).eval().to(device)
    cs = args.cross_section
    print(f"device {device}, threads {torch.get_num_threads()}, No-New-Net width {args.width} "
          f"levels {args.levels}, {args.classes} classes, patch {args.patch}^3, overlap {args.overlap}")

    volume = torch.randn(args.length, cs, cs)
    run_ours(net, volume[: args.patch], args.classes, args.patch, args.overlap, device)  # warm-up
    results = {}
    runs = (("this engine", run_ours), ("float16 ring", run_ours_float16), ("MONAI", run_monai))
    for name, fn in runs:
        with measure() as m:
            labels = fn(net, volume, args.classes, args.patch, args.overlap, device)
        results[name] = (m.elapsed_s, m.peak_mib, labels)
        print(f"{name:<12} {cs}x{cs}x{args.length}: {m.elapsed_s:7.1f} s  peak {m.peak_mib:8.0f} MiB")
    t_monai, m_monai, l_monai = results["MONAI"]
    for name, _ in runs[:2]:
        t, mem, labels = results[name]
        print(f"ratio ({name} / MONAI): time {t / t_monai:.2f}x, peak memory {mem / m_monai:.2f}x; "
              f"labels agree on {100 * (labels == l_monai).mean():.3f} % of voxels")

    print("\nthis engine, peak memory as the scan length grows:")
    for length in args.lengths:
        volume = torch.randn(length, cs, cs)
        with measure() as m:
            run_ours(net, volume, args.classes, args.patch, args.overlap, device)
        print(f"  {cs}x{cs}x{length}: {m.elapsed_s:7.1f} s  peak {m.peak_mib:8.0f} MiB")


if __name__ == "__main__":
    main()

"""Sparse CE + Dice versus MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)`` at 126 classes,
and the time of one training iteration per patch size (next to the paper's 1.1-8.8 s on a GPU).

Side by side in one process; the logits tensor exists before either loss runs, so the peak is
what the loss adds (forward + backward, the gradient included).

    pip install -e ".[benchmark]"
    python benchmarks/bench_loss.py                      # loss at 96^3, 128^3, 160^3
    python benchmarks/bench_loss.py --iteration          # + one training iteration per size
    python benchmarks/bench_loss.py --iteration --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.training.losses import sparse_ce_dice  # noqa: E402
from BoneSegmentationLib.model.network import NoNewNet  # noqa: E402

CLASSES = 126


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_loss(kind: str, logits: torch.Tensor, target: torch.Tensor) -> float:
    if kind == "sparse":
        loss = sparse_ce_dice(logits, target)
    else:
        from monai.losses import DiceCELoss
        loss = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target[:, None])
    loss.backward()
    return float(loss.detach())


def measure_run(fn, device: torch.device):
    """(seconds, peak MiB above the start) of ``fn()``; CUDA: allocator peak, CPU: RSS."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        value = fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t, (torch.cuda.max_memory_allocated() - base) / 2**20, value
    with measure() as m:
        value = fn()
    return m.elapsed_s, m.peak_mib, value


def bench_loss(sizes: list[int], device: torch.device) -> None:
    print(f"Loss forward+backward, {CLASSES} classes, batch 1, {device}")
    print("| patch | sparse CE+Dice s | MiB | MONAI DiceCELoss s | MiB | time ratio | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for s in sizes:
        g = torch.Generator().manual_seed(s)
        logits = torch.randn(1, CLASSES, s, s, s, generator=g).to(device).requires_grad_()
        target = torch.randint(0, CLASSES, (1, s, s, s), generator=g).to(device)
        run_loss("sparse", logits, target)  # warm-up (allocator, kernels)
        logits.grad = None  # freed before each measurement: the new gradient counts in its run
        t_s, m_s, _ = measure_run(lambda: run_loss("sparse", logits, target), device)
        logits.grad = None
        t_m, m_m, _ = measure_run(lambda: run_loss("monai", logits, target), device)
        print(f"| {s}^3 | {t_s:.2f} | {m_s:.0f} | {t_m:.2f} | {m_m:.0f} | {t_s / t_m:.2f}x | {m_s / m_m:.2f}x |",
              flush=True)
        del logits, target


def bench_iteration(sizes: list[int], width: int, levels: int, device: torch.device, repeats: int) -> None:
    print(f"\nOne training iteration (No-New-Net width {width}, {levels} levels, {CLASSES} classes, forward + "
          f"sparse CE+Dice + backward + Adam step), {device}; paper: 1.1-8.8 s on a GPU")
    print("| patch | seconds (median of {}) | peak MiB |".format(repeats))
    print("|---|---|---|")
    for s in sizes:
        torch.manual_seed(0)
        net = NoNewNet(CLASSES, base_features=width, levels=levels).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x = torch.randn(1, 1, s, s, s, device=device)
        y = torch.randint(0, CLASSES, (1, s, s, s), device=device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = net(x)
            loss = sparse_ce_dice(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(device)

        step()
        runs = [measure_run(step, device) for _ in range(repeats)]
        times = sorted(r[0] for r in runs)
        print(f"| {s}^3 | {times[len(times) // 2]:.2f} | {max(r[1] for r in runs):.0f} |", flush=True)
        del net, opt, x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iteration", action="store_true", help="also time one training iteration per size")
    ap.add_argument("--width", type=int, default=30)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-loss", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    if not args.no_loss:
        bench_loss(args.sizes, device)
    if args.iteration:
        bench_iteration(args.sizes, args.width, args.levels, device, args.repeats)


if __name__ == "__main__":
    main()

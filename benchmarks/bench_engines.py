"""TorchScript against OpenVINO, side by side in one process:

1. the bundled model over the full demo phantom (seed 4, 2 mm, as ``bonesegmentation demo`` runs
   it: mirror averaging as the model asks, the anatomical step off so that only the engine
   differs): wall time, peak memory, voxel agreement of the label maps;
2. the paper-width network (No-New-Net width 30, 5 levels, random weights) on single 96^3 windows:
   seconds per window and argmax agreement.

OpenVINO bf16 is measured only where the CPU reports BF16 (``OPTIMIZATION_CAPABILITIES``); the
product pins fp32.

    pip install -e ".[benchmark,fast-cpu]"
    python benchmarks/bench_engines.py                # both parts (minutes on a 2-core CPU)
    python benchmarks/bench_engines.py --part window
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.inference.engine import OpenVinoNetwork  # noqa: E402
from BoneSegmentationLib.inference.options import InferenceOptions  # noqa: E402
from BoneSegmentationLib.inference.segmenter import Segmenter  # noqa: E402
from BoneSegmentationLib.model.modelfile import load_model  # noqa: E402
from BoneSegmentationLib.model.random_weights import save_random_model  # noqa: E402
from BoneSegmentationLib.model.registry import resolve_model  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import DEMO_SEED, make_phantom  # noqa: E402


def cpu_has_bf16() -> bool:
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def full_scan(threads: int | None) -> None:
    ct, _, _ = make_phantom(DEMO_SEED, spacing=2.0, partial=False)
    model = load_model(resolve_model(None))
    rows, labels = [], {}
    bf16 = cpu_has_bf16()
    runs = ["torch", "openvino"] + (["openvino-bf16"] if bf16 else [])
    for run in runs:
        engine = run.split("-")[0]
        segmenter = Segmenter(model, InferenceOptions(device="cpu", engine=engine, anatomy=False, threads=threads))
        description = segmenter.engine.description
        if run == "openvino-bf16":
            segmenter.network = OpenVinoNetwork(model, mirrored=segmenter.mirrored, threads=threads, precision="bf16")
            description = description.replace("fp32", "bf16")
        if engine == "openvino":
            segmenter.segment(ct[:, :, :40])  # the one-time conversion (cached) is not the engine's speed
        with measure() as m:
            result = segmenter.segment(ct)
        labels[run] = sitk.GetArrayFromImage(result.labels)
        rows.append((run, description, m.elapsed_s, m.peak_mib))
    if not bf16:
        print("OpenVINO bf16: not measured, this CPU reports no BF16")
    bone = (labels["torch"] > 0) | (labels["openvino"] > 0)
    print(f"bundled model {model.info.name} {model.info.version}, demo phantom {ct.GetSize()} at 2 mm, "
          f"mirror {'on' if segmenter.mirrored else 'off'}")
    print("| engine | time s | peak MiB | time ratio | memory ratio | voxel agreement (all / bone) |")
    print("|---|---|---|---|---|---|")
    t0, m0 = rows[0][2], rows[0][3]
    for engine, description, t, mem in rows:
        agree = "1 / 1" if engine == "torch" else \
            f"{np.mean(labels['torch'] == labels[engine]):.5f} / {np.mean(labels['torch'][bone] == labels[engine][bone]):.5f}"
        print(f"| {description} | {t:.1f} | {mem:.0f} | {t / t0:.2f}x | {mem / max(m0, 1):.2f}x | {agree} |")


def paper_window(repeats: int) -> None:
    import openvino as ov
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(save_random_model(Path(tmp) / "paper.pt", base_features=30, levels=5, patch=96,
                                             num_classes=126, seed=0, spacing=2.0, name="paper-width-random",
                                             purpose="the benchmark"))
        ov_net = OpenVinoNetwork(model, cache=Path(tmp) / "ov")
        x = torch.randn(1, 1, 96, 96, 96)
        with torch.inference_mode():
            model.module(x)
            t = time.perf_counter()
            for _ in range(repeats):
                ref = model.module(x)
            t_torch = (time.perf_counter() - t) / repeats
        ov_net(x)
        t = time.perf_counter()
        for _ in range(repeats):
            out = ov_net(x)
        t_ov = (time.perf_counter() - t) / repeats
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" in caps:
            bf16_net = OpenVinoNetwork(model, cache=Path(tmp) / "ov", precision="bf16")
            bf16_net(x)
            t = time.perf_counter()
            for _ in range(repeats):
                out_bf16 = bf16_net(x)
            t_bf16 = (time.perf_counter() - t) / repeats
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    print(f"paper-width No-New-Net (14.5 M parameters), one 96^3 window, mean of {repeats}; CPU capabilities {caps}")
    print("| engine | s per window | ratio | argmax agreement |")
    print("|---|---|---|---|")
    print(f"| TorchScript | {t_torch:.2f} | 1.00x | 1 |")
    print(f"| OpenVINO fp32 | {t_ov:.2f} | {t_ov / t_torch:.2f}x | {agree:.5f} |")
    if "BF16" not in caps:
        print("| OpenVINO bf16 | not measured: this CPU has no BF16 | | |")
    else:
        agree_bf16 = float((out_bf16.argmax(1) == ref.argmax(1)).float().mean())
        print(f"| OpenVINO bf16 | {t_bf16:.2f} | {t_bf16 / t_torch:.2f}x | {agree_bf16:.5f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "scan", "window"), default="all")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.part in ("all", "scan"):
        full_scan(args.threads)
    if args.part in ("all", "window"):
        paper_window(args.repeats)


if __name__ == "__main__":
    main()

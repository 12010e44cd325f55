"""Choosing where inference runs: CUDA when there is one, else the CPU (Apple MPS lacks the 3D
operations No-New-Net needs)."""

from __future__ import annotations

import torch

from ..core.errors import BoneSegmentationError


def set_threads(threads: int | None) -> None:
    """CPU threads for PyTorch (None or 0: PyTorch's default, all cores)."""
    if threads:
        torch.set_num_threads(threads)


def resolve_device(requested: str = "auto") -> torch.device:
    requested = (requested or "auto").lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BoneSegmentationError("CUDA was requested but no CUDA GPU is usable by this PyTorch build "
                                        f"(torch {torch.__version__}); use --device cpu or auto")
        return torch.device(requested)
    if requested == "cpu":
        return torch.device("cpu")
    raise BoneSegmentationError(f"unknown device '{requested}': use auto, cpu or cuda")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bf16 where supported, else fp16); full precision on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"CUDA {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"CPU ({torch.get_num_threads()} threads)"

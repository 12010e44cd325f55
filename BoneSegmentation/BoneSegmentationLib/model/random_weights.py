"""A real model file with random weights: what the tests and benchmarks run when the question is the
engine's behaviour (speed, memory, geometry, speckled label maps), not a trained model's answers."""

from __future__ import annotations

from pathlib import Path

import torch

from .metadata import make_metadata
from .modelfile import save_model
from .network import NoNewNet


def save_random_model(path: Path, *, base_features: int = 4, levels: int = 3, patch: int = 64,
                      num_classes: int = 126, seed: int = 0, spacing: float = 2.0,
                      name: str = "random-weights", purpose: str = "tests and benchmarks",
                      antialias: bool = False) -> Path:
    """A No-New-Net seeded with ``seed``, scripted and saved as a self-describing model file."""
    torch.manual_seed(seed)
    net = NoNewNet(num_classes, base_features=base_features, levels=levels)
    meta = make_metadata(
        name=name, version="0", description=f"random weights, for {purpose} only",
        network={"architecture": "NoNewNet", "base_features": base_features, "levels": levels,
                 "size_divisor": 2 ** (levels - 1)},
        training={"data": "none (random initialisation)"}, patch_size=patch, spacing_mm=spacing, antialias=antialias)
    return save_model(net, meta, Path(path))

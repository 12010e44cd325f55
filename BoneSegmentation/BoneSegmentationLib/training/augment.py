"""Spatial and intensity augmentation on the training device (GPU when there is one):
random affine (rotation, scale) plus a smooth elastic displacement applied with one
``grid_sample`` (trilinear for the CT, nearest for the labels), then brightness and contrast.
No MixUp (the paper found it harmful)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    a, b, c = angles
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment(image: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, max_rotation_deg: float = 10,
            scale_range: float = 0.1, elastic_strength: float = 0.03, elastic_grid: int = 4,
            intensity: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (1, 1, D, H, W) float, ``labels`` (1, D, H, W) int64 -> augmented copies."""
    device = image.device
    angles = (torch.rand(3, generator=gen) * 2 - 1) * math.radians(max_rotation_deg)
    scale = 1 + (torch.rand(1, generator=gen).item() * 2 - 1) * scale_range
    theta = torch.zeros(1, 3, 4)
    theta[0, :, :3] = _rotation(angles) / scale
    grid = F.affine_grid(theta.to(device), list(image.shape), align_corners=False)
    if elastic_strength > 0:
        coarse = (torch.rand((1, 3, elastic_grid, elastic_grid, elastic_grid), generator=gen) * 2 - 1) * elastic_strength
        disp = F.interpolate(coarse.to(device), size=image.shape[2:], mode="trilinear", align_corners=False)
        grid = grid + disp.permute(0, 2, 3, 4, 1)
    out_img = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out_lab = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                            align_corners=False)[:, 0].long()
    if intensity:
        contrast = 1 + (torch.rand(1, generator=gen).item() * 2 - 1) * 0.15
        brightness = (torch.rand(1, generator=gen).item() * 2 - 1) * 0.1
        mean = out_img.mean()
        out_img = (out_img - mean) * contrast + mean + brightness
    return out_img, out_lab

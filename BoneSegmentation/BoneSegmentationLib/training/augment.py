"""Spatial and intensity augmentation on the training device (GPU when there is one):
random affine (rotation, scale) plus a smooth elastic displacement applied with one
``grid_sample`` (trilinear for the CT, nearest for the labels), then intensity changes in the
spirit of nnU-Net's: contrast and brightness always; now and then a gamma curve, a coarser
resolution, and Gaussian noise, so that the network cannot lean on the exact grey values and
sharpness of the synthesised images. No MixUp (the paper found it harmful). Opt-in, the cores of
the bones faded toward soft tissue (``fade_bone_cores``): osteoporotic bone, whose cortex stays;
opt-in too, a patch cut to a short slab and filled as inference fills a short scan
(``short_view_slices``, used by ``train._crop``).

Where the rotation reaches past the patch, the CT and the labels both repeat the patch's border:
the labels used to be padded with background there while the CT repeated its border, so bone
cut by a patch edge was taught as background in the corners."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: The normalised intensity range the gamma curve works on: the model's HU clip / 1000 (metadata's
#: DEFAULT_INTENSITY: -1024..2048 HU, mean 0, std 1000).
GAMMA_RANGE = (-1.024, 2.048)

#: What ``augment`` does, in words, for the model's metadata.
DESCRIPTION = ("rotation +-10 deg, scale +-10 %, elastic; contrast x0.85-1.15, brightness +-100 HU; "
               "gamma 0.7-1.5 (p 0.3), resolution down to half (p 0.25), noise up to 50 HU (p 0.15); "
               "labels repeat the patch border as the CT does")


#: Soft tissue in the normalised image (40 HU): where a faded bone core tends.
SOFT_TISSUE = 0.04

#: The range of the factor a faded core keeps of its density above soft tissue.
FADE_RANGE = (0.3, 1.0)


def fade_description(share: float) -> str:
    """``fade_bone_cores`` in words, for the model's metadata."""
    return (f"bone cores (bone voxels with bone all round) faded toward 40 HU, keeping x{FADE_RANGE[0]:g}-"
            f"{FADE_RANGE[1]:g} of their density above it (p {share:g})")


#: Head-to-foot extent (mm) of a short view: a few slices of a thorax, the shortest scans users load.
SHORT_VIEW_MM = (24.0, 96.0)


def short_view_description(share: float) -> str:
    """``short_view_slices`` in words, for the model's metadata."""
    return (f"short views: {SHORT_VIEW_MM[0]:g}-{SHORT_VIEW_MM[1]:g} mm of the patch kept head to foot and the rest "
            f"filled as inference fills a scan that short, mirrored (p {share:g})")


def short_view_slices(gen: torch.Generator, share: float, spacing_mm: float, depth: int) -> int | None:
    """With probability ``share``, how many of a patch's ``depth`` slices (at ``spacing_mm``) to keep
    as a short scan; None to keep the patch whole. No draw at all when ``share`` is 0, so the
    random stream of runs without it is unchanged.

    Why: a scan shorter than the network's window is mirrored head to foot to fill it
    (``sliding_window.fill_to_patch``), so a 40 mm slab reaches the network as a stack of mirror
    copies with no vertebra above or below it, a view whole-body training images never give. On
    synthetic 40 mm slabs of the lower thorax in the arterial phase 1.6 called the bright aorta the
    vertebral body and missed the vertebra (seed 1997: 36-40 % of T11/T12 found), and the real
    thorax slab of the test set fails the same way."""
    if share <= 0:
        return None
    use, mm = _uniform(gen, 0, 1) < share, _uniform(gen, *SHORT_VIEW_MM)
    if not use:
        return None
    return min(depth, max(1, int(round(mm / spacing_mm))))


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    a, b, c = angles
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(1, generator=gen).item()


def augment(image: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, max_rotation_deg: float = 10,
            scale_range: float = 0.1, elastic_strength: float = 0.03, elastic_grid: int = 4,
            intensity: bool = True, fade_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (1, 1, D, H, W) float, ``labels`` (1, D, H, W) int64 -> augmented copies.
    ``fade_share``: the share of patches whose bone cores ``fade_bone_cores`` fades (0: none, and
    no draw made, so the random stream of runs without it is unchanged)."""
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
    out_lab = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="border",
                            align_corners=False)[:, 0].long()
    if fade_share > 0:
        out_img = fade_bone_cores(out_img, out_lab, gen, fade_share)
    if intensity:
        out_img = augment_intensity(out_img, gen)
    return out_img, out_lab


def fade_bone_cores(image: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, share: float) -> torch.Tensor:
    """With probability ``share``, the bone voxels whose 26 neighbours are all bone moved toward
    soft tissue, keeping a factor drawn from ``FADE_RANGE`` of their density above it.

    Why: an old patient's cancellous bone is barely denser than muscle (a lumbar body's core near
    100 HU, a sacrum's near 70) while the cortex round it stays; a network that learned bone as
    "bright" calls such cores background. The shell is kept, so the cue left is the real one: a
    thin bright rim round a faint core. Both draws are made whenever ``share`` > 0."""
    use, keep = _uniform(gen, 0, 1) < share, _uniform(gen, *FADE_RANGE)
    if not use:
        return image
    bone = (labels > 0)[:, None].to(image.dtype)
    core = -F.max_pool3d(-bone, 3, stride=1, padding=1) > 0.5  # an erosion: the patch's edge does not erode
    faded = SOFT_TISSUE + (image - SOFT_TISSUE) * keep
    return torch.where(core, faded, image)


def augment_intensity(image: torch.Tensor, gen: torch.Generator, p_gamma: float = 0.3,
                      p_low_resolution: float = 0.25, p_noise: float = 0.15) -> torch.Tensor:
    """Contrast (x0.85-1.15 about the patch mean) and brightness (+-100 HU) always; with the given
    probabilities a gamma curve (0.7-1.5) over the model's HU range, a coarser resolution (down to
    half, then back: the blur of thick slices and soft kernels) and Gaussian noise (up to 50 HU).
    Every draw is made whether or not its change applies, so the generator's stream does not depend
    on which ones did."""
    contrast = _uniform(gen, 0.85, 1.15)
    brightness = _uniform(gen, -0.1, 0.1)
    use_gamma, gamma = _uniform(gen, 0, 1) < p_gamma, _uniform(gen, 0.7, 1.5)
    use_low, zoom = _uniform(gen, 0, 1) < p_low_resolution, _uniform(gen, 0.5, 1.0)
    use_noise, sigma = _uniform(gen, 0, 1) < p_noise, _uniform(gen, 0.0, 0.05)
    mean = image.mean()
    out = (image - mean) * contrast + mean + brightness
    if use_gamma:
        lo, hi = GAMMA_RANGE
        unit = ((out - lo) / (hi - lo)).clamp(0, 1)
        out = unit.pow(gamma) * (hi - lo) + lo
    if use_low:
        shape = out.shape[2:]
        small = [max(1, int(round(s * zoom))) for s in shape]
        out = F.interpolate(F.interpolate(out, size=small, mode="trilinear", align_corners=False),
                            size=shape, mode="trilinear", align_corners=False)
    if use_noise:
        noise = torch.randn(out.shape, generator=gen).to(out.device)
        out = out + noise * sigma
    return out

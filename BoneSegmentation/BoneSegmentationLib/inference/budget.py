"""What a segmentation will cost, known before anything large is allocated: peak memory from the
grid sizes (input, model grid, ring buffer, windows) and the number of network passes, so a job
that cannot fit is refused with the figure instead of dying in an allocation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputImageError
from ..core.memory import available_bytes
from .preprocess import SLAB_SLICES
from .to_input_grid import SLAB_SLICES as TO_INPUT_SLAB

ACTIVATION_FACTOR = 40  # float32 values per window voxel and base feature held by a U-Net forward pass


@dataclass(frozen=True)
class JobBudget:
    model_grid: tuple[int, int, int]  # (x, y, z) voxels at model spacing
    passes: int  # stitch^3
    peak_bytes: int

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2 ** 30


def estimate(image: sitk.Image, spacing_mm: tuple[float, float, float], num_classes: int,
             patch: tuple[int, int, int], width: int, stitch: int = 1, mirrored: bool = False,
             ring_bytes: int = 4, antialias: bool = False) -> JobBudget:
    """Peak host memory of ``Segmenter.segment`` for ``image`` (an upper estimate); ``antialias``:
    the model's metadata asks for the input to be smoothed while it is sampled (``smoothing_bytes``)."""
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    grid = tuple(int(np.ceil(e / s)) + 1 for e, s in zip(extent, spacing_mm))
    fine = tuple(g * stitch for g in grid)
    n_in, n_grid, n_fine = int(np.prod(image.GetSize())), int(np.prod(grid)), int(np.prod(fine))
    padded = [max(g, p) for g, p in zip(grid, patch)]
    ring = num_classes * min(patch[2], padded[2]) * padded[0] * padded[1] * ring_bytes * 2  # logits + weights, rounding
    windows = (2 if mirrored else 1) * int(np.prod(patch)) * (num_classes + ACTIVATION_FACTOR * width) * 4
    peak = (n_in * image.GetSizeOfPixelComponent() * 2  # the input and its reoriented copy
            + (smoothing_bytes(image, spacing_mm) if antialias else 0)
            + n_grid * 4 * 2  # resampled grid and normalised volume (float32)
            + n_grid * 5  # labels, float16 confidence and float16 bone probability of one pass
            + n_fine * 11  # labels, confidence and bone probability (float16, then float32) of all passes
            + n_fine * 10  # to_input_grid's float32 probability and grown labels, as arrays and images
            + n_in * 5  # labels and confidence back on the input grid
            + TO_INPUT_SLAB * n_in // max(1, image.GetSize()[2]) * 6  # to_input_grid's slab buffers
            + ring + windows)
    return JobBudget(grid, stitch ** 3, int(peak))


def smoothing_bytes(image: sitk.Image, spacing_mm: tuple[float, float, float]) -> int:
    """What ``preprocess.smooth_onto`` holds above the CT, at most: the CT already sampled along
    its first axis (float32, with a temporary half as large while the next axis is sampled) and
    two float32 slabs of ``SLAB_SLICES`` slices (bench_antialias: 60 MiB for a 150 MiB CT)."""
    n_in = int(np.prod(image.GetSize()))
    direction = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    first, slices = int(direction[0].argmax()), int(direction[2].argmax())  # the input's axes along x and z
    shrink = min(1.0, image.GetSpacing()[first] / spacing_mm[0])
    slab = SLAB_SLICES * n_in // max(1, image.GetSize()[slices])
    return int(n_in * shrink * 4 * 1.5) + slab * 4 * 2


def check_fits(budget: JobBudget, available: int | None = None) -> None:
    available = available_bytes() if available is None else available
    if available is not None and budget.peak_bytes > 0.9 * available:
        raise InputImageError(
            f"this job needs about {budget.peak_gib:.1f} GiB of memory (model grid "
            f"{' x '.join(map(str, budget.model_grid))} voxels, {budget.passes} pass(es)) but "
            f"{available / 2 ** 30:.1f} GiB are free; crop the CT to the region of interest, use a model with a "
            "coarser spacing, or lower --stitch")

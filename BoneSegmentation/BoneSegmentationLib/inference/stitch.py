"""Shift-and-stitch: labels at 1/F of the model's spacing from F^3 passes on shifted grids.

Why: a model trained at 4 mm learns the label at the centre of each 4 mm voxel. Run on F^3 copies
of its grid, each offset by a multiple of spacing/F, it predicts the label at every point of a grid
F times finer; interleaving the passes gives labels at that finer spacing without interpolating
labels (the "shift-and-stitch" of Long et al., FCN, 2015). Nearest-neighbour resampling of a 4 mm
map, even a perfect one, cannot follow a 2 mm boundary; stitching can. The price is F^3 passes.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from .preprocess import AIR_HU, grid_geometry, resample_onto

Shift = tuple[int, int, int]  # (x, y, z) offset in fine voxels, 0 <= shift < factor


def stitch_shifts(factor: int) -> list[Shift]:
    """All F^3 offsets, the unshifted grid first."""
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"stitch factor must be a positive integer, got {factor!r}")
    return list(itertools.product(range(factor), repeat=3))


def fine_grid(oriented: sitk.Image, spacing: tuple[float, float, float], factor: int) -> sitk.Image:
    """An empty uint8 image on the grid the stitched labels live on: ``spacing / factor`` over the
    input's extent (for factor 1, exactly the model grid)."""
    fine_spacing = tuple(s / factor for s in spacing)
    size, origin = grid_geometry(oriented, fine_spacing)
    image = sitk.Image(size, sitk.sitkUInt8)
    image.SetSpacing(fine_spacing)
    image.SetOrigin(origin)
    image.SetDirection(oriented.GetDirection())
    return image


def shifted_grid(oriented: sitk.Image, fine: sitk.Image, factor: int, shift: Shift,
                 interpolator: int = sitk.sitkLinear, default_value: float = AIR_HU,
                 smooth: bool = False) -> sitk.Image:
    """``oriented`` resampled at model spacing on the fine points ``shift + factor * i``
    (``smooth``: anti-aliased, ``preprocess.smooth_onto``)."""
    direction = np.array(fine.GetDirection()).reshape(3, 3)
    fine_spacing = np.array(fine.GetSpacing())
    origin = np.array(fine.GetOrigin()) + direction @ (fine_spacing * np.array(shift))
    size = [max(1, -(-(n - s) // factor)) for n, s in zip(fine.GetSize(), shift)]
    return resample_onto(oriented, size, tuple(origin), tuple(fine_spacing * factor), interpolator, default_value,
                         smooth)


def interleave(fine_array: np.ndarray, coarse_array: np.ndarray, factor: int, shift: Shift) -> None:
    """Write one pass (z, y, x array) into its points of the fine array, in place."""
    sx, sy, sz = shift
    target = fine_array[sz::factor, sy::factor, sx::factor]
    if target.shape != coarse_array.shape:
        raise ValueError(f"pass {shift} has shape {coarse_array.shape}, its fine points {target.shape}")
    target[...] = coarse_array

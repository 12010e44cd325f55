"""Bring a CT onto the model's grid (orientation, spacing) and intensity scale, and back."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage, special

AIR_HU = -1024.0
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # 2.355
MIN_SIGMA_VOXELS = 0.25  # a narrower Gaussian changes nothing a linear resampling would not
SLAB_SLICES = 16  # smooth_onto reads the full-resolution CT this many slices at a time


def antialias_sigmas(source_spacing, target_spacing) -> tuple[float, ...]:
    """Per-axis Gaussian sigma (mm) that takes a voxel of ``source_spacing`` to a resolution of
    ``target_spacing`` before the image is sampled at that spacing: FWHM^2 = target^2 - source^2,
    so a 0.8 mm and a 2.5 mm scan both reach about 4 mm resolution at a 4 mm model grid (0 on an
    axis that is not made coarser, or only slightly)."""
    sigmas = []
    for src, dst in zip(source_spacing, target_spacing):
        sigma = float(np.sqrt(max(0.0, float(dst) ** 2 - float(src) ** 2)) / FWHM_PER_SIGMA)
        sigmas.append(sigma if sigma >= MIN_SIGMA_VOXELS * float(src) else 0.0)
    return tuple(sigmas)


def antialias(oriented: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """``oriented`` smoothed for sampling at ``spacing`` (see ``antialias_sigmas``), in its own
    pixel type, values below air read as air; not smoothed when no axis is made coarser. The
    full-resolution form of the smoothing (ITK's discrete Gaussian), kept as the reference
    ``smooth_onto`` is checked against:
    the pipeline and the training call ``smooth_onto``, which never holds a smoothed copy of the CT.

    Why smooth: linear resampling picks points. A 0.8 mm scan sampled every 4 mm keeps its full
    noise, a 1 mm cortex is hit or missed, and cancellous bone stays a speckle of trabeculae and
    fat, while a 2.5 mm scan of the same body looks smooth: the network would see two appearances
    of one anatomy. Smoothing first makes what it sees depend on the body, not on the scanner's
    slice thickness, and is the same for training's synthesised images and a user's scan."""
    oriented = at_least_air(oriented)
    sigmas = antialias_sigmas(oriented.GetSpacing(), spacing)
    if not any(sigmas):
        return oriented
    smooth = sitk.DiscreteGaussianImageFilter()
    smooth.SetVariance([s * s for s in sigmas])
    smooth.SetUseImageSpacing(True)
    smooth.SetMaximumKernelWidth(64)
    return smooth.Execute(oriented)


def at_least_air(image: sitk.Image) -> sitk.Image:
    """``image`` with values below air (-1024 HU) raised to air, in its own pixel type. Scanners
    fill the corners outside the reconstruction circle with -2048 or -3024 (GE, Toshiba): that is
    not tissue, and smoothed into a body the circle cuts (a shoulder, an arm of a large patient)
    it would pull the edge voxels far below air, so the network would see the body end a voxel
    early. The reference for what ``smooth_onto`` does slab by slab."""
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "u" or float(array.min()) >= AIR_HU:
        return image
    raised = sitk.GetImageFromArray(np.maximum(array, AIR_HU).astype(array.dtype))
    raised.CopyInformation(image)
    return raised


def discrete_gaussian(sigma_voxels: float, tail: float = 1e-6) -> np.ndarray:
    """The discrete Gaussian kernel (Lindeberg: ``exp(-t) I_n(t)``, ``t = sigma^2``), as ITK's
    DiscreteGaussianImageFilter uses, cut where less than ``tail`` of it is left and normalised.
    Its variance is ``sigma^2`` however small sigma is; a sampled Gaussian's is not (at
    0.37 voxels, a 3 mm scan going to 4 mm, it smooths less than half as much)."""
    t = float(sigma_voxels) ** 2
    radius = 1
    while 1.0 - special.ive(0, t) - 2 * special.ive(np.arange(1, radius + 1), t).sum() > tail and radius < 32:
        radius += 1
    kernel = special.ive(np.abs(np.arange(-radius, radius + 1)), t)
    return kernel / kernel.sum()


def _smooth_and_sample(block: np.ndarray, axis: int, sigma_voxels: float, positions: np.ndarray,
                       default_value: float) -> np.ndarray:
    """One axis of ``smooth_onto``: the discrete Gaussian along ``axis`` (edges repeated, as ITK's
    zero-flux boundary), then linear interpolation at the continuous indices ``positions``; points
    outside the half-voxel border get ``default_value``, as ITK's resampler gives them."""
    if sigma_voxels > 0:
        ndimage.correlate1d(block, discrete_gaussian(sigma_voxels), axis=axis, output=block, mode="nearest")
    n = block.shape[axis]
    inside = (positions >= -0.5) & (positions < n - 0.5)  # as ITK: the far border is outside
    clamped = np.clip(positions, 0, n - 1)
    low = np.floor(clamped).astype(np.intp)
    high = np.minimum(low + 1, n - 1)
    shape = [1] * block.ndim
    shape[axis] = len(positions)
    weight = (clamped - low).astype(np.float32).reshape(shape)
    out = np.take(block, low, axis=axis)
    out *= 1 - weight
    out += np.take(block, high, axis=axis) * weight
    out[(slice(None),) * axis + (~inside,)] = default_value
    return out


def smooth_onto(oriented: sitk.Image, size: list[int], origin: tuple, spacing: tuple[float, float, float],
                default_value: float = AIR_HU) -> sitk.Image:
    """``antialias(oriented, spacing)`` linearly resampled on the grid (``size``, ``origin``,
    ``spacing``, ``oriented``'s direction), computed axis by axis: Gaussian smoothing and
    trilinear sampling are both separable, so smoothing x and sampling x, then y, then z gives the
    same grid without a smoothed copy of the whole CT. The first axis reads the CT
    ``SLAB_SLICES`` slices at a time and leaves an image already ``spacing / input spacing`` times
    smaller, so the memory above the CT is a fraction of it, and far less is smoothed. Values
    below air are read as air (``at_least_air``). Float32."""
    sigmas = antialias_sigmas(oriented.GetSpacing(), spacing)
    src_spacing = np.array(oriented.GetSpacing(), float)
    direction = np.array(oriented.GetDirection()).reshape(3, 3)
    start = direction.T @ (np.array(origin, float) - np.array(oriented.GetOrigin())) / src_spacing
    step = np.array(spacing, float) / src_spacing
    positions = [start[k] + step[k] * np.arange(int(size[k])) for k in range(3)]  # x, y, z
    sigma_voxels = [s / sp for s, sp in zip(sigmas, src_spacing)]
    ct = sitk.GetArrayViewFromImage(oriented)  # z, y, x
    along_x = np.empty((ct.shape[0], ct.shape[1], int(size[0])), np.float32)
    for z0 in range(0, ct.shape[0], SLAB_SLICES):  # x: slab by slab, the only pass at full resolution
        block = ct[z0:z0 + SLAB_SLICES].astype(np.float32)
        np.maximum(block, AIR_HU, out=block)  # padding outside the reconstruction circle is air
        along_x[z0:z0 + SLAB_SLICES] = _smooth_and_sample(block, 2, sigma_voxels[0], positions[0], default_value)
    along_y = _smooth_and_sample(along_x, 1, sigma_voxels[1], positions[1], default_value)
    del along_x
    grid = _smooth_and_sample(along_y, 0, sigma_voxels[2], positions[2], default_value)
    image = sitk.GetImageFromArray(grid)
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(oriented.GetDirection())
    return image


def to_model_grid(image: sitk.Image, spacing: tuple[float, float, float], orientation: str = "LPS",
                  interpolator: int = sitk.sitkLinear, default_value: float = AIR_HU,
                  smooth: bool = False) -> sitk.Image:
    """Reorient to the model's axis convention, then resample to ``spacing`` covering the same
    physical extent. The network always sees anatomy in the same array orientation
    (axis 0 = superior for LPS), whatever the input's direction matrix. ``smooth``: anti-alias
    first (``antialias``), for models whose metadata says they were trained so."""
    oriented = sitk.DICOMOrient(image, orientation)
    size, origin = grid_geometry(oriented, spacing)
    return resample_onto(oriented, size, origin, spacing, interpolator, default_value,
                         smooth=smooth and interpolator == sitk.sitkLinear)


def grid_geometry(oriented: sitk.Image, spacing: tuple[float, float, float]) -> tuple[list[int], tuple]:
    """Size and origin of a grid of ``spacing`` over the same physical extent as ``oriented``
    (same direction; the outer voxel corners stay put, so the origin moves by half a voxel change)."""
    old_size = np.array(oriented.GetSize())
    old_spacing = np.array(oriented.GetSpacing())
    new_spacing = np.array(spacing, dtype=float)
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    direction = np.array(oriented.GetDirection()).reshape(3, 3)
    corner = np.array(oriented.GetOrigin()) - direction @ (old_spacing / 2)
    return [int(s) for s in new_size], tuple(corner + direction @ (new_spacing / 2))


def resample_onto(oriented: sitk.Image, size: list[int], origin: tuple, spacing: tuple[float, float, float],
                  interpolator: int = sitk.sitkLinear, default_value: float = AIR_HU,
                  smooth: bool = False) -> sitk.Image:
    """``oriented`` resampled on a grid of its own direction (float32 unless nearest neighbour);
    ``smooth`` (linear only): anti-aliased first, by ``smooth_onto``."""
    if smooth:
        if interpolator != sitk.sitkLinear:
            raise ValueError("anti-aliased resampling is linear")
        return smooth_onto(oriented, size, origin, spacing, default_value)
    pixel_type = sitk.sitkFloat32 if interpolator != sitk.sitkNearestNeighbor else oriented.GetPixelID()
    return sitk.Resample(oriented, [int(s) for s in size], sitk.Transform(), interpolator, tuple(origin),
                         tuple(float(s) for s in spacing), oriented.GetDirection(), default_value, pixel_type)


def normalise(image: sitk.Image, clip_low: float, clip_high: float, mean: float, std: float) -> torch.Tensor:
    """HU clip and z-scaling as the model's metadata prescribes; returns (D, H, W) float32."""
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    np.clip(array, clip_low, clip_high, out=array)
    array -= mean
    array /= std
    return torch.from_numpy(array)


def padding_value(intensity: dict) -> float:
    """Air (or the clip floor, if higher) after the model's normalisation: what the network sees
    beyond the scan's edge. One formula for inference, training and validation."""
    return (max(float(intensity["clip_low"]), AIR_HU) - float(intensity["mean"])) / float(intensity["std"])


def confidence_to_input_grid(confidence: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Linear resampling of the model-grid confidence onto the input CT's exact grid, so it
    overlays the CT voxel for voxel (outside the model grid: 0)."""
    out = sitk.Resample(confidence, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out.CopyInformation(reference)
    return out

"""Bring a CT onto the model's grid (orientation, spacing) and intensity scale, and back."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

AIR_HU = -1024.0


def to_model_grid(image: sitk.Image, spacing: tuple[float, float, float], orientation: str = "LPS",
                  interpolator: int = sitk.sitkLinear, default_value: float = AIR_HU) -> sitk.Image:
    """Reorient to the model's axis convention, then resample to ``spacing`` covering the same
    physical extent. The network always sees anatomy in the same array orientation
    (axis 0 = superior for LPS), whatever the input's direction matrix."""
    oriented = sitk.DICOMOrient(image, orientation)
    old_size = np.array(oriented.GetSize())
    old_spacing = np.array(oriented.GetSpacing())
    new_spacing = np.array(spacing, dtype=float)
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    # keep the physical centre of the first voxel's corner: origin shifts by half a voxel change
    direction = np.array(oriented.GetDirection()).reshape(3, 3)
    corner = np.array(oriented.GetOrigin()) - direction @ (old_spacing / 2)
    new_origin = corner + direction @ (new_spacing / 2)
    pixel_type = sitk.sitkFloat32 if interpolator != sitk.sitkNearestNeighbor else image.GetPixelID()
    return sitk.Resample(oriented, [int(s) for s in new_size], sitk.Transform(), interpolator,
                         tuple(new_origin), tuple(new_spacing), oriented.GetDirection(),
                         default_value, pixel_type)


def normalise(image: sitk.Image, clip_low: float, clip_high: float, mean: float, std: float) -> torch.Tensor:
    """HU clip and z-scaling as the model's metadata prescribes; returns (D, H, W) float32."""
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    np.clip(array, clip_low, clip_high, out=array)
    array -= mean
    array /= std
    return torch.from_numpy(array)


def labels_to_input_grid(labels: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Nearest-neighbour resampling of a label map onto the input CT's exact grid."""
    out = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
    out.CopyInformation(reference)
    return out

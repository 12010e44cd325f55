"""Labels from the model's grid onto the input CT's exact grid.

The model's grid is coarse (4 mm for the bundled model); most CTs are finer (0.7-3 mm). Copying
the nearest model voxel's label draws every bone boundary as 4 mm steps. As nnU-Net does for its
probabilities, the boundary is instead found where the *interpolated* probability of bone (1 -
background) crosses one half, and which bone a voxel inside it is comes from the nearest model
voxel. Only one probability channel is interpolated, not 126, and one slab of the input at a time,
so this costs a fraction of the network's time and no whole-CT float buffer.

At the model's own voxels the result is the label map unchanged: the probability is first nudged
to the side of one half that the (consistent) label map says, so the anatomical step's removals
and fillings hold, and a background voxel next to a bone takes that bone's label (a dilation),
for the stretch of boundary between them.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

SLAB_SLICES = 32  # input slices resampled together: bounds the float buffer to 32 slices
HALF = 0.5


def labels_to_input_grid(labels: sitk.Image, reference: sitk.Image, bone: Optional[sitk.Image] = None) -> sitk.Image:
    """``labels`` (model grid) on ``reference``'s grid: nearest neighbour, or with ``bone`` (the
    probability of any bone on the model grid) a boundary where the interpolated bone probability
    is over one half."""
    if bone is None:
        out = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
        out.CopyInformation(reference)
        return out
    if bone.GetSize() != labels.GetSize():
        raise ValueError(f"bone probability {bone.GetSize()} and labels {labels.GetSize()} are not one grid")
    label_array = sitk.GetArrayViewFromImage(labels)
    inside = label_array > 0
    probability = sitk.GetArrayFromImage(bone).astype(np.float32, copy=False)  # already a copy: edited in place
    # on the side of one half the label map says, by as little as float32 allows
    probability[inside] = np.maximum(probability[inside], np.nextafter(np.float32(HALF), np.float32(1)))
    probability[~inside] = np.minimum(probability[~inside], np.nextafter(np.float32(HALF), np.float32(0)))
    grown = np.where(inside, label_array, ndimage.grey_dilation(label_array, size=(3, 3, 3)))
    probability_image = sitk.GetImageFromArray(probability)
    probability_image.CopyInformation(labels)
    grown_image = sitk.GetImageFromArray(grown.astype(label_array.dtype, copy=False))
    grown_image.CopyInformation(labels)

    size = reference.GetSize()
    out = np.zeros(size[::-1], label_array.dtype)
    for z0 in range(0, size[2], SLAB_SLICES):
        slab = sitk.Image([size[0], size[1], min(SLAB_SLICES, size[2] - z0)], sitk.sitkUInt8)
        slab.SetSpacing(reference.GetSpacing())
        slab.SetDirection(reference.GetDirection())
        slab.SetOrigin(reference.TransformIndexToPhysicalPoint((0, 0, z0)))
        p = sitk.Resample(probability_image, slab, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        g = sitk.Resample(grown_image, slab, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
        part = sitk.GetArrayFromImage(g)
        part[sitk.GetArrayViewFromImage(p) <= HALF] = 0
        out[z0:z0 + part.shape[0]] = part
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(reference)
    return result

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
    box = _input_box_of_bone(inside, labels, reference)
    if box is not None:
        lo, hi = box
        for z0 in range(lo[2], hi[2], SLAB_SLICES):
            slab = sitk.Image([hi[0] - lo[0], hi[1] - lo[1], min(SLAB_SLICES, hi[2] - z0)], sitk.sitkUInt8)
            slab.SetSpacing(reference.GetSpacing())
            slab.SetDirection(reference.GetDirection())
            slab.SetOrigin(reference.TransformIndexToPhysicalPoint((lo[0], lo[1], z0)))
            p = sitk.Resample(probability_image, slab, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            g = sitk.Resample(grown_image, slab, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
            part = sitk.GetArrayFromImage(g)
            part[sitk.GetArrayViewFromImage(p) <= HALF] = 0
            out[z0:z0 + part.shape[0], lo[1]:hi[1], lo[0]:hi[0]] = part
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(reference)
    return result


def _input_box_of_bone(inside: np.ndarray, labels: sitk.Image,
                       reference: sitk.Image) -> Optional[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """The box of ``reference``'s voxels (x, y, z; ``lo`` inclusive, ``hi`` exclusive) outside which
    no voxel can be bone, or None when no model voxel is bone.

    Why exact: a linearly interpolated value is a convex combination of the 8 model voxels around
    the point, and every voxel outside the labelled box was pushed to or below one half, so a
    point more than one model voxel from that box stays background. The box's corners, one model
    voxel out, are mapped into the reference's index space (any orientation of either grid), and
    a voxel more is kept on each side against rounding. On a CT whose field of view is wider than
    the skeleton (air, table, arms' soft tissue) this skips most of the resampling."""
    found = np.nonzero(inside.any(axis=(1, 2)))[0]
    if not len(found):
        return None
    ys = np.nonzero(inside[found[0]:found[-1] + 1].any(axis=(0, 2)))[0]
    xs = np.nonzero(inside[found[0]:found[-1] + 1].any(axis=(0, 1)))[0]
    first = (int(xs[0]) - 1, int(ys[0]) - 1, int(found[0]) - 1)
    last = (int(xs[-1]) + 1, int(ys[-1]) + 1, int(found[-1]) + 1)
    corners = [labels.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
               for x in (first[0], last[0]) for y in (first[1], last[1]) for z in (first[2], last[2])]
    at = np.array([reference.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    size = np.array(reference.GetSize())
    lo = np.clip(np.floor(at.min(axis=0)).astype(int) - 1, 0, size)
    hi = np.clip(np.ceil(at.max(axis=0)).astype(int) + 2, 0, size)
    if np.any(hi <= lo):
        return None
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)

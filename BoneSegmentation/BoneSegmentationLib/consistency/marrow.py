"""Solid bones: a bone's label includes its cancellous core, not only its cortex.

Networks at 4 mm often label a vertebral body or a pelvis as its bright cortical rim around an
empty core: the core (cancellous bone, 100-300 HU) is darker than the cortex and looks like soft
tissue to a network that has not seen enough of it. Reference labels (TotalSegmentator's, ours)
are solid. In a cross-section perpendicular to the body's long axis such a core is a hole of the
bone's own label: background enclosed by that bone in the plane. A hole is filled with the bone
when its median intensity is above ``CORE_HU`` (denser than any unenhanced soft tissue), so the
spinal canal inside a vertebral ring (cord and fluid, 0-50 HU) and the muscle or fat inside a
ring of pelvis stay background; the cranium, a shell around the brain, is never filled (where
an axial slice grazes the vault, partial volume makes the brain's edge look dense). Darker holes
(fatty marrow too) are left as the network found them, except in the long bones' shafts: a
femur, humerus, radius or ulna encloses nothing but its medullary canal, whose marrow is fat
(-100-60 HU) in adults and which reference labels include, so their holes are filled whatever
their density. Only background is filled, never another bone. Without the CT nothing is filled
(an enclosed hole alone does not say bone).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from ..core.bones import BoneTable
from .body import fill_holes_per_slice, in_slice_structure
from .geometry import Grid

CORE_HU = 100.0  # median of a hole above this: cancellous bone (soft tissue, fluid and fat are below)
HOLLOW = ("cranium",)  # shells around something else (the brain): their holes are never marrow
TUBULAR = ("femur", "humerus", "radius", "ulna")  # long bones: a hole in their shaft is the medullary canal
OPEN_RING = 0.7  # a long bone's in-slice piece covering less of its convex hull is a ring left open: filled to it


def tubular_indices(table: BoneTable) -> list[int]:
    """The long bones' label values (``TUBULAR``), ascending."""
    return [bone.index for bone in table.foreground() if bone.name.split("_")[0] in TUBULAR]


def fill_cores(labels: np.ndarray, grid: Grid, table: BoneTable, ct_hu: Optional[np.ndarray] = None) -> int:
    """Fill each bone's bone-dense in-plane holes in place (see the module docstring); returns
    the number of voxels filled. Not a change for the review list: the bone's identity and
    place stay as the network found them."""
    if ct_hu is None:
        return 0
    axis = grid.si_axis
    structure = in_slice_structure(axis)
    hollow = {table.by_name(name).index for name in HOLLOW}
    tubular = set(tubular_indices(table))
    total = 0
    for index, box in enumerate(ndimage.find_objects(labels, max_label=table.num_classes - 1), start=1):
        if box is None or index in hollow:
            continue
        view = labels[box]
        mask = view == index
        holes = fill_holes_per_slice(mask, axis) & (view == 0)
        if not holes.any():
            continue
        if index in tubular:  # the canal, fatty or not
            n = int(np.count_nonzero(holes))
            view[holes] = index
            total += n
            continue
        pieces, count = ndimage.label(holes, structure=structure)
        medians = np.asarray(ndimage.median(ct_hu[box], pieces, np.arange(1, count + 1)), float)
        dense = np.concatenate([[False], medians > CORE_HU])
        fill = dense[pieces]
        n = int(np.count_nonzero(fill))
        if n:
            view[fill] = index
            total += n
    return total


def convex_per_slice(mask: np.ndarray, axis: int, open_ring: float = OPEN_RING) -> np.ndarray:
    """``mask`` with each in-slice piece (8-connected, slices across ``axis``) that covers less than
    ``open_ring`` of its convex hull filled to the hull: a shaft's cross-section whose ring the
    network left open (its cortex found, a thin stretch of it and the fatty canal not). A solid
    section with a concavity (a femoral neck, a humeral head's tuberosities) covers more and stays."""
    out = mask.copy()
    for k in range(mask.shape[axis]):
        index = [slice(None)] * 3
        index[axis] = k
        section, target = mask[tuple(index)], out[tuple(index)]
        if not section.any():
            continue
        pieces, _ = ndimage.label(section, structure=np.ones((3, 3), bool))
        for j, box in enumerate(ndimage.find_objects(pieces), start=1):
            piece = pieces[box] == j
            points = np.argwhere(piece)
            try:
                hull = ConvexHull(points)
            except QhullError:  # fewer than three points off one line: nothing to close
                continue
            grid = np.indices(piece.shape).reshape(2, -1).T
            inside = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9).all(axis=1)
            if np.count_nonzero(piece) < open_ring * np.count_nonzero(inside):  # a ring, not a solid section
                target[box] |= inside.reshape(piece.shape)
    return out


def fill_canals(labels: sitk.Image, table: BoneTable, open_ring: float = OPEN_RING) -> tuple[sitk.Image, int]:
    """``labels`` on the input grid with each long bone's in-plane holes filled and its open rings
    closed (``convex_per_slice``; ``open_ring`` 0: holes only), and how many voxels that took. The
    model grid's canal is filled by ``fill_cores``, but the boundary brought to a finer CT follows
    the bone probability, which is low in fatty marrow, and opens the canal again there."""
    view = sitk.GetArrayViewFromImage(labels)  # read only: the map is copied only when a canal is open
    axis = Grid.of(labels).si_axis
    tubular = tubular_indices(table)
    boxes = ndimage.find_objects(view, max_label=max(tubular))
    fills = []
    for index in tubular:
        box = boxes[index - 1]
        if box is None:
            continue
        part = view[box]
        holes = fill_holes_per_slice(part == index, axis)
        if open_ring:
            holes |= convex_per_slice(part == index, axis, open_ring)
        holes &= part == 0
        if holes.any():
            fills.append((box, holes, index))
    if not fills:
        return labels, 0
    arr = sitk.GetArrayFromImage(labels)
    for box, holes, index in fills:
        arr[box][holes] = index
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(labels)
    return out, int(sum(np.count_nonzero(holes) for _, holes, _ in fills))

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

On the input grid (``fill_enclosed``) a hole may also be walled by bright voxels the network did
not label (cortex it missed): such a hole is filled with the bone that owns most of its labelled
wall when the network gave it some probability of bone, it is the size of a bone's core, and it is
dense or its bone keeps fatty marrow (long bones and hips). Chosen on 20 held-out synthetic images
and confirmed on 14 others (docs/real-ct-training.md, "Cores walled by a bone and cortex").
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


def kind_indices(table: BoneTable, kinds: tuple[str, ...]) -> list[int]:
    """The label values of the bones whose names start with one of ``kinds`` ("femur"), ascending."""
    return [bone.index for bone in table.foreground() if bone.name.split("_")[0] in kinds]


def tubular_indices(table: BoneTable) -> list[int]:
    """The long bones' label values (``TUBULAR``), ascending."""
    return kind_indices(table, TUBULAR)


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


CORTEX_HU = 300.0  # a voxel this bright walls a hole as a labelled bone does: cortex the network left unlabelled
ENCLOSED_MAX_MM2 = 3000.0  # larger in-slice holes are cavities (a pelvic or chest ring closed), not a bone's core
ENCLOSED_MIN_BONE = 0.1  # a hole whose mean probability of bone is lower is what the network saw as not bone at all
FATTY = TUBULAR + ("hip",)  # bones whose enclosed holes are marrow whatever their density
SLAB_SLICES = 32  # slices filled together: bounds the memory of the labellings


def fill_enclosed(labels: sitk.Image, ct: sitk.Image, bone: sitk.Image, table: BoneTable) -> tuple[sitk.Image, int]:
    """``labels`` on the CT's grid with each bone's in-slice holes filled, walled by its labels or
    by cortex the network left unlabelled (``CORTEX_HU``), and how many voxels that took.

    On a finer CT the boundary follows the bone probability, which is low in a core darker than the
    cortex, and a network that missed a stretch of cortex leaves no hole of the bone's own label for
    ``fill_cores`` to find. A hole walled by bone and bright voxels is filled with the bone most of
    its labelled wall belongs to when it is no larger than ``ENCLOSED_MAX_MM2``, the network gave
    it a mean probability of bone of at least ``ENCLOSED_MIN_BONE`` (``bone``: on the model's
    grid), and most of it is denser than ``CORE_HU`` or its bone keeps fatty marrow (``FATTY``);
    the spinal canal (0-50 HU inside a vertebra) and the brain inside the cranium stay background.
    Slices are independent here, so they are taken ``SLAB_SLICES`` at a time (bounded memory).
    """
    view = sitk.GetArrayViewFromImage(labels)
    hu = sitk.GetArrayViewFromImage(ct)
    if hu.shape != view.shape or not view.any():
        return labels, 0
    grid = Grid.of(labels)
    axis = grid.si_axis
    in_plane = [s for a, s in enumerate(np.linalg.norm(grid.matrix, axis=0)) if a != axis]
    fatty = np.zeros(table.num_classes, bool)
    fatty[kind_indices(table, FATTY)] = True
    refused = np.zeros(table.num_classes, bool)  # walls whose holes are never marrow
    refused[[table.by_name(name).index for name in HOLLOW]] = True
    refused[0] = True
    bone_array = np.asarray(sitk.GetArrayViewFromImage(bone), np.float32)
    bone_grid = Grid.of(bone)
    out, total = None, 0
    for start in range(0, view.shape[axis], SLAB_SLICES):
        part = [slice(None)] * 3
        part[axis] = slice(start, start + SLAB_SLICES)
        part = tuple(part)
        if not view[part].any():
            continue
        walled = view[part] > 0
        walled |= hu[part] >= CORTEX_HU
        box = walls_box(walled, axis)  # a hole lies inside its walls: the same holes, on less area
        offset = np.array([start if a == axis else box[a].start for a in range(3)])
        value = _enclosed_values(view[part][box], hu[part][box], walled[box], axis, in_plane[0] * in_plane[1],
                                 lambda where: _sample(bone_array, bone_grid, grid.to_mm(where + offset)),
                                 fatty, refused)
        del walled
        if value is None:
            continue
        if out is None:
            out = sitk.GetArrayFromImage(labels)
        target = out[part][box]
        target[value > 0] = value[value > 0]
        total += int(np.count_nonzero(value))
    if out is None:
        return labels, 0
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(labels)
    return image, total


def walls_box(walled: np.ndarray, axis: int) -> tuple[slice, slice, slice]:
    """The box across the slices (all of them along ``axis``) that holds every walled voxel. An
    in-slice hole lies inside it, and a voxel outside the walls at its edge reaches the slice's
    edge through the unwalled rest, as the box's edge: holes found in the box are the slice's."""
    box = []
    for a in range(3):
        if a == axis:
            box.append(slice(None))
            continue
        filled = np.nonzero(walled.any(axis=tuple(b for b in range(3) if b != a)))[0]
        box.append(slice(int(filled[0]), int(filled[-1]) + 1) if len(filled) else slice(0, 0))
    return tuple(box)


def _enclosed_values(labels: np.ndarray, hu: np.ndarray, walled: np.ndarray, axis: int, pixel_mm2: float,
                     probability, fatty: np.ndarray, refused: np.ndarray) -> Optional[np.ndarray]:
    """The label each voxel of these slices is filled with (0: none), or None when nothing is;
    ``walled``: the labelled voxels and those at ``CORTEX_HU`` or above."""
    if walled.size == 0:
        return None
    structure = in_slice_structure(axis)
    holes = fill_holes_per_slice(walled, axis) & ~walled
    pieces, count = ndimage.label(holes, structure=structure)
    if count == 0:
        return None
    size = np.bincount(pieces.ravel(), minlength=count + 1)
    where = np.stack(np.nonzero(holes), axis=1)
    in_piece = pieces[holes]
    mean_bone = np.bincount(in_piece, weights=probability(where), minlength=count + 1) / np.maximum(1, size)
    dense = np.bincount(in_piece[hu[holes] > CORE_HU], minlength=count + 1) * 2 > size  # most of it cancellous
    owner = np.concatenate([[0], _wall_owner(pieces, labels, axis, count)])
    fill = ~refused[owner] & (size * pixel_mm2 <= ENCLOSED_MAX_MM2) & (mean_bone >= ENCLOSED_MIN_BONE) \
        & (dense | fatty[owner])
    fill[0] = False
    if not fill.any():
        return None
    return np.where(fill, owner, 0).astype(labels.dtype)[pieces]


def _sample(array: np.ndarray, grid: Grid, points_mm: np.ndarray) -> np.ndarray:
    """``array`` (on ``grid``) linearly interpolated at LPS points (0 outside it)."""
    index = np.linalg.solve(grid.matrix, (points_mm - grid.origin).T)
    return ndimage.map_coordinates(array, index, order=1, mode="constant", cval=0.0)


def _wall_owner(pieces: np.ndarray, labels: np.ndarray, axis: int, count: int) -> np.ndarray:
    """For each hole (1..count), the label most of its labelled in-slice wall carries (0: none):
    each labelled voxel counts once for each of its four in-slice neighbours in a hole, so a wall
    between two holes counts for both and the answer does not depend on the array's orientation
    (a tie goes to the lower label value)."""
    holes, walls = [], []
    for a in range(3):
        if a == axis:
            continue
        for step in (1, -1):
            here = [slice(None)] * 3
            there = [slice(None)] * 3
            here[a], there[a] = (slice(0, -1), slice(1, None)) if step == 1 else (slice(1, None), slice(0, -1))
            hole, label = pieces[tuple(there)], labels[tuple(here)]
            touching = (hole > 0) & (label > 0)
            holes.append(hole[touching])
            walls.append(label[touching])
    keys = np.concatenate(holes).astype(np.int64) * 256 + np.concatenate(walls)
    values, counts = np.unique(keys, return_counts=True)  # one entry per (hole, label) pair
    hole, label = np.divmod(values, 256)
    order = np.lexsort((label, -counts, hole))  # by hole, the most common label first, then the lower
    first = np.unique(hole[order], return_index=True)[1]
    owner = np.zeros(count + 1, np.int64)
    owner[hole[order][first]] = label[order][first]
    return owner[1:]

"""Counting label values without copying a label map into 64-bit integers.

``np.bincount`` casts its input to ``intp``: on a 2 mm upper body (33 M voxels of uint8) that is a
266 MiB temporary for a 33 MiB image. Counting slab by slab keeps the temporary at a few MiB.
"""

from __future__ import annotations

import numpy as np

CHUNK_VOXELS = 1 << 22


def label_counts(array: np.ndarray, minlength: int = 0) -> np.ndarray:
    """Voxel count of every label value 0..max (int64), like ``np.bincount(array.ravel())``."""
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"label values must be integers, not {array.dtype}")
    flat = array.reshape(-1) if array.flags.c_contiguous else np.ravel(array)
    if flat.size and np.issubdtype(array.dtype, np.signedinteger) and flat.min() < 0:
        raise ValueError("label values must not be negative")
    counts = np.zeros(max(minlength, int(flat.max()) + 1 if flat.size else 0), np.int64)
    for start in range(0, flat.size, CHUNK_VOXELS):
        part = np.bincount(flat[start:start + CHUNK_VOXELS], minlength=len(counts))
        counts += part
    return counts


def bone_label_counts(array: np.ndarray, num_classes: int, name: str, error: type[Exception]) -> np.ndarray:
    """``label_counts`` of a map that must hold the bone table's values 0..num_classes-1: one check
    for every reader of such a map (dataset, meshes, evaluation), raising ``error`` that says what
    is wrong and what a bone label map holds."""
    holds = f"a bone label map holds the bone table's values 0..{num_classes - 1}"
    if not np.issubdtype(array.dtype, np.integer):
        raise error(f"{name}'s voxels are {array.dtype}, not integers: {holds}; save it as an integer label map "
                    "(in Slicer: export the segmentation to a labelmap volume)")
    if array.size and np.issubdtype(array.dtype, np.signedinteger) and int(array.min()) < 0:
        raise error(f"{name} holds negative values (lowest {int(array.min())}): {holds}")
    counts = label_counts(array)
    bad = [v for v in range(num_classes, len(counts)) if counts[v]]
    if bad:
        raise error(f"{name}'s label values {bad[:10]} are outside the bone table: {holds}; a map saved from "
                    "Slicer holds Slicer's own values: give its .seg.nrrd, whose segments are read by name")
    return counts


def relabel(array: np.ndarray, lookup: dict[int, int]) -> np.ndarray:
    """uint8 map with each value ``v`` of ``array`` replaced by ``lookup[v]`` (values not in it: 0),
    in one pass through a table rather than one pass per value."""
    top = int(array.max()) if array.size else 0
    if top >= 1 << 16:  # a table that large is not worth it: one pass per value
        out = np.zeros(array.shape, np.uint8)
        for value, new in lookup.items():
            out[array == value] = new
        return out
    table = np.zeros(top + 1, np.uint8)
    for value, new in lookup.items():
        if 0 <= value <= top:
            table[value] = new
    return table[np.clip(array, 0, top)] if np.issubdtype(array.dtype, np.signedinteger) else table[array]


def present_labels(array: np.ndarray) -> list[int]:
    """Label values present, background (0) excluded, ascending."""
    return [int(v) for v in np.nonzero(label_counts(array))[0] if v]


def make_well_composed(labels: np.ndarray, max_rounds: int = 10) -> int:
    """Add voxels (in place) so that no two voxels of one label touch only along an edge or at a
    corner; returns the number of voxel changes made (a voxel changed twice counts twice).

    Why: a surface through such a contact is pinched, and surface nets turn it into edges shared
    by four triangles (non-manifold), which 3D printers' slicers and VR engines reject. A
    "well-composed" label map has none. The fix takes a background voxel next to the contact when
    there is one (else the neighbour's), a handful of voxels per bone; volumes are reported from
    the original label map.
    """
    before = labels.copy()
    _resolve_contacts(labels)
    changed = np.argwhere(labels != before)
    total = len(changed)
    for _ in range(max_rounds):  # a fix can only create a contact next to it: recheck locally
        if not len(changed):
            break
        following = []
        for voxel in changed:
            lo = np.maximum(voxel - 1, 0)
            view = labels[lo[0]:voxel[0] + 2, lo[1]:voxel[1] + 2, lo[2]:voxel[2] + 2]
            old = view.copy()
            _resolve_contacts(view)
            following.extend(np.argwhere(view != old) + lo)
        changed = np.unique(np.array(following, dtype=np.int64).reshape(-1, 3), axis=0)
        total += len(changed)
    return total


def _resolve_contacts(labels: np.ndarray) -> None:
    """One vectorised sweep over all 2x2 squares (three orientations) and 2x2x2 cubes."""
    for axes in ((0, 1), (0, 2), (1, 2)):
        plane = np.moveaxis(labels, axes, (-2, -1))  # a view: writes go to ``labels``
        a, b = plane[..., :-1, :-1], plane[..., :-1, 1:]
        c, d = plane[..., 1:, :-1], plane[..., 1:, 1:]
        for p, q, r, s in ((a, d, b, c), (b, c, a, d)):  # diagonal p-q, the other corners r, s
            hit = (p == q) & (p != 0) & (r != p) & (s != p)
            if hit.any():
                idx = np.nonzero(hit)
                value = p[idx]
                into_s = (r[idx] != 0) & (s[idx] == 0)  # prefer filling background
                s[tuple(i[into_s] for i in idx)] = value[into_s]
                r[tuple(i[~into_s] for i in idx)] = value[~into_s]
    nz, ny, nx = labels.shape
    corner = {(i, j, k): labels[i:nz - 1 + i, j:ny - 1 + j, k:nx - 1 + k]
              for i in (0, 1) for j in (0, 1) for k in (0, 1)}
    for p in ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)):  # the four space diagonals of a cube
        q = tuple(1 - v for v in p)
        hit = (corner[p] == corner[q]) & (corner[p] != 0)
        for other in corner:
            if other not in (p, q) and hit.any():
                hit &= corner[other] != corner[p]
        if hit.any():
            idx = np.nonzero(hit)
            value = corner[p][idx]
            corner[(q[0], p[1], p[2])][idx] = value  # a face-connected path p -> q
            corner[(q[0], q[1], p[2])][idx] = value

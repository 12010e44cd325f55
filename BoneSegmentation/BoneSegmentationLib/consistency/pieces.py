"""One piece per bone: stray fragments go where their surroundings say, and what is not bone
(outside the body, soft-tissue intensities) goes to the background.

A bone's pieces are its 26-connected components. The bone is the largest (with the CT: the most
voxels times brightness above soft tissue, so a speck in muscle does not outrank a small real
bone). A piece mostly wrapped in another, far larger bone (half its one-voxel shell is that bone)
is part of that bone, whatever its label: a T8 island inside the skull is skull, a speck of C2
inside C3 is C3. Another piece belongs to the bone when it is large (``KEEP_FRACTION`` of the
largest, and bone-like) or close (within ``NEAR_VOXELS``). Any other piece is a stray: it takes
the label that covers most of its one-voxel shell (the bone it grew out of); with no bone around
it, it goes to the background when it is not bone-like and is kept otherwise, so a bone that is
really there is never dropped. With the CT at hand, pieces with less than half their voxels in
the body, or whose brightest tenth is below ``BONE_HU`` (no cortex anywhere; pieces under
``BONE_HU_MIN_ML`` are spared, partial volume dims them), are removed; so is a bone none of whose
voxels reaches ``BONE_HU``, whatever its size (a "hand" on the edge of a cushion at 20-70 HU).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from ..core.bones import BoneTable
from .changes import ConsistencyReport

KEEP_FRACTION = 0.25
ENGULFED_SHELL = 0.5  # a piece whose shell is mostly one other bone ...
ENGULFED_SIZE = 0.5  # ... far larger than the piece belongs to that bone (even if it is all of its label)
NEAR_VOXELS = 2
BONE_HU = 120.0  # 90th percentile of a piece's HU: cortical bone is far above, soft tissue below
SOFT_TISSUE_HU = 50.0
BONE_HU_MIN_ML = 2.0  # smaller pieces are not judged by intensity (partial volume dims them)
FULL = np.ones((3, 3, 3), bool)


def _grow(box: tuple[slice, ...], shape: tuple[int, ...], margin: int) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, shape))


def _around(view: np.ndarray, pieces: np.ndarray, box, p: int, margin: int):
    """The piece's mask and the labels in a box around it grown by ``margin`` (local, so that a
    speck in a femur costs a speck's work)."""
    grown = _grow(box, view.shape, margin)
    return pieces[grown] == p, view[grown], pieces[grown], grown


def _neighbourhood(view: np.ndarray, pieces: np.ndarray, box, p: int):
    """``_around`` the piece (with room to dilate it by ``NEAR_VOXELS``), and its one-voxel shell."""
    mask, local, local_pieces, grown = _around(view, pieces, box, p, NEAR_VOXELS + 1)
    return mask, local, local_pieces, grown, _dilate(mask, 1) & ~mask


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, FULL, iterations=radius)`` (outside the array counts as
    empty), as three one-axis passes: the cube is separable, and on the few-voxel boxes of small
    pieces this costs a tenth of scipy's per-call overhead. A speckled label map (random weights, a
    scan that is not CT) has a third of a million pieces, each dilated up to three times."""
    out = mask.copy()
    for axis in range(mask.ndim):
        for _ in range(radius):
            grown = out.copy()
            lo = [slice(None)] * mask.ndim
            hi = [slice(None)] * mask.ndim
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            grown[tuple(hi)] |= out[tuple(lo)]
            grown[tuple(lo)] |= out[tuple(hi)]
            out = grown
    return out


def _percentile_90(hu: np.ndarray, pieces: np.ndarray, count: int) -> np.ndarray:
    """``np.percentile`` of each piece's HU at 90, bit for bit, in one call per piece size instead
    of one per piece (numpy's call costs 80 microseconds, and a speckled map has a third of a
    million pieces, most of one to a few voxels)."""
    inside = pieces > 0
    ids = pieces[inside]
    values = hu[inside][np.argsort(ids, kind="stable")]
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.zeros(count, hu.dtype if hu.dtype.kind == "f" else np.float64)  # numpy's own result type
    for n in np.unique(sizes):
        chosen = np.flatnonzero(sizes == n)
        out[chosen] = np.percentile(values[starts[chosen][:, None] + np.arange(n)], 90, axis=1)
    return out


def _engulfing(shell_values: np.ndarray, index: int, size: int, totals: np.ndarray) -> int:
    """The bone that surrounds a small piece (most of its shell, and far larger), or 0.
    ``shell_values``: the labels of its one-voxel shell (its own label, wherever it appears, is
    not counted)."""
    around = shell_values[shell_values != index]
    if not around.size:
        return 0
    counts = np.bincount(around)
    counts[0] = 0
    host = int(counts.argmax())
    if host and counts[host] >= ENGULFED_SHELL * around.size and size < ENGULFED_SIZE * totals[host]:
        return host
    return 0


def _voxel_neighbourhood(view: np.ndarray, pieces: np.ndarray, at: tuple[int, ...]):
    """A one-voxel piece's shell labels (with its own voxel, whose label is the piece's and so is
    never counted) and the piece numbers within ``NEAR_VOXELS``: two slices, where the general path
    builds masks and dilates. A speckled label map is a third of a million pieces, 188 k of them
    of one voxel: the step on it 46.6 -> 38.0 s, 14.1x -> 10.7x the review ranking
    (benchmarks/bench_anatomy.py --no-network --speckled), the same labels to the bit."""
    shell = view[tuple(slice(max(0, a - 1), a + 2) for a in at)].ravel()
    near = pieces[tuple(slice(max(0, a - NEAR_VOXELS), a + NEAR_VOXELS + 1) for a in at)]
    return shell, near


def _remove_faint_bones(labels: np.ndarray, table: BoneTable, report: ConsistencyReport, ct_hu: np.ndarray) -> None:
    """Every bone whose brightest voxel is below ``BONE_HU`` set to background, in place: not one
    voxel of cortex, however small the bone (a distal phalanx sampled at 4 mm still holds a voxel of
    a few hundred HU), so what the network saw there was soft tissue, fluid or a cushion's cover.
    Counted on the bright voxels only (a per-label maximum over the map cost 3x the whole step)."""
    present = np.bincount(labels.ravel(), minlength=table.num_classes) > 0
    bright = np.bincount(labels[ct_hu >= BONE_HU], minlength=table.num_classes) > 0
    for index in np.flatnonzero(present & ~bright):
        if index == 0:
            continue
        mask = labels == index
        n = int(np.count_nonzero(mask))
        brightest = float(ct_hu[mask].max())
        labels[mask] = 0
        report.add(table[int(index)].name, "removed",
                   f"{n} voxels removed: no voxel denser than {BONE_HU:g} HU (brightest {brightest:.0f} HU), "
                   "not bone", n)


def clean_pieces(labels: np.ndarray, table: BoneTable, report: ConsistencyReport, voxel_ml: float,
                 ct_hu: Optional[np.ndarray] = None, body: Optional[np.ndarray] = None) -> None:
    """Reassign stray pieces in place (see the module docstring)."""
    if ct_hu is not None:
        _remove_faint_bones(labels, table, report, ct_hu)
    boxes = ndimage.find_objects(labels, max_label=table.num_classes - 1)
    totals = np.bincount(labels.ravel(), minlength=table.num_classes).astype(np.int64)
    moved: dict[tuple[int, int], int] = {}
    removed: dict[tuple[int, str], int] = {}
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        box = _grow(box, labels.shape, NEAR_VOXELS + 1)
        view = labels[box]
        pieces, count = ndimage.label(view == index, structure=FULL)
        sizes = np.bincount(pieces.ravel())[1:]
        hu = ct_hu[box] if ct_hu is not None else None
        weight = sizes.astype(float)
        p90 = _percentile_90(hu, pieces, count) if hu is not None else np.zeros(count)
        piece_boxes = ndimage.find_objects(pieces)
        if hu is not None and count > 1:  # the bone is the biggest bright piece, not a larger speck in soft tissue
            weight *= np.maximum(p90 - SOFT_TISSUE_HU, 1.0)
        order = np.argsort(-weight, kind="stable") + 1
        inside = body[box] if body is not None else None
        keep = np.zeros(count + 1, bool)
        main = order[0]
        for p in order:
            size = int(sizes[p - 1])
            if size == 1:
                at = tuple(b.start for b in piece_boxes[p - 1])
                shell_values, near_pieces = _voxel_neighbourhood(view, pieces, at)
                target_view, where = view, at
                in_body = inside is None or bool(inside[at])
            else:
                mask, local, local_pieces, grown, shell = _neighbourhood(view, pieces, piece_boxes[p - 1], p)
                shell_values = local[shell]
                target_view, where = local, mask
                in_body = inside is None or inside[grown][mask].mean() >= 0.5
            host = _engulfing(shell_values, index, size, totals) if size < ENGULFED_SIZE * totals.max() else 0
            if host:
                target_view[where] = host
                moved[(index, host)] = moved.get((index, host), 0) + size
                totals[host] += size
                totals[index] -= size
                continue
            if not in_body:
                target_view[where] = 0
                removed[(index, "outside the body")] = removed.get((index, "outside the body"), 0) + size
                continue
            if hu is not None and size * voxel_ml >= BONE_HU_MIN_ML and p90[p - 1] < BONE_HU:
                target_view[where] = 0
                removed[(index, "not bone-like")] = removed.get((index, "not bone-like"), 0) + size
                continue
            if not keep.any():
                main = p
                keep[p] = True
                continue
            if size >= KEEP_FRACTION * sizes[main - 1] and (hu is None or p90[p - 1] >= BONE_HU):
                keep[p] = True
                continue
            near_kept = (keep[near_pieces].any() if size == 1
                         else np.any(_dilate(mask, NEAR_VOXELS) & keep[local_pieces]))
            if near_kept:
                keep[p] = True
                continue
            around = shell_values[(shell_values != 0) & (shell_values != index)]
            if around.size:
                target = int(np.bincount(around).argmax())
                target_view[where] = target
                moved[(index, target)] = moved.get((index, target), 0) + size
            elif hu is not None and p90[p - 1] < BONE_HU:
                target_view[where] = 0
                removed[(index, "a stray piece, not bone-like")] = removed.get((index, "a stray piece, not bone-like"), 0) + size
    for (index, target), n in moved.items():
        report.add(table[target].name, "fragment",
                   f"took a stray piece labelled {table[index].display_name} ({n} voxels)", n)
    for (index, why), n in removed.items():
        report.add(table[index].name, "removed", f"{n} voxels removed: {why}", n)

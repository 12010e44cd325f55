"""A pelvis or a thigh at the height of the ribs is a misnamed bone or no bone.

The iliac crest, the top of the pelvis, lies at L4; the sacrum and the femurs lie lower still.
The lowest ribs end above the crest (in an old, stooped body they may come down to touch it), so
no hip bone, femur, sacrum or coccyx lies wholly within the height the ribs span. The network does
not know that: on a real chest CT (the validation scan, not the test set) it named the
contrast-filled heart and a sternotomy's wires hip bone and femur, and on held-out synthetic 40 mm
slabs of the lower thorax a vertebra or a vessel hip bone or femur (at T12 in 9 slabs of 13).

So a pelvic or leg bone all of whose voxels lie within the head-to-foot extent of the rib labels
(``MIN_RIBS`` of them at least: one transverse process misnamed rib 12 is no rib cage; each rib
by its pieces of ``MIN_RIB_VOXELS`` or more and without its extreme ``RIB_PERCENTILE`` %, and the
cage only as far as ``MIN_RIBS`` rib labels reach: stray voxels named rib among the femurs stretched
the cage over a whole pelvis on held-out synthetic bodies) is misnamed. A real pelvis or thigh always
reaches below the ribs, so the rule cannot touch one. Each piece of the misnamed bone takes the
name of the bone nearest to it (a vertebra for a piece of the column, the sternum round a
sternotomy's wires, the rib whose end was misnamed); as the stray-piece rule does (``pieces``),
a piece is dropped only when nothing in it is bone-like (its brightest tenth under
``pieces.BONE_HU``), so a bone that is there keeps being bone.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from ..core.bones import BoneTable
from .changes import ConsistencyReport
from .geometry import Grid, label_boxes
from .pieces import BONE_HU
from .spine import column_indices, vertebra_indices

MIN_RIBS = 2  # rib labels the rib cage needs: one misnamed transverse process is no rib cage
MIN_RIB_VOXELS = 8  # voxels a piece of a rib label needs to count (a speck is no rib)
RIB_PERCENTILE = 2.0  # a rib's extent head to foot leaves out this share of its voxels at each end (strays)
FULL = np.ones((3, 3, 3), bool)


def _lower_body_bones(table: BoneTable) -> list[int]:
    """Hip bones, femurs, sacrum and coccyx: the bones below the lumbar spine."""
    tail = column_indices(table)[len(vertebra_indices(table)):]
    return [b.index for b in table.foreground() if b.region in ("pelvis", "leg")] + tail


def _heights(labels: np.ndarray, grid: Grid, index: int, box: Optional[tuple[slice, ...]]) -> np.ndarray:
    """Head-foot positions (LPS z, mm) of the voxels of label ``index``, found within its box."""
    if box is None:
        return np.empty(0)
    coords = np.argwhere(labels[box] == index) + [b.start for b in box]
    return grid.to_mm(coords)[:, 2]


def _rib_heights_of(labels: np.ndarray, grid: Grid, rib: int, box: Optional[tuple[slice, ...]]) -> np.ndarray:
    """Head-foot positions (LPS z, mm) of the voxels of rib label ``rib`` in its pieces of at least
    ``MIN_RIB_VOXELS``: specks named rib among the pelvis are no rib. A rib label of 24 voxels
    with specks of 2 and 4 among the femurs reached from the thorax to the thighs by its
    percentiles alone, and a whole pelvis was renamed radius (held-out synthetic abdomen 5600)."""
    if box is None:
        return np.empty(0)
    pieces, _ = ndimage.label(labels[box] == rib, FULL)
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    coords = np.argwhere(sizes[pieces] >= MIN_RIB_VOXELS) + [b.start for b in box]
    return grid.to_mm(coords)[:, 2]


def _rib_heights(labels: np.ndarray, grid: Grid, table: BoneTable, boxes: list) -> tuple[float, float] | None:
    """Lowest and highest head-foot position (LPS z, mm) of the rib cage, or None with fewer than
    ``MIN_RIBS`` ribs. Each rib label counts by its pieces of ``MIN_RIB_VOXELS`` or more, and those
    by their ``RIB_PERCENTILE`` to ``100 - RIB_PERCENTILE`` percentiles, so that stray voxels named
    rib among the femurs do not stretch the cage; and the cage reaches only as far as ``MIN_RIBS``
    rib labels reach: on held-out synthetic abdomen 5861 rib 12's one piece of eight voxels or more
    was an 11-voxel stray below the sacrum, and the sacrum, wholly above it, was renamed L5 (on 133
    held-out images: 4 better, 1 worse, all bones 0.5165 -> 0.5169)."""
    lows, highs = [], []
    for rib in (b.index for b in table.group_members("ribs")):
        z = _rib_heights_of(labels, grid, rib, boxes[rib - 1] if rib <= len(boxes) else None)
        if len(z) < MIN_RIB_VOXELS:
            continue
        lows.append(np.percentile(z, RIB_PERCENTILE))
        highs.append(np.percentile(z, 100 - RIB_PERCENTILE))
    if len(lows) < MIN_RIBS:
        return None
    return float(np.sort(lows)[MIN_RIBS - 1]), float(np.sort(highs)[-MIN_RIBS])


def relabel_lower_body_among_ribs(labels: np.ndarray, grid: Grid, table: BoneTable, ct_hu: Optional[np.ndarray],
                                  report: ConsistencyReport) -> int:
    """Rename, in place, pelvic and leg bones that lie wholly at the ribs' height (see the module
    docstring); returns the voxels changed. ``ct_hu`` (the CT on the same grid, optional) lets a
    piece with no bone-like voxel go to the background."""
    lower = _lower_body_bones(table)
    boxes = label_boxes(labels, table.num_classes - 1)  # one pass: each label's box
    present = [i for i in lower if boxes[i - 1] is not None]
    if not present:
        return 0
    ribs = _rib_heights(labels, grid, table, boxes)
    if ribs is None:
        return 0
    misnamed = []
    for index in present:
        z = _heights(labels, grid, index, boxes[index - 1])
        if ribs[0] <= z.min() and z.max() <= ribs[1]:  # else it reaches beyond the ribs: a real pelvis or thigh
            misnamed.append(index)
    if not misnamed:
        return 0
    others = (labels > 0) & ~np.isin(labels, lower)
    if not others.any():
        return 0
    nearest = ndimage.distance_transform_edt(~others, sampling=np.linalg.norm(grid.matrix, axis=0),
                                             return_distances=False, return_indices=True)
    return sum(_rename(labels, table, index, nearest, ct_hu, report) for index in misnamed)


def _rename(labels: np.ndarray, table: BoneTable, index: int, nearest: np.ndarray, ct_hu: Optional[np.ndarray],
            report: ConsistencyReport) -> int:
    """Each piece of the misnamed bone ``index`` to the bone nearest to most of its voxels
    (``nearest``: per voxel, the index of the nearest other bone's voxel), or to the background
    when nothing in it is bone-like; the voxels changed."""
    pieces, _ = ndimage.label(labels == index, FULL)
    moved: dict[int, int] = {}
    for p, box in enumerate(ndimage.find_objects(pieces), start=1):
        mask = pieces[box] == p
        coords = np.argwhere(mask) + [b.start for b in box]
        where = tuple(coords.T)
        if ct_hu is not None and np.percentile(ct_hu[where], 90) < BONE_HU:
            target = 0
        else:
            names = labels[tuple(n[where] for n in nearest)]
            target = int(np.bincount(names).argmax())
        labels[box][mask] = target
        moved[target] = moved.get(target, 0) + len(coords)
    why = f"lay wholly at the height of the ribs, where no {table[index].display_name.lower()} can be"
    for target, n in moved.items():
        if target:
            report.add(table[target].name, "fragment", f"took a piece labelled {table[index].display_name} "
                       f"({n} voxels): it {why}", n)
        else:
            report.add(table[index].name, "removed", f"{n} voxels removed: they {why}, and none is bone-like", n)
    return sum(moved.values())

"""Paired bones on the right side of the body.

Clavicles, scapulae, humeri, hips and femora never cross the midline: each piece takes the side
its centre lies on (when clearly off the midline). Forearms and hands may cross it (arms folded
over the body), so a forearm piece takes the side of the humerus it meets at the elbow, and each
hand (its bones as one cluster) the side of the forearm it meets at the wrist, or when it meets
both or none, the side most of its voxels already have.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..core.bones import BoneTable
from ..inference.mirror import swap_permutation
from .changes import ConsistencyReport
from .geometry import Grid, Midline, label_boxes, offset, union_box

MARGIN_MM = 10.0  # pieces closer than this to the midline keep their side
JOINT_MM = 25.0
MIXED_SHARE = 0.3  # a forearm meets its humerus, a hand its forearm, within this distance
FULL = np.ones((3, 3, 3), bool)


def _clusters(labels: np.ndarray, boxes: list, indices: list[int], bridge: int) -> list[np.ndarray]:
    """Coordinates of each group of ``indices`` voxels, pieces within ``bridge`` voxels joined
    (the bones of one hand are one group)."""
    box = union_box(boxes, indices, labels.shape, bridge)
    if box is None:
        return []
    sub = np.isin(labels[box], indices)
    joined = ndimage.binary_dilation(sub, FULL, iterations=bridge) if bridge else sub
    parts, _ = ndimage.label(joined, structure=FULL)
    parts[~sub] = 0
    return [np.argwhere(parts[b] == p) + offset(box) + offset(b)
            for p, b in enumerate(ndimage.find_objects(parts), start=1) if b is not None]


def _relabel(labels: np.ndarray, coords: np.ndarray, side: str, table: BoneTable, report: ConsistencyReport) -> None:
    values = labels[tuple(coords.T)]
    for v in np.unique(values):
        bone = table[int(v)]
        if bone.laterality in ("left", "right") and bone.laterality != side:
            target = table[swap_permutation(table.names())[bone.index]]
            sel = values == v
            labels[tuple(coords[sel].T)] = target.index
            report.add(target.name, "side", f"moved to the {side} side (was {bone.display_name})", int(sel.sum()))


def _tree(labels: np.ndarray, boxes: list, grid: Grid, indices: list[int]) -> Optional[cKDTree]:
    box = union_box(boxes, indices, labels.shape)
    if box is None:
        return None
    coords = np.argwhere(np.isin(labels[box], indices)) + offset(box)
    return cKDTree(grid.to_mm(coords)) if len(coords) else None


def fix_sides(labels: np.ndarray, grid: Grid, table: BoneTable, midline: Midline, report: ConsistencyReport) -> None:
    """Relabel paired bones in place (see the module docstring)."""
    if not midline:
        return
    fixed = [b for b in table.foreground() if b.laterality in ("left", "right") and b.region != "hand"
             and not b.name.startswith(("rib_", "radius_", "ulna_"))]
    boxes = label_boxes(labels, table.num_classes - 1)
    for bone in fixed:
        if boxes[bone.index - 1] is None:
            continue
        outer = boxes[bone.index - 1]
        parts, count = ndimage.label(labels[outer] == bone.index, structure=FULL)
        for p, box in enumerate(ndimage.find_objects(parts), start=1):
            coords = np.argwhere(parts[box] == p) + offset(outer) + offset(box)
            centre = grid.to_mm(coords).mean(axis=0)
            if abs(centre[0] - midline.x_at(centre[2])) >= MARGIN_MM:
                _relabel(labels, coords, midline.side_of(centre), table, report)
    boxes = label_boxes(labels, table.num_classes - 1)
    humeri = {s: [table.by_name(f"humerus_{s}").index] for s in ("left", "right")}
    for name in ("radius_left", "radius_right", "ulna_left", "ulna_right"):  # forearms may cross: bone by bone
        _by_joint(labels, boxes, grid, table, report, [table.by_name(name).index], humeri, bridge=0)
    boxes = label_boxes(labels, table.num_classes - 1)
    _by_joint(labels, boxes, grid, table, report, [b.index for b in table.foreground() if b.region == "hand"],
              {s: [table.by_name(f"{n}_{s}").index for n in ("radius", "ulna")] for s in ("left", "right")}, bridge=1)


def _by_joint(labels: np.ndarray, boxes: list, grid: Grid, table: BoneTable, report: ConsistencyReport,
              members: list[int], parents: dict[str, list[int]], bridge: int) -> None:
    """Each group of ``members`` (pieces joined across ``bridge`` voxels) takes the side of the
    parent bone it meets when it meets only one side's, else the side most of its voxels were
    given; a group with both sides in force (two hands touching) is left as it is."""
    clusters = _clusters(labels, boxes, members, bridge=bridge)
    if not clusters:
        return
    trees = {s: _tree(labels, boxes, grid, idx) for s, idx in parents.items()}
    for coords in clusters:
        mm = grid.to_mm(coords)
        sample = mm[:: max(1, len(mm) // 500)]
        near = [s for s, t in trees.items() if t is not None and float(t.query(sample)[0].min()) <= JOINT_MM]
        if len(near) == 1:
            side = near[0]
        else:
            values = labels[tuple(coords.T)]
            left = sum(int(np.count_nonzero(values == v)) for v in np.unique(values) if table[int(v)].laterality == "left")
            if MIXED_SHARE <= left / len(values) <= 1 - MIXED_SHARE:
                continue
            side = "left" if 2 * left >= len(values) else "right"
        _relabel(labels, coords, side, table, report)

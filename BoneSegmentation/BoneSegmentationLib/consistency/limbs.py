"""A forearm or hand bone touching the trunk is a misnamed piece of the trunk.

The radius, the ulna and the bones of the hand touch only each other and, at the elbow, the
humerus. Between them and the pelvis, a femur, a rib, the spine or the skull there is always skin
and muscle (a hand on the lap, forearms crossed over the stomach, arms raised beside the head), at
least a voxel of the model's grid. The network does not know that: on a real abdominal CT (the
test scan, looked at, not chosen on) it named a piece of the right iliac wing radius and a bright
speck against L5 lunate, so an abdomen "had" forearms and a wrist.

So a group of touching forearm and hand labels (26-connected, whatever their names) that touches a
bone of the trunk, the shoulder girdle, the pelvis or a leg, does not touch a humerus (the elbow: a
real arm), and is smaller than the smallest plausible volume of the bone most of it is named
(``Bone.volume_ml_low``: a real forearm lying against a pelvis, as the procedural phantom draws
some, is kept because it is whole) takes the name of the bone it touches most, when it is a
fragment of that bone: at most ``FRAGMENT_SHARE`` of its size. A larger group is left as the
network named it, for the review to flag: on held-out synthetic abdomens the network calls oral
contrast in the bowel (500 HU) radius, touching the twelfth rib, and a rib twelve with a bowel loop
attached is no better than a radius where none can be. As the other renaming rules do (``pieces``,
``regions``), it goes to the background instead only when nothing in it is bone-like (its brightest
tenth under ``pieces.BONE_HU``), so a bone that is there stays bone.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from ..core.bones import BoneTable
from .changes import ConsistencyReport
from .geometry import Grid, label_boxes, union_box
from .pieces import BONE_HU

FULL = np.ones((3, 3, 3), bool)
TRUNK_REGIONS = ("skull", "spine", "thorax", "shoulder_girdle", "pelvis", "leg")
FRAGMENT_SHARE = 0.25  # a group renamed is at most this share of the bone it touches


def _distal(table: BoneTable) -> list[int]:
    """The forearm and hand bones: radius, ulna and the bones of both hands."""
    return [b.index for b in table.foreground()
            if b.region == "hand" or (b.region == "arm" and not b.name.startswith("humerus"))]


def relabel_distal_limb_on_trunk(labels: np.ndarray, grid: Grid, table: BoneTable, ct_hu: Optional[np.ndarray],
                                 report: ConsistencyReport) -> int:
    """Rename, in place, forearm and hand pieces that touch the trunk (see the module docstring);
    returns the voxels changed. ``ct_hu`` (the CT on the same grid, optional) lets a piece with no
    bone-like voxel go to the background."""
    distal = np.zeros(table.num_classes, bool)
    distal[_distal(table)] = True
    trunk = np.zeros(table.num_classes, bool)
    trunk[[b.index for b in table.foreground() if b.region in TRUNK_REGIONS]] = True
    humerus = np.zeros(table.num_classes, bool)  # the arm's bones that are not forearm bones
    humerus[[b.index for b in table.foreground() if b.region == "arm"]] = True
    humerus &= ~distal
    boxes = label_boxes(labels, table.num_classes - 1)  # one pass: each label's box
    around = union_box(boxes, np.flatnonzero(distal), labels.shape, margin=1)
    if around is None:  # no forearm or hand label: nothing to do (most scans)
        return 0
    view = labels[around]  # every voxel of a distal label and its one-voxel shell
    clusters, _ = ndimage.label(distal[view], FULL)
    changed = 0
    hu = None if ct_hu is None else ct_hu[around]
    for c, box in enumerate(ndimage.find_objects(clusters), start=1):
        grown = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, view.shape))
        mask = clusters[grown] == c
        local = view[grown]
        shell = local[ndimage.binary_dilation(mask, FULL) & ~mask]
        touching = shell[trunk[shell]]
        if not touching.size or humerus[shell].any():
            continue
        names = local[mask]
        main = int(np.bincount(names).argmax())
        if names.size * grid.voxel_ml >= table[main].volume_ml_low:
            continue
        target = int(np.bincount(touching).argmax())
        if names.size > FRAGMENT_SHARE * _size(labels, boxes, target):
            continue
        if hu is not None and np.percentile(hu[grown][mask], 90) < BONE_HU:
            target = 0
        local[mask] = target
        changed += int(names.size)
        _report(table, names, target, report)
    return changed


def _size(labels: np.ndarray, boxes: list, index: int) -> int:
    """Voxels of label ``index``, counted within its box."""
    return int(np.count_nonzero(labels[boxes[index - 1]] == index))


def _report(table: BoneTable, names: np.ndarray, target: int, report: ConsistencyReport) -> None:
    """One review line per forearm or hand label renamed (or removed)."""
    for index, n in zip(*np.unique(names, return_counts=True)):
        shown = table[int(index)].display_name
        if target:
            report.add(table[target].name, "fragment",
                       f"took a piece labelled {shown} ({n} voxels): it touched {table[target].display_name}, "
                       "which no forearm or hand bone touches", int(n))
        else:
            report.add(table[int(index)].name, "removed",
                       f"{n} voxels removed: they touched the trunk, where no {shown.lower()} can be, and "
                       "none is bone-like", int(n))

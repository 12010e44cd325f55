"""Boundaries between lumbar vertebrae moved to the disc between them.

The network's levels can be right while the boundary between two of them is not: a real
abdomen's L5 label reached into half of L4. Between two consecutive vertebrae the column is thin
at the disc: along the line joining their centres, the number of their voxels per step dips where
the disc is. When the dip is a real valley (both sides rise well above it) the voxels between the
two centres are given to the vertebra on their side of it. Only from T11/T12 down: lumbar discs are
8-12 mm, two or three voxels of the model's grid, while thoracic discs are thinner than a voxel and
show no valley (on held-out synthetic abdomens, moving thoracic boundaries gained nothing).
"""

from __future__ import annotations

import numpy as np

from ..core.bones import BoneTable
from .changes import ConsistencyReport
from .geometry import Grid
from .spine import BONE_NAMES, LEVELS

FIRST_PAIR = LEVELS.index("T11")  # pairs from T11/T12 down to L4/L5
VALLEY = 0.7  # the dip's count at most this fraction of the peak on each side
WINDOW = (0.2, 0.8)  # where between the two centres a disc is looked for


def cut_at_discs(labels: np.ndarray, grid: Grid, table: BoneTable, report: ConsistencyReport) -> int:
    """Move each lumbar boundary to its disc in place; the number of voxels relabelled."""
    column = [table.by_name(name).index for name in BONE_NAMES[FIRST_PAIR:LEVELS.index("sacrum")]]
    flat = labels.reshape(-1)
    moved = 0
    for upper, lower in zip(column[:-1], column[1:]):
        a, b = np.flatnonzero(flat == upper), np.flatnonzero(flat == lower)
        if not a.size or not b.size:
            continue
        mm_a, mm_b = (grid.to_mm(np.stack(np.unravel_index(v, labels.shape), axis=1)) for v in (a, b))
        centre_a, centre_b = mm_a.mean(axis=0), mm_b.mean(axis=0)
        length = float(np.linalg.norm(centre_a - centre_b))
        step = grid.voxel_mm
        bins = int(np.ceil(length / step))
        if bins < 5:
            continue
        voxels = np.concatenate([a, b])
        along = (np.concatenate([mm_a, mm_b]) - centre_b) @ ((centre_a - centre_b) / length)
        between = (along >= 0) & (along <= length)
        counts = np.bincount((along[between] // step).astype(int), minlength=bins + 1)[:bins]
        lo, hi = int(WINDOW[0] * bins), int(np.ceil(WINDOW[1] * bins))
        k = lo + int(np.argmin(counts[lo:hi]))
        if not 0 < k < bins - 1 or counts[k] > VALLEY * min(counts[:k].max(), counts[k + 1:].max()):
            continue
        cut = (k + 0.5) * step
        inside = voxels[between]
        new = np.where(along[between] > cut, upper, lower).astype(flat.dtype)
        changed = int(np.count_nonzero(flat[inside] != new))
        if changed:
            flat[inside] = new
            moved += changed
            name_upper, name_lower = (table[i].name for i in (upper, lower))
            report.add(name_upper, "boundary", f"moved the {name_upper.split('_')[-1]}/{name_lower.split('_')[-1]} "
                       f"boundary to the disc ({changed} voxels)", changed)
    return moved

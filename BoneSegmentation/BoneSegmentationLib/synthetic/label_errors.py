"""Label maps broken the way networks break them, from a correct one: the known answers for the
anatomical consistency step (tests and ``benchmarks/bench_anatomy.py``)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..consistency.spine import BONE_NAMES
from ..core.bones import default_table


def _lut(pairs) -> np.ndarray:
    table = default_table()
    lut = np.arange(256, dtype=np.uint8)
    for a, b in pairs:
        lut[table.by_name(a).index] = table.by_name(b).index
    return lut


SHIFT_DOWN = _lut(zip(BONE_NAMES[:24], BONE_NAMES[1:25]))  # C1 labelled C2, ..., L5 labelled sacrum
SHIFT_UP = _lut(zip(BONE_NAMES[1:25], BONE_NAMES[:24]))  # C2 labelled C1 (two C1s), ..., sacrum labelled L5
SWAP_RIBS = _lut([(f"rib_{a}_{k}", f"rib_{b}_{k}") for k in range(1, 13) for a, b in (("left", "right"), ("right", "left"))])
RIBS_DOWN = _lut([(f"rib_{s}_{k}", f"rib_{s}_{k + 1}") for k in range(1, 12) for s in ("left", "right")])


def sprinkle(labels: np.ndarray, ct_hu: np.ndarray, seed: int, inside: int = 25, far: int = 15) -> np.ndarray:
    """A copy with 2x2x2 fragments of wrong bone labels: ``inside`` within bones (each wholly in one
    bone) and ``far`` in soft tissue at least 4 voxels from any bone (a network's hallucinations),
    all at least 5 voxels apart."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    present = [int(i) for i in np.unique(labels) if i]
    soft = ndimage.binary_erosion((ct_hu > -200) & (ct_hu < 150), np.ones((3, 3, 3), bool))
    pools = (((labels > 0) & (ndimage.maximum_filter(labels, 4) == ndimage.minimum_filter(labels, 4)), inside),
             (~ndimage.binary_dilation(labels > 0, iterations=4) & soft, far))
    for pool, n in pools:
        zs, ys, xs = np.nonzero(pool)
        placed: list[np.ndarray] = []
        for k in rng.permutation(len(zs)):
            corner = np.array([zs[k], ys[k], xs[k]])
            if any(np.abs(corner - c).max() < 5 for c in placed):
                continue
            placed.append(corner)
            z, y, x = corner
            out[z:z + 2, y:y + 2, x:x + 2] = rng.choice([i for i in present if i != labels[z, y, x]])
            if len(placed) == n:
                break
    return out

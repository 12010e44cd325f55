"""The vertebral column as one sequence: C1 ... L5, sacrum, coccyx, consecutive and in order.

The column's pieces (26-connected components of each column label) are ordered by height in
patient coordinates; pieces closer than half the local vertebra pitch are one vertebra (split
between two labels), and a piece as big as two of its neighbours is two vertebrae (one label on
both) and is cut at its thinnest cross-section. Then one assignment of consecutive levels is
decoded by dynamic programming over the ordered vertebrae with the level as state: each vertebra
scores the fraction of its voxels the network gave that level (and, at half weight, the
fraction of the rib voxels it meets that carry rib number k for Tk), gaps in the levels cost and are
allowed only where the distance shows one; a fragment, or a unit close below another for the
pitch, may share its level (a vertebra in pieces); and anatomical anchors in view outweigh the
network: C1 touches the skull above it, C2's dens rises into C1, T1-T12 carry ribs (pieces long
enough to be ribs) and L1-L5 do not, the sacrum meets the hip bones. When the top two units both
touch the skull, the column is also decoded without the top one (the skull's base labelled C1),
and that reading wins when it scores more by over one vertebra's evidence: the piece goes back to
the skull. With no anchor in view (a
mid-thoracic slab), the sequence is applied only when most of the column already agrees with it
(``DECISIVE``): when the network split its votes between two offsets, its labels are kept rather
than replaced by a guess.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..core.bones import BoneTable
from .changes import ConsistencyReport
from .geometry import Grid

LEVELS = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)] \
    + ["sacrum", "coccyx"]
BONE_NAMES = [f"vertebra_{v}" for v in LEVELS[:24]] + ["sacrum", "coccyx"]
T1, T12, L1, SACRUM = LEVELS.index("T1"), LEVELS.index("T12"), LEVELS.index("L1"), LEVELS.index("sacrum")
C2 = LEVELS.index("C2")


def vertebra_indices(table: BoneTable) -> list[int]:
    """The table's indices of the 24 vertebrae C1-L5, head to foot (sacrum and coccyx left out)."""
    return [table.by_name(name).index for name in BONE_NAMES[:SACRUM]]


def column_indices(table: BoneTable) -> list[int]:
    """The table's indices of the whole column, C1 to the coccyx, head to foot."""
    return [table.by_name(name).index for name in BONE_NAMES]
SPLIT_FACTOR = 1.8  # a vertebra this many times its neighbours' volume is two vertebrae
MERGE_FRACTION = 0.45  # pieces closer than this fraction of the local pitch are one vertebra
WHOLE_FACTOR = 1.6  # ... unless together they are as big as two vertebrae
PARTIAL_FRACTION = 0.5
SPECK_FRACTION = 0.35  # a unit this small against its neighbours is a fragment, not a vertebra
OWN_PITCH_FRACTION = 0.6  # ... unless it lies this fraction of the pitch from both neighbours, labelled between them
END_SPECK_FRACTION = 0.02  # ... at either end of the column (a coccyx is 3-15 % of L5)
CORE = 0.6  # middle fraction of a vertebra's height where another piece's centre makes it the same vertebra
COLUMN_MM = 40.0  # pieces further apart than this across the body are not one vertebra
GROUP_GAP_MM = 10.0  # pieces of one vertebra lie within this distance of each other
OFF_COLUMN_MM = 25.0  # a vertebra piece further than this from every other one is not in the column
ISOLATED_PITCHES = 3.0
SKULL_MM = 16.0  # C1 sits below the occipital condyles, closer than one cervical vertebra
RIB_VOTE_WEIGHT = 0.5  # the numbers of the ribs a vertebra meets, against its own labels' 1.0
SKULL_BASE_COST = 1.0  # calling the top unit skull instead of C1 costs one vertebra's evidence
DECISIVE = 0.6  # without an anchor, renumber only when this share of the column already agrees
GAP_COST = 1.0  # per level skipped (one vertebra's full evidence)
REPEAT_COST = 1.0  # a whole unit a pitch below read as part of the vertebra above: one vertebra's evidence,
# less for a fragment or a closer one
REPEAT_LIMIT = 0.5  # a whole unit half a pitch away, or a fragment a pitch away, is the most that may share
#: ... and for a unit the network gave the same label as the unit above: the top of L4 named L3,
#: 0.57 of a pitch below L3 (held-out synthetic whole view 5611), took a level of its own and moved
#: every vertebra above it up one against the sacrum's anchor
SAME_LABEL_REPEAT_LIMIT = 0.75
RECENT = 3  # the whole vertebrae just above a unit that measure a vertebra's size and the pitch there
GAP_ROOM = 0.75  # a skipped level needs this fraction of a pitch of distance
#: A vertebra beyond the rib-bearing ones is likely cervical or lumbar, worth this many votes: less
#: than a unit's own unanimous label (1.0), because the network often misses the lowest thoracic
#: vertebrae's ribs. At 1.5 it outweighed them, and vertebrae labelled T10-T12 below the last rib
#: the network found were read lumbar (held-out synthetic whole view 5631: spine 0.185 -> 0; on 85
#: held-out images spine 0.4605 at 1.5, 0.4645 at 0.75: 4 images better, none worse).
NO_RIB_BONUS = 0.75
RIB_PIECE_MM = 25.0  # a rib label piece shorter than this (box diagonal) is no rib: an L1 transverse process named rib 12
FULL = np.ones((3, 3, 3), bool)


@dataclass
class Vertebra:
    voxels: np.ndarray  # flat indices into the label array
    votes: np.ndarray  # voxels per column level (top-1 labels)
    centre: np.ndarray  # LPS mm
    top_mm: float = 0.0
    bottom_mm: float = 0.0
    anchors: dict[int, float] = field(default_factory=dict)  # level -> bonus (hard when large)
    anchor_sets: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (allowed levels mask, bonus)
    rib_votes: np.ndarray = field(default_factory=lambda: np.zeros(len(LEVELS)))  # rib voxels touching, by their number

    @property
    def size(self) -> int:
        return int(self.voxels.size)

    @property
    def label_level(self) -> int:
        return int(np.argmax(self.votes))


@dataclass
class SpineResult:
    vertebrae: list[Vertebra]
    levels: list[int]  # decoded level of each vertebra, superior to inferior

    def centres_by_level(self) -> dict[int, np.ndarray]:
        out: dict[int, list] = {}
        for v, level in zip(self.vertebrae, self.levels):
            out.setdefault(level, []).append((v.size, v.centre))
        return {lv: sum(s * c for s, c in items) / sum(s for s, _ in items) for lv, items in out.items()}


def _pieces(labels: np.ndarray, column: np.ndarray, grid: Grid) -> list[Vertebra]:
    """Every 26-connected piece of every column label, as a candidate vertebra."""
    level_of = np.full(256, -1, np.int16)
    level_of[column] = np.arange(len(column))
    out = []
    boxes = ndimage.find_objects(labels, max_label=int(column.max()))
    for level, index in enumerate(column):
        box = boxes[index - 1] if index - 1 < len(boxes) else None
        if box is None:
            continue
        parts, count = ndimage.label(labels[box] == index, structure=FULL)
        for p, piece in enumerate(ndimage.find_objects(parts), start=1):  # each piece searched in its own box
            coords = np.argwhere(parts[piece] == p) + np.array([b.start + s.start for b, s in zip(box, piece)])
            out.append(_vertebra(coords, labels, level_of, grid))
    return out


def _vertebra(coords: np.ndarray, labels: np.ndarray, level_of: np.ndarray, grid: Grid) -> Vertebra:
    flat = np.ravel_multi_index(coords.T, labels.shape)
    levels = level_of[labels.ravel()[flat]]
    votes = np.bincount(levels[levels >= 0], minlength=len(LEVELS)).astype(float)
    mm = grid.to_mm(coords)
    return Vertebra(flat, votes, mm.mean(axis=0), float(mm[:, 2].max()), float(mm[:, 2].min()))


def _merge(a: Vertebra, b: Vertebra, labels: np.ndarray, grid: Grid) -> Vertebra:
    n = a.size + b.size
    return Vertebra(np.concatenate([a.voxels, b.voxels]), a.votes + b.votes, (a.centre * a.size + b.centre * b.size) / n,
                    max(a.top_mm, b.top_mm), min(a.bottom_mm, b.bottom_mm))


def _group_pieces(pieces: list[Vertebra], step_mm: float, grid: Grid, labels: np.ndarray,
                  hips: np.ndarray) -> list[Vertebra]:
    """Pieces of one vertebra (several labels on it) become one unit: from the largest down, a piece
    within ``GROUP_GAP_MM`` of a larger unit whose centre lies in the middle ``CORE`` of that unit's
    height joins it (a hand beside the lumbar spine, however labelled, does not).

    The sacrum is five fused vertebrae, tilted, its alae rising beside L5: the middle of its height
    reaches L5's centre. A piece labelled a vertebra above the sacrum's centre that does not touch
    the hip bones (when they are in view) is L5, not part of the sacrum, and stays a unit of its
    own; a piece of the sacrum given a vertebra's label meets the hip bones at the sacroiliac
    joints and still joins (a real abdomen's whole L5 was taken into the sacrum)."""
    shape = labels.shape
    hips = np.array([h for h in hips if (labels == h).any()], int)  # in view
    units: list[list] = []  # [unit, core bottom, core top, tree of its voxels in mm]
    for piece in sorted(pieces, key=lambda p: -p.size):
        host = None
        for k, (u, lo, hi, tree) in enumerate(units):
            if u.label_level >= SACRUM and piece.label_level < SACRUM and hips.size \
                    and piece.centre[2] > u.centre[2] and not _touching(piece, labels, hips, 1).sum():
                continue
            if lo <= piece.centre[2] <= hi and np.linalg.norm(piece.centre[:2] - u.centre[:2]) <= COLUMN_MM:
                if tree is None:
                    tree = units[k][3] = cKDTree(_mm(u, grid, shape))
                if tree.query(_mm(piece, grid, shape), distance_upper_bound=GROUP_GAP_MM)[0].min() <= GROUP_GAP_MM:
                    host = k
                    break
        if host is None:
            half = max(0.5 * CORE * (piece.top_mm - piece.bottom_mm), 1.5 * step_mm)
            units.append([piece, piece.centre[2] - half, piece.centre[2] + half, None])
        else:
            units[host][0] = _merge(units[host][0], piece, None, None)
            units[host][3] = None
    return [u[0] for u in units]


def _mm(unit: Vertebra, grid: Grid, shape: tuple[int, ...]) -> np.ndarray:
    return grid.to_mm(np.stack(np.unravel_index(unit.voxels, shape), axis=1))


def _whole_size(sizes: np.ndarray) -> float:
    """A whole vertebra's size among units of these ``sizes``: the median of the larger half, so
    that specks, however many, do not set it."""
    return float(np.median(sizes[sizes >= np.median(sizes)]))


def _off_column(units: list[Vertebra], grid: Grid, shape: tuple[int, ...]) -> list[bool]:
    """Units apart from the column's pieces: a unit further than ``OFF_COLUMN_MM`` from every other
    vertebra piece (a hand bone labelled as a vertebra: vertebrae sit a disc apart), and units that
    are near only each other and hold together less than ``SPECK_FRACTION`` of a whole vertebra
    (two specks beside a lower rib labelled T10 vouched for each other, joined L1, made it
    rib-bearing and moved a held-out synthetic abdomen's column up a level: spine 0.776 -> 0.083)."""
    if len(units) < 2:
        return [False] * len(units)
    samples = [p[:: max(1, len(p) // 300)] for p in (_mm(u, grid, shape) for u in units)]
    trees = [cKDTree(p) for p in samples]
    near = np.zeros((len(units), len(units)), bool)
    for k, u in enumerate(units):
        for j, v in enumerate(units):
            if j <= k or abs(v.centre[2] - u.centre[2]) > 150.0:
                continue
            near[k, j] = near[j, k] = bool(np.isfinite(
                trees[j].query(samples[k], distance_upper_bound=OFF_COLUMN_MM)[0]).any())
    sizes = np.array([u.size for u in units], float)
    _, group = connected_components(csr_matrix(near), directed=False)
    too_small = np.bincount(group, weights=sizes) < SPECK_FRACTION * _whole_size(sizes)
    return [not near[k].any() or bool(too_small[group[k]]) for k in range(len(units))]


def _isolated(units: list[Vertebra]) -> list[bool]:
    """Units apart from the column (a vertebra label inside the skull or the pelvis): the ordered
    units are cut where the gap in height exceeds ``ISOLATED_PITCHES`` pitches, and only the run
    holding most voxels is the column. The pitch is measured between units of a vertebra's size:
    specks a few voxels apart (not folded yet) made it a few millimetres, and the sacrum, 55 mm
    below L5 by its centre, was cut off as "isolated"."""
    if len(units) < 3:
        return [False] * len(units)
    z = np.array([u.centre[2] for u in units])
    gaps = np.abs(np.diff(z))
    sizes = np.array([u.size for u in units], float)
    whole = sizes >= SPECK_FRACTION * _whole_size(sizes)
    pitch = float(np.median(np.abs(np.diff(z[whole])))) if whole.sum() >= 3 else float(np.median(gaps))
    pitch = pitch or 1.0
    run = np.r_[0, np.cumsum(gaps > ISOLATED_PITCHES * pitch)]
    weight = np.bincount(run, weights=[u.size for u in units])
    return list(run != int(np.argmax(weight)))


def _local(values: list[float], i: int, radius: int = 3) -> float:
    window = [v for j, v in enumerate(values) if abs(j - i) <= radius and j != i] or values
    return float(np.median(window))


def _fold_specks(units: list[Vertebra], labels: np.ndarray, grid: Grid) -> list[Vertebra]:
    """Units far smaller than their neighbours (a fragment between two vertebrae) join the nearer
    neighbour instead of taking a level of their own; the ends are spared (the coccyx is small)
    unless they are specks even for a coccyx (``END_SPECK_FRACTION``): a two-voxel piece beside
    the sacrum, left as the column's last unit, met a rib label and pulled the column up by ten levels."""
    while len(units) > 2:
        sizes = [float(u.size) for u in units]
        small = [i for i, s in enumerate(sizes) if s < (SPECK_FRACTION if 0 < i < len(sizes) - 1 else
                                                        END_SPECK_FRACTION) * _local(sizes, i, 2)
                 and not _partly_labelled_vertebra(units, i)]
        if not small:
            break
        i = min(small, key=lambda k: sizes[k])
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(units)]
        j = min(near, key=lambda k: float(np.linalg.norm(units[k].centre - units[i].centre)))
        a, b = min(i, j), max(i, j)
        units = units[:a] + [_merge(units[a], units[b], labels, grid)] + units[b + 1:]
    return units


def _partly_labelled_vertebra(units: list[Vertebra], i: int) -> bool:
    """A small unit that sits a vertebra's pitch from both neighbours and carries the level between
    theirs is a vertebra the network labelled only in part, not a fragment: a synthetic abdomen's
    L4, a third of it labelled L4 and the rest L5 and L3, was folded into L5 and lost."""
    if not 0 < i < len(units) - 1:
        return False
    z = [float(u.centre[2]) for u in units]
    gaps = np.abs(np.diff(z))
    pitch = float(np.median(gaps[max(0, i - 3):i + 3]))
    above, level, below = (units[k].label_level for k in (i - 1, i, i + 1))
    return above < level < below and min(gaps[i - 1], gaps[i]) >= OWN_PITCH_FRACTION * pitch


def _merge_split_pieces(units: list[Vertebra], labels: np.ndarray, grid: Grid) -> list[Vertebra]:
    """Partial pieces that are one vertebra together (a level boundary through a vertebra, left and
    right halves) become one: neighbours closer than ``MERGE_FRACTION`` of the local pitch whose
    union is no bigger than ``WHOLE_FACTOR`` local vertebrae (two whole vertebrae never merge)."""
    while len(units) > 2:  # height apart, not distance: a vertebral body and its arch are 3 cm apart front to back
        gaps = [abs(float(units[i + 1].centre[2] - units[i].centre[2])) for i in range(len(units) - 1)]
        sizes = [float(u.size) for u in units]
        ratios = [g / max(_local(gaps, i), 1e-6)
                  if sizes[i] + sizes[i + 1] <= WHOLE_FACTOR * _local(sizes, i, 2) else np.inf
                  for i, g in enumerate(gaps)]
        i = int(np.argmin(ratios))
        if ratios[i] >= MERGE_FRACTION:
            break
        merged = _merge(units[i], units[i + 1], labels, grid)
        units = units[:i] + [merged] + units[i + 2:]
    return units


def _split_doubles(units: list[Vertebra], labels: np.ndarray, grid: Grid, level_of: np.ndarray,
                   hips: np.ndarray) -> list[Vertebra]:
    """A vertebra piece as large as two of its neighbours (one label given to two vertebrae) is cut
    at its thinnest cross-section near the middle of its height; the sacrum (the piece that meets
    the hip bones, whatever its label) is large by nature and stays whole."""
    if len(units) < 3:
        return units
    sizes = [float(u.size) for u in units]
    out = []
    si_axis = grid.si_axis
    for i, u in enumerate(units):
        level = u.label_level
        if not (C2 < level < SACRUM) or u.size < SPLIT_FACTOR * _local(sizes, i, 2) \
                or (hips.size and _touching(u, labels, hips, 1).sum()):
            out.append(u)
            continue
        coords = np.stack(np.unravel_index(u.voxels, labels.shape), axis=1)
        along = coords[:, si_axis]
        counts = np.bincount(along - along.min())
        n = len(counts)
        lo, hi = int(n * 0.3), max(int(n * 0.7), int(n * 0.3) + 1)
        cut = along.min() + lo + int(np.argmin(counts[lo:hi]))
        upper_is_high = grid.matrix[2, si_axis] > 0
        first = (along >= cut) if upper_is_high else (along < cut)
        for part in (first, ~first):
            if part.any():
                out.append(_vertebra(coords[part], labels, level_of, grid))
    return out


RibPieces = tuple[np.ndarray, np.ndarray]  # rib pieces numbered 1..n on the labels' grid; each one's rib number


def _around(unit: Vertebra, values: np.ndarray, iterations: int = 2) -> np.ndarray:
    """The values within ``iterations`` voxels of the unit, outside it."""
    coords = np.stack(np.unravel_index(unit.voxels, values.shape), axis=1)
    lo = np.maximum(coords.min(axis=0) - iterations, 0)
    hi = np.minimum(coords.max(axis=0) + iterations + 1, values.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    mask = np.zeros(hi - lo, bool)
    mask[tuple((coords - lo).T)] = True
    shell = ndimage.binary_dilation(mask, FULL, iterations=iterations) & ~mask
    return values[box][shell]


def _touching(unit: Vertebra, labels: np.ndarray, indices: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Voxel counts of the given labels within ``iterations`` voxels of the unit."""
    around = _around(unit, labels, iterations)
    return np.array([int(np.count_nonzero(around == i)) for i in indices])


def _anchor(units: list[Vertebra], labels: np.ndarray, grid: Grid, table: BoneTable, ribs: RibPieces,
            min_rib_voxels: int, skull_reach: int, big: float) -> bool:
    """Attach the anatomical anchors in view to the units (bonuses added by ``decode``); ``ribs``:
    ``_rib_pieces`` of the labels; ``skull_reach``: voxels between C1 and the skull that still count
    as touching; ``big``: the bonus of a hard anchor (more than every vote together). True when an
    anchor fixes a level absolutely (skull, sacrum, or the end of the rib-bearing vertebrae in view)."""
    idx = {b.name: b.index for b in table.foreground()}
    cranium = np.array([idx["cranium"]]) if "cranium" in idx else np.array([], int)
    hips = np.array([idx[n] for n in ("hip_left", "hip_right") if n in idx])
    levels = np.arange(len(LEVELS))
    pieces, piece_numbers = ribs
    contact = np.array([np.bincount(_around(u, pieces), minlength=len(piece_numbers)) for u in units])
    contact[:, 0] = 0
    contact *= np.arange(len(units))[:, None] == contact.argmax(axis=0)[None, :]  # each rib to its own vertebra
    bearing = []
    for k, u in enumerate(units):
        sacrum = bool(hips.size) and k >= len(units) - 2 and _touching(u, labels, hips, 1).sum() >= min_rib_voxels
        if sacrum:
            u.anchors[SACRUM] = u.anchors.get(SACRUM, 0.0) + big
        bearing.append(int(contact[k].sum()) >= min_rib_voxels and not sacrum)  # a rib label at the pelvis: the sacrum wins
        if bearing[-1]:  # the ribs' own numbers vote too: rib k meets vertebra Tk
            np.add.at(u.rib_votes, T1 + piece_numbers[1:] - 1, contact[k, 1:])
            u.anchor_sets.append((_rib_bearing_levels(u.rib_votes), big))
    skull_above = bool(cranium.size and units) and _centre_z(labels, cranium[0], grid) > units[0].top_mm
    if skull_above and _touching(units[0], labels, cranium, skull_reach).sum() > 0:
        units[0].anchors[0] = units[0].anchors.get(0, 0.0) + big
        if len(units) > 1 and units[1].top_mm > units[0].bottom_mm + 0.25 * (units[0].top_mm - units[0].bottom_mm):
            units[1].anchors[C2] = units[1].anchors.get(C2, 0.0) + big / 2  # the dens rises into C1
    if any(bearing):
        first, last = bearing.index(True), len(bearing) - 1 - bearing[::-1].index(True)
        for k, u in enumerate(units):  # soft: a rib the network missed must not move a vertebra out of T
            if k < first:
                u.anchor_sets.append((levels < T1, NO_RIB_BONUS))
            elif k > last:
                u.anchor_sets.append((levels > T12, NO_RIB_BONUS))
        if first > 0 or last < len(units) - 1:
            return True
    return any(u.anchors for u in units)


def _rib_bearing_levels(rib_votes: np.ndarray) -> np.ndarray:
    """The levels a vertebra met by rib pieces may have (``rib_votes``: contact by rib number, as
    ``Vertebra.rib_votes``): T1-T12, or T1-L1 when only rib 12 meets it. The floating rib 12 passes
    L1's transverse process: a held-out synthetic whole view's L1, met by 7 voxels of rib 12 at 4 mm,
    was held thoracic and, with the sacrum anchored, L5 was skipped (spine 0.675 -> 0.176)."""
    levels = np.arange(len(LEVELS))
    return (levels >= T1) & (levels <= (T12 if rib_votes[:T12].any() else L1))


def _rib_pieces(labels: np.ndarray, table: BoneTable, grid: Grid) -> RibPieces:
    """The rib label pieces long enough to be ribs (``RIB_PIECE_MM``), numbered 1..n (0 elsewhere),
    and each one's rib number (index 0: none); found once per column, whichever readings follow. Only they say a vertebra is thoracic: a transverse
    process of L1 the network named rib 12 (ten voxels, 16 mm) made L1 rib-bearing and moved a
    held-out abdomen's column up a level. ``_anchor`` gives each piece to the one vertebra it
    meets most (the head's): a real rib 12 passing within 8 mm of L1 made L1 rib-bearing too."""
    ribs = np.array([b.index for b in table.foreground() if b.name.startswith("rib_")])
    rib_numbers = [int(table[i].name.rsplit("_", 1)[1]) for i in ribs]
    step = np.linalg.norm(grid.matrix, axis=0)  # mm per index step, array order z, y, x
    kept: list[tuple[tuple, np.ndarray, int]] = []  # (box, mask in it, rib number)
    boxes = ndimage.find_objects(labels, max_label=int(ribs.max()) if ribs.size else 0)
    for index, number in zip(ribs, rib_numbers):
        box = boxes[index - 1] if index - 1 < len(boxes) else None
        if box is None:
            continue
        parts, count = ndimage.label(labels[box] == index, structure=FULL)
        for p, piece in enumerate(ndimage.find_objects(parts), start=1):
            extent = np.array([s.stop - s.start - 1 for s in piece], float) * step  # centre to centre, mm
            if np.linalg.norm(extent) >= RIB_PIECE_MM:
                inner = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, piece))
                kept.append((inner, parts[piece] == p, number))
    out = np.zeros(labels.shape, np.uint8 if len(kept) < 255 else np.int32)
    for n, (box, mask, _) in enumerate(kept, start=1):
        out[box][mask] = n
    return out, np.array([0] + [number for _, _, number in kept], int)


def _centre_z(labels: np.ndarray, index: int, grid: Grid) -> float:
    """Height (mm) of a label's centre (-inf when absent)."""
    coords = np.argwhere(labels == index)
    return float(grid.to_mm(coords.mean(axis=0))[2]) if len(coords) else -np.inf


def _piece_doubts(units: list[Vertebra]) -> list[float]:
    """For each unit below the first, how unlike a piece of the vertebra above it it is: its size
    against the whole vertebrae just above it (the last ``RECENT`` units that were not fragments),
    times its height below the unit above in pitches between those vertebrae. Just above, not the
    column's: a cervical vertebra is a quarter of a lumbar one, and against the whole column the
    skull's base and C1 looked like two pieces of one vertebra; nor the units beside it: specks
    beside specks (a sacrum in nineteen) looked whole."""
    z = np.array([u.centre[2] for u in units])
    sizes = np.array([u.size for u in units], float)
    first = sizes[:RECENT + 1]  # before two whole vertebrae are behind: the first few units
    first_reference = float(np.median(first[first >= np.median(first)]))
    first_pitch = float(np.median(np.abs(np.diff(z[:RECENT + 1])))) if len(units) > 1 else 1.0
    whole = [0] if sizes[0] >= SPECK_FRACTION * first_reference else []
    out = []
    for k in range(1, len(units)):
        if len(whole) >= 2:
            reference = float(np.median(sizes[whole[-RECENT:]]))
            pitch = float(np.median(np.abs(np.diff(z[whole[-RECENT - 1:]]))))
        else:
            reference, pitch = first_reference, first_pitch
        out.append(min(1.0, sizes[k] / (0.5 * reference)) * abs(z[k] - z[k - 1]) / max(pitch, 1e-6))
        if sizes[k] >= SPECK_FRACTION * reference:
            whole.append(k)
    return out


def _gaps(units: list[Vertebra]) -> list[float]:
    """Distances between consecutive units' centres, which say how many levels fit between them.
    To the sacrum it is the distance to where S1's centre lies, half a vertebra's height below the
    sacrum's top, when that is nearer: the sacrum's own centre lies far below S1, and the room to
    skip L5 found there moved two held-out synthetic abdomens' right L3-L5 up a level (spine
    0.090 -> 0.738 and 0.140 -> 0.759; no other of 205 images changed)."""
    gaps = [float(np.linalg.norm(units[i + 1].centre - units[i].centre)) for i in range(len(units) - 1)]
    if len(units) > 1 and units[-1].label_level == SACRUM:
        above, sacrum = units[-2], units[-1]
        s1_centre = sacrum.top_mm - 0.5 * (above.top_mm - above.bottom_mm)
        gaps[-1] = min(gaps[-1], abs(float(above.centre[2]) - s1_centre))
    return gaps


def decode(units: list[Vertebra]) -> tuple[list[int], float]:
    """Consecutive levels for the ordered vertebrae that agree best with their votes and anchors,
    and their total score (votes and anchors met, gaps paid).

    A unit may share the level of the unit above (a piece of one vertebra the grouping left apart)
    when it is a fragment or close for the pitch (``_piece_doubts`` under ``REPEAT_LIMIT``, or
    ``SAME_LABEL_REPEAT_LIMIT`` when the network gave both the same label), at a cost that grows
    with the doubt: every extra unit otherwise pushed the column a level away from
    its anchor, and a sacrum in nineteen specks moved a held-out abdomen's T10 to T3."""
    n_levels = len(LEVELS)
    if not units:
        return [], 0.0
    median_size = float(np.median([u.size for u in units]))
    gaps = _gaps(units)
    doubts = _piece_doubts(units)
    votes = np.zeros((len(units), n_levels))  # the network's and the ribs' word
    score = np.zeros((len(units), n_levels))  # ... and the anchors'
    for k, u in enumerate(units):
        weight = min(1.0, u.size / (0.5 * median_size)) if median_size else 1.0
        votes[k] = weight * u.votes / max(u.votes.sum(), 1.0)
        if u.rib_votes.any():
            votes[k] += RIB_VOTE_WEIGHT * weight * u.rib_votes / u.rib_votes.sum()
        score[k] = votes[k]
        for level, bonus in u.anchors.items():
            score[k, level] += bonus
        for allowed, bonus in u.anchor_sets:
            score[k, allowed] += bonus
    best = np.full((len(units), n_levels), -np.inf)
    back = np.zeros((len(units), n_levels), int)
    best[0] = score[0]
    for k in range(1, len(units)):
        pitch, doubt = _local(gaps, k - 1), doubts[k - 1]
        limit = SAME_LABEL_REPEAT_LIMIT if units[k].label_level == units[k - 1].label_level else REPEAT_LIMIT
        for b in range(n_levels):
            a = np.arange(b + 1)  # candidate previous levels, b itself when the vertebra is shared
            skipped = b - a - 1
            room = gaps[k - 1] >= (skipped + 1) * GAP_ROOM * pitch
            cand = np.where((skipped == 0) | ((skipped > 0) & room), best[k - 1, :b + 1] - GAP_COST * skipped, -np.inf)
            cand[b] = best[k - 1, b] - REPEAT_COST * doubt if doubt < limit else -np.inf
            j = int(np.argmax(cand))
            best[k, b] = cand[j] + score[k, b]
            back[k, b] = j
    levels = [int(np.argmax(best[-1]))]
    for k in range(len(units) - 1, 0, -1):
        levels.append(int(back[k, levels[-1]]))
    levels = levels[::-1]
    # a piece of the vertebra above adds no votes of its own to the reading's score: a vertebra
    # read in two pieces must not outscore it read whole (``order_spine`` compares readings)
    shared = sum(votes[k, levels[k]] for k in range(1, len(units)) if levels[k] == levels[k - 1])
    return levels, float(best[-1].max()) - shared


def _fit_levels(units: list[Vertebra]) -> list[Vertebra]:
    """More units than levels: the smallest folds into its nearer neighbour until they fit."""
    while len(units) > len(LEVELS):
        k = int(np.argmin([u.size for u in units]))
        j = k - 1 if k == len(units) - 1 or (k > 0 and abs(units[k - 1].centre[2] - units[k].centre[2])
                                              < abs(units[k + 1].centre[2] - units[k].centre[2])) else k + 1
        merged = _merge(units[min(j, k)], units[max(j, k)], None, None)
        units = units[:min(j, k)] + [merged] + units[max(j, k) + 1:]
    return units


@dataclass
class _Reading:
    """One way to read the column: its units, their levels, the decoding's score, whether an anchor
    fixed them, and the top unit given back to the skull (when the skull-base reading won)."""
    units: list[Vertebra]
    levels: list[int]
    score: float
    anchored: bool
    skull_piece: Optional[Vertebra] = None


def _read(units: list[Vertebra], labels: np.ndarray, grid: Grid, table: BoneTable, ribs: RibPieces,
          big: float) -> _Reading:
    """Decode the ordered units (``units`` is changed: anchors are added to them), with the skull's
    base read as C1 as the alternative when the top two units both touch the skull."""
    min_rib = max(3, int(round(0.05 / grid.voxel_ml)))  # a few voxels of rib, at least 0.05 ml
    skull_reach = max(1, int(np.ceil(SKULL_MM / grid.voxel_mm)))
    cranium = np.array([table.by_name("cranium").index])
    while len(units) > 1 and units[0].size < PARTIAL_FRACTION * units[1].size \
            and _touching(units[0], labels, cranium, skull_reach).sum():  # a fragment at the skull base is not C1
        units = [_merge(units[0], units[1], labels, grid)] + units[2:]
    skull_base = None
    if len(units) > 2 and all(_touching(u, labels, cranium, skull_reach).sum() for u in units[:2]):
        skull_base = _fit_levels([copy.deepcopy(u) for u in units[1:]])  # copies: _anchor adds to units
    units = _fit_levels(units)
    anchored = _anchor(units, labels, grid, table, ribs, min_rib, skull_reach, big)
    levels, score = decode(units)
    if skull_base is not None:  # the top unit may be the skull's base labelled C1 (two units at the skull)
        skull_anchored = _anchor(skull_base, labels, grid, table, ribs, min_rib, skull_reach, big)
        base_levels, base_score = decode(skull_base)
        if base_score - SKULL_BASE_COST > score:
            return _Reading(skull_base, base_levels, base_score - SKULL_BASE_COST, skull_anchored, units[0])
    return _Reading(units, levels, score, anchored)


def _relabelled(before: np.ndarray, label_level: int, level: int, column: np.ndarray, level_of: np.ndarray,
                read: np.ndarray) -> np.ndarray:
    """A unit's voxels under its decoded ``level``. In a unit renumbered by one level at most, voxels
    of its own label, and of a neighbouring level that the reading gives to no unit (the network's
    only piece of that vertebra), move by the unit's count: the network's boundary is kept. Every
    other voxel takes the unit's level. Overwriting whole units lost vertebrae whose only piece the
    grouping had joined to a neighbour (a unit of T1's and T2's pieces lost T1). Keeping every
    neighbouring label kept the network's errors on vertebrae read in units of their own, and where
    the network lost count (a cervical column labelled lumbar) its boundaries are no better than its
    names. Spine mean Dice on 205 held-out synthetic images: 0.4756 overwriting, 0.4858 keeping every
    neighbouring label (phantoms' spine 0.908 -> 0.895), 0.4861 this way (phantoms unchanged); the
    network alone 0.4743. ``read``: per level, whether the reading gives it to a unit."""
    shift = level - label_level
    if abs(shift) > 1:
        return np.full_like(before, column[level])
    own = level_of[before]
    valid = own >= 0
    moved = np.clip(np.where(valid, own, label_level) + shift, 0, len(LEVELS) - 1)
    near = valid & ((own == label_level) | ((np.abs(own - label_level) == 1) & ~read[moved]))
    return np.where(near, column[moved], column[level]).astype(before.dtype)


def order_spine(labels: np.ndarray, grid: Grid, table: BoneTable, report: ConsistencyReport) -> Optional[SpineResult]:
    """Relabel the column in place as one consecutive sequence; None when no vertebra is found.

    Units cut as doubles are a reading, not a fact: the column is decoded with and without the
    cuts, and the cuts stay only when they score more. A true L1 beside an under-labelled T12 and
    L2 is as big as two of them, and cutting it shifted every level above by one (a held-out
    synthetic abdomen)."""
    column = np.array([table.by_name(n).index for n in BONE_NAMES])
    level_of = np.full(256, -1, np.int16)
    level_of[column] = np.arange(len(column))
    units = _pieces(labels, column, grid)
    if not units:
        return None
    hips = np.array([table.by_name(n).index for n in ("hip_left", "hip_right")])
    units = _group_pieces(units, float(np.abs(grid.matrix[2]).max()), grid, labels, hips)
    units.sort(key=lambda u: -u.centre[2])
    units = [u for u, off in zip(units, _off_column(units, grid, labels.shape)) if not off]
    units = [u for u, alone in zip(units, _isolated(units)) if not alone]
    if not units:
        return None
    units = _fold_specks(units, labels, grid)
    units = _merge_split_pieces(units, labels, grid)
    cut = sorted(_split_doubles(units, labels, grid, level_of, hips), key=lambda u: -u.centre[2])
    big = 2.0 * min(len(cut), len(LEVELS)) + 4.0  # one hard anchor's bonus for both readings
    ribs = _rib_pieces(labels, table, grid)
    reading = _read([copy.deepcopy(u) for u in units] if len(cut) > len(units) else units, labels, grid, table,
                    ribs, big)
    if len(cut) > len(units):
        with_cuts = _read(cut, labels, grid, table, ribs, big)
        if with_cuts.score > reading.score:
            reading = with_cuts
    units, levels, anchored = reading.units, reading.levels, reading.anchored
    if reading.skull_piece is not None:
        base = reading.skull_piece
        labels.reshape(-1)[base.voxels] = table.by_name("cranium").index
        report.add("cranium", "fragment", f"took a piece labelled {LEVELS[base.label_level]} at the skull base "
                   f"({base.size} voxels): the column below fits C1 downward", base.size)
    agreement = sum(u.votes[level] for u, level in zip(units, levels)) / max(1.0, sum(u.votes.sum() for u in units))
    if not anchored and agreement < DECISIVE:  # no anchor in view and the network split: leave its labels
        return SpineResult(units, [u.label_level for u in units])
    flat = labels.reshape(-1)
    read = np.zeros(len(LEVELS), bool)
    read[levels] = True
    for u, level in zip(units, levels):
        before = flat[u.voxels]
        after = _relabelled(before, u.label_level, level, column, level_of, read)
        flat[u.voxels] = after
        changed = int(np.count_nonzero(before != after))
        if changed and changed >= 0.5 * u.size:
            report.add(BONE_NAMES[level], "renumbered", f"renumbered {LEVELS[u.label_level]} → {LEVELS[level]}",
                       changed)
    return SpineResult(units, levels)

"""Ribs: side from the body's midline, number from the vertebra each rib meets.

A rib is a connected piece of rib labels (split by label when two numbers share it evenly, as
when neighbouring rib heads touch at coarse spacing). Its side is the side of the midline its
centre lies on. Rib k's head meets vertebra Tk, so a rib whose medial end reaches the spine is
numbered by the height of that end against the decoded thoracic vertebrae, together with the
network's vote. The end's height is taken where the rib comes nearest the spine's axis in the
axial plane, not nearest the midline alone: the upper ribs' front ends come as near the midline
at the sternum, lower down, and ribs 1 and 2 were read below rib 3 (held-out synthetic 5704).
The numbers are given in one ordered assignment per side (numbers increase downwards, no number
twice). A rib that runs into the view's top slice has its head above the view: it is read at the
top slice's height, and such ribs are ordered by the network's numbers (held-out synthetic chest
views cut at T2: rib 2's piece read a few millimetres above rib 1's, and the two were swapped).
Pieces that do not reach the spine, specks, and pieces far above or below where the ribs' heads
are expected keep the network's number when no anchored rib on their side has it, and
otherwise take the number of the rib they continue: a rib whose head the network missed lies
within a few millimetres of its neighbours at the front of the chest, and taking the nearest
anchored rib's number there renumbered true ribs (held-out synthetic images, session 52).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..core.bones import BoneTable
from .changes import ConsistencyReport
from .geometry import Grid, Midline, label_boxes, offset, union_box
from .spine import LEVELS, T1

FULL = np.ones((3, 3, 3), bool)
HEAD_OFFSET_PITCH = 0.0  # rib k's medial end sits this many vertebra pitches above Tk's centre
MEETS_SPINE_MM = 45.0  # a medial end within this distance of the midline reaches the spine
#: What one vertebra pitch between a rib head and rib k's expected head costs, against a unanimous
#: network vote for k (1.0): a one-level disagreement leaves the network's number, two levels cost
#: what the vote is worth, more overrule it. At 2.0 half a pitch cost the whole vote, and a column
#: read one level off for a few vertebrae (held-out synthetic thorax 5702) renumbered every rib the
#: network had right: on 37 held-out synthetic images ribs 0.422 at 2.0, 0.468 at 0.5 (14 better,
#: 1 worse).
POSITION_WEIGHT = 0.5
SPLIT_SHARE = 0.3
CONTINUES_MM = 12.0
#: A rib head must be a piece of at least this many voxels (0.5 ml at the model's 4 mm) ...
MIN_HEAD_VOXELS = 8
#: ... lying no further than this many vertebra pitches beyond the expected heads of ribs 1 and 12.
#: Specks named rib beside the lumbar spine and the pelvis of a held-out synthetic abdomen (5601;
#: 1-20 voxels, 3-10 pitches below rib 12) were numbered 9-12 in the one ordered assignment, and the
#: real ribs above them were pushed up to 2-6.
HEAD_RANGE_PITCHES = 2.0


@dataclass
class Rib:
    coords: np.ndarray  # (n, 3) array indices
    mm: np.ndarray  # (n, 3) LPS mm
    votes: np.ndarray  # (2, 13): voxels per side (0 left, 1 right) and number 1..12
    side: str = ""
    head_z: float = 0.0
    head_dx: float = np.inf
    number: int = 0

    @property
    def voted_side(self) -> str:
        return "left" if self.votes[0].sum() >= self.votes[1].sum() else "right"

    @property
    def voted_number(self) -> int:
        return int(np.argmax(self.votes.sum(axis=0)))


def _rib_code(table: BoneTable) -> tuple[np.ndarray, np.ndarray]:
    """Per label value: side (0 left, 1 right, -1 not a rib) and number."""
    side = np.full(256, -1, np.int16)
    number = np.zeros(256, np.int16)
    for b in table.foreground():
        if b.name.startswith("rib_"):
            _, s, k = b.name.split("_")
            side[b.index] = 0 if s == "left" else 1
            number[b.index] = int(k)
    return side, number


def _ribs(labels: np.ndarray, grid: Grid, side_of: np.ndarray, number_of: np.ndarray) -> list[Rib]:
    outer = union_box(label_boxes(labels, int(np.flatnonzero(side_of >= 0).max())),
                      np.flatnonzero(side_of >= 0), labels.shape)
    if outer is None:
        return []
    is_rib = side_of[labels[outer]] >= 0
    parts, count = ndimage.label(is_rib, structure=FULL)
    out = []
    for p, box in enumerate(ndimage.find_objects(parts), start=1):
        if box is None:
            continue
        coords = np.argwhere(parts[box] == p) + offset(outer) + offset(box)
        values = labels[tuple(coords.T)]
        shares = np.bincount(values, minlength=256) / len(values)
        top = np.sort(shares)[::-1]
        groups = [coords] if top[1] < SPLIT_SHARE else [coords[values == v] for v in np.flatnonzero(shares)]
        for g in groups:
            vals = labels[tuple(g.T)]
            votes = np.zeros((2, 13))
            np.add.at(votes, (side_of[vals], number_of[vals]), 1)
            out.append(Rib(g, grid.to_mm(g), votes))
    return out


def number_ribs(labels: np.ndarray, grid: Grid, table: BoneTable, midline: Midline,
                thoracic_z: dict[int, float], report: ConsistencyReport) -> None:
    """Relabel ribs in place. ``thoracic_z``: rib number k -> height (mm) of vertebra Tk's centre,
    for the thoracic vertebrae the spine step decoded."""
    side_of, number_of = _rib_code(table)
    ribs = _ribs(labels, grid, side_of, number_of)
    if not ribs or not midline:
        return
    expected = _expected_heads(thoracic_z)
    pitch = _pitch(thoracic_z)
    top_slice, top_z = grid.top_slice()
    for r in ribs:
        x, y = midline.axis_at(r.mm[:, 2])
        from_spine = np.hypot(r.mm[:, 0] - x, r.mm[:, 1] - y)  # in the axial plane
        near = from_spine <= np.percentile(from_spine, 5)
        r.head_dx, r.head_z = float(np.abs(r.mm[:, 0] - x).min()), float(r.mm[near, 2].mean())
        if np.any(r.coords[:, grid.si_axis] == top_slice):
            r.head_z = top_z  # its head lies above the view: no height to read, its number orders it
        r.side = midline.side_of(r.mm.mean(axis=0))
    for side in ("left", "right"):
        heads = sorted((r for r in ribs if r.side == side and _is_head(r, expected, pitch)),
                       key=lambda r: (-r.head_z, r.voted_number))
        for r, k in zip(heads, _assign(heads, expected, pitch)):
            r.number = k
    anchored = [r for r in ribs if r.number]
    taken = {s: {r.number for r in anchored if r.side == s} for s in ("left", "right")}
    trees = {s: (cKDTree(np.concatenate([r.mm for r in anchored if r.side == s])),
                 np.concatenate([np.full(len(r.mm), r.number) for r in anchored if r.side == s]))
             for s in ("left", "right") if any(r.side == s for r in anchored)}
    for r in ribs:
        if r.number:
            continue
        if r.voted_number and r.voted_number not in taken.get(r.side, set()):
            r.number = r.voted_number  # the network's number, free on this side: nothing contradicts it
            continue
        if r.side in trees:
            dist, idx = trees[r.side][0].query(r.mm[:: max(1, len(r.mm) // 200)])
            if dist.min() <= CONTINUES_MM:
                r.number = int(trees[r.side][1][idx[np.argmin(dist)]])
                continue
        r.number = r.voted_number or 1
    for r in ribs:
        new = table.by_name(f"rib_{r.side}_{r.number}").index
        before = labels[tuple(r.coords.T)]
        labels[tuple(r.coords.T)] = new
        old_side, old_number = r.voted_side, r.voted_number
        changed = int(np.count_nonzero(before != new))
        if not changed or changed < 0.5 * len(before):
            continue
        name = table[new].name
        if old_side != r.side:
            report.add(name, "side", f"moved to the {r.side} side (was {table.by_name(f'rib_{old_side}_{old_number}').display_name})"
                       if old_number else f"moved to the {r.side} side", changed)
        if old_number != r.number:
            report.add(name, "renumbered", f"renumbered rib {old_number} → {r.number}", changed)


def _is_head(rib: Rib, expected: Optional[np.ndarray], pitch: float) -> bool:
    """Whether ``rib`` anchors a number: its medial end reaches the spine, it is no speck, and it
    lies within the rib cage's expected height. The others keep the network's number where it is
    free, or take the number of the rib they continue."""
    if rib.head_dx > MEETS_SPINE_MM or len(rib.mm) < MIN_HEAD_VOXELS:
        return False
    if expected is None:
        return True
    return expected[12] - HEAD_RANGE_PITCHES * pitch <= rib.head_z <= expected[1] + HEAD_RANGE_PITCHES * pitch


def _pitch(thoracic_z: dict[int, float]) -> float:
    if len(thoracic_z) >= 2:
        ks = np.array(sorted(thoracic_z))
        return float(abs(np.polyfit(ks, [thoracic_z[k] for k in ks], 1)[0]))
    return 22.0  # an adult thoracic vertebra with its disc, mm


def _expected_heads(thoracic_z: dict[int, float]) -> Optional[np.ndarray]:
    """Expected medial-end height of ribs 1..12 (index 0 unused), or None without vertebrae."""
    if not thoracic_z:
        return None
    ks = np.array(sorted(thoracic_z))
    zs = np.array([thoracic_z[k] for k in ks])
    if len(ks) >= 2:
        slope, icpt = np.polyfit(ks, zs, 1)
        fit = lambda k: float(np.interp(k, ks, zs)) if ks[0] <= k <= ks[-1] else slope * k + icpt  # noqa: E731
    else:
        fit = lambda k: zs[0] - 22.0 * (k - ks[0])  # noqa: E731
    pitch = _pitch(thoracic_z)
    return np.array([np.nan] + [fit(k) + HEAD_OFFSET_PITCH * pitch for k in range(1, 13)])


def _assign(heads: list[Rib], expected: Optional[np.ndarray], pitch: float) -> list[int]:
    """Strictly increasing numbers 1..12 for ribs ordered from the top, best by votes and position."""
    n = len(heads)
    if n == 0:
        return []
    score = np.zeros((n, 13))
    for i, r in enumerate(heads):
        votes = r.votes.sum(axis=0)
        score[i] = votes / max(votes.sum(), 1.0)
        if expected is not None:
            score[i, 1:] -= POSITION_WEIGHT * np.abs(r.head_z - expected[1:]) / pitch
    score[:, 0] = -np.inf
    if n > 12:  # more rib pieces than ribs: number each by itself
        return [int(np.argmax(s)) for s in score]
    best = np.full((n, 13), -np.inf)
    back = np.zeros((n, 13), int)
    best[0] = score[0]
    for i in range(1, n):
        for k in range(2, 13):
            j = int(np.argmax(best[i - 1, :k]))
            best[i, k] = best[i - 1, j] + score[i, k]
            back[i, k] = j
    ks = [int(np.argmax(best[-1]))]
    for i in range(n - 1, 0, -1):
        ks.append(int(back[i, ks[-1]]))
    return ks[::-1]


def thoracic_heights(centres_by_level: dict[int, np.ndarray]) -> dict[int, float]:
    """Rib number k -> height of Tk's centre, from the spine step's decoded levels."""
    return {level - T1 + 1: float(c[2]) for level, c in centres_by_level.items()
            if LEVELS[level].startswith("T")}

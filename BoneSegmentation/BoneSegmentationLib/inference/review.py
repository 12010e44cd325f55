"""Per-bone review ranking: which bones should a user check first after an automatic run?

Correcting 125 bones is slow; most are fine. This ranks them from the network's own
confidence and from simple anatomical checks that need no reference:

- ``missing``: not found although a touching neighbour (``bone_adjacency.csv``) was found well
  inside the field of view (so the bone is not merely cut off by the scan's extent);
- ``volume``: volume outside the table's plausible range (``volume_ml_low..high`` in bones.csv;
  the too-small check is skipped for a bone touching the field-of-view edge);
- ``side``: a left bone whose centre lies right of the midline, or the reverse (LPS: +x is the
  patient's left; the midline is the median x of the spine, else of all bone); forearm and hand
  bones, which cross the midline when the arms are crossed, are not checked against it; a hand
  bone is instead flagged when nearer the other hand's bones than its own hand's;
- ``order``: a vertebra whose centre is not below the one above it (C1 ... L5, sacrum, coccyx);
- ``fragmented``: the largest connected piece holds less than 90 % of the bone's voxels;
- ``confidence``: mean top-1 probability inside the bone below 0.6;
- ``anatomy``: the anatomical consistency step changed the bone ("renumbered T8 → T7", "moved to
  the right side", "took a stray piece", "removed: outside the body"): the user should check it.

Each finding adds a weight to the bone's score; every bone also gets ``0.5 * (1 - mean
confidence)`` so that, among bones without findings, the least certain come first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..consistency.spine import BONE_NAMES
from ..core.bones import BoneTable, default_table
from ..core.files import atomic_write_text

WEIGHTS = {"anatomy": 0.7, "missing": 1.0, "side": 0.9, "order": 0.8, "volume": 0.6, "fragmented": 0.4, "confidence": 0.3}
LOW_CONFIDENCE = 0.6
MIN_LARGEST_PIECE = 0.9
SPINE_ORDER = BONE_NAMES  # C1 ... L5, sacrum, coccyx


@dataclass
class ReviewItem:
    index: int
    name: str
    display_name: str
    score: float
    found: bool
    reasons: list[str] = field(default_factory=list)
    volume_ml: float = 0.0
    mean_confidence: Optional[float] = None
    centroid_lps_mm: Optional[list[float]] = None


def review_ranking(labels: sitk.Image, confidence: Optional[sitk.Image] = None,
                   table: Optional[BoneTable] = None, changes: Optional[dict[str, list[str]]] = None
                   ) -> list[ReviewItem]:
    """Rank all bones of the table, most in need of review first.

    ``labels`` may be on any grid (the model grid is cheapest); ``confidence``, when given, must
    share its grid; ``changes`` (bone name -> what the consistency step did) are listed first.
    """
    table = table or default_table()
    lab = sitk.GetArrayViewFromImage(labels)
    n = table.num_classes
    counts = np.bincount(lab.ravel(), minlength=n)[:n]
    found = [i for i in range(1, n) if counts[i] > 0]
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    conf = sitk.GetArrayViewFromImage(confidence) if confidence is not None else None
    if conf is not None and conf.shape != lab.shape:
        raise ValueError(f"confidence grid {conf.shape} differs from the label grid {lab.shape}")
    mean_conf = dict(zip(found, ndimage.mean(conf, lab, found))) if conf is not None and found else {}
    centres_idx = dict(zip(found, ndimage.center_of_mass(np.ones(lab.shape, np.uint8), lab, found))) if found else {}
    centres = {i: _physical(labels, c) for i, c in centres_idx.items()}
    boxes = ndimage.find_objects(lab, max_label=n - 1)
    touches_edge = {i: _touches_edge(boxes[i - 1], lab.shape) for i in found}

    items = {b.index: ReviewItem(b.index, b.name, b.display_name, 0.0, bool(counts[b.index] > 0))
             for b in table.foreground()}
    for i in found:
        it = items[i]
        it.volume_ml = round(float(counts[i]) * voxel_ml, 3)
        it.centroid_lps_mm = [round(float(v), 1) for v in centres[i]]
        if i in mean_conf:
            it.mean_confidence = round(float(mean_conf[i]), 3)

    def flag(i: int, kind: str, text: str) -> None:
        items[i].reasons.append(text)
        items[i].score += WEIGHTS[kind]

    by_name = {b.name: b.index for b in table.foreground()}
    for name, texts in (changes or {}).items():
        if name in by_name:
            flag(by_name[name], "anatomy", "; ".join(texts))
    neighbours = table.neighbours()
    for b in table.foreground():
        i = b.index
        if not counts[i]:
            inside = sorted(nb for nb in neighbours.get(b.name, ())
                            if counts[by_name[nb]] and not touches_edge[by_name[nb]])
            if inside:
                flag(i, "missing", f"missing, though its neighbour {table.by_name(inside[0]).display_name} was found")
            continue
        vol = items[i].volume_ml
        if b.volume_ml_high and vol > b.volume_ml_high:
            flag(i, "volume", f"volume {vol:.1f} ml above the plausible {b.volume_ml_low:g}-{b.volume_ml_high:g} ml")
        elif b.volume_ml_low and vol < b.volume_ml_low and not touches_edge[i]:
            flag(i, "volume", f"volume {vol:.1f} ml below the plausible {b.volume_ml_low:g}-{b.volume_ml_high:g} ml")
        piece = _largest_piece_fraction(lab, boxes[i - 1], i)
        if piece < MIN_LARGEST_PIECE:
            flag(i, "fragmented", f"in pieces: the largest holds {100 * piece:.0f} % of its voxels")
        mc = mean_conf.get(i)
        if mc is not None:
            items[i].score += 0.5 * (1.0 - float(mc))
            if mc < LOW_CONFIDENCE:
                flag(i, "confidence", f"low confidence (mean {mc:.2f})")

    midline = _midline(centres, table)
    for b in table.foreground():
        if b.laterality not in ("left", "right") or b.index not in centres:
            continue
        x = centres[b.index][0]
        if b.region == "hand" and (twin := _mirror_cluster(b, centres, table)) is not None:
            own, other = twin
            if np.linalg.norm(centres[b.index] - other) < np.linalg.norm(centres[b.index] - own):
                flag(b.index, "side", f"nearer the {'right' if b.laterality == 'left' else 'left'} "
                                      f"hand than its own")
        elif not _may_cross_midline(b) and midline is not None and (b.laterality == "left") != (x > midline):
            flag(b.index, "side", f"on the wrong side: centre {abs(x - midline):.0f} mm "
                                  f"{'right' if x < midline else 'left'} of the midline")
    previous = None
    for name in SPINE_ORDER:
        i = by_name.get(name)
        if i is None or i not in centres:
            continue
        if previous is not None and centres[i][2] >= centres[previous][2]:
            flag(i, "order", f"not below {table[previous].display_name} (vertebrae out of order)")
        previous = i

    ranked = sorted(items.values(), key=lambda it: (-it.score, it.index))
    for it in ranked:
        it.score = round(it.score, 3)
    return ranked


def _physical(image: sitk.Image, centre_zyx) -> np.ndarray:
    return np.array(image.TransformContinuousIndexToPhysicalPoint([float(c) for c in centre_zyx[::-1]]))


def _touches_edge(box, shape) -> bool:
    return box is not None and any(s.start == 0 or s.stop == n for s, n in zip(box, shape))


def _largest_piece_fraction(lab: np.ndarray, box, index: int) -> float:
    mask = lab[box] == index
    pieces, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return 1.0
    sizes = np.bincount(pieces.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def _may_cross_midline(bone) -> bool:
    """Forearms and hands cross the midline when the arms are crossed (a posture of the paper)."""
    return bone.region == "hand" or bone.name.startswith(("radius_", "ulna_"))


def _mirror_cluster(bone, centres: dict[int, np.ndarray], table: BoneTable):
    """Mean centres of the other found bones of the same hand and of the other hand."""
    sides = {}
    for lat in ("left", "right"):
        pts = [centres[b.index] for b in table.foreground()
               if b.laterality == lat and b.region == "hand" and b.index in centres and b.index != bone.index]
        sides[lat] = np.mean(pts, axis=0) if pts else None
    own, other = sides[bone.laterality], sides["right" if bone.laterality == "left" else "left"]
    return None if own is None or other is None else (own, other)


def _midline(centres: dict[int, np.ndarray], table: BoneTable) -> Optional[float]:
    spine = [c[0] for i, c in centres.items() if table[i].eval_group == "spine"]
    xs = spine or [c[0] for c in centres.values()]
    return float(np.median(xs)) if xs else None


def write_review(items: list[ReviewItem], path: Path, model: str = "", overwrite: bool = False) -> Path:
    """Write the ranking as JSON (atomically; refuses to replace a file unless ``overwrite``)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite to replace it")
    doc = {"about": "bones ranked for review, most suspicious first (see BoneSegmentationLib.review)",
           "model": model, "coordinate_system": "LPS (mm)",
           "flagged": sum(1 for it in items if it.reasons), "bones": [asdict(it) for it in items]}
    return atomic_write_text(path, json.dumps(doc, indent=1))


def summary_lines(items: list[ReviewItem], limit: int = 10) -> list[str]:
    """Short lines for the flagged bones, for an overview or a console."""
    return [f"{it.display_name}: {'; '.join(it.reasons)}" for it in items if it.reasons][:limit]

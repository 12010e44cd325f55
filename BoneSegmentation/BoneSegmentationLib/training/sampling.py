"""Patch sampling: balanced (every class equally likely to be in a patch) or uniform.

Balanced sampling, as in the paper (and nnU-Net's foreground oversampling taken to all
classes): pick a class uniformly among those present in the training set, then a case that
contains it, then one of its stored voxel locations (precomputed once per case), and centre the
patch there. Small bones (hands) are then seen as often as the femur.

Hard negatives: balanced sampling centres patches on bones, so what looks like bone and is not
(contrast-filled heart and aorta, oral contrast, calcified cartilage, the table, metal) is seen only
where it happens to lie beside one. With ``hard_negative_share`` that share of patches is centred on
such voxels instead (``bright_background_locations``): the network called 4.9 % of a real chest
slab's heart and vessels bone, and synthetic arterial crops reproduce it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MAX_LOCATIONS_PER_CLASS = 1000


def class_locations(labels: np.ndarray, num_classes: int, rng: np.random.Generator,
                    max_per_class: int = MAX_LOCATIONS_PER_CLASS) -> dict[int, np.ndarray]:
    """Up to ``max_per_class`` voxel coordinates (z, y, x) of every class present (background too)."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = {}
    for c in np.nonzero(counts)[0]:
        idx = order[starts[c]:starts[c + 1]]
        if len(idx) > max_per_class:
            idx = rng.choice(idx, max_per_class, replace=False)
        out[int(c)] = np.stack(np.unravel_index(idx, labels.shape), axis=1).astype(np.int32)
    return out


def bright_background_locations(image: np.ndarray, labels: np.ndarray, threshold: float, rng: np.random.Generator,
                                 clearance: int = 2, max_locations: int = MAX_LOCATIONS_PER_CLASS) -> np.ndarray:
    """Up to ``max_locations`` voxels (z, y, x) labelled background yet brighter than ``threshold``
    (in the image's units) and more than ``clearance`` voxels from any bone: not the blurred rim of a
    bone, but what only looks like one."""
    near_bone = (ndimage.binary_dilation(labels > 0, np.ones((3, 3, 3), bool), iterations=clearance)
                 if clearance else labels > 0)
    idx = np.flatnonzero((image > threshold) & ~near_bone)
    if len(idx) > max_locations:
        idx = rng.choice(idx, max_locations, replace=False)
    return np.stack(np.unravel_index(np.sort(idx), labels.shape), axis=1).astype(np.int32)


class PatchSampler:
    """Draws (case index, patch corner) pairs for patches of ``patch`` voxels."""

    def __init__(self, shapes: list[tuple[int, int, int]], locations: list[dict[int, np.ndarray]],
                 patch: tuple[int, int, int], mode: str = "balanced", seed: int = 0,
                 classes: list[int] | None = None, groups: list[str] | None = None,
                 group_weights: dict[str, float] | None = None,
                 hard_negatives: list[np.ndarray] | None = None, hard_negative_share: float = 0.0):
        """``groups`` (one name per case) with ``group_weights``: first draw a group by weight, then
        sample balanced within it, so that a source of data (say, images from real anatomy) gets
        its share of patches however many classes the other sources add. ``hard_negatives`` (one
        location array per case) with ``hard_negative_share``: that share of the patches is centred
        on one of them instead, in a case drawn uniformly among those that have any (with a share
        of 0 the random stream is the one it always was)."""
        if not 0.0 <= hard_negative_share < 1.0:
            raise ValueError(f"hard negative share must be in [0, 1), got {hard_negative_share}")
        if mode not in ("balanced", "uniform"):
            raise ValueError(f"sampling mode must be 'balanced' or 'uniform', not {mode!r}")
        self.shapes, self.locations, self.patch, self.mode = shapes, locations, np.array(patch), mode
        self.rng = np.random.default_rng(seed)
        present = sorted({c for loc in locations for c in loc if c != 0})
        self.classes = classes if classes is not None else present
        self.cases_with = {c: [i for i, loc in enumerate(locations) if c in loc] for c in self.classes}
        self.classes = [c for c in self.classes if self.cases_with[c]]
        self.hard_share = hard_negative_share
        self.hard = hard_negatives if hard_negative_share > 0 else None
        self.cases_with_hard = [i for i, h in enumerate(self.hard or []) if len(h)]
        if self.hard is not None and len(self.hard) != len(shapes):
            raise ValueError(f"{len(self.hard)} hard-negative arrays for {len(shapes)} cases")
        self.groups = None
        if groups is not None and group_weights:
            if len(groups) != len(shapes):
                raise ValueError(f"{len(groups)} group names for {len(shapes)} cases")
            names = [g for g in group_weights if group_weights[g] > 0 and g in groups]
            if not names:
                raise ValueError(f"no case belongs to a group with a positive weight: {group_weights}")
            w = np.array([group_weights[g] for g in names], float)
            self.groups = (names, w / w.sum(), {
                g: {c: [i for i in self.cases_with[c] if groups[i] == g] for c in self.classes} for g in names})

    def _corner(self, shape, centre) -> np.ndarray:
        hi = np.maximum(np.array(shape) - self.patch, 0)
        jitter = self.rng.integers(-self.patch // 4, self.patch // 4 + 1)
        return np.clip(np.asarray(centre) - self.patch // 2 + jitter, 0, hi)

    def draw(self) -> tuple[int, np.ndarray, int]:
        """(case, corner zyx, class the patch was centred on: -1 for uniform, 0 for a hard negative)."""
        if self.hard is not None and self.rng.random() < self.hard_share and self.cases_with_hard:
            case = self.cases_with_hard[int(self.rng.integers(len(self.cases_with_hard)))]
            locs = self.hard[case]
            return case, self._corner(self.shapes[case], locs[int(self.rng.integers(len(locs)))]), 0
        if self.mode == "uniform" or not self.classes:
            case = int(self.rng.integers(len(self.shapes)))
            hi = np.maximum(np.array(self.shapes[case]) - self.patch, 0)
            return case, np.array([self.rng.integers(h + 1) for h in hi]), -1
        if self.groups is not None:
            names, weights, with_class = self.groups
            g = names[int(self.rng.choice(len(names), p=weights))]
            classes = [c for c in self.classes if with_class[g][c]]
            c = classes[int(self.rng.integers(len(classes)))]
            cases = with_class[g][c]
        else:
            c = self.classes[int(self.rng.integers(len(self.classes)))]
            cases = self.cases_with[c]
        case = cases[int(self.rng.integers(len(cases)))]
        locs = self.locations[case][c]
        centre = locs[int(self.rng.integers(len(locs)))]
        return case, self._corner(self.shapes[case], centre), c

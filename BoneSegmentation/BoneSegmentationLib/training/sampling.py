"""Patch sampling: balanced (every class equally likely to be in a patch) or uniform.

Balanced sampling, as in the paper (and nnU-Net's foreground oversampling taken to all
classes): pick a class uniformly among those present in the training set, then a case that
contains it, then one of its stored voxel locations (precomputed once per case), and centre the
patch there. Small bones (hands) are then seen as often as the femur.
"""

from __future__ import annotations

import numpy as np

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


class PatchSampler:
    """Draws (case index, patch corner) pairs for patches of ``patch`` voxels."""

    def __init__(self, shapes: list[tuple[int, int, int]], locations: list[dict[int, np.ndarray]],
                 patch: tuple[int, int, int], mode: str = "balanced", seed: int = 0,
                 classes: list[int] | None = None, groups: list[str] | None = None,
                 group_weights: dict[str, float] | None = None):
        """``groups`` (one name per case) with ``group_weights``: first draw a group by weight, then
        sample balanced within it, so that a source of data (say, images from real anatomy) gets
        its share of patches however many classes the other sources add."""
        if mode not in ("balanced", "uniform"):
            raise ValueError(f"sampling mode must be 'balanced' or 'uniform', not {mode!r}")
        self.shapes, self.locations, self.patch, self.mode = shapes, locations, np.array(patch), mode
        self.rng = np.random.default_rng(seed)
        present = sorted({c for loc in locations for c in loc if c != 0})
        self.classes = classes if classes is not None else present
        self.cases_with = {c: [i for i, loc in enumerate(locations) if c in loc] for c in self.classes}
        self.classes = [c for c in self.classes if self.cases_with[c]]
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
        """(case, corner zyx, class the patch was centred on or -1 for uniform)."""
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

"""Bones grown into their bright edge voxels on the input grid (on by default; ``--no-grow-edges``).

The network labels bone on a 4 mm grid, and its boundary, brought to a finer CT, falls inside the
bone: the outermost layer of voxels, half bone and half soft tissue, is left out (half of the
reference bone the bundled model missed on a real abdomen was that layer). Here each bone grows,
one input voxel per step and up to one voxel of the model's grid from where it was, into
background voxels at least ``EDGE_HU`` bright, taking the label of the bone it grows from. Growth
follows bright voxels only (a dark gap stops it), and each axis takes as many steps as the model's
voxel holds of its spacing: none along an axis as coarse as the model's grid, whose boundary is
the network's own (on 4 mm phantoms one 4 mm step took foreground 0.88 -> 0.77).

An edge is thin; a contrast-filled vessel or the heart is a thick bright region. Unlabelled
voxels of at least ``BRIGHT_HU`` that hold a box ``THICK_MM`` from its centre along each axis (a
morphological opening) are not grown into, so a bone the network wrongly put in the aorta, or a
vertebra against it, does not fill the lumen. Both thresholds were chosen on held-out synthetic
images, never on the real test scans (docs/real-ct-training.md, "Bone edges, not vessels"). What
is left: where the network's bone fills most of a narrow vessel, the rest of the lumen is thinner
than the box and is still grown into.

Cost: slabs of slices, each cut across the body to the labelled bones' box and the reach round
it (the steps, and the two radii the opening reads), voxel for voxel the answer of the whole
cross-section; after the first step only the last step's voxels are read (``grow_from_front``),
not the box. ``benchmarks/bench_edges.py`` on a phantom chest: 0.41x of the whole-slab growth at
0.8 x 0.8 x 1 mm, 0.21x at 0.75 x 0.75 x 0.33 mm (where the box alone gave 0.54x and 0.44x).
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

EDGE_HU = 250.0  # a voxel at least this bright beside a bone is part of its edge (soft tissue ~40, bone 150-1500)
BRIGHT_HU = 150.0  # contrast-filled vessels and enhancing organs are brighter than this, soft tissue is not
THICK_MM = 2.0  # an unlabelled bright region holding a box this far from its centre is a lumen, not an edge
SLAB_SLICES = 32  # input slices grown together (at least twice the reach, plus it each side): bounds the memory


def growth_steps(spacing_xyz: tuple[float, float, float], model_mm: float) -> tuple[int, int, int]:
    """Steps of one voxel each array axis (z, y, x) takes: as many as a model voxel holds of the
    axis's spacing, none along an axis as coarse as the model's grid."""
    return tuple(int(np.floor(model_mm / s + 1e-6)) if s < model_mm - 1e-6 else 0 for s in spacing_xyz[::-1])


def thick_radii(spacing_xyz: tuple[float, float, float], thick_mm: float = THICK_MM) -> tuple[int, int, int]:
    """Half-widths (z, y, x) in voxels of the box a lumen holds: ``thick_mm``, at least one voxel."""
    return tuple(max(1, int(round(thick_mm / s))) for s in spacing_xyz[::-1])


def thick_bright(bright: np.ndarray, radii: tuple[int, int, int]) -> np.ndarray:
    """The parts of ``bright`` that hold a box of ``radii`` (an opening, one axis at a time: a box
    is the product of three lines, and a running minimum or maximum along a line costs the same
    whatever its length). The array's ends count as bright, so a vessel leaving the scan stays
    thick there."""
    out = bright.view(np.uint8)
    for axis, r in enumerate(radii):
        out = ndimage.minimum_filter1d(out, 2 * r + 1, axis=axis, mode="constant", cval=1)
    for axis, r in enumerate(radii):
        out = ndimage.maximum_filter1d(out, 2 * r + 1, axis=axis, mode="constant", cval=0)
    return out.view(bool) & bright


def grow_from_front(part: np.ndarray, bright: np.ndarray, steps: tuple[int, int, int]) -> None:
    """Grow the labels of ``part`` (in place) into its ``bright`` background voxels: at each step a
    background voxel takes the largest label in its 3 x 3 x 3 box (the box flat along an axis
    whose ``steps`` are spent), for as many steps as the longest axis allows.

    The first step reads the whole array (every bone's surface is the front); after it only the
    voxels taken by the step before can be the reason a voxel is taken: a voxel left at step k-1
    had no label in its box then, and the box only narrows. So each later step reads the
    neighbours of the last step's voxels, not the array: the same labels, voxel for voxel."""
    shape = part.shape
    front = None
    for step in range(max(steps)):
        open_axes = [step < n for n in steps]
        if front is None:  # the first step: a box's maximum, one axis at a time (3 + 3 + 3 reads, not 27)
            grown = part
            for axis, is_open in enumerate(open_axes):
                if is_open:
                    grown = ndimage.maximum_filter1d(grown, 3, axis=axis, mode="constant", cval=0)
            front = np.flatnonzero((part == 0) & (grown > 0) & bright)
            if not front.size:
                return
            part.flat[front] = grown.flat[front]
            del grown
            continue
        where = np.unravel_index(front, shape)
        values = part.flat[front]
        reached, labels = [], []
        for offset in itertools.product(*[(-1, 0, 1) if is_open else (0,) for is_open in open_axes]):
            if not any(offset):
                continue
            near = [w + o for w, o in zip(where, offset)]
            inside = np.ones(front.size, bool)
            for n, size in zip(near, shape):
                inside &= (n >= 0) & (n < size)
            flat = np.ravel_multi_index([n[inside] for n in near], shape)
            free = bright.flat[flat] & (part.flat[flat] == 0)
            reached.append(flat[free])
            labels.append(values[inside][free])
        reached, labels = np.concatenate(reached), np.concatenate(labels)
        if not reached.size:
            return
        order = np.lexsort((labels, reached))  # by voxel, then label: each voxel's largest label last
        reached, labels = reached[order], labels[order]
        last = np.append(reached[1:] != reached[:-1], True)
        front = reached[last]
        part.flat[front] = labels[last]


def grow_into_edges(labels: sitk.Image, ct: sitk.Image, model_mm: float,
                    threshold_hu: float = EDGE_HU) -> tuple[sitk.Image, int]:
    """``labels`` (on ``ct``'s grid, from a model grid of ``model_mm`` voxels) grown into the
    bright voxels at each bone's edge, not into thick bright regions (vessels), and how many
    voxels that added."""
    if labels.GetSize() != ct.GetSize():
        raise ValueError(f"labels {labels.GetSize()} and CT {ct.GetSize()} are not one grid")
    steps = growth_steps(ct.GetSpacing(), model_mm)
    if not any(steps):
        return labels, 0
    out = sitk.GetArrayViewFromImage(labels)
    hu = sitk.GetArrayViewFromImage(ct)
    radii = thick_radii(ct.GetSpacing())
    reach = [n + 2 * r for n, r in zip(steps, radii)]  # the growth's reach and the opening's, per axis
    depth = max(SLAB_SLICES, 2 * reach[0])  # the margins read twice cost at most as much as the slab
    added = 0
    grown_all = sitk.GetArrayFromImage(labels)
    for z0 in range(0, out.shape[0], depth):
        z1 = min(z0 + depth, out.shape[0])
        lo, hi = max(0, z0 - reach[0]), min(out.shape[0], z1 + reach[0])
        rows = np.nonzero(out[lo:hi].any(axis=(0, 2)))[0]
        if not len(rows):
            continue
        cols = np.nonzero(out[lo:hi].any(axis=(0, 1)))[0]
        # across the body only the labelled bones' box and the reach round it: a voxel that can be
        # grown into lies within steps of a bone, and the opening that judges it reads 2 radii further
        (y0, y1), (x0, x1) = ((max(0, int(a[0]) - m), min(size, int(a[-1]) + 1 + m))
                              for a, m, size in ((rows, reach[1], out.shape[1]), (cols, reach[2], out.shape[2])))
        part = out[lo:hi, y0:y1, x0:x1].copy()
        block = hu[lo:hi, y0:y1, x0:x1]
        bright = (block >= threshold_hu) & ~thick_bright((block >= BRIGHT_HU) & (part == 0), radii)
        grow_from_front(part, bright, steps)
        core = part[z0 - lo:z0 - lo + (z1 - z0)]
        added += int(np.count_nonzero(core != out[z0:z1, y0:y1, x0:x1]))
        grown_all[z0:z1, y0:y1, x0:x1] = core
    result = sitk.GetImageFromArray(grown_all)
    result.CopyInformation(labels)
    return result, added

"""A vertebra is mirror-symmetric about the body's midline; a contrast-filled aorta beside it is not.

The descending aorta runs down the left side of the thoracic vertebral bodies, about as wide as
they are; in an arterial scan its lumen (300-600 HU) is as bright as bone, and the network can
read it as a second column of vertebral bodies (a real early arterial chest CT, not the test set:
22 % of its aorta labelled T4-T8). What a vertebra holds on one side of its midline it holds on
the other, within a few millimetres; the aorta's mirror image is lung, the azygos vein or the
oesophagus. So vertebra-labelled voxels in front of the arches whose mirror image, within
``TOLERANCE_MM``, holds neither a vertebra label nor bone-like CT (``SUPPORT_HU``) are not
vertebra, and a thick piece of them (``MIN_ML`` or more, ``THICK_MM`` across) as bright as a
contrast lumen (median ``LUMEN_HU``) goes to the background. Bone-like CT on the mirror side keeps
a vertebra the network found only half of, and the lumen's brightness a dim half of an old one;
without the CT nothing is judged.

The mirror plane is fitted per axial slice, turned as well as shifted (a patient lying turned on
the table, a rotated scoliotic vertebra): the one under which the arches (the vertebra labels
behind the bodies, where no vessel runs) and the bright bone around them overlap
their mirror image most, over neighbouring slices; then the median over a few vertebrae, so that
a slice whose labels are mostly aorta cannot pull the plane onto the aorta. Slices within that
median's reach of the column's ends are not judged: their plane is fitted from one side only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np
from scipy import ndimage

from ..core.bones import BoneTable
from .changes import ConsistencyReport
from .geometry import Grid
from .spine import vertebra_indices

TOLERANCE_MM = 4.0  # a vertebra's two sides match within this (asymmetry, a plane off by a voxel)
MIN_ML = 3.0  # asymmetric pieces smaller than this are left (osteophytes, a rib head's joint)
THICK_MM = 12.0  # ... and thinner ones (a spill along the body's edge)
BONE_HU = 250.0  # bright bone behind the bodies (the arches' cortex) helps fit the plane
SUPPORT_HU = 160.0  # the mirror side counts as bone from this (an old, thin vertebral body at 4 mm: 100-250 HU)
LUMEN_HU = 200.0  # a piece goes only when its median is at least this: a contrast-filled lumen, not a dim half-vertebra
SLICES_MM = 12.0  # a slice's plane is fitted to the slices within this height
TURN_MM = 48.0  # ... and its turn to the slices within this height (a body turns as a whole, a scoliotic spine slowly)
MEDIAN_MM = 24.0  # then the median turn and place over this height either side
MARGIN_MM = 48.0  # the rule works in a square this much wider than the column on each side (the band, a turn's corners)
BAND_MM = 24.0  # bright voxels this far either side of the arches help fit the plane (a scapula further out does not)
ANGLES_DEG = (0.0, -6.0, 6.0, -12.0, 12.0, -18.0, 18.0, -24.0, 24.0, -30.0, 30.0)
CUT = 0.6  # the arches' zone starts this far from the column's front to its back (the aorta reaches past the bodies' middle)
FULL = np.ones((3, 3, 3), bool)


def _patient_view(array: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """``array`` as a view in one frame whatever the image's orientation: slices from the feet up,
    rows from the front to the back, columns from the patient's right to left; and the voxel
    size along those axes (mm). The same answer for any array orientation, voxel for voxel."""
    axes = (grid.array_axis(2), grid.array_axis(1), grid.array_axis(0))
    if len(set(axes)) != 3:
        raise ValueError("the grid's axes do not run along the patient's")
    view = np.transpose(array, axes)
    flips = tuple(slice(None, None, -1 if grid.matrix[patient, axis] < 0 else 1)
                  for patient, axis in zip((2, 1, 0), axes))
    return view[flips], np.linalg.norm(grid.matrix, axis=0)[list(axes)]


@lru_cache(maxsize=64)
def _turn_map(rows: int, cols: int, degrees: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a slice of ``rows`` x ``cols`` turned by ``degrees`` about its centre: each output
    voxel's nearest source row and column, and which of them fall inside the slice. The fit and
    the mirror turn several stacks of one shape by the same angles, so it is worked out once."""
    theta = np.radians(degrees)
    c, s = np.cos(theta), np.sin(theta)
    y, x = np.mgrid[:rows, :cols].astype(float)
    cy, cx = (rows - 1) / 2.0, (cols - 1) / 2.0
    source_y = np.floor(c * (y - cy) + s * (x - cx) + cy + 0.5).astype(int)
    source_x = np.floor(-s * (y - cy) + c * (x - cx) + cx + 0.5).astype(int)
    ok = (source_y >= 0) & (source_y < rows) & (source_x >= 0) & (source_x < cols)
    return source_y[ok], source_x[ok], ok


def _rotate(stack: np.ndarray, degrees: float) -> np.ndarray:
    """Each slice turned by ``degrees`` about the slice's centre, to the nearest voxel (the same
    centre both ways, so a turn and its inverse bring a voxel back within one). One gather for
    all slices: ``ndimage.rotate`` works slice by slice and cost seconds on a 2 mm grid."""
    if not degrees:
        return stack
    source_y, source_x, ok = _turn_map(stack.shape[1], stack.shape[2], float(degrees))
    out = np.zeros_like(stack)
    out[:, ok] = stack[:, source_y, source_x]
    return out


def _behind(spine: np.ndarray) -> np.ndarray:
    """Per slice, the rows behind ``CUT`` of the way from the front of the slice's vertebra rows
    to their back (rows run to the patient's back): the arches, the spinous process and the ribs'
    backs, where no vessel runs."""
    rows = spine.any(axis=2)  # (slices, front-back)
    index = np.arange(spine.shape[1])
    front = np.where(rows, index, spine.shape[1]).min(axis=1)
    back = np.where(rows, index, -1).max(axis=1)
    cut = np.where(rows.any(axis=1), front + CUT * (back - front), np.inf)
    return np.broadcast_to((index[None, :] >= cut[:, None])[:, :, None], spine.shape)


def _near_column(mask: np.ndarray, arches: np.ndarray, half_width: float) -> np.ndarray:
    """``mask`` within ``half_width`` columns of each slice's median arch column (slices without
    arches take the median of all): a scapula or an arm held to one side is its own mirror image."""
    columns = np.full(len(arches), np.nan)
    for k in np.flatnonzero(arches.any(axis=(1, 2))):
        columns[k] = np.median(np.nonzero(arches[k])[1])
    columns = np.where(np.isnan(columns), np.nanmedian(columns), columns)
    x = np.arange(mask.shape[2])
    return mask & (np.abs(x[None, None, :] - columns[:, None, None]) <= half_width)


def _scores(sym: np.ndarray) -> np.ndarray:
    """Per slice of ``sym`` (slices, rows, columns), how much of the mask its mirror image about
    each column plane c covers, at index 2c (half columns included): an autoconvolution per row."""
    n, _, width = sym.shape
    scores = np.zeros((n, 2 * width - 1))
    for z in range(n):
        rows = sym[z][sym[z].any(axis=1)].astype(np.float32)
        if len(rows):
            spectrum = np.fft.rfft(rows, 2 * width, axis=1)
            scores[z] = np.fft.irfft(spectrum * spectrum, 2 * width, axis=1)[:, : 2 * width - 1].sum(axis=0)
    return scores


def _symmetric_parts(spine: np.ndarray, bright: np.ndarray, band: float) -> np.ndarray:
    """What the plane is fitted to, in the patient frame (rows run to the back): the arches and
    the bright voxels behind the bodies near them."""
    behind = _behind(spine)
    arches = spine & behind
    return arches | _near_column(bright & behind, arches, band)


def _fit_planes(spine: np.ndarray, bright: np.ndarray, band: float, windows: tuple[int, int, int],
                angles: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the turn (an index into ``angles``) and, in the slice turned so, the doubled
    column 2c of the plane the arches are most nearly mirrored about (-1: no plane near).
    ``windows``: the half heights, in slices, over which place and turn are fitted and medians taken."""
    near_window, turn_window, median = windows
    n, width = len(spine), spine.shape[2]
    best_wide = np.full(n, -1.0)
    best_angle = np.zeros(n, int)
    best_c2 = np.full(n, -1)
    best_near = np.zeros(n)
    for a, degrees in enumerate(angles):
        scores = _scores(_symmetric_parts(_rotate(spine, degrees), _rotate(bright, degrees), band))
        near = ndimage.uniform_filter1d(scores, 2 * near_window + 1, axis=0, mode="constant")
        wide = ndimage.uniform_filter1d(scores, 2 * turn_window + 1, axis=0, mode="constant").max(axis=1)
        better = wide > best_wide + 1e-6
        c2 = np.argmax(near, axis=1)
        best_wide[better], best_angle[better], best_c2[better] = wide[better], a, c2[better]
        best_near[better] = near[np.arange(n), c2][better]
    found = best_near > 0.5 / (2 * near_window + 1)
    if not found.any():
        return best_angle, np.full(n, -1)
    # medians of the turn and of the plane's distance from the slice's centre (the same in every turned frame);
    # slices with nothing near take the nearest fit
    nearest = ndimage.distance_transform_edt(~found, return_distances=False, return_indices=True)[0]
    size = 2 * median + 1
    degrees = ndimage.median_filter(np.asarray(angles, float)[best_angle][nearest], size=size, mode="nearest")
    offset2 = ndimage.median_filter((best_c2 - (width - 1))[nearest], size=size, mode="nearest")
    centre2 = np.rint(offset2 + width - 1).astype(int)
    centre2[ndimage.uniform_filter1d(found.astype(float), size, mode="nearest") == 0] = -1
    return np.array([angles.index(d) for d in degrees]), centre2


def _mirrored(support: np.ndarray, spine: np.ndarray, angle: np.ndarray, centre2: np.ndarray,
              angles: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``support`` reflected, slice by slice, across each slice's plane (True where a slice has
    no plane: nothing is judged there), and the zone behind the bodies in that slice's frame."""
    mirrored = np.ones_like(support)
    behind = np.ones_like(support)
    width = support.shape[2]
    for a in np.unique(angle):
        ks = np.flatnonzero((angle == a) & (centre2 >= 0))
        if not len(ks):
            continue
        turned = _rotate(support[ks], angles[a])
        flipped = np.zeros_like(turned)
        for i, k in enumerate(ks):
            source = centre2[k] - np.arange(width)  # column x mirrors onto 2c - x
            ok = (source >= 0) & (source < width)
            flipped[i][:, ok] = turned[i][:, source[ok]]
        mirrored[ks] = _rotate(flipped, -angles[a])
        behind[ks] = _rotate(np.ascontiguousarray(_behind(_rotate(spine[ks], angles[a]))), -angles[a])
    return mirrored, behind


def _column_box(spine: np.ndarray, steps: np.ndarray) -> tuple[slice, slice, slice]:
    """The slices holding vertebra labels, and in them the square around the column grown by
    ``MARGIN_MM`` (centred on it, so a turn about the square's centre keeps what is near the column)."""
    zs = np.flatnonzero(spine.any(axis=(1, 2)))
    box = [slice(zs[0], zs[-1] + 1)]
    # rows, then columns, holding the column: from the 0.5th to the 99.5th percentile of its voxels,
    # so that a stray speck far off does not widen the square
    counts = [spine.sum(axis=(0, 2 - a)) for a in (0, 1)]
    found = [np.searchsorted(np.cumsum(c), [0.005 * c.sum(), 0.995 * c.sum()]) for c in counts]
    centres = [(f[0] + f[-1]) / 2.0 for f in found]
    half = max((f[-1] - f[0]) / 2.0 * st for f, st in zip(found, steps[1:])) + MARGIN_MM  # mm, square in mm
    for centre, step, n in zip(centres, steps[1:], spine.shape[1:]):
        reach = int(np.ceil(half / step))
        box.append(slice(max(0, int(np.floor(centre)) - reach), min(n, int(np.ceil(centre)) + reach + 1)))
    return tuple(box)


def remove_asymmetric_vertebra(labels: np.ndarray, grid: Grid, table: BoneTable, ct_hu: Optional[np.ndarray],
                               body: Optional[np.ndarray], report: ConsistencyReport) -> int:
    """Vertebra-labelled pieces without a mirror image across the midline to the background, in
    place (see the module docstring); returns the voxels removed. ``body`` (optional) keeps the
    CT table's bright shells out of the fit."""
    if ct_hu is None:
        return 0
    vertebrae = vertebra_indices(table)
    view, steps = _patient_view(labels, grid)  # a view: edits reach ``labels``
    spine_all = np.isin(view, vertebrae)
    if not spine_all.any():
        return 0
    box = _column_box(spine_all, steps)  # the column and what lies within MARGIN_MM of it: all the rule reads
    spine = spine_all[box]
    hu = _patient_view(ct_hu, grid)[0][box]
    inside = _patient_view(body, grid)[0][box] if body is not None else True
    bright = (hu >= BONE_HU) & inside
    square = abs(steps[1] - steps[2]) < 1e-3 * steps[2]
    angles = ANGLES_DEG if square else (0.0,)  # turns need square voxels
    windows = tuple(max(1, int(round(mm / steps[0]))) for mm in (SLICES_MM, TURN_MM, MEDIAN_MM))
    angle, centre2 = _fit_planes(spine, bright, BAND_MM / steps[2], windows, angles)
    # a slice within the median's reach of the column's end (the scan's edge, L5 above the
    # sacrum) has its plane from one side only, turned wrong on a turned body: not judged
    ends = windows[2]
    centre2[:ends] = -1
    centre2[max(ends, len(centre2) - ends):] = -1
    mirrored, behind = _mirrored(spine | ((hu >= SUPPORT_HU) & inside), spine, angle, centre2, angles)
    reach = (max(1, int(round(TOLERANCE_MM / steps[1]))), max(1, int(round(TOLERANCE_MM / steps[2]))))
    near = ndimage.maximum_filter(mirrored, size=(1, 2 * reach[0] + 1, 2 * reach[1] + 1))
    lone = spine & ~near & ~behind
    if not lone.any():
        return 0
    pieces, _ = ndimage.label(lone, structure=FULL)
    voxel_ml = float(np.prod(steps)) / 1000.0
    thick = ndimage.binary_erosion(lone, np.ones((1, 3, 3), bool),
                                   iterations=max(1, int(THICK_MM / 2 / max(steps[1], steps[2]))))
    sub = view[box]
    removed: dict[int, int] = {}
    for p, piece in enumerate(ndimage.find_objects(pieces), start=1):
        if piece is None:
            continue
        mask = pieces[piece] == p
        if mask.sum() * voxel_ml < MIN_ML or not (thick[piece] & mask).any() or np.median(hu[piece][mask]) < LUMEN_HU:
            continue
        values, counts = np.unique(sub[piece][mask], return_counts=True)
        for v, n in zip(values, counts):
            removed[int(v)] = removed.get(int(v), 0) + int(n)
        sub[piece][mask] = 0
    for v, n in removed.items():
        report.add(table[v].name, "removed", f"{n} voxels removed: no mirror image across the midline "
                   "(a vessel beside the spine)", n)
    return sum(removed.values())

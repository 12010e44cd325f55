"""The patient's body in a CT, to tell bone from the table and the air around it.

Per axial slice, what is denser than ``BODY_HU``, with holes filled (the lungs: a lean patient's
chest wall is thinner than a table top), minus the table: pieces of the slice (8-connected) made
of voxels in dense runs thinner than ``TABLE_MM`` front to back that span more than
``PLATE_WIDTH_MM`` left to right. That is a plate (the table top and its shells, a cushion's cover,
a blanket), flat or curved: real tables are dished and often two shells, so a straight left-right
run would miss them. A finger or a thumb is as thin but narrow, so it stays body, and where the
patient lies directly on the table the run continues into the body and stays.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .geometry import Grid

BODY_HU = -300.0  # denser than this is patient (or table)
TABLE_MM = 15.0  # dense shells thinner than this front to back ...
PLATE_WIDTH_MM = 150.0  # ... and wider than this left to right are a table top, not patient
SLICE_MM = 4.0  # the body is found on slices about this far apart ...
ACROSS_MM = 2.0  # ... and on left-right groups about this wide


def _line(axis: int) -> np.ndarray:
    structure = np.zeros((3, 3, 3), bool)
    index = [1, 1, 1]
    for k in range(3):
        index[axis] = k
        structure[tuple(index)] = True
    return structure


def run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """Length (voxels) of the run of True along ``axis`` that each voxel belongs to (0 outside)."""
    runs, _ = ndimage.label(mask, structure=_line(axis))
    sizes = np.bincount(runs.ravel()).astype(np.int32)
    sizes[0] = 0
    return sizes[runs]


def in_slice_structure(axis: int) -> np.ndarray:
    """4-connectivity within each slice across ``axis``, none between slices."""
    structure = np.zeros((3, 3, 3), bool)
    middle = [slice(None)] * 3
    middle[axis] = 1
    structure[tuple(middle)] = ndimage.generate_binary_structure(2, 1)
    return structure


def fill_holes_per_slice(mask: np.ndarray, axis: int) -> np.ndarray:
    """Holes filled in every slice across ``axis`` (what no path within the slice joins to the
    slice's edge), in one labelling of the background with in-slice connectivity."""
    structure = in_slice_structure(axis)
    background, _ = ndimage.label(~mask, structure=structure)
    edge = np.zeros(mask.shape, bool)
    for a in range(3):
        if a == axis:
            continue
        for end in (0, -1):
            index = [slice(None)] * 3
            index[a] = end
            edge[tuple(index)] = True
    outside = np.zeros(int(background.max()) + 1, bool)
    outside[np.unique(background[edge])] = True
    outside[0] = False
    return mask | ~outside[background] & (background > 0)


def body_mask(ct_hu: np.ndarray, grid: Grid) -> np.ndarray:
    """Boolean mask of the body on the CT's grid (see the module docstring)."""
    body, factors, _ = coarse_body_mask(ct_hu, grid)
    for axis, factor in enumerate(factors):
        if factor > 1:
            body = body.repeat(factor, axis=axis)
    return body[:ct_hu.shape[0], :ct_hu.shape[1], :ct_hu.shape[2]]


def coarse_body_mask(ct_hu: np.ndarray, grid: Grid) -> tuple[np.ndarray, tuple[int, int, int],
                                                               tuple[float, float, float]]:
    """The body on a coarser grid where that costs no thin structure, with the factor per array
    axis and where coarse voxel 0 lies (in CT voxels) per axis.

    Slices are taken ``SLICE_MM`` apart (a table is the same in every slice); neighbours left to
    right are merged (any dense voxel of the group) to about ``ACROSS_MM``; front to back stays at
    full resolution, where thickness is measured. Subsampling in-plane instead would miss a
    one-voxel shell on every other row and break a curved shell into short pieces."""
    steps = np.linalg.norm(grid.matrix, axis=0)
    si_axis, ap_axis, lr_axis = grid.si_axis, grid.array_axis(1), grid.array_axis(0)
    factors = [1, 1, 1]
    factors[si_axis] = max(1, int(SLICE_MM // steps[si_axis]))
    factors[lr_axis] = max(1, int(ACROSS_MM // steps[lr_axis]))
    offsets = [0.0, 0.0, 0.0]
    offsets[lr_axis] = (factors[lr_axis] - 1) / 2  # a merged group's middle
    dense = _dense_merged(ct_hu, si_axis, factors[si_axis], lr_axis, factors[lr_axis])
    steps = steps * np.array(factors, float)
    filled = fill_holes_per_slice(dense, si_axis)
    thin = filled & (run_lengths(filled, ap_axis) * steps[ap_axis] < TABLE_MM)
    body = filled & ~wide_pieces(thin, si_axis, lr_axis, PLATE_WIDTH_MM / steps[lr_axis])
    return body, tuple(factors), tuple(offsets)


def _dense_merged(ct_hu: np.ndarray, si_axis: int, si_step: int, lr_axis: int, lr_step: int) -> np.ndarray:
    """``ct_hu > BODY_HU`` on every ``si_step``-th slice, with ``lr_step`` neighbours along
    ``lr_axis`` merged by 'any' (memory: only the merged array is allocated)."""
    take = [slice(None)] * 3
    take[si_axis] = slice(None, None, si_step)
    slices = ct_hu[tuple(take)]
    first = [slice(None)] * 3
    first[lr_axis] = slice(0, None, lr_step)
    dense = slices[tuple(first)] > BODY_HU
    for offset in range(1, lr_step):
        part = [slice(None)] * 3
        part[lr_axis] = slice(offset, None, lr_step)
        more = slices[tuple(part)] > BODY_HU
        into = [slice(None)] * 3
        into[lr_axis] = slice(0, more.shape[lr_axis])
        dense[tuple(into)] |= more
    return dense


def wide_pieces(mask: np.ndarray, slice_axis: int, across_axis: int, min_voxels: float) -> np.ndarray:
    """The pieces of ``mask`` (8-connected within each slice across ``slice_axis``) whose extent
    along ``across_axis`` is at least ``min_voxels``."""
    structure = np.zeros((3, 3, 3), bool)
    middle = [slice(None)] * 3
    middle[slice_axis] = 1
    structure[tuple(middle)] = True
    pieces, n = ndimage.label(mask, structure=structure)
    wide = np.zeros(n + 1, bool)
    for k, box in enumerate(ndimage.find_objects(pieces), start=1):
        if box is not None:
            wide[k] = box[across_axis].stop - box[across_axis].start >= min_voxels
    return wide[pieces]


def body_image(ct: sitk.Image) -> sitk.Image:
    """The body found once on ``ct``'s own grid (coarsened as ``coarse_body_mask`` says), as a
    uint8 image placed in physical space, so that every grid the pipeline uses (the model's, the
    input's) samples the same body."""
    mask, factors, offsets = coarse_body_mask(sitk.GetArrayViewFromImage(ct), Grid.of(ct))
    image = sitk.GetImageFromArray(mask.view(np.uint8))
    spacing = np.array(ct.GetSpacing(), float)
    direction = np.array(ct.GetDirection(), float).reshape(3, 3)
    image.SetSpacing(tuple(spacing * np.array(factors[::-1], float)))
    image.SetDirection(ct.GetDirection())
    image.SetOrigin(tuple(np.array(ct.GetOrigin(), float) + direction @ (np.array(offsets[::-1]) * spacing)))
    return image


def body_on_grid(ct: sitk.Image, grid_image: sitk.Image, body: sitk.Image | None = None) -> np.ndarray:
    """``body_image(ct)`` (or ``body``, found before) as a mask on ``grid_image``'s grid: a voxel is
    body when most of it is, by linear interpolation, and beyond the last measured slice the
    nearest one holds."""
    body = body_image(ct) if body is None else body
    on_grid = sitk.Resample(body, grid_image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
    return sitk.GetArrayViewFromImage(on_grid) >= 0.5


def keep_inside_body(labels: sitk.Image, body: sitk.Image) -> tuple[sitk.Image, int]:
    """``labels`` with every voxel outside ``body`` (from ``body_image``) set to background, and
    how many bone voxels that removed.

    The step removes bone outside the body on the model's grid; labels brought from that coarse
    grid to a finer input grid by nearest neighbour reach up to half a model voxel (2 mm) beyond
    it, into the air at the skin and round the table. Nearest sampling here: on the CT's own grid
    each voxel simply belongs to its coarse group, and a uint8 mask costs a quarter of a float one."""
    inside = sitk.Resample(body, labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8, True)
    labels_view, inside_view = sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(inside)
    removed = sum(int(np.count_nonzero(labels_view[z:z + 16][inside_view[z:z + 16] == 0]))  # slabs: no
                  for z in range(0, labels_view.shape[0], 16))  # full-size temporaries
    if not removed:
        return labels, 0
    return sitk.Mask(labels, inside, 0, 0), removed

"""``make_consistent``: the anatomical consistency step, run after the network (on by default,
``--no-anatomy`` to skip). Order matters: stray pieces first (so that every bone is one piece
when the spine is counted), then a vessel labelled as vertebrae beside the column (``symmetry``,
before it can pose as a column of its own), then a pelvis or thigh at the ribs' height renamed
(``regions``: a vertebra so named joins the column before it is counted) and a forearm or hand
touching the trunk renamed (``limbs``), the spine next (its
levels number the ribs and give the midline; the lumbar boundaries then move to the discs), then
ribs and the other paired bones; last, each bone's cancellous core is filled where the network
left only its cortex (``marrow``)."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..core.bones import BoneTable, default_table
from .body import body_image, body_mask, body_on_grid
from .changes import ConsistencyReport
from .discs import cut_at_discs
from .geometry import Grid, Midline
from .limbs import relabel_distal_limb_on_trunk
from .marrow import fill_cores
from .pieces import clean_pieces
from .regions import relabel_lower_body_among_ribs
from .ribs import number_ribs, thoracic_heights
from .sides import fix_sides
from .spine import order_spine
from .symmetry import remove_asymmetric_vertebra


def make_consistent(labels: np.ndarray, grid_image: sitk.Image, ct_hu: Optional[np.ndarray] = None,
                    table: Optional[BoneTable] = None,
                    body: Optional[np.ndarray] = None) -> tuple[np.ndarray, ConsistencyReport]:
    """A consistent copy of ``labels`` (array of ``grid_image``'s grid) and what changed.

    ``ct_hu``, the CT in HU on the same grid, lets the step remove bone outside the body or
    without any bone-like intensity; without it only the labels' own geometry is used. ``body``,
    the patient on the same grid, is found from ``ct_hu`` when not given.
    """
    t0 = time.perf_counter()
    table = table or default_table()
    grid = Grid.of(grid_image)
    if labels.shape != grid.shape or (ct_hu is not None and ct_hu.shape != labels.shape):
        raise ValueError(f"labels {labels.shape}, CT {None if ct_hu is None else ct_hu.shape} and grid "
                         f"{grid.shape} differ")
    out = np.ascontiguousarray(labels).copy()
    report = ConsistencyReport()
    if body is None and ct_hu is not None:
        body = body_mask(ct_hu, grid)
    clean_pieces(out, table, report, grid.voxel_ml, ct_hu, body)
    remove_asymmetric_vertebra(out, grid, table, ct_hu, body, report)
    relabel_lower_body_among_ribs(out, grid, table, ct_hu, report)
    relabel_distal_limb_on_trunk(out, grid, table, ct_hu, report)
    spine = order_spine(out, grid, table, report)
    cut_at_discs(out, grid, table, report)
    centres = spine.centres_by_level() if spine else {}
    midline = Midline(list(centres.values()))
    number_ribs(out, grid, table, midline, thoracic_heights(centres), report)
    fix_sides(out, grid, table, midline, report)
    report.cores_filled = fill_cores(out, grid, table, ct_hu)
    report.seconds = time.perf_counter() - t0
    return out, report


def make_consistent_on_grid(labels: np.ndarray, grid_image: sitk.Image, ct: sitk.Image,
                            table: Optional[BoneTable] = None,
                            body: Optional[sitk.Image] = None) -> tuple[np.ndarray, ConsistencyReport]:
    """``make_consistent`` with the CT given as an image on any grid: it is resampled (linear, air
    outside) onto the labels' grid first. The one way the pipeline, tools and benchmarks run it.

    The body is found on the CT's own grid and then carried to the labels' grid: a table's shells
    are a few millimetres thick, and sampled at a 4 mm model grid they break into short pieces
    that no longer look like one wide plate. ``body``: ``body_image(ct)`` when already found."""
    hu = sitk.GetArrayFromImage(sitk.Resample(ct, grid_image, sitk.Transform(), sitk.sitkLinear, -1024.0,
                                              sitk.sitkFloat32))
    body = body_image(ct) if body is None else body
    return make_consistent(labels, grid_image, hu, table, body_on_grid(ct, grid_image, body))


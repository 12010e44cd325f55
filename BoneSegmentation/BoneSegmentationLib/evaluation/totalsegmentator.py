"""Evaluation against TotalSegmentator outputs (v2 "total" task) as a reference.

The reference is mapped onto the bone table (``core/totalsegmentator.py``: S1 into the sacrum,
its one sternum against our three parts merged) and compared by physical position, so a
reference stored with another direction matrix still lines up. Only bones both have are scored;
everything else TotalSegmentator labels (organs, vessels, costal cartilage) is background.

Beyond Dice it measures the two failures a synthetic-only model shows on real scans: bone
predicted inside the heart and great vessels, and bone predicted outside the body (table, air).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..consistency.body import BODY_HU, TABLE_MM
from ..consistency.spine import vertebra_indices
from ..core.bones import BoneTable, default_table
from ..core.totalsegmentator import merge_sternum, ts_index, ts_to_table
from .metrics import Evaluation, evaluate_arrays

REFERENCE = "TotalSegmentator v2 total (sternum parts merged, S1 in sacrum)"
NOT_BONE = ("heart", "aorta", "inferior_vena_cava", "superior_vena_cava")
GAP_MM = 8.0  # a chest wall broken by gaps narrower than this (between ribs, at the skin) still encloses the lungs
LUNG_MM = 50.0  # holes this wide are lungs (filled); a table's hollow core or a blanket's gap is flatter
MIN_PIECE_CM2 = 10.0  # an arm's cross-section is far larger; bits of table and cables are smaller


def reference_on_grid(reference: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """TotalSegmentator indices resampled (nearest) onto ``grid`` by physical position."""
    ref = sitk.Resample(reference, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(ref)


def _disk(diameter_mm: float, sy: float, sx: float) -> np.ndarray:
    """An in-plane structuring element: the ellipse of pixels within ``diameter_mm`` / 2 (at least 1 px)."""
    ry, rx = (max(1, int(round(diameter_mm / 2 / s))) for s in (sy, sx))
    return np.add.outer((np.arange(-ry, ry + 1) / ry) ** 2, (np.arange(-rx, rx + 1) / rx) ** 2) <= 1


def body_mask(ct: sitk.Image) -> sitk.Image:
    """The patient on the CT's grid, per axial slice (LPS): what is denser than -300 HU, with its
    thick holes filled (the lungs), after an opening that removes shells thinner than ``TABLE_MM``
    (table tops, cushions' covers, blankets), every piece of at least ``MIN_PIECE_CM2`` (trunk and
    arms beside it), holes filled, and grown back by the opening's radius within the dense voxels
    (skin).

    The lungs are filled before the opening because a lean patient's chest wall, ribs included, is
    thinner than a table top: opened as a ring it vanished, and on a synthetic thorax 14 % of
    the true bone fell "outside the body". Gaps narrower than ``GAP_MM`` are closed to find the
    holes, and only holes that hold a disk of ``LUNG_MM`` are filled, so the flat hollow core of a
    two-shell table stays open and the table still goes."""
    oriented = sitk.DICOMOrient(ct, "LPS")
    arr = sitk.GetArrayFromImage(oriented)
    sx, sy = oriented.GetSpacing()[:2]
    disk, gap = _disk(TABLE_MM, sy, sx), _disk(GAP_MM, sy, sx)
    min_voxels = MIN_PIECE_CM2 * 100 / (sx * sy)
    out = np.zeros(arr.shape, bool)
    for z in range(arr.shape[0]):
        dense = arr[z] > BODY_HU
        holes = ndimage.binary_fill_holes(ndimage.binary_closing(dense, gap, border_value=0)) & ~dense
        if holes.any():  # wide holes only: those with a point LUNG_MM / 2 from their edge
            pieces, n = ndimage.label(holes)
            depth = ndimage.distance_transform_edt(holes, sampling=(sy, sx))
            wide = np.asarray(ndimage.maximum(depth, pieces, np.arange(1, n + 1))) >= LUNG_MM / 2
            dense |= np.concatenate([[False], wide])[pieces]
        pieces, n = ndimage.label(ndimage.binary_opening(dense, disk))
        if n:
            sizes = np.bincount(pieces.ravel())
            keep = np.nonzero(sizes >= min_voxels)[0]
            body = ndimage.binary_fill_holes(np.isin(pieces, keep[keep > 0]))
            out[z] = ndimage.binary_fill_holes(ndimage.binary_dilation(body, disk) & dense | body)
    oriented = sitk.GetImageFromArray(out.astype(np.uint8))
    oriented.CopyInformation(sitk.DICOMOrient(ct, "LPS"))
    return sitk.Resample(oriented, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def bone_in_vessels(prediction: np.ndarray, ts_labels: np.ndarray) -> float:
    """Fraction of the heart, aorta and venae cavae voxels (TotalSegmentator classes, same grid)
    that ``prediction`` calls bone: the "not bone what is not bone" figure, on real references
    and on the synthesiser's deformed source labels alike."""
    vessels = np.isin(ts_labels, [ts_index(n) for n in NOT_BONE])
    return float(np.count_nonzero(vessels & (prediction > 0)) / max(1, np.count_nonzero(vessels)))


@dataclass(frozen=True)
class RealScanEvaluation(Evaluation):
    """The paper's table against a TotalSegmentator reference, with the not-bone measures."""

    reference: str = REFERENCE
    bone_in_vessels: float = float("nan")  # share of the heart, aorta and venae cavae voxels called bone
    bone_outside_body: Optional[float] = None  # share of predicted bone outside the patient (needs the CT)
    level_agreement: float = float("nan")  # share of the reference's vertebrae mostly named right


def evaluate_against_totalsegmentator(prediction: sitk.Image, reference: sitk.Image, ct: sitk.Image | None = None,
                                      table: BoneTable | None = None) -> RealScanEvaluation:
    """The paper's table for the bones the reference holds, plus the not-bone measures (see
    ``RealScanEvaluation``); ``bone_outside_body`` only when the CT is given."""
    table = table or default_table()
    ts = reference_on_grid(reference, prediction)
    ref = ts_to_table(table)[ts]
    pred = merge_sternum(sitk.GetArrayFromImage(prediction), table)
    outside = None
    if ct is not None:
        body = reference_on_grid(body_mask(ct), prediction).astype(bool)
        bone = pred > 0
        outside = float(np.count_nonzero(bone & ~body) / max(1, np.count_nonzero(bone)))
    return RealScanEvaluation(**vars(evaluate_arrays(pred, ref, table)), bone_in_vessels=bone_in_vessels(pred, ts),
                              bone_outside_body=outside, level_agreement=vertebra_level_agreement(pred, ref, table))


def vertebra_level_agreement(pred: np.ndarray, ref: np.ndarray, table: BoneTable) -> float:
    """Of the reference's vertebrae, the fraction whose voxels the prediction mostly labels with
    the same level (identity, not outline)."""
    levels = vertebra_indices(table)
    hits = total = 0
    for c in levels:
        m = ref == c
        if np.count_nonzero(m) < 20:
            continue
        votes = np.bincount(pred[m][pred[m] > 0], minlength=table.num_classes)
        total += 1
        hits += int(votes.any() and int(np.argmax(votes)) == c)
    return hits / total if total else float("nan")


def not_bone_lines(result: RealScanEvaluation) -> list[str]:
    lines = [f"Bone predicted inside heart, aorta and venae cavae: {100 * result.bone_in_vessels:.2f} % of their voxels"]
    if result.bone_outside_body is not None:
        lines.append(f"Bone predicted outside the body (table, air): {100 * result.bone_outside_body:.2f} % "
                     "of predicted bone")
    lines.append(f"Vertebra level agreement: {result.level_agreement:.2f}")
    return lines

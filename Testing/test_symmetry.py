"""A vessel labelled as vertebrae beside the column goes; the vertebrae stay (consistency/symmetry.py).

Known answers on the procedural phantom's label map at 4 mm (the model's grid): a bright tube the
width of an aorta, labelled as the vertebra beside it, is removed; the phantom's own vertebrae are
never touched, whatever the array's orientation, with the body turned on the table, and with half
a vertebra left unlabelled where the CT shows its bone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from BoneSegmentationLib.consistency import symmetry
from BoneSegmentationLib.consistency.changes import ConsistencyReport
from BoneSegmentationLib.consistency.geometry import Grid
from BoneSegmentationLib.consistency.step import make_consistent
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.synthetic.phantom import make_phantom

TABLE = default_table()
VERTEBRAE = [b.index for b in TABLE.foreground() if b.name.startswith("vertebra_")]
LUMEN_HU = 420.0  # an early arterial aorta, as bright as the bone beside it


def _phantom(turn_deg: float = 0.0, seed: int = 3):
    """LPS labels (array), CT in HU (array) and label image of a 4 mm phantom, the body turned by
    ``turn_deg`` about its long axis when asked (as a patient lying turned on the table)."""
    ct, lab, _ = make_phantom(seed, spacing=4.0, partial=False)
    ct, lab = sitk.DICOMOrient(ct, "LPS"), sitk.DICOMOrient(lab, "LPS")
    if turn_deg:
        centre = ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ct.GetSize()])
        turn = sitk.Euler3DTransform(centre, 0.0, 0.0, math.radians(turn_deg))
        ct = sitk.Resample(ct, ct, turn, sitk.sitkLinear, -1024.0)
        lab = sitk.Resample(lab, lab, turn, sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(lab), sitk.GetArrayFromImage(ct).astype(np.float32), lab


def _add_aorta(labels: np.ndarray, hu: np.ndarray, top: str = "vertebra_T4", bottom: str = "vertebra_T9",
               radius: float = 3.5, lumen_hu: float = LUMEN_HU) -> np.ndarray:
    """A bright tube down the left front of the vertebral bodies from ``top`` to ``bottom``
    (LPS array: +x the patient's left, small y the front), each slice of it labelled as the
    vertebra in that slice: the network's error on a real arterial chest CT. Returns its mask.
    It lies beside the bodies' front half, as the descending aorta does; the ribs meet the
    vertebrae further back (the phantom's at the bodies' side, so its centre is the bodies' front)."""
    tube = np.zeros(labels.shape, bool)
    z_lo = np.argwhere(labels == TABLE.by_name(bottom).index)[:, 0].min()
    z_hi = np.argwhere(labels == TABLE.by_name(top).index)[:, 0].max()
    yy, xx = np.mgrid[: labels.shape[1], : labels.shape[2]]
    for z in range(z_lo, z_hi + 1):
        spine = np.isin(labels[z], VERTEBRAE)
        if not spine.any():
            continue
        ys, xs = np.nonzero(spine)
        front = ys.min()
        body = spine & (yy <= front + 4)  # the body: the front rows of the vertebra
        by, bx = np.nonzero(body)
        cy, cx = front, bx.max() + radius + 1  # touching the body's left side
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & ~spine
        level = np.bincount(labels[z][spine]).argmax()
        labels[z][disk] = level
        hu[z][disk] = lumen_hu
        tube[z] = disk
    return tube


def _run(labels: np.ndarray, hu: np.ndarray, image: sitk.Image) -> tuple[np.ndarray, int, ConsistencyReport]:
    out = labels.copy()
    report = ConsistencyReport()
    removed = symmetry.remove_asymmetric_vertebra(out, Grid.of(image), TABLE, hu, hu > -500, report)
    return out, removed, report


@pytest.mark.parametrize("seed", [3, 0])
def test_the_phantoms_vertebrae_are_mirrored_and_kept(seed):
    labels, hu, image = _phantom(seed=seed)
    out, removed, report = _run(labels, hu, image)
    assert removed == 0 and report.changes == [] and np.array_equal(out, labels)


@pytest.mark.parametrize("keep", ["below", "above"])
def test_a_column_cut_by_the_scan_keeps_its_end_vertebrae(keep):
    """A scan that ends mid-column, the body turned -20 degrees: the slices near the column's ends
    have their plane fitted from one side only (at L5, above the sacrum, turned -30 degrees where
    the slices above fit +24, and 4 ml of L5 went before the mend), and are not judged."""
    labels, hu, image = _phantom(-20.0, seed=4)
    zs = np.flatnonzero(np.isin(labels, VERTEBRAE).any(axis=(1, 2)))
    cut = int(zs[0] + 0.5 * (zs[-1] - zs[0]))
    part = slice(0, cut) if keep == "below" else slice(cut, labels.shape[0])
    labels, hu = labels[part].copy(), hu[part].copy()
    out, removed, report = _run(labels, hu, image[:, :, part.start:part.stop])
    assert removed == 0 and report.changes == [] and np.array_equal(out, labels)
    # away from the ends the rule still works on the cut column
    tube = _add_aorta(labels, hu, *(("vertebra_T3", "vertebra_T6") if keep == "above" else ("vertebra_T11", "vertebra_L2")))
    out, _, _ = _run(labels, hu, image[:, :, part.start:part.stop])
    assert np.count_nonzero(out[tube] == 0) >= 0.6 * tube.sum()


@pytest.mark.parametrize("turn", [0.0, 20.0, -25.0])
def test_a_bright_tube_labelled_as_vertebrae_beside_the_column_goes_and_the_column_stays(turn):
    labels, hu, image = _phantom(turn)
    spine = np.isin(labels, VERTEBRAE)
    tube = _add_aorta(labels, hu)
    assert tube.sum() * 0.064 > 30  # ml: an aorta's length from T4 to T9
    out, removed, report = _run(labels, hu, image)
    lost = spine & (out != labels)
    seam = ndimage.binary_dilation(tube, np.ones((3, 3, 3), bool), iterations=2)
    assert not (lost & ~seam).any() and lost.sum() <= 0.002 * spine.sum()  # the column kept, but for a voxel at the seam
    assert np.count_nonzero(out[tube] == 0) >= 0.6 * tube.sum()  # most of the tube gone (its rim on the body may stay)
    assert removed == np.count_nonzero(out != labels)
    assert all(c.kind == "removed" and c.bone.startswith("vertebra_T") for c in report.changes)


def test_a_column_curving_sideways_is_followed():
    """Scoliosis: each slice shifted sideways along a curve (up to 24 mm); the column stays whole
    and the tube beside it still goes."""
    labels, hu, image = _phantom()
    for z in range(labels.shape[0]):
        shift = int(round(6 * math.sin(2 * math.pi * z / labels.shape[0])))  # voxels of 4 mm
        labels[z] = np.roll(labels[z], shift, axis=1)
        hu[z] = np.roll(hu[z], shift, axis=1)
    spine = np.isin(labels, VERTEBRAE)
    tube = _add_aorta(labels, hu)
    out, _, _ = _run(labels, hu, image)
    lost = spine & (out != labels)
    assert lost.sum() <= 0.002 * spine.sum()
    assert np.count_nonzero(out[tube] == 0) >= 0.6 * tube.sum()


def test_other_orientations_of_the_array_give_the_same_answer():
    labels, hu, image = _phantom()
    _add_aorta(labels, hu)
    expected, _, _ = _run(labels, hu, image)
    assert np.count_nonzero(expected != labels) > 0
    for orientation in ("RAI", "ASL", "LPI", "RPS"):
        lab = sitk.GetImageFromArray(labels)
        lab.CopyInformation(image)
        ct = sitk.GetImageFromArray(hu)
        ct.CopyInformation(image)
        lab, ct = sitk.DICOMOrient(lab, orientation), sitk.DICOMOrient(ct, orientation)
        out, _, _ = _run(sitk.GetArrayFromImage(lab), sitk.GetArrayFromImage(ct), lab)
        back = sitk.GetImageFromArray(out)
        back.CopyInformation(lab)
        assert np.array_equal(sitk.GetArrayFromImage(sitk.DICOMOrient(back, "LPS")), expected), orientation


def test_a_dim_piece_is_kept_whatever_its_mirror():
    """A piece darker than a contrast lumen (the labelled half of an old vertebra in a native scan,
    its other half under the mirror side's threshold too) is not taken for a vessel."""
    labels, hu, image = _phantom()
    tube = _add_aorta(labels, hu, lumen_hu=symmetry.LUMEN_HU - 40)
    out, removed, _ = _run(labels, hu, image)
    assert removed == 0 and np.array_equal(out, labels) and tube.sum() > 500


def test_without_the_ct_nothing_is_judged():
    labels, hu, image = _phantom()
    _add_aorta(labels, hu)
    out = labels.copy()
    assert symmetry.remove_asymmetric_vertebra(out, Grid.of(image), TABLE, None, None, ConsistencyReport()) == 0
    assert np.array_equal(out, labels)


def test_half_a_vertebra_left_unlabelled_is_kept_where_the_ct_shows_its_bone():
    """The network found only the left half of T5-T8: their mirror images hold no label, but the
    CT there is bone, so the halves it found stay (and no plane is pulled onto the halves)."""
    labels, hu, image = _phantom()
    grid = Grid.of(image)
    centre_x = np.argwhere(np.isin(labels, VERTEBRAE))[:, 2].mean()
    halves = np.zeros(labels.shape, bool)
    for name in ("vertebra_T5", "vertebra_T6", "vertebra_T7", "vertebra_T8"):
        halves |= labels == TABLE.by_name(name).index
    x = np.arange(labels.shape[2])[None, None, :]
    labels[halves & (x < centre_x - 0.5)] = 0  # the patient's right half (LPS: small x) unlabelled
    assert grid.array_axis(0) == 2
    out, removed, _ = _run(labels, hu, image)
    assert removed == 0 and np.array_equal(out, labels)


def test_the_step_removes_the_tube_and_says_so_for_the_review():
    labels, hu, image = _phantom()
    tube = _add_aorta(labels, hu)
    out, report = make_consistent(labels, image, hu)
    assert np.count_nonzero(out[tube] == 0) >= 0.6 * tube.sum()
    assert any(c.kind == "removed" and "mirror" in c.text for c in report.changes)

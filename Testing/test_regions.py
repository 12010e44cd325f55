"""A pelvis or a thigh at the height of the ribs is renamed (consistency/regions.py).

Known answers on the procedural phantom's label map at 4 mm (the model's grid), cut to its thorax
as a chest CT is: bones misnamed as the network misnames them on a real chest CT and a lower-thorax
slab (a vertebra called sacrum, a rib's end called femur, a bright spot in the heart called hip
bone) come back as the vertebra, the rib and the background (the CT shows no bone there); the whole phantom, whose pelvis and
femurs reach far below the ribs, is never touched, whatever the array's orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.consistency.changes import ConsistencyReport
from BoneSegmentationLib.consistency.geometry import Grid
from BoneSegmentationLib.consistency.regions import relabel_lower_body_among_ribs
from BoneSegmentationLib.consistency.spine import vertebra_indices
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.synthetic.phantom import make_phantom

TABLE = default_table()
RIBS = [b.index for b in TABLE.group_members("ribs")]


def _phantom() -> tuple[sitk.Image, sitk.Image]:
    """The 4 mm phantom's labels and CT, LPS."""
    ct, labels, _ = make_phantom(3, spacing=4.0, partial=False)
    return sitk.DICOMOrient(labels, "LPS"), sitk.DICOMOrient(ct, "LPS")


def _phantom_labels() -> sitk.Image:
    return _phantom()[0]


def _thorax(labels: sitk.Image, ct: sitk.Image | None = None):
    """The phantom cut to the rows holding ribs (LPS: array axis 0 runs head to foot); with the
    CT, both."""
    rows = np.nonzero(np.isin(sitk.GetArrayViewFromImage(labels), RIBS).any(axis=(1, 2)))[0]
    cut = (slice(None), slice(None), slice(int(rows.min()), int(rows.max()) + 1))
    return labels[cut] if ct is None else (labels[cut], ct[cut])


def _misname(array: np.ndarray) -> dict[str, np.ndarray]:
    """Three misnamings in place: T8's front half as sacrum, the outer end of the left sixth rib as
    the left femur, a 3-voxel cube in the middle of the chest (no bone there) as the right hip
    bone. Returns each one's mask."""
    t8 = array == TABLE.by_name("vertebra_T8").index
    front = t8 & (np.arange(array.shape[1])[None, :, None] <= np.median(np.nonzero(t8)[1]))
    rib = np.argwhere(array == TABLE.by_name("rib_left_6").index)
    outer = np.zeros(array.shape, bool)
    far = rib[rib[:, 2] >= np.percentile(rib[:, 2], 80)]  # LPS: +x is the patient's left
    outer[tuple(far.T)] = True
    z = int(np.median(np.nonzero(t8)[0]))
    spot = np.zeros(array.shape, bool)
    centre_y = int(np.nonzero(t8)[1].min()) - 12  # 48 mm in front of the vertebral body
    centre_x = int(np.median(np.nonzero(t8)[2]))
    spot[z - 1:z + 2, centre_y - 1:centre_y + 2, centre_x - 1:centre_x + 2] = True
    assert not array[spot].any(), "the spot must lie in soft tissue"
    array[front] = TABLE.by_name("sacrum").index
    array[outer] = TABLE.by_name("femur_left").index
    array[spot] = TABLE.by_name("hip_right").index
    return {"vertebra": front, "rib": outer, "spot": spot}


@pytest.mark.parametrize("flip", [(), (0,), (1, 2)])
def test_misnamed_pelvis_and_thigh_at_the_ribs_come_back(flip):
    image, ct = _thorax(*_phantom())
    truth = sitk.GetArrayFromImage(image)
    array = truth.copy()
    masks = _misname(array)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    if flip:
        axes = [a in flip for a in (2, 1, 0)]  # sitk axes x, y, z
        image = sitk.Flip(image, axes)
        array = np.flip(array, axis=flip).copy()
        hu = np.flip(hu, axis=flip).copy()
        truth = sitk.GetArrayFromImage(image)
        masks = {k: np.flip(m, axis=flip) for k, m in masks.items()}
    report = ConsistencyReport()
    changed = relabel_lower_body_among_ribs(array, Grid.of(image), TABLE, hu, report)
    assert changed == sum(int(m.sum()) for m in masks.values())
    lower = [b.index for b in TABLE.foreground() if b.region in ("pelvis", "leg")] + [
        TABLE.by_name("sacrum").index]
    assert not np.isin(array, lower).any()
    assert np.isin(array[masks["vertebra"]], vertebra_indices(TABLE)).all()
    assert np.isin(array[masks["rib"]], RIBS).all() and len(np.unique(array[masks["rib"]])) == 1
    assert not array[masks["spot"]].any()  # soft tissue, no bone-like voxel: not bone
    untouched = ~(masks["vertebra"] | masks["rib"] | masks["spot"])
    assert np.array_equal(array[untouched], truth[untouched])
    said = " ".join(c.text for c in report.changes)
    assert "took a piece labelled Left femur" in said and "none is bone-like" in said


def test_without_the_ct_a_misnamed_piece_stays_bone_under_the_nearest_bones_name():
    """A bone that is there is never dropped on the labels' word alone (as the stray-piece rule)."""
    image = _thorax(_phantom_labels())
    array = sitk.GetArrayFromImage(image)
    spot = _misname(array)["spot"]
    relabel_lower_body_among_ribs(array, Grid.of(image), TABLE, None, ConsistencyReport())
    assert len(np.unique(array[spot])) == 1 and array[spot][0] > 0
    assert TABLE[int(array[spot][0])].region not in ("pelvis", "leg")


def _small_rib_with_specks(array: np.ndarray) -> None:
    """Rib 5 on the right cut to a 14-voxel piece of itself, plus specks of 2 and 4 voxels named rib
    5 on the femur's lowest slice and on the hip bone (as the network left them on held-out synthetic
    abdomen 5600): 20 voxels, so the specks are a tenth of the label and its 2nd percentile lies
    among the femurs."""
    rib = TABLE.by_name("rib_right_5").index
    voxels = np.argwhere(array == rib)
    array[tuple(voxels[14:].T)] = 0
    for name, n in (("femur_right", 2), ("hip_right", 4)):
        bone = np.argwhere(array == TABLE.by_name(name).index)
        low = bone[bone[:, 0] == bone[:, 0].min()]
        first = low[0]
        speck = [v for v in low if np.abs(v - first).max() <= 1][:n]  # one 26-connected speck
        array[tuple(np.array(speck).T)] = rib


@pytest.mark.parametrize("stray", [None, "voxels", "specks", "piece"])
def test_a_whole_body_with_its_pelvis_is_never_touched(stray):
    """Also with a few voxels named rib among the femurs (the network's stray on a held-out
    synthetic body), a small rib label whose specks among the pelvis are a tenth of it, or a rib
    label whose only piece of eight voxels or more lies among them (held-out synthetic abdomen
    5861: rib 12's own piece was smaller, an 11-voxel piece named rib 12 lay below the sacrum, and
    the sacrum was renamed L5): they do not stretch the rib cage over the pelvis."""
    image = _phantom_labels()
    array = sitk.GetArrayFromImage(image)
    if stray == "piece":
        rib = TABLE.by_name("rib_right_12").index
        array[array == rib] = 0
        femur = np.argwhere(array == TABLE.by_name("femur_right").index)
        low = femur[femur[:, 0] == femur[:, 0].min()]
        piece = low[np.argsort(np.abs(low - low[0]).max(axis=1), kind="stable")[:11]]
        array[tuple(piece.T)] = rib
    elif stray == "voxels":
        femur = np.argwhere(array == TABLE.by_name("femur_right").index)
        low = femur[femur[:, 0] == femur[:, 0].min()][:3]  # LPS: the lowest slice is array row 0
        array[tuple(low.T)] = TABLE.by_name("rib_right_3").index
    elif stray == "specks":
        _small_rib_with_specks(array)
    before = array.copy()
    report = ConsistencyReport()
    assert relabel_lower_body_among_ribs(array, Grid.of(image), TABLE, None, report) == 0
    assert np.array_equal(array, before) and not report.changes


def test_without_a_rib_cage_nothing_is_judged():
    """One rib label alone (a transverse process misnamed rib 12) does not make a rib cage."""
    image = _thorax(_phantom_labels())
    array = sitk.GetArrayFromImage(image)
    _misname(array)
    keep = TABLE.by_name("rib_left_12").index
    array[np.isin(array, RIBS) & (array != keep)] = 0
    before = array.copy()
    assert relabel_lower_body_among_ribs(array, Grid.of(image), TABLE, None, ConsistencyReport()) == 0
    assert np.array_equal(array, before)


def test_the_anatomical_step_runs_the_rule_before_it_reads_the_spine():
    """Through ``make_consistent``: no pelvic or leg label is left in the misnamed thorax, and the
    review says where each piece went."""
    from BoneSegmentationLib.consistency.step import make_consistent

    image = _thorax(_phantom_labels())
    array = sitk.GetArrayFromImage(image)
    _misname(array)
    out, report = make_consistent(array, image)
    lower = [b.index for b in TABLE.foreground() if b.region in ("pelvis", "leg")] + [
        TABLE.by_name("sacrum").index, TABLE.by_name("coccyx").index]
    assert not np.isin(out, lower).any()
    assert any("height of the ribs" in c.text for c in report.changes)

"""A forearm or hand bone touching the trunk is renamed (consistency/limbs.py).

Known answers on the procedural phantom's label map at 4 mm (the model's grid): pieces misnamed as
the network misnamed them on a real abdomen (a block of the right iliac wing called left and right
radius, a voxel against L5 called lunate) come back as the hip bone and L5, or go to the background
where the CT shows no bone; the phantom's own arms (some of whose forearms lie against the iliac
crest, touching it) are never touched, with the elbow there or cut, whatever the array's
orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from BoneSegmentationLib.consistency.changes import ConsistencyReport
from BoneSegmentationLib.consistency.geometry import Grid
from BoneSegmentationLib.consistency.limbs import relabel_distal_limb_on_trunk
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.synthetic.phantom import make_phantom

TABLE = default_table()
DISTAL = [b.index for b in TABLE.foreground()
          if b.region == "hand" or b.name.startswith(("radius", "ulna"))]


def _phantom(seed: int = 1) -> tuple[sitk.Image, np.ndarray]:
    """The 4 mm phantom's labels (LPS) and its CT on the same grid. Seed 1: both forearms touch
    the iliac crests in the phantom's own labels."""
    ct, labels, _ = make_phantom(seed, spacing=4.0, partial=False)
    return sitk.DICOMOrient(labels, "LPS"), sitk.GetArrayFromImage(sitk.DICOMOrient(ct, "LPS")).astype(np.float32)


def _misname(array: np.ndarray, hu: np.ndarray) -> dict[str, np.ndarray]:
    """In place: a 2 x 2 x 3 block of the right hip bone's wing called left radius (top half) and
    right radius (bottom half), one voxel at the back of L5 called left lunate, and a 2-voxel speck of soft tissue
    in front of L5, touching it, called right lunate (the CT: muscle). Returns each one's mask."""
    hip = np.argwhere(array == TABLE.by_name("hip_right").index)
    top = hip[hip[:, 0] >= np.percentile(hip[:, 0], 95)]  # LPS: array axis 0 runs foot to head
    z, y, x = np.median(top, axis=0).astype(int)
    block = np.zeros(array.shape, bool)
    block[z - 1:z + 1, y - 1:y + 1, x - 1:x + 2] = True
    block &= array == TABLE.by_name("hip_right").index
    assert block.sum() >= 6
    l5 = np.argwhere(array == TABLE.by_name("vertebra_L5").index)
    front = l5[l5[:, 1] == l5[:, 1].min()][0]  # LPS: +y is posterior, so the smallest row is the front
    voxel = np.zeros(array.shape, bool)
    voxel[tuple(l5[l5[:, 1] == l5[:, 1].max()][0])] = True  # the back of the spinous process
    speck = np.zeros(array.shape, bool)
    speck[front[0], front[1] - 2:front[1], front[2]] = True
    assert not array[speck].any()
    hu[speck] = 40.0
    upper = block & (np.arange(array.shape[0]) >= z)[:, None, None]
    array[upper] = TABLE.by_name("radius_left").index
    array[block & ~upper] = TABLE.by_name("radius_right").index
    array[voxel] = TABLE.by_name("lunate_left").index
    array[speck] = TABLE.by_name("lunate_right").index
    return {"hip": block, "l5": voxel, "speck": speck}


@pytest.mark.parametrize("flip", [(), (0,), (1, 2)])
def test_forearm_and_hand_pieces_on_the_trunk_come_back(flip):
    image, hu = _phantom()
    truth = sitk.GetArrayFromImage(image)
    array = truth.copy()
    masks = _misname(array, hu)
    if flip:
        image = sitk.Flip(image, [a in flip for a in (2, 1, 0)])  # sitk axes x, y, z
        truth, array, hu = (np.flip(a, axis=flip).copy() for a in (truth, array, hu))
        masks = {k: np.flip(m, axis=flip) for k, m in masks.items()}
    report = ConsistencyReport()
    changed = relabel_distal_limb_on_trunk(array, Grid.of(image), TABLE, hu, report)
    assert changed == sum(int(m.sum()) for m in masks.values())
    assert (array[masks["hip"]] == TABLE.by_name("hip_right").index).all()
    assert (array[masks["l5"]] == TABLE.by_name("vertebra_L5").index).all()
    assert not array[masks["speck"]].any()  # muscle: no bone-like voxel, not bone
    untouched = ~(masks["hip"] | masks["l5"] | masks["speck"])
    assert np.array_equal(array[untouched], truth[untouched])  # the phantom's own arms and hands included
    said = " ".join(c.text for c in report.changes)
    assert "took a piece labelled Left radius" in said and "took a piece labelled Right radius" in said
    assert "no right lunate can be" in said and "none is bone-like" in said


def test_without_the_ct_a_piece_stays_bone_under_the_touched_bones_name():
    image, hu = _phantom()
    array = sitk.GetArrayFromImage(image)
    speck = _misname(array, hu)["speck"]
    relabel_distal_limb_on_trunk(array, Grid.of(image), TABLE, None, ConsistencyReport())
    assert (array[speck] == TABLE.by_name("vertebra_L5").index).all()


@pytest.mark.parametrize("seed", [1, 4])
@pytest.mark.parametrize("cut_elbow", [False, True])
def test_the_phantoms_own_arms_are_never_touched(seed, cut_elbow):
    """Seeds 1 and 4 draw forearms whose labels touch the iliac crest. With the humerus there the
    arm is real (the elbow); with the humeri removed (an elbow the network left out) the forearm is
    still far larger than any piece: kept whole."""
    image, hu = _phantom(seed)
    array = sitk.GetArrayFromImage(image)
    touching = _forearms_touching_the_pelvis(array)
    assert touching, "the phantom should draw a forearm against the iliac crest"
    if cut_elbow:
        array[np.isin(array, [TABLE.by_name("humerus_left").index, TABLE.by_name("humerus_right").index])] = 0
    before = array.copy()
    report = ConsistencyReport()
    assert relabel_distal_limb_on_trunk(array, Grid.of(image), TABLE, hu, report) == 0
    assert np.array_equal(array, before) and not report.changes


def _forearms_touching_the_pelvis(array: np.ndarray) -> int:
    hips = np.isin(array, [TABLE.by_name("hip_left").index, TABLE.by_name("hip_right").index])
    return int((ndimage.binary_dilation(hips, np.ones((3, 3, 3), bool)) & np.isin(array, DISTAL)).sum())


def test_the_anatomical_step_runs_the_rule():
    """Through ``make_consistent``, on the phantom without its forearms and hands (as an abdominal
    CT: otherwise the misnamed pieces are strays of the real forearms, which the stray-piece rule
    already sends to the bone around them; so does it the hip block, which the wing wraps): the hip
    block and the L5 voxel are bone of the trunk again and the review says which bone took the
    lunate."""
    from BoneSegmentationLib.consistency.step import make_consistent

    image, hu = _phantom()
    array = sitk.GetArrayFromImage(image)
    array[np.isin(array, DISTAL)] = 0
    masks = _misname(array, hu)
    out, report = make_consistent(array, image, hu)
    assert (out[masks["hip"]] == TABLE.by_name("hip_right").index).all()
    assert (out[masks["l5"]] == TABLE.by_name("vertebra_L5").index).all()
    assert any("which no forearm or hand bone touches" in c.text and c.bone == "vertebra_L5" for c in report.changes)


def test_a_group_larger_than_a_fragment_of_the_bone_it_touches_is_left_for_the_review():
    """A "radius" the size of the twelfth rib against it (the network's name for contrast in the
    bowel on synthetic abdomens) is not made part of the rib: left as named, none of it changed."""
    image, hu = _phantom()
    array = sitk.GetArrayFromImage(image)
    array[np.isin(array, DISTAL)] = 0
    rib = np.argwhere(array == TABLE.by_name("rib_left_12").index)
    tip = rib[rib[:, 1] == rib[:, 1].min()][0]  # LPS: its front end
    blob = np.zeros(array.shape, bool)
    side = int(np.ceil((0.3 * len(rib)) ** (1 / 3))) + 1
    z0, x0 = tip[0] - side // 2, tip[2] - side // 2
    blob[z0:z0 + side, tip[1] - side:tip[1], x0:x0 + side] = True
    blob &= array == 0
    assert blob.sum() > 0.25 * len(rib)
    rib_mask = array == TABLE.by_name("rib_left_12").index
    assert (ndimage.binary_dilation(blob, np.ones((3, 3, 3), bool)) & rib_mask).any(), "the blob touches the rib"
    array[blob] = TABLE.by_name("radius_right").index
    hu[blob] = 500.0
    before = array.copy()
    assert relabel_distal_limb_on_trunk(array, Grid.of(image), TABLE, hu, ConsistencyReport()) == 0
    assert np.array_equal(array, before)


def test_the_phantoms_arms_are_never_touched_in_any_short_scan_of_them():
    """Cut to 80 mm slabs anywhere from head to foot (a clinical scan's view: a forearm without its
    elbow, a hand beside a femur), seed 1's arms, which touch its iliac crests, are left alone."""
    image, hu = _phantom(1)
    array = sitk.GetArrayFromImage(image)
    for lo in range(0, array.shape[0] - 20, 6):
        cut = array[lo:lo + 20].copy()
        before = cut.copy()
        changed = relabel_distal_limb_on_trunk(cut, Grid.of(image[:, :, lo:lo + 20]), TABLE, hu[lo:lo + 20],
                                               ConsistencyReport())
        assert changed == 0 and np.array_equal(cut, before), f"slab from row {lo}"

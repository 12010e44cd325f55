"""The anatomical consistency step (consistency/): known answers on phantom label maps.

A correct phantom label map is broken the way networks break it (the spine shifted by one level,
ribs swapped between sides or renumbered, stray fragments, bone drawn on the CT table) and must
come back exactly; a correct map must come back unchanged; and all of it in any orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.consistency.body import body_mask
from BoneSegmentationLib.consistency.geometry import Grid
from BoneSegmentationLib.consistency.step import make_consistent
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.inference.review import review_ranking
from BoneSegmentationLib.synthetic.label_errors import RIBS_DOWN, SHIFT_DOWN, SHIFT_UP, SWAP_RIBS, sprinkle
from BoneSegmentationLib.synthetic.phantom import make_phantom

TABLE = default_table()


def _arrays(seed: int, orientation: str = "LPS"):
    ct, lab, _ = make_phantom(seed, spacing=4.0, partial=False)
    ct, lab = sitk.DICOMOrient(ct, orientation), sitk.DICOMOrient(lab, orientation)
    return sitk.GetArrayFromImage(lab), sitk.GetArrayFromImage(ct).astype(np.float32), lab


@pytest.fixture(scope="module", params=[3, 0])
def phantom(request):
    return _arrays(request.param)


def test_a_correct_map_comes_back_unchanged(phantom):
    labels, ct, grid = phantom
    out, report = make_consistent(labels, grid, ct)
    assert np.array_equal(out, labels) and report.changes == []


@pytest.mark.parametrize("lut", [SHIFT_DOWN, SHIFT_UP], ids=["down", "up"])
def test_spine_shifted_by_one_level_is_restored(phantom, lut):
    labels, ct, grid = phantom
    broken = lut[labels]
    assert np.count_nonzero(broken != labels) > 1000
    out, report = make_consistent(broken, grid, ct)
    assert np.array_equal(out, labels)
    texts = [c.text for c in report.changes if c.kind == "renumbered"]
    assert len(texts) >= 24 and any(t.startswith("renumbered T8 → T") for t in texts)


def test_ribs_swapped_between_sides_are_restored(phantom):
    labels, ct, grid = phantom
    out, report = make_consistent(SWAP_RIBS[labels], grid, ct)
    assert np.array_equal(out, labels)
    assert sum(c.kind == "side" for c in report.changes) == 24
    assert any("moved to the right side" in c.text for c in report.changes)


def test_ribs_renumbered_are_restored_from_their_vertebrae(phantom):
    labels, ct, grid = phantom
    out, _ = make_consistent(RIBS_DOWN[labels], grid, ct)
    assert np.array_equal(out, labels)


def test_stray_fragments_go_back_where_they_belong(phantom):
    labels, ct, grid = phantom
    broken = sprinkle(labels, ct, 7)
    assert np.count_nonzero(broken != labels) >= 100
    out, report = make_consistent(broken, grid, ct)
    assert np.array_equal(out, labels)
    assert {c.kind for c in report.changes} >= {"fragment", "removed"}


def test_everything_at_once_in_another_orientation():
    """Shifted spine, swapped ribs and fragments together, on arrays in RAI order (the step works in
    patient coordinates, not array axes)."""
    labels, ct, grid = _arrays(3, "RAI")
    broken = sprinkle(SWAP_RIBS[SHIFT_DOWN[labels]], ct, 11)
    out, _ = make_consistent(broken, grid, ct)
    assert np.array_equal(out, labels)


def test_bone_on_the_ct_table_is_removed_but_a_thin_finger_is_not(phantom):
    """A table top (8 mm plate under the patient, as wide as the scan, along its whole length)
    labelled as hand bones is removed; a lone thin 'thumb' beside the body keeps its bone."""
    labels, ct, grid = phantom
    ct, broken = ct.copy(), labels.copy()
    g = Grid.of(grid)
    ap = int(np.argmax(np.abs(g.matrix[1])))
    body_back = np.nonzero((ct > -300).any(axis=tuple(a for a in range(3) if a != ap)))[0].max()
    plate = [slice(None)] * 3
    plate[ap] = slice(body_back + 3, body_back + 5)  # two 4 mm voxels: 8 mm, a gap of air above it
    ct[tuple(plate)] = 300.0
    stripe = [slice(None)] * 3
    stripe[ap] = slice(body_back + 3, body_back + 5)
    lr = int(np.argmax(np.abs(g.matrix[0])))
    stripe[lr] = slice(10, 14)
    hand = TABLE.by_name("capitate_left").index
    broken[tuple(stripe)] = hand
    assert not body_mask(ct, g)[tuple(plate)].any()
    out, report = make_consistent(broken, grid, ct)
    assert np.array_equal(out, labels)
    assert any(c.text.endswith("outside the body") for c in report.changes)


def test_the_review_lists_what_the_step_changed(phantom):
    labels, ct, grid = phantom
    out, report = make_consistent(SHIFT_DOWN[labels], grid, ct)
    fixed = sitk.GetImageFromArray(out)
    fixed.CopyInformation(grid)
    items = {it.name: it for it in review_ranking(fixed, changes=report.by_bone())}
    assert any("renumbered" in r and "→ T7" in r for r in items["vertebra_T7"].reasons)


def test_labels_and_grid_must_agree():
    labels, ct, grid = _arrays(3)
    with pytest.raises(ValueError, match="differ"):
        make_consistent(labels[:-1], grid, ct[:-1])

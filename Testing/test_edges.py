"""Bones grown into their bright edge voxels on the input grid (inference/edges.py): known answers
on small CT images built voxel by voxel."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.inference import edges
from BoneSegmentationLib.inference.edges import EDGE_HU, grow_into_edges, growth_steps


def _image(array: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 30.0))
    image.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))  # an oblique axis order: only the array matters
    return image


def _bar(shape=(12, 30, 30)) -> tuple[np.ndarray, np.ndarray]:
    """A CT (soft tissue 40 HU) with a bone bar (700 HU) along z whose one-voxel rim is half bone
    (300 HU), and labels that hold the core only: what a 4 mm grid leaves on a finer one."""
    ct = np.full(shape, 40, np.int16)
    labels = np.zeros(shape, np.uint8)
    ct[:, 10:20, 10:20] = 300
    ct[:, 11:19, 11:19] = 700
    labels[:, 11:19, 11:19] = 7
    return ct, labels


def test_a_bone_takes_its_half_bone_rim_and_no_soft_tissue():
    ct, labels = _bar()
    grown, added = grow_into_edges(_image(labels), _image(ct), 4.0)
    out = sitk.GetArrayFromImage(grown)
    rim = (ct == 300)
    assert added == np.count_nonzero(rim) and (out[rim] == 7).all()
    assert (out[ct == 40] == 0).all() and (out[ct == 700] == 7).all()
    assert grown.GetOrigin() == (-10.0, 5.0, 30.0) and grown.GetDirection() == (0, 0, 1, 1, 0, 0, 0, 1, 0)


def test_growth_stops_at_its_reach_and_at_a_dark_gap():
    """A thin bright band 10 mm long beside the bone: 4 mm of it (two 2 mm voxels) is taken, no
    more; bright voxels behind one voxel of soft tissue are not (growth follows bright voxels only)."""
    ct, labels = _bar()
    ct[:, 14, 20:25] = 300  # a bright band right of the bone, 5 voxels long, one thick
    ct[:, 10, :20] = 40  # above the bone: a dark layer where its rim was ...
    ct[:, 9, :20] = 300  # ... and a bright one behind it, 4 mm from the bone: within reach
    out = sitk.GetArrayFromImage(grow_into_edges(_image(labels), _image(ct), 4.0)[0])
    assert (out[:, 14, 19:21] == 7).all() and (out[:, 14, 21:] == 0).all()
    assert not out[:, 9:11, :19].any()


def test_each_axis_grows_as_far_as_its_spacing_allows():
    """1 mm pixels and 5 mm slices: four voxels in-plane (one 4 mm model voxel), none through the
    slices."""
    assert growth_steps((1.0, 1.0, 5.0), 4.0) == (0, 4, 4)
    assert growth_steps((0.7, 0.7, 3.0), 4.0) == (1, 5, 5)
    assert growth_steps((2.0, 2.0, 2.0), 4.0) == (2, 2, 2)
    ct = np.full((9, 30, 30), 40, np.int16)
    labels = np.zeros(ct.shape, np.uint8)
    ct[:, 5:25:2, 5:25] = 300  # bright stripes, thin across y, through every slice ...
    ct[4, 5:25, 5:25] = 300  # ... and one bright slice: thin along z
    ct[4, 12:18, 12:18] = 700
    labels[4, 12:18, 12:18] = 3
    out = sitk.GetArrayFromImage(grow_into_edges(_image(labels, (1.0, 1.0, 5.0)), _image(ct, (1.0, 1.0, 5.0)), 4.0)[0])
    assert (out[4, 8:22, 8:22] == 3).all() and (out[4, 7, :] == 0).all() and (out[4, :, 22] == 0).all()
    assert not out[[3, 5]].any()  # the next slices are 5 mm away


def test_a_thick_bright_vessel_against_a_bone_is_not_grown_into():
    """A contrast-filled vessel (300 HU, 16 mm across) touching the bone, and a bone wrongly
    labelled inside another one: the bone takes its thin rim, neither takes the lumen."""
    ct, labels = _bar((12, 40, 40))
    ct[:, 12:20, 20:28] = 300  # the vessel against the bone's right side, 8 x 8 voxels of 2 mm
    ct[:, 30:38, 5:13] = 300  # a second vessel with a calcified wall ...
    ct[:, 30, 5:13] = 900
    labels[:, 30, 5:13] = 4  # ... that the network called bone
    out = sitk.GetArrayFromImage(grow_into_edges(_image(labels), _image(ct), 4.0)[0])
    assert (out[:, 10, 10:20] == 7).all()  # the rim on the far side from the vessel
    assert not out[:, 12:20, 20:28].any() and not out[:, 31:38, 5:13].any()


def test_two_bones_each_grow_with_their_own_label():
    ct = np.full((6, 20, 40), 40, np.int16)
    labels = np.zeros(ct.shape, np.uint8)
    ct[:, 5:15, 4:16] = 300
    ct[:, 5:15, 24:36] = 300
    labels[:, 6:14, 5:15] = 2
    labels[:, 6:14, 25:35] = 9
    out = sitk.GetArrayFromImage(grow_into_edges(_image(labels), _image(ct), 4.0)[0])
    assert set(np.unique(out[:, 5:15, 4:16])) == {2} and set(np.unique(out[:, 5:15, 24:36])) == {9}


def test_slabs_give_the_same_answer_as_one_piece(monkeypatch):
    """Grown one slab of slices at a time, with a margin of the growth's reach: the same labels as
    the whole volume at once, across the slabs' seams."""
    rng = np.random.default_rng(5)
    ct = rng.choice(np.array([40, 300], np.int16), size=(23, 16, 16), p=[0.4, 0.6])
    labels = np.where(rng.random(ct.shape) < 0.05, rng.integers(1, 4, ct.shape), 0).astype(np.uint8)
    whole = sitk.GetArrayFromImage(grow_into_edges(_image(labels, (1.0, 1.0, 1.0)), _image(ct, (1.0, 1.0, 1.0)), 4.0)[0])
    monkeypatch.setattr(edges, "SLAB_SLICES", 3)
    slabs, added = grow_into_edges(_image(labels, (1.0, 1.0, 1.0)), _image(ct, (1.0, 1.0, 1.0)), 4.0)
    assert np.array_equal(sitk.GetArrayFromImage(slabs), whole) and added == np.count_nonzero(whole != labels) > 0


def test_the_bones_box_gives_the_same_answer_as_the_whole_cross_section():
    """Each slab is grown only in the labelled bones' box across the body and the reach round it
    (the growth's steps and the two radii the opening reads): a bright plate 4 mm thick beside a
    bone, ending at the growth's reach, is an edge, not a lumen (a box cut at the reach would see
    it as thick); bones far apart, whose box is the whole cross-section, grow as each alone."""
    ct = np.full((12, 60, 60), 40, np.int16)
    ct[:, 20:40, 20:29] = 700
    labels = np.zeros(ct.shape, np.uint8)
    labels[:, 20:40, 20:29] = 5
    ct[:, 10:50, 29:33] = 300  # the plate right of the bone: 4 voxels of 1 mm, the growth's reach
    spacing = (1.0, 1.0, 1.0)
    alone = sitk.GetArrayFromImage(grow_into_edges(_image(labels, spacing), _image(ct, spacing), 4.0)[0])
    assert (alone[:, 20:40, 29:33] == 5).all() and not alone[:, :, 33:].any()
    both = labels.copy()
    both[:, 0, 0] = both[:, 59, 59] = 2  # bones in two far corners: the box is the whole cross-section
    out = sitk.GetArrayFromImage(grow_into_edges(_image(both, spacing), _image(ct, spacing), 4.0)[0])
    assert np.array_equal(out[:, 8:52, 8:52], alone[:, 8:52, 8:52])


@pytest.mark.parametrize("steps", [(4, 4, 4), (12, 5, 5), (0, 3, 3), (2, 0, 5)])
def test_growing_from_the_front_gives_the_labels_of_growing_over_the_whole_array(steps):
    """After the first step only the last step's voxels are read (a voxel left at step k-1 had no
    label in its box, and the box only narrows as axes spend their steps): against a box maximum
    over the whole array at every step, on random bright voxels and bones of several labels
    competing for the same voxels (the larger label wins, in both)."""
    from scipy import ndimage

    rng = np.random.default_rng(sum(steps))
    bright = rng.random((20, 18, 17)) < 0.55
    labels = np.where(rng.random(bright.shape) < 0.04, rng.integers(1, 9, bright.shape), 0).astype(np.uint8)
    reference = labels.copy()
    for step in range(max(steps)):  # a grey dilation by the step's box over the whole array
        grown = ndimage.grey_dilation(reference, size=tuple(3 if step < n else 1 for n in steps))
        take = (reference == 0) & (grown > 0) & bright
        reference[take] = grown[take]
    front = labels.copy()
    edges.grow_from_front(front, bright, steps)
    assert np.array_equal(front, reference) and np.count_nonzero(front != labels) > 100


def test_labels_and_ct_must_share_a_grid():
    ct, labels = _bar()
    with pytest.raises(ValueError, match="not one grid"):
        grow_into_edges(_image(labels[:-1]), _image(ct), 4.0)


def test_a_ct_as_coarse_as_the_models_grid_is_left_as_the_network_labelled_it():
    """At the model's own spacing the boundary is the network's: on 4 mm phantoms one 4 mm step
    took the foreground from 0.88 to 0.77. Nothing grows."""
    assert growth_steps((4.0, 4.0, 4.0), 4.0) == (0, 0, 0) and growth_steps((5.0, 5.0, 5.0), 4.0) == (0, 0, 0)
    ct, labels = _bar()
    grown, added = grow_into_edges(_image(labels, (4.0, 4.0, 4.0)), _image(ct, (4.0, 4.0, 4.0)), 4.0)
    assert added == 0 and np.array_equal(sitk.GetArrayFromImage(grown), labels)


def test_the_segmenter_grows_edges_by_default_and_not_when_told(tmp_path, monkeypatch):
    """Through the real pipeline (a random TorchScript model at 6 mm on a 3 mm phantom): by default
    every bone voxel of the plain run stays, each added voxel is at least EDGE_HU bright, and the
    record counts them; with ``edges=False`` nothing is grown. The canal and enclosed-core fills
    that follow (tested in test_consistency.py) are held still, so that the two runs differ by the
    growth alone."""
    from conftest import make_random_model

    import BoneSegmentationLib.inference.segmenter as segmenter_module
    from BoneSegmentationLib.inference.options import InferenceOptions
    from BoneSegmentationLib.inference.segmenter import Segmenter
    from BoneSegmentationLib.model.modelfile import load_model
    from BoneSegmentationLib.synthetic.phantom import make_phantom

    monkeypatch.setattr(segmenter_module, "fill_canals", lambda labels, table: (labels, 0))
    monkeypatch.setattr(segmenter_module, "fill_enclosed", lambda labels, ct, bone, table: (labels, 0))
    model = load_model(make_random_model(tmp_path / "random.pt", spacing=6.0, patch=32))
    ct, _, _ = make_phantom(3, spacing=3.0, partial=True)
    plain = Segmenter(model, InferenceOptions(device="cpu", overlap=0.0, mirror="off", edges=False)).segment(ct)
    grown = Segmenter(model, InferenceOptions(device="cpu", overlap=0.0, mirror="off")).segment(ct)
    before, after = (sitk.GetArrayFromImage(r.labels) for r in (plain, grown))
    hu = sitk.GetArrayFromImage(ct)
    added = after != before
    assert plain.anatomy.edges_grown == 0 and grown.anatomy.edges_grown == np.count_nonzero(added) > 0
    assert (before[added] == 0).all() and (hu[added] >= EDGE_HU).all()
    assert grown.labels.GetSpacing() == ct.GetSpacing() and grown.labels.GetOrigin() == ct.GetOrigin()

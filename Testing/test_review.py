"""Review ranking: a correct phantom raises no finding; each planted error is found and ranked first."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.inference.review import review_ranking, summary_lines, write_review

T = default_table()


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(0, spacing=3.0, partial=False)  # crossed arms: hands lie across the midline


def _image_like(array, ref):
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(ref)
    return img


def test_reference_labels_raise_no_finding(phantom):
    _, labels, spec = phantom
    assert spec.posture == "crossed"
    items = review_ranking(labels)
    assert summary_lines(items) == []
    assert len(items) == 125 and all(it.found for it in items)


def test_planted_errors_are_found_and_ranked_first(phantom, tmp_path):
    _, labels, _ = phantom
    a = sitk.GetArrayFromImage(labels)
    b = a.copy()
    idx = {n: T.by_name(n).index for n in ("humerus_left", "humerus_right", "vertebra_T5", "vertebra_T8",
                                           "vertebra_T10", "capitate_left", "capitate_right")}
    for left, right in (("humerus_left", "humerus_right"), ("capitate_left", "capitate_right"),
                        ("vertebra_T8", "vertebra_T10")):
        b[a == idx[left]], b[a == idx[right]] = idx[right], idx[left]
    b[a == idx["vertebra_T5"]] = 0
    conf = _image_like(np.where(b > 0, 0.95, 1.0).astype(np.float32), labels)
    items = review_ranking(_image_like(b, labels), conf)
    flagged = {it.name: it.reasons for it in items if it.reasons}
    assert set(flagged) == {"humerus_left", "humerus_right", "capitate_left", "capitate_right",
                            "vertebra_T5", "vertebra_T9", "vertebra_T10"}, flagged
    assert "missing" in flagged["vertebra_T5"][0]
    assert "wrong side" in flagged["humerus_left"][0] and "nearer the right hand" in flagged["capitate_left"][0]
    assert "out of order" in flagged["vertebra_T9"][0] and "out of order" in flagged["vertebra_T10"][0]
    assert [it.name for it in items[:len(flagged)]] == [it.name for it in items if it.reasons]
    assert all(it.mean_confidence == pytest.approx(0.95) for it in items if it.found)
    path = write_review(items, tmp_path / "review.json", model="test")
    doc = json.loads(path.read_text())
    assert doc["flagged"] == len(flagged) and doc["bones"][0]["name"] == items[0].name
    with pytest.raises(FileExistsError):
        write_review(items, path)


def test_too_large_and_fragmented_bone(phantom):
    _, labels, _ = phantom
    a = sitk.GetArrayFromImage(labels)
    femur = T.by_name("femur_left").index
    b = a.copy()
    b[(a == T.by_name("femur_right").index)] = femur  # one label on both femurs: twice the volume, two pieces
    reasons = {it.name: " ".join(it.reasons) for it in review_ranking(_image_like(b, labels))}
    assert "above the plausible" in reasons["femur_left"] and "in pieces" in reasons["femur_left"]
    assert "missing" in reasons["femur_right"]

"""The synthetic skeleton phantom: all 125 bones, correct sides, no overlaps, deterministic."""

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.synthetic.phantom import make_phantom, random_spec

TABLE = default_table()
# with forearms crossed the hands (and distal forearms) lie on the opposite side by design
CROSSING = {"hand", "arm"}


@pytest.fixture(scope="module", params=[0, 1])  # seed 0: crossed arms, seed 1: arms on the lap
def phantom(request):
    return make_phantom(request.param, spacing=3.0)


def test_every_bone_present(phantom):
    _, labels, _ = phantom
    counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=126)
    missing = [TABLE[i].name for i in range(1, 126) if counts[i] == 0]
    assert not missing
    assert counts.shape == (126,), "labels never exceed the table"


def test_left_bones_on_patient_left(phantom):
    """LPS: +x is the patient's left. Check each lateral bone's centroid in physical space."""
    _, labels, spec = phantom
    a = sitk.GetArrayViewFromImage(labels)
    for bone in TABLE.foreground():
        if bone.laterality == "none" or (spec.posture == "crossed" and bone.region in CROSSING):
            continue
        zyx = np.argwhere(a == bone.index).mean(0)
        x = labels.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in zyx[::-1]))[0]
        assert (x > 0) == (bone.laterality == "left"), bone.name
    if spec.posture == "lap":
        for side, sign in (("left", 1), ("right", -1)):
            zyx = np.argwhere(a == TABLE.by_name(f"capitate_{side}").index).mean(0)
            x = labels.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in zyx[::-1]))[0]
            assert np.sign(x) == sign


def test_vertebrae_in_cranio_caudal_order(phantom):
    _, labels, _ = phantom
    a = sitk.GetArrayViewFromImage(labels)
    spine = [b for b in TABLE.foreground() if b.region == "spine"]
    z = [np.argwhere(a == b.index)[:, 0].mean() for b in spine]
    assert all(z1 > z2 for z1, z2 in zip(z, z[1:])), "superior (+z) first"


def test_ct_intensities_look_like_ct(phantom):
    ct, labels, _ = phantom
    c, lab = sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(labels)
    assert ct.GetPixelID() == sitk.sitkInt16
    assert np.median(c[lab == 0]) < -500  # mostly air outside
    assert np.percentile(c[lab > 0], 90) > 400  # cortical bone (blurred at coarse spacing)
    assert ct.GetSpacing() == labels.GetSpacing() and ct.GetOrigin() == labels.GetOrigin()


def test_deterministic_and_varied():
    a_ct, a_lab, _ = make_phantom(3, spacing=4.0)
    b_ct, b_lab, _ = make_phantom(3, spacing=4.0)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a_ct), sitk.GetArrayViewFromImage(b_ct))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a_lab), sitk.GetArrayViewFromImage(b_lab))
    specs = [random_spec(s) for s in range(20)]
    assert {s.posture for s in specs} == {"lap", "crossed"}
    assert len({round(s.scale, 3) for s in specs}) == 20


def test_partial_field_of_view_is_shorter():
    full, _, _ = make_phantom(11, spacing=4.0, partial=False)
    part, lab, spec = make_phantom(11, spacing=4.0, partial=True)
    assert part.GetSize()[2] < full.GetSize()[2]
    assert spec.fov[1] - spec.fov[0] <= 600

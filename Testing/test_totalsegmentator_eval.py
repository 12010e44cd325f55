"""Evaluation against TotalSegmentator outputs, with known answers."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from BoneSegmentationLib.cli import main
from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.core.totalsegmentator import ts_index, ts_to_table
from BoneSegmentationLib.evaluation.totalsegmentator import evaluate_against_totalsegmentator


def test_mapping_follows_the_bone_table():
    lut, table = ts_to_table(), default_table()
    assert lut[ts_index("vertebrae_L3")] == table.by_name("vertebra_L3").index
    assert lut[ts_index("vertebrae_S1")] == table.by_name("sacrum").index
    assert lut[ts_index("sternum")] == table.by_name("sternum_body").index
    assert lut[ts_index("rib_left_7")] == table.by_name("rib_left_7").index
    assert lut[ts_index("heart")] == 0 and lut[ts_index("costal_cartilages")] == 0


def test_reference_itself_scores_one_and_a_flipped_copy_aligns(real_data, tmp_path):
    """The TotalSegmentator reference mapped onto our table scores Dice 1 against itself, even
    when stored with another direction matrix (the thorax reference is flipped in y)."""
    ref = sitk.ReadImage(str(real_data / "ts_abdomen_totalseg.nii.gz"))
    ours = sitk.GetImageFromArray(ts_to_table()[sitk.GetArrayFromImage(ref)])
    ours.CopyInformation(ref)
    flipped = sitk.Flip(ref, [False, True, False])
    result = evaluate_against_totalsegmentator(ours, flipped)
    assert result.foreground_dice == 1.0 and result.bone_in_vessels == 0.0
    assert all(d == 1.0 for d in result.per_bone.values()) and "vertebra_L3" in result.per_bone
    assert result.level_agreement == 1.0


def test_not_bone_measures_count_bone_in_the_aorta_and_outside_the_body(real_data, tmp_path):
    ref = sitk.ReadImage(str(real_data / "ts_abdomen_totalseg.nii.gz"))
    ct = sitk.ReadImage(str(real_data / "ts_abdomen_ct.nii.gz"))
    ts = sitk.GetArrayFromImage(ref)
    pred = ts_to_table()[ts].copy()
    aorta = ts == ts_index("aorta")
    pred[aorta] = default_table().by_name("femur_left").index  # every aorta voxel called bone
    pred[0, 0, 0:5] = default_table().by_name("cranium").index  # 5 voxels of bone in the air corner
    img = sitk.GetImageFromArray(pred)
    img.CopyInformation(ref)
    result = evaluate_against_totalsegmentator(img, ref, ct)
    vessels = np.isin(ts, [ts_index(n) for n in ("heart", "aorta", "inferior_vena_cava", "superior_vena_cava")])
    assert abs(result.bone_in_vessels - aorta.sum() / vessels.sum()) < 1e-9
    assert abs(result.bone_outside_body - 5 / np.count_nonzero(pred)) < 1e-9
    sitk.WriteImage(img, str(tmp_path / "pred.nii.gz"))
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(real_data / "ts_abdomen_totalseg.nii.gz"),
                 "--reference", "totalsegmentator", "--ct", str(real_data / "ts_abdomen_ct.nii.gz")]) == 0


def test_body_mask_keeps_the_arms_and_leaves_out_the_table(real_data):
    """The thorax scan: arms lie apart from the trunk (they are patient), the table below is not."""
    from BoneSegmentationLib.core.imageio import read_ct
    from BoneSegmentationLib.evaluation.totalsegmentator import body_mask, reference_on_grid

    ct = read_ct(real_data / "ts_thorax_dicom")[0]
    ts = reference_on_grid(sitk.ReadImage(str(real_data / "ts_thorax_totalseg.nii.gz")), ct)
    body = sitk.GetArrayFromImage(body_mask(ct)).astype(bool)
    assert np.count_nonzero(body & (ts > 0)) == np.count_nonzero(ts > 0)  # every structure, humeri included
    assert np.count_nonzero(body & np.isin(ts, [ts_index("humerus_left"), ts_index("humerus_right")])) > 1000
    hu = sitk.GetArrayFromImage(ct)
    back = np.nonzero((ts > 0).any(axis=(0, 2)))[0].max()  # LPS rows grow towards the back
    table = (hu > -300) & (np.arange(hu.shape[1]) > back + 30)[None, :, None]  # 3 cm behind the deepest muscle
    assert np.count_nonzero(table) > 10000 and not np.any(body & table)


def test_body_mask_keeps_the_ribs_of_a_thin_chest_wall_and_still_drops_a_two_shell_table():
    """A lean chest: lungs inside an 8 mm wall (thinner than a table top) with ribs in it, the wall
    broken by 4 mm gaps; 15 mm below, a 43 mm table of two 3 mm shells round a foam core."""
    from BoneSegmentationLib.evaluation.totalsegmentator import body_mask

    y, x = np.mgrid[0:200, 0:260] * 1.5  # 1.5 mm pixels, LPS rows grow towards the back
    r = np.hypot((x - 195) / 150, (y - 130) / 95)
    slice_ = np.full(y.shape, -1000.0)
    slice_[r < 1] = 40.0  # the wall ...
    slice_[r < 1 - 8 / 120] = -850.0  # ... around the lungs
    angle = np.degrees(np.arctan2(y - 130, x - 195))
    ribs = (r < 1 - 2 / 120) & (r > 1 - 6 / 120) & (np.abs(((angle + 180) % 30) - 15) < 6)
    slice_[ribs] = 700.0
    slice_[(r < 1) & (r > 1 - 8 / 120) & (np.abs(((angle + 180) % 45) - 22) < 1.2)] = -900.0  # gaps in the wall
    spine = np.hypot(x - 195, y - 205) < 22
    slice_[spine] = 400.0
    slice_[(y > 240) & (y < 243) & (x > 60) & (x < 330)] = 300.0  # upper shell
    slice_[(y > 280) & (y < 283) & (x > 60) & (x < 330)] = 300.0  # lower shell
    slice_[(y > 240) & (y < 283) & (((x > 60) & (x < 64)) | ((x > 326) & (x < 330)))] = 300.0  # joined
    slice_[(y >= 243) & (y <= 280) & (x >= 64) & (x <= 326)] = -900.0  # the foam core between
    ct = sitk.GetImageFromArray(np.repeat(slice_[None], 3, axis=0).astype(np.int16))
    ct.SetSpacing((1.5, 1.5, 3.0))
    body = sitk.GetArrayFromImage(body_mask(ct))[1].astype(bool)
    assert ribs.any() and body[ribs].all()
    assert body[spine].all()
    table = (y > 235) & (slice_ > -300)
    assert table.any() and not body[table].any()

"""The anatomy synthesiser: CT-like images from a real body's TotalSegmentator labels.

Needs ../shared/data/anatomy/s0011_labels.nii.gz (beside the repository, as in CI)."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.core.totalsegmentator import ts_indices, ts_to_table
from BoneSegmentationLib.synthetic import anatomy, tissue
from BoneSegmentationLib.synthetic.anatomy import ATTRIBUTION, ILIAC_SHIFT_MM, _iliac_height, load_source, synthesise
from conftest import ANATOMY_SOURCE

SOURCE = ANATOMY_SOURCE
TABLE = default_table()
pytestmark = pytest.mark.skipif(not SOURCE.is_file(), reason=f"{SOURCE} not present")


@pytest.fixture(scope="module")
def source():
    return load_source(SOURCE)


def _source_mask_on(case_image: sitk.Image, source, *names: str) -> np.ndarray:
    """The source's mask of TotalSegmentator structures resampled onto a synthesised grid (valid
    for deform=0, where the synthesiser's transform is the identity)."""
    idx = ts_indices()
    lut = np.zeros(256, np.uint8)
    lut[[idx[n] for n in names]] = 1
    on_grid = sitk.Resample(source.labels, case_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return lut[sitk.GetArrayFromImage(on_grid)].astype(bool)


def test_same_seed_same_case_other_seed_other_case(source):
    a = synthesise(source, 11, spacing=4.0)
    b = synthesise(source, 11, spacing=4.0)
    c = synthesise(source, 12, spacing=4.0)
    assert np.array_equal(sitk.GetArrayViewFromImage(a.ct), sitk.GetArrayViewFromImage(b.ct))
    assert np.array_equal(sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(b.labels))
    assert {k: v for k, v in a.spec.items() if k != "seconds"} == {k: v for k, v in b.spec.items() if k != "seconds"}
    same_grid = a.ct.GetSize() == c.ct.GetSize()
    assert not same_grid or not np.array_equal(sitk.GetArrayViewFromImage(a.ct), sitk.GetArrayViewFromImage(c.ct))


def test_image_and_labels_share_the_grid_and_bone_is_where_the_labels_say(source):
    case = synthesise(source, 3, spacing=4.0, fov="whole", phase="native", deform=0.0)
    for attr in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(case.ct, attr)() == getattr(case.labels, attr)()
    assert case.ct.GetPixelID() == sitk.sitkInt16 and case.labels.GetPixelID() == sitk.sitkUInt8
    ct = sitk.GetArrayViewFromImage(case.ct)
    labels = sitk.GetArrayViewFromImage(case.labels)
    bone = labels > 0
    assert np.median(ct[bone]) > 200  # cortical shell and trabecular core
    assert np.median(ct[~bone]) < 0  # air, fat, lungs and soft tissue
    # without deformation the labels are the source's, voxel for voxel: L3 lands where it was
    l3 = TABLE.by_name("vertebra_L3").index
    src_l3 = _source_mask_on(case.labels, source, "vertebrae_L3")
    ours = labels == l3
    assert ours.sum() > 100 and (ours & src_l3).sum() / (ours | src_l3).sum() > 0.99


def test_the_source_labels_come_with_the_image_deformed_as_it_is(source):
    """``source_labels`` (for figures such as bone called in the heart and vessels) share the
    image's grid and, deformed, still put every bone voxel of the labels on a source bone."""
    case = synthesise(source, 5, spacing=4.0)
    for attr in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(case.source_labels, attr)() == getattr(case.labels, attr)()
    ts = sitk.GetArrayViewFromImage(case.source_labels)
    labels = sitk.GetArrayViewFromImage(case.labels)
    mapped = ts_to_table(TABLE)[ts]
    skull = ts == ts_indices()["skull"]
    assert np.array_equal(labels > 0, (mapped > 0) | skull)
    aorta = ts == ts_indices()["aorta"]
    assert aorta.sum() > 50 and not (labels[aorta] > 0).any()


def test_bones_the_source_lacks_are_unlabelled_not_background(source):
    case = synthesise(source, 5, spacing=4.0)
    labelled = set(case.labelled)
    lacking = [b.name for b in TABLE.foreground() if b.region == "hand" or b.name.startswith(("radius", "ulna"))]
    lacking += ["maxilla", "mandible", "hyoid", "coccyx"] + [f"vertebra_C{i}" for i in range(1, 7)]
    assert not labelled & set(lacking)
    assert {"vertebra_L3", "rib_left_7", "femur_right", "hip_left", "sternum_body"} <= labelled
    present = set(np.unique(sitk.GetArrayViewFromImage(case.labels)).tolist()) - {0}
    assert not present & {TABLE.by_name(n).index for n in lacking}
    assert "CC BY 4.0" in ATTRIBUTION and "s0011" in ATTRIBUTION


def test_sternum_is_split_into_its_three_parts_top_to_bottom(source):
    case = synthesise(source, 9, spacing=4.0, fov="thorax", deform=0.0)
    labels = sitk.GetArrayViewFromImage(case.labels)
    z = {}
    for name in ("sternum_manubrium", "sternum_body", "sternum_xiphoid"):
        zs = np.nonzero((labels == TABLE.by_name(name).index).any(axis=(1, 2)))[0]
        assert len(zs), name
        z[name] = case.labels.TransformIndexToPhysicalPoint((0, 0, int(zs.mean())))[2]
    assert z["sternum_manubrium"] > z["sternum_body"] > z["sternum_xiphoid"]  # LPS z: up is +


@pytest.mark.parametrize("phase, low, high", [("native", 20, 70), ("arterial", 150, 620), ("portal_venous", 100, 250)])
def test_aorta_intensity_follows_the_contrast_phase(source, phase, low, high):
    case = synthesise(source, 21, spacing=4.0, fov="thorax", phase=phase, deform=0.0)
    assert case.spec["phase"] == phase
    ct = sitk.GetArrayViewFromImage(case.ct)
    aorta = _source_mask_on(case.ct, source, "aorta")
    # the lumen, away from the wall (calcifications) and partial volume
    core = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(aorta.astype(np.uint8)), [1, 1, 1])) > 0
    assert core.sum() > 50
    assert low <= np.median(ct[core]) <= high


def test_phase_ranges_are_those_of_clinical_ct():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, a, p = (tissue.draw_phase(rng, k) for k in tissue.PHASES)
        assert 30 <= n.arteries <= 55 and 30 <= n.heart <= 55
        assert 180 <= a.arteries <= 600 and a.heart <= 1.25 * a.arteries
        assert 120 <= p.arteries <= 230 and 110 <= p.veins <= 210
    with pytest.raises(ValueError, match="unknown contrast phase"):
        tissue.draw_phase(rng, "delayed")


def test_fields_of_view_and_spacing_vary_between_seeds(source):
    specs = [synthesise(source, s, spacing=None, fov="clinical_crop", deform=0.0).spec for s in range(100, 104)]
    assert len({tuple(s["spacing_mm"]) for s in specs}) > 1
    assert all(1.6 <= s["spacing_mm"][0] <= 2.6 and 1.6 <= s["spacing_mm"][2] <= 5.0 for s in specs)
    crop = synthesise(source, 7, spacing=(2.5, 5.0), fov="clinical_crop")
    assert crop.spec["fov"] == "clinical_crop" and 20 <= crop.ct.GetSize()[2] <= 61
    assert crop.ct.GetSpacing() == (2.5, 2.5, 5.0)
    with pytest.raises(ValueError, match="unknown field of view"):
        synthesise(source, 1, spacing=4.0, fov="legs")


@pytest.mark.parametrize("thin", [True, False])
def test_a_thin_cortex_fills_its_voxel_by_thickness_over_spacing(thin):
    """The anatomy synthesiser's shells: a 0.5 mm cortex in a 2 mm voxel is a faint rim (a quarter
    of the cortical HU over the cancellous core), as the scanner averages it; the phantom's older rule
    draws a brighter one. Values recomputed from the same seed's draws."""
    spacing = 2.0
    bone = np.zeros((12, 12, 12), bool)
    bone[2:10, 2:10, 2:10] = True
    depth = tissue.depth_mm(bone.astype(np.uint8), (spacing,) * 3)
    ct = np.zeros(bone.shape, np.float32)
    tissue.render_bone(ct, bone, depth, np.random.default_rng(7), spacing_mm=spacing, thin_cortex=thin)
    draws = np.random.default_rng(7)
    cortex_mm = draws.uniform(0.4, 2.5) if thin else draws.uniform(0.8, 2.5)
    cortical, trabecular = draws.uniform(600, 1800), draws.uniform(60, 400)
    fill = min(1.0, cortex_mm / spacing) if thin else min(1.0, 1.5 * cortex_mm / spacing + 0.3)
    rim = bone & (depth == 0)
    assert np.allclose(ct[rim], fill * cortical + (1 - fill) * trabecular, atol=1e-3)
    if thin:  # seed 7 draws a 1.7 mm shell: thinner than the 2 mm voxel, so never the full cortical HU
        assert cortex_mm < spacing and ct[rim].max() < cortical


def test_ribs_lie_in_a_chest_wall_not_against_air(source):
    """The source has no chest wall muscles; the envelope's muscle wall keeps the air away from
    the ribs (before it, 3.5-9.7 % of a rib's surroundings outside the lung were below -300 HU
    on some thoraces, where the drawn fat was thin). The unlabelled voxel between a rib and the
    lung (the pleura) takes the lung's blur, and more of them show in a body drawn larger: they are
    not the chest wall, so voxels touching the lung are left out."""
    ribs = [b.index for b in TABLE if b.name.startswith("rib_")]
    lungs = [ts_indices()[n] for n in anatomy._LUNGS]
    for seed in (3003, 3004):
        case = synthesise(source, seed, spacing=2.0, fov="thorax")
        lab, ct = sitk.GetArrayFromImage(case.labels), sitk.GetArrayFromImage(case.ct)
        ts = sitk.GetArrayFromImage(case.source_labels)
        rib = np.isin(lab, ribs)
        around = ndimage.binary_dilation(rib, np.ones((1, 3, 3), bool)) & ~rib
        around &= ts == 0  # not lung, not another structure
        around &= ~ndimage.binary_dilation(np.isin(ts, lungs), np.ones((3, 3, 3), bool))  # not the pleura
        assert rib.any() and around.sum() > 1000 and np.mean(ct[around] < -300) < 0.01


def test_metal_implants_sit_in_their_bones_keep_its_labels_and_cast_streaks(source):
    """A hip prosthesis per side and spinal screws, forced on: the metal lies in the femora, hips
    and vertebrae it replaces (rods alone in muscle), the labels are those of the image without
    implants (TotalSegmentator labels a prosthesis femur), and the soft tissue round the metal
    is streaked, darker and brighter, slice by slice."""
    with_ = synthesise(source, 3, spacing=4.0, fov="abdomen", deform=0.0, implants=True)
    without = synthesise(source, 3, spacing=4.0, fov="abdomen", deform=0.0, implants=False)
    assert set(with_.spec["implants"]) == {"hip_prosthesis_left", "hip_prosthesis_right", "spinal_fusion"}
    assert without.spec["implants"] == []
    lab = sitk.GetArrayFromImage(with_.labels)
    assert np.array_equal(lab, sitk.GetArrayViewFromImage(without.labels))
    ct, plain = sitk.GetArrayFromImage(with_.ct).astype(float), sitk.GetArrayFromImage(without.ct).astype(float)
    metal = ct > 2400
    src = sitk.GetArrayFromImage(with_.source_labels)
    idx = ts_indices()
    for side in ("left", "right"):
        femur = src == idx[f"femur_{side}"]
        assert np.count_nonzero(metal & femur) > 20  # ball, neck and stem
        assert np.count_nonzero((ct - plain > 800) & (src == idx[f"hip_{side}"])) > 0  # the cup, thin: blurred
    spine = np.isin(src, [idx[f"vertebrae_{n}"] for n in ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")])
    assert np.count_nonzero(metal & spine) > 0
    in_bone = metal & (lab > 0)
    assert in_bone.sum() / metal.sum() > 0.6  # the rest: rods behind the spine, blur at the edges
    assert plain.max() < 2400  # nothing that bright without implants (small metal in soft tissue is rarer)
    z = int(np.argmax((metal & (src == idx["femur_left"])).sum(axis=(1, 2))))
    soft = (src[z] == 0) & (ct[z] > -300) & ~ndimage.binary_dilation(metal[z], iterations=2)
    change = ct[z][soft] - plain[z][soft]
    assert change.min() < -100 and change.max() > 50  # dark and bright streaks
    other = synthesise(source, 4, spacing=4.0, fov="thorax", deform=0.0, implants=False)
    assert other.spec["implants"] == [] and sitk.GetArrayViewFromImage(other.ct).max() < 2400


def test_implants_come_from_their_own_random_stream(source):
    """An image whose draw puts no implant is the image that seed gave before implants existed:
    switching them off changes nothing else, so older runs' cases stay comparable."""
    for seed in range(20, 40):
        drawn = synthesise(source, seed, spacing=6.0, fov="thorax", deform=0.0)
        if not drawn.spec["implants"]:
            off = synthesise(source, seed, spacing=6.0, fov="thorax", deform=0.0, implants=False)
            assert np.array_equal(sitk.GetArrayViewFromImage(drawn.ct), sitk.GetArrayViewFromImage(off.ct))
            return
    pytest.fail("20 thorax images all drew implants")


def test_each_bone_has_its_own_cancellous_density():
    """``density_scale``: two bones of one image, one at half the image's cancellous density (a
    fatty pelvis), the other at the full one; the cortices alike, the cores apart by the factor."""
    bone = np.zeros((12, 12, 24), bool)
    bone[2:10, 2:10, 2:10] = True
    bone[2:10, 2:10, 14:22] = True
    scale = np.ones(bone.shape, np.float32)
    scale[..., 12:] = 0.5
    depth = tissue.depth_mm(np.where(bone, 1 + (np.arange(24) >= 12), 0).astype(np.uint8), (2.0,) * 3)
    ct = np.zeros(bone.shape, np.float32)
    tissue.render_bone(ct, bone, depth, np.random.default_rng(3), spacing_mm=2.0, thin_cortex=True, density_scale=scale)
    draws = np.random.default_rng(3)
    cortex_mm, _, trabecular = draws.uniform(0.4, 2.5), draws.uniform(600, 1800), draws.uniform(60, 400)
    core = bone & (depth > cortex_mm)
    left, right = core.copy(), core.copy()
    left[..., 12:], right[..., :12] = False, False
    assert abs(np.median(ct[left]) - trabecular) < 40 and abs(np.median(ct[right]) - trabecular / 2) < 40
    with_max = np.full(bone.shape, 10.0, np.float32)
    ct2 = np.zeros(bone.shape, np.float32)
    tissue.render_bone(ct2, bone, depth, np.random.default_rng(3), spacing_mm=2.0, thin_cortex=True, density_scale=with_max)
    assert np.median(ct2[core]) < tissue.TRABECULAR_MAX_HU + 40  # never denser than dense cancellous bone


@pytest.mark.parametrize("shift_mm", [-20.0, 20.0])
def test_iliac_crests_move_against_the_spine_and_the_hip_joints_stay(source, shift_mm):
    """The articulation that varies where the crests sit against the lumbar vertebrae: the crests
    rise or fall by the shift, L5, the sacrum's middle and the femoral heads do not move."""
    grid = sitk.Image([int(s * sp / 4) for s, sp in zip(source.labels.GetSize(), source.labels.GetSpacing())],
                      sitk.sitkUInt8)
    grid.SetOrigin(source.labels.GetOrigin())
    grid.SetSpacing((4.0, 4.0, 4.0))
    idx = ts_indices()
    moved = sitk.GetArrayFromImage(sitk.Resample(source.labels, grid, _iliac_height(source, shift_mm),
                                                 sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    still = sitk.GetArrayFromImage(sitk.Resample(source.labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                                 sitk.sitkUInt8))

    def top_mm(arr, name):
        return float(np.nonzero((arr == idx[name]).any(axis=(1, 2)))[0].max() * 4.0)

    def centre_mm(arr, name):
        return float(np.argwhere(arr == idx[name])[:, 0].mean() * 4.0)

    for side in ("hip_left", "hip_right"):
        assert abs(top_mm(moved, side) - top_mm(still, side) - shift_mm) <= 4.0
    for name in ("vertebrae_L5", "vertebrae_L3"):
        assert abs(centre_mm(moved, name) - centre_mm(still, name)) < 0.5
    for name in ("femur_left", "femur_right"):
        assert top_mm(moved, name) == top_mm(still, name)
    mid = int(round((source.pelvis.midline_x - grid.GetOrigin()[0]) / 4.0))
    sacrum_mid = slice(mid - 4, mid + 5)  # within 16 mm of the midline: untouched
    assert np.array_equal(moved[..., sacrum_mid] == idx["sacrum"], still[..., sacrum_mid] == idx["sacrum"])


def test_the_crests_height_is_drawn_per_image_within_its_range(source):
    shifts = [synthesise(source, seed, spacing=8.0, fov="abdomen", implants=False).spec["iliac_shift_mm"]
              for seed in (50, 51, 52)]
    assert all(abs(v) <= ILIAC_SHIFT_MM for v in shifts) and len(set(shifts)) == 3
    assert synthesise(source, 50, spacing=8.0, fov="abdomen", deform=0.0).spec["iliac_shift_mm"] == 0.0


def test_bone_density_falls_with_age_as_in_clinical_ct():
    """``trabecular_for_age``: about 250 HU at 20, the osteoporotic range (under 110 HU) common
    at 85, never outside the clip; one age's people spread round the mean."""
    rng = np.random.default_rng(0)
    young = [tissue.trabecular_for_age(25.0, rng) for _ in range(400)]
    old = [tissue.trabecular_for_age(85.0, rng) for _ in range(400)]
    assert 210 < np.mean(young) < 270 and 70 < np.mean(old) < 130
    assert 25 < np.std(young) < 45 and np.mean(np.array(old) < 110) > 0.4
    assert min(old + young) >= tissue.TRABECULAR_RANGE_HU[0] and max(old + young) <= tissue.TRABECULAR_RANGE_HU[1]


def test_the_image_bone_density_is_drawn_per_body_and_changes_only_the_bones(source):
    """Each image records its density (and the age it was drawn for); forcing another density
    changes the cancellous cores and leaves every voxel outside the bones as it was (its own
    random stream)."""
    drawn = [synthesise(source, seed, spacing=8.0, fov="abdomen", implants=False).spec for seed in (60, 61, 62)]
    assert len({d["trabecular_hu"] for d in drawn}) == 3
    assert all(tissue.TRABECULAR_RANGE_HU[0] <= d["trabecular_hu"] <= tissue.TRABECULAR_RANGE_HU[1] and
               tissue.AGE_YEARS[0] <= d["age_years"] <= tissue.AGE_YEARS[1] for d in drawn)
    low, high = (synthesise(source, 60, spacing=4.0, fov="abdomen", deform=0.0, implants=False, trabecular_hu=hu)
                 for hu in (80.0, 280.0))
    assert low.spec["trabecular_hu"] == 80.0 and low.spec["age_years"] is None
    bone = _source_mask_on(low.ct, source, "vertebrae_L3", "vertebrae_L4")
    core = ndimage.binary_erosion(bone, iterations=2)
    a_low, a_high = sitk.GetArrayFromImage(low.ct), sitk.GetArrayFromImage(high.ct)
    assert np.median(a_high[core] - a_low[core]) > 100  # 200 HU times the bones' own factors (0.6-1.25)
    far = ~ndimage.binary_dilation(sitk.GetArrayViewFromImage(low.labels) > 0, iterations=3)
    assert np.array_equal(a_low[far], a_high[far])


def test_a_bone_with_its_own_cortex_gets_that_rim_and_the_others_the_image_s():
    """``cortex_mm_map``: a vertebra's 0.3 mm shell in a 2 mm voxel is a rim of 15 % cortical HU over
    its core; a bone without an entry (NaN) keeps the image's one drawn thickness."""
    spacing = 2.0
    bone = np.zeros((12, 12, 24), bool)
    bone[2:10, 2:10, 2:10] = True
    bone[2:10, 2:10, 14:22] = True
    ids = np.where(bone, 1 + (np.arange(24) >= 12), 0).astype(np.uint8)
    depth = tissue.depth_mm(ids, (spacing,) * 3)
    cortex_map = np.where(ids == 1, np.float32(0.3), np.float32(np.nan))
    ct = np.zeros(bone.shape, np.float32)
    tissue.render_bone(ct, bone, depth, np.random.default_rng(7), spacing_mm=spacing, thin_cortex=True,
                       cortex_mm_map=cortex_map)
    draws = np.random.default_rng(7)
    cortex_mm, cortical, trabecular = draws.uniform(0.4, 2.5), draws.uniform(600, 1800), draws.uniform(60, 400)
    rim = bone & (depth == 0)
    thin, drawn = rim & (ids == 1), rim & (ids == 2)
    assert np.allclose(ct[thin], 0.15 * cortical + 0.85 * trabecular, atol=1e-2)
    fill = min(1.0, cortex_mm / spacing)
    assert np.allclose(ct[drawn], fill * cortical + (1 - fill) * trabecular, atol=1e-2)


def test_thin_cortices_are_drawn_per_bone_for_spine_sacrum_and_ribs_in_most_images(source, monkeypatch):
    """``_cortex_map``: vertebrae and sacrum 0.2-0.7 mm, ribs 0.4-1.2 mm, one draw per bone, every
    other bone NaN (the image's thickness); a quarter of the images keep one thickness for all.
    The image records which it drew, and the draw does not move the other structures' values."""
    idx = ts_indices()
    ts = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    maps = [anatomy._cortex_map(ts, idx, np.random.default_rng(seed)) for seed in range(40)]
    assert 0.55 <= np.mean([m is not None for m in maps]) <= 0.95
    m = next(m for m in maps if m is not None).ravel()
    for name, i in idx.items():
        if name.startswith(("vertebrae", "sacrum")):
            assert 0.2 <= m[i] <= 0.7, name
        elif name.startswith("rib"):
            assert 0.4 <= m[i] <= 1.2, name
        else:
            assert np.isnan(m[i]), name
    spines = [m.ravel()[idx["vertebrae_T12"]] for m in maps if m is not None]
    assert len(set(np.round(spines, 4))) > 5  # drawn per image, not fixed
    seed = next(seed for seed in range(60, 80)
                if synthesise(source, seed, spacing=8.0, fov="thorax", implants=False).spec["thin_cortices"])
    thin = synthesise(source, seed, spacing=4.0, fov="thorax", deform=0.0, implants=False)
    monkeypatch.setattr(anatomy, "THIN_CORTEX_SHARE", 0.0)
    one = synthesise(source, seed, spacing=4.0, fov="thorax", deform=0.0, implants=False)
    assert thin.spec["thin_cortices"] and not one.spec["thin_cortices"]
    a_thin, a_one = sitk.GetArrayFromImage(thin.ct), sitk.GetArrayFromImage(one.ct)
    spine = _source_mask_on(thin.ct, source, "vertebrae_T10", "vertebrae_T11", "vertebrae_T12")
    assert not np.array_equal(a_thin[spine], a_one[spine])
    far = ~ndimage.binary_dilation(sitk.GetArrayViewFromImage(thin.labels) > 0, iterations=3)
    assert np.array_equal(a_thin[far], a_one[far])


def test_a_bone_s_edge_voxels_are_part_bone_part_what_surrounds_them():
    """``rim_bone_fraction``: a voxel on a bone's outer edge gets that share of its bone value and the
    rest from the non-bone voxels round it; deeper voxels, the voxels outside, an edge where two
    bones meet and a bone's face cut by the image's border keep their values."""
    spacing = 2.0
    bone = np.zeros((14, 14, 26), bool)
    bone[0:12, 2:12, 2:12] = True  # cut by the image's first slice
    bone[2:12, 2:12, 12:24] = True  # a second bone touching the first
    ids = np.where(bone, 1 + (np.arange(26) >= 12), 0).astype(np.uint8)
    depth = tissue.depth_mm(ids, (spacing,) * 3)
    whole = np.full(bone.shape, 40.0, np.float32)
    mixed = whole.copy()
    tissue.render_bone(whole, bone, depth, np.random.default_rng(5), spacing_mm=spacing, thin_cortex=True)
    tissue.render_bone(mixed, bone, depth, np.random.default_rng(5), spacing_mm=spacing, thin_cortex=True,
                       rim_bone_fraction=0.6)
    edge = bone & ~ndimage.binary_erosion(bone, border_value=1)
    assert np.allclose(mixed[edge], 0.6 * whole[edge] + 0.4 * 40.0, atol=1e-3)
    assert (bone[0] & ~edge[0]).any()  # the cut face is not an edge
    assert np.array_equal(mixed[~edge], whole[~edge])
    contact = bone & (depth == 0) & ~edge  # the face where the two bones meet, inside the bone
    assert contact.any() and np.array_equal(mixed[contact], whole[contact])
    assert (mixed[edge] < whole[edge]).all()  # bone is brighter than the 40 HU round it


def test_the_edge_share_is_drawn_per_image_from_its_own_stream_and_recorded(source, monkeypatch):
    drawn = synthesise(source, 21, spacing=4.0, fov="thorax", deform=0.0, implants=False)
    lo, hi = anatomy.RIM_BONE_FRACTION
    assert lo <= drawn.spec["rim_bone_fraction"] <= hi
    others = {synthesise(source, s, spacing=8.0, fov="thorax", implants=False).spec["rim_bone_fraction"]
              for s in (22, 23, 24)}
    assert len(others | {drawn.spec["rim_bone_fraction"]}) == 4
    monkeypatch.setattr(anatomy, "RIM_BONE_FRACTION", (1.0, 1.0))
    whole = synthesise(source, 21, spacing=4.0, fov="thorax", deform=0.0, implants=False)
    assert whole.spec["rim_bone_fraction"] == 1.0
    a, b = sitk.GetArrayFromImage(drawn.ct), sitk.GetArrayFromImage(whole.ct)
    labels = sitk.GetArrayViewFromImage(drawn.labels) > 0
    assert not np.array_equal(a[labels], b[labels])
    far = ~ndimage.binary_dilation(labels, iterations=3)  # the scanner's blur spreads the change a little
    assert np.array_equal(a[far], b[far])


def test_the_old_pelvis_can_be_as_fatty_as_a_real_sacrum():
    """In half the images the sacrum and hips get a further factor of ``FATTY_PELVIS_FACTOR``: cores
    down to a fifth of the image's density (a 150 HU spine over a 30 HU sacrum), the spine untouched."""
    idx = ts_indices()
    ts = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    sacrum, spine = [], []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        lut = rng.uniform(0.6, 1.25, 256)
        scale = anatomy._density_scale(ts, idx, np.random.default_rng(seed)).ravel()
        sacrum.append(scale[idx["sacrum"]] / lut[idx["sacrum"]])
        spine.append(scale[idx["vertebrae_L3"]] / lut[idx["vertebrae_L3"]])
    assert np.allclose(spine, 1.0) and np.isclose(np.max(sacrum), 1.0)
    fatty = [f for f in sacrum if f < 0.999]  # float32 rounding leaves the others at 1 +- 1e-7
    assert 0.3 <= len(fatty) / len(sacrum) <= 0.7
    assert min(fatty) < 0.3 and min(fatty) >= anatomy.FATTY_PELVIS_FACTOR[0]


def test_a_larger_body_is_drawn_larger_across_only_and_the_image_widens_to_hold_it(source):
    """``body_size``: the bones grow by the factor left-right and front-back about the image's middle,
    not head to foot, and the grid widens with them so that nothing of the body is cut off."""
    kw = dict(spacing=6.0, fov="thorax", deform=0.0, implants=False)
    plain, large = synthesise(source, 31, **kw), synthesise(source, 31, body_size=1.25, **kw)
    assert plain.spec["body_size"] == 1.0 and large.spec["body_size"] == 1.25

    def extent_mm(case):  # per axis (x, y, z), of the labelled bone, in physical millimetres
        idx = np.argwhere(sitk.GetArrayViewFromImage(case.labels) > 0)[:, ::-1]
        lo = case.labels.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx.min(axis=0)])
        hi = case.labels.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx.max(axis=0)])
        return np.subtract(hi, lo), (np.add(hi, lo) / 2)

    (e0, c0), (e1, c1) = extent_mm(plain), extent_mm(large)
    assert np.allclose(e1[:2] / e0[:2], 1.25, atol=0.06)
    assert abs(e1[2] - e0[2]) <= 6.0
    assert np.allclose(c1[:2], c0[:2], atol=6.0)
    assert large.ct.GetSize()[0] > plain.ct.GetSize()[0] * 1.2 and large.ct.GetSize()[2] == plain.ct.GetSize()[2]
    body = sitk.GetArrayViewFromImage(large.ct) > -500
    assert not body[:, :, 0].any() and not body[:, :, -1].any()  # left and right edges: air


def _other_draws(spec: dict, forced: str) -> dict:
    """An image's recorded draws less the one forced and the timing: what forcing must not change."""
    return {k: v for k, v in spec.items() if k not in (forced, "seconds")}


def _assert_drawn_from_own_stream(source, seeds: tuple[int, int, int], key: str, argument: str, allowed,
                                  neutral: float, refused: float, forced: tuple[float, float], **kw) -> None:
    """One of the synthesiser's draws (recorded as ``key``, forced by ``argument``): it differs between
    ``seeds`` within ``allowed(value)``, is ``neutral`` without deformation, a value out of range is
    refused, and forcing it to either of ``forced`` leaves every other draw as it was."""
    values = [synthesise(source, s, **kw).spec[key] for s in seeds]
    assert all(allowed(v) for v in values) and len(set(values)) == 3
    assert synthesise(source, seeds[0], deform=0.0, **kw).spec[key] == neutral
    with pytest.raises(ValueError, match=argument):
        synthesise(source, seeds[0], **{argument: refused}, **kw)
    a, b = (synthesise(source, seeds[0], **{argument: v}, **kw).spec for v in forced)
    assert _other_draws(a, key) == _other_draws(b, key)


def test_the_body_size_is_drawn_per_image_from_its_own_stream(source):
    lo, hi = anatomy.BODY_SIZE
    _assert_drawn_from_own_stream(source, (32, 33, 34), "body_size", "body_size", lambda v: lo <= v <= hi,
                                  1.0, 0.0, (1.0, 1.2), spacing=8.0, fov="thorax", implants=False)


def _spine_angle_deg(case) -> float:
    """The lumbar and lower thoracic column's lean in the sagittal plane (front-back against head-foot,
    degrees), from its labelled voxels' principal axis in physical millimetres."""
    table = default_table()
    levels = [table.by_name(f"vertebra_{n}").index for n in ("T10", "T11", "T12", "L1", "L2", "L3", "L4")]
    idx = np.argwhere(np.isin(sitk.GetArrayViewFromImage(case.labels), levels))[:, ::-1].astype(float)
    points = np.array([case.labels.TransformContinuousIndexToPhysicalPoint(list(p)) for p in idx[::7]])
    yz = points[:, 1:] - points[:, 1:].mean(axis=0)
    axis = np.linalg.eigh(np.cov(yz.T))[1][:, 1]
    axis = axis if axis[1] > 0 else -axis  # pointing to the head
    return float(np.degrees(np.arctan2(axis[0], axis[1])))


def test_a_forced_tilt_turns_the_spine_by_that_angle_and_the_image_deepens_to_hold_it(source):
    """``tilt_deg``: the column leans that much more (towards the back at the head for a positive
    angle), and the image is deeper front to back so that the turned body is not cut off."""
    kw = dict(spacing=5.0, fov="abdomen", deform=0.0, implants=False)
    upright, turned = synthesise(source, 41, **kw), synthesise(source, 41, tilt_deg=12.0, **kw)
    assert upright.spec["sagittal_tilt_deg"] == 0.0 and turned.spec["sagittal_tilt_deg"] == 12.0
    assert abs(_spine_angle_deg(turned) - _spine_angle_deg(upright) - 12.0) < 2.5
    assert turned.ct.GetSize()[1] > upright.ct.GetSize()[1] and turned.ct.GetSize()[2] == upright.ct.GetSize()[2]
    body = sitk.GetArrayViewFromImage(turned.ct) > -500
    assert not body[:, 0, :].any()  # the front edge: air (the table lies behind the body)


def test_the_tilt_is_drawn_per_image_from_its_own_stream_and_smaller_on_a_long_view(source):
    _assert_drawn_from_own_stream(source, (42, 43, 44), "sagittal_tilt_deg", "tilt_deg",
                                  lambda v: abs(v) <= anatomy.SAGITTAL_TILT_DEG, 0.0, 60.0, (0.0, 10.0),
                                  spacing=8.0, fov="abdomen", implants=False)
    assert anatomy._tilt_limit(300.0) == anatomy.SAGITTAL_TILT_DEG  # an abdomen: the full range
    assert anatomy._tilt_limit(1000.0) < 5.0  # a whole upper body: its ends would move too far


def _extent_z_mm(case, *names: str) -> tuple[float, float]:
    """Lowest and highest LPS z (mm) of the slices holding any of the TotalSegmentator ``names``."""
    idx = ts_indices()
    rows = np.nonzero(np.isin(sitk.GetArrayViewFromImage(case.source_labels), [idx[n] for n in names])
                      .any(axis=(1, 2)))[0]
    z0, dz = case.ct.GetOrigin()[2], case.ct.GetSpacing()[2]
    return z0 + rows.min() * dz, z0 + rows.max() * dz


def test_a_forced_diaphragm_shift_moves_the_lungs_bases_and_the_liver_but_no_bone(source):
    """``diaphragm_shift_mm``: the lungs' lowest point and the liver's top are that much higher, the
    lungs' apices stay, and every bone label is where it was (only the organs moved)."""
    kw = dict(spacing=4.0, fov="whole", deform=0.0, implants=False)
    still, up, down = (synthesise(source, 51, diaphragm_shift_mm=d, **kw) for d in (0.0, 30.0, -30.0))
    assert (still.spec["diaphragm_shift_mm"], up.spec["diaphragm_shift_mm"]) == (0.0, 30.0)
    lungs = anatomy._LUNGS
    for case, shift in ((up, 30.0), (down, -30.0)):
        assert abs(_extent_z_mm(case, *lungs)[0] - _extent_z_mm(still, *lungs)[0] - shift) <= 8.0
        assert abs(_extent_z_mm(case, "liver")[1] - _extent_z_mm(still, "liver")[1] - shift) <= 8.0
        assert abs(_extent_z_mm(case, *lungs)[1] - _extent_z_mm(still, *lungs)[1]) <= 4.0  # the apices
        assert np.array_equal(sitk.GetArrayViewFromImage(case.labels), sitk.GetArrayViewFromImage(still.labels))
        ts_still, ts_case = (sitk.GetArrayViewFromImage(c.source_labels) for c in (still, case))
        aorta = ts_indices()["aorta"]
        assert np.array_equal(ts_case == aorta, ts_still == aorta)  # a vessel on the spine stays too


def test_the_diaphragm_shift_is_drawn_per_image_from_its_own_stream(source):
    _assert_drawn_from_own_stream(source, (52, 53, 54), "diaphragm_shift_mm", "diaphragm_shift_mm",
                                  lambda v: abs(v) <= anatomy.DIAPHRAGM_SHIFT_MM, 0.0, 150.0, (0.0, 20.0),
                                  spacing=8.0, fov="thorax", implants=False)


def test_the_views_tool_counts_vertebrae_called_any_bone_and_skips_images_without_a_spine(monkeypatch):
    """tools/evaluate_synthetic_views.py's "vertebrae found": the slab failure (vertebral bodies
    left as background) measured whatever name the bone gets; ribs do not count."""
    import importlib.util
    tool = Path(__file__).resolve().parents[1] / "tools" / "evaluate_synthetic_views.py"
    monkeypatch.syspath_prepend(str(tool.parent))  # as when run: the tools import each other
    spec = importlib.util.spec_from_file_location("evaluate_synthetic_views", tool)
    views = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(views)
    table = default_table()
    ref = np.zeros((10, 20, 20), np.uint8)
    ref[:, 2:12, 2:12] = table.by_name("vertebra_T12").index  # 1000 voxels of spine
    ref[:, 15:18, 15:18] = table.by_name("rib_left_12").index
    pred = np.zeros_like(ref)
    pred[:4, 2:12, 2:12] = table.by_name("femur_right").index  # 400 found, wrongly named
    pred[:, 15:18, 15:18] = ref[:, 15:18, 15:18]  # every rib voxel: not counted
    case = anatomy.SyntheticCase(ct=sitk.GetImageFromArray(ref.astype(np.int16)), labels=sitk.GetImageFromArray(ref),
                                 labelled=["vertebra_T12", "rib_left_12"])
    assert views.vertebrae_found(case, sitk.GetImageFromArray(pred)) == pytest.approx(0.4)
    ref[ref == table.by_name("vertebra_T12").index] = 0
    no_spine = anatomy.SyntheticCase(ct=case.ct, labels=sitk.GetImageFromArray(ref), labelled=["rib_left_12"])
    assert views.vertebrae_found(no_spine, sitk.GetImageFromArray(pred)) is None


def test_calcified_plaques_lie_on_the_artery_s_wall_more_with_age_mostly_at_its_back():
    """``tissue.add_plaques``: none at 40, more at 85 than at 60, every plaque voxel in the artery's
    outer 2.5 mm and in ``PLAQUE_HU``, and more of them in its back half (beside the spine)."""
    shape, spacing = (60, 40, 40), (2.0, 1.0, 1.0)
    zz, yy, xx = np.ogrid[:60, :40, :40]
    artery = np.broadcast_to((yy - 20) ** 2 + (xx - 20) ** 2 <= 10 ** 2, shape).copy()  # a 20 mm aorta
    labels = np.where(artery, 1, 0).astype(np.uint8)
    depth = tissue.depth_mm(labels, spacing)
    counts = {}
    for age in (40.0, 60.0, 85.0):
        drawn = []
        for seed in range(12):
            ct = np.where(artery, 200.0, 40.0).astype(np.float32)
            drawn.append(tissue.add_plaques(ct, artery, depth, age, np.random.default_rng(seed), spacing))
            plaque = ct > 250
            assert not (plaque & ~artery).any() and (depth[plaque] < tissue.PLAQUE_THICKNESS_MM[1]).all()
            assert ((ct[plaque] >= tissue.PLAQUE_HU[0]) & (ct[plaque] <= tissue.PLAQUE_HU[1])).all()
            if age == 85.0:
                back = np.count_nonzero(plaque[:, 21:, :])
                front = np.count_nonzero(plaque[:, :20, :])
                counts.setdefault("back", 0)
                counts["back"] += back - front
        counts[age] = sum(drawn)
    assert counts[40.0] == 0 and 0 < counts[60.0] < counts[85.0]
    assert counts["back"] > 0


def test_plaques_come_from_their_own_stream_and_change_no_label(source, monkeypatch):
    """An old body's image with its plaques and without: the same labels, the same voxels away from
    the arteries (the plaques' draws take nothing from the image's stream), brighter wall voxels."""
    kw = dict(spacing=4.0, fov="abdomen", implants=False)
    seed = next(s for s in range(60, 120) if synthesise(source, s, spacing=8.0, fov="abdomen",
                                                        implants=False).spec["plaques"] >= 3)
    with_plaques = synthesise(source, seed, **kw)
    monkeypatch.setattr(tissue, "PLAQUES_PER_DECADE", 0.0)
    without = synthesise(source, seed, **kw)
    assert with_plaques.spec["plaques"] >= 3 and without.spec["plaques"] == 0
    assert np.array_equal(sitk.GetArrayViewFromImage(with_plaques.labels), sitk.GetArrayViewFromImage(without.labels))
    a, b = (sitk.GetArrayFromImage(c.ct).astype(np.int32) for c in (with_plaques, without))
    idx = ts_indices()
    arteries = np.isin(sitk.GetArrayViewFromImage(without.source_labels),
                       [idx[n] for n in anatomy._ARTERIES])
    near = ndimage.binary_dilation(arteries, iterations=3)
    assert np.array_equal(a[~near], b[~near])
    assert (a[arteries] - b[arteries]).max() > 200


def test_the_aorta_widens_into_soft_tissue_and_lung_only():
    """``_widen_aorta`` pushes the wall out by the drawn mm into unlabelled tissue and lung, never
    into a bone or the heart, and leaves the map as it was at 0 mm."""
    from BoneSegmentationLib.core.totalsegmentator import ts_indices
    from BoneSegmentationLib.synthetic.anatomy import _widen_aorta

    idx = ts_indices()
    ts = np.zeros((30, 40, 40), np.uint8)
    ts[1:-1, 1:-1, 1:-1] = idx["lung_upper_lobe_left"]
    ts[5:25, 12:28, 12:28] = 0  # mediastinal fat
    ts[5:25, 18:22, 18:22] = idx["aorta"]
    ts[5:25, 18:22, 23:26] = idx["vertebrae_T5"]
    ts[5:25, 14:17, 18:22] = idx["heart"]
    assert np.array_equal(_widen_aorta(ts, 0.0, (2.0, 2.0, 2.0)), ts)
    wide = _widen_aorta(ts, 4.0, (2.0, 2.0, 2.0))
    assert (wide == idx["aorta"]).sum() > 2 * (ts == idx["aorta"]).sum()
    changed = wide != ts
    assert np.all(wide[changed] == idx["aorta"])
    assert not np.any(changed & np.isin(ts, [idx["vertebrae_T5"], idx["heart"]]))
    assert wide[15, 20, 16] == idx["aorta"] and ts[15, 20, 16] == 0  # 4 mm from the wall: taken
    assert wide[15, 20, 12] == ts[15, 20, 12]  # 12 mm away: as it was


def test_a_joint_space_is_drawn_dark_between_two_bones_and_their_cortex_moves_behind_it():
    """Two bones whose labels touch (a femoral head in its acetabulum, two facets) get a dark layer
    of cartilage on the voxels that meet, each by half the width over the spacing across the joint;
    the voxels behind take the cortex those voxels held; a bone's face against soft tissue, and a
    bone with no neighbour, keep their values."""
    spacing = (3.0, 2.0, 2.0)
    bones = np.zeros((10, 12, 24), np.uint8)
    bones[2:8, 2:10, 2:12] = 1
    bones[2:8, 2:10, 12:22] = 2  # touching the first across x
    depth = tissue.depth_mm(bones, spacing)
    ct = np.where(bones > 0, np.where(depth == 0, 1200.0, 200.0), 40.0).astype(np.float32)  # a cortex on every face
    before = ct.copy()
    painted = tissue.add_joint_spaces(ct, bones, spacing, width_mm=3.0, joint_hu=60.0)
    joint = np.zeros(bones.shape, bool)
    joint[2:8, 2:10, 11:13] = True
    assert painted == joint.sum() and np.array_equal(tissue.bone_contacts(bones), joint)
    share = 1.5 / 2.0  # half the width over the in-plane spacing the joint is crossed along
    assert np.allclose(ct[joint], (1 - share) * before[joint] + share * 60.0, atol=1e-3)
    assert (ct[joint] < before[joint]).all()
    behind = np.zeros(bones.shape, bool)
    behind[2:8, 2:10, [10, 13]] = True
    assert np.allclose(ct[behind & (depth > 0)], (1 - share) * 200.0 + share * 1200.0, atol=1e-3)
    assert np.array_equal(ct[~(joint | behind)], before[~(joint | behind)])
    alone = np.where(bones == 1, 1, 0).astype(np.uint8)
    untouched = before.copy()
    assert tissue.add_joint_spaces(untouched, alone, spacing, width_mm=3.0, joint_hu=60.0) == 0
    assert np.array_equal(untouched, before)


def test_joint_spaces_come_from_their_own_stream_change_no_label_and_are_recorded(source, monkeypatch):
    kw = dict(spacing=4.0, fov="abdomen", deform=0.0, implants=False)
    drawn = synthesise(source, 31, **kw)
    lo, hi = tissue.JOINT_SPACE_MM
    assert lo <= drawn.spec["joint_space_mm"] <= hi
    monkeypatch.setattr(tissue, "JOINT_SPACE_MM", (0.0, 0.0))
    none = synthesise(source, 31, **kw)
    assert none.spec["joint_space_mm"] == 0.0
    assert np.array_equal(sitk.GetArrayViewFromImage(drawn.labels), sitk.GetArrayViewFromImage(none.labels))
    a, b = sitk.GetArrayFromImage(drawn.ct), sitk.GetArrayFromImage(none.ct)
    labels = sitk.GetArrayViewFromImage(none.labels)
    femur, hip = (labels == TABLE.by_name(n).index for n in ("femur_right", "hip_right"))
    head_on_cup = femur & ndimage.binary_dilation(hip)
    assert head_on_cup.sum() > 5 and a[head_on_cup].mean() < b[head_on_cup].mean() - 20
    contacts = tissue.bone_contacts(ts_to_table()[sitk.GetArrayViewFromImage(none.source_labels)])
    far = ~ndimage.binary_dilation(contacts, iterations=4)  # beyond every joint, the plate and the blur
    assert np.array_equal(a[far], b[far])


def test_an_intervertebral_disc_is_the_unlabelled_gap_in_front_between_two_consecutive_vertebrae():
    """Between L3's and L4's bodies (a 6 mm gap) the unlabelled voxels within reach of both are
    disc; the gap between their arches and the canal (behind the cord's front), voxels out of reach
    of either, and the gap between two vertebrae that are not neighbours in the column are not."""
    idx = ts_indices()
    spacing = (2.0, 2.0, 2.0)
    ts = np.zeros((40, 30, 20), np.uint8)
    l3, l4, t1 = idx["vertebrae_L3"], idx["vertebrae_L4"], idx["vertebrae_T1"]
    ts[24:34, 4:14, 5:15] = l3  # bodies in front (small y), arches behind
    ts[24:34, 18:26, 8:12] = l3
    ts[12:21, 4:14, 5:15] = l4
    ts[12:21, 18:26, 8:12] = l4
    ts[:, 15:17, 9:11] = idx["spinal_cord"]
    disc = anatomy.intervertebral_discs(ts, spacing)
    gap_in_front = np.zeros(ts.shape, bool)
    gap_in_front[21:24, 4:14, 5:15] = True
    assert disc[gap_in_front].all()
    assert not disc[21:24, 15:, :].any()  # from the cord back: the canal and between the arches
    assert not disc[ts > 0].any() and not disc[:, :, :2].any()  # labelled, or beyond 7 mm of both
    ts[ts == l4] = t1  # T1 below L3: not a disc apart
    assert not anatomy.intervertebral_discs(ts, spacing).any()
    l5, sacrum = idx["vertebrae_L5"], idx["sacrum"]
    ts[:] = 0
    ts[24:34, 4:14, 5:15] = l5
    ts[12:21, 4:14, 5:15] = sacrum  # S1 not labelled: the sacrum's top stands in
    ts[:, 15:17, 9:11] = idx["spinal_cord"]
    assert anatomy.intervertebral_discs(ts, spacing)[gap_in_front].all()
    ts[ts == l5] = 0  # the sacrum alone, no structure numbered above it: no disc, no error
    assert not anatomy.intervertebral_discs(ts, spacing).any()


def test_discs_are_painted_as_fibrocartilage_from_their_own_stream(source, monkeypatch):
    """Each image draws its discs' HU in ``tissue.DISC_HU`` from a stream of its own: the labels and
    every voxel away from the discs stay as they were without them, and the discs read near the
    drawn HU (brighter than the fat and muscle the gap held before)."""
    kw = dict(spacing=3.0, fov="abdomen", deform=0.0, implants=False, phase="native")
    case = synthesise(source, 31, **kw)
    lo, hi = tissue.DISC_HU
    assert lo <= case.spec["disc_hu"] <= hi
    monkeypatch.setattr(anatomy, "intervertebral_discs", lambda ts, spacing: np.zeros(ts.shape, bool))
    plain = synthesise(source, 31, **kw)
    assert np.array_equal(sitk.GetArrayViewFromImage(case.labels), sitk.GetArrayViewFromImage(plain.labels))
    ts = sitk.GetArrayViewFromImage(case.source_labels)
    monkeypatch.undo()
    disc = anatomy.intervertebral_discs(ts, tuple(case.ct.GetSpacing()[::-1]))
    assert disc.sum() > 300  # T12/L1 ... L5/S1 in view
    a, b = sitk.GetArrayFromImage(case.ct).astype(float), sitk.GetArrayFromImage(plain.ct).astype(float)
    core = disc & ~ndimage.binary_dilation(ts > 0)  # not blurred with the bone beside
    assert abs(np.median(a[core]) - case.spec["disc_hu"]) < 30
    assert np.median(a[core]) > np.median(b[core]) + 30
    far = ~ndimage.binary_dilation(disc, iterations=5)  # beyond the scanner's blur and its rounded tail
    assert np.array_equal(a[far], b[far])


def test_the_sampled_deformation_gives_the_labels_the_exact_transform_gives(source):
    """The synthesiser samples its deformation every ``FIELD_STEP_MM`` and interpolates between
    (4-5x faster than evaluating the B-spline at every voxel): on a deformed, tilted body with its
    iliac wings moved, the points it reads lie within 0.75 mm of the exact ones (99 % within
    0.2 mm) wherever the source has a label, a fraction of the source's 1.5 mm voxel, and almost
    every voxel gets the label the exact transform gives."""
    src = source.labels
    lo = np.array(src.GetOrigin())
    hi = lo + (np.array(src.GetSize()) - 1) * np.array(src.GetSpacing())
    centre = (lo + hi) / 2
    transform = anatomy._deformation(centre, lo, hi, np.random.default_rng(5), 1.0)
    turn = sitk.Euler3DTransform()
    turn.SetCenter(tuple(float(c) for c in centre))
    turn.SetRotation(float(np.deg2rad(12.0)), 0.0, 0.0)
    transform = sitk.CompositeTransform([_iliac_height(source, 20.0), transform, turn])
    grid = sitk.Image([int((h - l) / 4.0) + 1 for l, h in zip(lo, hi)], sitk.sitkUInt8)
    grid.SetOrigin(tuple(float(v) for v in lo))
    grid.SetSpacing((4.0, 4.0, 4.0))
    sampled = sitk.GetArrayFromImage(anatomy._sample_labels(src, grid, transform))
    exact = sitk.GetArrayFromImage(sitk.Resample(src, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    labelled = np.count_nonzero(exact)
    assert labelled > 100_000
    assert np.count_nonzero(sampled != exact) < 0.001 * labelled
    assert np.array_equal(np.bincount(sampled.ravel(), minlength=256) > 0, np.bincount(exact.ravel(), minlength=256) > 0)
    # where the points land: the field the synthesiser builds, read back near labelled voxels' centres
    field = anatomy.sampled_transform(transform, grid)
    rng = np.random.default_rng(0)
    zyx = np.argwhere(exact > 0)[rng.choice(labelled, 2000, replace=False)] + rng.uniform(-0.5, 0.5, (2000, 3))
    errors = [np.linalg.norm(np.subtract(transform.TransformPoint(p), field.TransformPoint(p)))
              for p in (grid.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in q[::-1])) for q in zyx)]
    assert max(errors) < 0.75 and np.percentile(errors, 99) < 0.2


@pytest.mark.parametrize("shape, small", [((37, 41, 29), (6, 9, 5)), ((64, 50, 33), (64, 26, 12)), ((9, 10, 11), (2, 2, 2))])
def test_the_fields_are_upsampled_as_scipy_s_linear_zoom_does(shape, small):
    field = np.random.default_rng(3).standard_normal(small).astype(np.float32)
    zoomed = ndimage.zoom(field, [s / f for s, f in zip(shape, small)], order=1, grid_mode=True, mode="nearest")
    assert zoomed.shape == shape
    up = tissue.upsample_linear(field, shape)
    assert up.shape == shape and up.dtype == np.float32
    assert np.allclose(up, zoomed, atol=1e-5)


@pytest.mark.parametrize("spacing", [(3.0, 0.8, 0.8), (1.0, 1.0, 1.0), (2.5, 0.7, 1.9)])
def test_distances_are_scipy_s_exact_euclidean_distances(spacing):
    mask = np.random.default_rng(4).random((30, 40, 35)) < 0.004
    mask[15, 20, 17] = True
    distance = tissue.distance_to_mm(mask, spacing)
    assert distance.dtype == np.float32 and distance.shape == mask.shape
    assert np.allclose(distance, ndimage.distance_transform_edt(~mask, sampling=spacing), atol=1e-4)
    assert (distance[mask] == 0).all()
    assert np.isinf(tissue.distance_to_mm(np.zeros((4, 5, 6), bool), spacing)).all()


@pytest.mark.parametrize("width, iterations, square", [(17, 2, 9), (5, 1, 5), (3, 1, 3)])
def test_the_body_is_closed_in_each_slice_as_scipy_s_closing_closes_it(width, iterations, square):
    rng = np.random.default_rng(6)
    mask = rng.random((7, 60, 50)) < 0.3
    mask[:, :4, :20] = True  # against the array's edge, where the outside counts as empty
    closed = tissue.close_in_plane(mask, width)
    assert closed.dtype == bool and closed.shape == mask.shape
    expected = ndimage.binary_closing(mask, structure=np.ones((1, square, square), bool), iterations=iterations)
    assert np.array_equal(closed, expected)

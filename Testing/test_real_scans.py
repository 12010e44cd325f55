"""Real CT scans (NIfTI and DICOM): output geometry equals the input exactly, any orientation."""

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.core.imageio import read_image, same_geometry
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.inference.segmenter import segment_image
from BoneSegmentationLib.inference.options import InferenceOptions

TS_THORAX_BONES = [32, 33] + list(range(97, 104)) + list(range(109, 116))  # T12, T11, ribs 6-12


def assert_same_grid(out, ref):
    assert out.GetSize() == ref.GetSize()
    assert out.GetOrigin() == pytest.approx(ref.GetOrigin(), abs=1e-6)
    assert out.GetSpacing() == pytest.approx(ref.GetSpacing(), abs=1e-9)
    assert out.GetDirection() == pytest.approx(ref.GetDirection(), abs=1e-9)


@pytest.fixture(scope="module")
def model(random_model_file_4mm):
    """Random weights on the bundled model's 4 mm grid: coarser than the abdomen's 3 mm and the
    DICOM slab's 1 mm, finer than the halved abdomen's 6 mm."""
    return load_model(random_model_file_4mm)


@pytest.fixture(scope="module")
def abdomen(real_data):
    return sitk.ReadImage(str(real_data / "ts_abdomen_ct.nii.gz"))


@pytest.fixture(scope="module")
def abdomen_result(abdomen, model):
    return segment_image(abdomen, model, options=InferenceOptions(device="cpu", overlap=0.25))


def test_nifti_geometry_preserved(abdomen, abdomen_result):
    assert_same_grid(abdomen_result.labels, abdomen)
    assert abdomen_result.labels.GetPixelID() == sitk.sitkUInt8
    labels = sitk.GetArrayViewFromImage(abdomen_result.labels)
    assert len(np.unique(labels)) > 5  # random weights still give a varied map
    conf = sitk.GetArrayViewFromImage(abdomen_result.confidence)
    assert conf.min() >= 1 / 126 - 1e-3 and conf.max() <= 1.0 + 1e-3
    assert abdomen_result.confidence.GetSpacing() == pytest.approx((4.0, 4.0, 4.0))


def test_reoriented_input_gives_the_same_labels_in_physical_space(abdomen, abdomen_result, model):
    """Permute and flip the axes (the header changes, the anatomy does not): the result must be
    identical voxel for voxel once mapped back by physical coordinates."""
    moved = sitk.Flip(sitk.PermuteAxes(abdomen, [2, 0, 1]), [True, False, True])
    assert moved.GetDirection() != abdomen.GetDirection()
    result = segment_image(moved, model, options=InferenceOptions(device="cpu", overlap=0.25))
    assert_same_grid(result.labels, moved)
    back = sitk.Resample(result.labels, abdomen, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back),
                                  sitk.GetArrayViewFromImage(abdomen_result.labels))


def test_oblique_direction_geometry_preserved(abdomen, model):
    small = abdomen[::2, ::2, ::2]
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    small.SetDirection(tuple((rot @ np.array(small.GetDirection()).reshape(3, 3)).ravel()))
    result = segment_image(small, model, options=InferenceOptions(device="cpu", overlap=0.0))
    assert_same_grid(result.labels, small)


def test_dicom_series_geometry_and_reference_alignment(real_data, model, tmp_path):
    from BoneSegmentationLib.cli import main

    out = tmp_path / "thorax_labels.nrrd"
    assert main(["segment", str(real_data / "ts_thorax_dicom"), "-o", str(out), "--model",
                 str(model.path), "--device", "cpu", "--overlap", "0.25", "-q"]) == 0
    ct = read_image(real_data / "ts_thorax_dicom")
    labels = sitk.ReadImage(str(out))
    assert_same_grid(labels, ct)
    # The TotalSegmentator reference is stored with y flipped: align it by physical coordinates
    reference = sitk.ReadImage(str(real_data / "ts_thorax_totalseg.nii.gz"))
    assert reference.GetDirection() != ct.GetDirection()
    on_output_grid = sitk.Resample(reference, labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    assert same_geometry(on_output_grid, labels)
    hu = sitk.GetArrayViewFromImage(ct)
    bone_ref = np.isin(sitk.GetArrayViewFromImage(on_output_grid), TS_THORAX_BONES)
    naive = np.isin(sitk.GetArrayViewFromImage(reference), TS_THORAX_BONES)  # by array index: wrong
    assert bone_ref.sum() > 10_000
    physical = (hu[bone_ref] > 150).mean()
    by_index = (hu[naive] > 150).mean()
    assert physical > 0.6, physical
    assert by_index < 0.1, by_index

"""Every bad input gets its own specific error; suspicious intensities get a warning."""

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.core.errors import InputImageError
from BoneSegmentationLib.core.imageio import check_ct, read_ct, read_image, same_geometry, write_image


def ct_like(shape=(60, 24, 28), spacing=(1.0, 1.0, 2.0)):
    rng = np.random.default_rng(0)
    a = rng.normal(40, 20, shape).astype(np.int16)
    a[:, :3] = -1000
    a[5:10, 6:18, 6:18] = 900
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(spacing)
    return img


def test_good_ct_has_no_warning():
    assert check_ct(ct_like()) == []


@pytest.mark.parametrize("orientation", ["LPS", "PIR"])
def test_a_short_field_of_view_is_warned_about_in_any_orientation(orientation):
    """A 20-slice chest slab (40 mm): the names of its bones are unreliable; 120 mm is not warned
    about, whichever image axis runs head to foot."""
    short = sitk.DICOMOrient(ct_like(shape=(20, 24, 28)), orientation)
    [warning] = check_ct(short, name="slab.nii.gz")
    assert warning.startswith("slab.nii.gz covers only 40 mm from head to foot") and "check every label" in warning
    assert check_ct(sitk.DICOMOrient(ct_like(), orientation)) == []


def test_missing_file(tmp_path):
    with pytest.raises(InputImageError, match="input not found"):
        read_image(tmp_path / "nothing.nii.gz")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage that is not a nifti")
    with pytest.raises(InputImageError, match="corrupt or not a supported image format"):
        read_image(bad)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputImageError, match="no DICOM series"):
        read_image(tmp_path)


def test_4d_is_refused(tmp_path):
    img = sitk.JoinSeries([ct_like(), ct_like()])
    assert img.GetDimension() == 4
    path = tmp_path / "cine.nii.gz"
    sitk.WriteImage(img, str(path))
    with pytest.raises(InputImageError, match="is 4D"):
        read_ct(path)


def test_2d_and_single_slice_are_refused():
    with pytest.raises(InputImageError, match="is 2D"):
        check_ct(sitk.Image(10, 10, sitk.sitkInt16))
    with pytest.raises(InputImageError, match="single slice"):
        check_ct(sitk.Image(10, 10, 1, sitk.sitkInt16))


def test_constant_image_is_empty():
    with pytest.raises(InputImageError, match="empty: every voxel has the value"):
        check_ct(sitk.Image(8, 8, 8, sitk.sitkInt16))


def test_nan_is_refused():
    a = sitk.GetArrayFromImage(ct_like()).astype(np.float32)
    a[3, 4, 5] = np.nan
    a[0, 0, 0] = np.inf
    with pytest.raises(InputImageError, match="2 NaN or infinite"):
        check_ct(sitk.GetImageFromArray(a))


@pytest.mark.parametrize("spacing", [(0.0, 1, 1), (1, 1, 250.0), (1e-4, 1, 1)])
def test_absurd_spacing(spacing):
    img = ct_like()
    # SimpleITK refuses zero spacing in SetSpacing; build the header the way a broken file would
    if spacing[0] == 0.0:
        with pytest.raises(Exception):
            img.SetSpacing(spacing)
        return
    img.SetSpacing(spacing)
    with pytest.raises(InputImageError, match="implausible voxel spacing"):
        check_ct(img)


def test_vector_image_is_refused():
    rgb = sitk.Compose([ct_like()] * 3)
    with pytest.raises(InputImageError, match="3 components per voxel"):
        check_ct(rgb)


def test_mr_like_or_unrescaled_intensities_warn():
    a = np.random.default_rng(1).integers(0, 4095, (120, 16, 16)).astype(np.uint16)  # 120 mm long
    warnings = check_ct(sitk.GetImageFromArray(a))
    assert len(warnings) == 1 and "does not look like CT in Hounsfield units" in warnings[0]


def test_atomic_write_never_overwrites(tmp_path):
    img = ct_like()
    path = write_image(img, tmp_path / "out.nii.gz")
    with pytest.raises(FileExistsError, match="already exists"):
        write_image(img, path)
    write_image(img, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
    assert same_geometry(sitk.ReadImage(str(path)), img)
    with pytest.raises(InputImageError, match="use one of"):
        write_image(img, tmp_path / "out.png")

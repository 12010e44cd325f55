"""Every bad input gets its own specific error; suspicious intensities get a warning."""

import contextlib
import locale
import logging

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
    """A 20-slice chest slab (40 mm): its bone is missed and misnamed; 120 mm is not warned
    about, whichever image axis runs head to foot."""
    short = sitk.DICOMOrient(ct_like(shape=(20, 24, 28)), orientation)
    [warning] = check_ct(short, name="slab.nii.gz")
    assert warning.startswith("slab.nii.gz covers only 40 mm from head to foot") and "check every label" in warning
    assert "expect missed bone" in warning
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


@pytest.mark.parametrize("scale", [1e30, -1e6])
def test_values_far_outside_ct_range_are_refused(tmp_path, scale):
    """A header's rescale slope of 1e30 turns a CT into values no scanner writes: refused, not segmented."""
    import gzip
    import struct

    sane = _written(tmp_path, ct_like())
    header = bytearray(gzip.decompress(sane.read_bytes()))
    header[112:120] = struct.pack("<ff", scale, 0.0)  # NIfTI-1 scl_slope, scl_inter (SimpleITK writes little-endian)
    path = tmp_path / "slope.nii.gz"
    path.write_bytes(gzip.compress(bytes(header)))
    with pytest.raises(InputImageError, match="far outside any CT's range.*rescale slope"):
        read_ct(path)
    read_ct(sane)  # the same voxels with a sane header are read


def _written(tmp_path, image):
    path = tmp_path / "sane.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_complex_image_is_refused(tmp_path):
    a = sitk.GetArrayFromImage(ct_like()).astype(np.complex64)
    path = tmp_path / "raw.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(path))
    with pytest.raises(InputImageError, match="complex voxel values"):
        read_ct(path)


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


@contextlib.contextmanager
def keeping_locale():
    """GDCM's DICOM writer sets the C locale and leaves it so: Python's default text encoding would
    be ASCII for every later test in the process. Put back what was there."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def write_dicom_series(folder, volume, spacing=(0.8, 0.8, 2.0), tilt_deg=0.0, origin=(-50.0, -60.0, 100.0),
                       row=(1.0, 0.0, 0.0), column=(0.0, 1.0, 0.0), modality="CT", series=2, study=1):
    """``volume`` (slices first) as a CT DICOM series, one file per slice, written by SimpleITK; a
    gantry tilt shifts each slice along its columns by spacing x tan(tilt), as a tilted gantry does."""
    import math

    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.42"
    row, column = np.array(row), np.array(column)
    normal = np.cross(row, column)
    for k, plane in enumerate(volume):
        image = sitk.GetImageFromArray(plane.astype(np.int16))
        image.SetSpacing(spacing[:2])
        position = np.array(origin) + k * spacing[2] * (normal + math.tan(math.radians(tilt_deg)) * column)
        for tag, value in [("0008|0060", modality), ("0020|000d", f"{uid}.{study}"), ("0020|000e", f"{uid}.{series}"),
                           ("0008|0018", f"{uid}.3.{k}" if series == 2 else f"{uid}.3.{series}.{k}"),
                           ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(f"{v:.5f}" for v in position)),
                           ("0020|0037", "\\".join(f"{v:.6f}" for v in (*row, *column))),
                           ("0018|0050", f"{spacing[2]:g}"), ("0028|1053", "1"), ("0028|1052", "0")]:
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / (f"slice{k:03d}.dcm" if series == 2 else f"series{series}_slice{k:03d}.dcm")))
        with keeping_locale():
            writer.Execute(image)


def cube_column(shape=(30, 64, 64)):
    volume = np.full(shape, -1000, np.int16)
    volume[:, 20:40, 16:36] = 500  # a bar through every slice, at the same place in each
    return volume


def bar_centre_mm(image, k):
    """Physical centre of the bright bar in the slice of ``image`` nearest to slice index ``k``."""
    plane = sitk.GetArrayViewFromImage(image)[k] > 0
    y, x = np.nonzero(plane)
    return np.array(image.TransformContinuousIndexToPhysicalPoint((float(x.mean()), float(y.mean()), float(k))))


@pytest.mark.parametrize("column", [(0.0, 1.0, 0.0), (0.0, 0.6, -0.8)])
def test_a_gantry_tilted_series_is_put_on_a_regular_grid_where_it_was_scanned(tmp_path, caplog, column):
    """ITK stacks a tilted series straight (20 degrees: the last of 30 slices 21 mm off and the
    spacing stretched to 2.13 mm); the reader resamples it so that each slice's bar sits at the
    place its file's position says, and warns in one line. An oblique series too."""
    import math

    write_dicom_series(tmp_path / "tilted", cube_column(), tilt_deg=20.0, column=column)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "tilted"))
    raw = sitk.ReadImage(files)
    assert raw.GetSpacing()[2] == pytest.approx(2.0 / math.cos(math.radians(20)), abs=1e-3)  # what ITK alone does
    with caplog.at_level("WARNING"):
        image = read_image(tmp_path / "tilted")
    [warning] = [r.getMessage() for r in caplog.records]
    assert "gantry-tilted (20.0 degrees)" in warning and "regular grid" in warning
    assert image.GetSpacing() == pytest.approx((0.8, 0.8, 2.0))
    column = np.array(column) / np.linalg.norm(column)
    normal = np.cross((1.0, 0.0, 0.0), column)
    first = bar_centre_mm(image, 0)
    for k in (10, 29):
        expected = first + k * 2.0 * (normal + math.tan(math.radians(20)) * column)
        assert np.linalg.norm(bar_centre_mm(image, k) - expected) < 0.5  # under a voxel
    assert np.linalg.norm(bar_centre_mm(raw, 29) - (first + 29 * 2.0 * (normal + math.tan(math.radians(20)) * column))) > 15


def test_an_untilted_series_is_read_exactly_as_itk_reads_it(tmp_path, caplog):
    write_dicom_series(tmp_path / "straight", cube_column())
    raw = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "straight")))
    with caplog.at_level("WARNING"):
        image = read_image(tmp_path / "straight")
    assert not caplog.records
    assert same_geometry(image, raw) and image.GetSize() == raw.GetSize()
    assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(raw))


def test_segmenting_a_tilted_series_writes_labels_on_the_regular_grid_with_one_warning(tmp_path, caplog):
    from BoneSegmentationLib.cli import main

    write_dicom_series(tmp_path / "tilted", cube_column(), tilt_deg=15.0)
    out = tmp_path / "labels.nii.gz"
    with caplog.at_level("WARNING"):
        assert main(["segment", str(tmp_path / "tilted"), "-o", str(out), "-q"]) == 0
    tilted = [r.getMessage() for r in caplog.records if "gantry-tilted" in r.getMessage()]
    assert len(tilted) == 1 and "15.0 degrees" in tilted[0] and "\n" not in tilted[0]
    assert same_geometry(read_image(out), read_image(tmp_path / "tilted"))


def test_the_ct_series_is_read_when_a_larger_series_of_another_modality_shares_its_folder(tmp_path, caplog):
    """An exported PET/CT study: the PET series has more slices than the CT. The CT is read."""
    folder = tmp_path / "study"
    ct = cube_column((20, 64, 64))
    write_dicom_series(folder, ct, modality="CT", series=2)
    write_dicom_series(folder, np.full((30, 64, 64), 7, np.int16), modality="PT", series=5)
    with caplog.at_level(logging.WARNING):
        image = read_image(folder)
    assert image.GetSize() == (64, 64, 20)
    assert np.array_equal(sitk.GetArrayViewFromImage(image), ct)
    assert "largest CT series" in caplog.text and "PT" in caplog.text


def test_a_dicom_series_larger_than_the_memory_free_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """One file per slice: the first slice's rows and columns times the number of files, against
    the memory the OS says is free (here made 100 KB, below the series' 240 KB)."""
    from BoneSegmentationLib.core import memory

    folder = tmp_path / "series"
    write_dicom_series(folder, cube_column((30, 64, 64)))
    assert read_image(folder).GetSize() == (64, 64, 30)
    monkeypatch.setattr(memory, "available_bytes", lambda: 100 * 1024)
    with pytest.raises(InputImageError, match=r"DICOM series in .*header declares 64 x 64 x 30 voxels"):
        read_image(folder)


def test_a_folder_without_a_ct_series_is_refused_naming_what_it_holds(tmp_path):
    folder = tmp_path / "mr"
    write_dicom_series(folder, cube_column((12, 64, 64)), modality="MR", series=3)
    write_dicom_series(folder, cube_column((8, 64, 64)), modality="PT", series=4)
    with pytest.raises(InputImageError, match=r"no CT series in .*: its DICOM series are .*MR \(12 files\).*"
                                              r"PT \(8 files\).*segments CT") as e:
        read_image(folder)
    assert "\n" not in str(e.value)


def test_a_localizer_filed_in_the_series_is_left_out_with_a_warning(tmp_path, caplog):
    """A coronal scout with the axial series' UID, one slice step above its last slice: ITK would
    stack it as a 31st slice (and the stack then looks tilted)."""
    import shutil

    write_dicom_series(tmp_path / "axial", cube_column())
    write_dicom_series(tmp_path / "scout", cube_column((1, 64, 64)), column=(0.0, 0.0, -1.0), origin=(-50.0, 0.0, 160.0))
    series = tmp_path / "series"
    series.mkdir()
    for f in (tmp_path / "axial").iterdir():
        shutil.move(str(f), series / f.name)
    shutil.move(str(tmp_path / "scout" / "slice000.dcm"), series / "scout.dcm")
    with caplog.at_level("WARNING"):
        image = read_image(series)
    assert image.GetSize() == (64, 64, 30) and image.GetSpacing() == pytest.approx((0.8, 0.8, 2.0))
    [warning] = [r.getMessage() for r in caplog.records]
    assert "1 of 31 files have another orientation or size" in warning and "left out" in warning


@pytest.mark.parametrize("cut", ["slice029.dcm", "slice000.dcm", "slice012.dcm"])
def test_a_slice_file_cut_short_is_refused_in_one_line(tmp_path, cut):
    """GDCM leaves a slice it cannot parse out of its series: at either end the series would be one
    slice shorter with no gap to see. Files no series lists that are not its slices (notes, a cut
    copy holding no series UID) are left alone."""
    folder = tmp_path / "series"
    write_dicom_series(folder, cube_column())
    (folder / "notes.txt").write_text("reconstruction 2")
    (folder / "part.dcm").write_bytes((folder / "slice005.dcm").read_bytes()[:300])  # the file meta only
    assert read_image(folder).GetSize() == (64, 64, 30)
    data = (folder / cut).read_bytes()
    (folder / cut).write_bytes(data[: len(data) - 3000])  # the pixel data cut, the header whole
    with pytest.raises(InputImageError, match=rf"1 damaged or truncated slice file\(s\) that cannot be read \({cut}\)") as e:
        read_image(folder)
    assert len(str(e.value).splitlines()) == 1


def test_file_meta_and_uid_search_survive_hostile_bytes(tmp_path):
    """The file meta's parser stops at a length pointing past the file or at a group other than 2;
    the UID is found across the boundary of two read blocks."""
    from BoneSegmentationLib.core.dicom import holds_bytes, media_storage_class

    huge = tmp_path / "huge.dcm"
    huge.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x01\x00OB\0\0" + b"\xff\xff\xff\xff")
    assert media_storage_class(huge) is None
    other = tmp_path / "other.dcm"
    other.write_bytes(b"\0" * 128 + b"DICM" + b"\x08\x00\x16\x00UI\x04\x001.2\0")
    assert media_storage_class(other) is None
    split = tmp_path / "split.bin"
    split.write_bytes(b"x" * 10 + b"1.2.840.99" + b"y" * 10)
    assert holds_bytes(split, b"1.2.840.99", block=14) and not holds_bytes(split, b"1.2.840.98", block=14)


def test_slices_shifted_each_their_own_way_are_refused_in_one_line(tmp_path):
    write_dicom_series(tmp_path / "series", cube_column())
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp_path / "series" / "slice010.dcm"))
    image = reader.Execute()
    for key in reader.GetMetaDataKeys():
        image.SetMetaData(key, reader.GetMetaData(key))
    x, y, z = (float(v) for v in reader.GetMetaData("0020|0032").split("\\"))
    image.SetMetaData("0020|0032", f"{x + 6:.5f}\\{y:.5f}\\{z:.5f}")  # one slice 6 mm to the side
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(tmp_path / "series" / "slice010.dcm"))
    with keeping_locale():
        writer.Execute(image)
    with pytest.raises(InputImageError, match="shifted 6.0 mm off the line") as info:
        read_image(tmp_path / "series")
    assert "\n" not in str(info.value)


def test_a_shift_no_gantry_makes_is_refused_before_a_grid_is_built_for_it(tmp_path):
    """Position tags that shift each slice by more than a 30 degree tilt would (here 70 degrees)
    are not a tilt: refused in one line rather than resampled onto an ever wider grid."""
    write_dicom_series(tmp_path / "series", cube_column((10, 32, 32)), tilt_deg=70.0)
    with pytest.raises(InputImageError, match="shifted 70 degrees off their normal") as info:
        read_image(tmp_path / "series")
    assert "\n" not in str(info.value)


def test_a_pacs_export_is_read_from_its_top_folder_each_series_gathered_across_folders(tmp_path, caplog):
    """A PACS export or DICOMDIR medium: PATIENT/STUDY/SERIES folders, the user giving the top one.
    The CT is found below it (beside a larger MR series of its own folder), a CT series split over
    two folders is read as the one volume it is, in order, a link back to the top is not followed
    (its files would be listed again), and a slice cut short in a subfolder is caught."""
    top = tmp_path / "export"
    ct = cube_column((30, 64, 64))
    ct[:, 5, 5] = np.arange(30) * 10  # every slice its own, so the order is checked
    write_dicom_series(tmp_path / "flat", ct)
    study = top / "PATIENT1" / "STUDY1"
    for name, part in (("SER1", slice(0, 14)), ("SER1_cont", slice(14, 30))):
        (study / name).mkdir(parents=True)
        for k in range(part.start, part.stop):
            (study / name / f"slice{k:03d}.dcm").write_bytes((tmp_path / "flat" / f"slice{k:03d}.dcm").read_bytes())
    write_dicom_series(study / "SER2", cube_column((40, 64, 64)), modality="MR", series=3)
    (top / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    (study / "SER1_cont" / "back_to_the_top").symlink_to(top, target_is_directory=True)  # not followed
    with caplog.at_level(logging.WARNING):
        image = read_image(top)
    flat = read_image(tmp_path / "flat")
    assert same_geometry(image, flat) and np.array_equal(sitk.GetArrayViewFromImage(image), ct)
    assert "largest CT series" in caplog.text and "MR" in caplog.text
    data = (study / "SER1_cont" / "slice029.dcm").read_bytes()
    (study / "SER1_cont" / "slice029.dcm").write_bytes(data[: len(data) - 3000])
    with pytest.raises(InputImageError, match=r"1 damaged or truncated slice file\(s\) .*\(slice029.dcm\)"):
        read_image(top)


def test_a_tree_without_dicom_files_says_so_in_one_line(tmp_path, capfd):
    """And only that: ITK's series search prints "No Series were found" for every folder it looks
    at; the refusal is the one line."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "notes.txt").write_text("hello")
    with pytest.raises(InputImageError, match="no DICOM series found in folder .* or the folders below it; give the "
                                              "folder that holds the CT's DICOM files") as e:
        read_image(tmp_path)
    assert "\n" not in str(e.value)
    printed = capfd.readouterr()
    assert printed.err == "" and printed.out == ""


def test_ct_series_of_two_studies_under_one_folder_are_refused_not_one_taken(tmp_path):
    """An export of two patients (or visits): taking the largest CT would segment one of them and
    name the result after the folder. Refused in one line naming where they are."""
    top = tmp_path / "export"
    for patient in ("PATIENT1", "PATIENT2"):
        (top / patient).mkdir(parents=True)
    write_dicom_series(top / "PATIENT1" / "CT", cube_column((20, 64, 64)))
    write_dicom_series(top / "PATIENT2" / "CT", cube_column((30, 64, 64)), series=4, study=7)
    with pytest.raises(InputImageError, match=r"holds CT series of 2 studies .*in PATIENT1/CT, PATIENT2/CT\); give "
                                              r"the folder of one study or series") as e:
        read_image(top)
    assert "\n" not in str(e.value)
    assert read_image(top / "PATIENT2").GetSize() == (64, 64, 30)


ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def write_enhanced_ct(path, volume, spacing=(0.8, 0.7, 2.0), origin=(-50.0, -60.0, 100.0), row=(1.0, 0.0, 0.0),
                      column=(0.0, 1.0, 0.0), frames=None, positions=None, orientations=None, study_uid=None):
    """``volume`` (slices first) as one Enhanced CT file, written with pydicom as scanners write
    them: pixel spacing and orientation in the shared functional groups, each frame's position in
    its own. ``frames``: which slice each frame holds, in file order (default: in order);
    ``positions``/``orientations``: per-frame overrides, to damage the file."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames = list(range(len(volume))) if frames is None else list(frames)
    row, column = np.array(row, float), np.array(column, float)
    normal = np.cross(row, column)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study_uid or generate_uid(), generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = volume.shape[1], volume.shape[2], len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[0]]  # between rows, then between columns
    measures.SliceThickness = spacing[2]
    plane = Dataset()
    plane.ImageOrientationPatient = [*row, *column]
    rescale = Dataset()
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = 0, 1, "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    if orientations is None:
        shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for i, k in enumerate(frames):
        place = Dataset()
        place.ImagePositionPatient = list(positions[i] if positions is not None
                                          else np.array(origin) + k * spacing[2] * normal)
        frame = Dataset()
        frame.PlanePositionSequence = Sequence([place])
        if orientations is not None:
            own = Dataset()
            own.ImageOrientationPatient = list(orientations[i])
            frame.PlaneOrientationSequence = Sequence([own])
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = volume[frames].astype(np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)


@pytest.mark.parametrize("order", ["in order", "head first", "shuffled"])
@pytest.mark.parametrize("column", [(0.0, 1.0, 0.0), (0.0, 0.6, -0.8)])
def test_an_enhanced_ct_file_is_read_where_its_frames_lie_as_a_file_or_in_a_folder(tmp_path, order, column):
    """One multi-frame file holds the whole CT. GDCM stacks its frames in file order on the first
    frame's plane; frames stored in another order got a 1 mm grid and misplaced slices. Read by
    each frame's position, the volume equals the slice series' in voxels and geometry, whether the
    file or its folder is given (the folder's one-file series was read as 4D and refused)."""
    volume = cube_column((30, 40, 48))
    volume[:, 5, 5] = np.arange(30) * 10  # every slice its own, so the order is checked
    frames = {"in order": range(30), "head first": range(29, -1, -1),
              "shuffled": np.random.default_rng(0).permutation(30)}[order]
    write_dicom_series(tmp_path / "series", volume, spacing=(0.8, 0.7, 2.0), column=column)
    write_enhanced_ct(tmp_path / "enhanced" / "ct.dcm", volume, column=column, frames=frames)
    series = read_image(tmp_path / "series")
    for given in (tmp_path / "enhanced" / "ct.dcm", tmp_path / "enhanced"):
        image = read_image(given)
        assert np.array_equal(sitk.GetArrayViewFromImage(image), volume)
        assert np.allclose(image.GetSpacing(), series.GetSpacing()) and np.allclose(image.GetOrigin(), series.GetOrigin(), atol=1e-4)
        assert np.allclose(image.GetDirection(), series.GetDirection(), atol=1e-6)


def test_an_enhanced_ct_file_with_a_frame_missing_or_two_phases_or_stacks_is_refused_in_one_line(tmp_path):
    volume = cube_column((20, 32, 32))
    normal_step = np.array([0.0, 0.0, 2.0])
    positions = [np.array([-50.0, -60.0, 100.0]) + k * normal_step for k in range(20)]
    gap = positions[:10] + [p + normal_step for p in positions[10:]]  # a frame lost: 4 mm between frames 10 and 11
    write_enhanced_ct(tmp_path / "gap.dcm", volume, positions=gap)
    two_phases = positions[:10] + positions[:10]  # arterial and venous frames at the same ten places
    write_enhanced_ct(tmp_path / "phases.dcm", volume, positions=two_phases)
    tilted_stacks = [(1, 0, 0, 0, 1, 0)] * 10 + [(1, 0, 0, 0, 0.8, -0.6)] * 10
    write_enhanced_ct(tmp_path / "stacks.dcm", volume, orientations=tilted_stacks)
    for name, message in (("gap", "has uneven slice spacing"), ("phases", "holds 20 frames at 10 places"),
                          ("stacks", "holds frames of 2 orientations")):
        with pytest.raises(InputImageError, match=message) as e:
            read_image(tmp_path / f"{name}.dcm")
        assert "\n" not in str(e.value)


def test_the_multi_frame_ct_is_chosen_over_a_localizer_of_more_files_and_a_dicomdir_reads_its_folder(tmp_path, caplog):
    """A series is as large as its slices, not its files: an Enhanced CT (one file, 30 frames)
    beside a three-file scout is the CT. A DICOMDIR file given in place of its folder is read as
    that folder."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    volume = cube_column((30, 40, 48))
    write_enhanced_ct(tmp_path / "study" / "ct.dcm", volume, study_uid="1.2.826.0.1.3680043.2.1125.42.1")  # the scout's
    write_dicom_series(tmp_path / "study", cube_column((3, 64, 64)), series=7)
    with caplog.at_level(logging.WARNING):
        image = read_image(tmp_path / "study")
    assert np.array_equal(sitk.GetArrayViewFromImage(image), volume)
    assert "using the largest CT series" in caplog.text and ", 30 slices)" in caplog.text
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    index = Dataset()
    index.file_meta = meta
    pydicom.dcmwrite(str(tmp_path / "study" / "DICOMDIR"), index, enforce_file_format=True)
    assert np.array_equal(sitk.GetArrayViewFromImage(read_image(tmp_path / "study" / "DICOMDIR")), volume)


def test_one_slice_file_of_a_series_is_refused_naming_its_folder(tmp_path):
    write_dicom_series(tmp_path / "series", cube_column((5, 32, 32)))
    with pytest.raises(InputImageError, match=r"slice000.dcm is one slice of a DICOM series; give the folder .*series"):
        read_image(tmp_path / "series" / "slice000.dcm")


def test_a_dicom_file_of_another_modality_is_refused_as_a_folder_of_it_is(tmp_path):
    write_dicom_series(tmp_path / "mr", cube_column((3, 32, 32)), modality="MR")
    with pytest.raises(InputImageError, match=r"slice000.dcm is a DICOM MR image; BoneSegmentation segments CT"):
        read_image(tmp_path / "mr" / "slice000.dcm")


def test_an_enhanced_ct_file_whose_frame_list_is_short_or_damaged_is_refused_in_one_line(tmp_path, capfd):
    """The per-frame groups are read from an untrusted header: one missing, or a position that is
    no number, gives one line, not a traceback or a guessed place, and pydicom's own warnings about
    the bad value are not printed beside it."""
    import warnings

    import pydicom

    volume = cube_column((20, 32, 32))
    write_enhanced_ct(tmp_path / "short.dcm", volume)
    header = pydicom.dcmread(str(tmp_path / "short.dcm"))
    del header.PerFrameFunctionalGroupsSequence[-1]
    header.save_as(str(tmp_path / "short.dcm"))
    write_enhanced_ct(tmp_path / "nan.dcm", volume)
    header = pydicom.dcmread(str(tmp_path / "nan.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that "nan" is no DS value: the damage meant
        header.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence[0].ImagePositionPatient = ["nan", "0", "0"]
        header.save_as(str(tmp_path / "nan.dcm"))
    capfd.readouterr()
    for name, message in (("short", "describes 19 frames but holds 20"), ("nan", "not numbers in 3D")):
        with pytest.raises(InputImageError, match=message) as e:
            read_image(tmp_path / f"{name}.dcm")
        assert "\n" not in str(e.value)
    assert capfd.readouterr().err == ""


def test_a_nifti_without_orientation_is_read_as_itk_reads_it_with_a_warning(tmp_path, caplog):
    """qform and sform codes 0 (an Analyze-style header, some converters' output): ITK takes the
    axes as LPS from origin 0 and says nothing, so a body stored in RAS comes out turned, its
    sides swapped. The file is read as before, and a warning says so; a file with an orientation
    gets none."""
    import struct

    image = sitk.GetImageFromArray(cube_column((12, 32, 32)))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "oriented.nii"))
    data = bytearray((tmp_path / "oriented.nii").read_bytes())
    assert struct.unpack("<2h", bytes(data[252:256])) != (0, 0)
    data[252:256] = struct.pack("<2h", 0, 0)
    (tmp_path / "bare.nii").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        oriented = read_image(tmp_path / "oriented.nii")
    assert "no orientation" not in caplog.text
    with caplog.at_level(logging.WARNING):
        bare = read_image(tmp_path / "bare.nii")
    assert "bare.nii holds no orientation (its NIfTI qform and sform codes are 0)" in caplog.text
    assert np.allclose(bare.GetDirection(), np.eye(3).ravel()) and np.allclose(oriented.GetDirection(), image.GetDirection())


def test_a_nrrd_that_names_no_space_is_read_as_itk_reads_it_with_a_warning(tmp_path, caplog):
    image = sitk.GetImageFromArray(cube_column((6, 16, 16)))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "oriented.nrrd"), False)
    head, _, data = (tmp_path / "oriented.nrrd").read_bytes().partition(b"\n\n")
    bare = [line for line in head.split(b"\n") if not line.startswith((b"space:", b"space directions:", b"space origin:"))]
    (tmp_path / "bare.nrrd").write_bytes(b"\n".join(bare + [b"spacings: 1 1 1"]) + b"\n\n" + data)
    with caplog.at_level(logging.WARNING):
        read_image(tmp_path / "oriented.nrrd")
    assert "no orientation" not in caplog.text
    with caplog.at_level(logging.WARNING):
        read = read_image(tmp_path / "bare.nrrd")
    assert "bare.nrrd holds no orientation (its NRRD header names no space)" in caplog.text
    assert np.allclose(read.GetDirection(), np.eye(3).ravel())


def test_an_enhanced_ct_file_larger_than_the_memory_free_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """One multi-frame file: its rows, columns and frames against the memory the OS says is free
    (here made 100 KB, below the file's 112 KB), read once from the header the reader opens anyway."""
    from BoneSegmentationLib.core import memory

    write_enhanced_ct(tmp_path / "ct.dcm", cube_column((28, 40, 50)))
    assert read_image(tmp_path / "ct.dcm").GetSize() == (50, 40, 28)
    monkeypatch.setattr(memory, "available_bytes", lambda: 100 * 1024)
    with pytest.raises(InputImageError, match=r"header declares 50 x 40 x 28 voxels"):
        read_image(tmp_path / "ct.dcm")

"""Reading CT images (NIfTI, NRRD, MHA, DICOM folders and files) with clear errors, and atomic writing.

Geometry (origin, spacing, direction) is kept exactly as SimpleITK reads it; any direction
matrix is accepted. A DICOM folder is read by ``dicom.py``, which refuses a series with a missing
slice and puts a gantry-tilted one on a regular grid where it was scanned; one DICOM file (an
Enhanced CT's frames) by ``dicom_frames.py``, with the same checks; a DICOMDIR as its folder.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicom import media_storage_class, read_dicom_folder
from .detached_data import check_data_names, metaimage_data_names, nrrd_data_names, read_nrrd_head
from .dicom_frames import DICOMDIR_CLASS, read_dicom_file
from .errors import InputImageError, itk_reason
from .files import atomic_write
from .label_colours import labels_by_colour_table, read_colour_rows, sidecar_of
from .memory import check_declared_fits
from .metaimage import check_metaimage_file
from .seg_nrrd import as_segmentation, is_seg_nrrd, labels_from_segmentation

MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
SKEWED_GRID = ("its voxel axes are sheared or skewed, not perpendicular, and ITK and so this tool place "
               "only grids with perpendicular axes; resample the scan onto such a grid first, or export it "
               "again from the original DICOM")
#: No CT holds values this far from water: air is -1000 HU, scanners pad with -3024 or -32768, and
#: extended-scale reconstructions of metal reach about 30 000 HU. Beyond it the header's rescale is wrong.
CT_VALUE_LIMIT = 1e5
SHORT_FOV_MM = 100.0  # head-to-foot extent below which bone is missed and misnamed (docs/real-ct-training.md)
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha", ".mhd")

log = logging.getLogger(__name__)


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D image file (a DICOM one included) or the largest DICOM series in a folder."""
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"input not found: {path}")
    if path.is_dir():
        return read_dicom_folder(path)
    storage_class = media_storage_class(path)  # the first kilobyte only
    if storage_class == DICOMDIR_CLASS:  # a medium's index: its series lie below its folder
        return read_dicom_folder(path.parent)
    if storage_class is not None:
        return read_dicom_file(path)  # checks the declared size from the header it reads anyway
    name = path.name.lower()
    metaimage, nrrd = name.endswith((".mha", ".mhd")), name.endswith((".nrrd", ".nhdr"))
    nrrd_head = read_nrrd_head(path) if nrrd else b""
    # a .mhd or .nhdr names its voxel files and ITK opens whatever it names: checked before ITK reads anything
    if metaimage or nrrd:
        check_data_names(path, metaimage_data_names(path) if metaimage else nrrd_data_names(path, nrrd_head))
    check_declared_size(path)  # before any voxel is read: a header can promise terabytes
    if name.endswith((".nii", ".nii.gz")):
        check_nifti_file(path)  # what ITK's NIfTI reader lets through silently
    elif metaimage:
        check_metaimage_file(path)  # what ITK's MetaImage reader reports only on the terminal
    elif nrrd:
        warn_if_nrrd_without_space(path, nrrd_head)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        detail = itk_reason(e)
        if "orthonormal" in detail:
            raise InputImageError(f"cannot read {path}: {SKEWED_GRID}") from None
        raise InputImageError(f"cannot read {path}: the file is corrupt or not a supported image "
                              f"format (NIfTI, NRRD, MHA, DICOM folder). {detail}") from None


def read_label_map(path: str | os.PathLike) -> sitk.Image:
    """A label map in the bone table's values. A ``.seg.nrrd`` saved from Slicer has its segments
    mapped to bones by name, and so has a label map Slicer exported with its colour table beside it
    (``NAME.labels.csv``): the values Slicer stored are its own. Any other file is read as it is."""
    path = Path(path)
    image = read_image(path)
    if is_seg_nrrd(path):
        return labels_from_segmentation(image, name=str(path))
    colours = sidecar_of(path, strip_image_suffix(path.name))
    if colours.is_file():
        log.info("%s: values mapped to bones by the colour table beside it, %s", path, colours.name)
        return labels_by_colour_table(image, read_colour_rows(colours), name=str(path))
    return image


def warn_if_nrrd_without_space(path: Path, head: bytes) -> None:
    """Warn when a NRRD header (``head``: its first bytes, ``read_nrrd_head``) names no space (no
    ``space``/``space dimension`` and no ``space directions`` field): ITK then reads it from origin
    0 with LPS axes, silently, as a NIfTI without orientation (``check_nifti_file``)."""
    if not head.startswith(b"NRRD"):
        return  # ITK's reader decides
    fields = {line.split(b":", 1)[0].strip().lower() for line in head.split(b"\n\n", 1)[0].split(b"\n")[1:]
              if b":" in line and not line.startswith(b"#")}
    if not fields & {b"space", b"space dimension", b"space directions"}:
        log.warning("%s holds no orientation (its NRRD header names no space): it is read, as ITK reads such a "
                    "file, from origin 0 with its axes to the patient's left, back and head; if it was not stored "
                    "so, the bones and their sides come out wrong: save it again from Slicer or convert it from the "
                    "DICOM", path)


def check_declared_size(path: Path, available: int | None = None) -> None:
    """Refuse a file whose header declares more voxels than the memory free can hold, before they
    are read: a few bytes of header can promise terabytes, and a compressed file can inflate a
    thousandfold (``memory.check_declared_fits``). A header ITK cannot read is left to the reader."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return
    check_declared_fits(str(path), reader, available=available)


_NIFTI_FLOATS = {16: np.float32, 64: np.float64}  # NIfTI datatype codes of real-valued voxels


def check_nifti_file(path: Path) -> None:
    """Refuse a NIfTI-1 file whose data are shorter than its header declares (ITK fills the
    missing slices with zeros), whose gzip stream is damaged, whose voxel size is zero (ITK makes
    it 1 mm), or whose float voxels hold NaN or infinity (ITK turns both into 0); warn when it holds
    no orientation (an Analyze-style header: ITK takes LPS, silently). Streams the file once."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            header = f.read(352)
            if len(header) < 348:
                raise InputImageError(f"cannot read {path}: the NIfTI header is incomplete (truncated file)")
            endian = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
            if struct.unpack(endian + "i", header[:4])[0] != 348:
                return  # NIfTI-2 or not NIfTI at all: ITK's reader decides
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            pixdim = struct.unpack(endian + "8f", header[76:108])
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            qform_code, sform_code = struct.unpack(endian + "2h", header[252:256])
            if qform_code == 0 and sform_code == 0:
                log.warning("%s holds no orientation (its NIfTI qform and sform codes are 0): it is read, as ITK "
                            "reads such a file, from origin 0 with its axes to the patient's left, back and head; "
                            "if it was not stored so, the bones and their sides come out wrong: convert it from the "
                            "DICOM again (dcm2niix)", path)
            ndim = max(1, min(int(dims[0]), 7))
            if any(not np.isfinite(p) or p == 0 for p in pixdim[1:min(ndim, 3) + 1]):
                raise InputImageError(f"{path} declares a voxel size of {tuple(pixdim[1:4])} mm (zero or not a "
                                      "number); fix the file's header (pixdim) with the right spacing")
            expected = int(np.prod([max(1, int(d)) for d in dims[1:ndim + 1]])) * max(1, bitpix // 8)
            f.read(max(0, vox_offset - 352))
            dtype = np.dtype(_NIFTI_FLOATS[datatype]).newbyteorder(endian) if datatype in _NIFTI_FLOATS else None
            have, not_finite, tail = 0, 0, b""
            while True:
                block = f.read(1 << 22)
                if not block:
                    break
                have += len(block)
                if dtype is not None:
                    data = tail + block
                    usable = len(data) - len(data) % dtype.itemsize
                    not_finite += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], dtype))))
                    tail = data[usable:]
    except (EOFError, OSError, zlib.error, struct.error) as e:
        raise InputImageError(f"cannot read {path}: the file is corrupt or not a supported image format "
                              f"(damaged or truncated: {e})") from None
    if have < expected:
        raise InputImageError(f"{path} is truncated: its data hold {have} of the {expected} bytes its header "
                              "declares; copy or export the file again")
    if not_finite:
        raise InputImageError(f"{path} contains {not_finite} NaN or infinite voxel values; fix or mask them first")


def check_ct(image: sitk.Image, name: str = "input") -> list[str]:
    """Raise ``InputImageError`` for unusable images; return warnings for suspicious ones."""
    dim = image.GetDimension()
    if dim == 4:
        raise InputImageError(f"{name} is 4D (size {image.GetSize()}), e.g. a time series; "
                              "BoneSegmentation needs one 3D CT volume: extract one time point first")
    if dim != 3:
        raise InputImageError(f"{name} is {dim}D (size {image.GetSize()}); a 3D CT volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                              "(colour or vector image); a scalar CT volume is needed")
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputImageError(f"{name} holds complex voxel values (raw scanner data?); a real-valued CT volume "
                              "in Hounsfield units is needed")
    size = image.GetSize()
    if min(size) == 0:
        raise InputImageError(f"{name} is empty (size {size})")
    if min(size) < 2:
        raise InputImageError(f"{name} has a single slice (size {size}); a 3D CT volume is needed")
    spacing = image.GetSpacing()
    if any(not np.isfinite(s) or s < MIN_SPACING_MM or s > MAX_SPACING_MM for s in spacing):
        raise InputImageError(f"{name} has an implausible voxel spacing {tuple(round(s, 4) for s in spacing)} mm "
                              f"(expected {MIN_SPACING_MM}-{MAX_SPACING_MM} mm); check the file's header")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)):
        raise InputImageError(f"{name} has an invalid direction matrix {image.GetDirection()}; check the file's header")
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise InputImageError(f"{name}: {SKEWED_GRID}")
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputImageError(f"{name} contains {bad} NaN or infinite voxel values; fix or mask them first")
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise InputImageError(f"{name} is empty: every voxel has the value {lo}")
    if max(-lo, hi) > CT_VALUE_LIMIT:
        raise InputImageError(f"{name} holds values from {lo:.4g} to {hi:.4g}, far outside any CT's range "
                              f"(within +-{CT_VALUE_LIMIT:.0f} HU): a wrong rescale slope in its header? Fix the "
                              "file or export it again from the DICOM")
    warnings = []
    p01, p99 = np.percentile(array[:: max(1, array.shape[0] // 16)], [1, 99.5])
    if p01 > -500:
        warnings.append(f"{name} does not look like CT in Hounsfield units (1st percentile {p01:.0f}, "
                        "no air below -500 HU): an MR image or unrescaled DICOM? Results will be poor")
    elif p99 < 150:
        warnings.append(f"{name} has almost no bone-dense voxels (99.5th percentile {p99:.0f} HU): "
                        "is it a CT with bone in the field of view?")
    length = head_to_foot_mm(image)
    if length < SHORT_FOV_MM:
        warnings.append(f"{name} covers only {length:.0f} mm from head to foot: bones are found and named from "
                        f"their surroundings, and below {SHORT_FOV_MM:.0f} mm expect missed bone and wrong names "
                        "(40 mm slabs of a real chest CT lose a third of the bone its whole scan shows); "
                        "check every label")
    return warnings


def head_to_foot_mm(image: sitk.Image) -> float:
    """Length of the scan along the image axis closest to the patient's long axis, in mm."""
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2, :])))
    return float(image.GetSize()[axis] * image.GetSpacing()[axis])


def read_ct(path: str | os.PathLike) -> tuple[sitk.Image, list[str]]:
    """Read and check a CT; returns the image and warnings (also logged)."""
    if is_seg_nrrd(path):  # a segmentation reads as a CT of values 0..125: it would be segmented
        raise InputImageError(f"{path} is a Slicer segmentation (.seg.nrrd), not a CT; give the CT scan it was "
                              "made on (a .nii.gz, .nrrd or .mha file or a DICOM folder)")
    image = read_image(path)
    warnings = check_ct(image, name=str(path))
    for w in warnings:
        log.warning(w)
    return image, warnings


def output_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(WRITABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise InputImageError(f"cannot write {path}: use one of {', '.join(WRITABLE_SUFFIXES)}")


def write_image(image: sitk.Image, path: str | os.PathLike, overwrite: bool = False,
                compress: bool = True) -> Path:
    """Write atomically: a temporary file in the same folder, then rename. Never replaces an
    existing file unless ``overwrite`` is true. A ``.seg.nrrd`` path gets a Slicer segmentation
    (names, colours, terminology from the bone table); only a label map can be one."""
    path = Path(path)
    suffix = output_suffix(path)
    if is_seg_nrrd(path):
        image = as_segmentation(image)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
        verify_written(tmp, image, path)  # before the rename: a short file never replaces anything
    return atomic_write(path, write, suffix=suffix)


def verify_written(tmp: Path, image: sitk.Image, path: Path) -> None:
    """SimpleITK does not fail on a full disk: read the written file's header back and, for
    NIfTI, stream its data (gzip checksum and length)."""
    try:
        if tmp.name.lower().endswith((".nii", ".nii.gz")):
            check_nifti_file(tmp)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(tmp))
        reader.ReadImageInformation()
        ok = reader.GetSize() == image.GetSize()
    except (InputImageError, RuntimeError):
        ok = False
    if not ok:
        raise OSError(errno.ENOSPC if _disk_full(tmp) else errno.EIO,
                      "the written file is incomplete (disk full or quota?)", str(path))


def _disk_full(path: Path) -> bool:
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return False


def strip_image_suffix(name: str) -> str:
    """``bones.nii.gz`` -> ``bones`` (any suffix we read or write)."""
    for suffix in sorted(WRITABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-5) -> bool:
    """True when both images have the same size, origin, spacing and direction."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 100)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))

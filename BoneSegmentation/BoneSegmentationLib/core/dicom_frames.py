"""One DICOM file read as a CT volume: a multi-frame file (Enhanced or Legacy Converted Enhanced CT,
every slice in one file) placed where its frames were scanned.

GDCM reads a multi-frame file from its shared and first per-frame functional groups and assumes
the frames equidistant and in order. Measured with SimpleITK: frames stored head-first are placed
right, but frames stored in any other order get a 1 mm grid and slices at the wrong place, with no
warning. So each frame's own Image Position (Patient) is read (pydicom, headers only, nothing
run) and the frames are stacked by their position along the normal, with the checks a series of
slice files gets (``slice_geometry.py``): uneven steps refused, a gantry tilt regularised. A file
whose frames lie two in one place (phases or stacks), differ in orientation or in rescale is
refused in one line. A file of one classic slice is refused naming the folder to give instead,
and a file of another modality (MR, PET) as a folder without a CT series is.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .errors import InputImageError, itk_reason
from .memory import check_declared_fits
from .slice_geometry import SliceGeometry, check_even_steps, check_one_line, placed_where_scanned

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory: a medium's index, not an image
SAME_PLACE_MM = 1e-3  # frames closer than this along the normal lie in one place
CT_MODALITIES = ("CT", "")  # a series without a Modality tag (some anonymisers drop it) may still be CT


@dataclass(frozen=True)
class FramePlanes:
    """Each frame's position (file order, LPS mm), the frames' orientation and pixel spacing."""
    positions: np.ndarray  # (frames, 3)
    row: np.ndarray  # unit vector along a row
    column: np.ndarray  # unit vector down a column
    pixel_mm: Optional[tuple[float, float]]  # (along a row, down a column); None: as ITK read it

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row, self.column)
        return n / np.linalg.norm(n)


def read_dicom_file(path: Path, what: Optional[str] = None) -> sitk.Image:
    """The CT volume in one DICOM file: a multi-frame file stacked by its frames' positions."""
    what = what or f"the DICOM file {path}"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputImageError(f"cannot read {what}: {itk_reason(e)}") from None
    check_declared_fits(what, reader)
    modality = reader.GetMetaData("0008|0060").strip().upper() if reader.HasMetaDataKey("0008|0060") else ""
    if modality not in CT_MODALITIES:  # as for a folder
        raise InputImageError(f"{path} is a DICOM {modality} image; BoneSegmentation segments CT, so give a CT "
                              "file or series folder")
    size = reader.GetSize()
    if len(size) < 3 or size[2] < 2:
        raise InputImageError(f"{path} is one slice of a DICOM series; give the folder that holds the series' "
                              f"files ({path.parent}) instead")
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise InputImageError(f"cannot read {what}: {itk_reason(e)}") from None
    planes = frame_planes(path, size[2], what)
    if planes is None:
        return image  # no per-frame positions (an old multi-frame object): GDCM's stacking
    return stacked_by_position(image, planes, what)


def frame_planes(path: Path, frames: int, what: str) -> Optional[FramePlanes]:
    """The frames' positions from the per-frame functional groups, or None when the file has none."""
    import pydicom  # Slicer ships it; a dependency of the library

    try:
        with pydicom_quiet():
            header = pydicom.dcmread(str(path), stop_before_pixels=True)
            return _frame_planes(header, frames, what)
    except InputImageError:
        raise
    except Exception as e:  # any failure to parse an untrusted header is the file's, said in one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise InputImageError(f"cannot read the frames' positions in {what}: {reason}; convert it with "
                              "dcm2niix") from None


@contextlib.contextmanager
def pydicom_quiet():
    """pydicom warns (and logs) about each value that breaks its VR's rules; a damaged file gets our
    one line instead, and a file whose values are only untidy reads without noise."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _frame_planes(header, frames: int, what: str) -> Optional[FramePlanes]:
    """``frame_planes`` from a parsed header (values are read lazily, so parsing errors surface here)."""
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return None
    shared_groups = header.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else None
    if len(per_frame) != frames:
        raise InputImageError(f"{what} describes {len(per_frame)} frames but holds {frames}: it is damaged; "
                              "export it again")
    positions, orientations, rescales = [], set(), set()
    for frame in per_frame:
        position = _group_value(frame, shared, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _group_value(frame, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        if position is None or orientation is None:
            return None
        positions.append([float(v) for v in position])
        orientations.add(tuple(round(float(v), 3) for v in orientation))
        slope = _group_value(frame, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _group_value(frame, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        rescales.add((None if slope is None else float(slope), None if intercept is None else float(intercept)))
    spacing = _group_value(per_frame[0], shared, "PixelMeasuresSequence", "PixelSpacing")
    if len(orientations) > 1:
        raise InputImageError(f"{what} holds frames of {len(orientations)} orientations (several stacks in one "
                              "file); export one stack as its own series")
    if len(rescales) > 1:
        raise InputImageError(f"{what} rescales its frames' values {len(rescales)} different ways, which the reader "
                              "does not follow; convert it with dcm2niix")
    orientation = np.array(next(iter(orientations)), float)
    positions_mm = np.array(positions, float)
    if positions_mm.shape != (frames, 3) or orientation.shape != (6,) or not np.all(np.isfinite(positions_mm)) \
            or np.linalg.norm(np.cross(orientation[:3], orientation[3:])) < 1e-3:
        raise InputImageError(f"{what} has frame positions or an orientation that are not numbers in 3D; convert it "
                              "with dcm2niix")
    pixel_mm = None
    if spacing is not None and len(spacing) == 2 and all(float(v) > 0 for v in spacing):
        pixel_mm = (float(spacing[1]), float(spacing[0]))  # DICOM: between rows, then between columns
    row, column = orientation[:3], orientation[3:]
    return FramePlanes(positions_mm, row / np.linalg.norm(row), column / np.linalg.norm(column), pixel_mm)


def _group_value(frame, shared, sequence: str, keyword: str):
    """A functional group's value for one frame: its own group, else the shared one (None: neither)."""
    for groups in (frame, shared):
        items = groups.get(sequence) if groups is not None else None
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


def stacked_by_position(image: sitk.Image, planes: FramePlanes, what: str) -> sitk.Image:
    """``image`` (frame k of the file as slice k, as GDCM read it) with its frames stacked by
    their position along the normal, on the grid they lie on."""
    along = planes.positions @ planes.normal
    order = np.argsort(along, kind="stable")
    if np.any(np.diff(along[order]) < SAME_PLACE_MM):
        places = len(np.unique(np.round(along / SAME_PLACE_MM)))
        raise InputImageError(f"{what} holds {len(along)} frames at {places} places (several phases or stacks in "
                              "one file); export one phase as its own series")
    geometry = SliceGeometry([what] * len(order), planes.positions[order], planes.row, planes.column)
    check_even_steps(what, geometry)
    check_one_line(what, geometry)
    sx, sy = planes.pixel_mm or image.GetSpacing()[:2]
    spacing = (sx, sy, float(np.median(geometry.steps_mm())))
    origin = tuple(float(v) for v in geometry.positions[0])
    direction = tuple(np.column_stack([planes.row, planes.column, planes.normal]).ravel())
    as_read = np.allclose(image.GetOrigin(), origin, atol=1e-3) and np.allclose(image.GetSpacing(), spacing, rtol=1e-4) \
        and np.allclose(image.GetDirection(), direction, atol=1e-4) and np.array_equal(order, np.arange(len(order)))
    if as_read:
        stacked = image
    else:
        stacked = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image)[order])
        stacked.SetOrigin(origin)
        stacked.SetSpacing(spacing)
        stacked.SetDirection(direction)
    return placed_where_scanned(stacked, geometry, what)

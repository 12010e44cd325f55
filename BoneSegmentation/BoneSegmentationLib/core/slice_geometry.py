"""Where a CT's slices lie, from their DICOM position and orientation tags, and what ITK's
stacking of them would get wrong.

ITK stacks slices along the normal of their orientation with the distance between the first two
as spacing. Two stacks break that silently:
- a missing or duplicated slice (uneven steps): the anatomy beyond the gap lands at the wrong place,
  so the stack is refused;
- a gantry-tilted stack, whose slices are shifted in their own plane from one to the next: ITK
  drops the shift and stretches the spacing, so a 20 degree tilt misplaces the last of 30 slices by
  20 mm. Its slices are resampled onto a regular grid that holds the tilted stack where it was
  scanned (as dcm2niix and Slicer's acquisition geometry regularisation do), and a warning says so:
  labels then line up with the scan in physical space, on that grid.
Used for a series of slice files (``dicom.py``) and for the frames of one multi-frame file
(``dicom_frames.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import InputImageError

log = logging.getLogger(__name__)

TILT_VOXELS = 0.1  # in-plane shift over the whole series, in voxels, below which a series is not tilted
MAX_TILT_DEGREES = 30.0  # gantries tilt up to about 30 degrees; a larger shift is not a tilt (and would widen the grid without bound)


@dataclass(frozen=True)
class SliceGeometry:
    """Where a series' slices are, in the order ITK stacks them (LPS, mm)."""
    files: list[str]  # the files that make the volume (a localizer with the series' UID left out;
    # for a multi-frame file, its name once per frame)
    positions: np.ndarray  # (n, 3) ImagePositionPatient of each file (frame)
    row: np.ndarray  # unit vector along a row (first three of ImageOrientationPatient)
    column: np.ndarray  # unit vector down a column

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row, self.column)
        return n / np.linalg.norm(n)

    def steps_mm(self) -> np.ndarray:
        """Distances between neighbouring slices along the normal, in stacking order."""
        return np.diff(self.positions @ self.normal)

    def in_plane_shift(self) -> np.ndarray:
        """Shift within the slice plane from one slice to the next (mm vector; zero when not tilted)."""
        step = (self.positions[-1] - self.positions[0]) / (len(self.positions) - 1)
        return step - (step @ self.normal) * self.normal


def check_even_steps(what: str, geometry: SliceGeometry) -> None:
    """Refuse a series with a missing or duplicated slice: ITK would stack it with one average
    spacing (the anatomy beyond the gap lands at the wrong place)."""
    steps = np.diff(np.sort(geometry.positions @ geometry.normal))
    typical = float(np.median(steps))
    if typical <= 0 or np.any(np.abs(steps - typical) > 0.1 * typical + 1e-3):
        k = int(np.argmax(np.abs(steps - typical)))
        raise InputImageError(f"{what} has uneven slice spacing (slices {typical:.2f} mm apart, "
                              f"but {steps[k]:.2f} mm at slice {k + 1} of {len(steps) + 1}): a slice is missing or "
                              "duplicated; export the complete series again")


def check_one_line(what: str, geometry: SliceGeometry) -> None:
    """Refuse slices whose corners do not follow one straight line (each shifted its own way in its
    plane): no regular grid holds them, and ITK would stack them straight."""
    n = len(geometry.positions)
    straight = geometry.positions[0] + np.outer(np.arange(n), (geometry.positions[-1] - geometry.positions[0]) / (n - 1))
    off = float(np.max(np.linalg.norm(geometry.positions - straight, axis=1)))
    step = abs(float(np.median(geometry.steps_mm())))
    if off > 0.1 * step + 1e-3:
        raise InputImageError(f"{what} has slices shifted {off:.1f} mm off the line through the "
                              "first and the last (not one volume: a mix of series or a varying tilt); export the "
                              "series again or convert it with dcm2niix")


def is_tilted(geometry: SliceGeometry, spacing: tuple[float, ...]) -> bool:
    total_shift = np.linalg.norm(geometry.in_plane_shift()) * (len(geometry.positions) - 1)
    return bool(total_shift > TILT_VOXELS * min(spacing[0], spacing[1]))


def tilt_degrees(geometry: SliceGeometry) -> float:
    step = abs(float(np.median(geometry.steps_mm())))
    return float(np.degrees(np.arctan2(np.linalg.norm(geometry.in_plane_shift()), step)))


def regularise_tilt(image: sitk.Image, geometry: SliceGeometry) -> sitk.Image:
    """``image`` (as ITK stacked it, slice k from file k) resampled onto a grid with the slices'
    orientation, their spacing along the normal, and room for the shift, by linear interpolation;
    outside the scan, the image's lowest value (air)."""
    n = geometry.normal
    first = geometry.positions[0]
    along = float((geometry.positions[-1] - first) @ n) / (len(geometry.positions) - 1)
    if along < 0:  # stacked against the normal: the grid's third axis points the way the slices go
        n, along = -n, -along
    shift = geometry.in_plane_shift()
    sx, sy = image.GetSpacing()[:2]
    direction = np.column_stack([geometry.row, geometry.column, n])
    # the scan as if untilted: slice k at first + k * along * n
    straight = sitk.Image(image)
    straight.SetOrigin(tuple(first))
    straight.SetSpacing((sx, sy, along))
    straight.SetDirection(tuple(direction.ravel()))
    # the true place of a straight point x is x + ((x - first) . n / along) * shift; the resampler
    # needs the inverse, from a point of the output grid to the straight image
    transform = sitk.AffineTransform(3)
    transform.SetCenter(tuple(first))
    transform.SetMatrix(tuple((np.eye(3) - np.outer(shift / along, n)).ravel()))
    size = list(image.GetSize())
    total = shift * (size[2] - 1)
    origin = first.copy()
    for axis, (vector, spacing) in enumerate(((geometry.row, sx), (geometry.column, sy))):
        extent = float(total @ vector)
        if extent < 0:
            origin += extent * vector
        size[axis] += int(np.ceil(abs(extent) / spacing - 1e-6))
    grid = sitk.Image(size, image.GetPixelID())
    grid.SetOrigin(tuple(origin))
    grid.SetSpacing((sx, sy, along))
    grid.SetDirection(tuple(direction.ravel()))
    air = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(straight, grid, transform, sitk.sitkLinear, air, image.GetPixelID())


def placed_where_scanned(image: sitk.Image, geometry: SliceGeometry, what: str) -> sitk.Image:
    """``image`` (slice k at ``geometry``'s position k) as it is, or, when its slices are shifted
    in their plane (a gantry tilt), resampled onto a regular grid where they were scanned, with a
    warning; a shift no gantry makes is refused."""
    if not is_tilted(geometry, image.GetSpacing()):
        return image
    if tilt_degrees(geometry) > MAX_TILT_DEGREES:
        raise InputImageError(f"{what} has its slices shifted {tilt_degrees(geometry):.0f} degrees off their "
                              f"normal, more than a gantry tilts ({MAX_TILT_DEGREES:g}); check the position tags "
                              "or convert it with dcm2niix")
    log.warning("%s is gantry-tilted (%.1f degrees): its slices were resampled onto a regular grid that keeps "
                "them where they were scanned; outputs are on that grid", what, tilt_degrees(geometry))
    return regularise_tilt(image, geometry)

"""Patient coordinates of a label grid: which way is up, left and the midline, whatever the
orientation of the array (LPS physical space: +x the patient's left, +z superior)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """Index (z, y, x array order) to LPS millimetres for one label array."""

    origin: np.ndarray  # (3,) LPS mm of voxel (0, 0, 0)
    matrix: np.ndarray  # (3, 3): LPS mm per array index step, columns in array order (z, y, x)
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        direction = np.array(image.GetDirection(), float).reshape(3, 3)
        spacing = np.array(image.GetSpacing(), float)
        xyz = direction * spacing[None, :]  # columns: steps of index x, y, z
        return cls(np.array(image.GetOrigin(), float), xyz[:, ::-1].copy(), tuple(image.GetSize()[::-1]))

    @property
    def voxel_mm(self) -> float:
        """The longest voxel edge, in mm (the scale of 'touching')."""
        return float(np.linalg.norm(self.matrix, axis=0).max())

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.matrix))) / 1000.0

    def array_axis(self, patient_axis: int) -> int:
        """The array axis whose direction runs most nearly along LPS axis ``patient_axis`` (0 left-
        right, 1 front-back, 2 head-foot), whatever the image's orientation: per-slice work (the
        body, the spinal canal, bone cores) must slice across the patient, not across the array."""
        cosines = self.matrix / np.linalg.norm(self.matrix, axis=0)
        return int(np.argmax(np.abs(cosines[patient_axis])))

    @property
    def si_axis(self) -> int:
        """The array axis closest to the patient's head-foot axis (axial slices are across it)."""
        return self.array_axis(2)

    def top_slice(self) -> tuple[int, float]:
        """The index along ``si_axis`` of the slice nearest the head (the view's top), and its
        height (LPS z, mm, at index 0 of the other axes)."""
        axis = self.si_axis
        index = np.zeros(3, int)
        index[axis] = self.shape[axis] - 1 if self.matrix[2, axis] > 0 else 0
        return int(index[axis]), float(self.to_mm(index)[2])

    def to_mm(self, index_zyx) -> np.ndarray:
        """LPS mm of (..., 3) array-order indices."""
        return self.origin + np.asarray(index_zyx, float) @ self.matrix.T


def centroids(labels: np.ndarray, index: list[int], grid: Grid) -> dict[int, np.ndarray]:
    """LPS mm centre of each listed label value present in ``labels``."""
    if not index:
        return {}
    centres = ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels, index)
    return {i: grid.to_mm(c) for i, c in zip(index, centres) if np.all(np.isfinite(c))}


class Midline:
    """The body's left-right middle as a function of height: x of the spine's centre line,
    interpolated between vertebra centres (held constant beyond the ends); y, the centre line's
    front-back place, says how far a point lies from the spine itself."""

    def __init__(self, points_mm: list[np.ndarray]):
        pts = sorted((p for p in points_mm), key=lambda p: p[2])
        self.z = np.array([p[2] for p in pts], float)
        self.x = np.array([p[0] for p in pts], float)
        self.y = np.array([p[1] for p in pts], float)

    def __bool__(self) -> bool:
        return len(self.z) > 0

    def x_at(self, z_mm: float) -> float:
        return float(self.axis_at(np.asarray(z_mm, float))[0])

    def axis_at(self, z_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x and y of the spine's centre line at each height."""
        if len(self.z) == 1:
            return np.full(np.shape(z_mm), self.x[0]), np.full(np.shape(z_mm), self.y[0])
        return np.interp(z_mm, self.z, self.x), np.interp(z_mm, self.z, self.y)

    def side_of(self, point_mm: np.ndarray) -> str:
        """``left`` or ``right`` of the midline (LPS: +x is the patient's left)."""
        return "left" if point_mm[0] > self.x_at(point_mm[2]) else "right"


Box = tuple[slice, slice, slice]


def label_boxes(labels: np.ndarray, max_label: int) -> list:
    """Bounding box of each label value 1..max_label (None where absent), in one pass."""
    return ndimage.find_objects(labels, max_label=max_label)


def union_box(boxes: list, indices, shape: tuple[int, ...], margin: int = 0):
    """The box around the listed labels' boxes (grown by ``margin``), or None when none is present."""
    found = [boxes[i - 1] for i in indices if i - 1 < len(boxes) and boxes[i - 1] is not None]
    if not found:
        return None
    return tuple(slice(max(0, min(b[a].start for b in found) - margin), min(n, max(b[a].stop for b in found) + margin))
                 for a, n in enumerate(shape))


def offset(box) -> np.ndarray:
    return np.array([s.start for s in box])

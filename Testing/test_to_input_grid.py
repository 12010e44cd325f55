"""Labels from the model's grid onto the input grid: the bone boundary from the interpolated bone
probability, the bone's name from the nearest model voxel."""

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.inference import to_input_grid
from BoneSegmentationLib.inference.to_input_grid import labels_to_input_grid


def image(array: np.ndarray, spacing, origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def ball_on_model_grid(radius_mm: float = 15.0, centre=(31.0, 33.0, 29.0), spacing: float = 4.0, n: int = 16):
    """A ball of bone (label 7; its left half label 9) on a 4 mm grid, with a bone probability that
    falls from 1 to 0 across its surface over a few millimetres, as a network's does."""
    zyx = np.stack(np.meshgrid(*[np.arange(n) * spacing] * 3, indexing="ij"), -1)
    r = np.linalg.norm(zyx - np.array(centre[::-1]), axis=-1)
    probability = 1 / (1 + np.exp((r - radius_mm) / 1.5))
    labels = np.where(probability > 0.5, np.where(zyx[..., 2] < centre[0], 9, 7), 0).astype(np.uint8)
    return image(labels, (spacing,) * 3), image(probability.astype(np.float32), (spacing,) * 3)


def true_ball(reference: sitk.Image, radius_mm: float = 15.0, centre=(31.0, 33.0, 29.0)) -> np.ndarray:
    size = reference.GetSize()
    points = np.array([reference.TransformIndexToPhysicalPoint((i, j, k))
                       for k in range(size[2]) for j in range(size[1]) for i in range(size[0])])
    return (np.linalg.norm(points - np.array(centre), axis=1) <= radius_mm).reshape(size[::-1])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_the_boundary_follows_the_probability_not_the_model_voxels():
    labels, bone = ball_on_model_grid()
    fine = image(np.zeros((56, 56, 56), np.int16), (1.1, 1.1, 1.1), origin=(1.0, 2.0, 0.5))
    truth = true_ball(fine)
    nearest = sitk.GetArrayFromImage(labels_to_input_grid(labels, fine)) > 0
    smooth_labels = labels_to_input_grid(labels, fine, bone=bone)
    smooth = sitk.GetArrayViewFromImage(smooth_labels) > 0
    assert dice(smooth, truth) > 0.97
    assert dice(nearest, truth) < dice(smooth, truth) - 0.03  # 4 mm steps
    # the names come from the nearest model voxel: both halves, nothing new
    assert set(np.unique(sitk.GetArrayViewFromImage(smooth_labels))) == {0, 7, 9}
    assert smooth_labels.GetSpacing() == fine.GetSpacing() and smooth_labels.GetOrigin() == fine.GetOrigin()


def test_on_the_model_grid_itself_the_labels_are_unchanged():
    labels, bone = ball_on_model_grid()
    edited = sitk.GetArrayFromImage(labels)
    edited[2:4, 2:4, 2:4] = 3  # a bone the probability does not back (the anatomical step filled it)
    bone_array = sitk.GetArrayFromImage(bone)
    bone_array[12:14, 12:14, 12:14] = 0.99  # bone the step removed (a piece outside the body)
    edited_image, bone_image = image(edited, (4.0,) * 3), image(bone_array, (4.0,) * 3)
    out = labels_to_input_grid(edited_image, edited_image, bone=bone_image)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out), edited)


def test_any_orientation_lines_up_in_physical_space():
    """A reference grid rotated 90 degrees about z and flipped head to foot: the ball lands where it
    is in physical space."""
    labels, bone = ball_on_model_grid()
    direction = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    fine = image(np.zeros((50, 60, 60), np.int16), (1.2, 1.2, 1.3), origin=(62.0, 1.0, 63.0), direction=direction)
    smooth = sitk.GetArrayFromImage(labels_to_input_grid(labels, fine, bone=bone)) > 0
    assert dice(smooth, true_ball(fine)) > 0.97


def test_slabs_join_without_a_seam(monkeypatch):
    labels, bone = ball_on_model_grid()
    fine = image(np.zeros((47, 40, 40), np.int16), (1.5, 1.5, 1.3))
    whole = sitk.GetArrayFromImage(labels_to_input_grid(labels, fine, bone=bone))
    monkeypatch.setattr(to_input_grid, "SLAB_SLICES", 5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels_to_input_grid(labels, fine, bone=bone)), whole)


def test_a_probability_on_another_grid_is_refused():
    labels, bone = ball_on_model_grid()
    with pytest.raises(ValueError, match="not one grid"):
        labels_to_input_grid(labels, labels, bone=bone[:8, :, :])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampling_only_the_bones_box_changes_no_voxel(monkeypatch, seed):
    """Only the input voxels within a model voxel of the labelled box are resampled: against the
    whole grid resampled, on oblique grids of either kind, with bone near the grid's edges."""
    rng = np.random.default_rng(seed)
    labels, bone = ball_on_model_grid(radius_mm=8.0, centre=tuple(rng.uniform(10, 50, 3)))
    if seed == 2:  # bone touching the model grid's corner, where the box is clipped
        array = sitk.GetArrayFromImage(labels)
        array[:2, :2, :2] = 4
        labels = image(array, (4.0,) * 3)
    rotation = sitk.VersorTransform(tuple(rng.normal(size=3)), float(rng.uniform(0.2, 1.2)))
    direction = np.array(rotation.GetMatrix())
    spacing = rng.uniform(0.6, 1.6, 3)
    half = direction.reshape(3, 3) @ (np.array([66, 70, 45]) * spacing / 2)
    fine = image(np.zeros((45, 70, 66), np.int16), tuple(spacing),  # centred on the model grid, turned
                 origin=tuple(30.0 + rng.uniform(-8, 8, 3) - half), direction=tuple(direction))
    boxed = sitk.GetArrayFromImage(labels_to_input_grid(labels, fine, bone=bone))
    size = fine.GetSize()
    monkeypatch.setattr(to_input_grid, "_input_box_of_bone", lambda *args: ((0, 0, 0), size))
    whole = sitk.GetArrayFromImage(labels_to_input_grid(labels, fine, bone=bone))
    assert np.count_nonzero(whole) > 100
    np.testing.assert_array_equal(boxed, whole)

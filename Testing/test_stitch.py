"""Shift-and-stitch: F^3 passes of a coarse model interleave into exactly the labels a model at the
fine spacing would give, on the input's grid, whatever its orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from BoneSegmentationLib.cli import main
from BoneSegmentationLib.model.modelfile import load_model, make_metadata, save_model
from BoneSegmentationLib.inference.segmenter import segment_image
from BoneSegmentationLib.inference.stitch import interleave, stitch_shifts
from BoneSegmentationLib.inference.options import InferenceOptions


class IntensityBins(torch.nn.Module):
    """Pointwise classifier: class k wins where round(40 * (x + 1.024)) == k, so a voxel's label
    depends on the intensity at its own centre only and any grid's answer is known exactly."""

    def __init__(self, num_classes: int = 126):
        super().__init__()
        self.register_buffer("k", torch.arange(num_classes, dtype=torch.float32).view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k * (40.0 * (x + 1.024)) - 0.5 * self.k * self.k


def pointwise_model(path, spacing: float):
    meta = make_metadata(name="intensity-bins", version="0", description="pointwise test model",
                         network={"architecture": "IntensityBins", "size_divisor": 1},
                         training={"data": "none (analytic)"}, patch_size=16, spacing_mm=spacing)
    return load_model(save_model(IntensityBins(), meta, path))


def smooth_ct(direction=None) -> sitk.Image:
    """A smooth HU field (-1000..1900) on an anisotropic grid: every class boundary is a surface
    crossing voxels at arbitrary positions."""
    z, y, x = np.meshgrid(np.arange(23), np.arange(29), np.arange(31), indexing="ij")
    hu = 450 + 1450 * np.sin(0.21 * x + 0.05 * z) * np.cos(0.13 * y - 0.11 * z)
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing((1.3, 1.1, 2.5))
    image.SetOrigin((-20.0, 35.5, 101.0))
    if direction is not None:
        image.SetDirection(direction)
    return image


ROTATED = tuple(np.array([[0.0, 0.8, 0.6], [-1.0, 0.0, 0.0], [0.0, -0.6, 0.8]]).ravel())


@pytest.mark.parametrize("direction", [None, ROTATED], ids=["axial", "oblique"])
def test_stitched_coarse_model_equals_the_fine_model(tmp_path, direction):
    ct = smooth_ct(direction)
    coarse, fine = pointwise_model(tmp_path / "c.pt", 4.0), pointwise_model(tmp_path / "f.pt", 2.0)
    exact = {"engine": "torch", "anatomy": False}  # the algorithm's exactness, on the reference engine
    stitched = segment_image(ct, coarse, options=InferenceOptions(device="cpu", overlap=0.25, stitch=2, **exact))
    reference = segment_image(ct, fine, options=InferenceOptions(device="cpu", overlap=0.25, **exact))
    plain = segment_image(ct, coarse, options=InferenceOptions(device="cpu", overlap=0.25, **exact))
    s_grid, r_grid = stitched.labels_model_grid, reference.labels_model_grid
    assert s_grid.GetSize() == r_grid.GetSize()
    assert s_grid.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    assert s_grid.GetOrigin() == pytest.approx(r_grid.GetOrigin(), abs=1e-9)
    assert s_grid.GetDirection() == pytest.approx(r_grid.GetDirection(), abs=1e-12)
    a, b = sitk.GetArrayViewFromImage(s_grid), sitk.GetArrayViewFromImage(r_grid)
    assert len(np.unique(b)) > 60
    assert (a != b).mean() < 1e-4, "stitching must reproduce the fine model (float ties aside)"
    # on the input grid too, and plainly better than nearest-neighbour upsampling of one coarse pass
    for result in (stitched, plain):
        assert result.labels.GetSize() == ct.GetSize()
        assert result.labels.GetOrigin() == pytest.approx(ct.GetOrigin())
        assert result.labels.GetDirection() == pytest.approx(ct.GetDirection())
    truth = sitk.GetArrayViewFromImage(reference.labels)
    agree_stitched = (sitk.GetArrayViewFromImage(stitched.labels) == truth).mean()
    agree_plain = (sitk.GetArrayViewFromImage(plain.labels) == truth).mean()
    assert agree_stitched > 0.999 and agree_plain < 0.6, (agree_stitched, agree_plain)
    conf = sitk.GetArrayViewFromImage(stitched.confidence)
    assert stitched.confidence.GetSize() == s_grid.GetSize() and conf.min() > 0


def test_progress_reports_every_pass(tmp_path):
    messages = []
    segment_image(smooth_ct(), pointwise_model(tmp_path / "c.pt", 4.0), progress=lambda f, m: messages.append((f, m)), options=InferenceOptions(device="cpu", stitch=2))
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m.startswith("pass 8/8: ") for _, m in messages)


def test_shifts_and_interleave_checks():
    assert stitch_shifts(1) == [(0, 0, 0)]
    assert len(set(stitch_shifts(2))) == 8 and stitch_shifts(2)[0] == (0, 0, 0)
    with pytest.raises(ValueError, match="positive integer"):
        stitch_shifts(0)
    fine = np.zeros((5, 4, 3), np.uint8)
    interleave(fine, np.ones((2, 2, 1), np.uint8), 2, (1, 0, 1))  # x=1, y=0, z=1
    assert fine.sum() == 4 and fine[1, 0, 1] == 1 and fine[3, 2, 1] == 1
    with pytest.raises(ValueError, match="fine points"):
        interleave(fine, np.ones((2, 2, 2), np.uint8), 2, (0, 0, 0))


def test_cli_stitch_option(tmp_path, capsys):
    ct_path, out = tmp_path / "ct.nii.gz", tmp_path / "bones.nii.gz"
    sitk.WriteImage(smooth_ct(), str(ct_path))
    model = pointwise_model(tmp_path / "c.pt", 4.0)
    assert main(["segment", str(ct_path), "-o", str(out), "--model", str(model.path), "--stitch", "2",
                 "--confidence", str(tmp_path / "conf.nii.gz"), "--confidence-grid", "model", "-q"]) == 0
    # On the model's grid the confidence is stitched to 4 mm / 2 = 2 mm.
    assert sitk.ReadImage(str(tmp_path / "conf.nii.gz")).GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    with pytest.raises(SystemExit):
        main(["segment", str(ct_path), "-o", str(tmp_path / "x.nii.gz"), "--stitch", "0"])
    assert "stitch factor must be 1 (off) to 4" in capsys.readouterr().err

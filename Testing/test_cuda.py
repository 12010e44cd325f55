"""The GPU path: autocast (bf16, fp16) against the CPU on the bundled model, the streaming result
against the full-buffer reference on the GPU, and a few training iterations on the GPU.

Skipped where PyTorch sees no CUDA device. ``BONESEGMENTATION_TEST_DEVICE=cpu`` runs the same
checks on the CPU (no autocast there), so that the tests themselves can be exercised on any
machine; CI has no GPU, so there they are skipped.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from BoneSegmentationLib.cli import main
from BoneSegmentationLib.inference.preprocess import normalise
from BoneSegmentationLib.inference.sliding_window import predict_streaming
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model
from BoneSegmentationLib.synthetic.phantom import make_phantom

from conftest import make_random_model
from test_sliding_window import naive_full_buffer

DEVICE = os.environ.get("BONESEGMENTATION_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (BONESEGMENTATION_TEST_DEVICE=cpu runs these checks on the CPU)")
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module")
def shoulders():
    """The bundled model's input for a phantom's shoulders at its 4 mm: many small bones, seconds."""
    model = load_model(resolve_model(None))
    ct, _, _ = make_phantom(2, spacing=4.0, partial=False)
    n = ct.GetSize()[2]
    inten = model.info.intensity
    volume = normalise(ct[:, :, n - 90:n - 40], inten.clip_low, inten.clip_high, inten.mean, inten.std)
    return model, volume


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
def test_autocast_labels_agree_with_the_cpu_on_the_bundled_model(shoulders, precision):
    model, volume = shoulders
    dtype = PRECISIONS[precision]
    if DEVICE.startswith("cuda") and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    args = (volume, model.num_classes, model.patch_size, 0.5)
    cpu_labels = predict_streaming(model.module.to("cpu"), *args).labels
    gpu_model = load_model(resolve_model(None))
    gpu_labels, gpu_conf, _ = predict_streaming(gpu_model.module.to(DEVICE), *args, device=DEVICE, autocast_dtype=dtype)
    bone = (cpu_labels > 0) | (gpu_labels > 0)
    agreement = float(np.mean(cpu_labels[bone] == gpu_labels[bone]))
    print(f"{DEVICE} {precision} autocast vs CPU fp32: {100 * agreement:.3f} % of {int(bone.sum())} bone voxels")
    assert bone.sum() > 1000 and agreement >= 0.99, agreement
    assert np.isfinite(gpu_conf.astype(np.float32)).all()


def test_streaming_equals_the_full_buffer_on_the_device(tmp_path):
    torch.backends.cudnn.deterministic = True  # the same convolution algorithm for both runs
    net = load_model(make_random_model(tmp_path / "net.pt", base_features=4, levels=3, patch=16,
                                       num_classes=126, seed=3)).module.to(DEVICE)
    volume = torch.randn((40, 24, 28), generator=torch.Generator().manual_seed(40))
    labels, conf, _ = predict_streaming(net, volume, 126, (16, 16, 16), 0.5, device=DEVICE, pad_value=-1.0)
    ref_labels, ref_conf, _ = naive_full_buffer(net, volume, 126, (16, 16, 16), 0.5, pad_value=-1.0, device=DEVICE)
    assert len(np.unique(ref_labels)) > 3
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(conf.astype(np.float32), ref_conf, rtol=2e-3, atol=1e-4)


def test_training_runs_a_few_iterations_on_the_device(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["phantom", "-o", str(data), "--dataset", "--count", "2", "--seed", "61", "--spacing", "6"]) == 0
    assert main(["train", str(data), "-o", str(run), "--iterations", "3", "--checkpoint-every", "3",
                 "--device", DEVICE.split(":")[0], "--patch", "32", "--width", "4", "--levels", "3",
                 "--spacing", "6", "--validate-every", "1000", "-q"]) == 0
    checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    model = load_model(run / "bones-model.pt")
    assert model.metadata["training"]["iterations"] == 3
    with torch.inference_mode():
        out = model.module.to(DEVICE)(torch.zeros(1, 1, 32, 32, 32, device=DEVICE))
    assert out.shape == (1, 126, 32, 32, 32) and torch.isfinite(out).all()

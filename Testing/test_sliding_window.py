"""Streaming aggregation equals a naive full-buffer reference exactly (argmax identical)."""

import numpy as np
import pytest
import torch

from BoneSegmentationLib.core.errors import Cancelled
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.inference.sliding_window import (
    _ring_spans, gaussian_importance, pad_to_patch, patch_starts, predict_streaming, window_positions)

from conftest import make_random_model


def naive_full_buffer(net, volume, num_classes, patch, overlap, pad_value=0.0):
    """The textbook method (MONAI / nnU-Net): one logit buffer for the whole volume."""
    padded = pad_to_patch(volume, patch, pad_value)
    weight = gaussian_importance(patch)
    logits = torch.zeros((num_classes, *padded.shape))
    weights = torch.zeros(padded.shape)
    with torch.inference_mode():
        for z, y, x in window_positions(tuple(padded.shape), patch, overlap):
            out = net(padded[z:z + patch[0], y:y + patch[1], x:x + patch[2]][None, None])[0]
            logits[:, z:z + patch[0], y:y + patch[1], x:x + patch[2]].addcmul_(out, weight)
            weights[z:z + patch[0], y:y + patch[1], x:x + patch[2]] += weight
    logits /= weights
    probs = torch.softmax(logits, dim=0)
    d, h, w = volume.shape
    return logits.argmax(0)[:d, :h, :w].numpy(), probs.max(0).values[:d, :h, :w].numpy()


@pytest.fixture(scope="module")
def scripted_net(tmp_path_factory):
    path = make_random_model(tmp_path_factory.mktemp("sw") / "net.pt", base_features=4, levels=3,
                             patch=16, num_classes=126, seed=3)
    return load_model(path).module  # reloaded TorchScript, as users get it


@pytest.mark.parametrize("shape,patch,overlap", [
    ((40, 24, 28), (16, 16, 16), 0.5),
    ((40, 24, 28), (16, 16, 16), 0.25),
    ((37, 30, 21), (16, 16, 16), 0.0),
    ((52, 20, 20), (24, 16, 20), 0.5),
    ((33, 33, 17), (32, 16, 16), 0.75),
    ((10, 12, 40), (16, 16, 16), 0.5),  # thinner than the patch on two axes: padding
])
def test_streaming_equals_full_buffer(scripted_net, shape, patch, overlap):
    gen = torch.Generator().manual_seed(sum(shape))
    volume = torch.randn(shape, generator=gen)
    labels, conf = predict_streaming(scripted_net, volume, 126, patch, overlap, pad_value=-1.0)
    ref_labels, ref_conf = naive_full_buffer(scripted_net, volume, 126, patch, overlap, pad_value=-1.0)
    assert labels.shape == shape and conf.shape == shape
    assert len(np.unique(ref_labels)) > 3, "the test needs a non-trivial label map"
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(conf.astype(np.float32), ref_conf, rtol=2e-3, atol=1e-4)


def test_patch_starts_cover_and_overlap():
    assert patch_starts(96, 96, 0.5) == [0]
    assert patch_starts(50, 96, 0.5) == [0]
    starts = patch_starts(320, 96, 0.5)
    assert starts[0] == 0 and starts[-1] == 320 - 96
    assert all(b - a <= 48 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError):
        patch_starts(100, 10, 1.0)


def test_ring_spans_wrap():
    assert _ring_spans(0, 16, 16) == [(0, 0, 16)]
    assert _ring_spans(8, 16, 16) == [(8, 0, 8), (0, 8, 8)]
    assert sum(n for _, _, n in _ring_spans(27, 16, 16)) == 16


def test_gaussian_peak_and_positive():
    g = gaussian_importance((16, 16, 16))
    assert float(g.max()) == 1.0 and float(g.min()) > 0


def test_progress_and_cancel(scripted_net):
    volume = torch.randn((40, 16, 16))
    seen = []
    predict_streaming(scripted_net, volume, 126, (16, 16, 16), 0.5, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert len(seen) == len(window_positions((40, 16, 16), (16, 16, 16), 0.5)) == 4
    calls = []

    def cancel_after_two():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        predict_streaming(scripted_net, volume, 126, (16, 16, 16), 0.5, cancel=cancel_after_two)


def test_wrong_channel_count_is_caught():
    net = torch.nn.Conv3d(1, 5, 1)
    with pytest.raises(RuntimeError, match="5 channels, expected 126"):
        predict_streaming(net, torch.randn(16, 16, 16), 126, (16, 16, 16), 0.5)

"""Streaming aggregation equals a naive full-buffer reference exactly (argmax identical)."""

import numpy as np
import pytest
import torch

from BoneSegmentationLib.core.errors import Cancelled
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.inference.sliding_window import (
    _ring_spans, fill_to_patch, gaussian_importance, patch_starts, predict_streaming, window_batches,
    window_positions)

from conftest import make_random_model


def naive_full_buffer(net, volume, num_classes, patch, overlap, pad_value=0.0, return_logits=False, device="cpu"):
    """The textbook method (MONAI / nnU-Net): one logit buffer for the whole volume (on ``device``)."""
    filled, z0 = fill_to_patch(volume.numpy(), patch, pad_value)
    padded = torch.from_numpy(filled).to(device)
    weight = gaussian_importance(patch).to(device)
    logits = torch.zeros((num_classes, *padded.shape), device=device)
    weights = torch.zeros(padded.shape, device=device)
    with torch.inference_mode():
        for z, y, x in window_positions(tuple(padded.shape), patch, overlap):
            out = net(padded[z:z + patch[0], y:y + patch[1], x:x + patch[2]][None, None])[0]
            logits[:, z:z + patch[0], y:y + patch[1], x:x + patch[2]].addcmul_(out, weight)
            weights[z:z + patch[0], y:y + patch[1], x:x + patch[2]] += weight
    logits /= weights
    probs = torch.softmax(logits, dim=0)
    d, h, w = volume.shape
    if return_logits:
        return logits[:, z0:z0 + d, :h, :w].cpu().numpy()
    return (logits.argmax(0)[z0:z0 + d, :h, :w].cpu().numpy(),
            probs.max(0).values[z0:z0 + d, :h, :w].cpu().numpy(),
            1 - probs[0, z0:z0 + d, :h, :w].cpu().numpy())


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
    labels, conf, bone = predict_streaming(scripted_net, volume, 126, patch, overlap, pad_value=-1.0)
    ref_labels, ref_conf, ref_bone = naive_full_buffer(scripted_net, volume, 126, patch, overlap, pad_value=-1.0)
    assert labels.shape == shape and conf.shape == shape and bone.shape == shape
    assert len(np.unique(ref_labels)) > 3, "the test needs a non-trivial label map"
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(conf.astype(np.float32), ref_conf, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(bone.astype(np.float32), ref_bone, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("batch_size", [3, 16])
def test_batches_of_windows_give_the_same_labels(scripted_net, batch_size):
    """Several windows per network call (the GPU path): same labels and confidence as one at a time."""
    volume = torch.randn((52, 20, 20), generator=torch.Generator().manual_seed(5))
    one = predict_streaming(scripted_net, volume, 126, (24, 16, 16), 0.5, pad_value=-1.0)
    many = predict_streaming(scripted_net, volume, 126, (24, 16, 16), 0.5, pad_value=-1.0, batch_size=batch_size)
    np.testing.assert_array_equal(many[0], one[0])
    np.testing.assert_allclose(many[1].astype(np.float32), one[1].astype(np.float32), atol=1e-3)
    batches = window_batches(window_positions((52, 20, 20), (24, 16, 16), 0.5), batch_size)
    assert all(len({z for z, _, _ in b}) == 1 and len(b) <= batch_size for b in batches)


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


def test_float16_ring_differs_only_at_near_ties(scripted_net):
    """The low-memory ring (``--accumulate float16``): each running mean is rounded to float16 once
    per window (relative error 2^-11 of a value no larger than the largest logit), so a label may
    differ from the float32 reference only where the reference's two classes are within that
    rounding of each other. Stated tolerance: the reference gap <= 4 x windows x 2^-11 x the largest
    |averaged logit| at the voxel."""
    shape, patch, overlap = (40, 24, 28), (16, 16, 16), 0.5
    volume = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    labels, conf, _ = predict_streaming(scripted_net, volume, 126, patch, overlap, pad_value=-1.0,
                                        accumulate_dtype=torch.float16)
    ref = naive_full_buffer(scripted_net, volume, 126, patch, overlap, pad_value=-1.0, return_logits=True)
    ref_labels = ref.argmax(0)
    differ = labels != ref_labels
    assert differ.mean() <= 0.05, differ.mean()  # random weights: top-2 gaps ~0.02 of logits ~4
    windows = 8  # at most 2 windows per axis overlap a voxel at overlap 0.5
    gap = np.take_along_axis(ref, ref_labels[None], 0)[0] - np.take_along_axis(ref, labels[None].astype(np.int64), 0)[0]
    bound = 4 * windows * 2.0 ** -11 * np.abs(ref).max(axis=0)
    assert np.all(gap[differ] <= bound[differ]), float((gap - bound)[differ].max())
    ref_conf = torch.softmax(torch.from_numpy(ref), 0).max(0).values.numpy()
    np.testing.assert_allclose(conf.astype(np.float32), ref_conf, atol=2e-2)


def test_a_short_scan_is_mirrored_head_to_foot_and_padded_with_air_across():
    """Axis 0 (head to foot) shorter than the patch: mirrored copies either side, the scan centred;
    axes 1-2 shorter: ``pad_value`` at the far end (a scan is surrounded by air)."""
    array = np.arange(5 * 20 * 10, dtype=np.float32).reshape(5, 20, 10)
    filled, z0 = fill_to_patch(array, (16, 16, 16), -9.0)
    assert filled.shape == (16, 20, 16) and z0 == 5
    np.testing.assert_array_equal(filled[z0:z0 + 5, :, :10], array)
    np.testing.assert_array_equal(filled[z0 - 5:z0, :, :10], array[::-1])  # mirrored before the scan
    np.testing.assert_array_equal(filled[z0 + 5:z0 + 10, :, :10], array[::-1])  # and after it
    assert (filled[:, :, 10:] == -9.0).all()
    two, z0 = fill_to_patch(array[:2, :16, :], (16, 16, 10), 0.0)  # mirrored again and again
    assert two.shape == (16, 16, 10) and z0 == 7
    assert all(np.array_equal(s, array[0, :16]) or np.array_equal(s, array[1, :16]) for s in two)
    same, z0 = fill_to_patch(array, (4, 8, 8), 0.0)
    assert same is array and z0 == 0


def test_a_short_scan_is_segmented_as_its_mirrored_stack(scripted_net):
    """predict_streaming on a 6-slice volume equals the network on the explicit mirrored stack
    (5 mirrored slices, the scan, 5 mirrored slices), cropped back."""
    volume = torch.randn((6, 16, 16), generator=torch.Generator().manual_seed(11))
    labels, _, _ = predict_streaming(scripted_net, volume, 126, (16, 16, 16), 0.5, pad_value=-1.0)
    flipped = volume.flip(0)
    stack = torch.cat([flipped[1:], volume, flipped[:5]])
    with torch.inference_mode():
        direct = scripted_net(stack[None, None])[0].argmax(0)[5:11].numpy()
    assert labels.shape == (6, 16, 16) and len(np.unique(direct)) > 3
    np.testing.assert_array_equal(labels, direct)


def test_training_patches_of_a_short_case_are_filled_as_inference_fills_them():
    from BoneSegmentationLib.training.train import Case, _crop
    from BoneSegmentationLib.inference.preprocess import padding_value
    from BoneSegmentationLib.model.metadata import DEFAULT_INTENSITY
    rng = np.random.default_rng(2)
    image = rng.normal(size=(6, 20, 12)).astype(np.float32)
    labels = rng.integers(0, 126, size=(6, 20, 12)).astype(np.uint8)
    img, lab = _crop(Case("short", image, labels), (0, 2, 0), (16, 16, 16))
    expected, z0 = fill_to_patch(image[:, 2:18], (16, 16, 16), padding_value(DEFAULT_INTENSITY))
    np.testing.assert_array_equal(img, expected)
    np.testing.assert_array_equal(lab, fill_to_patch(labels[:, 2:18], (16, 16, 16), 0)[0])
    np.testing.assert_array_equal(lab[z0:z0 + 6, :, :12], labels[:, 2:18])  # labels follow the mirrored image
    assert (lab[:, :, 12:] == 0).all()


def test_a_short_view_of_a_long_case_is_its_middle_slices_filled_as_a_short_scan():
    """``_crop(..., short=n)``: n slices about the patch's middle, mirrored head to foot to the
    patch's depth exactly as inference fills an n-slice scan, the labels with them."""
    from BoneSegmentationLib.training.train import Case, _crop
    rng = np.random.default_rng(3)
    image = rng.normal(size=(40, 20, 20)).astype(np.float32)
    labels = rng.integers(0, 126, size=(40, 20, 20)).astype(np.uint8)
    case = Case("long", image, labels)
    corner, patch = (10, 2, 4), (16, 16, 16)
    img, lab = _crop(case, corner, patch, short=5)
    middle = slice(10 + (16 - 5) // 2, 10 + (16 - 5) // 2 + 5)
    expected, z0 = fill_to_patch(image[middle, 2:18, 4:20], patch, -1.0)
    np.testing.assert_array_equal(img, expected)
    np.testing.assert_array_equal(lab, fill_to_patch(labels[middle, 2:18, 4:20], patch, 0)[0])
    np.testing.assert_array_equal(img[z0 - 1], img[z0])  # the mirror starts at the slab's edge
    whole, _ = _crop(case, corner, patch)
    np.testing.assert_array_equal(whole, image[10:26, 2:18, 4:20])
    np.testing.assert_array_equal(_crop(case, corner, patch, short=16)[0], whole)  # as deep as the patch: whole
    short_case = Case("short", image[:9], labels[:9])  # shorter than the patch: the slab is cut from its 9 slices
    np.testing.assert_array_equal(_crop(short_case, (0, 2, 4), patch, short=5)[0],
                                  fill_to_patch(image[2:7, 2:18, 4:20], patch, -1.0)[0])
    np.testing.assert_array_equal(_crop(short_case, (0, 2, 4), patch, short=12)[0],
                                  _crop(short_case, (0, 2, 4), patch)[0])

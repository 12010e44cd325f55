"""Sliding-window inference with streaming aggregation.

Why streaming: a 126-class float32 logit volume of a 2 mm upper body (250 x 250 x 500) is 15.7 GB;
MONAI's ``sliding_window_inference`` and nnU-Net keep such a buffer. Here patches are visited slab
by slab along axis 0 (the scan length, superior in LPS) and blended into a ring buffer only one
patch deep (classes x patch depth x H x W). As soon as no later patch can reach a slice, its
weighted logits are averaged, arg-maxed to a label and reduced to a top-1 probability
(confidence), and the ring slot is reused. Peak memory grows with the cross-section, not with the
scan length, and the result equals a full-buffer computation exactly (same additions, same order).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch

from ..core.errors import Cancelled

ProgressCallback = Callable[[float, str], None]
CLASS_CHUNK = 8  # classes converted together when the ring is float16
CancelCheck = Callable[[], bool]


def patch_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spread window starts covering ``size`` with at least ``overlap`` overlap
    (nnU-Net's rule: step = patch * (1 - overlap), first window at 0, last flush with the end)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= patch:
        return [0]
    step = patch * (1.0 - overlap)
    n = int(math.ceil((size - patch) / step)) + 1
    actual = (size - patch) / (n - 1)
    return [int(round(i * actual)) for i in range(n)]


def gaussian_importance(patch: tuple[int, int, int], sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """Gaussian weight map (sigma = patch * 1/8, peak 1, never exactly zero) that down-weights
    the less reliable patch borders, as in nnU-Net."""
    axes = []
    for p in patch:
        c = (p - 1) / 2.0
        sigma = p * sigma_scale
        x = np.arange(p, dtype=np.float64)
        axes.append(np.exp(-0.5 * ((x - c) / sigma) ** 2))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g /= g.max()
    g = np.maximum(g, g[g > 0].min())
    return torch.from_numpy(g.astype(np.float32))


def window_positions(shape: tuple[int, int, int], patch: tuple[int, int, int],
                     overlap: float) -> list[tuple[int, int, int]]:
    """All window corners, ordered slab by slab along axis 0 (the streaming order)."""
    zs, ys, xs = (patch_starts(s, p, overlap) for s, p in zip(shape, patch))
    return [(z, y, x) for z in zs for y in ys for x in xs]


def window_batches(corners: list[tuple[int, int, int]], batch_size: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive windows in groups of at most ``batch_size``, never two slabs (z) in one group."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    batches: list[list[tuple[int, int, int]]] = []
    for corner in corners:
        if batches and len(batches[-1]) < batch_size and batches[-1][0][0] == corner[0]:
            batches[-1].append(corner)
        else:
            batches.append([corner])
    return batches


def fill_to_patch(array: np.ndarray, patch: tuple[int, int, int], pad_value: float) -> tuple[np.ndarray, int]:
    """Fill each axis shorter than the patch; returns the filled array and where the scan starts
    along axis 0 in it (crop it back with that offset). One rule for inference, validation and the
    training's patches (images with air, labels with background across the body).

    Head to foot (axis 0) the body goes on past a short scan, so the scan is mirrored there, centred
    in the patch: a 40 mm slab becomes a 256 mm stack of mirrored copies, which the network reads
    like a body. Padding that axis with air instead, which no window of a whole scan shows, made
    the network miss bone and name what it found with classes the body cannot hold: on 36 fresh
    synthetic 21-59-slice crops, bone foreground Dice 0.633 with air, 0.706 mirrored, better on 24
    (``tools/compare_short_scan_fill.py``; docs/real-ct-training.md, "Short scans are mirrored").
    Across the body (axes 1, 2) a scan is surrounded by air: ``pad_value`` at the far end.
    """
    pads = [max(0, p - s) for s, p in zip(array.shape, patch)]
    if not any(pads):
        return array, 0
    before = pads[0] // 2
    if pads[0]:
        array = np.pad(array, [(before, pads[0] - before), (0, 0), (0, 0)], mode="symmetric")
    if pads[1] or pads[2]:
        array = np.pad(array, [(0, 0), (0, pads[1]), (0, pads[2])], constant_values=pad_value)
    return array, before


def _ring_spans(start: int, length: int, depth: int) -> list[tuple[int, int, int]]:
    """Split slices [start, start+length) into contiguous ring spans (ring_index, offset, n)."""
    spans, offset = [], 0
    while offset < length:
        ring = (start + offset) % depth
        n = min(length - offset, depth - ring)
        spans.append((ring, offset, n))
        offset += n
    return spans


class WindowPrediction(NamedTuple):
    """What the sliding window leaves per voxel of the volume (z, y, x)."""
    labels: np.ndarray  # uint8 arg-max class
    confidence: np.ndarray  # float16 top-1 probability
    bone: np.ndarray  # float16 probability of any bone, 1 - p(background)


class StreamingAggregator:
    """Blends weighted patch logits into a ring buffer and emits finished slices."""

    def __init__(self, num_classes: int, shape: tuple[int, int, int], patch_depth: int,
                 device: torch.device, dtype: torch.dtype, finalize_chunk: int = 4):
        self.shape = shape
        self.depth = min(patch_depth, shape[0])
        _, h, w = shape
        self.logits = torch.zeros((num_classes, self.depth, h, w), dtype=dtype, device=device)
        self.weights = torch.zeros((self.depth, h, w), dtype=torch.float32, device=device)
        self.labels = np.zeros(shape, dtype=np.uint8 if num_classes <= 256 else np.int16)
        self.confidence = np.zeros(shape, dtype=np.float16)
        self.bone = np.zeros(shape, dtype=np.float16)
        self.running_mean = dtype != torch.float32  # float32: weighted sums (exact); else weighted means
        self.finalized = 0  # slices [0, finalized) are done
        self.finalize_chunk = finalize_chunk

    def add(self, corner: tuple[int, int, int], logits: torch.Tensor, weight: torch.Tensor) -> None:
        z, y, x = corner
        pz, py, px = logits.shape[1:]
        if z < self.finalized:
            raise RuntimeError("patch arrived for a slice already finalised: windows out of order")
        for ring, off, n in _ring_spans(z, pz, self.depth):
            target = self.logits[:, ring:ring + n, y:y + py, x:x + px]
            w = weight[off:off + n]
            weights = self.weights[ring:ring + n, y:y + py, x:x + px]
            if not self.running_mean:
                target.addcmul_(logits[:, off:off + n], w)
            else:
                # float16 ring: a running weighted mean (m += w / (W + w) * (l - m)) rather than a
                # sum, because border weights (down to 1e-11) times logits underflow float16; the
                # update in float32, rounded once, a few classes at a time (one full-size half
                # copy of the window's logits is 3-4x slower on a CPU)
                share = w / (weights + w)
                for c in range(0, target.shape[0], CLASS_CHUNK):
                    part = target[c:c + CLASS_CHUNK]
                    mean = part.float()
                    mean.addcmul_(logits[c:c + CLASS_CHUNK, off:off + n].float() - mean, share)
                    part.copy_(mean)
            weights += w

    def finalize_until(self, z_end: int) -> None:
        """Slices below ``z_end`` will receive no more patches: reduce and free them."""
        z_end = min(z_end, self.shape[0])
        while self.finalized < z_end:
            start = self.finalized
            n = min(self.finalize_chunk, z_end - start)
            for ring, off, m in _ring_spans(start, n, self.depth):
                slab = self.logits[:, ring:ring + m].float()
                if not self.running_mean:
                    slab /= self.weights[ring:ring + m]
                top, label = slab.max(dim=0)
                # top-1 softmax probability of the averaged logits = 1 / sum(exp(l - l_max))
                total = torch.exp(slab - top).sum(dim=0)
                conf = 1.0 / total
                bone = 1.0 - torch.exp(slab[0] - top) / total
                z0 = start + off
                self.labels[z0:z0 + m] = label.to(torch.uint8 if self.labels.dtype == np.uint8 else torch.int16).cpu().numpy()
                self.confidence[z0:z0 + m] = conf.half().cpu().numpy()
                self.bone[z0:z0 + m] = bone.half().cpu().numpy()
                self.logits[:, ring:ring + m].zero_()
                self.weights[ring:ring + m].zero_()
            self.finalized += n


def predict_streaming(net: Callable[[torch.Tensor], torch.Tensor], volume: torch.Tensor, num_classes: int,
                      patch: tuple[int, int, int], overlap: float = 0.5, device: torch.device | str = "cpu",
                      pad_value: float = 0.0, autocast_dtype: Optional[torch.dtype] = None,
                      accumulate_dtype: Optional[torch.dtype] = None,
                      progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelCheck] = None, batch_size: int = 1) -> WindowPrediction:
    """Label map (uint8), confidence (float16, top-1 probability) and bone probability (float16)
    for a normalised volume.

    ``volume`` is (D, H, W) float32 on the CPU; patches are moved to ``device`` one at a time.
    Accumulation is float32 (exactly the full-buffer result) unless ``accumulate_dtype`` says
    otherwise: float16 halves the ring (running means, labels may differ at near-ties).
    ``batch_size`` windows of one slab go through the network together (a GPU is busier with
    several; a batch never spans two slabs, so the ring stays one window deep).
    """
    device = torch.device(device)
    original = tuple(volume.shape)
    filled, z0 = fill_to_patch(volume.numpy(), patch, pad_value)
    padded = torch.from_numpy(filled)
    shape = tuple(padded.shape)
    corners = window_positions(shape, patch, overlap)
    weight = gaussian_importance(patch).to(device)
    agg = StreamingAggregator(num_classes, shape, patch[0], device, accumulate_dtype or torch.float32)
    total, done = len(corners), 0
    with torch.inference_mode():
        for batch in window_batches(corners, batch_size):
            if cancel is not None and cancel():
                raise Cancelled("segmentation cancelled by the user")
            agg.finalize_until(batch[0][0])
            tiles = torch.stack([padded[z:z + patch[0], y:y + patch[1], x:x + patch[2]] for z, y, x in batch])
            tiles = tiles.to(device)[:, None]
            if autocast_dtype is not None and device.type == "cuda":
                with torch.autocast("cuda", dtype=autocast_dtype):
                    out = net(tiles)
            else:
                out = net(tiles)
            if out.shape[1] != num_classes:
                raise RuntimeError(f"network returned {out.shape[1]} channels, expected {num_classes}")
            for k, corner in enumerate(batch):
                agg.add(corner, out[k], weight)
            del out, tiles  # freed before the next call, not after it (126 x window: 425 MiB at 96^3)
            done += len(batch)
            if progress is not None:
                progress(done / total, f"patch {done}/{total}")
        agg.finalize_until(shape[0])
    d, h, w = original
    crop = (slice(z0, z0 + d), slice(0, h), slice(0, w))
    return WindowPrediction(agg.labels[crop], agg.confidence[crop], agg.bone[crop])

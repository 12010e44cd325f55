"""The engine's one entry point: a CT image in, a label map on the input's exact grid out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from .device import autocast_dtype, resolve_device
from .imageio import check_ct
from .labelmaps import present_labels
from .modelfile import LoadedModel
from .review import ReviewItem, review_ranking
from .preprocess import AIR_HU, labels_to_input_grid, normalise, to_model_grid
from .sliding_window import CancelCheck, ProgressCallback, predict_streaming


@dataclass
class SegmentationResult:
    labels: sitk.Image  # uint8 label map on the input grid (same size, origin, spacing, direction)
    labels_model_grid: sitk.Image  # the same labels at model spacing, before resampling back
    confidence: sitk.Image  # float32 top-1 probability at model spacing
    review: list[ReviewItem] = field(default_factory=list)  # bones ranked for review, most suspicious first
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def segment_image(image: sitk.Image, model: LoadedModel, device: str = "auto", overlap: float = 0.5,
                  progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelCheck] = None) -> SegmentationResult:
    """Segment ``image`` with ``model``; progress(fraction, message) is called per step."""
    warnings = check_ct(image)
    dev = resolve_device(device)
    meta = model.metadata
    timings: dict[str, float] = {}

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    t0 = time.perf_counter()
    report(0.0, "resampling to model spacing")
    grid = to_model_grid(image, model.spacing, meta["orientation"])
    inten = meta["intensity"]
    volume = normalise(grid, inten["clip_low"], inten["clip_high"], inten["mean"], inten["std"])
    pad_value = (max(inten["clip_low"], AIR_HU) - inten["mean"]) / inten["std"]
    timings["preprocess_s"] = time.perf_counter() - t0

    module = model.module.to(dev)
    t1 = time.perf_counter()
    labels, confidence = predict_streaming(
        module, volume, model.num_classes, model.patch_size, overlap=overlap, device=dev,
        pad_value=pad_value, autocast_dtype=autocast_dtype(dev),
        progress=lambda f, m: report(0.02 + 0.93 * f, m), cancel=cancel)
    timings["inference_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    report(0.96, "resampling labels to the input grid")
    labels_grid = sitk.GetImageFromArray(labels)
    labels_grid.CopyInformation(grid)
    conf_img = sitk.GetImageFromArray(confidence.astype(np.float32))
    conf_img.CopyInformation(grid)
    labels_input = labels_to_input_grid(labels_grid, image)
    timings["postprocess_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    report(0.98, "ranking bones for review")
    review = review_ranking(labels_grid, conf_img)
    timings["review_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    report(1.0, "done")
    return SegmentationResult(labels_input, labels_grid, conf_img, review, warnings, timings, str(dev))


def found_classes(labels: sitk.Image) -> list[int]:
    """Label values present (background excluded), ascending."""
    return present_labels(sitk.GetArrayViewFromImage(labels))


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)

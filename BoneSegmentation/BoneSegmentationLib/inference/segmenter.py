"""The engine's one entry point: a CT image in, a label map on the input's exact grid out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from ..inference.device import autocast_dtype, resolve_device
from ..core.imageio import check_ct
from ..core.labelmaps import present_labels
from ..inference.mirror import MirrorAveraged
from ..model.modelfile import LoadedModel
from ..inference.review import ReviewItem, review_ranking
from ..inference.preprocess import AIR_HU, labels_to_input_grid, normalise
from ..inference.sliding_window import CancelCheck, ProgressCallback, predict_streaming
from ..inference.stitch import fine_grid, interleave, shifted_grid, stitch_shifts


@dataclass
class SegmentationResult:
    labels: sitk.Image  # uint8 label map on the input grid (same size, origin, spacing, direction)
    labels_model_grid: sitk.Image  # the same labels on the model's grid (model spacing / stitch factor)
    confidence: sitk.Image  # float32 top-1 probability on the same grid as labels_model_grid
    review: list[ReviewItem] = field(default_factory=list)  # bones ranked for review, most suspicious first
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    mirrored: bool = False  # left-right mirror averaging was used


def segment_image(image: sitk.Image, model: LoadedModel, device: str = "auto", overlap: float = 0.5,
                  progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelCheck] = None, stitch: int = 1,
                  mirror: Optional[bool] = None) -> SegmentationResult:
    """Segment ``image`` with ``model``; progress(fraction, message) is called per step.

    ``stitch`` > 1 runs the model stitch^3 times on shifted grids and returns labels at model
    spacing / stitch (see ``stitch.py``): finer boundaries for stitch^3 times the inference time.
    ``mirror`` averages each patch with its left-right mirror, left and right classes swapped
    (``mirror.py``), for twice the inference time; None follows the model's metadata.
    """
    shifts = stitch_shifts(stitch)
    warnings = check_ct(image)
    dev = resolve_device(device)
    meta = model.metadata
    inten = meta["intensity"]
    pad_value = (max(inten["clip_low"], AIR_HU) - inten["mean"]) / inten["std"]
    timings = {"preprocess_s": 0.0, "inference_s": 0.0}
    module = model.module.to(dev)
    mirrored = model.mirror_by_default if mirror is None else mirror
    if mirrored:
        module = MirrorAveraged(module, model.class_names, meta["orientation"])

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    t0 = time.perf_counter()
    report(0.0, "resampling to model spacing")
    oriented = sitk.DICOMOrient(image, meta["orientation"])
    fine = fine_grid(oriented, model.spacing, stitch)
    labels = np.zeros(fine.GetSize()[::-1], np.uint8)
    confidence = np.zeros(labels.shape, np.float32)
    for k, shift in enumerate(shifts):
        t1 = time.perf_counter()
        grid = shifted_grid(oriented, fine, stitch, shift)
        volume = normalise(grid, inten["clip_low"], inten["clip_high"], inten["mean"], inten["std"])
        t2 = time.perf_counter()
        timings["preprocess_s"] += t2 - t1
        prefix = f"pass {k + 1}/{len(shifts)}: " if len(shifts) > 1 else ""
        pass_labels, pass_confidence = predict_streaming(
            module, volume, model.num_classes, model.patch_size, overlap=overlap, device=dev,
            pad_value=pad_value, autocast_dtype=autocast_dtype(dev),
            progress=lambda f, m: report(0.02 + 0.93 * (k + f) / len(shifts), prefix + m), cancel=cancel)
        interleave(labels, pass_labels, stitch, shift)
        interleave(confidence, pass_confidence, stitch, shift)
        del volume, grid
        timings["inference_s"] += time.perf_counter() - t2

    t3 = time.perf_counter()
    report(0.96, "resampling labels to the input grid")
    labels_grid = sitk.GetImageFromArray(labels)
    labels_grid.CopyInformation(fine)
    conf_img = sitk.GetImageFromArray(confidence)
    conf_img.CopyInformation(fine)
    labels_input = labels_to_input_grid(labels_grid, image)
    timings["postprocess_s"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    report(0.98, "ranking bones for review")
    review = review_ranking(labels_grid, conf_img)
    timings["review_s"] = time.perf_counter() - t4
    timings["total_s"] = time.perf_counter() - t0
    report(1.0, "done")
    return SegmentationResult(labels_input, labels_grid, conf_img, review, warnings, timings, str(dev),
                              mirrored)


def found_classes(labels: sitk.Image) -> list[int]:
    """Label values present (background excluded), ascending."""
    return present_labels(sitk.GetArrayViewFromImage(labels))


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)

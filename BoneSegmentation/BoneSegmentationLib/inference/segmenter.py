"""The engine's one entry point: ``Segmenter(model, options)`` turns CT images into label maps on
each input's exact grid, as nnU-Net's predictor does: options set once (device resolved, mirror
wrapper built, threads set), any number of images, and a record of what made each output
(``SegmentationRecord``, written as a sidecar JSON beside the label map)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import SimpleITK as sitk
import torch

from .. import __version__
from ..core.bones import default_table
from ..core.files import atomic_write_text
from ..core.imageio import check_ct, strip_image_suffix
from ..core.labelmaps import present_labels
from ..consistency.body import body_image, keep_inside_body
from ..consistency.changes import ConsistencyReport
from ..consistency.marrow import fill_canals, fill_enclosed
from ..consistency.step import make_consistent_on_grid
from ..model.modelfile import LoadedModel
from .budget import check_fits, estimate
from .device import autocast_dtype, describe, resolve_device, set_threads
from .edges import grow_into_edges
from .engine import build_network, choose_engine
from .options import InferenceOptions
from .preprocess import normalise, padding_value
from .review import ReviewItem, review_ranking
from .sliding_window import CancelCheck, ProgressCallback, predict_streaming
from .stitch import fine_grid, interleave, shifted_grid, stitch_shifts
from .to_input_grid import labels_to_input_grid

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "bonesegmentation-segmentation"


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
    options: InferenceOptions = field(default_factory=InferenceOptions)
    anatomy: ConsistencyReport = field(default_factory=ConsistencyReport)  # what the consistency step changed
    bone: Optional[sitk.Image] = None  # float32 probability of any bone, on the grid of labels_model_grid


class Segmenter:
    """A model and the options to run it with; ``segment(image)`` as often as needed."""

    def __init__(self, model: LoadedModel, options: Optional[InferenceOptions] = None):
        self.model = model
        self.options = options or InferenceOptions()
        set_threads(self.options.threads)
        self.device = resolve_device(self.options.device)
        self.mirrored = self.options.mirror_for(model.mirror_by_default)
        self.engine = choose_engine(self.options.engine, self.device,
                                    str(model.info.network.get("architecture", "NoNewNet")))
        if self.engine.notice:
            log.warning(self.engine.notice)
        if self.engine.name == "torch":
            model.module.to(self.device)
        self.network = build_network(model, self.engine, self.mirrored, self.options.threads)

    def segment(self, image: sitk.Image, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None) -> SegmentationResult:
        """Segment ``image``; progress(fraction, message) is called per step.

        ``options.stitch`` > 1 runs the model stitch^3 times on shifted grids and returns labels at
        model spacing / stitch (``stitch.py``); mirror averaging (``mirror.py``) doubles the time.
        """
        opts, meta = self.options, self.model.info
        shifts = stitch_shifts(opts.stitch)
        warnings = check_ct(image)
        inten = meta.intensity
        timings = {"preprocess_s": 0.0, "inference_s": 0.0}

        def report(fraction: float, message: str) -> None:
            if progress is not None:
                progress(fraction, message)

        budget = estimate(image, self.model.spacing, self.model.num_classes, self.model.patch_size,
                          int(meta.network.get("base_features", 30)), opts.stitch, self.mirrored,
                          ring_bytes=2 if opts.accumulate == "float16" else 4, antialias=meta.antialias)
        check_fits(budget)  # refuse with the figure before any large allocation
        if budget.passes > 8:
            log.warning("--stitch %d runs the network %d times over the scan: about %d times as long as one pass",
                        opts.stitch, budget.passes, budget.passes)
        t0 = time.perf_counter()
        report(0.0, "resampling to model spacing")
        oriented = sitk.DICOMOrient(image, meta.orientation)
        timings["preprocess_s"] += time.perf_counter() - t0
        fine = fine_grid(oriented, self.model.spacing, opts.stitch)
        labels = np.zeros(fine.GetSize()[::-1], np.uint8)
        confidence = np.zeros(labels.shape, np.float32)
        bone = np.zeros(labels.shape, np.float16)  # probability of any bone, for the boundary on the input grid
        for k, shift in enumerate(shifts):
            t1 = time.perf_counter()
            # what the network sees: smoothed while it is sampled when the model was trained so (its
            # metadata says); the body and the consistency step keep the CT as it is
            grid = shifted_grid(oriented, fine, opts.stitch, shift, smooth=meta.antialias)
            volume = normalise(grid, inten.clip_low, inten.clip_high, inten.mean, inten.std)
            t2 = time.perf_counter()
            timings["preprocess_s"] += t2 - t1
            prefix = f"pass {k + 1}/{len(shifts)}: " if len(shifts) > 1 else ""
            prediction = predict_streaming(
                self.network, volume, self.model.num_classes, self.model.patch_size, overlap=opts.overlap,
                device=self.device, pad_value=padding_value(asdict(inten)), autocast_dtype=autocast_dtype(self.device),
                accumulate_dtype=torch.float16 if opts.accumulate == "float16" else torch.float32,
                progress=lambda f, m: report(0.02 + 0.93 * (k + f) / len(shifts), prefix + m), cancel=cancel)
            interleave(labels, prediction.labels, opts.stitch, shift)
            interleave(confidence, prediction.confidence, opts.stitch, shift)
            interleave(bone, prediction.bone, opts.stitch, shift)
            del volume, grid, prediction
            timings["inference_s"] += time.perf_counter() - t2

        anatomy = ConsistencyReport(skipped="" if opts.anatomy else "switched off (--no-anatomy)")
        body = None
        if opts.anatomy:
            report(0.955, "anatomical consistency")
            t_body = time.perf_counter()
            body = body_image(oriented)  # found once, used on the model's grid and the input's
            labels, anatomy = make_consistent_on_grid(labels, fine, oriented, body=body)
            timings["anatomy_s"] = time.perf_counter() - t_body  # the body, then the step
        del oriented  # a copy of the CT when it was not stored in LPS: not kept through the steps on the input grid
        t3 = time.perf_counter()
        report(0.96, "resampling labels to the input grid")
        labels_grid = sitk.GetImageFromArray(labels)
        labels_grid.CopyInformation(fine)
        conf_img = sitk.GetImageFromArray(confidence)
        conf_img.CopyInformation(fine)
        bone_img = sitk.GetImageFromArray(bone.astype(np.float32))
        bone_img.CopyInformation(fine)
        del bone
        labels_input = labels_to_input_grid(labels_grid, image, bone=bone_img)
        if opts.edges:  # the outermost, half-bone layer the coarse grid leaves out
            labels_input, anatomy.edges_grown = grow_into_edges(labels_input, image, max(fine.GetSpacing()))
        if opts.anatomy:  # the long bones' fatty canals, opened again by the boundary on a finer grid
            labels_input, anatomy.canals_filled = fill_canals(labels_input, default_table())
            # cores walled by a bone and by cortex the network left unlabelled
            labels_input, anatomy.enclosed_filled = fill_enclosed(labels_input, image, bone_img, default_table())
        if body is not None:
            labels_input, anatomy.outside_body_on_input_grid = keep_inside_body(labels_input, body)
        timings["postprocess_s"] = time.perf_counter() - t3
        t4 = time.perf_counter()
        report(0.98, "ranking bones for review")
        review = review_ranking(labels_grid, conf_img, changes=anatomy.by_bone())
        timings["review_s"] = time.perf_counter() - t4
        timings["total_s"] = time.perf_counter() - t0
        report(1.0, "done")
        return SegmentationResult(labels_input, labels_grid, conf_img, review, warnings, timings, str(self.device),
                                  self.mirrored, opts, anatomy, bone_img)

    def segment_many(self, images: Iterable[sitk.Image], cancel: Optional[CancelCheck] = None
                     ) -> Iterator[SegmentationResult]:
        """One result per image, in order, with the network set up once."""
        for image in images:
            yield self.segment(image, cancel=cancel)

    def record(self, result: SegmentationResult, image: sitk.Image, input_name: str = "",
               outputs: Optional[dict[str, str]] = None) -> dict:
        """What made ``result``: the sidecar's content (see ``write_sidecar``)."""
        meta = self.model.info
        return {
            "format": SIDECAR_FORMAT, "format_version": 1,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "code_version": __version__,
            "model": {"name": meta.name, "version": meta.version, "sha256": self.model.sha256,
                      "file": str(self.model.path) if self.model.path else "",
                      "trained_on_synthetic_data_only": meta.trained_on_synthetic_data_only},
            "options": result.options.to_json(),
            "resolved": {"device": result.device, "device_description": describe(self.device),
                         "mirrored": result.mirrored, "torch": torch.__version__,
                         "engine": self.engine.name, "engine_description": self.engine.description},
            "input": {"name": input_name, "size": list(image.GetSize()),
                      "spacing_mm": list(image.GetSpacing()), "origin_mm": list(image.GetOrigin()),
                      "direction": list(image.GetDirection()), "coordinate_system": "LPS"},
            "outputs": outputs or {},
            "bones_found": len(present_labels(sitk.GetArrayViewFromImage(result.labels_model_grid))),
            "anatomy": result.anatomy.to_json(),
            "warnings": list(result.warnings),
            "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        }




def sidecar_path_for(output: Path) -> Path:
    """``bones.nii.gz`` -> ``bones.json`` beside it (as BIDS names its sidecars)."""
    return Path(output).with_name(strip_image_suffix(Path(output).name) + ".json")


def write_sidecar(path: Path, record: dict) -> Path:
    return atomic_write_text(Path(path), json.dumps(record, indent=1) + "\n")


def segment_image(image: sitk.Image, model: LoadedModel, options: Optional[InferenceOptions] = None,
                  progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None
                  ) -> SegmentationResult:
    """One image, once: ``Segmenter(model, options).segment(image)``."""
    return Segmenter(model, options).segment(image, progress=progress, cancel=cancel)


def found_classes(labels: sitk.Image) -> list[int]:
    """Label values present (background excluded), ascending."""
    return present_labels(sitk.GetArrayViewFromImage(labels))

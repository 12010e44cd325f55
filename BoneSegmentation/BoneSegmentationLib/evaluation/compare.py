"""Old model versus new on a dataset's held-out cases, side by side (the paper's table per model),
so a user sees whether a retrained model is better before switching to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import SimpleITK as sitk

from ..training.corrections import labelled_mask
from ..training.dataset import check_dataset, image_path, label_path, read_manifest
from ..core.errors import DatasetError
from ..core.imageio import read_image
from .metrics import evaluate_arrays, pool_results
from ..inference.options import InferenceOptions
from ..inference.segmenter import Segmenter
from ..model.modelfile import load_model
from ..model.registry import resolve_model


def held_out_cases(folder: Path, cases: Optional[list[str]] = None, split: Optional[str] = None) -> list[str]:
    """The cases to score: given IDs, else a run's ``split.json`` test cases, else all."""
    ids = check_dataset(folder)
    if cases:
        missing = sorted(set(cases) - set(ids))
        if missing:
            raise DatasetError(f"cases not in {folder}: {', '.join(missing)}")
        return list(cases)
    if split:
        test = json.loads(Path(split).read_text(encoding="utf-8")).get("test", [])
        if not test:
            raise DatasetError(f"{split} has no held-out test cases; pass --cases")
        return test
    return ids


def compare_models(folder: Path, models: list[str], cases: Optional[list[str]] = None, split: Optional[str] = None,
                   options: Optional[InferenceOptions] = None,
                   progress: Optional[Callable[[str], None]] = None) -> dict[str, dict]:
    """Pooled evaluation per model (keys: "name version" of each model, in the order given), every
    model run with the same ``options``."""
    folder = Path(folder)
    ids = held_out_cases(folder, cases, split)
    loaded = [load_model(resolve_model(m)) for m in models]
    segmenters = [Segmenter(m, options) for m in loaded]
    names = []
    for m in loaded:
        name = m.label
        names.append(name if name not in names else f"{name} ({len(names) + 1})")
    per_model: dict[str, list[dict]] = {n: [] for n in names}
    for case_id in ids:
        ct = read_image(image_path(folder, case_id))
        ref = sitk.GetArrayFromImage(read_image(label_path(folder, case_id)))
        mask = labelled_mask(read_manifest(folder, case_id))
        for name, segmenter in zip(names, segmenters):
            result = segmenter.segment(ct)
            per_model[name].append(evaluate_arrays(sitk.GetArrayViewFromImage(result.labels), ref, labelled=mask))
            if progress:
                progress(f"{case_id}: {name} done in {result.timings['total_s']:.1f} s")
    return {name: pool_results(results) for name, results in per_model.items()}

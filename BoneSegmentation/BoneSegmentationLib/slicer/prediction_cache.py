"""The model's own label map of each segmentation, kept by content digest, so that a later export
of the corrected segmentation can tell which bones the anatomist changed. About 1 MB per scan."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..core.imageio import write_image
from ..model.registry import cache_dir


def labels_digest(labels: sitk.Image) -> str:
    return hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(labels)).tobytes()).hexdigest()


def prediction_path(digest: str) -> Path:
    return cache_dir() / "predictions" / f"{digest}.nii.gz"


def store_prediction(labels: sitk.Image, digest: str) -> None:
    """Keep the model's label map (by content digest) so that a later export of the corrected
    segmentation can tell which bones the anatomist changed. About 1 MB per scan."""
    path = prediction_path(digest)
    if not path.exists():
        write_image(labels, path)


def load_prediction(digest: Optional[str]) -> Optional[sitk.Image]:
    path = prediction_path(digest) if digest else None
    return sitk.ReadImage(str(path)) if path is not None and path.is_file() else None

"""Decisions made before and during a training run (free of PyTorch, like the panel that uses them), shared by the CLI and the Slicer panel:
the architecture (inherited from a parent model when fine-tuning), the train/validation/test
split, the fine-tuning run's folder and name, and the time estimate measured from iterations."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np

from ..core.errors import BoneSegmentationError
from ..core.files import atomic_write_text
from ..model.metadata import read_model_metadata

@dataclass
class TrainConfig:
    out_dir: str
    spacing: float = 2.0
    patch: int = 96
    width: int = 30
    levels: int = 5
    iterations: int = 1000
    lr: float = 1e-3
    lr_schedule: str = "constant"  # the paper's; "poly" decays as nnU-Net: lr * (1 - it / iterations) ** 0.9
    sampling: str = "balanced"
    augment: bool = True
    seed: int = 0
    validate_every: int = 100
    checkpoint_every: int = 50
    init_model: Optional[str] = None
    device: str = "auto"
    name: str = "bones-model"
    version: str = "0.1"
    description: str = ""
    data_description: str = ""
    extra: dict = field(default_factory=dict)
    group_weights: dict = field(default_factory=dict)  # share of patches per Case.group (empty: balanced over all)
    hard_negative_share: float = 0.0  # share of patches centred on bright background (sampling.py)
    hard_negative_hu: float = 150.0  # what counts as bright: above soft tissue, below contrast, calcium, metal
    bone_fade_share: float = 0.0  # share of patches whose bone cores are faded (augment.fade_bone_cores)
    short_view_share: float = 0.0  # share of patches seen as a short scan (augment.short_view_slices)
    antialias: bool = False  # the cases were smoothed before sampling at model spacing (recorded in the model)
    train_only: tuple[str, ...] = ()  # parameter name prefixes that learn (e.g. "encoders.0"); empty: all
    parent_weight: float = 0.0  # weight of KL(parent || network) beside the loss (losses.parent_kl); needs init_model


ARCHITECTURE_KEYS = ("spacing", "patch", "width", "levels")


def parent_architecture(model_path: Path) -> dict:
    """Spacing, patch, width and levels of a model file, so that fine-tuning keeps them."""
    meta = read_model_metadata(Path(model_path))
    return {"spacing": meta.spacing_mm[0], "patch": meta.patch_size[0],
            "width": int(meta.network["base_features"]), "levels": int(meta.network["levels"])}


def kfold_splits(n: int, folds: int = 5, n_val: int = 1, n_test: int = 1) -> list[dict[str, list[int]]]:
    """Rotating splits as in the paper (5 scans: 3 train / 1 validation / 1 test per fold)."""
    out = []
    for f in range(folds):
        order = [(f + i) % n for i in range(n)]
        out.append({"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]})
    return out


RUN_RECORD = "finetune.json"
FINETUNED_SUFFIX = "-finetuned"


def resolve_architecture(requested: dict[str, Optional[float]], init: Optional[Path] = None) -> dict:
    """Spacing, patch, width and levels: the parent's when fine-tuning (a conflicting request is
    refused), else the request with ``TrainConfig``'s defaults for what is not given."""
    if init is not None:
        parent = parent_architecture(Path(init))
        changed = {k: v for k, v in requested.items() if v is not None and v != parent[k]}
        if changed:
            raise BoneSegmentationError(f"--init {init} fixes {parent}; drop {', '.join('--' + k for k in changed)}")
        return parent
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name in ARCHITECTURE_KEYS}
    return {k: defaults[k] if requested.get(k) is None else requested[k] for k in ARCHITECTURE_KEYS}


def split_cases(ids: list[str], fold: Optional[int] = None, folds: int = 5) -> dict[str, list[str]]:
    """Case IDs for training, validation and test: a k-fold split (the paper's rotation), or all
    but the first for training and the first for validation."""
    if fold is not None:
        if not 0 <= fold < folds:
            raise BoneSegmentationError(f"--fold must be 0..{folds - 1}")
        if len(ids) < 3:
            raise BoneSegmentationError(f"k-fold needs at least 3 cases (train, validation, test); {len(ids)} found")
        idx = kfold_splits(len(ids), folds)[fold]
        return {k: [ids[i] for i in v] for k, v in idx.items()}
    if len(ids) == 1:
        return {"train": ids, "val": [], "test": []}
    return {"train": ids[1:], "val": ids[:1], "test": []}


class IterationTimer:
    """Seconds per iteration measured from training records (validation and the first
    iteration's start-up left out), and the time left."""

    def __init__(self, total: int):
        self.total = total
        self._steps: list[tuple[int, float]] = []

    def add(self, record: dict) -> None:
        if "seconds" in record and "val_dice" not in record:
            self._steps.append((int(record["iteration"]), float(record["seconds"])))

    def seconds_per_iteration(self) -> Optional[float]:
        if len(self._steps) < 4:
            return None
        steps = self._steps[1:]
        diffs = [(s1 - s0) / max(i1 - i0, 1) for (i0, s0), (i1, s1) in zip(steps, steps[1:])]
        return float(np.median(diffs))

    def minutes_left(self) -> Optional[float]:
        per = self.seconds_per_iteration()
        if per is None:
            return None
        return per * max(self.total - self._steps[-1][0], 0) / 60


def unfinished_run(dataset: Path, parent: str) -> Optional[Path]:
    """The newest fine-tuning run of ``dataset`` from ``parent`` that was stopped before its end
    (a checkpoint, no exported model): Retrain resumes it instead of starting over."""
    runs = sorted((dataset / "runs").glob("finetune-*"), reverse=True) if (dataset / "runs").is_dir() else []
    for run in runs:
        record = run / RUN_RECORD
        if (run / "checkpoint.pt").is_file() and record.is_file() and \
                json.loads(record.read_text(encoding="utf-8")).get("parent") == parent and \
                not any(p.name.endswith(f"{FINETUNED_SUFFIX}.pt") for p in run.glob("*.pt")):
            return run
    return None


def finetune_run(dataset: Path, parent: str, run_dir: Optional[Path] = None) -> tuple[Path, str, str]:
    """(run folder, model name, version) of a fine-tuning run: an unfinished one is resumed; a
    new one gets a dated version and the parent's name with '-finetuned', so that the parent stays
    in the model selector beside its child."""
    run = Path(run_dir) if run_dir else (unfinished_run(Path(dataset), parent) or
                                         Path(dataset) / "runs" / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}")
    run.mkdir(parents=True, exist_ok=True)
    record = run / RUN_RECORD
    if not record.is_file():
        atomic_write_text(record, json.dumps({"parent": parent, "version": time.strftime("%Y%m%d-%H%M%S")}))
    stamp = json.loads(record.read_text(encoding="utf-8"))["version"]
    name = read_model_metadata(Path(parent)).name.removesuffix(FINETUNED_SUFFIX) + FINETUNED_SUFFIX
    return run, name, stamp

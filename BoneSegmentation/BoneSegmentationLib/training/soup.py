"""A "model soup" (Wortsman et al., ICML 2022): the element-wise mean of the weights of several
models fine-tuned from one parent. Runs that differ only in their seed end in one basin of the
loss, and their mean is often better than each of them at no cost at inference, unlike an
ensemble, which runs every network. Only models that agree on everything but their weights
(network, spacing, patch, intensity window, classes, preprocessing) can be averaged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ModelFileError
from ..model.modelfile import LoadedModel, load_model

# what must be equal for the mean of the weights to mean anything
AGREEING_KEYS = ("network", "spacing_mm", "orientation", "patch_size", "intensity", "classes", "preprocessing",
                 "inference")


@dataclass
class Soup:
    """The averaged network (the first ingredient's module, its weights replaced) and its metadata."""

    module: torch.jit.ScriptModule
    metadata: dict[str, Any]
    ingredients: list[str]  # "name version (sha256 …)" of each averaged model
    parents: set[str]  # the ingredients' parent models, as their metadata names them


def _identity(model: LoadedModel) -> str:
    return f"{model.label} (sha256 {model.sha256[:12]})"


def average_models(paths: list[Path], version: str) -> Soup:
    """Average the models in ``paths`` (at least two, each checked as any model file is) into a
    model ``version``; refuse, naming the file and the key, models that do not agree."""
    if len(paths) < 2:
        raise ModelFileError(f"a soup needs at least two models to average, {len(paths)} given")
    models = [load_model(Path(p)) for p in paths]
    first = models[0]
    for model in models[1:]:
        for key in AGREEING_KEYS:
            if model.metadata.get(key) != first.metadata.get(key):
                raise ModelFileError(f"{model.path} differs from {first.path} in its {key!r}: only models with the "
                                     "same network and preprocessing can be averaged")
    states = [m.module.state_dict() for m in models]
    mean = {}
    for key, value in states[0].items():
        if not torch.is_floating_point(value):
            if any(not torch.equal(s[key], value) for s in states[1:]):
                raise ModelFileError(f"the models disagree on the integer buffer {key!r}; they cannot be averaged")
            mean[key] = value
            continue
        mean[key] = torch.stack([s[key].to(torch.float64) for s in states]).mean(0).to(value.dtype)
    first.module.load_state_dict(mean)
    ingredients = [_identity(m) for m in models]
    parents = {m.metadata["training"].get("parent_model", "") for m in models}
    metadata = {**first.metadata, "version": version,
                "training": {**first.metadata["training"],
                             "soup": f"element-wise mean of the weights of {len(models)} models: "
                                     + "; ".join(ingredients)}}
    for key in ("best_validation_dice", "best_iteration"):  # an ingredient's, not the soup's
        metadata["training"].pop(key, None)
    return Soup(first.module, metadata, ingredients, parents)

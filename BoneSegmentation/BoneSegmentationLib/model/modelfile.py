"""The self-describing model file: TorchScript with ``metadata.json`` stored inside.

One ``.pt`` file holds the network and everything inference needs (classes, spacing,
orientation, intensity normalisation, patch size, provenance), so a model can never be run with
the wrong class table or preprocessing. Loading validates the schema and checks, with a tiny
forward pass, that the network emits exactly one channel per class.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ModelFileError
from ..core.files import atomic_write, sha256_file
from .safety import check_archive, check_graph
from .metadata import (FORMAT_NAME, FORMAT_VERSION, METADATA_FILE, REQUIRED_KEYS, _check_file,  # noqa: F401
                       ModelMetadata, class_entries, make_metadata, model_label, read_metadata,
                       read_model_metadata, validate_metadata)

@dataclass
class LoadedModel:
    """A validated model: the TorchScript module plus its metadata."""

    module: torch.jit.ScriptModule
    metadata: dict[str, Any]  # the raw JSON (written back unchanged); ``info`` is the typed view
    path: Path | None = None
    _sha256: str | None = None

    @cached_property
    def info(self) -> ModelMetadata:
        return ModelMetadata.from_dict(self.metadata)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.info.spacing_mm

    @property
    def mirror_by_default(self) -> bool:
        """Whether the model's author recommends left-right mirror averaging (optional key)."""
        return self.info.mirror

    @property
    def label(self) -> str:
        """'name version', as outputs and the panel name the model."""
        return self.info.label

    @property
    def sha256(self) -> str:
        """SHA-256 of the model file (empty for a model that never was a file)."""
        if self.path is None:
            return ""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return self.info.patch_size

    @property
    def size_divisor(self) -> int:
        return self.info.size_divisor


def save_model(module: torch.nn.Module, metadata: dict[str, Any], path: Path) -> Path:
    """Script (if needed), attach metadata and write atomically (temp file + rename)."""
    validate_metadata(metadata)
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but is our stable format
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
    return atomic_write(Path(path), write)


def load_model(path: Path, device: str | torch.device = "cpu", check_output: bool = True) -> LoadedModel:
    """Load and validate a model file; refuse anything inconsistent with a specific message."""
    path = _check_file(path)
    meta = read_metadata(path)
    check_archive(path)  # intact, and nothing that runs while loading
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as e:  # torch raises RuntimeError with long C++ traces for corrupt files
        first = _last_line(e)
        raise ModelFileError(f"{path} could not be loaded as TorchScript: {first}") from None
    check_graph(module, path)  # before any forward pass: only what a network needs
    module.eval()
    model = LoadedModel(module=module, metadata=meta, path=path)
    if check_output:
        _check_output_channels(model, device)
    return model


def _check_output_channels(model: LoadedModel, device: str | torch.device) -> None:
    side = 2 * model.size_divisor  # instance norm needs more than one voxel at the bottom
    probe = torch.zeros((1, 1, side, side, side), device=device)
    try:
        with torch.inference_mode():
            out = model.module(probe)
    except Exception as e:
        first = _last_line(e)
        raise ModelFileError(f"{model.path}: the network fails on a {side}^3 test input: {first}") from None
    if out.ndim != 5 or out.shape[1] != model.num_classes:
        raise ModelFileError(
            f"{model.path}: network outputs {out.shape[1] if out.ndim == 5 else tuple(out.shape)} channels "
            f"but its metadata lists {model.num_classes} classes; the file is inconsistent")


def _last_line(e: Exception) -> str:
    """TorchScript errors end with the useful line after a long C++/TorchScript trace."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1][:200] if lines else type(e).__name__

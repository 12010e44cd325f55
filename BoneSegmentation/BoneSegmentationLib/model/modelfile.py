"""The self-describing model file: TorchScript with ``metadata.json`` stored inside.

One ``.pt`` file holds the network and everything inference needs (classes, spacing,
orientation, intensity normalisation, patch size, provenance), so a model can never be run with
the wrong class table or preprocessing. Loading validates the schema and checks, with a tiny
forward pass, that the network emits exactly one channel per class.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.bones import BoneTable, default_table
from ..core.errors import ModelFileError

FORMAT_NAME = "bonesegmentation-model"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"

REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": str, "format_version": int, "name": str, "version": str, "description": str,
    "modality": str, "spacing_mm": list, "orientation": str, "patch_size": list,
    "intensity": dict, "classes": list, "network": dict, "training": dict,
}


def class_entries(table: BoneTable) -> list[dict[str, Any]]:
    """Class list for the metadata, derived from the bone table (the source of truth)."""
    return [{"index": b.index, "name": b.name, "display_name": b.display_name,
             "sct_code": b.sct_code, "color": list(b.rgb)} for b in table]


def make_metadata(*, name: str, version: str, description: str, network: dict[str, Any],
                  training: dict[str, Any], table: BoneTable | None = None,
                  spacing_mm: float = 2.0, patch_size: int = 96,
                  intensity: dict[str, float] | None = None, mirror: bool = False) -> dict[str, Any]:
    """Metadata with the project's defaults (2 mm, LPS, CT window -1024..2048 HU). ``mirror``
    says whether inference should average over left-right mirroring by default (``mirror.py``)."""
    table = table or default_table()
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": name, "version": version,
        "description": description, "modality": "CT", "spacing_mm": [spacing_mm] * 3,
        "orientation": "LPS", "patch_size": [patch_size] * 3,
        "intensity": intensity or {"clip_low": -1024.0, "clip_high": 2048.0, "mean": 0.0, "std": 1000.0},
        "classes": class_entries(table), "network": network, "training": training,
        "inference": {"mirror": mirror},
    }


@dataclass
class LoadedModel:
    """A validated model: the TorchScript module plus its metadata."""

    module: torch.jit.ScriptModule
    metadata: dict[str, Any]
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.metadata["classes"])

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.metadata["classes"]]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.metadata["spacing_mm"])  # type: ignore[return-value]

    @property
    def mirror_by_default(self) -> bool:
        """Whether the model's author recommends left-right mirror averaging (optional key)."""
        return bool(self.metadata.get("inference", {}).get("mirror", False))

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.metadata["patch_size"])  # type: ignore[return-value]

    @property
    def size_divisor(self) -> int:
        return int(self.metadata["network"].get("size_divisor", 16))


def validate_metadata(meta: Any) -> None:
    """Raise ``ModelFileError`` naming the first problem found in the metadata."""
    if not isinstance(meta, dict):
        raise ModelFileError("model metadata.json is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"not a BoneSegmentation model: metadata format is {meta.get('format')!r}, "
                             f"expected {FORMAT_NAME!r}")
    for key, kind in REQUIRED_KEYS.items():
        if key not in meta:
            raise ModelFileError(f"model metadata lacks the required key '{key}'")
        if not isinstance(meta[key], kind):
            raise ModelFileError(f"model metadata key '{key}' has the wrong type "
                                 f"({type(meta[key]).__name__})")
    if meta["format_version"] > FORMAT_VERSION:
        raise ModelFileError(f"model format version {meta['format_version']} is newer than this "
                             f"software supports ({FORMAT_VERSION}); update BoneSegmentation")
    if meta["modality"] != "CT":
        raise ModelFileError(f"model is for modality {meta['modality']!r}; only CT models are supported")
    for key in ("spacing_mm", "patch_size"):
        values = meta[key]
        if len(values) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in values):
            raise ModelFileError(f"model metadata '{key}' must be three positive numbers, got {values}")
    for key in ("clip_low", "clip_high", "mean", "std"):
        if not isinstance(meta["intensity"].get(key), (int, float)):
            raise ModelFileError(f"model metadata 'intensity' lacks the number '{key}'")
    if meta["intensity"]["std"] <= 0 or meta["intensity"]["clip_high"] <= meta["intensity"]["clip_low"]:
        raise ModelFileError("model metadata 'intensity' has std <= 0 or an empty clip window")
    inference = meta.get("inference", {})
    if not isinstance(inference, dict) or not isinstance(inference.get("mirror", False), bool):
        raise ModelFileError("model metadata 'inference' must be an object whose 'mirror' is true or false")
    classes = meta["classes"]
    if len(classes) < 2:
        raise ModelFileError("model metadata lists fewer than 2 classes")
    for i, c in enumerate(classes):
        if not isinstance(c, dict) or c.get("index") != i or not isinstance(c.get("name"), str):
            raise ModelFileError(f"model class entry {i} must be an object with index {i} and a name")
    if classes[0]["name"] != "background":
        raise ModelFileError("model class 0 must be 'background'")
    if len({c["name"] for c in classes}) != len(classes):
        raise ModelFileError("model metadata lists a class name twice")


def save_model(module: torch.nn.Module, metadata: dict[str, Any], path: Path) -> Path:
    """Script (if needed), attach metadata and write atomically (temp file + rename)."""
    validate_metadata(metadata)
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():  # TorchScript is deprecated upstream but is our stable format
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
    os.replace(tmp, path)
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """Metadata only, without loading the weights (fast: reads one member of the zip)."""
    path = _check_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("/extra/" + METADATA_FILE)), None)
            if member is None:
                raise ModelFileError(f"{path} has no embedded {METADATA_FILE}: not a BoneSegmentation model")
            meta = json.loads(zf.read(member))
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path} is not a TorchScript model file (corrupt or truncated)") from None
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: embedded {METADATA_FILE} is not valid JSON ({e})") from None
    validate_metadata(meta)
    return meta


def load_model(path: Path, device: str | torch.device = "cpu", check_output: bool = True) -> LoadedModel:
    """Load and validate a model file; refuse anything inconsistent with a specific message."""
    path = _check_file(path)
    meta = read_metadata(path)
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as e:  # torch raises RuntimeError with long C++ traces for corrupt files
        first = _last_line(e)
        raise ModelFileError(f"{path} could not be loaded as TorchScript: {first}") from None
    module.eval()
    model = LoadedModel(module=module, metadata=meta, path=path)
    if check_output:
        _check_output_channels(model, device)
    return model


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    return path


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

"""The model file's metadata (``metadata.json`` inside the TorchScript zip): its schema, how to
make it and read it without loading the network. Free of PyTorch, so that the Slicer panel can
describe models before PyTorch is installed."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.bones import BoneTable, default_table
from ..core.errors import ModelFileError

FORMAT_NAME = "bonesegmentation-model"
FORMAT_VERSION = 2  # the newest this software reads; 2 added preprocessing.antialias
METADATA_FILE = "metadata.json"
_AXIS_OF = {"L": "x", "R": "x", "P": "y", "A": "y", "S": "z", "I": "z"}

REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": str, "format_version": int, "name": str, "version": str, "description": str,
    "modality": str, "spacing_mm": list, "orientation": str, "patch_size": list,
    "intensity": dict, "classes": list, "network": dict, "training": dict,
}


def class_entries(table: BoneTable) -> list[dict[str, Any]]:
    """Class list for the metadata, derived from the bone table (the source of truth)."""
    return [{"index": b.index, "name": b.name, "display_name": b.display_name,
             "sct_code": b.sct_code, "color": list(b.rgb)} for b in table]

# The CT window and scaling every model of this project is trained with (training and metadata)
DEFAULT_INTENSITY = {"clip_low": -1024.0, "clip_high": 2048.0, "mean": 0.0, "std": 1000.0}


def make_metadata(*, name: str, version: str, description: str, network: dict[str, Any],
                  training: dict[str, Any], table: BoneTable | None = None,
                  spacing_mm: float = 2.0, patch_size: int = 96,
                  intensity: dict[str, float] | None = None, mirror: bool = False,
                  antialias: bool = False) -> dict[str, Any]:
    """Metadata with the project's defaults (2 mm, LPS, CT window -1024..2048 HU). ``mirror``
    says whether inference should average over left-right mirroring by default (``mirror.py``);
    ``antialias`` that the CT must be smoothed before sampling at model spacing, as in training
    (``inference/preprocess.antialias``). Such a model is format version 2, so that software that
    cannot smooth refuses it instead of feeding it unsmoothed scans; the others stay version 1."""
    table = table or default_table()
    return {
        "format": FORMAT_NAME, "format_version": 2 if antialias else 1, "name": name, "version": version,
        "description": description, "modality": "CT", "spacing_mm": [spacing_mm] * 3,
        "orientation": "LPS", "patch_size": [patch_size] * 3,
        "intensity": dict(intensity or DEFAULT_INTENSITY),
        "classes": class_entries(table), "network": network, "training": training,
        "inference": {"mirror": mirror},
        "preprocessing": {"antialias": antialias},
    }


def model_label(meta: dict[str, Any]) -> str:
    """How a model is named to people: 'name version'."""
    return f"{meta['name']} {meta['version']}"


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
        if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and
                                       math.isfinite(v) and v > 0 for v in values):
            raise ModelFileError(f"model metadata '{key}' must be three positive numbers, got {values}")
    if not all(0.1 < s <= 20 for s in meta["spacing_mm"]):
        raise ModelFileError(f"model metadata 'spacing_mm' {meta['spacing_mm']} is outside 0.1-20 mm")
    if not all(isinstance(p, int) and 8 <= p <= 512 for p in meta["patch_size"]):
        raise ModelFileError(f"model metadata 'patch_size' {meta['patch_size']} must be whole numbers of 8-512 voxels")
    orientation = meta["orientation"]
    if len(orientation) != 3 or sorted(_AXIS_OF.get(c, "?") for c in orientation) != ["x", "y", "z"]:
        raise ModelFileError(f"model metadata 'orientation' {orientation!r} is not a DICOM orientation code "
                             "such as LPS or RAS")
    divisor = meta["network"].get("size_divisor", 16)
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1 or divisor > 256 or \
            divisor & (divisor - 1):
        raise ModelFileError(f"model metadata 'network.size_divisor' {divisor!r} must be a power of two up to 256")
    for key in ("clip_low", "clip_high", "mean", "std"):
        value = meta["intensity"].get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ModelFileError(f"model metadata 'intensity' lacks the number '{key}' (or it is not finite)")
    if meta["intensity"]["std"] <= 0 or meta["intensity"]["clip_high"] <= meta["intensity"]["clip_low"]:
        raise ModelFileError("model metadata 'intensity' has std <= 0 or an empty clip window")
    inference = meta.get("inference", {})
    if not isinstance(inference, dict) or not isinstance(inference.get("mirror", False), bool):
        raise ModelFileError("model metadata 'inference' must be an object whose 'mirror' is true or false")
    preprocessing = meta.get("preprocessing", {})
    if not isinstance(preprocessing, dict) or not isinstance(preprocessing.get("antialias", False), bool):
        raise ModelFileError("model metadata 'preprocessing' must be an object whose 'antialias' is true or false")
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

# Printed by ``segment``/``demo`` and shown in the panel for models that never saw a real CT image
SYNTHETIC_NOTICE = ("note: this model was trained on synthetic images only (no real CT); treat its labels as a "
                    "prior to check and correct")


@dataclass(frozen=True)
class Intensity:
    """How CT numbers become network input: clip to [clip_low, clip_high], then (x - mean) / std."""

    clip_low: float
    clip_high: float
    mean: float
    std: float


@dataclass(frozen=True)
class ModelClass:
    index: int
    name: str
    display_name: str
    sct_code: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ModelMetadata:
    """The validated metadata as a typed object; ``raw`` is the JSON it came from (written back
    unchanged into models and sidecars, so unknown future keys survive)."""

    name: str
    version: str
    description: str
    modality: str
    spacing_mm: tuple[float, float, float]
    orientation: str
    patch_size: tuple[int, int, int]
    intensity: Intensity
    classes: tuple[ModelClass, ...]
    network: dict[str, Any]
    training: dict[str, Any]
    mirror: bool  # left-right mirror averaging recommended by default
    antialias: bool = False  # smooth the CT before sampling it at model spacing, as training did (a must, not an option)
    format_version: int = FORMAT_VERSION
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, meta: Any) -> "ModelMetadata":
        validate_metadata(meta)
        inten = meta["intensity"]
        return cls(
            name=meta["name"], version=meta["version"], description=meta["description"],
            modality=meta["modality"], spacing_mm=tuple(float(s) for s in meta["spacing_mm"]),
            orientation=meta["orientation"], patch_size=tuple(int(p) for p in meta["patch_size"]),
            intensity=Intensity(*(float(inten[k]) for k in ("clip_low", "clip_high", "mean", "std"))),
            classes=tuple(ModelClass(int(c["index"]), c["name"], c.get("display_name", c["name"]),
                                     c.get("sct_code", ""), tuple(c.get("color", (128, 128, 128))))
                          for c in meta["classes"]),
            network=dict(meta["network"]), training=dict(meta["training"]),
            mirror=bool(meta.get("inference", {}).get("mirror", False)),
            antialias=bool(meta.get("preprocessing", {}).get("antialias", False)),
            format_version=int(meta["format_version"]), raw=meta)

    @property
    def label(self) -> str:
        return model_label(self.raw)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def size_divisor(self) -> int:
        return int(self.network.get("size_divisor", 16))

    @property
    def trained_on_synthetic_data_only(self) -> bool:
        """Set by the training recipes for models that never saw a real CT image."""
        return bool(self.training.get("trained_on_synthetic_data_only")
                    or self.training.get("trained_on_synthetic_phantoms"))


def read_model_metadata(path: Path) -> ModelMetadata:
    """``read_metadata`` as a typed object."""
    return ModelMetadata.from_dict(read_metadata(path))


def read_metadata(path: Path) -> dict[str, Any]:
    """Metadata only, without loading the weights (fast: reads one member of the zip)."""
    path = _check_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("/extra/" + METADATA_FILE)), None)
            if member is None:
                raise ModelFileError(f"{path} has no embedded {METADATA_FILE}: not a BoneSegmentation model")
            meta = json.loads(zf.read(member), parse_constant=_no_constants)
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path} is not a TorchScript model file (corrupt or truncated)") from None
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: embedded {METADATA_FILE} is not valid JSON ({e})") from None
    validate_metadata(meta)
    return meta


def _no_constants(name: str) -> float:
    raise ModelFileError(f"model metadata holds {name}, which is not a number a model can use")


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    return path

"""What the panel tells the user about this machine and the models: missing dependencies, the
device inference and training will use, the model selector's entries and descriptions."""

from __future__ import annotations

import importlib.util
import os
from typing import Optional

from ..core.errors import BoneSegmentationError
from ..model.metadata import SYNTHETIC_NOTICE, read_model_metadata
from ..model.registry import DEFAULT_MODEL, load_registry, local_copy, registered_entry, resolve_model

#: import name -> what the panel asks pip for. The one place these pins are written for Slicer;
#: pyproject.toml's dependencies and ``fast-cpu`` extra must say the same (Testing/test_layout.py).
REQUIREMENTS = {"torch": "torch>=2.6", "SimpleITK": "SimpleITK>=2.3", "scipy": "scipy>=1.10"}
OPENVINO_REQUIREMENT = "openvino>=2024.6"  # the optional OpenVINO engine


def missing_dependencies() -> list[str]:
    """pip requirements of what the library needs and cannot import (torch first: it is the big one)."""
    return [pip for module, pip in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


def openvino_missing() -> bool:
    """True when the OpenVINO engine (the optional ``fast-cpu`` extra) cannot be imported."""
    return importlib.util.find_spec("openvino") is None


def model_choices() -> list[tuple[str, str]]:
    """(label, value) for the model selector: registered models (bundled, cached or remote)."""
    out = []
    for e in load_registry():
        where = "available" if local_copy(e) else "download on first use"
        default = " (default)" if e.name == DEFAULT_MODEL else ""
        out.append((f"{e.name} {e.version}{default} - {where}", e.name))
    return out

def model_description(model: Optional[str]) -> str:
    try:
        path = resolve_model(model or None, allow_download=False)
        meta = read_model_metadata(path)
    except BoneSegmentationError as e:
        return str(e)
    unverified = "" if registered_entry(path) else "Unverified model file: it is not in the model registry.\n"
    t = meta.training
    text = SYNTHETIC_NOTICE.removeprefix("note: ")
    notice = f"{text[0].upper()}{text[1:]}.\n" if meta.trained_on_synthetic_data_only else ""
    return unverified + notice + (f"{meta.num_classes - 1} bones, {meta.spacing_mm[0]:g} mm, patch {meta.patch_size[0]}. "
            f"{meta.description} Trained on: {t.get('data', '?')}; {t.get('iterations', '?')} iterations"
            f"{'; parent ' + t['parent_model'] if t.get('parent_model') else ''}.")

def device_description() -> str:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed yet (it will be offered on first use)."
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"CUDA: {p.name}, {p.total_memory / 2**30:.0f} GiB"
    return f"No CUDA GPU: the CPU will be used ({os.cpu_count()} cores)."

def training_device_note() -> str:
    """Empty when a GPU is there, else an honest warning for the confirmation dialog."""
    try:
        import torch
        if torch.cuda.is_available():
            return ""
    except ImportError:
        pass
    return ("No CUDA GPU: training runs on the CPU, typically 1-10 s per iteration; the first "
            "iterations give a measured estimate in the status line.")

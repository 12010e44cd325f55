"""Model registry (``Resources/models.json``): where each model comes from and how it is verified.

A model is named in the registry with its URL, SHA-256 and size. ``resolve_model`` turns what a
user typed (a registry name or a ``.pt`` path) into a local, verified file: a bundled file in
``Resources/`` first, then the user cache, then a download (resumed from a ``.part`` file if an
earlier one was interrupted; a file whose checksum does not match is refused and deleted).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..core.download import DEFAULT_DEADLINE_S, download_verified
from ..core.files import atomic_write, atomic_write_text, safe_name, sha256_file
from ..core.errors import ModelFileError
from .metadata import read_model_metadata
from ..core.resources import resource_path

DEFAULT_MODEL = "bones-phantom-demo"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    url: str
    sha256: str
    size: int
    description: str = ""
    bundled: str = ""  # file name inside Resources/ when shipped with the extension

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.pt"


def registry_path() -> Path:
    return resource_path("models.json")


def user_registry_path() -> Path:
    """Models trained or fine-tuned by this user, registered next to the cached downloads."""
    return cache_dir() / "models.json"


def load_registry(path: Optional[Path] = None) -> list[ModelEntry]:
    """The extension's registry plus the user's own models (unless an explicit ``path`` is given)."""
    paths = [Path(path)] if path else [registry_path(), user_registry_path()]
    entries = []
    for p in paths:
        if p.is_file():
            entries += [_entry(m, p) for m in _registry_models(p)]
    return entries


def _registry_models(path: Path) -> list:
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ModelFileError(f"model registry {path} is unreadable ({type(e).__name__}: {e}); fix or delete "
                             "it") from None
    if not isinstance(models, list):
        raise ModelFileError(f"model registry {path}: 'models' must be a list; fix or delete it")
    return models


def _entry(m: object, path: Path) -> ModelEntry:
    """One registry entry, checked: its name and version become a file name in the cache."""
    try:
        entry = ModelEntry(**m)  # type: ignore[arg-type]
    except TypeError as e:
        raise ModelFileError(f"model registry {path} has an invalid entry ({e}); fix or delete it") from None
    safe_name(entry.name, f"model name in {path}", ModelFileError)
    safe_name(entry.version, f"model version in {path}", ModelFileError)
    return entry


def register_model(model_file: Path, description: str = "") -> ModelEntry:
    """Copy a model file into the cache and list it in the user registry (older versions stay)."""
    meta = read_model_metadata(Path(model_file))
    safe_name(meta.name, "model name", ModelFileError)
    safe_name(meta.version, "model version", ModelFileError)
    entry = ModelEntry(meta.name, meta.version, url="", sha256=sha256_of(Path(model_file)),
                       size=Path(model_file).stat().st_size, description=description or meta.description)
    target = cached_path(entry)
    atomic_write(target, lambda tmp: shutil.copyfile(model_file, tmp))
    path = user_registry_path()
    models = json.loads(path.read_text(encoding="utf-8"))["models"] if path.is_file() else []
    models = [m for m in models if (m["name"], m["version"]) != (entry.name, entry.version)]
    models.append(entry.__dict__.copy())
    atomic_write_text(path, json.dumps({"models": models}, indent=2) + "\n")
    return entry


RELEASES = "https://github.com/bonesegmentation/SlicerBoneSegmentation/releases/download"


def install_bundled(model_file: Path, name: str, version: str, description: str) -> ModelEntry:
    """Ship ``model_file`` as the extension's bundled model ``name``: copy it into Resources/ and
    list it (release URL, SHA-256, size) in Resources/models.json, replacing that name's entry.
    Used by the training recipes in tools/ when a new model is better than the bundled one."""
    target = resource_path(f"{name}.pt")
    atomic_write(target, lambda tmp: shutil.copyfile(model_file, tmp))
    entry = ModelEntry(name, version, url=f"{RELEASES}/v{version}/{name}-{version}.pt",
                       sha256=sha256_file(target), size=target.stat().st_size, description=description,
                       bundled=target.name)
    path = registry_path()
    models = [m for m in json.loads(path.read_text(encoding="utf-8"))["models"] if m["name"] != name]
    atomic_write_text(path, json.dumps({"models": models + [entry.__dict__.copy()]}, indent=2) + "\n")
    return entry


def is_model_path(spec: str) -> bool:
    """Whether ``spec`` names a file rather than a registered model."""
    return spec.endswith(".pt") or "/" in spec or os.sep in spec or spec.startswith("~")


def registered_entry(path: Path) -> Optional[ModelEntry]:
    """The registry entry whose SHA-256 the file has, or None: such a file is "unverified"."""
    digest = sha256_of(Path(path))
    return next((e for e in reversed(load_registry()) if e.sha256 == digest), None)


UNVERIFIED_NOTICE = ("note: {path} is not in the model registry (unverified): its origin and contents are not "
                     "checked against a published checksum")


def find_entry(name: str, entries: Optional[list[ModelEntry]] = None) -> ModelEntry:
    entries = load_registry() if entries is None else entries
    for e in reversed(entries):  # the newest registration of a name wins
        if e.name == name or f"{e.name}-{e.version}" == name:
            return e
    known = ", ".join(e.name for e in entries) or "none"
    raise ModelFileError(f"'{name}' is neither a model file nor a registered model (registered: {known})")


def cache_dir() -> Path:
    """Per-user cache: $BONESEGMENTATION_CACHE, else the platform's cache folder."""
    if os.environ.get("BONESEGMENTATION_CACHE"):
        return Path(os.environ["BONESEGMENTATION_CACHE"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "bonesegmentation" / "models"


sha256_of = sha256_file  # one implementation: core/files.py


def bundled_path(entry: ModelEntry) -> Optional[Path]:
    if not entry.bundled:
        return None
    path = resource_path(entry.bundled)
    return path if path.is_file() else None


def cached_path(entry: ModelEntry, cache: Optional[Path] = None) -> Path:
    return (cache or cache_dir()) / entry.file_name


def local_copy(entry: ModelEntry, cache: Optional[Path] = None) -> Optional[Path]:
    """A verified local file of the entry (bundled or cached), or None."""
    for path in (bundled_path(entry), cached_path(entry, cache)):
        if path is not None and path.is_file() and path.stat().st_size == entry.size \
                and sha256_of(path) == entry.sha256:
            return path
    return None


def download(entry: ModelEntry, cache: Optional[Path] = None,
             progress: Optional[Callable[[int, int], None]] = None, retries: int = 3,
             timeout: float = 30.0, deadline_s: float = DEFAULT_DEADLINE_S) -> Path:
    """Download a registered model into the cache (``core/download.py``: resumed, size and SHA-256
    verified, one process at a time)."""
    return download_verified(entry.url, cached_path(entry, cache), entry.size, entry.sha256, entry.name,
                             progress, retries, timeout, deadline_s, what="the registry")


def resolve_model(spec: Optional[str] = None, cache: Optional[Path] = None,
                  progress: Optional[Callable[[int, int], None]] = None,
                  allow_download: bool = True) -> Path:
    """A local model file for ``spec``: a registry name (default: the bundled model, verified by its
    SHA-256), or a file given as a path (with a '/' or ending in '.pt'). A bare name is never
    looked up in the current folder, so a stray file cannot stand in for a registered model."""
    spec = spec or DEFAULT_MODEL
    if is_model_path(spec):
        candidate = Path(spec).expanduser()
        if not candidate.is_file():
            raise ModelFileError(f"model file not found: {candidate}")
        return candidate
    try:
        entry = find_entry(spec)
    except ModelFileError as e:
        if Path(spec).is_file():
            raise ModelFileError(f"{e}; to use the file of that name, give it as ./{spec}") from None
        raise
    path = local_copy(entry, cache)
    if path is not None:
        return path
    if not allow_download:
        raise ModelFileError(f"model {entry.name} is not available locally and downloads are disabled")
    return download(entry, cache, progress)

"""Shared fixtures: real TorchScript model files with random weights, paths to the real scans."""

from __future__ import annotations

from pathlib import Path

import pytest
from BoneSegmentationLib.model.random_weights import save_random_model

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "real"  # the real test scans
ANATOMY_SOURCE = REPO.parent / "shared" / "data" / "anatomy" / "s0011_labels.nii.gz"  # the synthesiser's body


def make_random_model(path: Path, *, base_features: int = 4, levels: int = 3, patch: int = 64,
                      num_classes: int = 126, seed: int = 0, spacing: float = 2.0, antialias: bool = False) -> Path:
    """A real No-New-Net with random weights, scripted and saved as a self-describing file."""
    return save_random_model(path, base_features=base_features, levels=levels, patch=patch, num_classes=num_classes,
                             seed=seed, spacing=spacing, name="random-test", purpose="tests", antialias=antialias)


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("models") / "random.pt")


@pytest.fixture(scope="session")
def random_model_file_4mm(tmp_path_factory) -> Path:
    """The same on the bundled model's 4 mm grid: for tests of what a command writes on a real
    scan, where at 2 mm the anatomical step alone spent a minute on random labels (300 000 pieces)."""
    return make_random_model(tmp_path_factory.mktemp("models4") / "random4.pt", spacing=4.0)


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def openvino_cache(tmp_path_factory) -> Path:
    """One OpenVINO cache for the session (keyed by model SHA-256: a model is converted once)."""
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch, openvino_cache) -> Path:
    """Every test gets its own model/prediction cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("BONESEGMENTATION_CACHE", str(cache))
    monkeypatch.setenv("BONESEGMENTATION_OPENVINO_CACHE", str(openvino_cache))
    return cache

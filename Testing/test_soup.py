"""Model soups (training/soup.py, tools/average_models.py): the weights are the exact mean, the
file is a real model that loads and names its ingredients, and models that do not agree are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from BoneSegmentationLib.core.errors import ModelFileError
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.training.soup import average_models

from conftest import make_random_model

TOOL = Path(__file__).resolve().parents[1] / "tools" / "average_models.py"


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300)


def test_a_soup_holds_the_mean_of_its_ingredients_weights_and_names_them(tmp_path):
    paths = [make_random_model(tmp_path / f"m{seed}.pt", seed=seed) for seed in (0, 1, 2)]
    out = tmp_path / "soup.pt"
    proc = _tool(*map(str, paths), "--version", "9.1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    soup = load_model(out)  # a model file like any other: checked archive, graph and output channels
    states = [load_model(p).module.state_dict() for p in paths]
    for key, value in soup.module.state_dict().items():
        expected = (states[0][key] + states[1][key] + states[2][key]) / 3
        assert torch.allclose(value, expected, atol=1e-6), key
    assert soup.metadata["version"] == "9.1"
    named = soup.metadata["training"]["soup"]
    assert all(load_model(p).sha256[:12] in named for p in paths) and "3 models" in named


def test_a_soup_of_one_model_with_itself_is_that_model(tmp_path):
    path = make_random_model(tmp_path / "m.pt", seed=5)
    soup = average_models([path, path], "5.0")
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(soup.module(x), load_model(path).module(x), atol=1e-5)


@pytest.mark.parametrize("other, key", [({"base_features": 6}, "network"), ({"antialias": True}, "preprocessing"),
                                        ({"spacing": 4.0}, "spacing_mm")])
def test_models_that_differ_in_more_than_their_weights_are_refused(tmp_path, other, key):
    a = make_random_model(tmp_path / "a.pt", seed=0)
    b = make_random_model(tmp_path / "b.pt", seed=1, **other)
    with pytest.raises(ModelFileError, match=f"differs from .* in its '{key}'"):
        average_models([a, b], "1.0")


def test_the_tool_refuses_one_model_and_never_overwrites_a_file(tmp_path):
    a = make_random_model(tmp_path / "a.pt", seed=0)
    proc = _tool(str(a), "--version", "1", "--out", str(tmp_path / "soup.pt"))
    assert proc.returncode == 1 and "at least two models" in proc.stderr
    assert not (tmp_path / "soup.pt").exists()
    existing = tmp_path / "keep.pt"
    existing.write_bytes(b"user data")
    proc = _tool(str(a), str(a), "--version", "1", "--out", str(existing))
    assert proc.returncode == 2 and "exists" in proc.stderr
    assert existing.read_bytes() == b"user data"

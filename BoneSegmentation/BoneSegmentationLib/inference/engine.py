"""The engine that runs the network on one window: PyTorch (the model file itself, and the CUDA
path) or OpenVINO on CPUs, which runs the same weights several times faster there.

Only the call ``net(window)`` differs between engines, so streaming aggregation and shift-and-stitch
work unchanged; mirror averaging is the same sum, computed inside the OpenVINO graph
(``mirror.FusedMirrorNetwork``) rather than around it. The OpenVINO model is built from the model file on first use
(the network class rebuilt from the metadata and given the file's weights: converting the
TorchScript module itself fails on ``F.interpolate`` with a scale factor), for the one window shape
the sliding window uses (a static shape: measured 0.49 s against 0.67 s for a dynamic batch on a
2-core AVX2 CPU), and kept in the user
cache under the model's SHA-256 and OpenVINO's version, with a manifest of its files' SHA-256, so
that a stale or corrupt entry is rebuilt rather than trusted. fp32 is pinned (OpenVINO would
otherwise pick bf16 on CPUs that have it); bf16 is not offered until its agreement is measured on
a CPU that supports it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..core.errors import BoneSegmentationError
from ..core.files import sha256_file
from ..model.modelfile import LoadedModel
from ..model.network import NoNewNet
from ..model.registry import cache_dir
from .mirror import FusedMirrorNetwork, MirrorAveraged

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "bonesegmentation[fast-cpu]"'
PRECISION = "f32"
CACHE_FILES = ("model.xml", "model.bin")
GRAPH_VERSION = 2  # how the graph is built from a model file; raise it when that changes (old entries are then ignored)
OPENVINO_ARCHITECTURES = ("NoNewNet",)  # networks the engine can rebuild from a model file's metadata


def openvino_version() -> Optional[str]:
    """OpenVINO's version when it can be imported, else None."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__


@dataclass(frozen=True)
class EngineChoice:
    name: str  # torch | openvino
    description: str  # for the sidecar and the panel: "OpenVINO 2026.4.1 (fp32, CPU)"
    notice: str = ""  # one line for the user when the choice was not the one asked for


def choose_engine(requested: str, device: torch.device, architecture: str = "NoNewNet") -> EngineChoice:
    """``auto``: OpenVINO on the CPU when installed, else PyTorch (with one notice); ``openvino``
    on a GPU, without OpenVINO or for a network it cannot rebuild is refused in one line."""
    version = openvino_version()
    if requested == "torch" or (requested == "auto" and device.type != "cpu"):
        return EngineChoice("torch", f"PyTorch {torch.__version__}")
    if architecture not in OPENVINO_ARCHITECTURES:
        if requested == "openvino":
            raise BoneSegmentationError(f"the OpenVINO engine knows No-New-Net, not {architecture!r}: use --engine torch")
        return EngineChoice("torch", f"PyTorch {torch.__version__}")
    if device.type != "cpu":
        raise BoneSegmentationError(f"--engine openvino runs on the CPU; with --device {device} use --engine torch "
                                    "or auto")
    if version is None:
        if requested == "openvino":
            raise BoneSegmentationError(f"--engine openvino needs OpenVINO, which is not installed: {INSTALL_HINT}")
        return EngineChoice("torch", f"PyTorch {torch.__version__}",
                            f"OpenVINO is not installed: running on PyTorch ({INSTALL_HINT} is about 3x faster on a CPU)")
    return EngineChoice("openvino", f"OpenVINO {version} ({PRECISION.replace('f', 'fp')}, CPU)")


def build_network(model: LoadedModel, choice: EngineChoice, mirrored: bool, threads: Optional[int] = None,
                  cache: Optional[Path] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net(window)`` for ``choice``, mirror-averaged when ``mirrored``: the TorchScript module
    (wrapped in ``MirrorAveraged``), or a compiled OpenVINO model (the mirror inside its graph)."""
    if choice.name == "torch":
        return MirrorAveraged(model.module, model.class_names, model.info.orientation) if mirrored else model.module
    return OpenVinoNetwork(model, mirrored=mirrored, threads=threads, cache=cache)


class OpenVinoNetwork:
    """``net(x)`` for a (1, 1, *patch) float tensor, on OpenVINO's CPU plugin; with ``mirrored``
    the window is averaged with its side-swapped mirror image inside the graph."""

    def __init__(self, model: LoadedModel, mirrored: bool = False, threads: Optional[int] = None,
                 cache: Optional[Path] = None, precision: str = PRECISION):
        import openvino as ov
        self.mirrored = mirrored
        self.folder = ov_cache_folder(model, cache, mirrored)
        self.rebuilt = False  # True when this call converted the model (first use, or a damaged cache entry)
        core = ov.Core()
        ov_model = self._load(core)
        if ov_model is None:
            ov_model = self._build(model, core)
            self.rebuilt = True
        # precision: f32 in the product; bf16 only for bench_engines.py on CPUs that report BF16
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(ov_model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The window's logits, a view of the request's output buffer: valid until the next call
        (the sliding window blends each window before it runs the next). Not copying saves a
        126-class window's worth of fresh memory per call (132 MB at 64^3: 57-59 s against 64-68 s
        for the demo phantom's 120 windows on a 2-core CPU); ``.clone()`` to keep one."""
        window = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.request.infer([window], share_inputs=True, share_outputs=True)
        return torch.from_numpy(np.asarray(out[0]))

    def _load(self, core):
        """The cached IR when its manifest matches its files, else None (then rebuilt)."""
        manifest = self.folder / "manifest.json"
        try:
            expected = json.loads(manifest.read_text(encoding="utf-8"))["sha256"]
            if set(expected) != set(CACHE_FILES):  # names from the file are never used as paths
                raise ValueError(f"manifest lists {sorted(expected)}, not {list(CACHE_FILES)}")
            for name in CACHE_FILES:
                digest = expected[name]
                if sha256_file(self.folder / name) != digest:
                    raise ValueError(f"{name} changed")
            return core.read_model(str(self.folder / "model.xml"))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
            log.warning("OpenVINO cache entry %s is unreadable (%s): rebuilding it", self.folder, exc)
            return None

    def _build(self, model: LoadedModel, core):
        import openvino as ov
        net = rebuild_torch_network(model)
        if self.mirrored:
            net = FusedMirrorNetwork(net, model.class_names, model.info.orientation).eval()
        shape = (1, 1, *model.patch_size)
        with warnings.catch_warnings():  # the tracer's notes on shape checks concern fixed shapes only
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # Traced here without the tracer's self-check: that check reruns the network twice and
            # compares (10 of the 14 s of a first use on 2 cores); agreement with TorchScript is
            # what the engine tests hold it to instead.
            with torch.no_grad():
                traced = torch.jit.trace(net, torch.zeros(shape), check_trace=False)
            ov_model = ov.convert_model(traced, example_input=torch.zeros(shape), input=[ov.PartialShape(list(shape))])
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=self.folder.parent))
        try:
            ov.save_model(ov_model, str(staging / "model.xml"), compress_to_fp16=False)
            digests = {name: sha256_file(staging / name) for name in CACHE_FILES}
            (staging / "manifest.json").write_text(json.dumps({"sha256": digests, "model_sha256": model.sha256,
                                                               "openvino": ov.__version__}), encoding="utf-8")
            if self.folder.exists():
                shutil.rmtree(self.folder)
            staging.rename(self.folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return ov_model


def rebuild_torch_network(model: LoadedModel) -> torch.nn.Module:
    """The network class from the metadata with the model file's weights (strictly matched)."""
    meta = model.info.network
    if meta.get("architecture", "NoNewNet") != "NoNewNet":
        raise BoneSegmentationError(f"the OpenVINO engine knows No-New-Net, not {meta.get('architecture')!r}: "
                                    "use --engine torch")
    net = NoNewNet(model.num_classes, base_features=int(meta.get("base_features", 30)),
                   levels=int(meta.get("levels", 5)))
    net.load_state_dict(model.module.state_dict(), strict=True)
    return net.eval()


def ov_cache_folder(model: LoadedModel, cache: Optional[Path] = None, mirrored: bool = False) -> Path:
    """Where the converted model lives: $BONESEGMENTATION_OPENVINO_CACHE, else the user cache."""
    root = cache or (Path(os.environ["BONESEGMENTATION_OPENVINO_CACHE"]) if os.environ.get("BONESEGMENTATION_OPENVINO_CACHE")
                     else cache_dir() / "openvino")
    kind = "mirror" if mirrored else "plain"
    return root / f"{model.sha256[:20]}-ov{openvino_version()}-g{GRAPH_VERSION}-{PRECISION}-{kind}"

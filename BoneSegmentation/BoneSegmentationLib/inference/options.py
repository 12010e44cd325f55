"""How inference runs: one typed, validated object, set once and recorded beside every output.

The same ``InferenceOptions`` travels through the CLI (``add_arguments``/``from_args``), the
child process the Slicer panel starts (``to_argv``), the panel's parameter node
(``to_parameters``/``from_parameters``) and the sidecar JSON (``to_json``), so there is one
encoding of each option everywhere: mirror is ``"model"`` (follow the model's metadata),
``"on"`` or ``"off"``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping, Optional

from ..core.errors import BoneSegmentationError

MIRROR_MODES = ("model", "on", "off")
ENGINES = ("auto", "torch", "openvino")  # auto: OpenVINO on the CPU when installed (inference/engine.py)
ACCUMULATE = ("float32", "float16")  # precision of the ring buffer's running sums (sliding_window.py)
MAX_STITCH = 4


class OptionError(BoneSegmentationError):
    """An inference option out of range; the message names the option and what is allowed."""


def _stitch_factor(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_STITCH:
        raise argparse.ArgumentTypeError(f"stitch factor must be 1 (off) to {MAX_STITCH}, got {text}")
    return value


def _overlap(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 0.9:
        raise argparse.ArgumentTypeError(f"overlap must be a number from 0 to 0.9, got {text}")
    return value


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"threads must be a whole number of at least 1, got {text}")
    return value


@dataclass(frozen=True)
class InferenceOptions:
    device: str = "auto"  # auto (CUDA when usable, else CPU), cpu, cuda or cuda:N
    overlap: float = 0.5  # sliding-window overlap, 0..0.9
    stitch: int = 1  # shift-and-stitch factor: labels at model spacing / stitch, stitch^3 passes
    mirror: str = "model"  # left-right mirror averaging: model (as its metadata says), on, off
    threads: Optional[int] = None  # CPU threads for PyTorch (None: PyTorch's default)
    engine: str = "auto"  # what runs the network: auto, torch or openvino (CPU)
    anatomy: bool = True  # the anatomical consistency step after the network (consistency/)
    accumulate: str = "float32"  # ring-buffer precision: float16 halves it (labels may differ at near-ties)
    edges: bool = True  # grow bones into their bright edge voxels on a CT finer than the model's grid (edges.py)

    def __post_init__(self) -> None:
        device = (self.device or "auto").lower()
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise OptionError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        object.__setattr__(self, "device", device)
        if not isinstance(self.overlap, (int, float)) or not math.isfinite(self.overlap) or not 0 <= self.overlap <= 0.9:
            raise OptionError(f"overlap must be a number from 0 to 0.9, not {self.overlap!r}")
        object.__setattr__(self, "overlap", float(self.overlap))
        if isinstance(self.stitch, bool) or not isinstance(self.stitch, int) or not 1 <= self.stitch <= MAX_STITCH:
            raise OptionError(f"stitch must be a whole number from 1 (off) to {MAX_STITCH}, not {self.stitch!r}")
        if self.mirror not in MIRROR_MODES:
            raise OptionError(f"mirror must be one of {', '.join(MIRROR_MODES)}, not {self.mirror!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or not 1 <= self.threads <= 1024):
            raise OptionError(f"threads must be a whole number of at least 1, not {self.threads!r}")
        for name in ("anatomy", "edges"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be true or false, not {getattr(self, name)!r}")
        if self.engine not in ENGINES:
            raise OptionError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.accumulate not in ACCUMULATE:
            raise OptionError(f"accumulate must be one of {', '.join(ACCUMULATE)}, not {self.accumulate!r}")

    def mirror_for(self, model_default: bool) -> bool:
        """Whether to mirror-average with a model whose metadata says ``model_default``."""
        return model_default if self.mirror == "model" else self.mirror == "on"

    def with_(self, **changes) -> "InferenceOptions":
        return replace(self, **changes)

    # -- command line ---------------------------------------------------------------------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The options as command-line flags (the defaults are the dataclass's)."""
        d = InferenceOptions()
        parser.add_argument("--device", default=d.device,
                            help="auto (CUDA when usable, else CPU; default), cpu, cuda or cuda:N")
        parser.add_argument("--overlap", type=_overlap, default=d.overlap,
                            help=f"sliding-window overlap 0..0.9 (more = slower, smoother; default {d.overlap})")
        parser.add_argument("--stitch", type=_stitch_factor, default=d.stitch, metavar="F",
                            help="shift-and-stitch: run the model F^3 times on shifted grids for labels at model "
                                 "spacing / F (2: a 4 mm model gives 2 mm labels in 8x the time; default 1, off)")
        parser.add_argument("--mirror", dest="mirror", action="store_const", const="on", default=d.mirror,
                            help="average each window with its left-right mirror, left and right bones swapped: "
                                 "more accurate, 2x the time (default: as the model's metadata says)")
        parser.add_argument("--no-mirror", dest="mirror", action="store_const", const="off",
                            help="no mirror averaging, whatever the model's metadata says (faster)")
        parser.add_argument("--threads", type=_threads, default=d.threads,
                            help="CPU threads for PyTorch (default: PyTorch's choice)")
        parser.add_argument("--engine", choices=ENGINES, default=d.engine,
                            help="what runs the network: auto (OpenVINO on the CPU when installed, else PyTorch; "
                                 "default), torch, or openvino (CPU only; pip install \"bonesegmentation[fast-cpu]\")")
        parser.add_argument("--no-anatomy", dest="anatomy", action="store_false", default=d.anatomy,
                            help="skip the anatomical consistency step (vertebrae and ribs renumbered in order, "
                                 "sides from patient coordinates, stray pieces reassigned, bone outside the body "
                                 "removed); the network's labels as they are")
        parser.add_argument("--accumulate", choices=ACCUMULATE, default=d.accumulate,
                            help="precision of the running sums of overlapping windows: float32 (default, "
                                 "exact) or float16 (the aggregation's memory halved, about 0.6x the peak; "
                                 "labels may differ where two bones are nearly tied)")
        parser.add_argument("--grow-edges", dest="edges", action="store_true", default=d.edges,
                            help="grow each bone into its bright (>= 250 HU) edge voxels, up to one model voxel, "
                                 "on a CT finer than the model's grid, never into a thick bright region (a vessel): "
                                 "fuller bone surfaces, the half-bone layer a coarse grid leaves out (default)")
        parser.add_argument("--no-grow-edges", dest="edges", action="store_false",
                            help="leave the bones' boundaries where the model's grid puts them (on a contrast "
                                 "scan, edge growth also enlarges bone the network wrongly put in a vessel)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "InferenceOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def to_argv(self) -> list[str]:
        """Flags that ``from_args`` turns back into these options (for a child process)."""
        argv = ["--device", self.device, "--overlap", repr(self.overlap), "--stitch", str(self.stitch)]
        if self.mirror != "model":
            argv.append("--mirror" if self.mirror == "on" else "--no-mirror")
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        if self.engine != "auto":
            argv += ["--engine", self.engine]
        if not self.anatomy:
            argv.append("--no-anatomy")
        if self.accumulate != "float32":
            argv += ["--accumulate", self.accumulate]
        if not self.edges:
            argv.append("--no-grow-edges")
        return argv

    # -- Slicer parameter node (strings) ---------------------------------------------------------
    PARAMETERS = {"device": "Device", "overlap": "Overlap", "stitch": "Stitch", "mirror": "Mirror",
                  "threads": "Threads", "engine": "Engine", "anatomy": "Anatomy", "accumulate": "Accumulate",
                  "edges": "GrowEdges"}

    def to_parameters(self) -> dict[str, str]:
        values = asdict(self)
        return {key: "" if values[name] is None else str(values[name]).lower() if isinstance(values[name], bool)
                else str(values[name]) for name, key in self.PARAMETERS.items()}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> "InferenceOptions":
        """From the parameter node's strings; missing or empty entries take the defaults."""
        d = cls()
        kw: dict = {}
        for name, key in cls.PARAMETERS.items():
            text = parameters.get(key, "")
            if text in ("", None):
                continue
            default = getattr(d, name)
            try:
                if name in ("anatomy", "edges"):
                    if text.lower() not in ("true", "false", "1", "0"):
                        raise ValueError(text)
                    kw[name] = text.lower() in ("true", "1")
                    continue
                kw[name] = (float(text) if name == "overlap" else int(text) if name in ("stitch", "threads")
                            else str(text))
            except ValueError:
                raise OptionError(f"parameter {key}={text!r} is not valid (default {default!r})") from None
        return cls(**kw)

    # -- record ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "InferenceOptions":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise OptionError(f"unknown inference option(s): {', '.join(sorted(unknown))}")
        return cls(**data)

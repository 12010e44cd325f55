"""Command-line interface: ``bonesegmentation segment | info | models | ...``.

Errors are printed as one line and give a non-zero exit status, never a traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from . import __version__
from .errors import BoneSegmentationError

log = logging.getLogger("bonesegmentation")


class ProgressBar:
    """A one-line text progress bar on stderr (silent when not a terminal unless forced)."""

    def __init__(self, label: str, enabled: bool = True, width: int = 30):
        self.label, self.enabled, self.width = label, enabled, width
        self.start = time.perf_counter()
        self._last = -1.0
        self.tty = sys.stderr.isatty()
        self.step = 0.01 if self.tty else 0.1  # in logs, one line per 10 %

    def __call__(self, fraction: float, message: str = "") -> None:
        if not self.enabled or (fraction - self._last < self.step and fraction < 1.0):
            return
        self._last = fraction
        filled = int(self.width * fraction)
        elapsed = time.perf_counter() - self.start
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{100 * fraction:5.1f}% {elapsed:6.1f}s {message[:40]:<40}")
        sys.stderr.write(f"\r{line}" if self.tty else line.rstrip() + "\n")
        if fraction >= 1.0 and self.tty:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _bytes_progress(bar: ProgressBar) -> Callable[[int, int], None]:
    return lambda have, total: bar(have / total if total else 0.0, f"{have / 2**20:.1f} MiB")


def cmd_segment(args: argparse.Namespace) -> int:
    from .imageio import read_ct, write_image, output_suffix
    from .modelfile import load_model
    from .registry import resolve_model
    from .review import summary_lines, write_review
    from .segment import found_classes, segment_image, set_threads
    from .device import resolve_device

    output = Path(args.output)
    output_suffix(output)  # refuse unsupported formats before any work
    review_path = Path(args.review) if args.review else review_path_for(output)
    for path in (output, review_path):
        if path.exists() and not args.overwrite:
            raise BoneSegmentationError(f"{path} already exists; pass --overwrite to replace it")
    set_threads(args.threads)
    image, _ = read_ct(args.input)
    model_path = resolve_model(args.model, progress=_bytes_progress(ProgressBar("download", not args.quiet)))
    device = resolve_device(args.device)
    model = load_model(model_path, device=device)
    result = segment_image(image, model, device=args.device, overlap=args.overlap,
                           progress=ProgressBar("segment ", not args.quiet))
    write_image(result.labels, output, overwrite=args.overwrite)
    if args.confidence:
        write_image(result.confidence, args.confidence, overwrite=args.overwrite)
    write_review(result.review, review_path, model=model_label(model.metadata), overwrite=args.overwrite)
    names = model.class_names
    found = found_classes(result.labels_model_grid)
    print(f"wrote {output}: {len(found)} of {model.num_classes - 1} bones found "
          f"in {result.timings['total_s']:.1f} s on {result.device}")
    flagged = summary_lines(result.review, limit=5)
    print(f"review first ({review_path}):" if flagged else f"no bone flagged for review ({review_path})")
    for line in flagged:
        print(f"  {line}")
    if args.verbose:
        print(", ".join(names[i] for i in found))
    return 0


def review_path_for(output: Path) -> Path:
    """``bones.nii.gz`` -> ``bones.review.json`` beside it."""
    name = output.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(f"{name}.review.json")


def model_label(meta: dict) -> str:
    return f"{meta['name']} {meta['version']}"


def cmd_info(args: argparse.Namespace) -> int:
    from .modelfile import load_model, read_metadata
    from .registry import resolve_model

    path = resolve_model(args.model, allow_download=False)
    meta = load_model(path).metadata if args.check else read_metadata(path)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    rows = [
        ("file", str(path)), ("name", meta["name"]), ("version", meta["version"]),
        ("description", meta["description"]), ("modality", meta["modality"]),
        ("classes", f"{len(meta['classes'])} (incl. background)"),
        ("spacing (mm)", " x ".join(f"{s:g}" for s in meta["spacing_mm"])),
        ("orientation", meta["orientation"]), ("patch size", " x ".join(map(str, meta["patch_size"]))),
        ("intensity", ", ".join(f"{k}={v:g}" for k, v in meta["intensity"].items())),
        ("network", ", ".join(f"{k}={v}" for k, v in meta["network"].items())),
    ] + [(f"training.{k}", str(v)) for k, v in meta["training"].items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .registry import cache_dir, load_registry, local_copy

    entries = load_registry()
    print(f"cache: {cache_dir()}")
    print(f"{'name':<24} {'version':<8} {'size':>9}  {'status':<9} url")
    for e in entries:
        status = "available" if local_copy(e) else "remote"
        print(f"{e.name:<24} {e.version:<8} {e.size / 2**20:8.1f}M  {status:<9} {e.url}")
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    from .imageio import write_image
    from .phantom import make_phantom

    out = Path(args.output)
    for k in range(args.count):
        seed = args.seed + k
        ct, labels, spec = make_phantom(seed, spacing=args.spacing, partial=True if args.partial else False)
        write_image(ct, out / f"phantom_{seed:04d}_ct.nii.gz", overwrite=args.overwrite)
        write_image(labels, out / f"phantom_{seed:04d}_labels.nii.gz", overwrite=args.overwrite)
        print(f"phantom {seed}: {spec.posture} posture, scale {spec.scale:.2f}, size {ct.GetSize()}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_images, markdown_table, write_csv
    from .imageio import read_image

    result = evaluate_images(read_image(args.prediction), read_image(args.reference))
    print(markdown_table(result))
    if args.csv:
        write_csv(result, Path(args.csv))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(Path(args.output), model=args.model, spacing=args.spacing, device=args.device,
                      progress=ProgressBar("demo    ", not args.quiet))
    from .evaluation import markdown_table
    print(markdown_table(result["evaluation"]))
    print(f"{len(result['found'])} bones found in {result['timings']['total_s']:.1f} s; outputs:")
    for name, path in result["files"].items():
        print(f"  {name:<11} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bonesegmentation",
                                     description="Segment 125 distinct bones of the upper body in CT.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment a CT (file or DICOM folder) into a label map")
    p.add_argument("input", help="CT: .nii/.nii.gz/.nrrd/.mha file or a DICOM folder")
    p.add_argument("-o", "--output", required=True, help="label map to write (.nii.gz or .nrrd)")
    p.add_argument("--model", default=None, help="registered model name or .pt file (default: bundled)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap 0..0.9 (more = slower, smoother)")
    p.add_argument("--confidence", default=None, help="also write the top-1 probability map (model spacing)")
    p.add_argument("--review", default=None,
                   help="where to write the ranked review list (default: OUTPUT with .review.json)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="list the bones found")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("info", help="print a model file's metadata")
    p.add_argument("model", nargs="?", default=None, help="model file or registered name")
    p.add_argument("--json", action="store_true", help="print the raw metadata JSON")
    p.add_argument("--check", action="store_true", help="also load the network and check its output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="list registered models and whether they are available locally")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("phantom", help="write synthetic skeleton phantoms (CT + 125-bone labels)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spacing", type=float, default=2.0)
    p.add_argument("--partial", action="store_true", help="random partial field of view")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("evaluate", help="per-bone Dice and the paper's group table")
    p.add_argument("prediction")
    p.add_argument("reference")
    p.add_argument("--csv", default=None, help="also write the table and per-bone Dice as CSV")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="segment a synthetic phantom with the bundled model (the main job)")
    p.add_argument("-o", "--output", default="demo-output", help="output folder")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--spacing", type=float, default=2.0, help="phantom spacing (larger = faster, e.g. 4)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (BoneSegmentationError, FileExistsError, FileNotFoundError, ValueError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Command-line interface: ``bonesegmentation segment | info | models | ...``.

Errors are printed as one line and give a non-zero exit status, never a traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from . import __version__
from .core.errors import BoneSegmentationError
from .core.files import atomic_write_text, holds_text
from .core.imageio import (WRITABLE_SUFFIXES, output_suffix, read_ct, read_image, read_label_map,
                           strip_image_suffix, write_image)
from .evaluation.compare import compare_models
from .evaluation.totalsegmentator import evaluate_against_totalsegmentator, not_bone_lines
from .evaluation.metrics import boxplot_png, evaluate_images, markdown_table, side_by_side_table, write_csv
from .export.meshes import GLTF_FRAMES, export_meshes, preview_png
from .export.nnunet import export_nnunet
from .inference.cohort import Scan, is_cohort, list_scans, plan, rank_and_world, run_cohort, share, summary_table
from .inference.device import set_threads
from .inference.options import InferenceOptions
from .inference.preprocess import confidence_to_input_grid
from .inference.review import summary_lines, write_review
from .inference.segmenter import Segmenter, found_classes, sidecar_path_for, write_sidecar
from .model.metadata import SYNTHETIC_NOTICE
from .model.modelfile import load_model, read_model_metadata
from .model.registry import (UNVERIFIED_NOTICE, cache_dir, load_registry, local_copy, register_model,
                             registered_entry, resolve_model)
from .synthetic.demo import run_demo
from .synthetic.phantom import make_phantom
from .training.corrections import add_case
from .training.dataset import (check_dataset, dataset_digest, init_dataset, summarise_dataset, update_count,
                               write_case)
from .training.plan import IterationTimer, resolve_architecture, split_cases
from .training.train import TrainConfig, check_run_folder, load_dataset, train, write_history

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


class JsonProgress:
    """Progress as JSON lines on stdout, for a parent process (the Slicer module) to parse."""

    def __init__(self, stage: str):
        self.stage = stage

    def __call__(self, fraction: float, message: str = "") -> None:
        print(json.dumps({"stage": self.stage, "progress": round(float(fraction), 4), "message": message}),
              flush=True)


def _bytes_progress(bar: ProgressBar) -> Callable[[int, int], None]:
    return lambda have, total: bar(have / total if total else 0.0, f"{have / 2**20:.1f} MiB")


def check_not_folder(path: Path) -> None:
    """An output named as an existing folder is a slip (``-o results``): say so, with a file name."""
    if path.is_dir():
        raise BoneSegmentationError(f"cannot write {path}: it is a folder; name a file in it, e.g. "
                                    f"{path / 'bones.nii.gz'}")


def check_outputs(targets: list[Path], inputs: list[Path], overwrite: bool) -> None:
    """Before any work: no output is an input (same file after resolving links; an input folder
    holds none), none exists unless ``overwrite``, and every output folder is writable."""
    sources = [p.resolve() for p in inputs if p.exists()]
    for path in targets:
        resolved = path.resolve()
        for source in sources:
            if resolved == source or (source.is_dir() and source in resolved.parents):
                raise BoneSegmentationError(f"output {path} would replace the input {source}; choose another "
                                            "output name")
        check_not_folder(path)
        if path.exists() and not overwrite:
            raise BoneSegmentationError(f"{path} already exists; pass --overwrite to replace it")
        folder = resolved.parent
        while not folder.exists():
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise BoneSegmentationError(f"cannot write {path}: the folder {folder} is not writable; choose "
                                        "another output location")


def one_scan_for_a_file(args: argparse.Namespace) -> bool:
    """Whether ``-o`` names one image file for an input read as several scans; then the input
    must be one folder holding one scan (a DICOM tree given by its top folder: PATIENT/STUDY/...),
    which ``args.input`` becomes. Several scans into one file are refused: a folder named
    ``bones.nii.gz`` holding them would be a surprise."""
    output = Path(args.output)
    if output.is_dir() or not output.name.lower().endswith(WRITABLE_SUFFIXES):
        return False
    scans = list_scans(args.input)
    if len(args.input) == 1 and Path(args.input[0]).is_dir() and len(scans) == 1:
        args.input = [str(scans[0])]
        return True
    names = ", ".join(s.name for s in scans[:3]) + (", ..." if len(scans) > 3 else "")
    raise BoneSegmentationError(f"-o {output} names one file, but the input holds {len(scans)} scans ({names}); "
                                "give -o a folder (each scan gets NAME.nii.gz there), or give one scan")


def cmd_segment(args: argparse.Namespace) -> int:
    if is_cohort(args.input) and not one_scan_for_a_file(args):
        return cmd_segment_cohort(args)
    options = InferenceOptions.from_args(args)
    output = Path(args.output)
    check_not_folder(output)  # before names are derived from it
    review_path = Path(args.review) if args.review else review_path_for(output)
    sidecar = sidecar_path_for(output)
    targets = [output, review_path, sidecar] + ([Path(args.confidence)] if args.confidence else [])
    check_outputs(targets, [Path(args.input[0])], args.overwrite)
    output_suffix(output)  # refuse unsupported formats before any work
    image, _ = read_ct(args.input[0])  # a bad input fails before the model is loaded
    model = _load_for_segment(args)
    segmenter = Segmenter(model, options)
    result = _segment_and_write(segmenter, args.input[0], output, review_path, sidecar, args,
                                confidence=Path(args.confidence) if args.confidence else None, image=image)
    found = found_classes(result.labels_model_grid)
    print(f"wrote {output}: {len(found)} of {model.num_classes - 1} bones found "
          f"in {result.timings['total_s']:.1f} s on {result.device} (options and model in {sidecar.name})")
    flagged = summary_lines(result.review, limit=5)
    print(f"review first ({review_path}):" if flagged else f"no bone flagged for review ({review_path})")
    for line in flagged:
        print(f"  {line}")
    if args.verbose:
        print(", ".join(model.class_names[i] for i in found))
    return 0


def _load_for_segment(args: argparse.Namespace):
    bar = JsonProgress("download") if args.progress_json else ProgressBar("download", not args.quiet)
    path = resolve_model(args.model, progress=_bytes_progress(bar))
    if registered_entry(path) is None:
        print(UNVERIFIED_NOTICE.format(path=path), file=sys.stderr)
    model = load_model(path)
    if model.info.trained_on_synthetic_data_only:
        print(SYNTHETIC_NOTICE, file=sys.stderr)
    return model


def _segment_and_write(segmenter: Segmenter, source: str, output: Path, review_path: Path, sidecar: Path,
                       args: argparse.Namespace, confidence: Optional[Path] = None, extra: Optional[dict] = None,
                       image=None):
    """Segment one CT and write its label map, confidence, review list and (last) sidecar."""
    if image is None:
        image, _ = read_ct(source)
    result = segmenter.segment(image, progress=JsonProgress("segment") if args.progress_json else
                               ProgressBar("segment ", not args.quiet))
    outputs = {"labels": str(write_image(result.labels, output, overwrite=True if extra else args.overwrite))}
    if confidence is not None:
        grid = result.confidence if args.confidence_grid == "model" else \
            confidence_to_input_grid(result.confidence, image)
        outputs["confidence"] = str(write_image(grid, confidence, overwrite=args.overwrite))
    outputs["review"] = str(write_review(result.review, review_path, model=segmenter.model.label,
                                         overwrite=True if extra else args.overwrite))
    record = segmenter.record(result, image, input_name=str(source), outputs=outputs)
    write_sidecar(sidecar, {**record, **(extra or {})})
    return result


def cmd_segment_cohort(args: argparse.Namespace) -> int:
    """Several scans into the folder ``-o``; resumable; shared out under torchrun."""
    if args.confidence or args.review:
        raise BoneSegmentationError("--confidence and --review name one file: for many scans give -o a folder "
                                    "(each scan gets NAME.nii.gz, NAME.review.json and NAME.json there)")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise BoneSegmentationError(f"-o {out_dir} must be a folder when segmenting several scans")
    scans = plan(list_scans(args.input), out_dir, args.format)
    check_outputs([out_dir / "x"], [s.source for s in scans], overwrite=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world = rank_and_world()
    options = InferenceOptions.from_args(args)
    if world > 1 and options.device in ("auto", "cuda") and torch.cuda.is_available():
        options = replace(options, device=f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}")  # one GPU each
    mine = share(scans, rank, world)
    model = _load_for_segment(args)
    segmenter = Segmenter(model, options)

    def one(scan: Scan) -> int:
        result = _segment_and_write(segmenter, str(scan.source), scan.labels, scan.review, scan.sidecar, args,
                                    extra={"cohort": {"rank": rank, "world_size": world}})
        return len(found_classes(result.labels_model_grid))

    def show(k: int, n: int, scan: Scan) -> None:
        if not args.quiet:
            print(f"[{'#' * (20 * k // max(n, 1)):<20}] scan {k + 1}/{n}{f' (rank {rank})' if world > 1 else ''}: "
                  f"{scan.source.name}", flush=True)

    outcomes = run_cohort(mine, one, overwrite=args.overwrite, rank=rank, progress=show)
    outcomes = _gather(outcomes, world)
    if rank == 0:
        print(summary_table(sorted(outcomes, key=lambda o: [s.source for s in scans].index(o.scan.source))))
    return 2 if any(o.status.startswith("failed") for o in outcomes) else 0


def _gather(outcomes: list, world: int) -> list:
    """All ranks' outcomes on rank 0 (a gloo process group, so it works without GPUs)."""
    if world == 1:
        return outcomes
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        everything = [None] * world
        dist.all_gather_object(everything, outcomes)
        return [o for part in everything for o in part]
    finally:
        dist.destroy_process_group()


def review_path_for(output: Path) -> Path:
    """``bones.nii.gz`` -> ``bones.review.json`` beside it."""
    return output.with_name(f"{strip_image_suffix(output.name)}.review.json")


def cmd_info(args: argparse.Namespace) -> int:
    path = resolve_model(args.model, allow_download=False)
    meta = load_model(path).info if args.check else read_model_metadata(path)
    if args.json:
        print(json.dumps(meta.raw, indent=2))
        return 0
    rows = [
        ("file", str(path)), ("name", meta.name), ("version", meta.version),
        ("description", meta.description), ("modality", meta.modality),
        ("classes", f"{meta.num_classes} (incl. background)"),
        ("spacing (mm)", " x ".join(f"{s:g}" for s in meta.spacing_mm)),
        ("orientation", meta.orientation), ("patch size", " x ".join(map(str, meta.patch_size))),
        ("intensity", ", ".join(f"{k}={v:g}" for k, v in asdict(meta.intensity).items())),
        ("network", ", ".join(f"{k}={v}" for k, v in meta.network.items())),
        ("mirror averaging by default", "yes" if meta.mirror else "no"),
    ] + [(f"training.{k}", str(v)) for k, v in meta.training.items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    entry = registered_entry(path)
    print(f"{'registry':<{width}}  " + (f"verified: SHA-256 matches {entry.name} {entry.version}" if entry else
                                       "unverified: this file's SHA-256 is in no model registry"))
    if args.check:
        print(f"{'check':<{width}}  passed: archive intact, only network operations, {meta.num_classes} output "
              "channels on a test input")
    return 0


def cmd_models(args: argparse.Namespace) -> int:

    entries = load_registry()
    print(f"cache: {cache_dir()}")
    print(f"{'name':<24} {'version':<8} {'size':>9}  {'status':<9} url")
    for e in entries:
        status = "available" if local_copy(e) else "remote"
        print(f"{e.name:<24} {e.version:<8} {e.size / 2**20:8.1f}M  {status:<9} {e.url}")
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:


    out = Path(args.output)
    if args.dataset:
        init_dataset(out, description="synthetic skeleton phantoms")
    for k in range(args.count):
        seed = args.seed + k
        ct, labels, spec = make_phantom(seed, spacing=args.spacing, partial=True if args.partial else False)
        if args.dataset:
            write_case(out, f"phantom_{seed:04d}", ct, labels, overwrite=args.overwrite)
        else:
            write_image(ct, out / f"phantom_{seed:04d}_ct.nii.gz", overwrite=args.overwrite)
            write_image(labels, out / f"phantom_{seed:04d}_labels.nii.gz", overwrite=args.overwrite)
        print(f"phantom {seed}: {spec.posture} posture, scale {spec.scale:.2f}, size {ct.GetSize()}")
    if args.dataset:
        update_count(out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    outputs = [Path(p) for p in (args.csv, args.plot) if p]
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise BoneSegmentationError(f"--csv and --plot name the same file {outputs[0]}; give each its own name")
    check_outputs(outputs, [Path(p) for p in (args.prediction, args.reference, args.ct) if p], args.overwrite)

    if args.reference_kind == "totalsegmentator":
        ct = read_ct(args.ct)[0] if args.ct else None
        result = evaluate_against_totalsegmentator(read_label_map(args.prediction), read_image(args.reference), ct)
        print(f"Reference: {result.reference}; {len(result.per_bone)} bones in both\n")
        print(markdown_table(result))
        for line in not_bone_lines(result):
            print(line)
    else:
        if args.ct:
            raise BoneSegmentationError("--ct is for --reference totalsegmentator (the not-bone measures)")
        result = evaluate_images(read_label_map(args.prediction), read_label_map(args.reference))
        print(markdown_table(result))
    if args.csv:
        write_csv(result, Path(args.csv))
    if args.plot:
        boxplot_png(result, Path(args.plot), title=f"{Path(args.prediction).name} vs {Path(args.reference).name}")
    return 0


def cmd_dataset_add(args: argparse.Namespace) -> int:

    ct, labels = read_image(args.image), read_label_map(args.labels)
    prior = read_label_map(args.prior) if args.prior else None
    manifest = add_case(Path(args.dataset), ct, labels, source_name=Path(args.image).name, prior=prior,
                        prior_model=args.prior_model or "", labelled=args.labelled, case_id=args.case_id,
                        overwrite=args.overwrite)
    edits = manifest.get("edits")
    print(f"added case {manifest['case_id']} to {args.dataset}: {len(manifest['voxels'])} bones, labelled: "
          f"{manifest['labelled_classes'] if manifest['labelled_classes'] == 'all' else len(manifest['labelled_classes'])}")
    if edits:
        print(f"edited versus the prediction: {', '.join(edits['edited']) or 'none'}")
    return 0


def cmd_dataset_info(args: argparse.Namespace) -> int:

    summary = summarise_dataset(Path(args.dataset), min_cases=args.min_cases)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{args.dataset}: {len(summary['cases'])} cases")
    for case in summary["cases"]:
        labelled = case["labelled"] if case["labelled"] == "all" else f"{len(case['labelled'])} bones (partial)"
        edited = f", edited {len(case['edited'])}" if case.get("edited") is not None else ""
        print(f"  {case['case_id']}: {case['bones']} bones present, labelled {labelled}{edited}"
              f"{', from ' + case['source'] if case.get('source') else ''}")
    print("bone: cases labelled, total voxels")
    for name, row in summary["bones"].items():
        print(f"  {name}: {row['cases']}, {row['voxels']}")
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    return 0


def cmd_dataset_export_nnunet(args: argparse.Namespace) -> int:

    result = export_nnunet(Path(args.dataset), Path(args.output), args.id, name=args.name,
                           progress=None if args.quiet else print)
    print(f"wrote {result.folder}: {result.cases} cases"
          + (f"; {len(result.partial_cases)} partially labelled, {result.ignored_voxels} unchecked voxels carry "
             f"the ignore label {result.ignore_label}" if result.partial_cases else "; all fully labelled"))
    print(f"next: nnUNetv2_plan_and_preprocess -d {args.id} --verify_dataset_integrity "
          f"(with nnUNet_raw={Path(args.output).resolve()})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:

    if args.output:
        check_outputs([Path(args.output)], [Path(args.dataset)] + [Path(m) for m in args.models], args.overwrite)
    results = compare_models(Path(args.dataset), args.models, cases=args.cases, split=args.split,
                             options=InferenceOptions.from_args(args), progress=None if args.quiet else print)
    table = side_by_side_table(results)
    print(table)
    if args.output:
        atomic_write_text(Path(args.output), table)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    ids = check_dataset(Path(args.dataset))
    if args.init:
        args.init = str(resolve_model(args.init, allow_download=False))
    arch = resolve_architecture({"spacing": args.spacing, "patch": args.patch, "width": args.width,
                                 "levels": args.levels}, Path(args.init) if args.init else None)
    split = split_cases(ids, args.fold, args.folds)
    out = Path(args.output)
    split_text = json.dumps(split, indent=1)
    if not holds_text(out / "split.json", split_text):  # else: this run, stopped before its first checkpoint
        check_run_folder(out, args.name, ("split.json", "history.jsonl"))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "split.json", split_text)
    print(f"dataset {args.dataset}: {len(split['train'])} training, {len(split['val'])} validation, "
          f"{len(split['test'])} test cases (split in {out / 'split.json'})")
    cases = {i: c for i, c in zip(split["train"] + split["val"],
                                  load_dataset(Path(args.dataset), arch["spacing"], split["train"] + split["val"]))}
    cfg = TrainConfig(out_dir=str(out), iterations=args.iterations, sampling=args.sampling, lr=args.lr,
                      lr_schedule=args.lr_schedule,
                      augment=not args.no_augment, validate_every=args.validate_every,
                      checkpoint_every=args.checkpoint_every, init_model=args.init, device=args.device,
                      name=args.name, version=args.model_version, seed=args.seed,
                      description=args.description or f"trained on {Path(args.dataset).name}",
                      data_description=f"{Path(args.dataset).resolve()} cases {', '.join(split['train'])}",
                      extra={"dataset_sha256": dataset_digest(Path(args.dataset), split["train"] + split["val"]),
                             "dataset_cases": split["train"] + split["val"], "held_out_cases": split["test"]},
                      **arch)
    on_gpu = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if not on_gpu:
        print("no GPU: training on the CPU (expect about 1-10 s per iteration; an estimate follows)")
    history = out / "history.jsonl"
    timer, told = IterationTimer(args.iterations), []

    def log(record: dict) -> None:
        write_history(history, record)
        it = record["iteration"]
        timer.add(record)
        if not told and not on_gpu and timer.minutes_left() is not None:
            told.append(True)
            print(f"measured {timer.seconds_per_iteration():.2f} s per iteration: {args.iterations - it} to go, "
                  f"about {timer.minutes_left():.0f} min plus validation")
        if not args.quiet and (it % args.print_every == 0 or "val_dice" in record or "ranks_weights_sha256" in record):
            print(json.dumps(record), flush=True)

    stop_file = Path(args.stop_file) if args.stop_file else None
    path = train(cfg, [cases[i] for i in split["train"]], [cases[i] for i in split["val"]], log,
                 should_stop=lambda: stop_file is not None and stop_file.exists())
    if path is None:
        print(f"stopped; checkpoint kept in {out} (run the same command to resume)")
        return 0
    print(f"wrote {path}")
    if args.register:
        entry = register_model(path)
        print(f"registered {entry.name} {entry.version} (use --model {entry.name})")
    return 0


def mesh_target(output: Path, fmt: Optional[str]) -> tuple[Path, str, str]:
    """``-o FILE.glb|.gltf|.obj|.ply``: that file (the format from its suffix); anything else is a
    folder that gets ``bones.<format>`` (STL: one file per bone)."""
    suffix = output.suffix.lower().lstrip(".")
    if suffix in ("glb", "gltf", "obj", "ply"):
        if fmt and fmt != suffix:
            raise BoneSegmentationError(f"-o {output} asks for {suffix} but --format says {fmt}; drop one of them")
        return output.parent, output.stem, suffix
    if suffix == "stl":
        raise BoneSegmentationError("STL holds one bone per file: give a folder with -o and --format stl")
    if output.exists() and not output.is_dir():
        raise BoneSegmentationError(f"-o {output} is an existing file and not a mesh file name (.glb, .gltf, .obj, "
                                    ".ply): give a mesh file name or a folder for bones.<format>")
    return output, "bones", fmt or "glb"


def cmd_meshes(args: argparse.Namespace) -> int:

    folder, stem, fmt = mesh_target(Path(args.output), args.format)
    preview = folder / f"{stem}.preview.png" if stem != "bones" else folder / "preview.png"
    if args.preview:  # the meshes' own files are checked by export_meshes, before it meshes
        check_outputs([preview], [Path(args.labelmap)], args.overwrite)
    labels = read_label_map(args.labelmap)
    result = export_meshes(labels, folder, fmt=fmt, smoothing=args.smoothing, max_triangles=args.max_triangles,
                           coordinates=args.coordinates, overwrite=args.overwrite, stem=stem,
                           gltf_frame=args.gltf_frame)
    if args.preview:
        result.files.append(preview_png(result.bones, preview, args.coordinates))
    triangles = sum(len(m.triangles) for m in result.bones)
    frame = f"glTF {args.gltf_frame} frame" if fmt in ("glb", "gltf") else f"{args.coordinates} mm"
    print(f"{len(result.bones)} bones, {triangles} triangles, {frame}, in {result.seconds:.1f} s:")
    for path in result.files[:6]:
        print(f"  {path}")
    if len(result.files) > 6:
        print(f"  ... and {len(result.files) - 6} more")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:

    result = run_demo(Path(args.output), model=args.model, spacing=args.spacing,
                      options=InferenceOptions.from_args(args), progress=ProgressBar("demo    ", not args.quiet),
                      overwrite=args.overwrite)
    if result.synthetic_only:
        print(SYNTHETIC_NOTICE, file=sys.stderr)
    print(markdown_table(result.evaluation))
    print(f"{len(result.found)} bones found in {result.timings['total_s']:.1f} s; outputs:")
    for name, path in result.files.items():
        print(f"  {name:<11} {path}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, where to look) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bonesegmentation",
                                     description="Segment 125 distinct bones of the upper body in CT.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment a CT (file or DICOM folder), or many, into label maps")
    p.add_argument("input", nargs="+",
                   help="CT: .nii/.nii.gz/.nrrd/.mha file or a DICOM folder; for many scans: several of these, "
                        "a folder of them, or a .txt list (one path per line)")
    p.add_argument("-o", "--output", required=True,
                   help="label map to write (.nii.gz, .nrrd, .seg.nrrd); for many scans a folder")
    p.add_argument("--format", default=".nii.gz", choices=[".nii.gz", ".nrrd", ".seg.nrrd"],
                   help="label map format of each scan's output when segmenting many scans")
    p.add_argument("--model", default=None, help="registered model name or .pt file (default: bundled)")
    InferenceOptions.add_arguments(p)
    p.add_argument("--confidence", default=None,
                   help="also write the top-1 probability map (a file name: .nii.gz, .nrrd, ...)")
    p.add_argument("--confidence-grid", choices=["ct", "model"], default="ct",
                   help="ct (default): on the input CT's grid, linearly resampled, to overlay it voxel for voxel; "
                        "model: as the network made it, at the model's spacing")
    p.add_argument("--review", default=None,
                   help="where to write the ranked review list (default: OUTPUT with .review.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--progress-json", action="store_true", help="progress as JSON lines on stdout (for GUIs)")
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
    p.add_argument("--dataset", action="store_true", help="write a training dataset (nnU-Net layout)")
    p.add_argument("--count", type=int, default=1, help="how many phantoms (seeds SEED, SEED+1, ...)")
    p.add_argument("--seed", type=int, default=0, help="first seed; the same seed gives the same phantom")
    p.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm (larger = smaller files, faster)")
    p.add_argument("--partial", action="store_true", help="random partial field of view")
    p.add_argument("--overwrite", action="store_true", help="replace existing files of the same names")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("evaluate", help="per-bone Dice and the paper's group table")
    p.add_argument("prediction", help="our label map (bone table values, or a .seg.nrrd: segments by name)")
    p.add_argument("reference", help="reference label map (bone table values, a .seg.nrrd, or TotalSegmentator's with --reference)")
    p.add_argument("--reference", dest="reference_kind", choices=["bonesegmentation", "totalsegmentator"],
                   default="bonesegmentation",
                   help="what the reference's values mean: the bone table (default) or TotalSegmentator v2 'total' "
                        "classes (mapped onto the table; sternum parts merged, S1 in the sacrum)")
    p.add_argument("--ct", default=None, help="the CT, for the share of bone predicted outside the body "
                                              "(with --reference totalsegmentator)")
    p.add_argument("--csv", default=None, help="also write the table and per-bone Dice as CSV")
    p.add_argument("--plot", default=None, help="also write a per-group box plot PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --csv or --plot file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train or fine-tune a model on an nnU-Net style dataset folder")
    p.add_argument("dataset", help="folder with imagesTr/, labelsTr/ and dataset.json")
    p.add_argument("-o", "--output", required=True, help="run folder (checkpoints, history, model); "
                   "an existing run there is resumed")
    p.add_argument("--init", default=None, help="fine-tune from this model file or registered name")
    p.add_argument("--iterations", type=int, default=1000,
                   help="total iterations (at or below those done: just export the best checkpoint)")
    p.add_argument("--spacing", type=float, default=None, help="mm (default 2; from --init when given)")
    p.add_argument("--patch", type=int, default=None, help="voxels, e.g. 96, 128, 160 (default 96)")
    p.add_argument("--width", type=int, default=None, help="base features (default 30)")
    p.add_argument("--levels", type=int, default=None, help="U-Net levels (default 5)")
    p.add_argument("--sampling", choices=["balanced", "uniform"], default="balanced",
                   help="balanced: patches centred on every class equally often (the paper); uniform: anywhere")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the paper: 1e-3)")
    p.add_argument("--lr-schedule", choices=["constant", "poly"], default="constant",
                   help="constant (the paper) or nnU-Net's polynomial decay to 0")
    p.add_argument("--no-augment", action="store_true", help="no elastic/affine/intensity augmentation")
    p.add_argument("--fold", type=int, default=None, help="k-fold split index (the paper: 5 folds)")
    p.add_argument("--folds", type=int, default=5, help="number of cross-validation folds (with --fold)")
    p.add_argument("--validate-every", type=int, default=100, help="iterations between validations")
    p.add_argument("--checkpoint-every", type=int, default=50,
                   help="iterations between checkpoints (a stopped run resumes from the last one)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, sampling, augmentation)")
    p.add_argument("--name", default="bones-model", help="model name in the exported metadata")
    p.add_argument("--model-version", default="0.1", help="version written into the model file")
    p.add_argument("--description", default=None, help="description written into the model file")
    p.add_argument("--print-every", type=int, default=25, help="iterations between progress lines")
    p.add_argument("--stop-file", default=None, help="stop (checkpoint saved) as soon as this file exists")
    p.add_argument("--register", action="store_true", help="add the exported model to the user's model registry")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("dataset", help="training data from corrected segmentations (add a case, show a dataset, export for nnU-Net)")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    p = dsub.add_parser("add", help="add a CT and its corrected label map as a new case")
    p.add_argument("dataset", help="dataset folder (created in the nnU-Net layout if missing)")
    p.add_argument("--image", required=True, help="the CT")
    p.add_argument("--labels", required=True, help="corrected label map on the CT's grid: bone table values, or a .seg.nrrd saved from "
                   "Slicer (its segments mapped to bones by name)")
    p.add_argument("--prior", default=None, help="the model's prediction it was corrected from (records edits)")
    p.add_argument("--prior-model", default=None, help="name and version of the model that made --prior")
    p.add_argument("--labelled", default=None,
                   help="classes checked by the anatomist: 'all' (default), 'edited', or bone/group names "
                        "separated by commas (e.g. 'spine'); the others are ignored in training")
    p.add_argument("--case-id", default=None, help="default: <image name>_NNN, the first free number")
    p.add_argument("--overwrite", action="store_true", help="replace an existing case of that ID")
    p.set_defaults(func=cmd_dataset_add)
    p = dsub.add_parser("info", help="cases, bones labelled per case, voxels per bone, warnings")
    p.add_argument("dataset", help="dataset folder (nnU-Net layout)")
    p.add_argument("--min-cases", type=int, default=3, help="warn for bones labelled in fewer cases")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_dataset_info)

    p = dsub.add_parser("export-nnunet", help="write the dataset as an nnU-Net v2 raw dataset (partial cases: "
                                              "unchecked voxels get nnU-Net's ignore label)")
    p.add_argument("dataset", help="our dataset folder")
    p.add_argument("output", help="nnU-Net raw folder (nnUNet_raw) that gets DatasetNNN_<name>/")
    p.add_argument("--id", type=int, default=501, help="nnU-Net dataset ID, 1-999 (default 501)")
    p.add_argument("--name", default="BoneSegmentation", help="dataset name after the ID (letters, digits, _ -)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_dataset_export_nnunet)

    p = sub.add_parser("compare", help="evaluate models side by side on a dataset's held-out cases")
    p.add_argument("dataset", help="dataset folder (nnU-Net layout) holding the cases to compare on")
    p.add_argument("--models", nargs="+", required=True, help="model files or registered names (old first)")
    p.add_argument("--cases", nargs="+", default=None, help="case IDs (default: --split's test cases, else all)")
    p.add_argument("--split", default=None, help="a training run's split.json: use its held-out test cases")
    InferenceOptions.add_arguments(p)
    p.add_argument("-o", "--output", default=None, help="also write the Markdown table here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-case progress lines")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("meshes", help="one surface per bone for VR and 3D printing")
    p.add_argument("labelmap", help="label map (.nii.gz, .nrrd) in the bone table's values, or a .seg.nrrd "
                   "(segments mapped to bones by name)")
    p.add_argument("-o", "--output", required=True,
                   help="a file (.glb, .gltf, .obj, .ply: the format follows the suffix) or a folder for bones.<format>")
    p.add_argument("--format", choices=["glb", "gltf", "obj", "stl", "ply"], default=None,
                   help="format when -o is a folder (default glb; stl: one file per bone)")
    p.add_argument("--smoothing", type=float, default=0.25, help="0 (voxel surface) .. 1 (smoothest)")
    p.add_argument("--max-triangles", type=int, default=20000, help="per bone; 0 = no decimation")
    p.add_argument("--coordinates", choices=["RAS", "LPS"], default="RAS",
                   help="OBJ/STL/PLY vertices in mm: RAS as Slicer shows it (default) or LPS as DICOM/ITK")
    p.add_argument("--gltf-frame", choices=list(GLTF_FRAMES), default="upright",
                   help="glTF/GLB: upright (metres, +Y up, +Z front, centre of mass at the origin: what "
                        "viewers and headsets expect; default) or scanner (metres in the CT's axes, for registration)")
    p.add_argument("--preview", action="store_true", help="also render preview.png (front and side)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files of the same names")
    p.set_defaults(func=cmd_meshes)

    p = sub.add_parser("demo", help="segment a synthetic phantom with the bundled model (the main job)")
    p.add_argument("-o", "--output", default="demo-output", help="output folder")
    p.add_argument("--model", default=None, help="registered model name or .pt file (default: bundled)")
    p.add_argument("--spacing", type=float, default=2.0, help="phantom spacing (larger = faster, e.g. 4)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files of the demo's names in a folder an earlier demo did not write")
    InferenceOptions.add_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
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
    except ModuleNotFoundError as e:  # an installation without a package this command needs
        if args.debug:
            raise
        package = e.name.split(".")[0] if e.name else "the missing package"  # our imports' pip names are the same
        print(f"error: this command needs the Python package {package}, which is not installed; "
              f"install it with: pip install {package}", file=sys.stderr)
        return 2
    except (BoneSegmentationError, FileExistsError, FileNotFoundError, ValueError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, quota, permissions: the OS's reason in one line
        if args.debug:
            raise
        reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or type(e).__name__)
        print(f"error: cannot write {e.filename or 'an output'}: {reason}; nothing was replaced", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

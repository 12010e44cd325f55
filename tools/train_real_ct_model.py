"""Train the bundled model for real CT: images synthesised from real anatomy mixed with
phantoms in realistic surroundings, fine-tuned from the current bundled model.

    python tools/train_real_ct_model.py --out runs/realct --iterations 3000
    python tools/train_real_ct_model.py --out runs/realct --iterations 3000 --install   # when done
    python tools/train_real_ct_model.py --out runs/realct --export-best   # a stopped run's best, to OUT/candidate.pt
    python tools/train_real_ct_model.py --out runs/realct --validate-model bones-phantom-demo   # a baseline
    python tools/train_real_ct_model.py --out runs/realct --iterations 3000 --stop-after 50   # a 50-minute chunk

Runs of one recipe with different ``--seed`` can be averaged into one model with
``tools/average_models.py`` (a model soup: no cost at inference).

On a lent GPU machine, ``tools/device_train.sh`` runs this tool in one call (``--device`` picks
CUDA by itself; ``--stop-after`` keeps the call inside its time limit).

Resumable: the synthesised cases are cached in OUT/cases/ and training resumes from
OUT/checkpoint.pt, so run the same command again after a stop. ``--install`` copies the exported
model into Resources/ and updates the registry (name, version, SHA-256, size).

Data (never the real scans of ../shared/data/real, which are the test set):
- anatomy: ``synthesise(s0011, seed)`` for seeds 2001..2000+N (validation: ``--validation-seeds``,
  1990 and 1991 unless told), and with
  ``--crop-cases C`` C more forced to a 20-60-slice clinical crop (seeds 2501..2500+C);
- phantoms with surroundings: seeds 1001..1000+M (validation: 1000); plain phantoms 1101..1100+P.
Patches: ``--anatomy-share`` of them from the anatomy cases, the rest from the phantoms (which alone
hold hands, forearms, skull parts and C1-C6).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.core.files import atomic_write
from BoneSegmentationLib.core.resources import resource_path
from BoneSegmentationLib.model.registry import DEFAULT_MODEL, install_bundled, resolve_model
from BoneSegmentationLib.synthetic.anatomy import ATTRIBUTION, load_source, synthesise
from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.model.modelfile import load_model, read_metadata
from BoneSegmentationLib.training.train import (Case, TrainConfig, export_best, prepare_case, resume_state, train,
                                                validate_cases, write_history)
from shared_data import ANATOMY  # ../shared, named once for the tools

DESCRIPTION = ("Trained on CT-like images synthesised from one real body's bone and organ labels "
               "(TotalSegmentator s0011) and on procedural phantoms in realistic surroundings; "
               "never on real CT images. A prior to correct, not a diagnosis.")


Job = tuple[str, int, float, str, bool]  # kind, seed, model spacing, anatomy label map, anti-aliased


def _make(job: Job) -> tuple[str, dict]:
    """One case at model spacing, as arrays (run in a worker process)."""
    kind, seed, spacing, anatomy, smooth = job
    table = default_table()
    if kind in ("anatomy", "anatomy_crop"):
        validation_view = {1990: "whole", 1991: "clinical_crop"}.get(seed) if kind == "anatomy" else None
        fov = "clinical_crop" if kind == "anatomy_crop" else validation_view
        spacing_draw = None if validation_view else (
            float(np.random.default_rng(seed).uniform(2.2, 3.2)),
            float(np.random.default_rng(seed + 1).choice([2.0, 2.5, 3.0, 4.0, 5.0])))
        case = synthesise(load_source(Path(anatomy)), seed, spacing=spacing_draw or 2.5, fov=fov)
        prepared = prepare_case(f"{kind}_{seed}", case.ct, case.labels, spacing, smooth)
        labelled = np.zeros(table.num_classes, bool)
        labelled[0] = True
        for name in case.labelled:
            labelled[table.by_name(name).index] = True
        return f"{kind}_{seed}", {"image": prepared.image, "labels": prepared.labels, "labelled": labelled,
                                   "spec": json.dumps(case.spec, default=float)}
    surroundings = kind == "phantom_real"
    ct, lab, spec = make_phantom(seed, spacing=2.0, partial=None if seed not in (1000,) else False,
                                 surroundings=surroundings)
    prepared = prepare_case(f"{kind}_{seed}", ct, lab, spacing, smooth)
    return f"{kind}_{seed}", {"image": prepared.image, "labels": prepared.labels,
                              "labelled": np.ones(table.num_classes, bool), "spec": json.dumps({"seed": seed})}


def build_cases(out: Path, jobs: list[Job], workers: int) -> dict[str, Case]:
    cache = out / ("cases-antialiased" if jobs[0][4] else "cases")  # the two preparations never mix
    cache.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not (cache / f"{j[0]}_{j[1]}.npz").is_file()]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        for name, arrays in pool.map(_make, todo):
            atomic_write(cache / f"{name}.npz", lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")
            print(f"case {name}: {arrays['image'].shape} ({time.perf_counter() - t0:.0f} s)", flush=True)
    cases = {}
    for kind, seed, *_ in jobs:
        name = f"{kind}_{seed}"
        with np.load(cache / f"{name}.npz") as z:
            labelled = z["labelled"]
            cases[name] = Case(name, z["image"], z["labels"], None if labelled.all() else labelled,
                               group="anatomy" if kind.startswith("anatomy") else "phantom")
    return cases


def extra_cases(folders: list[str], antialiased: bool, validation_seeds: list[int]) -> list[Case]:
    """Anatomy images another run synthesised (an earlier version of the synthesiser, so other
    images for the same seeds), read from its case cache: more variety without synthesising again.
    Only training seeds (2001..) are taken; never a validation seed."""
    cases = []
    for folder in folders:
        cache = Path(folder) / ("cases-antialiased" if antialiased else "cases")
        files = sorted(cache.glob("anatomy*_2[0-9][0-9][0-9].npz"))
        if not files:
            raise SystemExit(f"--extra-cases {folder}: no anatomy images in {cache}; give a run folder with cached cases "
                             f"prepared {'with' if antialiased else 'without'} --antialias")
        for path in files:
            if int(path.stem.rsplit("_", 1)[1]) in validation_seeds:
                continue
            image, labels, labelled = read_cached_case(path)
            cases.append(Case(f"{Path(folder).name}/{path.stem}", image, labels,
                              None if labelled.all() else labelled, group="anatomy"))
    return cases


def read_cached_case(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, labels and labelled classes of a cached case, checked before use: a file from another
    folder is untrusted (no pickled objects are read; a truncated or malformed one is refused in
    one line with what to do)."""
    classes = default_table().num_classes
    try:
        with np.load(path, allow_pickle=False) as z:
            image, labels, labelled = z["image"], z["labels"], z["labelled"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise SystemExit(f"--extra-cases: {path} is not a readable cached case ({error}); "
                         "delete it or leave its run folder out") from None
    if (image.ndim != 3 or image.dtype != np.float32 or labels.shape != image.shape or labels.dtype != np.uint8
            or labelled.shape != (classes,) or labelled.dtype != bool or (labels.size and labels.max() >= classes)):
        raise SystemExit(f"--extra-cases: {path} is not a cached case of this project (image {image.shape} "
                         f"{image.dtype}, labels {labels.shape} {labels.dtype}, labelled {labelled.shape}); "
                         "delete it or leave its run folder out")
    return image, labels, labelled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/realct")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--anatomy-cases", type=int, default=36)
    ap.add_argument("--crop-cases", type=int, default=0,
                    help="more anatomy images, each a 20-60-slice clinical crop (seeds 2501..): the weak view")
    ap.add_argument("--phantoms", type=int, default=6, help="phantoms with realistic surroundings")
    ap.add_argument("--plain-phantoms", type=int, default=2, help="phantoms as before (keeps their figures)")
    ap.add_argument("--anatomy-share", type=float, default=0.6)
    ap.add_argument("--hard-negative-share", type=float, default=0.0,
                    help=f"share of patches centred on background brighter than {TrainConfig.hard_negative_hu:g} HU "
                         "(contrast-filled vessels, oral contrast, calcified cartilage, table, metal), away from bone")
    ap.add_argument("--bone-fade-share", type=float, default=0.0,
                    help="share of patches whose bone cores are faded toward soft tissue (osteoporotic bone; "
                         "augment.fade_bone_cores); 0, the default, draws nothing (earlier runs resume unchanged)")
    ap.add_argument("--short-view-share", type=float, default=0.0,
                    help="share of patches cut to a 24-96 mm slab and filled as inference fills a scan that short "
                         "(augment.short_view_slices); 0, the default, draws nothing (earlier runs resume unchanged)")
    ap.add_argument("--antialias", action="store_true",
                    help="smooth each image before sampling it at model spacing (preprocess.antialias), so that "
                         "thin-slice and thick-slice scans look alike to the network; recorded in the model, whose "
                         "inference then does the same")
    ap.add_argument("--train-only", nargs="+", default=[], metavar="PREFIX",
                    help="train only these stages (parameter name prefixes, e.g. encoders.0 decoders.3 classifier); "
                         "the rest stay the parent's")
    ap.add_argument("--parent-weight", type=float, default=0.0, metavar="W",
                    help="add W x KL(parent || network) per voxel to the loss, the parent being --init: the output "
                         "held to the parent's where the new images do not ask for a change (learning without "
                         "forgetting); 0, the default, runs no parent")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--validate-every", type=int, default=250)
    ap.add_argument("--validation-seeds", type=int, nargs="+", default=[1990, 1991],
                    help="anatomy images to validate on (1990 forced whole, 1991 a clinical crop, others drawn "
                         "like the training's); with three images the best pick is noise, so more is better")
    ap.add_argument("--seed", type=int, default=0,
                    help="the patch-sampling and augmentation streams (every run so far used 0)")
    ap.add_argument("--init", default=str(resource_path(f"{DEFAULT_MODEL}.pt")))
    ap.add_argument("--version", default="0.8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where to train: auto (CUDA when PyTorch sees a GPU, else CPU; default), cpu or cuda")
    ap.add_argument("--stop-after", type=float, metavar="MINUTES",
                    help="stop cleanly once MINUTES have passed since the command started (synthesis included: "
                         "a time-limited machine), with the checkpoint saved so that the same command resumes, "
                         "and export the best validated weights so far to OUT/candidate.pt")
    ap.add_argument("--extra-cases", nargs="+", default=[], metavar="RUN",
                    help="also train on the anatomy images cached in these earlier run folders (other versions of "
                         "the synthesiser: more variety without synthesising again)")
    ap.add_argument("--anatomy", default=str(ANATOMY))
    ap.add_argument("--install", action="store_true", help="copy the exported model into Resources/")
    ap.add_argument("--export-best", action="store_true",
                    help="do not train: export a stopped run's best validated weights to OUT/candidate.pt")
    ap.add_argument("--validate-model", action="append", default=[], metavar="MODEL",
                    help="do not train: the validation Dice of MODEL (a file or a registered name; repeatable) on "
                         "this run's validation cases, the baseline a run's figures are read against")
    args = ap.parse_args()
    started = time.monotonic()
    for flag in ("bone_fade_share", "short_view_share"):
        if not 0.0 <= getattr(args, flag) <= 1.0:
            ap.error(f"--{flag.replace('_', '-')} is a share of the patches, from 0 to 1, not {getattr(args, flag)}")
    if args.stop_after is not None and not args.stop_after > 0:
        ap.error(f"--stop-after must be a positive number of minutes, not {args.stop_after}")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            ap.error("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu or auto")

    out = Path(args.out)
    init = out / "parent.pt"  # a copy: --install replaces the bundled file the run started from
    out.mkdir(parents=True, exist_ok=True)
    if not init.is_file():
        shutil.copyfile(args.init, init)
    from BoneSegmentationLib.training.train import parent_architecture
    arch = parent_architecture(init)
    spacing = arch["spacing"]
    smooth = args.antialias
    train_jobs = ([("anatomy", 2001 + k, spacing, args.anatomy, smooth) for k in range(args.anatomy_cases)] +
                  [("anatomy_crop", 2501 + k, spacing, args.anatomy, smooth) for k in range(args.crop_cases)] +
                  [("phantom_real", 1001 + k, spacing, "", smooth) for k in range(args.phantoms)] +
                  [("phantom", 1101 + k, spacing, "", smooth) for k in range(args.plain_phantoms)])
    if any(2001 <= s < 2001 + args.anatomy_cases or 2501 <= s < 2501 + args.crop_cases for s in args.validation_seeds):
        ap.error("a validation seed is also a training seed (training uses 2001.. and 2501..)")
    val_jobs = ([("anatomy", s, spacing, args.anatomy, smooth) for s in args.validation_seeds] +
                [("phantom_real", 1000, spacing, "", smooth)])
    cfg = TrainConfig(
        out_dir=str(out), iterations=args.iterations, validate_every=args.validate_every, checkpoint_every=50,
        seed=args.seed,
        name=DEFAULT_MODEL, version=args.version, lr=args.lr, lr_schedule="poly", init_model=str(init),
        description=DESCRIPTION, group_weights={"anatomy": args.anatomy_share, "phantom": 1 - args.anatomy_share},
        hard_negative_share=args.hard_negative_share, bone_fade_share=args.bone_fade_share,
        short_view_share=args.short_view_share, antialias=smooth, train_only=tuple(args.train_only),
        parent_weight=args.parent_weight,
        device=args.device,
        data_description=(f"{args.anatomy_cases} images synthesised from real anatomy (seeds 2001..), "
                          + (f"{args.crop_cases} more as clinical crops (2501..), " if args.crop_cases else "")
                          + (f"the anatomy images cached by {', '.join(Path(f).name for f in args.extra_cases)} "
                             "(earlier versions of the synthesiser), " if args.extra_cases else "") +
                          f"{args.phantoms} phantoms with surroundings (1001..), {args.plain_phantoms} plain "
                          f"phantoms (1101..); validation: anatomy "
                          f"{'/'.join(map(str, args.validation_seeds))}, phantom 1000"),
        extra={"trained_on_synthetic_data_only": True, "anatomy_source": ATTRIBUTION,
               "recipe": "tools/train_real_ct_model.py " + " ".join(sys.argv[1:])},
        **arch)
    if args.export_best:
        export_candidate(cfg)
        return
    # a model read on the validation images needs no training images built (48 of them: ten minutes)
    cases = build_cases(out, val_jobs + ([] if args.validate_model else train_jobs), args.workers)
    val_cases = [cases[f"{k}_{s}"] for k, s, *_ in val_jobs]
    if args.validate_model:
        for name in args.validate_model:
            loaded = load_model(resolve_model(name, allow_download=False))
            if loaded.info.antialias != smooth:
                ap.error(f"{name} was trained {'with' if loaded.info.antialias else 'without'} anti-aliasing: "
                         f"validate it {'with' if loaded.info.antialias else 'without'} --antialias (its own "
                         "preprocessing), in a run folder of its own")
            per_case = validate_cases(loaded.module, val_cases, (cfg.patch,) * 3, default_table().num_classes, "cpu")
            print(f"{name}: validation Dice {np.mean(list(per_case.values())):.4f} ("
                  + ", ".join(f"{case} {dice:.4f}" for case, dice in per_case.items()) + ")")
        return
    train_cases = [cases[f"{k}_{s}"] for k, s, *_ in train_jobs] + extra_cases(args.extra_cases, smooth,
                                                                                  args.validation_seeds)
    print(f"{len(train_cases)} training images", flush=True)
    history = out / "history.jsonl"

    def log(record):
        write_history(history, record)
        if record["iteration"] % 25 == 0 or "val_dice" in record:
            print(json.dumps(record), flush=True)

    def out_of_time() -> bool:
        return args.stop_after is not None and time.monotonic() - started > 60 * args.stop_after

    path = train(cfg, train_cases, val_cases, log, should_stop=out_of_time)
    if path is None:  # stopped by --stop-after: resumable, and the best so far exported
        print(f"stopped after {args.stop_after:g} min; the same command resumes")
        export_candidate(cfg)
        return
    print(f"exported {path}")
    if args.install:
        install(path, args.version)


def export_candidate(cfg: TrainConfig) -> Path:
    """A stopped run's best validated weights (its last weights before any validation) as
    OUT/candidate.pt, for --export-best and for a run stopped by --stop-after."""
    net, best, history_records = resume_state(cfg)
    path = export_best(net, cfg, best, history_records, Path(cfg.out_dir) / "candidate.pt")
    training = read_metadata(path)["training"]
    print(f"exported {path} from iteration {training.get('best_iteration', training['iterations'])} of "
          f"{training['iterations']} done ({cfg.iterations} planned): "
          + (f"validation Dice {best:.4f}" if best >= 0 else "not validated yet"))
    return path


def install(path: Path, version: str) -> None:
    entry = install_bundled(path, DEFAULT_MODEL, version, "Synthetic-data model (real-anatomy synthesis + "
                            "phantoms); see the README for real-scan figures")
    print(f"installed {entry.bundled} ({entry.size / 2**20:.1f} MiB), sha256 {entry.sha256}", file=sys.stderr)


if __name__ == "__main__":
    main()

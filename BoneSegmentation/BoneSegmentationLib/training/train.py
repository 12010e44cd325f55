"""Training per the paper: No-New-Net, batch 1, Adam lr 1e-3, sparse CE + Dice, balanced patch
sampling, GPU augmentation; checkpoints with resume after a kill; export of the best model to
the self-describing file. Runs on one device or under ``torchrun`` (DistributedDataParallel)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import zipfile
import zlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.distributed as dist

from .. import __version__
from .augment import DESCRIPTION as AUGMENTATION, augment, fade_description, short_view_description, short_view_slices
from ..core.bones import default_table
from ..evaluation.metrics import dice_per_class
from ..core.labelmaps import label_counts
from .losses import parent_kl, sparse_ce_dice
from ..inference.mirror import can_mirror
from ..core.errors import BoneSegmentationError, ModelFileError
from ..core.files import atomic_write, atomic_write_text, safe_name, unpacked_bytes
from ..core.imageio import read_image
from ..model.metadata import DEFAULT_INTENSITY
from ..model.modelfile import load_model, make_metadata, read_metadata, save_model
from ..model.network import NoNewNet
from .corrections import labelled_mask
from .dataset import check_dataset, image_path, label_path, read_manifest
from ..inference.preprocess import normalise, padding_value, to_model_grid
from .sampling import PatchSampler, bright_background_locations, class_locations
from .plan import ARCHITECTURE_KEYS, TrainConfig, kfold_splits, parent_architecture  # noqa: F401 (re-exported)
from ..inference.sliding_window import fill_to_patch, predict_streaming

INTENSITY = DEFAULT_INTENSITY
MAX_CHECKPOINT_BYTES = 8 * 2 ** 30  # weights and the optimiser's two moments: a few times a model (28 MB here)


@dataclass
class Case:
    name: str
    image: np.ndarray  # normalised float32 at model spacing (z, y, x)
    labels: np.ndarray  # uint8 at model spacing
    labelled: Optional[np.ndarray] = None  # bool per class for a partially labelled case (see losses)
    group: str = ""  # the data source, for TrainConfig.group_weights


def prepare_case(name: str, ct: sitk.Image, labels: sitk.Image, spacing: float, antialias: bool = False) -> Case:
    """Resample CT (linear; smoothed first with ``antialias``, as inference will for the model) and
    labels (nearest) to the model grid, normalise HU."""
    grid = to_model_grid(ct, (spacing,) * 3, smooth=antialias)
    lab = sitk.Resample(sitk.DICOMOrient(labels, "LPS"), grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                        sitk.sitkUInt8)
    image = normalise(grid, **{k: INTENSITY[k] for k in ("clip_low", "clip_high", "mean", "std")}).numpy()
    return Case(name, image, sitk.GetArrayFromImage(lab))


def load_dataset(folder: Path, spacing: float, ids: Optional[list[str]] = None) -> list[Case]:
    """Cases of an nnU-Net style folder (checked against the bone table), at model spacing."""

    folder = Path(folder)
    ids = ids if ids is not None else check_dataset(folder)
    cases = []
    for i in ids:
        case = prepare_case(i, read_image(image_path(folder, i)), read_image(label_path(folder, i)),
                            spacing)
        case.labelled = labelled_mask(read_manifest(folder, i))
        cases.append(case)
    return cases


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def load_checkpoint(path: Path, device) -> dict:
    """A checkpoint's tensors and plain values; a pickle that asks for anything else (a function
    to call, a class to build) is refused instead of run, a damaged file named."""
    try:
        with zipfile.ZipFile(path) as zf:  # torch does not check the members' CRCs: flipped bytes load
            unpacked = unpacked_bytes(zf)
            if unpacked > MAX_CHECKPOINT_BYTES:
                raise BoneSegmentationError(f"{path} is refused: its members unpack to {unpacked / 2 ** 30:,.1f} GiB, "
                                            f"more than the {MAX_CHECKPOINT_BYTES / 2 ** 30:g} GiB a checkpoint may "
                                            "hold; delete it to start the run over")
            broken = zf.testzip()
        if broken is not None:
            raise BoneSegmentationError(f"{path} is corrupt ({broken} fails its checksum); delete it to start the "
                                        "run over")
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise BoneSegmentationError(f"{path} is refused: it holds objects other than tensors and plain values "
                                    "(a checkpoint must not run code); delete it to start the run over") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise BoneSegmentationError(f"{path} is corrupt or incomplete ({first}); delete it to start the run "
                                    "over") from None


def _check_architecture(ckpt: dict, cfg: TrainConfig, ckpt_path: Path) -> None:
    """A run resumes with the network, the preprocessing, the learning stages and the parent term
    it started with: weights trained on smoothed cases go on with smoothed cases (checkpoints from
    before ``antialias``: unsmoothed; before ``train_only`` and ``parent_weight``: all, none)."""
    old = {k: ckpt["config"].get(k) for k in ARCHITECTURE_KEYS} | {"antialias": ckpt["config"].get("antialias", False),
                                                                   "train_only": tuple(ckpt["config"].get("train_only", ())),
                                                                   "parent_weight": ckpt["config"].get("parent_weight", 0.0)}
    if old != {k: tuple(getattr(cfg, k)) if k == "train_only" else getattr(cfg, k)
               for k in (*ARCHITECTURE_KEYS, "antialias", "train_only", "parent_weight")}:
        raise BoneSegmentationError(f"{ckpt_path} was trained with {old}; resume with the same settings "
                                    "or use another output folder")


def _atomic_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def build_network(cfg: TrainConfig, num_classes: int) -> NoNewNet:
    """A fresh No-New-Net, or the parent model's weights when fine-tuning (``init_model``)."""
    net = NoNewNet(num_classes, base_features=cfg.width, levels=cfg.levels)
    if cfg.init_model:
        parent = load_model(Path(cfg.init_model))
        try:
            net.load_state_dict(parent.module.state_dict(), strict=True)
        except RuntimeError:
            raise ModelFileError(f"cannot fine-tune from {cfg.init_model}: its network ({parent.metadata['network']}) "
                                 f"differs from width={cfg.width}, levels={cfg.levels}; take them from the parent "
                                 "(the CLI does this when --init is given)") from None
    return net


def parent_network(cfg: TrainConfig, num_classes: int, device: torch.device) -> Optional[NoNewNet]:
    """The parent model, frozen, whose output ``cfg.parent_weight`` holds the network to
    (``losses.parent_kl``); None when the weight is 0. Read from ``init_model`` again, so a resumed
    run compares with the parent, not with the weights it resumed from."""
    if cfg.parent_weight <= 0:
        return None
    if not cfg.init_model:
        raise BoneSegmentationError("parent_weight needs a parent model to hold the network to (init_model)")
    parent = build_network(cfg, num_classes).to(device).eval()
    parent.requires_grad_(False)
    return parent


def in_stage(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` belongs to the stage ``prefix`` ("encoders.0" holds
    "encoders.0.0.conv.weight", not "encoders.01...")."""
    return name == prefix or name.startswith(prefix + ".")


def learning_parameters(net: torch.nn.Module, train_only: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """The parameters a run trains: those of the stages ``train_only`` names (all when empty);
    the rest are frozen. Meant for fine-tuning only the full-resolution stages, which read local
    appearance, while the coarse stages' whole-body reading (which vertebra is which) stays the
    parent's (run 47: it kept the real abdomen's levels, not its lumbar Dice). A prefix that
    names no parameter is refused."""
    names = [n for n, _ in net.named_parameters()]
    unknown = [prefix for prefix in train_only if not any(in_stage(n, prefix) for n in names)]
    if unknown:
        stages = dict.fromkeys(".".join(n.split(".")[:2]) if n.split(".")[0] in ("encoders", "decoders")
                               else n.split(".")[0] for n in names)  # in the network's order
        raise BoneSegmentationError(f"train_only names no parameter: {', '.join(unknown)}; the network's stages are "
                                    f"{', '.join(stages)}")
    learning = []
    for name, parameter in net.named_parameters():
        learns = not train_only or any(in_stage(name, prefix) for prefix in train_only)
        parameter.requires_grad_(learns)
        if learns:
            learning.append(parameter)
    return learning


def weights_digest(net: torch.nn.Module) -> str:
    """SHA-256 of all parameters and buffers, to check that DDP ranks hold identical weights."""
    h = hashlib.sha256()
    for key, value in net.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_run_folder(out: Path, name: str, caller_files: tuple[str, ...] = ()) -> None:
    """Before any work: a folder that holds no ``checkpoint.pt`` (no run of its own to resume) and
    already holds a file the run would write (its model ``<name>.pt``, ``best.pt``, or the caller's
    ``caller_files``: the command line's ``split.json`` and ``history.jsonl``) is someone else's
    folder; the run must not replace their files (``train -o Resources`` would have replaced the
    bundled model)."""
    if (out / "checkpoint.pt").is_file():
        return
    held = [f for f in (f"{name}.pt", "best.pt", *caller_files) if (out / f).exists()]
    if held:
        raise BoneSegmentationError(f"{out} already holds {', '.join(held)} and no training run to resume "
                                    "(no checkpoint.pt); give the run an empty folder of its own")


def train(cfg: TrainConfig, train_cases: list[Case], val_cases: list[Case],
          log: Callable[[dict], None] = lambda r: None,
          should_stop: Callable[[], bool] = lambda: False) -> Optional[Path]:
    """Train (resuming from ``out_dir/checkpoint.pt`` if present); returns the exported model, or
    None when ``should_stop`` asked to stop (the checkpoint is saved first, so a later call resumes)."""
    safe_name(cfg.name, "model name")
    safe_name(cfg.version, "model version")
    rank, world = _distributed()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    out = Path(cfg.out_dir)
    check_run_folder(out, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    table = default_table()
    num_classes = table.num_classes
    torch.manual_seed(cfg.seed)
    net = build_network(cfg, num_classes).to(device)
    learning = learning_parameters(net, tuple(cfg.train_only))  # frozen before DDP registers them
    parent = parent_network(cfg, num_classes, device)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    optim = torch.optim.Adam(learning, lr=cfg.lr)
    start, best, history = 0, -1.0, []
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, device)
        _check_architecture(ckpt, cfg, ckpt_path)
        net.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optimizer"])
        start, best, history = ckpt["iteration"], ckpt["best_dice"], ckpt["history"]
        if "torch_rng" in ckpt:  # checkpoints of code before 0.1.1 hold no random streams
            torch.set_rng_state(ckpt["torch_rng"])
    rng = np.random.default_rng(cfg.seed + 1000 * rank)
    locs = [class_locations(c.labels, num_classes, rng) for c in train_cases]
    patch = (cfg.patch,) * 3
    hard = None
    if cfg.hard_negative_share > 0:
        bright = (cfg.hard_negative_hu - INTENSITY["mean"]) / INTENSITY["std"]  # in the normalised image's units
        hard = [bright_background_locations(c.image, c.labels, bright, rng) for c in train_cases]
    sampler = PatchSampler([c.labels.shape for c in train_cases], locs, patch, cfg.sampling,
                           seed=cfg.seed + 7 * start + 1000 * rank,
                           groups=[c.group for c in train_cases], group_weights=cfg.group_weights or None,
                           hard_negatives=hard, hard_negative_share=cfg.hard_negative_share)  # (single process: restored below)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    if ckpt_path.is_file() and world == 1 and "sampler_rng" in ckpt:  # random streams continue exactly
        sampler.rng.bit_generator.state = ckpt["sampler_rng"]
        gen.set_state(ckpt["augment_rng"])
    t0 = time.perf_counter()
    for it in range(start, cfg.iterations):
        model.train()
        if cfg.lr_schedule == "poly":
            for group in optim.param_groups:
                group["lr"] = cfg.lr * (1 - it / cfg.iterations) ** 0.9
        case_i, corner, _ = sampler.draw()
        case = train_cases[case_i]
        short = short_view_slices(gen, cfg.short_view_share if cfg.augment else 0.0, cfg.spacing, patch[0])
        img, lab = _crop(case, corner, patch, short)
        x = torch.from_numpy(img)[None, None].to(device)
        y = torch.from_numpy(lab.astype(np.int64))[None].to(device)
        if cfg.augment:
            x, y = augment(x, y, gen, fade_share=cfg.bone_fade_share)
        labelled = None if case.labelled is None else torch.from_numpy(case.labelled)
        logits = model(x)
        loss = sparse_ce_dice(logits, y, labelled)
        if parent is not None:
            with torch.no_grad():
                parent_logits = parent(x)
            loss = loss + cfg.parent_weight * parent_kl(logits, parent_logits)
        del logits
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        record = {"iteration": it + 1, "loss": float(loss.detach()), "seconds": time.perf_counter() - t0}
        if val_cases and ((it + 1) % cfg.validate_every == 0 or it + 1 == cfg.iterations):
            per_case = validate_cases(net, val_cases, patch, num_classes, device)
            record["val_dice"] = float(np.mean(list(per_case.values())))
            record["val_cases"] = {name: round(v, 4) for name, v in per_case.items()}
            if record["val_dice"] > best:
                best = record["val_dice"]
                if rank == 0:
                    _atomic_save(net.state_dict(), out / "best.pt")
        history.append(record)
        stop = _agree(should_stop(), world)
        if rank == 0:
            log(record)
            if stop or (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
                _atomic_save({"model": net.state_dict(), "optimizer": optim.state_dict(), "iteration": it + 1,
                              "best_dice": best, "history": history, "config": asdict(cfg),
                              "sampler_rng": sampler.rng.bit_generator.state, "augment_rng": gen.get_state(),
                              "torch_rng": torch.get_rng_state()}, ckpt_path)
        if stop:
            if world > 1:
                dist.barrier()
            return None
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, weights_digest(net))
        if rank == 0:
            log({"iteration": len(history) and history[-1]["iteration"], "ranks_weights_sha256": digests})
        if len(set(digests)) != 1:
            raise RuntimeError(f"DistributedDataParallel ranks ended with different weights: {digests}")
    if rank == 0:
        path = export_best(net.cpu(), cfg, best, history, out / f"{cfg.name}.pt")
    else:
        path = out / f"{cfg.name}.pt"
    if world > 1:
        dist.barrier()
    return path


def _agree(flag: bool, world: int) -> bool:
    """True on every rank if any rank says so (a Stop must stop all ranks at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _crop(case: Case, corner, patch, short: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Patch at ``corner``; where the case is shorter than the patch it is filled as inference
    fills it (``fill_to_patch``: mirrored head to foot, air / background across the body).
    ``short``: only that many of the patch's slices in the case, about their middle, are taken,
    the rest filled the same way: the patch seen as a short scan (``augment.short_view_slices``)."""
    sl = tuple(slice(int(c), int(c) + p) for c, p in zip(corner, patch))
    depth = min(patch[0], case.image.shape[0] - int(corner[0]))  # a short case holds fewer than the patch
    if short is not None and short < depth:
        z = int(corner[0]) + (depth - short) // 2
        sl = (slice(z, z + short),) + sl[1:]
    img, lab = case.image[sl], case.labels[sl]
    if img.shape != tuple(patch):
        img, _ = fill_to_patch(img, patch, padding_value(INTENSITY))
        lab, _ = fill_to_patch(lab, patch, 0)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def validate_cases(net: torch.nn.Module, cases: list[Case], patch, num_classes: int, device) -> dict[str, float]:
    """Per validation case, the mean Dice over the bones present (and labelled) in its reference;
    their mean picks the best weights. With three cases the mean swings by 0.05 between checks,
    and the history should show which view moved it."""
    net.eval()
    scores = {}
    for case in cases:
        pred = predict_streaming(net, torch.from_numpy(case.image), num_classes, patch, overlap=0.25,
                                 device=device, pad_value=padding_value(INTENSITY)).labels
        d = dice_per_class(pred, case.labels, num_classes)[1:]
        present = label_counts(case.labels, num_classes)[1:] > 0
        if case.labelled is not None:
            present &= case.labelled[1:]
        scores[case.name] = float(np.nan_to_num(d[present]).mean())
    return scores


def export_best(net: NoNewNet, cfg: TrainConfig, best_dice: float, history: list[dict], path: Path) -> Path:
    """Export the run's best validated weights (``out_dir/best.pt``; the weights in ``net`` when no
    validation has run), naming the iteration they come from. Used at the end of a run and, on a
    stopped run, by ``tools/train_real_ct_model.py --export-best``."""
    best_path = Path(cfg.out_dir) / "best.pt"
    if best_path.is_file():
        net.load_state_dict(load_checkpoint(best_path, torch.device("cpu")))
    validated = [r for r in history if r.get("val_dice") == best_dice]
    return export(net.cpu(), cfg, best_dice, len(history) and history[-1]["iteration"], path,
                  best_iteration=validated[0]["iteration"] if validated else None)


def resume_state(cfg: TrainConfig) -> tuple[NoNewNet, float, list[dict]]:
    """The network, best validation Dice and history of a stopped run, from its checkpoint (the
    architecture checked against ``cfg``, as a resume does)."""
    ckpt_path = Path(cfg.out_dir) / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise BoneSegmentationError(f"{ckpt_path} not found: no run to export from; start the run first")
    ckpt = load_checkpoint(ckpt_path, torch.device("cpu"))
    _check_architecture(ckpt, cfg, ckpt_path)
    net = build_network(cfg, default_table().num_classes)
    net.load_state_dict(ckpt["model"])
    return net, ckpt["best_dice"], ckpt["history"]


def export(net: NoNewNet, cfg: TrainConfig, best_dice: float, iterations: int, path: Path,
           best_iteration: int | None = None) -> Path:
    """The exported weights are the best validated ones (best.pt) when there are any: best_iteration says which."""
    training = {"data": cfg.data_description, "iterations": iterations, "best_validation_dice": round(best_dice, 4),
                **({"best_iteration": best_iteration} if best_iteration else {}),
                "date": _dt.date.today().isoformat(), "code_version": __version__,
                "sampling": cfg.sampling + (f", {cfg.hard_negative_share:g} of patches centred on background brighter "
                                            f"than {cfg.hard_negative_hu:g} HU" if cfg.hard_negative_share else ""),
                "augmentation": (AUGMENTATION + (f"; {fade_description(cfg.bone_fade_share)}" if cfg.bone_fade_share
                                                 else "")
                                 + (f"; {short_view_description(cfg.short_view_share)}" if cfg.short_view_share
                                    else "")) if cfg.augment else "none",
                "optimizer": f"Adam lr {cfg.lr} ({cfg.lr_schedule}), batch 1",
                "loss": "cross-entropy + soft Dice over all classes, no numerator smooth", "parent_model": _describe_parent(cfg.init_model), **cfg.extra}
    mirror = can_mirror(default_table().names())
    if mirror:
        training["inference_mirror"] = ("left-right mirror averaging on by default (metadata inference.mirror): "
                                        "every left bone has its right partner")
    meta = make_metadata(name=cfg.name, version=cfg.version, description=cfg.description,
                         network={"architecture": "NoNewNet", "base_features": cfg.width, "levels": cfg.levels,
                                  "size_divisor": 2 ** (cfg.levels - 1)},
                         training=training, spacing_mm=cfg.spacing, patch_size=cfg.patch, intensity=INTENSITY,
                         mirror=mirror, antialias=cfg.antialias)
    return save_model(net.eval(), meta, path)


def _describe_parent(model_path: Optional[str]) -> str:
    """A fine-tuned model names its parent by name, version and SHA-256, not by a local path
    that means nothing on another machine."""
    if not model_path:
        return ""
    meta = read_metadata(Path(model_path))
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    return f"{meta.get('name', '?')} {meta.get('version', '?')} (sha256 {digest[:12]})"


def write_history(history_path: Path, record: dict) -> None:
    """Append one record to the JSON-lines history. A training step at or before the last one
    written means the run resumed from an earlier checkpoint: the lines it repeats are dropped
    first, so every iteration appears once."""
    history_path = Path(history_path)
    step = record.get("iteration") if "loss" in record else None
    if step is not None and history_path.is_file() and _last_step(history_path) >= step:
        kept = [line for line in history_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("iteration", -1) < step]
        atomic_write_text(history_path, "".join(line + "\n" for line in kept))
    with open(history_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _last_step(history_path: Path) -> int:
    with open(history_path, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 4096))
        lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in record:
            return int(record.get("iteration", -1))
    return -1

"""The main job on the embedded default: phantom CT -> bundled model -> labels, confidence,
evaluation table and a PNG overview."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from ..core.bones import default_table
from ..core.errors import BoneSegmentationError
from ..evaluation.metrics import Evaluation, boxplot_png, evaluate_images, markdown_table, write_csv
from ..core.files import atomic_write, atomic_write_text
from ..core.imageio import write_image
from ..model.modelfile import load_model
from .phantom import DEMO_SEED, PhantomSpec, make_phantom
from ..inference.review import ReviewItem, summary_lines, write_review
from ..model.registry import resolve_model
from ..inference.options import InferenceOptions
from ..inference.segmenter import SIDECAR_FORMAT, Segmenter, found_classes, write_sidecar


@dataclass(frozen=True)
class DemoRun:
    """What the demo wrote and measured, for the command line to print."""

    files: dict[str, Path]  # output kind (ct, labels, evaluation, ...) -> file written
    evaluation: Evaluation
    timings: dict[str, float]
    spec: PhantomSpec
    found: list[int]  # label values present in the output
    review: list[ReviewItem]
    synthetic_only: bool  # the model's metadata says it never saw a real CT


#: What the demo writes in its folder, by kind: the names an earlier demo's run may be replaced under.
FILE_NAMES = {"ct": "phantom_ct.nii.gz", "reference": "phantom_reference_labels.nii.gz", "labels": "bones.nii.gz",
              "confidence": "confidence.nii.gz", "report": "evaluation.md", "evaluation": "evaluation.csv",
              "boxplot": "evaluation.png", "review": "review.json", "overview": "overview.png",
              "sidecar": "bones.json"}
INPUT_NAME = "phantom seed {seed} at {spacing:g} mm"  # the sidecar's input name: how a demo folder is told
SIDECAR_LIMIT = 1 << 20  # bytes of a sidecar read to tell whether the demo wrote it


def check_demo_folder(out: Path, overwrite: bool = False) -> None:
    """Before any work: ``out`` is a folder (or not there yet) that holds none of the demo's file
    names, or an earlier demo's outputs (its sidecar says so), unless ``overwrite``. Why: the names
    are common ones (``bones.nii.gz``, ``review.json``), and ``demo -o`` pointed at a folder of
    the user's own results must not replace them."""
    if out.exists() and not out.is_dir():
        raise BoneSegmentationError(f"{out} is a file, not a folder; give the demo a folder to write to")
    existing = [name for name in FILE_NAMES.values() if (out / name).exists()]
    if not existing or overwrite or _written_by_the_demo(out / FILE_NAMES["sidecar"]):
        return
    raise BoneSegmentationError(f"{out} already holds {', '.join(existing)}, not written by the demo; choose "
                                "another folder or pass --overwrite to replace them")


def _written_by_the_demo(sidecar: Path) -> bool:
    """Whether ``sidecar`` is a demo's record (read as untrusted: a capped size, any damage is no)."""
    try:
        if sidecar.stat().st_size > SIDECAR_LIMIT:
            return False
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        kind, name = record["format"], record["input"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return kind == SIDECAR_FORMAT and isinstance(name, str) and name.startswith(INPUT_NAME.split("{")[0])


def run_demo(out_dir: Path, model: Optional[str] = None, seed: int = DEMO_SEED, spacing: float = 2.0,
             options: Optional[InferenceOptions] = None,
             progress: Optional[Callable[[float, str], None]] = None, overwrite: bool = False) -> DemoRun:
    """Phantom CT -> the model -> every output in ``out_dir`` (see ``FILE_NAMES``); a folder holding
    other files of those names is refused unless ``overwrite`` (``check_demo_folder``)."""
    options = options or InferenceOptions()
    out = Path(out_dir)
    check_demo_folder(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    names = {kind: out / name for kind, name in FILE_NAMES.items()}
    ct, reference, spec = make_phantom(seed, spacing=spacing, partial=False)
    loaded = load_model(resolve_model(model))
    segmenter = Segmenter(loaded, options)
    result = segmenter.segment(ct, progress=progress)
    files = {
        "ct": write_image(ct, names["ct"], overwrite=True),
        "reference": write_image(reference, names["reference"], overwrite=True),
        "labels": write_image(result.labels, names["labels"], overwrite=True),
        "confidence": write_image(result.confidence, names["confidence"], overwrite=True),
    }
    evaluation = evaluate_images(result.labels, reference)
    table_md = markdown_table(evaluation)
    report = (f"# Demo evaluation (phantom seed {seed})\n\nModel: {loaded.label} — "
              f"{loaded.metadata['description']}\n\nInference: left-right mirror averaging "
              f"{'on' if result.mirrored else 'off'}, stitch {options.stitch}, overlap {options.overlap:g}, "
              f"device {result.device}.\n\n{table_md}")
    files["report"] = atomic_write_text(names["report"], report)
    files["evaluation"] = write_csv(evaluation, names["evaluation"])
    files["boxplot"] = boxplot_png(evaluation, names["boxplot"], title=f"Demo, phantom seed {seed}")
    files["review"] = write_review(result.review, names["review"], model=loaded.label, overwrite=True)
    everything = evaluation.group("all")
    files["overview"] = overview_png(ct, result.labels, names["overview"], result.review,
                                     detected=(everything.detected, everything.present))
    files["sidecar"] = write_sidecar(names["sidecar"], segmenter.record(
        result, ct, input_name=INPUT_NAME.format(seed=seed, spacing=spacing),
        outputs={k: str(v) for k, v in files.items()}))
    return DemoRun(files=files, evaluation=evaluation, timings=result.timings, spec=spec,
                   found=found_classes(result.labels), review=result.review,
                   synthetic_only=loaded.info.trained_on_synthetic_data_only)


LEGEND_FONT = 8.0  # points: about 12 px at the PNG's 110 dpi
SLICE_LABELS = 6  # the largest bones of each slice are named on it


def overview_png(ct: sitk.Image, labels: sitk.Image, path: Path, review: Optional[list[ReviewItem]] = None,
                 detected: Optional[tuple[int, int]] = None) -> Path:
    """Write :func:`overview_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = overview_figure(ct, labels, review, detected)

    def save(tmp: Path) -> None:
        fig.savefig(tmp, dpi=110, format="png")
    try:
        return atomic_write(Path(path), save, suffix=".png")
    finally:
        plt.close(fig)


def legend_by_region(labels: sitk.Image) -> list[tuple[str, list]]:
    """The bones present in ``labels``, grouped by their region in the bone table's order."""
    table = default_table()
    groups: dict[str, list] = {}
    for index in found_classes(labels):
        bone = table[index]
        groups.setdefault(bone.region, []).append(bone)
    order = list(dict.fromkeys(b.region for b in table.foreground()))
    return [(region, groups[region]) for region in order if region in groups]


def overview_figure(ct: sitk.Image, labels: sitk.Image, review: Optional[list[ReviewItem]] = None,
                    detected: Optional[tuple[int, int]] = None):
    """Axial, coronal and sagittal slices with coloured labels over the CT and the largest bones of
    each slice named on it; below, a legend of the bones found (grouped by region, in a legible
    size) and the bones to review first with their reasons in full. ``detected``: (bones that
    overlap a reference, bones in the reference), when there is one."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patheffects as effects
    import matplotlib.pyplot as plt

    table = default_table()
    c = sitk.GetArrayFromImage(sitk.DICOMOrient(ct, "LPS")).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.DICOMOrient(labels, "LPS"))
    sx, sy, sz = sitk.DICOMOrient(ct, "LPS").GetSpacing()
    colours = np.array([b.rgb for b in table], dtype=np.float32) / 255
    bone = np.argwhere(lab > 0)
    zc, yc, xc = (bone.mean(0).astype(int) if len(bone) else np.array(lab.shape) // 2)
    views = [("axial", c[zc], lab[zc], sy / sx), ("coronal", c[:, yc][::-1], lab[:, yc][::-1], sz / sx),
             ("sagittal", c[:, :, xc][::-1], lab[:, :, xc][::-1], sz / sy)]

    groups = legend_by_region(labels)
    found = sum(len(bones) for _, bones in groups)
    review_lines = [f"{k + 1}. {line}" for k, line in enumerate(summary_lines(review or [], limit=12))]
    wrapped = [textwrap.fill(line, 150, subsequent_indent="     ") for line in review_lines]
    columns = 5
    legend_rows = int(np.ceil((found + 2 * len(groups)) / columns)) + 1
    review_rows = sum(w.count("\n") + 1 for w in wrapped) + 2 if review is not None else 0
    row_inch = LEGEND_FONT * 1.55 / 72
    heights = [6.5, legend_rows * row_inch + 0.4, review_rows * row_inch + 0.2]
    fig = plt.figure(figsize=(16, sum(heights) + 0.8))
    grid = fig.add_gridspec(3, 3, height_ratios=heights, hspace=0.06, top=1 - 0.5 / sum(heights), bottom=0.01,
                            left=0.02, right=0.98, wspace=0.04)
    title = f"{found} of {table.num_classes - 1} bones labelled"
    if detected is not None:
        title += f"; {detected[0]} of {detected[1]} overlap the reference"
    fig.suptitle(title, fontsize=13, y=0.995)

    stroke = [effects.withStroke(linewidth=2.2, foreground="white")]
    for k, (name, img, l, aspect) in enumerate(views):
        ax = fig.add_subplot(grid[0, k])
        grey = np.clip((img + 300) / 1800, 0, 1)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        mask = l > 0
        rgb[mask] = 0.35 * rgb[mask] + 0.65 * colours[l[mask]]
        ax.imshow(rgb, aspect=aspect)
        ax.set_title(name, fontsize=11)
        ax.axis("off")
        values, counts = np.unique(l[mask], return_counts=True)
        placed: list[tuple[int, int]] = []
        for value in values[np.argsort(counts)[::-1]]:
            rows, cols = np.nonzero(l == value)
            pick = np.argmin(np.abs(rows - np.median(rows)) + np.abs(cols - np.median(cols)))  # a pixel of the bone
            at = (int(rows[pick]), int(cols[pick]))
            if any(abs(at[0] - r) * aspect < 0.05 * l.shape[0] * aspect and abs(at[1] - c) < 0.3 * l.shape[1]
                   for r, c in placed):
                continue  # would overlap a name already there
            ax.text(at[1], at[0], _short(table[int(value)].display_name), fontsize=LEGEND_FONT,
                    ha="center", va="center", path_effects=stroke)
            placed.append(at)
            if len(placed) == SLICE_LABELS:
                break

    legend = fig.add_subplot(grid[1, :])
    legend.axis("off")
    legend.set_xlim(0, columns)
    legend.set_ylim(legend_rows, 0)
    entries: list[tuple[str, Optional[int]]] = []
    for region, bones in groups:
        if entries and len(entries) % legend_rows:
            entries.append(("", None))
        entries.append((f"{region.replace('_', ' ')} ({len(bones)})", None))
        entries += [(b.display_name if len(b.display_name) <= 40 else _short(b.display_name), b.index)
                    for b in bones]
    for k, (text, index) in enumerate(entries):
        col, row = divmod(k, legend_rows)
        if index is None:
            legend.text(col + 0.02, row + 0.5, text, fontsize=LEGEND_FONT + 1, weight="bold", va="center")
        else:
            legend.add_patch(plt.Rectangle((col + 0.02, row + 0.15), 0.05, 0.7, color=colours[index]))
            legend.text(col + 0.09, row + 0.5, text, fontsize=LEGEND_FONT, va="center")

    if review is not None:
        box = fig.add_subplot(grid[2, :])
        box.axis("off")
        text = "Review these bones first:\n" + ("\n".join(wrapped) if wrapped else "none flagged")
        box.text(0.0, 1.0, text, fontsize=LEGEND_FONT, va="top", ha="left", transform=box.transAxes,
                 bbox={"facecolor": "#fff4e0", "edgecolor": "#d08000"})
    return fig


def _short(display_name: str) -> str:
    """A slice label: the name without its parenthesised explanation."""
    return display_name.split(" (")[0]

"""Evaluation per the paper: per-bone Dice, group medians with 16th/84th percentiles, detection
ratio (bones with Dice > 0; Dice 0 excluded from the medians), and foreground Dice of all bone
versus background computed from the background class alone."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.bones import EVAL_GROUPS, BoneTable, default_table
from ..core.files import atomic_write, atomic_write_text
from ..core.errors import InputImageError
from ..core.labelmaps import bone_label_counts, label_counts

GROUPS = EVAL_GROUPS + ("all",)


def dice_per_class(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice per class (NaN where the class is absent in both)."""
    idx = ref.astype(np.int64) * num_classes + pred.astype(np.int64)
    conf = np.bincount(idx.ravel(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    inter = np.diag(conf).astype(float)
    denom = conf.sum(0) + conf.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * inter / denom, np.nan)


@dataclass
class GroupRow:
    group: str
    median: float
    p16: float
    p84: float
    detected: int
    present: int

    @property
    def detection_ratio(self) -> float:
        return self.detected / self.present if self.present else float("nan")


@dataclass(frozen=True)
class Evaluation:
    """The paper's table for one case, or for several pooled (``cases``): what every report,
    CSV and plot of this package reads."""

    groups: list[GroupRow]
    per_bone: dict[str, float]  # Dice per bone the reference holds (machine name)
    foreground_dice: float  # all bone against background; NaN for a partially labelled reference
    cases: int = 1

    def group(self, name: str) -> GroupRow:
        """The row of one of ``GROUPS``."""
        try:
            return next(r for r in self.groups if r.group == name)
        except StopIteration:
            raise KeyError(f"'{name}' is not an evaluation group ({', '.join(GROUPS)})") from None

    def medians(self) -> dict[str, float]:
        """Median Dice per group, by group name."""
        return {r.group: r.median for r in self.groups}


def evaluate_arrays(pred: np.ndarray, ref: np.ndarray, table: BoneTable | None = None,
                    labelled: np.ndarray | None = None, ref_counts: np.ndarray | None = None) -> Evaluation:
    """``labelled`` (bool per class): a partially labelled reference, scored on those bones only.
    ``ref_counts``: the reference's voxels per value where the caller has counted them already."""
    table = table or default_table()
    n = table.num_classes
    dice = dice_per_class(pred, ref, n)
    counts = label_counts(ref, n) if ref_counts is None else ref_counts
    present = np.zeros(n, bool)
    present[:min(n, len(counts))] = counts[:n] > 0
    if labelled is not None:
        present &= labelled
        fg = float("nan")  # unchecked bones make "all bone vs background" meaningless
    else:
        fg_pred, fg_ref = pred != 0, ref != 0  # all bone vs background, from the background label alone
        fg = 2 * np.count_nonzero(fg_pred & fg_ref) / max(1, np.count_nonzero(fg_pred) + np.count_nonzero(fg_ref))
    per_bone = {table[i].name: float(dice[i]) for i in range(1, n) if present[i]}
    return Evaluation(group_rows([per_bone], table), per_bone, float(fg))


def group_rows(per_bone_results: list[dict[str, float]], table: BoneTable | None = None) -> list[GroupRow]:
    """Group statistics over every (case, bone) Dice of the given per-bone results."""
    table = table or default_table()
    rows = []
    for group in GROUPS:
        names = {b.name for b in table.group_members(group)}
        d = np.array([v for per_bone in per_bone_results for k, v in per_bone.items() if k in names])
        detected = d[d > 0]
        if len(detected):
            med, p16, p84 = np.median(detected), np.percentile(detected, 16), np.percentile(detected, 84)
        else:
            med = p16 = p84 = float("nan")
        rows.append(GroupRow(group, float(med), float(p16), float(p84), int(len(detected)), len(d)))
    return rows


def pool_results(results: list[Evaluation], table: BoneTable | None = None) -> Evaluation:
    """Several cases as one table: each bone of each case is one sample, as in the paper."""
    bones = sorted({k for r in results for k in r.per_bone})
    per_bone = {k: float(np.mean([r.per_bone[k] for r in results if k in r.per_bone])) for k in bones}
    fg = [r.foreground_dice for r in results if not np.isnan(r.foreground_dice)]
    return Evaluation(group_rows([r.per_bone for r in results], table), per_bone,
                      float(np.mean(fg)) if fg else float("nan"), cases=len(results))


def side_by_side_table(results: dict[str, Evaluation]) -> str:
    """The paper's table for several models next to each other (one column pair per model)."""
    names = list(results)
    head = "| group | " + " | ".join(f"{n}: median [16th-84th] | {n}: detected" for n in names) + " |"
    lines = [head, "|---|" + "---|---|" * len(names)]
    for k, group in enumerate(GROUPS):
        cells = []
        for n in names:
            r = results[n].groups[k]
            cells += [f"{r.median:.3f} [{r.p16:.3f}-{r.p84:.3f}]", f"{r.detected}/{r.present}"]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines.append("| foreground (all bone) | " + " | ".join(f"{results[n].foreground_dice:.3f} | " for n in names) + "|")
    return "\n".join(lines) + "\n"


def evaluate_images(pred: sitk.Image, ref: sitk.Image, table: BoneTable | None = None) -> Evaluation:
    """Compare label maps by physical position (the prediction is resampled onto the reference).
    Both must hold the bone table's values: a float map or a value beyond the table is refused,
    not scored as missing bones."""
    table = table or default_table()
    bone_label_counts(sitk.GetArrayViewFromImage(pred), table.num_classes, "the prediction", InputImageError)
    ref_counts = bone_label_counts(sitk.GetArrayViewFromImage(ref), table.num_classes, "the reference", InputImageError)
    pred = sitk.Resample(pred, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return evaluate_arrays(sitk.GetArrayViewFromImage(pred), sitk.GetArrayViewFromImage(ref), table,
                           ref_counts=ref_counts)


def markdown_table(result: Evaluation) -> str:
    lines = ["| group | median Dice | 16th pct | 84th pct | detected / present |", "|---|---|---|---|---|"]
    for r in result.groups:
        lines.append(f"| {r.group} | {r.median:.3f} | {r.p16:.3f} | {r.p84:.3f} | {r.detected}/{r.present} |")
    lines.append(f"\nForeground Dice (all bone vs background): {result.foreground_dice:.3f}")
    return "\n".join(lines) + "\n"


def write_csv(result: Evaluation, path: Path) -> Path:
    """The group table, then Dice per bone; written whole or not at all (an interrupted write
    leaves the previous file)."""
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(["group", "median", "p16", "p84", "detected", "present", "detection_ratio"])
    for r in result.groups:
        w.writerow([r.group, f"{r.median:.4f}", f"{r.p16:.4f}", f"{r.p84:.4f}", r.detected, r.present,
                    f"{r.detection_ratio:.4f}"])
    w.writerow([])
    w.writerow(["bone", "dice"])
    for name, d in result.per_bone.items():
        w.writerow([name, f"{d:.4f}"])
    return atomic_write_text(Path(path), out.getvalue())


def boxplot_png(result: Evaluation, path: Path, title: str = "Per-bone Dice by group",
                table: BoneTable | None = None) -> Path:
    """Box plot of per-bone Dice per group (box: quartiles, whiskers: 16th/84th percentiles as in
    the paper's table; Dice 0, i.e. undetected bones, drawn as crosses at the bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table or default_table()
    data, missed, labels = [], [], []
    for row in result.groups:
        members = {b.name for b in table.group_members(row.group)}
        values = [d for name, d in result.per_bone.items() if name in members]
        data.append([d for d in values if d > 0] or [np.nan])
        missed.append(sum(1 for d in values if d == 0))
        labels.append(f"{row.group}\n{row.detected}/{row.present} detected")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.boxplot(data, whis=(16, 84), showfliers=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    for k, m in enumerate(missed, start=1):
        if m:
            ax.plot([k] * m, [0.0] * m, "x", color="#c03030")
    ax.set_ylim(-0.03, 1.02)
    ax.set_ylabel("Dice")
    ax.set_title(f"{title} (foreground Dice {result.foreground_dice:.3f})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return Path(path)

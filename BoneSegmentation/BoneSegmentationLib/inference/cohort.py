"""Many scans in one run: the scans of a folder, a list file or several arguments, one output per
scan in an output folder, the model loaded once. A scan whose sidecar (written last) exists is
done and skipped, so a killed run resumes where it stopped. Under ``torchrun`` each process takes
its share (scan k goes to rank k mod world size), one GPU per process."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..core.dicom import holds_dicom_files
from ..core.errors import BoneSegmentationError
from ..core.imageio import strip_image_suffix

SCAN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
LIST_SUFFIXES = (".txt", ".lst")


@dataclass(frozen=True)
class Scan:
    source: Path
    labels: Path
    review: Path
    sidecar: Path

    def done(self) -> bool:
        return self.sidecar.is_file() and self.labels.is_file()


@dataclass
class ScanOutcome:
    scan: Scan
    status: str  # "done", "skipped (already done)" or "failed: <reason>"
    bones: Optional[int] = None
    seconds: float = 0.0
    rank: int = 0


def is_cohort(inputs: list[str]) -> bool:
    """Several inputs, a list file, or a folder of image files or of DICOM folders (a folder
    holding DICOM files itself is one scan)."""
    if len(inputs) > 1:
        return True
    path = Path(inputs[0])
    if path.is_file():
        return path.name.lower().endswith(LIST_SUFFIXES)
    return is_folder_of_scans(path)


def is_folder_of_scans(path: Path) -> bool:
    """A folder of image files or of DICOM folders; a folder holding DICOM files itself is one scan
    (a subfolder beside them, e.g. a viewer's, does not make it several)."""
    return path.is_dir() and not holds_dicom_files(path) and any(_is_scan_entry(p) for p in path.iterdir())


def _is_scan_entry(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    return path.is_dir() or path.name.lower().endswith(SCAN_SUFFIXES)


def list_scans(inputs: list[str]) -> list[Path]:
    """The scans, in a stable order: arguments as given, list files line by line (relative to the
    list's folder), folders sorted by name."""
    scans: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise BoneSegmentationError(f"input not found: {path}")
        if path.is_file() and path.name.lower().endswith(LIST_SUFFIXES):
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    entry = Path(line) if Path(line).is_absolute() else path.parent / line
                    scans.append(entry)
        elif is_folder_of_scans(path):
            scans += sorted(p for p in path.iterdir() if _is_scan_entry(p))
        else:
            scans.append(path)
    stems = [scan_stem(s) for s in scans]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise BoneSegmentationError(f"two scans would write the same output ({duplicates[0]}); rename one")
    return scans


def scan_stem(path: Path) -> str:
    return strip_image_suffix(path.name.rstrip("/"))


def plan(scans: list[Path], out_dir: Path, suffix: str = ".nii.gz") -> list[Scan]:
    return [Scan(s, out_dir / f"{scan_stem(s)}{suffix}", out_dir / f"{scan_stem(s)}.review.json",
                 out_dir / f"{scan_stem(s)}.json") for s in scans]


def rank_and_world() -> tuple[int, int]:
    """This process's share under torchrun (RANK, WORLD_SIZE), else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def share(scans: list[Scan], rank: int, world: int) -> list[Scan]:
    return scans[rank::world]


def run_cohort(scans: list[Scan], segment_one: Callable[[Scan], int], overwrite: bool = False, rank: int = 0,
               progress: Optional[Callable[[int, int, Scan], None]] = None) -> list[ScanOutcome]:
    """``segment_one(scan)`` writes a scan's outputs (sidecar last) and returns the bones found; a
    failing scan is recorded and the run goes on."""
    outcomes = []
    for k, scan in enumerate(scans):
        if progress:
            progress(k, len(scans), scan)
        if scan.done() and not overwrite:
            outcomes.append(ScanOutcome(scan, "skipped (already done)", rank=rank))
            continue
        start = time.perf_counter()
        try:
            bones = segment_one(scan)
            outcomes.append(ScanOutcome(scan, "done", bones, time.perf_counter() - start, rank))
        except (BoneSegmentationError, OSError, ValueError, RuntimeError) as e:
            outcomes.append(ScanOutcome(scan, f"failed: {e}", None, time.perf_counter() - start, rank))
    return outcomes


def summary_table(outcomes: list[ScanOutcome]) -> str:
    rows = ["| scan | status | bones | seconds | rank |", "|---|---|---|---|---|"]
    for o in outcomes:
        rows.append(f"| {o.scan.source.name} | {o.status} | {'' if o.bones is None else o.bones} | "
                    f"{o.seconds:.1f} | {o.rank} |")
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status.startswith("skipped") for o in outcomes)
    failed = len(outcomes) - done - skipped
    return "\n".join(rows) + f"\n\n{len(outcomes)} scans: {done} segmented, {skipped} already done, {failed} failed"

"""Which bone a segment is, from what a Slicer segmentation records about it: its ID (our machine
name), its terminology (SNOMED CT codes), or its name. Shared by the Slicer node path and the
``.seg.nrrd`` reader, so a segment maps to the same bone whichever way it arrives — never by its
position in the list or by the label value Slicer gave it (Slicer gives a segment added by hand
the lowest free value, which is another bone's index)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from .bones import BoneTable


@dataclass
class SegmentMapping:
    """How each segment maps onto the class table (and what could not be mapped)."""

    classes: dict[str, int] = field(default_factory=dict)  # segment ID -> class index
    unknown: list[str] = field(default_factory=list)  # segment names that match no class
    duplicates: dict[int, list[str]] = field(default_factory=dict)  # class -> several segment names

    def problems(self, table: BoneTable) -> list[str]:
        """What stops the segments from becoming one label map, worded for the user."""
        out = []
        if self.unknown:
            out.append(f"segments matching no bone of the table: {', '.join(sorted(self.unknown))} "
                       "(rename them to a bone's name or remove them)")
        if self.duplicates:
            out.append("several segments for one bone: " + "; ".join(
                f"{table[c].display_name}: {', '.join(n)}" for c, n in sorted(self.duplicates.items())))
        return out


@dataclass(frozen=True)
class SegmentRecord:
    """What identifies one segment: its ID, name and terminology entry ('' when it has none)."""

    segment_id: str
    name: str
    terminology: str = ""


def terminology_key(entry: str) -> tuple:
    """Category, type, type modifier, region, region modifier codes (context names ignored)."""
    parts = entry.split("~")
    if len(parts) != 7:
        return ()
    return tuple(p.split("^")[1] if "^" in p else "" for p in (parts[1], parts[2], parts[3], parts[5], parts[6]))


def map_segment_records(records: list[SegmentRecord], table: BoneTable) -> SegmentMapping:
    """Class of every segment: by ID (machine name), then name, then terminology, then display name."""
    by_name = {b.name: b.index for b in table.foreground()}
    by_display = {b.display_name.lower(): b.index for b in table.foreground()}
    by_terminology = {terminology_key(b.terminology_entry()): b.index for b in table.foreground()}
    mapping = SegmentMapping()
    seen: dict[int, list[str]] = {}
    for record in records:
        cls: Optional[int] = (by_name.get(record.segment_id) or by_name.get(record.name)
                              or (by_terminology.get(terminology_key(record.terminology)) if record.terminology else None)
                              or by_display.get(record.name.lower()))
        if cls is None:
            mapping.unknown.append(record.name)
            continue
        mapping.classes[record.segment_id] = cls
        seen.setdefault(cls, []).append(record.name)
    mapping.duplicates = {c: names for c, names in seen.items() if len(names) > 1}
    return mapping


def merge_segments(shape: tuple[int, ...], pieces: Iterable[tuple[str, int, np.ndarray]]
                   ) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """One uint8 label map from (segment name, bone, mask) pieces, and the pairs of segment names
    that claim a voxel together (a later piece's bone wins such a voxel)."""
    out = np.zeros(shape, np.uint8)
    owner: dict[int, str] = {}
    overlaps: set[tuple[str, str]] = set()
    for name, bone, mask in pieces:
        clash = mask & (out > 0) & (out != bone)
        if clash.any():
            overlaps.update((owner[int(other)], name) for other in np.unique(out[clash]))
        out[mask] = bone
        owner[bone] = name
    return out, sorted(overlaps)


def overlap_problem(overlaps: list[tuple[str, str]]) -> str:
    return "overlapping segments (a voxel can belong to one bone only): " + "; ".join(f"{a} / {b}" for a, b in overlaps)

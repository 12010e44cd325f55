"""The bone table: one data file (``Resources/bones.csv``) is the single source of truth for
class indices, names, groups, SNOMED CT codes and colours. Everything else (model metadata,
Slicer terminology, segment names, mesh names, evaluation groups) is derived from it here.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional

from .resources import resource_path

SCT = "SCT"
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
LATERALITY = {"left": ("SCT", "7771000", "Left"), "right": ("SCT", "24028007", "Right")}
EVAL_GROUPS = ("spine", "ribs", "hands", "large_bones")
TERMINOLOGY_CONTEXT = "Segmentation category and type - BoneSegmentation"
REGION_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Bone:
    """One row of the bone table (index 0 is the background)."""

    index: int
    name: str
    display_name: str
    laterality: str  # "left", "right" or "none"
    region: str  # anatomical region: skull, spine, thorax, shoulder_girdle, arm, hand, pelvis, leg
    eval_group: str  # the paper's evaluation group or "none"
    sct_code: str
    sct_meaning: str
    type_modifier_code: str  # position modifier (proximal / intermediate / distal) or ""
    type_modifier_meaning: str
    anatomic_region_code: str  # thumb / finger for hand bones without a digit code, or ""
    anatomic_region_meaning: str
    code_note: str
    rgb: tuple[int, int, int]
    totalsegmentator_total_name: str
    volume_ml_low: float = 0.0  # plausible volume range, used by the review ranking
    volume_ml_high: float = 0.0
    # set by BoneTable: the standard codes (type + modifier) are shared with another bone
    shares_standard_codes: bool = False

    @property
    def is_background(self) -> bool:
        return self.index == 0

    def type_modifier_code_triple(self) -> Optional[tuple[str, str, str]]:
        """(scheme, value, meaning) of the terminology type modifier, or None."""
        if self.shares_standard_codes:
            return (PRIVATE_SCHEME, self.name, self.display_name)
        return _standard_type_modifier(self)

    def terminology_entry(self) -> str:
        """Slicer's 7-part terminology entry string (context~category~type~typeModifier~
        regionContext~region~regionModifier).

        Laterality goes to the type modifier as in Slicer's own files. Hand bones that have
        no specific code carry their position (proximal/intermediate/distal) as the type
        modifier and the digit region (thumb/finger) with the laterality as region modifier,
        so that no information is lost and no code is invented.

        Slicer finds a segment's name and colour by type and type modifier alone, so bones
        that share both (the carpals, metacarpals and phalanges under their parent SNOMED CT
        concept) get a type modifier of their own in a private coding scheme (DICOM reserves
        designators starting with "99" for local codes): the standard parent concept stays
        the type, the region stays, and each bone resolves to itself.
        """
        def code(scheme: str, value: str, meaning: str) -> str:
            return f"{scheme}^{value}^{meaning}" if value else "^^"

        category = code(*ANATOMICAL_STRUCTURE)
        typ = code(SCT, self.sct_code, self.sct_meaning)
        lat = LATERALITY.get(self.laterality)
        region = region_modifier = "^^"
        if self.anatomic_region_code:
            region = code(SCT, self.anatomic_region_code, self.anatomic_region_meaning)
            region_modifier = code(*lat) if lat else "^^"
        type_modifier = code(*self.type_modifier_code_triple()) if self.type_modifier_code_triple() else "^^"
        return "~".join(
            [TERMINOLOGY_CONTEXT, category, typ, type_modifier, REGION_CONTEXT, region, region_modifier]
        )


PRIVATE_SCHEME = "99BONESEG"  # local coding scheme for bones without a distinguishing standard code


def _standard_type_modifier(bone: "Bone") -> Optional[tuple[str, str, str]]:
    if bone.type_modifier_code:
        return (SCT, bone.type_modifier_code, bone.type_modifier_meaning)
    return LATERALITY.get(bone.laterality)


class BoneTable:
    """All classes (background + bones) in index order, with lookups by index and name."""

    def __init__(self, bones: list[Bone]):
        if [b.index for b in bones] != list(range(len(bones))):
            raise ValueError("bone table indices must be 0..N-1 in order")
        keys = Counter((b.sct_code, _standard_type_modifier(b)) for b in bones if b.index)
        bones = [replace(b, shares_standard_codes=b.index > 0 and keys[(b.sct_code, _standard_type_modifier(b))] > 1)
                 for b in bones]
        self.bones = bones
        self._by_name = {b.name: b for b in bones}
        if len(self._by_name) != len(bones):
            raise ValueError("bone table has duplicate machine names")

    @classmethod
    def from_csv(cls, path: Path) -> "BoneTable":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        bones = [
            Bone(
                index=int(r["index"]), name=r["name"], display_name=r["display_name"],
                laterality=r["laterality"], region=r["region"], eval_group=r["eval_group"],
                sct_code=r["sct_code"], sct_meaning=r["sct_meaning"],
                type_modifier_code=r["type_modifier_code"], type_modifier_meaning=r["type_modifier_meaning"],
                anatomic_region_code=r["anatomic_region_code"],
                anatomic_region_meaning=r["anatomic_region_meaning"], code_note=r["code_note"],
                rgb=(int(r["r"]), int(r["g"]), int(r["b"])),
                totalsegmentator_total_name=r["totalsegmentator_total_name"],
                volume_ml_low=float(r.get("volume_ml_low") or 0.0),
                volume_ml_high=float(r.get("volume_ml_high") or 0.0),
            )
            for r in rows
        ]
        return cls(bones)

    def __len__(self) -> int:
        return len(self.bones)

    def __iter__(self) -> Iterator[Bone]:
        return iter(self.bones)

    def __getitem__(self, index: int) -> Bone:
        return self.bones[index]

    @property
    def num_classes(self) -> int:
        """Classes including the background (126 for the full table)."""
        return len(self.bones)

    def foreground(self) -> list[Bone]:
        return self.bones[1:]

    def by_name(self, name: str) -> Bone:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"'{name}' is not a bone of the table (see Resources/bones.csv)") from None

    def names(self) -> list[str]:
        return [b.name for b in self.bones]

    def neighbours(self) -> dict[str, set[str]]:
        """Touching bones (the ``direct`` pairs of ``bone_adjacency.csv``), by machine name."""
        out: dict[str, set[str]] = {b.name: set() for b in self.foreground()}
        with open(resource_path("bone_adjacency.csv"), newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if r["kind"] == "direct" and r["a"] in out and r["b"] in out:
                    out[r["a"]].add(r["b"])
                    out[r["b"]].add(r["a"])
        return out

    def group_members(self, group: str) -> list[Bone]:
        """Bones of one of the paper's evaluation groups, or all bones for ``"all"``."""
        if group == "all":
            return self.foreground()
        return [b for b in self.foreground() if b.eval_group == group]


@lru_cache(maxsize=1)
def default_table() -> BoneTable:
    """The project's 126-class table (cached; it is read-only)."""
    return BoneTable.from_csv(resource_path("bones.csv"))

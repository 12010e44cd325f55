"""TotalSegmentator's v2 "total" classes and how they map onto the bone table.

Used twice: to evaluate against TotalSegmentator outputs (``evaluate --reference
totalsegmentator``) and to turn TotalSegmentator label maps into training anatomy
(``synthetic/anatomy.py``). The bone table's ``totalsegmentator_total_name`` column is the one
source of the correspondence; this module adds only what the table cannot say:
- TotalSegmentator's S1 is part of our sacrum;
- TotalSegmentator has one sternum where we have manubrium, body and xiphoid.
"""

from __future__ import annotations

import csv
from functools import lru_cache

import numpy as np

from .bones import BoneTable, default_table
from .resources import resource_path

CLASSES_FILE = "totalsegmentator_total_classes.csv"
STERNUM_PARTS = ("sternum_manubrium", "sternum_body", "sternum_xiphoid")
EXTRA_ALIASES = {"vertebrae_S1": "sacrum"}  # TS name -> bone table name


@lru_cache(maxsize=1)
def ts_classes() -> dict[int, str]:
    """TotalSegmentator v2 "total" index -> class name."""
    with open(resource_path(CLASSES_FILE), newline="", encoding="utf-8") as f:
        return {int(row["index"]): row["name"] for row in csv.DictReader(f)}


@lru_cache(maxsize=1)
def ts_indices() -> dict[str, int]:
    """TotalSegmentator v2 "total" class name -> index (the inverse of ``ts_classes``)."""
    return {name: index for index, name in ts_classes().items()}


def ts_index(name: str) -> int:
    try:
        return ts_indices()[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a TotalSegmentator v2 'total' class") from None


def ts_to_table(table: BoneTable | None = None, sternum_as: str = "sternum_body") -> np.ndarray:
    """Lookup array (256 entries): TotalSegmentator index -> bone table index, 0 where the class
    is not a bone of the table (organs, vessels, costal cartilage). The one TotalSegmentator
    sternum becomes ``sternum_as``."""
    table = table or default_table()
    lookup = np.zeros(256, np.uint8)
    by_ts_name: dict[str, int] = {}
    for bone in table.foreground():
        if bone.totalsegmentator_total_name and bone.totalsegmentator_total_name not in by_ts_name:
            by_ts_name[bone.totalsegmentator_total_name] = bone.index
    by_ts_name["sternum"] = table.by_name(sternum_as).index
    for ts_name, our_name in EXTRA_ALIASES.items():
        by_ts_name[ts_name] = table.by_name(our_name).index
    for index, name in ts_classes().items():
        if name in by_ts_name:
            lookup[index] = by_ts_name[name]
    return lookup


def merge_sternum(labels: np.ndarray, table: BoneTable | None = None) -> np.ndarray:
    """Our three sternum parts as one (the body's index), for comparison with TotalSegmentator."""
    table = table or default_table()
    out = labels.copy()
    target = table.by_name("sternum_body").index
    for name in STERNUM_PARTS:
        out[labels == table.by_name(name).index] = target
    return out

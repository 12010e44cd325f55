"""The colour table Slicer writes beside a label map it exports (``NAME.labels.csv`` next to
``NAME.nii.gz``): label value, name, colour and terminology codes per segment.

Why it matters: without a colour table selected, Slicer numbers the exported segments 1, 2, 3...
in list order, so an abdomen's L1 is stored as 1, the cranium's index in our table. The sidecar
says which bone each value is, so the label map is put back into the bone table's values by the
bones' names or codes (``segment_names``), exactly as a ``.seg.nrrd`` is."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .bones import BoneTable, default_table
from .errors import InputImageError
from .labelmaps import relabel
from .segment_names import SegmentRecord, map_segment_records

SIDECAR_SUFFIX = ".labels.csv"
MAX_ROWS = 65536  # a label map's values: more rows is not a colour table of segments
_CODES = ("Category", "Type", "TypeModifier", "Region", "RegionModifier")


def sidecar_of(path: Path, stem: str) -> Path:
    """Where Slicer puts the colour table of the label map ``path`` whose name without its image
    suffix is ``stem``."""
    return path.with_name(stem + SIDECAR_SUFFIX)


def read_colour_rows(path: Path) -> list[tuple[int, SegmentRecord]]:
    """(label value, what names the bone) per row of a Slicer colour table CSV."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if len(rows) >= MAX_ROWS:
                    raise InputImageError(f"{path} has more than {MAX_ROWS} rows: not a colour table of segments")
                value, name = int(row["LabelValue"]), (row.get("Name") or "").strip()
                codes = [f"{row.get(c + '_CodingScheme') or ''}^{row.get(c + '_CodeValue') or ''}^"
                         f"{row.get(c + '_CodeMeaning') or ''}" for c in _CODES]
                entry = "~".join(["", *codes[:3], "", *codes[3:]]) if row.get("Type_CodeValue") else ""
                rows.append((value, SegmentRecord(name, name, entry)))
    except (KeyError, ValueError, TypeError, csv.Error, UnicodeDecodeError) as e:
        raise InputImageError(f"cannot read the colour table {path} beside the label map ({e}); remove it to "
                              "read the label map's values as the bone table's, or export it from Slicer again") \
            from None
    values = [value for value, _ in rows]
    if len(set(values)) != len(values):
        twice = sorted({v for v in values if values.count(v) > 1})
        raise InputImageError(f"the colour table {path} names the values {twice[:10]} more than once; export the "
                              "label map from Slicer again")
    return rows


def labels_by_colour_table(image: sitk.Image, rows: list[tuple[int, SegmentRecord]], name: str,
                           table: Optional[BoneTable] = None) -> sitk.Image:
    """``image``'s values replaced by the bones its colour table names (background stays 0)."""
    table = table or default_table()
    rows = [(value, record) for value, record in rows if value != 0]
    mapping = map_segment_records([record for _, record in rows], table)
    problems = mapping.problems(table)
    if problems:
        raise InputImageError(f"{name} (by its colour table): " + "; ".join(problems))
    array = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputImageError(f"{name} holds {array.dtype} voxels, not a label map's integers")
    lookup = {value: mapping.classes[record.segment_id] for value, record in rows}
    present = [int(v) for v in np.unique(array) if v]
    unnamed = [v for v in present if v not in lookup]
    if unnamed:
        raise InputImageError(f"{name}: values {unnamed[:10]} have no row in its colour table; export it from "
                              "Slicer again")
    labels = sitk.GetImageFromArray(relabel(array, lookup))
    labels.CopyInformation(image)
    return labels

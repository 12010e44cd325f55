"""Generate a Slicer terminology file (``.term.json``) from the bone table, so that Slicer's
Segment Editor shows standard (SNOMED CT) names and our colours for the segments we create."""

from __future__ import annotations

import json
from pathlib import Path

from .bones import ANATOMICAL_STRUCTURE, TERMINOLOGY_CONTEXT, BoneTable, default_table

SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#"


def _code(scheme: str, value: str, meaning: str) -> dict:
    return {"CodingSchemeDesignator": scheme, "CodeValue": value, "CodeMeaning": meaning}


def build_terminology(table: BoneTable | None = None) -> dict:
    """One Type per SNOMED code; its Modifiers are the laterality / position modifiers used.

    Bones that share a parent code (e.g. the carpals other than the scaphoid) share one Type
    and are told apart by a modifier of their own (``Bone.type_modifier_code_triple``), so that
    Slicer resolves each to its own name and colour.
    """
    table = table or default_table()
    types: dict[str, dict] = {}
    for bone in table.foreground():
        entry = types.setdefault(bone.sct_code, {
            **_code("SCT", bone.sct_code, bone.sct_meaning),
            "recommendedDisplayRGBValue": list(bone.rgb),
            "3dSlicerLabel": bone.display_name,
        })
        triple = bone.type_modifier_code_triple()
        if triple is None:
            continue
        modifier = _code(*triple)
        modifiers = entry.setdefault("Modifier", [])
        if all(m["CodeValue"] != modifier["CodeValue"] for m in modifiers):
            modifiers.append({**modifier, "recommendedDisplayRGBValue": list(bone.rgb),
                              "3dSlicerLabel": bone.display_name})
    category = {**_code(*ANATOMICAL_STRUCTURE), "showAnatomy": False,
                "Type": sorted(types.values(), key=lambda t: t["CodeMeaning"])}
    return {"SegmentationCategoryTypeContextName": TERMINOLOGY_CONTEXT, "@schema": SCHEMA,
            "SegmentationCodes": {"Category": [category]}}


def write_terminology(path: Path, table: BoneTable | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps(build_terminology(table), indent=2) + "\n", encoding="utf-8")
    return path

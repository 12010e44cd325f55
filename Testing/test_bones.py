"""The bone table: composition, codes, neighbour colour contrast, generated terminology."""

import csv
import json
from collections import Counter

import pytest

from BoneSegmentationLib.core.bones import default_table
from colour import ciede2000
from BoneSegmentationLib.core.resources import resource_path
from BoneSegmentationLib.core.terminology import build_terminology

TABLE = default_table()


def test_126_classes_with_background_first():
    assert TABLE.num_classes == 126
    assert TABLE[0].name == "background"
    assert [b.index for b in TABLE] == list(range(126))


def test_composition_matches_the_paper():
    regions = Counter(b.region for b in TABLE.foreground())
    assert regions == {"skull": 4, "spine": 26, "thorax": 27, "shoulder_girdle": 4, "arm": 6,
                       "hand": 54, "pelvis": 2, "leg": 2}
    names = set(TABLE.names())
    for level in ["C1", "C7", "T1", "T12", "L1", "L5"]:
        assert f"vertebra_{level}" in names
    assert {f"rib_{s}_{n}" for s in ("left", "right") for n in range(1, 13)} <= names
    for side in ("left", "right"):
        hand = [b for b in TABLE.foreground() if b.region == "hand" and b.laterality == side]
        assert len(hand) == 27


def test_the_column_the_anatomical_step_orders_is_the_tables_spine_head_to_foot():
    """The step's level order (``consistency.spine``) names exactly the table's spine bones, in
    the table's order, so every reader of "which bones are vertebrae" asks one list."""
    from BoneSegmentationLib.consistency.spine import column_indices, vertebra_indices
    spine = [b.index for b in TABLE.foreground() if b.region == "spine"]
    assert column_indices(TABLE) == spine
    assert vertebra_indices(TABLE) == spine[:24]
    assert [TABLE[i].name for i in spine[24:]] == ["sacrum", "coccyx"]


def test_eval_groups_and_laterality_consistent():
    groups = Counter(b.eval_group for b in TABLE.foreground())
    assert groups == {"spine": 26, "ribs": 24, "hands": 54, "large_bones": 16, "none": 5}
    for b in TABLE.foreground():
        if "_left" in b.name:
            assert b.laterality == "left", b.name
        if "_right" in b.name:
            assert b.laterality == "right", b.name


def test_every_bone_has_a_code_and_unique_colour():
    for b in TABLE.foreground():
        assert b.sct_code.isdigit() and b.sct_meaning, b.name
        assert b.code_note, b.name
    colours = [b.rgb for b in TABLE.foreground()]
    assert len(set(colours)) == 125


def test_parent_codes_are_declared_not_invented():
    """Bones without their own SNOMED code must say so in the code note."""
    shared = Counter((b.sct_code, b.laterality, b.type_modifier_code, b.anatomic_region_code)
                     for b in TABLE.foreground())
    for b in TABLE.foreground():
        key = (b.sct_code, b.laterality, b.type_modifier_code, b.anatomic_region_code)
        if shared[key] > 1:
            assert "no " in b.code_note and "code found" in b.code_note, b.name


def _adjacency():
    with open(resource_path("bone_adjacency.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("kind,minimum", [("direct", 25.0), ("secondary", 12.0)])
def test_neighbour_colours_clearly_different(kind, minimum):
    pairs = [r for r in _adjacency() if r["kind"] == kind]
    assert len(pairs) > 200
    worst = min((ciede2000(TABLE.by_name(r["a"]).rgb, TABLE.by_name(r["b"]).rgb), r["a"], r["b"])
                for r in pairs)
    assert worst[0] >= minimum, worst


def test_consecutive_vertebrae_and_ribs_contrast():
    spine = [b for b in TABLE.foreground() if b.region == "spine"]
    for a, b in zip(spine, spine[1:]):
        assert ciede2000(a.rgb, b.rgb) >= 25, (a.name, b.name)
    for side in ("left", "right"):
        ribs = [TABLE.by_name(f"rib_{side}_{n}") for n in range(1, 13)]
        for a, b in zip(ribs, ribs[1:]):
            assert ciede2000(a.rgb, b.rgb) >= 25, (a.name, b.name)


def test_ciede2000_reference_values():
    # Sharma et al. (2005) test data pair 1 is in Lab; check sRGB extremes and identity instead
    assert ciede2000((10, 20, 30), (10, 20, 30)) == 0
    assert ciede2000((0, 0, 0), (255, 255, 255)) == pytest.approx(100.0, abs=0.1)


def test_terminology_entry_strings():
    humerus = TABLE.by_name("humerus_left").terminology_entry().split("~")
    assert len(humerus) == 7
    assert humerus[1] == "SCT^123037004^Anatomical Structure"
    assert humerus[2] == "SCT^85050009^Humerus"
    assert humerus[3] == "SCT^7771000^Left"
    phalanx = TABLE.by_name("middle_phalanx_right_ring").terminology_entry().split("~")
    assert phalanx[2] == "SCT^28641004^Phalanx structure"  # the standard parent concept stays the type
    # shared type + position with the other fingers: a modifier of its own in a local scheme
    assert phalanx[3] == "99BONESEG^middle_phalanx_right_ring^Right ring finger middle phalanx"
    assert phalanx[5] == "SCT^7569003^Finger" and phalanx[6] == "SCT^24028007^Right"
    assert TABLE.by_name("capitate_left").terminology_entry().split("~")[2:4] == [
        "SCT^83936004^Carpus", "99BONESEG^capitate_left^Left capitate"]
    assert TABLE.by_name("scaphoid_left").terminology_entry().split("~")[3] == "SCT^7771000^Left"  # own code
    assert TABLE.by_name("sacrum").terminology_entry().split("~")[3] == "^^"
    keys = [tuple(b.terminology_entry().split("~")[2:4]) for b in TABLE.foreground()]
    assert len(set(keys)) == 125  # type + type modifier tell every bone apart (what Slicer looks up)
    assert sum(b.shares_standard_codes for b in TABLE.foreground()) == 52  # 14 carpals, 10 metacarpals, 28 phalanges


def test_generated_terminology_file_is_current_and_complete():
    committed = json.loads(resource_path("SegmentationCategoryTypeModifier-BoneSegmentation.term.json").read_text())
    assert committed == build_terminology(TABLE), "regenerate with tools/generate_terminology.py"
    types = {t["CodeValue"]: t for t in committed["SegmentationCodes"]["Category"][0]["Type"]}
    for b in TABLE.foreground():
        assert b.sct_code in types, b.name
        modifier = b.type_modifier_code_triple()
        if modifier:
            assert modifier[1] in {m["CodeValue"] for m in types[b.sct_code]["Modifier"]}, b.name

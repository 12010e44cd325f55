"""Corrected segmentations become training cases: checks, the diff against the model's
prediction, and the case manifest.

A manifest records where a case came from (scan name and checksum, the model that made the
prior, when), what the anatomist changed (bones edited, added or removed versus the stored
prediction, voxels changed per bone), which classes are labelled (all, or only the checked ones
of a partial correction: see ``losses`` for how training treats the others), and voxels per bone.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..core.bones import BoneTable, default_table
from .dataset import case_stem, commit_case, init_dataset
from ..core.errors import DatasetError
from ..core.files import safe_name
from ..core.imageio import same_geometry
from ..core.labelmaps import bone_label_counts, label_counts


class GeometryMismatchError(DatasetError):
    """The label map is not on the CT's voxel grid."""


def image_sha256(image: sitk.Image) -> str:
    """Checksum of the voxels and the geometry (independent of the file format it came in)."""
    h = hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
    h.update(repr((image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection())).encode())
    return h.hexdigest()


def check_same_grid(ct: sitk.Image, labels: sitk.Image, what: str = "segmentation") -> None:
    if not same_geometry(ct, labels, tol=1e-4):
        raise GeometryMismatchError(
            f"the {what} is not on the CT's grid (CT: size {ct.GetSize()}, spacing "
            f"{tuple(round(s, 4) for s in ct.GetSpacing())}, origin {tuple(round(o, 2) for o in ct.GetOrigin())}; "
            f"{what}: size {labels.GetSize()}, spacing {tuple(round(s, 4) for s in labels.GetSpacing())}, "
            f"origin {tuple(round(o, 2) for o in labels.GetOrigin())}). Resample it onto the CT first "
            "(in Slicer: export the segmentation with the CT as reference volume).")


def changes_per_bone(prior: np.ndarray, corrected: np.ndarray) -> dict[int, int]:
    """Voxels changed per class: a voxel moved from bone A to bone B counts for both."""
    moved = prior != corrected
    counts = label_counts(prior[moved]) if moved.any() else np.zeros(1, np.int64)
    gained = label_counts(corrected[moved]) if moved.any() else np.zeros(1, np.int64)
    n = max(len(counts), len(gained))
    total = np.pad(counts, (0, n - len(counts))) + np.pad(gained, (0, n - len(gained)))
    return {c: int(v) for c, v in enumerate(total) if c and v}


def resolve_labelled(spec: str | Sequence[str] | None, edited: Sequence[int], table: BoneTable) -> Optional[list[int]]:
    """``None``/"all" -> every class; "edited" -> the bones changed; else bone or group names."""
    if spec is None or spec == "all":
        return None
    if spec == "edited":
        if not edited:
            raise DatasetError("'edited' needs the model's prediction to compare with, and at least one edited bone")
        return sorted(edited)
    names = [spec] if isinstance(spec, str) else list(spec)
    out: set[int] = set()
    for name in (n.strip() for part in names for n in part.split(",")):
        group = [b.index for b in table.foreground() if name in (b.eval_group, b.region)]
        if group:
            out.update(group)
            continue
        try:
            out.add(table.by_name(name).index)
        except KeyError:
            raise DatasetError(f"{name!r} is neither a bone nor a group of the bone table") from None
    return sorted(out)


def build_manifest(ct: sitk.Image, labels: sitk.Image, source_name: str, prior: Optional[sitk.Image] = None,
                   prior_model: str = "", labelled: str | Sequence[str] | None = None,
                   table: Optional[BoneTable] = None) -> dict:
    table = table or default_table()
    check_same_grid(ct, labels)
    lab = sitk.GetArrayViewFromImage(labels)
    counts = bone_label_counts(lab, table.num_classes, "the label map", DatasetError)
    present = [c for c in range(1, len(counts)) if counts[c]]
    manifest: dict = {"source": {"name": source_name, "sha256": image_sha256(ct)},
                      "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      "prior_model": prior_model or None,
                      "voxels": {table[c].name: int(counts[c]) for c in present}}
    edited: list[int] = []
    if prior is not None:
        check_same_grid(ct, prior, "stored prediction")
        prior_arr = sitk.GetArrayViewFromImage(prior)
        changed = changes_per_bone(prior_arr, lab)
        before = set(np.nonzero(label_counts(prior_arr))[0]) - {0}
        edited = sorted(changed)
        manifest["edits"] = {
            "edited": [table[c].name for c in edited],
            "added": [table[c].name for c in edited if c not in before],
            "removed": [table[c].name for c in edited if not counts[c:c + 1].any()],
            "unchanged": [table[c].name for c in present if c not in changed],
            "voxels_changed": {table[c].name: n for c, n in changed.items()}}
    chosen = resolve_labelled(labelled, edited, table)
    manifest["labelled_classes"] = "all" if chosen is None else [table[c].name for c in chosen]
    return manifest


def add_case(folder, ct: sitk.Image, labels: sitk.Image, source_name: str, prior: Optional[sitk.Image] = None,
             prior_model: str = "", labelled: str | Sequence[str] | None = None, case_id: Optional[str] = None,
             overwrite: bool = False, table: Optional[BoneTable] = None) -> dict:
    """Check, describe and commit one case; returns its manifest (with ``case_id``)."""
    if case_id is not None:
        safe_name(case_id, "case ID", DatasetError)
    manifest = build_manifest(ct, labels, source_name, prior, prior_model, labelled, table)
    init_dataset(folder, table)
    lab = labels if labels.GetPixelID() == sitk.sitkUInt8 else sitk.Cast(labels, sitk.sitkUInt8)
    return commit_case(folder, case_id, ct, lab, manifest, overwrite=overwrite, stem=case_stem(source_name))


def labelled_mask(manifest: Optional[dict], table: Optional[BoneTable] = None) -> Optional[np.ndarray]:
    """Boolean per class for the loss; ``None`` when every class is labelled."""
    table = table or default_table()
    if not manifest or manifest.get("labelled_classes", "all") == "all":
        return None
    mask = np.zeros(table.num_classes, bool)
    mask[0] = True
    for name in manifest["labelled_classes"]:
        mask[table.by_name(name).index] = True
    return mask

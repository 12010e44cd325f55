"""Our training dataset as an nnU-Net v2 raw dataset (``DatasetNNN_Name/`` in ``nnUNet_raw``).

Our folders already use nnU-Net's layout, but a partially labelled case (``dataset add --labelled
spine`` or ``edited``) keeps the model's unchecked prediction in its label file and says which
classes were checked only in our manifest: nnU-Net would train on those voxels as truth. The export
gives every voxel whose label is an unchecked class nnU-Net's ``ignore`` label (declared in
``dataset.json``; it must be the highest value, so it is the number of classes), which nnU-Net
leaves out of its loss just as our own training does. Background stays background, as in our loss.

The source dataset is never changed; the export is written in a hidden staging folder beside the
target and renamed into place when complete, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from ..core.bones import BoneTable, default_table
from ..core.errors import DatasetError
from ..core.files import atomic_write_text, safe_name, sha256_file
from ..core.imageio import read_image, write_image
from ..training.corrections import labelled_mask
from ..training.dataset import (DATASET_JSON, IMAGE_SUFFIX, LABEL_SUFFIX, check_dataset, image_path, label_path,
                                read_manifest)


@dataclass(frozen=True)
class NnunetExport:
    folder: Path
    cases: int
    partial_cases: list[str] = field(default_factory=list)
    ignored_voxels: int = 0
    ignore_label: Optional[int] = None


def nnunet_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise DatasetError(f"nnU-Net dataset IDs are 1 to 999, not {dataset_id}")
    safe_name(name, "dataset name", DatasetError)
    return f"Dataset{int(dataset_id):03d}_{name}"


def export_nnunet(dataset: Path, out_root: Path, dataset_id: int, name: str = "BoneSegmentation",
                  table: Optional[BoneTable] = None,
                  progress: Optional[Callable[[str], None]] = None) -> NnunetExport:
    """Write ``out_root/DatasetNNN_<name>/`` from our dataset folder; refuses an ID already used in
    ``out_root`` (nnU-Net finds datasets by ID) and cases whose files changed since they were added."""
    table = table or default_table()
    dataset, out_root = Path(dataset), Path(out_root)
    ids = check_dataset(dataset, table)
    target = out_root / nnunet_folder_name(dataset_id, name)
    if dataset.resolve() == target.resolve() or target.resolve().is_relative_to(dataset.resolve()):
        raise DatasetError(f"export into {out_root}, outside the dataset {dataset} itself")
    taken = [p.name for p in out_root.glob(f"Dataset{int(dataset_id):03d}_*")]
    if taken:
        raise DatasetError(f"{out_root} already has {taken[0]}: nnU-Net finds datasets by ID, choose another --id")
    manifests = {case_id: read_manifest(dataset, case_id) for case_id in ids}
    for case_id, manifest in manifests.items():
        _check_unchanged(dataset, case_id, manifest)
    out_root.mkdir(parents=True, exist_ok=True)

    stage = out_root / f".{target.name}.partial-{secrets.token_hex(4)}"
    (stage / "imagesTr").mkdir(parents=True)
    (stage / "labelsTr").mkdir()
    ignore, partial, ignored = table.num_classes, [], 0
    try:
        for k, case_id in enumerate(ids):
            if progress:
                progress(f"case {k + 1}/{len(ids)}: {case_id}")
            shutil.copyfile(image_path(dataset, case_id), stage / "imagesTr" / f"{case_id}{IMAGE_SUFFIX}")
            checked = labelled_mask(manifests[case_id], table)
            if checked is None:
                shutil.copyfile(label_path(dataset, case_id), stage / "labelsTr" / f"{case_id}{LABEL_SUFFIX}")
                continue
            labels = read_image(label_path(dataset, case_id))
            array = sitk.GetArrayFromImage(labels).astype(np.uint8)
            unchecked = ~checked[np.minimum(array, table.num_classes - 1)]
            array[unchecked] = ignore
            out = sitk.GetImageFromArray(array)
            out.CopyInformation(labels)
            write_image(out, stage / "labelsTr" / f"{case_id}{LABEL_SUFFIX}")
            partial.append(case_id)
            ignored += int(unchecked.sum())
        description = json.loads((dataset / DATASET_JSON).read_text(encoding="utf-8"))
        labels_json = {b.name: b.index for b in table}
        if partial:
            labels_json["ignore"] = ignore
        meta = {"name": name, "description": description.get("description", ""),
                "channel_names": {"0": "CT"}, "labels": labels_json, "numTraining": len(ids),
                "file_ending": LABEL_SUFFIX,
                "bonesegmentation": {"source": str(dataset.resolve()), "partial_cases": partial,
                                     "ignore": ("voxels of classes the anatomist did not check"
                                                if partial else "not used: every case is fully labelled")}}
        atomic_write_text(stage / DATASET_JSON, json.dumps(meta, indent=1))
        stage.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return NnunetExport(target, len(ids), partial, ignored, ignore if partial else None)


def _check_unchanged(dataset: Path, case_id: str, manifest: Optional[dict]) -> None:
    if manifest is None:  # a case without a manifest (phantoms, an nnU-Net dataset): fully labelled
        return
    if sha256_file(label_path(dataset, case_id)) != manifest.get("labels_sha256"):
        raise DatasetError(f"{case_id}: its label file changed since it was added (checksum differs from its "
                           "manifest); re-add the case before exporting")
    if manifest.get("image_sha256") and sha256_file(image_path(dataset, case_id)) != manifest["image_sha256"]:
        raise DatasetError(f"{case_id}: its image changed since it was added (checksum differs from its "
                           "manifest); re-add the case before exporting")


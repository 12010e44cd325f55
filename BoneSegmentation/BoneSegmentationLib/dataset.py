"""Training datasets in the nnU-Net layout (``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, ``dataset.json``), so that the same folder trains here and in nnU-Net.

``dataset.json`` names every class by the bone table's machine names; a folder whose class table
disagrees with ours is refused rather than trained with shuffled labels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import SimpleITK as sitk

from .bones import BoneTable, default_table
from .errors import DatasetError
from .imageio import write_image

DATASET_JSON = "dataset.json"
IMAGE_SUFFIX = "_0000.nii.gz"
LABEL_SUFFIX = ".nii.gz"


def atomic_write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def dataset_description(table: BoneTable, num_training: int, name: str = "BoneSegmentation",
                        description: str = "") -> dict:
    return {"name": name, "description": description, "channel_names": {"0": "CT"},
            "labels": {b.name: b.index for b in table}, "numTraining": num_training, "file_ending": ".nii.gz"}


def init_dataset(folder: Path, table: BoneTable | None = None, name: str = "BoneSegmentation",
                 description: str = "") -> Path:
    """Create (or check) a dataset folder; an existing one must carry the same class table."""
    table = table or default_table()
    folder = Path(folder)
    if (folder / DATASET_JSON).is_file():
        check_dataset(folder, table)
        return folder
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / DATASET_JSON, json.dumps(dataset_description(table, 0, name, description), indent=1))
    return folder


def case_ids(folder: Path) -> list[str]:
    """Cases that have both an image and a label map, sorted."""
    folder = Path(folder)
    ids = [p.name[: -len(LABEL_SUFFIX)] for p in (folder / "labelsTr").glob(f"*{LABEL_SUFFIX}")
           if not p.name.startswith(".")]
    return sorted(i for i in ids if (folder / "imagesTr" / f"{i}{IMAGE_SUFFIX}").is_file())


def check_dataset(folder: Path, table: BoneTable | None = None) -> list[str]:
    """Validate the folder against the bone table; returns its case IDs."""
    table = table or default_table()
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    meta_path = folder / DATASET_JSON
    if not meta_path.is_file():
        raise DatasetError(f"{folder} has no {DATASET_JSON}; expected the nnU-Net layout "
                           "(imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{meta_path} is not valid JSON ({e})") from None
    labels = meta.get("labels", {})
    ours = {b.name: b.index for b in table}
    wrong = [f"{k}={v} (ours {ours.get(k, 'none')})" for k, v in labels.items() if ours.get(k) != int(v)]
    if wrong:
        raise DatasetError(f"{meta_path}: class table differs from the bone table: {', '.join(wrong[:8])}"
                           f"{' ...' if len(wrong) > 8 else ''}")
    ids = case_ids(folder)
    if not ids:
        raise DatasetError(f"{folder} has no complete case (imagesTr/<case>{IMAGE_SUFFIX} with "
                           f"labelsTr/<case>{LABEL_SUFFIX})")
    return ids


def update_count(folder: Path) -> None:
    path = Path(folder) / DATASET_JSON
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["numTraining"] = len(case_ids(folder))
    atomic_write_text(path, json.dumps(meta, indent=1))


def write_case(folder: Path, case_id: str, ct: sitk.Image, labels: sitk.Image, overwrite: bool = False) -> None:
    """Write one case's image and label map (each atomically)."""
    folder = Path(folder)
    write_image(ct, folder / "imagesTr" / f"{case_id}{IMAGE_SUFFIX}", overwrite=overwrite)
    write_image(labels, folder / "labelsTr" / f"{case_id}{LABEL_SUFFIX}", overwrite=overwrite)

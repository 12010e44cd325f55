"""Training datasets in the nnU-Net layout (``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, ``dataset.json``), so that the same folder trains here and in nnU-Net.

``dataset.json`` names every class by the bone table's machine names; a folder whose class table
disagrees with ours is refused rather than trained with shuffled labels.

Cases added from corrected segmentations also have ``manifests/<case>.json`` (where the case came
from, what was edited, which classes are labelled, file checksums). A case is three files, so it
is committed through a journal: all files are written in ``.pending/`` first, then a commit record
is written atomically, then the files are renamed into place. ``recover()`` (run by every
operation on the folder) rolls a commit record forward and drops staged files of a writer that
died before its record: after a crash the folder holds the old case or the new one, whole.

Writers stage their files in parallel; choosing the case ID, the commit and recovery happen under
an OS lock on ``<dataset>/.lock`` (released by the OS if a writer dies), so parallel adds get
distinct IDs and never roll the same journal twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Optional

import SimpleITK as sitk

from ..core.bones import BoneTable, default_table
from ..core.files import atomic_write_text, file_lock, safe_name, sha256_file
from ..core.errors import DatasetError
from ..core.imageio import read_image, write_image
from ..core.labelmaps import label_counts

DATASET_JSON = "dataset.json"
IMAGE_SUFFIX = "_0000.nii.gz"
LABEL_SUFFIX = ".nii.gz"
MANIFESTS = "manifests"
PENDING = ".pending"
LOCK = ".lock"


def dataset_description(table: BoneTable, num_training: int, name: str = "BoneSegmentation",
                        description: str = "") -> dict:
    return {"name": name, "description": description, "channel_names": {"0": "CT"},
            "labels": {b.name: b.index for b in table}, "numTraining": num_training, "file_ending": ".nii.gz"}


def init_dataset(folder: Path, table: BoneTable | None = None, name: str = "BoneSegmentation",
                 description: str = "") -> Path:
    """Create (or check) a dataset folder; an existing one must carry the same class table (it may
    have no case yet: a first add that died leaves an empty dataset, not a broken one)."""
    table = table or default_table()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / LOCK):
        if (folder / DATASET_JSON).is_file():
            _check_description(folder, table)
            return folder
        for sub in ("imagesTr", "labelsTr"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / DATASET_JSON,
                          json.dumps(dataset_description(table, 0, name, description), indent=1))
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
    recover(folder)
    _check_description(folder, table)
    ids = case_ids(folder)
    if not ids:
        raise DatasetError(f"{folder} has no complete case (imagesTr/<case>{IMAGE_SUFFIX} with "
                           f"labelsTr/<case>{LABEL_SUFFIX})")
    return ids


def _check_description(folder: Path, table: BoneTable) -> None:
    """dataset.json exists, is an object with a class table, and that table is ours."""
    meta_path = folder / DATASET_JSON
    if not meta_path.is_file():
        raise DatasetError(f"{folder} has no {DATASET_JSON}; expected the nnU-Net layout "
                           "(imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{meta_path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict):
        raise DatasetError(f"{meta_path} must be a JSON object with a 'labels' table (nnU-Net's dataset.json)")
    labels = meta["labels"]
    ours = {b.name: b.index for b in table}
    wrong = [f"{k}={v} (ours {ours.get(k, 'none')})" for k, v in labels.items() if ours.get(k) != int(v)]
    if wrong:
        raise DatasetError(f"{meta_path}: class table differs from the bone table: {', '.join(wrong[:8])}"
                           f"{' ...' if len(wrong) > 8 else ''}")


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


# -- cases with manifests, committed atomically ---------------------------------------------------
def image_path(folder: Path, case_id: str) -> Path:
    return Path(folder) / "imagesTr" / f"{case_id}{IMAGE_SUFFIX}"


def label_path(folder: Path, case_id: str) -> Path:
    return Path(folder) / "labelsTr" / f"{case_id}{LABEL_SUFFIX}"


def manifest_path(folder: Path, case_id: str) -> Path:
    return Path(folder) / MANIFESTS / f"{case_id}.json"


def read_manifest(folder: Path, case_id: str) -> Optional[dict]:
    path = manifest_path(folder, case_id)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


file_sha256 = sha256_file  # one implementation: core/files.py


def case_stem(name: str) -> str:
    """A case ID stem from a scan name: letters, digits and underscores only."""
    stem = re.sub(r"(\.nii\.gz|\.nii|\.nrrd|\.mha|\.mhd)$", "", Path(name).name, flags=re.I)
    return re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_") or "case"


def _free_case_id(folder: Path, stem: str) -> str:
    """The first ``<stem>_NNN`` with none of its files present (call with the dataset lock held)."""
    for k in range(1000):
        case_id = f"{stem}_{k:03d}"
        if not any(p.exists() for p in (image_path(folder, case_id), label_path(folder, case_id),
                                        manifest_path(folder, case_id))):
            return case_id
    raise DatasetError(f"no free case ID left for {stem!r} in {folder}")


def commit_case(folder: Path, case_id: Optional[str], ct: sitk.Image, labels: sitk.Image, manifest: dict,
                overwrite: bool = False, stem: str = "case") -> dict:
    """Write image, label map and manifest of one case as one atomic step (see module doc);
    ``case_id`` None: the first free ``<stem>_NNN``, chosen under the lock."""
    folder = Path(folder)
    if case_id is not None:
        safe_name(case_id, "case ID", DatasetError)
    (folder / PENDING).mkdir(parents=True, exist_ok=True)
    stage = folder / PENDING / f"stage.{os.getpid()}.{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        write_image(ct, stage / "image.nii.gz")  # the slow part runs in parallel, outside the lock
        write_image(labels, stage / "labels.nii.gz")
        sums = {"image_sha256": file_sha256(stage / "image.nii.gz"),
                "labels_sha256": file_sha256(stage / "labels.nii.gz")}
        with file_lock(folder / LOCK):
            _recover(folder)
            if case_id is None:
                case_id = _free_case_id(folder, stem)
            elif label_path(folder, case_id).exists() and not overwrite:
                raise DatasetError(f"case {case_id} already exists in {folder}; choose another case ID or "
                                   "confirm overwriting it (--overwrite)")
            manifest = {**manifest, "case_id": case_id, **sums}
            atomic_write_text(stage / "manifest.json", json.dumps(manifest, indent=1))
            (folder / MANIFESTS).mkdir(exist_ok=True)
            moves = [(stage / "image.nii.gz", image_path(folder, case_id)),
                     (stage / "manifest.json", manifest_path(folder, case_id)),
                     (stage / "labels.nii.gz", label_path(folder, case_id))]  # the label map last: it completes a case
            journal = folder / PENDING / f"{stage.name}.commit.json"
            atomic_write_text(journal, json.dumps({"stage": stage.name,
                                                   "moves": [[str(a.relative_to(folder)), str(b.relative_to(folder))]
                                                             for a, b in moves]}))  # the commit point
            _roll_forward(folder, journal)
            update_count(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


def recover(folder: Path) -> None:
    """Finish commits interrupted after their commit point; drop staging of dead writers."""
    folder = Path(folder)
    if (folder / PENDING).is_dir():
        with file_lock(folder / LOCK):
            _recover(folder)


def _recover(folder: Path) -> None:
    pending = folder / PENDING
    if not pending.is_dir():
        return
    for journal in sorted(pending.glob("*.commit.json")):
        _roll_forward(folder, journal)
    for entry in pending.iterdir():  # staging folders are stage.<pid>.<token> (older code: <case>.<pid>)
        if entry.is_dir():
            parts = entry.name.split(".")
            pid = parts[1] if entry.name.startswith("stage.") and len(parts) == 3 else parts[-1]
            if not _alive(pid):
                shutil.rmtree(entry, ignore_errors=True)


def _roll_forward(folder: Path, journal: Path) -> None:
    record = json.loads(journal.read_text(encoding="utf-8"))
    for source, target in record["moves"]:
        if (folder / source).exists():
            os.replace(folder / source, folder / target)
    shutil.rmtree(folder / PENDING / record["stage"], ignore_errors=True)
    journal.unlink()


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def dataset_digest(folder: Path, ids: Optional[list[str]] = None) -> str:
    """SHA-256 over the cases' image and label checksums (from the manifests where there is
    one): the dataset's identity in a model's provenance."""
    folder = Path(folder)
    h = hashlib.sha256()
    for case_id in ids if ids is not None else case_ids(folder):
        m = read_manifest(folder, case_id) or {}
        h.update(case_id.encode())
        h.update((m.get("image_sha256") or file_sha256(image_path(folder, case_id))).encode())
        h.update((m.get("labels_sha256") or file_sha256(label_path(folder, case_id))).encode())
        h.update(json.dumps(m.get("labelled_classes")).encode())
    return h.hexdigest()


def summarise_dataset(folder: Path, min_cases: int = 3, table: BoneTable | None = None) -> dict:
    """Cases, the bones labelled in each, voxels per bone, and warnings (bones with fewer than
    ``min_cases`` labelled examples; files that no longer match their manifest)."""

    table = table or default_table()
    folder = Path(folder)
    ids = check_dataset(folder, table)
    bones = {b.name: {"cases": 0, "voxels": 0} for b in table.foreground()}
    cases, warnings = [], []
    for case_id in ids:
        m = read_manifest(folder, case_id)
        if m is None:  # e.g. phantoms or an nnU-Net dataset: count from the label file
            counts = label_counts(sitk.GetArrayFromImage(read_image(label_path(folder, case_id))))
            voxels = {table[c].name: int(n) for c, n in enumerate(counts) if c and n and c < table.num_classes}
            labelled, source, edited = "all", "", None
        else:
            if file_sha256(label_path(folder, case_id)) != m.get("labels_sha256"):
                warnings.append(f"{case_id}: the label file changed since it was added (its manifest's checksum "
                                "differs); re-add the case to record the change")
            if m.get("image_sha256") and file_sha256(image_path(folder, case_id)) != m["image_sha256"]:
                warnings.append(f"{case_id}: the image changed since it was added (its manifest's checksum "
                                "differs): its labels may no longer fit it; re-add the case")
            voxels, labelled, source = m["voxels"], m["labelled_classes"], m["source"]["name"]
            edited = m["edits"]["edited"] if "edits" in m else None
        for name, n in voxels.items():
            if labelled == "all" or name in labelled:
                bones[name]["cases"] += 1
                bones[name]["voxels"] += int(n)
        cases.append({"case_id": case_id, "source": source, "bones": len(voxels), "labelled": labelled,
                      "edited": edited})
    few = [name for name, row in bones.items() if row["cases"] < min_cases]
    if few:
        warnings.append(f"{len(few)} bones have fewer than {min_cases} labelled cases: {', '.join(few[:12])}"
                        f"{' ...' if len(few) > 12 else ''}")
    return {"cases": cases, "bones": bones, "warnings": warnings}

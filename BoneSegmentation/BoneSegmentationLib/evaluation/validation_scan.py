"""A real validation CT that is not the test set: the chest CT in TotalSegmentator's own test files.

The two real scans in ``../shared/data/real`` are the test set, so nothing may be chosen on them.
The TotalSegmentator package on PyPI (2.18.0, Apache-2.0; Wasserthal et al., Radiology: AI 2023)
ships, besides those two scans, a third real CT for its aorta report: an early arterial chest CT at
1.5 mm with TotalSegmentator's masks of the heart, the aorta and T12. It is where a model's bone
in bright contrast (the aorta at 350 HU, the heart at 470 HU) and its reading of T12 can be
measured on real anatomy. The masks are TotalSegmentator's output, not manual truth.

The package's source archive is fetched with the project's verifying downloader (size and SHA-256
pinned here), and only the four named files are copied out of it, each checked against its own
SHA-256; nothing in the archive is run.
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from ..core.bones import BoneTable
from ..core.download import download_verified
from ..core.errors import DownloadError
from ..core.files import atomic_write, sha256_file

SDIST_URL = ("https://files.pythonhosted.org/packages/c3/53/7d654d2ec3fcb801ae54d318b0ffc18021aed528bf4e4df0753c"
             "af0c8a73/totalsegmentator-2.18.0.tar.gz")
SDIST_SIZE = 38049988
SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
ROOT = "totalsegmentator-2.18.0/tests/reference_files/"


@dataclass(frozen=True)
class ArchiveMember:
    """One file copied out of the archive: its path there, the name it gets here, its SHA-256."""

    path: str
    name: str
    sha256: str


MEMBERS = (
    ArchiveMember(ROOT + "aorta_report/example_ct.nii.gz", "chest_ct.nii.gz",
                  "372d98723e3283a8d4a0ae2f0ef1e581c0ad17b673b30b2e8d3e215180cc2a12"),
    ArchiveMember(ROOT + "pulmonary_report/models/heart.nii.gz", "heart.nii.gz",
                  "3c3eaf9e029e07aa3248e8d9973103b3168f35cc37756867bcb47b507cad288a"),
    ArchiveMember(ROOT + "aorta_report/test_result/models/aorta.nii.gz", "aorta.nii.gz",
                  "7fa1b813c63abcbe455b62a510c5e7a00fe0998f30541d5a8af46b20a88dd7f7"),
    ArchiveMember(ROOT + "aorta_report/test_result/models/vertebrae_T12.nii.gz", "vertebra_T12.nii.gz",
                  "7baada974082529dc6c1f39bee3ef0b4e384ad020c0b7c1d3971d69e9576e0af"),
)
MAX_MEMBER_BYTES = 64 << 20  # the CT is 10 MB; a member claiming more is not the pinned file


@dataclass(frozen=True)
class ValidationSource:
    """Where the archive comes from and what is taken out of it (tests point it at 127.0.0.1)."""

    url: str = SDIST_URL
    size: int = SDIST_SIZE
    sha256: str = SDIST_SHA256
    members: tuple[ArchiveMember, ...] = MEMBERS


def fetch_validation_scan(folder: Path, source: ValidationSource = ValidationSource(),
                          keep_archive: bool = False) -> Path:
    """The validation scan's files in ``folder`` (downloaded once, verified every time)."""
    folder = Path(folder)
    if all(_verified(folder / m.name, m.sha256) for m in source.members):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    archive = download_verified(source.url, folder / Path(source.url).name, source.size, source.sha256,
                                "the TotalSegmentator source archive", what="the pinned archive")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in source.members:
                _extract(tar, member, folder / member.name)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DownloadError(f"cannot read {archive}: {e}; delete it and fetch again") from None
    if not keep_archive:
        archive.unlink()
        archive.with_name(archive.name + ".lock").unlink(missing_ok=True)
    return folder


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _extract(tar: tarfile.TarFile, member: ArchiveMember, target: Path) -> None:
    """Copy one regular file out of the archive by its exact name, never by a name the archive
    chooses, and keep it only if its SHA-256 is the pinned one."""
    try:
        info = tar.getmember(member.path)
    except KeyError:
        raise DownloadError(f"the archive holds no {member.path}") from None
    if not info.isfile() or info.size > MAX_MEMBER_BYTES:
        raise DownloadError(f"{member.path} in the archive is not a regular file of at most "
                            f"{MAX_MEMBER_BYTES >> 20} MB; the archive is not the pinned one")

    def write(tmp: Path) -> None:
        with tar.extractfile(info) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if sha256_file(tmp) != member.sha256:
            raise DownloadError(f"{member.path} does not match its pinned SHA-256; it was not kept")

    atomic_write(target, write)


@dataclass(frozen=True)
class ValidationFigures:
    """What a model's labels show on the validation scan."""

    heart_called_bone: float  # share of the heart mask's voxels labelled any bone
    aorta_called_bone: float
    vessels_called_bone: float  # heart and aorta together, as the test scans' figure
    t12_dice: float  # the T12 label against TotalSegmentator's T12
    t12_found: float  # share of T12's voxels labelled any bone


def _masks(folder: Path, grid: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The heart, aorta and T12 masks (bool arrays) resampled onto ``grid``."""
    def mask(name: str) -> np.ndarray:
        image = sitk.ReadImage(str(Path(folder) / name))
        return sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0)) > 0

    return mask("heart.nii.gz"), mask("aorta.nii.gz"), mask("vertebra_T12.nii.gz")


def measure(labels: sitk.Image, folder: Path, table: BoneTable) -> ValidationFigures:
    """Figures of ``labels`` (the CT's grid) against the scan's masks, resampled onto that grid."""
    pred = sitk.GetArrayFromImage(labels)
    heart, aorta, t12 = _masks(folder, labels)
    bone = pred > 0
    named = pred == table.by_name("vertebra_T12").index
    vessels = heart | aorta
    return ValidationFigures(
        heart_called_bone=float(bone[heart].mean()), aorta_called_bone=float(bone[aorta].mean()),
        vessels_called_bone=float(bone[vessels].mean()),
        t12_dice=float(2 * (named & t12).sum() / max(1, named.sum() + t12.sum())),
        t12_found=float(bone[t12].mean()))


#: Head-to-foot extent of a slab: the test set's DICOM series is 20 slices of 2 mm.
SLAB_MM = 40.0


@dataclass(frozen=True)
class SlabFigures:
    """A model reading short slabs of the validation scan, each alone, against its own reading of
    the whole scan: what a 40 mm scan loses for want of the body above and below it, on real
    anatomy that is not the test set (the test set's thorax slab is such a scan)."""

    slabs: int
    agreement: float  # mean bone Dice, each slab read alone against the whole scan's reading of it
    lowest_agreement: float
    bone_kept: float  # bone voxels read in the slabs over the whole reading's bone in them
    vessels_called_bone: float  # heart and aorta in the slabs called bone when each is read alone
    whole_vessels_called_bone: float  # the same voxels in the whole scan's reading
    t12_found: float  # share of T12's voxels (in the slabs that hold it) called bone, read alone


def slab_starts(slices: int, slab: int) -> list[int]:
    """First slice of each slab: ``slab`` slices, half overlapping, the last ending at the scan's end."""
    if slab < 1 or slices < slab:
        raise ValueError(f"a slab of {slab} slices does not fit in {slices}")
    starts = list(range(0, slices - slab + 1, max(1, slab // 2)))
    if starts[-1] != slices - slab:
        starts.append(slices - slab)
    return starts


def measure_slabs(segment: Callable[[sitk.Image], sitk.Image], ct: sitk.Image, folder: Path,
                  slab_mm: float = SLAB_MM, whole: Optional[sitk.Image] = None) -> SlabFigures:
    """Read ``ct`` whole and in ``slab_mm`` slabs along its slice axis (``segment``: a CT in, labels
    on its grid out) and compare. Bone of any name counts: the figure is what is found, not named.
    ``whole``: the same segmenter's reading of the whole scan when it was already made."""
    whole = sitk.GetArrayFromImage(segment(ct) if whole is None else whole) > 0
    heart, aorta, t12 = _masks(folder, ct)
    vessels = heart | aorta
    n = max(1, int(round(slab_mm / ct.GetSpacing()[2])))
    starts = slab_starts(ct.GetSize()[2], n)
    agreements = []
    sums = dict(read=0, whole=0, vessels=0, vessels_read=0, vessels_whole=0, t12=0, t12_read=0)
    for z in starts:
        part = sitk.GetArrayFromImage(segment(ct[:, :, z:z + n])) > 0
        ref, ves, t = whole[z:z + n], vessels[z:z + n], t12[z:z + n]
        agreements.append(2 * np.count_nonzero(part & ref) / max(1, np.count_nonzero(part) + np.count_nonzero(ref)))
        for key, voxels in (("read", part), ("whole", ref), ("vessels", ves), ("vessels_read", part & ves),
                            ("vessels_whole", ref & ves), ("t12", t), ("t12_read", part & t)):
            sums[key] += np.count_nonzero(voxels)
    return SlabFigures(
        slabs=len(starts), agreement=float(np.mean(agreements)), lowest_agreement=float(np.min(agreements)),
        bone_kept=sums["read"] / max(1, sums["whole"]),
        vessels_called_bone=sums["vessels_read"] / max(1, sums["vessels"]),
        whole_vessels_called_bone=sums["vessels_whole"] / max(1, sums["vessels"]),
        t12_found=sums["t12_read"] / max(1, sums["t12"]))

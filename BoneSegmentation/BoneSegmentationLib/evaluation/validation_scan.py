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


def measure(labels: sitk.Image, folder: Path, table: BoneTable) -> ValidationFigures:
    """Figures of ``labels`` (the CT's grid) against the scan's masks, resampled onto that grid."""
    folder = Path(folder)
    pred = sitk.GetArrayFromImage(labels)

    def mask(name: str) -> np.ndarray:
        image = sitk.ReadImage(str(folder / name))
        return sitk.GetArrayFromImage(sitk.Resample(image, labels, sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0)) > 0

    heart, aorta, t12 = mask("heart.nii.gz"), mask("aorta.nii.gz"), mask("vertebra_T12.nii.gz")
    bone = pred > 0
    named = pred == table.by_name("vertebra_T12").index
    vessels = heart | aorta
    return ValidationFigures(
        heart_called_bone=float(bone[heart].mean()), aorta_called_bone=float(bone[aorta].mean()),
        vessels_called_bone=float(bone[vessels].mean()),
        t12_dice=float(2 * (named & t12).sum() / max(1, named.sum() + t12.sum())),
        t12_found=float(bone[t12].mean()))

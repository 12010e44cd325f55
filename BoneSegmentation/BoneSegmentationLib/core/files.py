"""File facts used everywhere: the atomic write (temp file + rename), SHA-256 of a file, and
the LPS <-> RAS flip between ITK's and Slicer's patient coordinates. One home for each."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import BoneSegmentationError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def safe_name(value: str, what: str, error: type[BoneSegmentationError] = BoneSegmentationError) -> str:
    """``value`` if it can be one path component (letters, digits, '.', '_', '-'; not starting
    with '.' or '-'; at most 100 characters), else ``error`` saying what was wrong. Every name
    that becomes part of a path (case IDs, model names and versions, run names) passes here."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
        raise error(f"{what} {value!r} is not allowed: use letters, digits, '.', '_' and '-' only, starting "
                    "with a letter or digit (no '/', '..' or leading '.')")
    return value


def temp_path(path: Path, suffix: str = "") -> Path:
    """A hidden name beside ``path`` that no other writer (process or thread) uses."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


def atomic_write(path: Path, write: Callable[[Path], object], suffix: str = "") -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it over ``path``:
    readers see the old file or the new one, never half of one. The temporary file is removed if
    writing fails; files get the user's umask like any other file they create."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def holds_text(path: Path, text: str) -> bool:
    """True when ``path`` holds exactly ``text`` as UTF-8 (sizes are compared first, so a large
    file is not read): a file this program wrote, told from someone's file of the same name."""
    data = text.encode("utf-8")
    return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive OS lock on ``path`` (created if needed) for the ``with`` block: other
    processes and threads wait. The lock goes with the process, so a killed writer never leaves
    a stale one behind (unlike a lock *file* whose existence is the lock)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if os.name == "nt":  # pragma: no cover - Slicer on Windows
            import msvcrt
            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
        else:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def unpacked_bytes(archive: zipfile.ZipFile) -> int:
    """What the members of a zip declare they unpack to: read before any is inflated, since a few
    MB of deflated zeros can unpack to tens of GB (a zip bomb), and both Python's zipfile and
    PyTorch's reader stop a member at its declared size."""
    return sum(info.file_size for info in archive.infolist())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lps_to_ras(point: Sequence[float]) -> list[float]:
    """ITK/DICOM patient coordinates (LPS) to Slicer's (RAS) and back: the same flip."""
    return [-float(point[0]), -float(point[1]), float(point[2])]


ras_to_lps = lps_to_ras

# the same flip as a matrix, for directions and vertex arrays
LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0])

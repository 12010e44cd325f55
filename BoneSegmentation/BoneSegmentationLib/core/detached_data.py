"""A header that keeps its voxels in other files (a MetaImage .mhd, a NRRD .nhdr) names them, and
ITK opens whatever path it names: an absolute path or ``../..`` would read any file the user can
read (``/etc/passwd`` as a CT) from a header that came from elsewhere. The data files, or each
slice file of a list or a ``%d`` pattern, must lie in the header's folder or below it."""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Iterator

from .errors import InputImageError
from .metaimage import read_header

NRRD_HEADER_LIMIT = 1 << 16  # bytes read for a NRRD header's fields (a header is a few hundred)


def check_data_names(header: Path, names: Iterable[str]) -> None:
    """Refuse a data file named outside ``header``'s folder: absolute (on any system: a header
    written on Windows may name ``C:\\``), or up with ``..``. Judged on the name as written, so a
    data file that is a link the user made beside the header still reads."""
    for name in names:
        posix = name.replace("\\", "/")
        up = posixpath.normpath(posix).split("/")[0] == ".."
        if up or PurePosixPath(posix).is_absolute() or PureWindowsPath(name).drive:
            raise InputImageError(f"cannot read {header}: its header names voxel data outside its own folder "
                                  f"({name!r}); keep its data files beside it and name them in the header "
                                  "by their file names alone")


def listed_names(path: Path, offset: int) -> Iterator[str]:
    """The file names listed one per line from byte ``offset`` of ``path`` (a ``LIST``), read a
    line at a time: every name ITK would open is checked, however long the list."""
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            if line.strip():
                yield line.decode("latin-1").strip()


def metaimage_data_names(path: Path) -> Iterable[str]:
    """The files a .mhd's ``ElementDataFile`` names: none for ``LOCAL`` (the data follow the
    header) or a header this cannot read (ITK's reader decides), the names listed after ``LIST``,
    the first word of a ``%d`` pattern ("slice%03d.raw 1 40 1"), or the one file."""
    fields, offset = read_header(path)
    source = fields.get("ElementDataFile", "LOCAL") if offset >= 0 else "LOCAL"
    return _named(path, source, offset)


def read_nrrd_head(path: Path) -> bytes:
    """The first ``NRRD_HEADER_LIMIT`` bytes of a NRRD file: its header, read once for every check."""
    with open(path, "rb") as f:
        return f.read(NRRD_HEADER_LIMIT)


def nrrd_data_names(path: Path, head: bytes) -> Iterable[str]:
    """The files a detached NRRD header's ``data file`` field names (``head``: ``read_nrrd_head``):
    none when the data follow the header, else as ``metaimage_data_names``."""
    if not head.startswith(b"NRRD"):
        return []
    offset = 0
    for line in head.split(b"\n"):
        offset += len(line) + 1
        if not line.strip():
            break  # the blank line that ends a header (attached data follow)
        key, sep, value = line.decode("latin-1").partition(":")
        if sep and not key.startswith("#") and key.strip().lower() in ("data file", "datafile"):
            return _named(path, value.strip(), offset)
    return []


def _named(path: Path, source: str, offset: int) -> Iterable[str]:
    """The file names a header's data field ``source`` stands for (``offset``: where a list's
    names start in ``path``)."""
    if source.upper() == "LOCAL":
        return []
    if source.upper().startswith("LIST"):
        return listed_names(path, offset)
    return [source.split()[0]] if "%" in source else [source]

"""What ITK's MetaImage (.mha/.mhd) reader does with a file cut short: it prints "data not read
completely" to the terminal and raises "File cannot be read", which names no cause. The header is
read here first, and data shorter than it declares are refused in one line that says so.

Where a .mhd's data files may lie is ``detached_data``'s check, run before this one."""

from __future__ import annotations

import zlib
from pathlib import Path

from .errors import InputImageError

# bytes per element of MetaIO's element types (MET_LONG is left out: its size varies by platform)
ELEMENT_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                 "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
MAX_HEADER_BYTES = 1 << 16  # a MetaImage header is a few hundred bytes of text
BLOCK = 1 << 22


def read_header(path: Path) -> tuple[dict[str, str], int]:
    """The header's fields (keys as written) and the offset of the first data byte (the byte after
    the ``ElementDataFile`` line, which ends a MetaImage header)."""
    fields: dict[str, str] = {}
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    offset = 0
    for line in head.split(b"\n"):
        end = offset + len(line) + 1
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            break
        fields[key.strip()] = value.strip()
        offset = end
        if key.strip() == "ElementDataFile":
            return fields, min(offset, len(head))
    return fields, -1


def declared_data(fields: dict[str, str]) -> int | None:
    """Bytes of voxel data the header declares (uncompressed), or None where it cannot say."""
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        element = ELEMENT_BYTES[fields["ElementType"]]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return None
    total = element * channels
    for d in dims:
        total *= max(0, d)
    return total


def check_metaimage_file(path: Path) -> None:
    """Refuse a .mha/.mhd whose voxel data are shorter than its header declares, or whose
    compressed stream is damaged; a header this cannot read is left to ITK's reader."""
    fields, offset = read_header(path)
    if offset < 0 or "DimSize" not in fields:
        return
    expected = declared_data(fields)
    source = fields["ElementDataFile"]
    if expected is None or source.upper().startswith("LIST") or "%" in source:
        return  # slices in files of their own: ITK's reader checks each
    if source.upper() == "LOCAL":
        data, start = path, offset
    else:
        data = path.parent / source
        try:
            start = max(0, int(fields.get("HeaderSize", "0")))
        except ValueError:
            return
        if fields.get("HeaderSize", "0").strip() == "-1":
            return  # "the data are the file's last bytes": nothing to compare with
        if not data.is_file():
            raise InputImageError(f"cannot read {path}: its voxel data file {source!r} is missing beside it; "
                                  "copy the .mhd together with its data file")
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if not compressed:
        have = data.stat().st_size - start
        if have < expected:
            raise InputImageError(f"{path} is truncated: its data hold {max(0, have)} of the {expected} bytes its "
                                  "header declares; copy or export the file again")
        return
    inflated = 0
    inflater = zlib.decompressobj()
    try:
        with open(data, "rb") as f:
            f.seek(start)
            pending = b""
            while not inflater.eof and inflated <= expected:  # one byte past the declared size is enough
                if not pending:
                    pending = f.read(BLOCK)
                    if not pending:
                        break
                inflated += len(inflater.decompress(pending, expected + 1 - inflated))
                pending = inflater.unconsumed_tail
    except zlib.error as e:
        raise InputImageError(f"cannot read {path}: its compressed voxel data are damaged ({e}); copy or export "
                              "the file again") from None
    if inflated > expected:
        raise InputImageError(f"cannot read {path}: its compressed voxel data inflate to more than the {expected} "
                              "bytes its header declares (damaged); copy or export the file again")
    if inflated < expected:
        raise InputImageError(f"{path} is truncated: its compressed data inflate to {inflated} of the {expected} "
                              "bytes its header declares; copy or export the file again")


"""Memory the machine can give now: read before anything large is allocated, so that a job or a
file too big for it is refused with the figures instead of dying in an allocation."""

from __future__ import annotations

import SimpleITK as sitk

from .errors import InputImageError


def available_bytes() -> int | None:
    """Memory the OS can give now (Linux /proc/meminfo; None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_declared_fits(name: str, reader: sitk.ImageFileReader, slices: int = 1,
                        available: int | None = None) -> None:
    """Refuse an image whose header (``reader``, its information read) declares more voxels than
    the memory free can hold (``available`` bytes; default what the OS says now), ``slices``
    times over for a DICOM series of one file per slice, before a voxel is read. A pixel type
    SimpleITK cannot size is left to the reader, which says why."""
    size = list(reader.GetSize())
    try:
        component = sitk.Image([1] * len(size), reader.GetPixelID(), 1).GetSizeOfPixelComponent()
    except RuntimeError:
        return
    if slices > 1:
        size[-1] *= slices
    declared = float(component * reader.GetNumberOfComponents())
    for n in size:
        declared *= n
    available = available_bytes() if available is None else available
    if available is not None and declared > 0.9 * available:
        raise InputImageError(
            f"cannot read {name}: its header declares {' x '.join(map(str, size))} voxels "
            f"({declared / 2 ** 30:,.1f} GiB), more than the {available / 2 ** 30:.1f} GiB of memory free; "
            "check the file, or crop or resample the CT first")

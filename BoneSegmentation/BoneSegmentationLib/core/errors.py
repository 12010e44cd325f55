"""Exceptions the library raises; the CLI prints their message as one line."""

import re


class BoneSegmentationError(Exception):
    """Base class: a problem the user can fix, with a message that says what and how."""


class InputImageError(BoneSegmentationError):
    """The CT file, folder or array cannot be used (missing, corrupt, not 3D, NaN, ...)."""


class ModelFileError(BoneSegmentationError):
    """A model file is missing, corrupt or does not describe itself correctly."""


class DownloadError(BoneSegmentationError):
    """A model download failed or its checksum does not match the registry."""


class Cancelled(BoneSegmentationError):
    """The user cancelled a long-running operation."""


class DatasetError(BoneSegmentationError):
    """A training dataset folder or a case to add to it is inconsistent."""


def itk_reason(e: Exception) -> str:
    """The words in an ITK exception that say what is wrong, for a one-line error: the deepest
    library's own reason where it gives one (NRRD's "[nrrd] _nrrdEncodingRaw_read: fread got only
    3750 ... of 4000"), else the last ITK ERROR line without its class, address and dangling colon."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for line in reversed(lines):
        said = re.match(r"\[\w+\]\s+\w+:\s*(\S.*)$", line)
        if said:
            return said.group(1)[:200]
    useful = [ln for ln in lines if "Description:" in ln or "ERROR" in ln.upper()]
    line = re.sub(r"^(itk::)?ITK ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", (useful or lines or [""])[-1], flags=re.I)
    return line.rstrip(": ")[:200]

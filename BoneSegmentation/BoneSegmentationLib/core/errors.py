"""Exceptions the library raises; the CLI prints their message as one line."""


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

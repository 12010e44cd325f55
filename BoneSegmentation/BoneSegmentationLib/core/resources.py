"""Where the shared data files live (bone table, model registry, bundled models).

The single ``Resources/`` folder sits at the repository root. A wheel installs it inside the
package as ``BoneSegmentationLib/resources``; the Slicer extension installs it next to the
module. ``BONESEGMENTATION_RESOURCES`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent.parent  # the BoneSegmentationLib package folder


def resources_dir() -> Path:
    """Return the folder that holds ``bones.csv`` and ``models.json``."""
    candidates = []
    if os.environ.get("BONESEGMENTATION_RESOURCES"):
        candidates.append(Path(os.environ["BONESEGMENTATION_RESOURCES"]))
    candidates += [_HERE / "resources", _HERE.parent.parent / "Resources", _HERE.parent / "Resources"]
    for folder in candidates:
        if (folder / "bones.csv").is_file():
            return folder
    raise FileNotFoundError(
        "BoneSegmentation resources (bones.csv) not found; looked in: "
        + ", ".join(str(c) for c in candidates)
    )


def resource_path(name: str) -> Path:
    """Path of one file in the resources folder (it may not exist, e.g. an optional model)."""
    return resources_dir() / name

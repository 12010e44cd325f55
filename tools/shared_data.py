"""Where the project's shared data lie (``../shared`` beside the repository), named once for the
tools: the real test scans (reported, never trained or chosen on) and the real body's label map
the synthesiser draws its anatomy from (TotalSegmentator data, CC BY 4.0: see its README)."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "data" / "real"
ANATOMY = SHARED / "data" / "anatomy" / "s0011_labels.nii.gz"

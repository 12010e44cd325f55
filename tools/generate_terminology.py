"""Regenerate Resources/SegmentationCategoryTypeModifier-BoneSegmentation.term.json from bones.csv."""

from BoneSegmentationLib.core.resources import resource_path
from BoneSegmentationLib.core.terminology import write_terminology

if __name__ == "__main__":
    path = write_terminology(resource_path("SegmentationCategoryTypeModifier-BoneSegmentation.term.json"))
    print(f"wrote {path}")

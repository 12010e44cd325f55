"""What the consistency step changed, bone by bone, in words a user can check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Change:
    bone: str  # machine name of the bone the user should look at (the label after the change)
    kind: str  # renumbered | side | fragment | removed
    text: str  # for the review list: "renumbered T8 → T7", "moved to the right side"
    voxels: int = 0


@dataclass
class ConsistencyReport:
    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""  # why the step did not run ("--no-anatomy"), else ""
    outside_body_on_input_grid: int = 0  # label voxels beyond the body once on the input's grid, removed
    cores_filled: int = 0  # background voxels inside a bone's cross-section with bone-like intensity, filled
    edges_grown: int = 0  # bright background voxels at a bone's edge on the input grid, given its label
    canals_filled: int = 0  # background voxels enclosed by a long bone's shaft on the input grid, given its label
    enclosed_filled: int = 0  # background voxels walled in a slice by a bone and cortex on the input grid (marrow.py)

    def add(self, bone: str, kind: str, text: str, voxels: int = 0) -> None:
        self.changes.append(Change(bone, kind, text, int(voxels)))

    def by_bone(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in self.changes:
            out.setdefault(c.bone, []).append(c.text)
        return out

    def to_json(self) -> dict:
        return {"ran": not self.skipped, "skipped": self.skipped, "seconds": round(self.seconds, 3),
                "outside_body_on_input_grid": self.outside_body_on_input_grid, "cores_filled": self.cores_filled,
                "edges_grown": self.edges_grown, "canals_filled": self.canals_filled,
                "enclosed_filled": self.enclosed_filled,
                "changes": [asdict(c) for c in self.changes]}

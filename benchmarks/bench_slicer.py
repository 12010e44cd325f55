"""The Slicer side, side by side with Slicer's own path in one process (slicer-core, CPU):

1. segmentation node from the label map of a full 2 mm phantom (125 bones): ours
   (``labels_to_segmentation_node``: one shared layer, IDs/names/colours/terminology set) versus
   ``vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode`` (one segment per label,
   names and colours not set);
2. 3D surfaces for all bones (what "Show 3D" costs): Slicer's ``CreateClosedSurfaceRepresentation``
   (per segment, its default flying edges + smoothing 0.5) versus ``add_closed_surfaces`` (one
   multi-label surface-nets pass, same windowed-sinc smoothing), which the module uses;
3. bone meshes to files: ``export_meshes`` (GLB and STL) versus ``CreateClosedSurfaceRepresentation``
   + ``ExportSegmentsClosedSurfaceRepresentationToFiles`` (STL), each from a fresh node.

    pip install -e ".[benchmark]"
    python benchmarks/bench_slicer.py [--seed 0] [--spacing 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

import slicer  # noqa: E402

from BoneSegmentationLib.export.meshes import export_meshes  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import make_phantom  # noqa: E402
from BoneSegmentationLib.slicer.nodes import (image_to_volume_node, labels_to_segmentation_node,  # noqa: E402
                                              add_closed_surfaces, register_surface_rules)


def ours_node(scene, labels):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    labels_to_segmentation_node(labels, node)
    return node


def slicer_node(scene, labels):
    labelmap = image_to_volume_node(labels, scene, "labels", labelmap=True)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node):
        raise RuntimeError("ImportLabelmapToSegmentationNode failed")
    return node


def slicer_surfaces(node) -> int:
    node.CreateClosedSurfaceRepresentation()
    seg = node.GetSegmentation()
    return sum(seg.GetNthSegment(k).GetRepresentation("Closed surface").GetNumberOfCells()
               for k in range(seg.GetNumberOfSegments()))


def slicer_mesh_files(scene, labels, folder: Path) -> int:
    node = slicer_node(scene, labels)
    node.CreateClosedSurfaceRepresentation()
    folder.mkdir()
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
            str(folder), node, None, "STL", False):
        raise RuntimeError("ExportSegmentsClosedSurfaceRepresentationToFiles failed")
    return len(list(folder.glob("*.stl")))


def row(name: str, m, ref, extra: str = "") -> str:
    ratio = f"{m.elapsed_s / ref.elapsed_s:.2f}x / {m.peak_mib / max(ref.peak_mib, 1e-9):.2f}x" if ref else "reference"
    return f"| {name} | {m.elapsed_s:.2f} s | {m.peak_mib:.0f} MiB | {ratio} | {extra} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spacing", type=float, default=2.0)
    args = ap.parse_args()
    _, labels, _ = make_phantom(args.seed, spacing=args.spacing, partial=False)
    register_surface_rules()
    scene = slicer.vtkMRMLScene()
    size = "x".join(map(str, labels.GetSize()))
    print(f"phantom seed {args.seed}, {args.spacing:g} mm, {size} voxels\n")
    print("| step | time | peak memory | time / memory vs Slicer | |\n|---|---|---|---|---|")

    with measure() as ref:
        node_ref = slicer_node(scene, labels)
    print(row("node: Slicer ImportLabelmapToSegmentationNode", ref, None,
              f"{node_ref.GetSegmentation().GetNumberOfSegments()} segments"))
    with measure() as m:
        node = ours_node(scene, labels)
    print(row("node: ours (IDs, names, colours, terminology)", m, ref,
              f"{node.GetSegmentation().GetNumberOfSegments()} segments"))

    with measure() as ref:
        n_ref = slicer_surfaces(node_ref)
    print(row("3D surfaces: Slicer CreateClosedSurfaceRepresentation", ref, None, f"{n_ref} triangles"))
    with measure() as m:
        n = add_closed_surfaces(node, labels)
    print(row("3D surfaces: ours (add_closed_surfaces)", m, ref, f"{n} triangles"))
    scene.Clear(1)

    with tempfile.TemporaryDirectory() as tmp:
        with measure() as ref:
            files = slicer_mesh_files(scene, labels, Path(tmp) / "slicer")
        print(row("mesh files: Slicer closed surface + export (STL)", ref, None, f"{files} files"))
        for fmt in ("stl", "glb"):
            with measure() as m:
                result = export_meshes(labels, Path(tmp) / fmt, fmt=fmt)
            print(row(f"mesh files: export_meshes ({fmt.upper()})", m, ref,
                      f"{len(result.bones)} bones, {sum(len(b.triangles) for b in result.bones)} triangles"))


if __name__ == "__main__":
    main()

"""Bone meshes: closed, manifold, volume-true surfaces in physical space; glTF/OBJ/STL/PLY that
real readers load; clear errors for bad label maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.cli import main
from BoneSegmentationLib.core.errors import InputImageError
from BoneSegmentationLib.core.labelmaps import make_well_composed
from BoneSegmentationLib.export.meshes import bone_meshes, export_meshes, preview_png
from BoneSegmentationLib.synthetic.phantom import make_phantom

T = default_table()


@pytest.fixture(scope="module")
def labels():
    return make_phantom(1, spacing=2.0, partial=False)[1]


def _open_edges(m, non_manifold: bool = False) -> int:
    poly = vtk.vtkPolyData()
    pts = vtk.vtkPoints()
    pts.SetData(numpy_support.numpy_to_vtk(m.points, deep=True))
    poly.SetPoints(pts)
    cells = vtk.vtkCellArray()
    cells.SetData(3, numpy_support.numpy_to_vtkIdTypeArray(m.triangles.astype(np.int64).ravel(), deep=True))
    poly.SetPolys(cells)
    edges = vtk.vtkFeatureEdges()
    edges.SetInputData(poly)
    edges.BoundaryEdgesOn()
    edges.SetNonManifoldEdges(non_manifold)
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return edges.GetOutput().GetNumberOfCells()


def test_every_bone_closed_and_volume_true(labels):
    meshes = bone_meshes(labels, max_triangles=0)
    assert [m.index for m in meshes] == list(range(1, 126))
    open_bones = {m.name: _open_edges(m) for m in meshes if _open_edges(m)}
    assert not open_bones, f"surfaces with holes: {open_bones}"
    non_manifold = {m.name: n for m in meshes if (n := _open_edges(m, non_manifold=True))}
    assert not non_manifold, f"edges shared by more than two triangles: {non_manifold}"
    ratios = {m.name: m.volume_ml / m.voxel_volume_ml for m in meshes}
    bad = {k: round(v, 3) for k, v in ratios.items() if abs(v - 1) > 0.10}
    assert not bad, f"volume off by more than 10 %: {bad}"
    hands = [ratios[b.name] for b in T.foreground() if b.region == "hand"]
    assert min(hands) > 0.9


def test_edge_and_corner_contacts_are_resolved():
    """Two voxels of a bone touching along an edge, two touching at a corner, and a checkerboard
    of two bones: each would make a pinched, non-manifold surface."""
    a = np.zeros((8, 8, 8), np.uint8)
    a[2, 2, 2] = a[2, 3, 3] = 1  # edge contact
    a[5, 5, 5] = a[6, 6, 6] = 2  # corner contact
    a[2, 5, 5] = a[3, 6, 5] = 3
    a[2, 6, 5] = a[3, 5, 5] = 4  # 3 and 4 in a checkerboard
    before = a.copy()
    changed = make_well_composed(a)
    assert changed >= int((a != before).sum()) > 0
    assert np.all(a[before > 0] > 0)  # voxels are only added to bones (or, in the checkerboard, passed on)
    assert set(np.unique(a)) == {0, 1, 2, 3, 4}
    img = sitk.GetImageFromArray(a)
    meshes = bone_meshes(img, smoothing=0, manifold=False)
    assert all(_open_edges(m) == 0 and _open_edges(m, non_manifold=True) == 0 for m in meshes)
    raw = bone_meshes(sitk.GetImageFromArray(before), smoothing=0, manifold=False)
    assert sum(_open_edges(m, non_manifold=True) for m in raw) > 0  # the configurations were real


def test_decimated_meshes_stay_within_budget_and_volume(labels):
    meshes = bone_meshes(labels, max_triangles=2000)
    assert max(len(m.triangles) for m in meshes) <= 2000 * 1.05
    assert all(abs(m.volume_ml / m.voxel_volume_ml - 1) < 0.1 for m in meshes)


def test_flipped_oblique_input_lines_up_in_physical_space(labels):
    a = sitk.GetArrayFromImage(labels)[60:140]  # a slab, to stay fast
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(labels.GetSpacing())
    img.SetDirection(labels.GetDirection())
    img.SetOrigin(labels.TransformIndexToPhysicalPoint((0, 0, 60)))
    flipped = sitk.Flip(img, [True, False, True])  # same anatomy, mirrored index order
    rot = sitk.Euler3DTransform((0, 0, 0), 0.2, -0.1, 0.3)
    oblique = sitk.Image(flipped)
    oblique.SetDirection((np.array(rot.GetMatrix()).reshape(3, 3)
                          @ np.array(flipped.GetDirection()).reshape(3, 3)).ravel())
    for image in (img, flipped, oblique):
        meshes = bone_meshes(image, coordinates="LPS", max_triangles=0)
        arr = sitk.GetArrayViewFromImage(image)
        for m in meshes[:8]:
            idx = np.argwhere(arr == m.index).mean(0)[::-1]
            centre = np.array(image.TransformContinuousIndexToPhysicalPoint(idx.tolist()))
            p = m.points.astype(np.float64)[m.triangles]
            w = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2]))
            mesh_centre = (w[:, None] * p.sum(1)).sum(0) / (4 * w.sum())  # volume centroid
            assert np.linalg.norm(mesh_centre - centre) < 1.0, (m.name, mesh_centre, centre)
            assert m.volume_ml > 0, "faces point outward whatever the direction matrix"


def test_ras_is_lps_with_x_and_y_negated(labels):
    lps = bone_meshes(labels, coordinates="LPS", bones=[T.by_name("femur_left").index])[0]
    ras = bone_meshes(labels, coordinates="RAS", bones=[T.by_name("femur_left").index])[0]
    assert np.allclose(ras.points[:, :2], -lps.points[:, :2], atol=1e-3) and np.allclose(ras.points[:, 2], lps.points[:, 2])
    assert lps.points[:, 0].mean() > 0, "LPS +x is the patient's left"


def test_formats_load_back_with_real_readers(labels, tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    trimesh = pytest.importorskip("trimesh")
    sub = [T.by_name(n).index for n in ("femur_left", "vertebra_L3", "lunate_right", "cranium")]
    for fmt in ("glb", "gltf", "obj", "stl", "ply"):
        out = export_meshes(labels, tmp_path / fmt, fmt=fmt, bones=sub)
        side = json.loads((tmp_path / fmt / "bones.json").read_text())
        assert [b["name"] for b in side["bones"]] == ["cranium", "vertebra_L3", "lunate_right", "femur_left"]
        assert side["units"] == "mm" and all(b["triangles"] > 0 for b in side["bones"])
        if fmt in ("glb", "gltf"):
            g = pygltflib.GLTF2().load(str(tmp_path / fmt / f"bones.{fmt}"))
            names = [n.name for n in g.nodes]
            assert {"Left femur", "L3 vertebra", "Right lunate", "pelvis", "spine", "hand", "skull"}  # bones.csv regions <= set(names)
            femur = next(n for n in g.nodes if n.name == "Left femur")
            mat = g.materials[g.meshes[femur.mesh].primitives[0].material]
            assert mat.name == "femur_left"
            assert g.accessors[g.meshes[femur.mesh].primitives[0].attributes.POSITION].count == \
                len(out.bones[-1].points)
            scene = trimesh.load(str(tmp_path / fmt / f"bones.{fmt}"))
            assert len(scene.geometry) == 4
        elif fmt == "obj":
            text = (tmp_path / fmt / "bones.obj").read_text()
            assert "mtllib bones.mtl" in text and "g femur_left" in text and "usemtl lunate_right" in text
            assert "newmtl femur_left" in (tmp_path / fmt / "bones.mtl").read_text()
            mesh = trimesh.load(str(tmp_path / fmt / "bones.obj"), force="mesh")
            assert len(mesh.vertices) == sum(len(m.points) for m in out.bones)
        elif fmt == "stl":
            for m in out.bones:
                stl = trimesh.load(str(tmp_path / fmt / f"{m.name}.stl"))
                assert len(stl.faces) == len(m.triangles)
                assert stl.volume / 1000 == pytest.approx(m.volume_ml, rel=1e-3)
        else:
            ply = trimesh.load(str(tmp_path / fmt / "bones.ply"))
            colours = np.asarray(ply.visual.vertex_colors)[:, :3]
            assert tuple(colours[0]) == T.by_name("cranium").rgb
    png = preview_png(out.bones, tmp_path / "preview.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_existing_files_are_not_overwritten(labels, tmp_path):
    sub = [T.by_name("femur_left").index]
    export_meshes(labels, tmp_path, fmt="stl", bones=sub)
    with pytest.raises(FileExistsError):
        export_meshes(labels, tmp_path, fmt="stl", bones=sub)


def test_bad_label_maps_are_refused(labels, tmp_path, capsys):
    empty = sitk.Image(10, 10, 10, sitk.sitkUInt8)
    with pytest.raises(InputImageError, match="no bone"):
        bone_meshes(empty)
    big = sitk.Image(10, 10, 10, sitk.sitkUInt16)
    big[5, 5, 5] = 300
    with pytest.raises(InputImageError, match="outside the bone table"):
        bone_meshes(big)
    with pytest.raises(InputImageError, match="3D scalar"):
        bone_meshes(sitk.Image(10, 10, sitk.sitkUInt8))
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    assert main(["meshes", str(tmp_path / "empty.nii.gz"), "-o", str(tmp_path / "out")]) == 2
    assert "no bone" in capsys.readouterr().err


def test_output_file_names_its_format_and_a_folder_gets_bones(tmp_path, capsys):
    """-o X.glb writes the file X.glb (not a folder named X.glb); -o DIR writes DIR/bones.<format>."""
    lab = sitk.Image(24, 24, 24, sitk.sitkUInt8)
    lab.SetSpacing((2.0, 2.0, 2.0))
    arr = np.zeros((24, 24, 24), np.uint8)
    arr[6:18, 6:18, 6:18] = T.by_name("femur_left").index
    lab = sitk.GetImageFromArray(arr)
    lab.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(lab, str(tmp_path / "labels.nii.gz"))
    for name in ("skeleton.glb", "skeleton.obj", "skeleton.ply", "skeleton.gltf"):
        assert main(["meshes", str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "out" / name)]) == 0
        assert (tmp_path / "out" / name).is_file() and (tmp_path / "out" / "skeleton.json").is_file()
        (tmp_path / "out" / "skeleton.json").unlink()
    assert (tmp_path / "out" / "skeleton.mtl").is_file() and (tmp_path / "out" / "skeleton.bin").is_file()
    assert "mtllib skeleton.mtl" in (tmp_path / "out" / "skeleton.obj").read_text()
    assert main(["meshes", str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "folder"), "--format", "stl"]) == 0
    assert (tmp_path / "folder" / "femur_left.stl").is_file() and (tmp_path / "folder" / "bones.json").is_file()
    capsys.readouterr()
    assert main(["meshes", str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "x.glb"), "--format", "obj"]) == 2
    assert "drop one of them" in capsys.readouterr().err

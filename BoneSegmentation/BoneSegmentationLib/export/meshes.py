"""Bone meshes for VR and 3D printing: one closed surface per bone from the label map in a single
multi-label pass (VTK's ``vtkSurfaceNets3D``), constrained smoothing, quadric decimation to a
triangle budget, outward normals, millimetres in the CT's physical space (RAS as in Slicer, or LPS).

Formats: glTF/GLB (one node per bone named by its display name, a material of its colour, nodes
grouped by region; vertex data in mm under a root node that turns them into glTF's frame: metres,
+Y up (superior), +Z the body's front, centred at the skeleton's centre of mass; ``gltf_frame=
"scanner"`` keeps the CT's RAS/LPS axes and origin, in metres, for registration work),
OBJ + MTL (one group and material per bone), STL (one file per bone, named by machine name), PLY
(all bones, vertex colours). A JSON sidecar lists volume, area, triangles and bounding box.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..core.bones import BoneTable, default_table
from ..core.errors import InputImageError
from ..core.files import LPS_RAS_FLIP, atomic_write, atomic_write_bytes, atomic_write_text
from ..core.labelmaps import bone_label_counts, make_well_composed

DEFAULT_SMOOTHING = 0.25  # measured: every phantom bone, distal phalanges included, within 2 % of its voxel volume
FORMATS = ("glb", "gltf", "obj", "stl", "ply")
GLTF_FRAMES = ("upright", "scanner")
FLIP = LPS_RAS_FLIP
# glTF is +Y up, +Z front, right-handed: x = patient's left, y = superior, z = anterior
TO_GLTF_AXES = {"RAS": np.array([[-1.0, 0, 0], [0, 0, 1], [0, 1, 0]]),
                "LPS": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])}


@dataclass
class BoneMesh:
    index: int
    name: str
    display_name: str
    group: str
    rgb: tuple[int, int, int]
    points: np.ndarray = field(repr=False)  # (n, 3) float32, mm
    normals: np.ndarray = field(repr=False)  # (n, 3) float32
    triangles: np.ndarray = field(repr=False)  # (m, 3) uint32
    voxel_volume_ml: float = 0.0

    @property
    def volume_ml(self) -> float:
        """Enclosed volume (divergence theorem), in ml."""
        p = self.points.astype(np.float64)[self.triangles]
        return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0 / 1000.0)

    @property
    def centroid_mm(self) -> np.ndarray:
        """Centre of the enclosed volume (of the tetrahedra from the origin to each face)."""
        p = self.points.astype(np.float64)[self.triangles]
        volumes = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])) / 6.0
        return (volumes[:, None] * p.sum(1) / 4.0).sum(0) / volumes.sum()

    @property
    def area_mm2(self) -> float:
        p = self.points.astype(np.float64)[self.triangles]
        return float(np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1).sum() / 2.0)

    def polydata(self):
        """The mesh as a ``vtkPolyData`` with point normals named "Normals" (for Slicer and rendering)."""
        import vtk
        from vtk.util import numpy_support

        poly = vtk.vtkPolyData()
        points = vtk.vtkPoints()
        points.SetData(numpy_support.numpy_to_vtk(self.points, deep=True))
        poly.SetPoints(points)
        cells = vtk.vtkCellArray()
        cells.SetData(3, numpy_support.numpy_to_vtkIdTypeArray(self.triangles.astype(np.int64).ravel(), deep=True))
        poly.SetPolys(cells)
        normals = numpy_support.numpy_to_vtk(self.normals, deep=True)
        normals.SetName("Normals")
        poly.GetPointData().SetNormals(normals)
        return poly

    def summary(self) -> dict:
        return {"index": self.index, "name": self.name, "display_name": self.display_name, "group": self.group,
                "colour_rgb": list(self.rgb), "volume_ml": round(self.volume_ml, 3),
                "voxel_volume_ml": round(self.voxel_volume_ml, 3), "surface_area_mm2": round(self.area_mm2, 1),
                "triangles": int(len(self.triangles)), "vertices": int(len(self.points)),
                "bbox_min_mm": [round(float(v), 2) for v in self.points.min(0)],
                "bbox_max_mm": [round(float(v), 2) for v in self.points.max(0)]}


@dataclass
class MeshExport:
    bones: list[BoneMesh]
    files: list[Path]
    seconds: float
    coordinates: str
    gltf_frame: str = "upright"


def centre_of_mass_mm(meshes: list[BoneMesh]) -> np.ndarray:
    """Volume-weighted centre of all bones (bone density taken as uniform)."""
    volumes = np.array([m.volume_ml for m in meshes])
    return (np.array([m.centroid_mm for m in meshes]) * volumes[:, None]).sum(0) / volumes.sum()


def gltf_root_matrix(meshes: list[BoneMesh], coordinates: str, frame: str) -> np.ndarray:
    """The 4x4 transform from vertex millimetres to the glTF scene: ``upright`` turns the body to
    +Y up and +Z front and puts its centre of mass at the origin; ``scanner`` only scales to metres."""
    if frame not in GLTF_FRAMES:
        raise ValueError(f"glTF frame must be one of {', '.join(GLTF_FRAMES)}, not {frame!r}")
    matrix = np.eye(4)
    if frame == "scanner":
        matrix[:3, :3] *= 0.001
        return matrix
    axes = TO_GLTF_AXES[coordinates] * 0.001
    matrix[:3, :3] = axes
    matrix[:3, 3] = -axes @ centre_of_mass_mm(meshes)
    return matrix


def bone_meshes(labels: sitk.Image, smoothing: float = DEFAULT_SMOOTHING, max_triangles: int = 20000,
                coordinates: str = "RAS", bones: Optional[list[int]] = None,
                table: Optional[BoneTable] = None, manifold: bool = True) -> list[BoneMesh]:
    """Surfaces of the bones in ``labels`` (all present, or the class indices in ``bones``).

    ``manifold``: first remove edge- and corner-only voxel contacts (``make_well_composed``, about
    1 s for a 2 mm body), so every edge has exactly two triangles; display can skip it."""
    table = table or default_table()
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(f"a 3D scalar label map is needed (got {labels.GetDimension()}D, "
                              f"{labels.GetNumberOfComponentsPerPixel()} components)")
    if coordinates not in ("RAS", "LPS"):
        raise ValueError("coordinates must be 'RAS' or 'LPS'")
    array = sitk.GetArrayViewFromImage(labels)
    counts, wanted = wanted_bones(array, bones, table)
    if not wanted:
        raise InputImageError("the label map contains no bone (all voxels are background)")

    padded = np.pad(np.ascontiguousarray(array, dtype=np.uint8), 1)  # closed surfaces at the volume's edge
    if manifold:
        make_well_composed(padded)
    spacing = np.array(labels.GetSpacing())
    points, tris, sides = _surface_nets(padded, wanted, spacing)
    direction = np.array(labels.GetDirection()).reshape(3, 3)

    def to_world(p: np.ndarray) -> np.ndarray:
        world = p @ direction.T + np.array(labels.GetOrigin())  # LPS mm
        return world @ FLIP.T if coordinates == "RAS" else world

    world = to_world(points)
    mirrored = np.linalg.det(direction @ (FLIP if coordinates == "RAS" else np.eye(3))) < 0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    meshes = []
    for value in wanted:
        # SurfaceNets orients a face outward of the label in its first BoundaryLabels component:
        # faces where this bone is the second label are reversed so all face outward of it
        first, second = sides[:, 0] == value, sides[:, 1] == value
        faces, vertices = np.concatenate([tris[first], tris[second][:, ::-1]]), world
        if not len(faces):
            # a bone of a voxel or two that removing its neighbours' edge contacts took over: it
            # is meshed alone (its own contacts removed into the background), so every bone asked
            # for gets its surface, overlapping its neighbour by those voxels
            # (within its bounding box: a whole-volume pass for a voxel or two would cost a second)
            box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(array == value))
            alone = np.pad((array[box] == value).astype(np.uint8) * np.uint8(value), 1)
            make_well_composed(alone)
            alone_points, faces, alone_sides = _surface_nets(alone, [value], spacing)
            faces = np.where((alone_sides[:, 0] == value)[:, None], faces, faces[:, ::-1])
            corner = np.array([b.start for b in box[::-1]]) * spacing  # the box's first voxel, x y z mm
            vertices = to_world(alone_points + corner)
        if mirrored:
            faces = faces[:, ::-1]
        mesh = _finish(vertices, faces, max_triangles, smoothing)
        bone = table[value]
        meshes.append(BoneMesh(value, bone.name, bone.display_name, bone.region, bone.rgb,
                               *mesh, voxel_volume_ml=float(counts[value]) * voxel_ml))
    return meshes


def _surface_nets(padded: np.ndarray, values: list[int], spacing: np.ndarray):
    """Surface nets over the (padded) label map: points (voxel mm from the unpadded origin),
    triangles and the two labels each triangle separates."""
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(padded.shape[2], padded.shape[1], padded.shape[0])
    image.SetSpacing(*spacing)
    image.SetOrigin(*(-spacing))
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(padded.ravel(), deep=False))  # padded outlives it
    nets = vtk.vtkSurfaceNets3D()
    nets.SetInputData(image)
    for k, value in enumerate(values):
        nets.SetValue(k, value)
    nets.SetOutputMeshTypeToTriangles()
    nets.SetBackgroundLabel(0)
    nets.SmoothingOff()  # exact voxel surfaces here; smoothed per bone by a non-shrinking filter
    nets.Update()
    out = nets.GetOutput()
    points = numpy_support.vtk_to_numpy(out.GetPoints().GetData()).astype(np.float64)
    tris = numpy_support.vtk_to_numpy(out.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    sides = numpy_support.vtk_to_numpy(out.GetCellData().GetArray("BoundaryLabels")).reshape(-1, 2)
    return points, tris, sides


def _finish(world: np.ndarray, tris: np.ndarray, max_triangles: int, smoothing: float):
    """Compact the vertices of one bone, smooth (windowed sinc: no shrinking, as Slicer's surface
    smoothing), decimate, compute point normals."""
    import vtk
    from vtk.util import numpy_support

    used, inverse = np.unique(tris.ravel(), return_inverse=True)
    pts, faces = world[used], inverse.reshape(-1, 3)
    poly = vtk.vtkPolyData()
    vpts = vtk.vtkPoints()
    vpts.SetData(numpy_support.numpy_to_vtk(pts, deep=True))
    poly.SetPoints(vpts)
    cells = vtk.vtkCellArray()
    cells.SetData(3, numpy_support.numpy_to_vtkIdTypeArray(faces.astype(np.int64).ravel(), deep=True))
    poly.SetPolys(cells)
    smoothing = max(0.0, min(1.0, smoothing))
    if smoothing > 0:
        sinc = vtk.vtkWindowedSincPolyDataFilter()
        sinc.SetInputData(poly)
        sinc.SetNumberOfIterations(20)
        sinc.SetPassBand(10.0 ** (-4.0 * smoothing))  # Slicer's mapping of its 0..1 smoothing factor
        sinc.BoundarySmoothingOff()
        sinc.FeatureEdgeSmoothingOff()
        sinc.NonManifoldSmoothingOn()
        sinc.NormalizeCoordinatesOn()
        sinc.Update()
        poly = sinc.GetOutput()
    if max_triangles and len(faces) > max_triangles:
        poly = _decimate_closed(poly, 1.0 - max_triangles / len(faces))
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputData(poly)
    normals.SplittingOff()
    normals.ConsistencyOff()  # the winding is already outward; do not let VTK reorder faces
    normals.ComputePointNormalsOn()
    normals.Update()
    res = normals.GetOutput()
    p = numpy_support.vtk_to_numpy(res.GetPoints().GetData()).astype(np.float32)
    n = numpy_support.vtk_to_numpy(res.GetPointData().GetNormals()).astype(np.float32)
    f = numpy_support.vtk_to_numpy(res.GetPolys().GetConnectivityArray()).reshape(-1, 3).astype(np.uint32)
    if _signed_volume(p, f) < 0:  # keep outward after decimation/consistency
        f, n = f[:, ::-1].copy(), -n
    return p, n, f


def _decimate_closed(poly, reduction: float):
    """Decimate to about ``1 - reduction`` of the triangles, keeping the surface closed and
    manifold (what 3D printing needs). Quadric decimation keeps the shape best but may join two
    close sheets (a thin skull) into an edge shared by more than two triangles (one bone in a few
    phantoms at the default budget, more at small budgets). Each step keeps only a closed manifold
    result; when a step breaks the surface, the largest step that does not is found by bisection
    (a topology-preserving decimation when even that fails), and steps repeat from the last good
    surface, so the budget is approached as far as a closed surface allows."""
    import vtk

    def quadric(source, r: float):
        dec = vtk.vtkQuadricDecimation()
        dec.SetInputData(source)
        dec.SetTargetReduction(r)
        dec.VolumePreservationOn()
        dec.Update()
        return dec.GetOutput()

    def topology_preserving(source, r: float):
        dec = vtk.vtkDecimatePro()
        dec.SetInputData(source)
        dec.SetTargetReduction(r)
        dec.PreserveTopologyOn()
        dec.SplittingOff()
        dec.BoundaryVertexDeletionOff()
        dec.Update()
        return dec.GetOutput()

    def closed(result) -> bool:
        return is_closed_manifold(_faces(result))

    target = (1.0 - reduction) * poly.GetNumberOfCells()
    current = poly
    for _ in range(6):
        cells = current.GetNumberOfCells()
        if cells <= target * 1.02:
            break
        full = 1.0 - target / cells
        result = quadric(current, full)
        if not closed(result):  # bisect the reduction: the largest step that keeps the surface closed
            good, bad, result = 0.0, full, None
            for _ in range(4):
                trial = quadric(current, (good + bad) / 2)
                if closed(trial):
                    good, result = (good + bad) / 2, trial
                else:
                    bad = (good + bad) / 2
        if result is None or result.GetNumberOfCells() > 0.95 * cells:
            result = topology_preserving(current, full)
            if not closed(result) or result.GetNumberOfCells() > 0.95 * cells:
                break
        current = result
    return current


def _faces(poly) -> np.ndarray:
    from vtk.util import numpy_support

    return numpy_support.vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)


def is_closed_manifold(faces: np.ndarray) -> bool:
    """Watertight and manifold with consistent winding: every edge belongs to exactly two
    triangles, traversed once in each direction, and no triangle repeats a vertex."""
    f = np.asarray(faces, dtype=np.int64)
    if len(f) == 0 or ((f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])).any():
        return False
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(f.max()) + 1
    forward = directed[:, 0] * n + directed[:, 1]
    backward = directed[:, 1] * n + directed[:, 0]
    forward.sort()
    if (np.diff(forward) == 0).any():  # a directed edge twice: a third triangle or flipped winding
        return False
    backward.sort()
    return bool(np.array_equal(forward, backward))  # every edge has its opposite: closed


def _signed_volume(points: np.ndarray, faces: np.ndarray) -> float:
    p = points.astype(np.float64)[faces]
    return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0)


def export_meshes(labels: sitk.Image, out_dir: Path, fmt: str = "glb", smoothing: float = DEFAULT_SMOOTHING,
                  max_triangles: int = 20000, coordinates: str = "RAS", bones: Optional[list[int]] = None,
                  overwrite: bool = False, table: Optional[BoneTable] = None, stem: str = "bones",
                  gltf_frame: str = "upright") -> MeshExport:
    """Write the meshes in ``fmt`` to ``out_dir`` as ``<stem>.<fmt>`` (STL: one file per bone) plus
    ``<stem>.json``; returns what was written."""
    if fmt not in FORMATS:
        raise ValueError(f"mesh format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if gltf_frame not in GLTF_FRAMES:
        raise ValueError(f"glTF frame must be one of {', '.join(GLTF_FRAMES)}, not {gltf_frame!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    table = table or default_table()
    existing = [p for p in planned_mesh_files(labels, out, fmt, stem, bones, table) if p.exists()]
    if existing and not overwrite:  # before the meshing, which takes tens of seconds
        raise FileExistsError(f"{existing[0]} already exists (and {len(existing) - 1} more); "
                              "choose another folder or replace them (--overwrite on the command line)")
    meshes = bone_meshes(labels, smoothing, max_triangles, coordinates, bones, table)
    out.mkdir(parents=True, exist_ok=True)
    sidecar = {"units": "mm", "coordinates": coordinates,
               "smoothing": smoothing, "max_triangles_per_bone": max_triangles}
    if fmt in ("glb", "gltf"):
        root = gltf_root_matrix(meshes, coordinates, gltf_frame)
        files = write_gltf(meshes, out, fmt, stem, root)
        sidecar.update(gltf_frame=gltf_frame, gltf_root_matrix=[[round(v, 9) for v in row] for row in root],
                       note=("glTF vertex data are the mm below; the root node's matrix takes them to "
                             + ("metres, +Y up (superior), +Z front, centre of mass at the origin"
                                if gltf_frame == "upright" else f"metres in the CT's {coordinates} axes")))
    else:
        files = write_stl(meshes, out) if fmt == "stl" else \
            write_obj(meshes, out, stem) if fmt == "obj" else write_ply(meshes, out, stem)
    sidecar["bones"] = [m.summary() for m in meshes]
    over = [m.name for m in meshes if max_triangles and len(m.triangles) > 1.05 * max_triangles]
    if over:  # kept closed rather than decimated to the budget
        sidecar["over_budget_to_stay_closed"] = over
    files.append(atomic_write_text(out / f"{stem}.json", json.dumps(sidecar, indent=1)))
    return MeshExport(meshes, files, time.perf_counter() - t0, coordinates, gltf_frame)


def planned_mesh_files(labels: sitk.Image, out: Path, fmt: str, stem: str = "bones",
                       bones: Optional[list[int]] = None, table: Optional[BoneTable] = None) -> list[Path]:
    """The files ``export_meshes`` may write, known from the labels before any meshing (one STL per
    bone present, or wanted and present), so that an existing one is refused before the work."""
    if fmt != "stl":
        return _planned_files([], out, fmt, stem)
    table = table or default_table()
    _, wanted = wanted_bones(sitk.GetArrayViewFromImage(labels), bones, table)
    return _planned_files([table[i].name for i in wanted], out, fmt, stem)


def wanted_bones(array: np.ndarray, bones: Optional[list[int]], table: BoneTable) -> tuple[np.ndarray, list[int]]:
    """The label map's voxels per value (checked to hold the table's values) and the bones to mesh:
    those present, or those of ``bones`` present, ascending."""
    counts = bone_label_counts(array, table.num_classes, "the label map", InputImageError)
    present = [i for i in range(1, len(counts)) if counts[i]]
    return counts, sorted({i for i in (bones if bones is not None else present) if 0 < i < len(counts) and counts[i]})


def _planned_files(names: list[str], out: Path, fmt: str, stem: str = "bones") -> list[Path]:
    if fmt == "stl":
        return [out / f"{name}.stl" for name in names] + [out / f"{stem}.json"]
    extra = {"gltf": [f"{stem}.bin"], "obj": [f"{stem}.mtl"]}.get(fmt, [])
    return [out / f"{stem}.{fmt}"] + [out / e for e in extra] + [out / f"{stem}.json"]



def write_stl(meshes: list[BoneMesh], out: Path) -> list[Path]:
    """Binary STL, one file per bone (what slicers for 3D printing expect)."""
    files = []
    for m in meshes:
        p = m.points[m.triangles]
        normals = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        rec = np.zeros(len(p), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
        rec["n"], rec["v"] = normals, p
        header = f"BoneSegmentation {m.name} mm".encode()[:80].ljust(80, b" ")
        files.append(atomic_write_bytes(out / f"{m.name}.stl", header + struct.pack("<I", len(p)) + rec.tobytes()))
    return files


def write_ply(meshes: list[BoneMesh], out: Path, stem: str = "bones") -> list[Path]:
    """One binary PLY with all bones and per-vertex colours."""
    verts = np.zeros(sum(len(m.points) for m in meshes),
                     dtype=[("p", "<f4", 3), ("n", "<f4", 3), ("c", "u1", 3)])
    faces, offset, k = [], 0, 0
    for m in meshes:
        n = len(m.points)
        verts["p"][k:k + n], verts["n"][k:k + n], verts["c"][k:k + n] = m.points, m.normals, m.rgb
        faces.append(m.triangles.astype(np.int32) + offset)
        offset += n
        k += n
    f = np.concatenate(faces)
    frec = np.zeros(len(f), dtype=[("n", "u1"), ("i", "<i4", 3)])
    frec["n"], frec["i"] = 3, f
    header = ("ply\nformat binary_little_endian 1.0\ncomment BoneSegmentation bones, mm\n"
              f"element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property float nx\nproperty float ny\nproperty float nz\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n").encode()
    return [atomic_write_bytes(out / f"{stem}.ply", header + verts.tobytes() + frec.tobytes())]


def write_obj(meshes: list[BoneMesh], out: Path, stem: str = "bones") -> list[Path]:
    """OBJ with one group and one MTL material per bone."""
    mtl = ["# BoneSegmentation materials"]
    obj = ["# BoneSegmentation bones, mm", f"mtllib {stem}.mtl"]
    base = 1
    for m in meshes:
        r, g, b = (c / 255 for c in m.rgb)
        mtl += [f"newmtl {m.name}", f"Kd {r:.4f} {g:.4f} {b:.4f}", "Ka 0 0 0", "Ks 0.1 0.1 0.1", "d 1", "illum 2"]
        obj += [f"g {m.name}", f"usemtl {m.name}"]
        obj += [f"v {x:.3f} {y:.3f} {z:.3f}" for x, y, z in m.points]
        obj += [f"vn {x:.4f} {y:.4f} {z:.4f}" for x, y, z in m.normals]
        obj += [f"f {a}//{a} {b_}//{b_} {c}//{c}" for a, b_, c in (m.triangles.astype(np.int64) + base)]
        base += len(m.points)
    return [atomic_write_text(out / f"{stem}.mtl", "\n".join(mtl) + "\n"),
            atomic_write_text(out / f"{stem}.obj", "\n".join(obj) + "\n")]


def write_gltf(meshes: list[BoneMesh], out: Path, fmt: str = "glb", stem: str = "bones",
               root: Optional[np.ndarray] = None) -> list[Path]:
    """glTF 2.0: a node per bone (display name), a material per colour, region group nodes, under a
    root node with the 4x4 ``root`` transform (default: mm to metres only)."""
    root = np.diag([0.001, 0.001, 0.001, 1.0]) if root is None else np.asarray(root, dtype=np.float64)
    blob = bytearray()
    views, accessors, gl_meshes, materials, nodes = [], [], [], [], []

    def add_view(data: bytes, target: int) -> int:
        while len(blob) % 4:
            blob.append(0)
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), "target": target})
        blob.extend(data)
        return len(views) - 1

    groups: dict[str, list[int]] = {}
    for m in meshes:
        pos = add_view(m.points.astype("<f4").tobytes(), 34962)
        nrm = add_view(m.normals.astype("<f4").tobytes(), 34962)
        idx = add_view(m.triangles.astype("<u4").tobytes(), 34963)
        accessors += [
            {"bufferView": pos, "componentType": 5126, "count": len(m.points), "type": "VEC3",
             "min": [float(v) for v in m.points.min(0)], "max": [float(v) for v in m.points.max(0)]},
            {"bufferView": nrm, "componentType": 5126, "count": len(m.normals), "type": "VEC3"},
            {"bufferView": idx, "componentType": 5125, "count": int(m.triangles.size), "type": "SCALAR"}]
        a = len(accessors) - 3
        materials.append({"name": m.name, "pbrMetallicRoughness": {
            "baseColorFactor": [*(_srgb_to_linear(c / 255) for c in m.rgb), 1.0],
            "metallicFactor": 0.0, "roughnessFactor": 0.7}})
        gl_meshes.append({"name": m.name, "primitives": [{"attributes": {"POSITION": a, "NORMAL": a + 1},
                                                          "indices": a + 2, "material": len(materials) - 1}]})
        nodes.append({"name": m.display_name, "mesh": len(gl_meshes) - 1, "extras": {"machine_name": m.name}})
        groups.setdefault(m.group, []).append(len(nodes) - 1)
    group_nodes = []
    for g, children in groups.items():
        nodes.append({"name": g, "children": children})
        group_nodes.append(len(nodes) - 1)
    nodes.append({"name": "BoneSegmentation", "children": group_nodes,
                  "matrix": [float(v) for v in root.T.ravel()],  # glTF matrices are column-major
                  "extras": {"units_of_vertex_data": "mm"}})
    doc = {"asset": {"version": "2.0", "generator": "BoneSegmentation"}, "scene": 0,
           "scenes": [{"nodes": [len(nodes) - 1]}], "nodes": nodes, "meshes": gl_meshes,
           "materials": materials, "accessors": accessors, "bufferViews": views,
           "buffers": [{"byteLength": len(blob)}]}
    if fmt == "gltf":
        doc["buffers"][0]["uri"] = f"{stem}.bin"
        return [atomic_write_bytes(out / f"{stem}.bin", bytes(blob)), atomic_write_text(out / f"{stem}.gltf", json.dumps(doc))]
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    blob += b"\0" * (-len(blob) % 4)
    body = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(blob), 0x004E4942) + bytes(blob)
    return [atomic_write_bytes(out / f"{stem}.glb", struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)]


def _srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def preview_png(meshes: list[BoneMesh], path: Path, coordinates: str = "RAS", size: int = 600) -> Path:
    """Front (anterior) and side views rendered off-screen with VTK."""
    import vtk

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(2 * size, size)
    for k, (azimuth, viewport) in enumerate(((0, (0, 0, 0.5, 1)), (90, (0.5, 0, 1, 1)))):
        ren = vtk.vtkRenderer()
        ren.SetViewport(*viewport)
        ren.SetBackground(1, 1, 1)
        for m in meshes:
            mapper = vtk.vtkPolyDataMapper()
            mapper.SetInputData(m.polydata())
            actor = vtk.vtkActor()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(*(c / 255 for c in m.rgb))
            ren.AddActor(actor)
        cam = ren.GetActiveCamera()
        cam.SetFocalPoint(0, 0, 0)
        cam.SetPosition(0, 1 if coordinates == "RAS" else -1, 0)  # from the front (anterior) ...
        cam.SetViewUp(0, 0, 1)
        cam.Azimuth(azimuth)  # ... and from the side
        ren.ResetCamera()
        window.AddRenderer(ren)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetInputConnection(grab.GetOutputPort())

    def write(tmp: Path) -> None:
        writer.SetFileName(str(tmp))
        writer.Write()
    return atomic_write(Path(path), write, suffix=".png")

"""Between the library's images and Slicer's MRML nodes (needs only Slicer's core: ``slicer`` MRML
classes and ``vtk``, no Qt and no ``slicer.app``, so it runs under ``slicer-core`` from PyPI).

- Volume nodes <-> SimpleITK images with exact geometry. MRML is RAS, ITK is LPS: both the origin
  and the direction flip their first two axes; the voxel array is the same.
- Label map -> segmentation node: one segment per bone found, **segment ID = the bone's machine
  name** (stable across runs and edits), name = display name, colour and terminology from the
  bone table. All segments share one labelmap layer (as Slicer's own import does), built in one
  step rather than one extraction per bone.
- Segmentation node -> label map on a reference grid: each segment's class comes from its ID,
  else its terminology, else its name — never from its position in the segment list. Unknown
  segments and overlapping segments are refused with the offending segments listed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..core.bones import Bone, BoneTable, default_table
from ..core.errors import BoneSegmentationError
from ..core.files import LPS_RAS_FLIP
from ..core.labelmaps import present_labels
from ..core.segment_names import SegmentMapping, SegmentRecord, map_segment_records, merge_segments, overlap_problem
from ..export.meshes import bone_meshes

FLIP = LPS_RAS_FLIP
BINARY_LABELMAP = "Binary labelmap"
CLOSED_SURFACE = "Closed surface"
SLICER_SURFACE_SMOOTHING = 0.5  # Slicer's default for 3D display: edited bones, which Slicer
# converts itself, then look like the others


class SegmentMappingError(BoneSegmentationError):
    """Segments that cannot be turned into the class table's label values."""


def _slicer():
    import slicer  # noqa: PLC0415 - only when Slicer (or slicer-core) is there
    return slicer


def _vtk_matrix_to_numpy(m) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _numpy_to_vtk_matrix(a: np.ndarray):
    import vtk
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK->RAS matrix of a SimpleITK (LPS) image."""
    d = np.array(image.GetDirection()).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = FLIP @ d @ np.diag(image.GetSpacing())
    m[:3, 3] = FLIP @ np.array(image.GetOrigin())
    return m


def geometry_from_ijk_to_ras(m: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(origin, spacing, direction) in LPS for SimpleITK from an IJK->RAS matrix."""
    lps = FLIP @ m[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    return tuple(FLIP @ m[:3, 3]), tuple(spacing), tuple(direction.ravel())


def volume_node_to_image(node) -> sitk.Image:
    """A scalar or label map volume node as a SimpleITK image (copy of the voxels, LPS geometry)."""
    slicer = _slicer()
    array = slicer.util.arrayFromVolume(node)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    m = _slicer_matrix(node)
    origin, spacing, direction = geometry_from_ijk_to_ras(m)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def _slicer_matrix(node) -> np.ndarray:
    import vtk
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return _vtk_matrix_to_numpy(m)


def image_to_volume_node(image: sitk.Image, scene, name: str, labelmap: bool = False, node=None):
    """Put a SimpleITK image into a (new or given) volume node with the same physical geometry."""
    slicer = _slicer()
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayViewFromImage(image))
    node.SetIJKToRASMatrix(_numpy_to_vtk_matrix(ijk_to_ras(image)))
    return node


def oriented_image(array: np.ndarray, ijk_to_ras_matrix: np.ndarray):
    """A ``vtkOrientedImageData`` (Slicer's labelmap type) from a (z, y, x) array and its geometry."""
    slicer = _slicer()
    from vtk.util import numpy_support
    img = slicer.vtkOrientedImageData()
    nz, ny, nx = array.shape
    img.SetDimensions(nx, ny, nz)
    flat = np.ascontiguousarray(array).ravel()
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    img.GetPointData().SetScalars(scalars)
    img.SetImageToWorldMatrix(_numpy_to_vtk_matrix(ijk_to_ras_matrix))
    return img


def set_bone_appearance(segment, bone: Bone) -> None:
    """Name, colour and standard terminology of one segment, from the bone table. The name and
    colour are marked as chosen, not auto-generated, so Slicer never replaces them from a lookup."""
    segment.SetName(bone.display_name)
    segment.SetColor(*(c / 255.0 for c in bone.rgb))
    segment.SetTag(segment.GetTerminologyEntryTagName(), bone.terminology_entry())
    segment.SetTag("BoneSegmentation.class", bone.name)
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)


def load_bone_terminology(terminologies_logic) -> str:
    """Load our ``.term.json`` into Slicer's terminology logic (once: an already loaded context is
    kept), so that Segment Editor lists the bones and resolves each segment to its own name and
    colour. Returns the context's name."""
    import vtk

    from ..core.bones import TERMINOLOGY_CONTEXT
    from ..core.resources import resource_path

    loaded = vtk.vtkStringArray()
    terminologies_logic.GetLoadedTerminologyNames(loaded)
    if TERMINOLOGY_CONTEXT in {loaded.GetValue(i) for i in range(loaded.GetNumberOfValues())}:
        return TERMINOLOGY_CONTEXT
    path = resource_path("SegmentationCategoryTypeModifier-BoneSegmentation.term.json")
    name = terminologies_logic.LoadTerminologyFromFile(str(path))
    if name != TERMINOLOGY_CONTEXT:
        raise BoneSegmentationError(f"Slicer could not load the bone terminology {path} (got {name!r})")
    return name


def labels_to_segmentation_node(labels: sitk.Image, segmentation_node, table: Optional[BoneTable] = None,
                                reference_volume_node=None) -> list[str]:
    """Replace the node's segments with one per bone present in ``labels``; returns segment IDs.

    Segment ID = machine name; the label map itself becomes the shared labelmap layer, so this
    costs one copy of the array whatever the number of bones.
    """
    slicer = _slicer()
    table = table or default_table()
    array = sitk.GetArrayViewFromImage(labels)
    present = present_labels(array)
    unknown = [v for v in present if v >= table.num_classes]
    if unknown:
        raise SegmentMappingError(f"label values {unknown} are not in the bone table (0..{table.num_classes - 1})")
    if array.dtype != np.uint8:
        array = array.astype(np.uint8)
    shared = oriented_image(array, ijk_to_ras(labels))
    segmentation = segmentation_node.GetSegmentation()
    was = segmentation_node.StartModify()
    try:
        segmentation.RemoveAllSegments()
        segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
        if reference_volume_node is not None:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        ids = []
        for value in present:
            bone = table[value]
            segment = slicer.vtkSegment()
            set_bone_appearance(segment, bone)
            segment.SetLabelValue(value)
            segment.AddRepresentation(BINARY_LABELMAP, shared)
            segmentation.AddSegment(segment, bone.name)
            ids.append(bone.name)
        if segmentation_node.GetScene() is not None:  # Slicer's export dialogs then give the table's values
            colours = bone_colour_table_node(segmentation_node.GetScene(), table)
            segmentation_node.SetLabelmapConversionColorTableNodeID(colours.GetID())
    finally:
        segmentation_node.EndModify(was)
    return ids


COLOUR_TABLE_NAME = "BoneSegmentation bones"


def bone_colour_table_node(scene, table: Optional[BoneTable] = None):
    """The scene's colour table of the bone table (index, display name, colour), made once.

    Why: Slicer's "export to labelmap / files" numbers segments 1, 2, 3... in list order unless a
    colour table names them, so an abdomen's L1 would be exported as 1, the cranium's index. Set as
    a segmentation's labelmap conversion colour table, Slicer's export panels preselect it and the
    exported label map holds the bone table's values.

    A table of that name is reused only while every entry still names the bone of its value (its
    colours may have been changed by hand: export maps by name). One renamed or resized by hand,
    or another tool's of the same name, is left as it is and a new table is made beside it: a
    singleton tag is not used, as adding a node under a tag the scene holds overwrites that node."""
    slicer = _slicer()
    table = table or default_table()
    for node in _nodes_of_class(scene, "vtkMRMLColorTableNode"):
        if (node.GetName() or "").startswith(COLOUR_TABLE_NAME) and names_the_bones(node, table):
            return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(scene.GenerateUniqueName(COLOUR_TABLE_NAME)
                 if scene.GetFirstNodeByName(COLOUR_TABLE_NAME) is not None else COLOUR_TABLE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(table.num_classes)
    node.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for bone in table.foreground():
        node.SetColor(bone.index, bone.display_name, *(c / 255 for c in bone.rgb), 1.0)
    return scene.AddNode(node)


def names_the_bones(colour_table_node, table: BoneTable) -> bool:
    """True when the colour table has one entry per class and each names the bone of its value."""
    return colour_table_node.GetNumberOfColors() == table.num_classes and all(
        colour_table_node.GetColorName(bone.index) == bone.display_name for bone in table.foreground())


def _nodes_of_class(scene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(k, class_name) for k in range(scene.GetNumberOfNodesByClass(class_name))]


def register_surface_rules() -> None:
    """Make labelmap <-> closed surface conversion available (Slicer's application does this at
    start-up; bare ``slicer-core`` does not)."""
    slicer = _slicer()
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    have = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        if rule.__name__ not in have:
            factory.RegisterConverterRule(rule())


def add_closed_surfaces(segmentation_node, labels: sitk.Image, smoothing: float = SLICER_SURFACE_SMOOTHING) -> int:
    """Give every segment its 3D surface from one multi-label surface-nets pass over ``labels``
    (what the node holds), instead of Slicer converting segment by segment; returns the triangle
    count. The surfaces are derived representations: when a segment is edited, Slicer drops its
    surface and converts that segment again with its own rule."""
    segmentation = segmentation_node.GetSegmentation()
    wanted = {segmentation.GetNthSegmentID(k) for k in range(segmentation.GetNumberOfSegments())}
    triangles = 0
    for mesh in bone_meshes(labels, smoothing=smoothing, max_triangles=0, coordinates="RAS", manifold=False):
        if mesh.name not in wanted:
            continue
        segmentation.GetSegment(mesh.name).AddRepresentation(CLOSED_SURFACE, mesh.polydata())
        triangles += len(mesh.triangles)
    return triangles


def map_segments(segmentation_node, table: Optional[BoneTable] = None) -> SegmentMapping:
    """Class of every segment of a node (``core/segment_names.py``: ID, name, terminology)."""
    table = table or default_table()
    segmentation = segmentation_node.GetSegmentation()
    records = []
    for k in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(k)
        records.append(SegmentRecord(segmentation.GetNthSegmentID(k), segment.GetName(),
                                     _tag(segment, segment.GetTerminologyEntryTagName())))
    return map_segment_records(records, table)


def _tag(segment, key: str) -> str:
    import vtk
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else ""


def segmentation_node_to_labels(segmentation_node, reference: sitk.Image, table: Optional[BoneTable] = None,
                                allow_overlap: bool = False) -> sitk.Image:
    """The node's segments as one uint8 label map on ``reference``'s grid, in the table's values."""
    table = table or default_table()
    mapping = map_segments(segmentation_node, table)
    problems = mapping.problems(table)
    if problems:
        raise SegmentMappingError("; ".join(problems))
    shape = sitk.GetArrayViewFromImage(reference).shape
    segmentation = segmentation_node.GetSegmentation()
    ref_matrix = ijk_to_ras(reference)
    masks = ((segmentation.GetSegment(seg_id).GetName(), bone, _segment_mask(segmentation, seg_id, ref_matrix, shape))
             for seg_id, bone in mapping.classes.items())
    out, overlaps = merge_segments(shape, ((name, bone, mask) for name, bone, mask in masks if mask is not None))
    if overlaps and not allow_overlap:
        raise SegmentMappingError(overlap_problem(overlaps))
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(reference)
    return image


def off_grid_segments(segmentation_node, reference: sitk.Image) -> list[str]:
    """Names of segments whose voxels do not lie on ``reference``'s grid (another spacing,
    orientation or a fractional shift): exporting them would need resampling."""
    ref = ijk_to_ras(reference)
    segmentation = segmentation_node.GetSegmentation()
    off = []
    for k in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(k)
        layer = segment.GetRepresentation(BINARY_LABELMAP)
        if layer is None or layer.GetExtent()[1] < layer.GetExtent()[0]:
            continue
        m = _vtk_matrix_to_numpy_from(layer)
        offset = np.linalg.solve(ref[:3, :3], m[:3, 3] - ref[:3, 3])
        if not (np.allclose(m[:3, :3], ref[:3, :3], atol=1e-4) and np.allclose(offset, np.round(offset), atol=1e-3)):
            off.append(segment.GetName())
    return off


def _segment_mask(segmentation, seg_id: str, ref_matrix: np.ndarray, shape) -> Optional[np.ndarray]:
    """Boolean mask of one segment on the reference grid (None when the segment is empty)."""
    slicer = _slicer()
    from vtk.util import numpy_support
    segment = segmentation.GetSegment(seg_id)
    layer = segment.GetRepresentation(BINARY_LABELMAP)
    if layer is None:
        return None
    target = slicer.vtkOrientedImageData()
    target.SetDimensions(shape[2], shape[1], shape[0])
    target.SetImageToWorldMatrix(_numpy_to_vtk_matrix(ref_matrix))
    m = _vtk_matrix_to_numpy_from(layer)
    ext = layer.GetExtent()
    if ext[1] < ext[0]:
        return None
    array = numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(
        ext[5] - ext[4] + 1, ext[3] - ext[2] + 1, ext[1] - ext[0] + 1)
    mask = np.zeros(shape, bool)
    same_axes = np.allclose(m[:3, :3], ref_matrix[:3, :3], atol=1e-6)
    offset = np.linalg.solve(ref_matrix[:3, :3], m[:3, 3] - ref_matrix[:3, 3]) if same_axes else None
    if same_axes and np.allclose(offset, np.round(offset), atol=1e-3):
        o = np.round(offset).astype(int) + np.array(ext[0::2])  # (i, j, k) of the layer's first voxel
        src = array == segment.GetLabelValue()
        lo = np.maximum(o[::-1], 0)
        hi = np.minimum(o[::-1] + src.shape, shape)
        if np.any(hi <= lo):
            return None
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = src[
            lo[0] - o[2]:hi[0] - o[2], lo[1] - o[1]:hi[1] - o[1], lo[2] - o[0]:hi[2] - o[0]]
    else:  # another grid (rotated or fractional shift): let Slicer resample the layer (nearest)
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            layer, target, resampled, False, False)
        data = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(shape)
        mask = data == segment.GetLabelValue()
    return mask if mask.any() else None


def _vtk_matrix_to_numpy_from(image) -> np.ndarray:
    import vtk
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    return _vtk_matrix_to_numpy(m)

"""CT-like training images synthesised from a real body's label map, in the spirit of SynthSeg
(Billot et al., Medical Image Analysis 2023: networks trained only on images synthesised from
label maps work on real scans).

The source anatomy is TotalSegmentator ground truth (Wasserthal et al., Radiology: AI 2023,
CC BY 4.0): real bone shapes and their real neighbours (heart and contrast-filled vessels by the
spine and ribs, kidneys, bowel) in one body. Per image, drawn from the seed: a random elastic and
affine deformation (one body becomes many), the iliac crests' height against the lumbar spine
(one body has one; people differ by a vertebra either way), a field of view (whole, thorax,
abdomen or a 20-60-slice clinical crop), spacing and anisotropy, a contrast phase and an
intensity for every structure (``tissue.py``; a bone density for an age, each bone its own share
of it, and in most images the thin cortical shells of vertebrae, sacrum and ribs), a body
envelope (a muscle wall, then fat: the source labels no chest or abdominal wall muscles), a
table, calcifications (plaques on the arteries' wall, more with age), metal, blur and noise; now
and then a metal implant in the bones (a hip prosthesis, spinal screws and rods) with its streaks.

Labels: the bones map to the bone table through its TotalSegmentator column (S1 into the
sacrum). TotalSegmentator's one sternum is split into our three parts along the body axis at
fixed fractions of its length (manubrium the top 27 %, xiphoid the bottom 8 %: typical adult
proportions, an approximation). Classes the source cannot provide (hands, forearms, skull parts,
C1-C7, hyoid, coccyx) are reported as unlabelled, for the partial-label loss: voxels that the
source labels as one of them (the skull's and C7's slivers at the edge) are left out of the loss,
never taught as background.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core.bones import BoneTable, default_table
from ..core.errors import InputImageError
from ..core.totalsegmentator import STERNUM_PARTS, ts_classes, ts_indices, ts_to_table
from . import tissue

ATTRIBUTION = ("TotalSegmentator CT dataset, subject s0011 ground truth (Wasserthal et al., "
               "Radiology: Artificial Intelligence 2023; CC BY 4.0)")
FOV_KINDS = ("whole", "thorax", "abdomen", "clinical_crop")
UNLABELLED_SLIVERS = ("cranium",) + tuple(f"vertebra_C{i}" for i in range(1, 8))  # cut by the source's edge

_ARTERIES = ("aorta", "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left",
             "common_carotid_artery_right", "common_carotid_artery_left", "iliac_artery_left",
             "iliac_artery_right", "pulmonary_vein", "atrial_appendage_left")
_VEINS = ("brachiocephalic_vein_left", "brachiocephalic_vein_right", "superior_vena_cava",
          "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_vena_left", "iliac_vena_right")
_BOWEL = ("stomach", "small_bowel", "duodenum", "colon", "esophagus")
_MUSCLES = ("gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right",
            "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left", "autochthon_right",
            "iliopsoas_left", "iliopsoas_right")
_LUNGS = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
          "lung_lower_lobe_right")
_LONG_BONES = ("femur_left", "femur_right", "humerus_left", "humerus_right")
_FUSED_LEVELS = ("vertebrae_T10", "vertebrae_T11", "vertebrae_T12", "vertebrae_L1", "vertebrae_L2",
                 "vertebrae_L3", "vertebrae_L4", "vertebrae_L5")
#: The column head to foot from C2 (C1 has no disc below it): consecutive names are a disc apart.
_DISC_COLUMN = tuple(f"vertebrae_{v}" for v in [f"C{i}" for i in range(2, 8)] + [f"T{i}" for i in range(1, 13)]
                     + [f"L{i}" for i in range(1, 6)] + ["S1"])
HIP_PROSTHESIS_PROBABILITY = 0.2  # per side; more often than in a clinic (a few %), so that training sees enough
SPINAL_FUSION_PROBABILITY = 0.1


@dataclass(frozen=True)
class AnatomySource:
    """A TotalSegmentator label map in LPS orientation (indices are TotalSegmentator's)."""

    labels: sitk.Image
    name: str
    level_z_mm: dict[str, float]  # centre height (LPS z) of the vertebrae and femora present
    pelvis: "PelvisGeometry | None" = None  # where the iliac wings are, for ``_iliac_height``
    diaphragm_z_mm: "tuple[float, float] | None" = None  # lungs' lowest point, liver's top: ``_diaphragm_height``


@dataclass(frozen=True)
class PelvisGeometry:
    """The heights (LPS z, mm) and the midline that the iliac wings' articulation needs."""

    crest_z: float  # top of the hip bones (the iliac crests)
    hip_joint_z: float  # top of the femoral heads: the hip joints stay where they are
    midline_x: float  # the lumbar spine's left-right centre


@dataclass
class SyntheticCase:
    ct: sitk.Image  # int16 HU
    labels: sitk.Image  # uint8, bone table indices, same grid
    labelled: list[str]  # bone table names trusted in ``labels`` (the rest: unlabelled)
    spec: dict = field(default_factory=dict)  # the random choices, for provenance and debugging
    source_labels: sitk.Image | None = None  # the source's TotalSegmentator classes, deformed onto the grid


def load_source(path: Path) -> AnatomySource:
    """Read a TotalSegmentator v2 'total' label map as training anatomy."""
    path = Path(path)
    if not path.is_file():
        raise InputImageError(f"anatomy label map {path} not found (expected a TotalSegmentator v2 'total' label map)")
    return _load_cached(str(path.resolve()))


@lru_cache(maxsize=2)
def _load_cached(path: str) -> AnatomySource:
    image = sitk.DICOMOrient(sitk.ReadImage(path, sitk.sitkUInt8), "LPS")
    arr = sitk.GetArrayViewFromImage(image)
    if arr.max() > max(ts_classes()):
        raise InputImageError(f"{path}: label {int(arr.max())} is not a TotalSegmentator v2 'total' class")
    levels = {}
    names = ts_indices()
    zs = np.arange(arr.shape[0])
    for name in [f"vertebrae_{p}{i}" for p, n in (("T", 12), ("L", 5)) for i in range(1, n + 1)] + \
            ["vertebrae_C7", "femur_left", "sacrum"]:
        counts = np.count_nonzero(arr == names[name], axis=(1, 2))
        if counts.sum() > 50:
            k = float((zs * counts).sum() / counts.sum())
            levels[name] = image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, k))[2]
    return AnatomySource(image, Path(path).name, levels, _pelvis_geometry(image, arr, names),
                         _diaphragm_geometry(image, arr, names))


def _diaphragm_geometry(image: sitk.Image, arr: np.ndarray, names: dict[str, int]) -> tuple[float, float] | None:
    """(lowest lung slice, highest liver slice), LPS z in mm: the span the diaphragm's domes and
    recesses cover; None where the source lacks lungs or liver."""
    lut = np.zeros(256, bool)
    lut[[names[n] for n in _LUNGS]] = True
    lung = np.nonzero(lut[arr].any(axis=(1, 2)))[0]
    liver = np.nonzero((arr == names["liver"]).any(axis=(1, 2)))[0]
    if not len(lung) or not len(liver):
        return None
    low, high = (image.TransformIndexToPhysicalPoint((0, 0, int(k)))[2] for k in (lung.min(), liver.max()))
    return (min(low, high), max(low, high))


def _pelvis_geometry(image: sitk.Image, arr: np.ndarray, names: dict[str, int]) -> PelvisGeometry | None:
    def top_z(*labels: str) -> float | None:
        rows = np.nonzero(np.isin(arr, [names[n] for n in labels]).any(axis=(1, 2)))[0]
        return image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, float(rows.max())))[2] if len(rows) else None

    crest, joint = top_z("hip_left", "hip_right"), top_z("femur_left", "femur_right")
    lumbar = np.argwhere(np.isin(arr, [names[f"vertebrae_L{i}"] for i in range(1, 6)]))
    if crest is None or joint is None or not len(lumbar) or crest <= joint:
        return None
    x = image.TransformContinuousIndexToPhysicalPoint((float(lumbar[:, 2].mean()), 0.0, 0.0))[0]
    return PelvisGeometry(crest, joint, x)


def _draw_fov(source: AnatomySource, rng: np.random.Generator, spacing_z: float) -> tuple[str, float, float]:
    """(kind, z_low, z_high) in the source's LPS millimetres."""
    img = source.labels
    z0 = img.GetOrigin()[2]
    z1 = z0 + (img.GetSize()[2] - 1) * img.GetSpacing()[2]
    lv = source.level_z_mm
    kind = str(rng.choice(FOV_KINDS, p=[0.25, 0.2, 0.2, 0.35]))
    if kind == "whole":
        return kind, z0, z1
    if kind == "thorax":
        lo = lv.get("vertebrae_L1", z0) + rng.uniform(-40, 20)
        return kind, max(z0, lo), z1
    if kind == "abdomen":
        hi = lv.get("vertebrae_T10", z1) + rng.uniform(-20, 40)
        return kind, z0, min(z1, hi)
    length = rng.integers(20, 61) * spacing_z
    centre = rng.uniform(z0 + length / 2, max(z0 + length / 2 + 1, z1 - length / 2))
    return kind, centre - length / 2, centre + length / 2


def _deformation(centre: np.ndarray, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator,
                 strength: float = 1.0) -> sitk.Transform:
    """Output point -> source point: a smooth B-spline displacement, then rotation and per-axis
    scale about ``centre`` (body size and shape variation)."""
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * np.array([5, 5, 8]) * strength)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = 1 + rng.uniform(-0.15, 0.15, 3) * strength
    affine = sitk.AffineTransform(3)
    affine.SetCenter(tuple(float(c) for c in centre))
    affine.SetMatrix(tuple(float(v) for v in (rz @ ry @ rx @ np.diag(1 / scale)).ravel()))
    affine.SetTranslation(tuple(float(v) for v in rng.normal(0, 5, 3) * strength))
    domain = sitk.Image([8, 8, 8], sitk.sitkUInt8)
    domain.SetOrigin(tuple(float(v) for v in lo))
    domain.SetSpacing(tuple(float(v) for v in np.maximum((hi - lo) / 7, 1.0)))
    bspline = sitk.BSplineTransformInitializer(domain, [4, 4, 5])
    n = len(bspline.GetParameters())
    bspline.SetParameters(tuple(float(v) for v in rng.normal(0, rng.uniform(2, 8) * strength, n)))
    return sitk.CompositeTransform([affine, bspline])


#: The deformation is evaluated every this many mm (or at the image's spacing, if coarser) and
#: interpolated linearly between: see ``_sample_labels``.
FIELD_STEP_MM = 4.0


def _sample_labels(src: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """``src``'s labels on ``grid`` through ``transform`` (output point -> source point), nearest label.

    Why through a sampled field: evaluating the composite (B-spline, rotation and scale, the iliac
    and diaphragm fields) at each of a 2 mm whole body's 20 million voxels took 8-10 s of its 50,
    twice when the diaphragm moves. The transform is smooth (the B-spline's control points lie
    about 100 mm apart, the two fields are themselves 4 mm grids), so it is evaluated every
    ``FIELD_STEP_MM`` and interpolated between: 4-5x faster, and wherever the source has a label
    the point lands within 0.75 mm of the exact one (99 % within 0.2 mm; the source's voxels are
    1.5 mm), so 0.02-0.07 % of the labelled voxels take a neighbour's label
    (``benchmarks/bench_synthesis.py --speed``). Where the two fields end (outside the source
    body's box) the exact transform jumps; there the source has no label either way."""
    return sitk.Resample(src, grid, sampled_transform(transform, grid), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def sampled_transform(transform: sitk.Transform, grid: sitk.Image) -> sitk.DisplacementFieldTransform:
    """``transform`` evaluated every ``FIELD_STEP_MM`` (or at ``grid``'s spacing, if coarser) over
    ``grid`` and a step beyond it, as a displacement field read by linear interpolation."""
    spacing = np.maximum(np.array(grid.GetSpacing()), FIELD_STEP_MM)
    size = [int(np.ceil((n - 1) * s / c)) + 2 for n, s, c in zip(grid.GetSize(), grid.GetSpacing(), spacing)]
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, size, grid.GetOrigin(),
                                              tuple(float(v) for v in spacing), grid.GetDirection())
    return sitk.DisplacementFieldTransform(field)


#: The body's size across (left-right, front-back) against the source body's, drawn per image on top
#: of the deformation's +-15 % per axis. Why: adults' trunks differ far more than one body scaled by
#: 15 %: a vertebra's depth from the front of its body to the tip of its spinous process runs from
#: about 55 mm (the source's T12) to 70 mm and more in a large man, and a network that has seen one
#: size calls a larger spine's lower thoracic vertebrae pelvis, or background.
BODY_SIZE = (0.92, 1.28)

#: The body turned in the sagittal plane, drawn per image up to this many degrees either way. Why:
#: the lumbar vertebrae's tilt against the scanner's axis follows a person's lordosis and posture;
#: the source body's L1 and L5 lean -12 and +14 degrees, a real abdomen's -22 and +23. Turned by
#: 15 degrees, synthetic abdomens lose spine Dice with a network that saw the source's tilt only
#: (1.9, 4 seeds: mean 0.646 upright, 0.636 and 0.557 turned +15 and -15 degrees).
SAGITTAL_TILT_DEG = 15.0
TILT_SHIFT_MM = 40.0  # on a long field of view the tilt is smaller: its ends move at most this far


def _tilt_limit(length_mm: float) -> float:
    """The largest tilt (degrees) drawn for a field of view ``length_mm`` long: ``SAGITTAL_TILT_DEG``,
    less where the view's ends would move more than ``TILT_SHIFT_MM`` front or back."""
    half = max(length_mm / 2.0, 1e-6)
    return min(SAGITTAL_TILT_DEG, float(np.degrees(np.arcsin(min(1.0, TILT_SHIFT_MM / half)))))


ILIAC_SHIFT_MM = 25.0  # crests up or down against the spine: Tuffier's line from L3/L4 to L5/S1
ILIAC_SPINE_MM = (30.0, 60.0)  # from the midline: untouched within the first, fully moved beyond the second
ILIAC_ABOVE_MM = 60.0  # above the crests the shift fades out over this height (the lowest ribs stay)


#: The diaphragm and the organs under and over it moved up or down against the skeleton, drawn per
#: image up to this many mm either way. Why: with one source body, every training image showed the
#: lungs reaching down beside T12 and the liver's top at the same vertebra, so the network learnt a
#: vertebra's level and even its being a vertebra from them; yet the diaphragm's height differs
#: between people by a vertebra or more either way and moves 15-70 mm with the breath (a lower thorax
#: in expiration shows no lung beside T11-T12). The skeleton, the back and hip muscles, the spinal
#: cord, the aorta and the pelvic organs stay put; the shift fades out over ``DIAPHRAGM_FADE_MM``
#: above and below the diaphragm, stretching or compressing the lungs and the abdomen.
DIAPHRAGM_SHIFT_MM = 35.0
DIAPHRAGM_FADE_MM = 120.0
_MOVE_WITH_DIAPHRAGM = _LUNGS + ("liver", "spleen", "stomach", "pancreas", "gallbladder", "kidney_left",
                                 "kidney_right", "kidney_cyst_left", "kidney_cyst_right", "adrenal_gland_left",
                                 "adrenal_gland_right", "small_bowel", "duodenum", "colon", "heart",
                                 "pulmonary_vein", "atrial_appendage_left", "inferior_vena_cava",
                                 "portal_vein_and_splenic_vein")


def _diaphragm_height(source: AnatomySource, shift_mm: float, spacing_mm: float = 4.0) -> sitk.Transform | None:
    """A displacement (source frame, along z only) under which the organs that move with the
    diaphragm (``_MOVE_WITH_DIAPHRAGM``) are seen ``shift_mm`` higher: fully between the lungs'
    lowest point and the liver's top, fading to nothing ``DIAPHRAGM_FADE_MM`` above and below.
    ``_with_viscera_moved`` applies it to those organs alone."""
    if source.diaphragm_z_mm is None or shift_mm == 0:
        return None
    low, high = source.diaphragm_z_mm
    src = source.labels
    lo = np.array(src.GetOrigin())
    hi = lo + (np.array(src.GetSize()) - 1) * np.array(src.GetSpacing())
    across = float(max(hi[0] - lo[0], hi[1] - lo[1]))  # the field is the same across: one step spans it
    lo[2], hi[2] = max(lo[2], low - DIAPHRAGM_FADE_MM) - spacing_mm, min(hi[2], high + DIAPHRAGM_FADE_MM) + spacing_mm
    size = [2, 2, int(np.ceil((hi[2] - lo[2]) / spacing_mm)) + 1]
    z = lo[2] + np.arange(size[2]) * spacing_mm
    weight = np.clip(np.minimum((z - (low - DIAPHRAGM_FADE_MM)) / DIAPHRAGM_FADE_MM,
                                ((high + DIAPHRAGM_FADE_MM) - z) / DIAPHRAGM_FADE_MM), 0, 1)
    field = np.zeros((size[2], 2, 2, 3))  # sitk array order z, y, x; vectors x, y, z
    field[..., 2] = -shift_mm * weight[:, None, None]  # output point p shows the source at p + d
    image = sitk.GetImageFromArray(field, isVector=True)
    image.SetOrigin(tuple(float(v) for v in lo))
    image.SetSpacing((across, across, spacing_mm))
    return sitk.DisplacementFieldTransform(image)


#: The aorta widens with age (ascending aorta about 30 mm at 40, 35-40 mm at 80, and wider when
#: ectatic or dissected), but the one source body has one aorta. Its wall is pushed out by up to
#: this many mm in half the images, into the soft tissue, fat and lung round it, never into a bone,
#: the heart or another named structure that is not soft tissue.
AORTA_WIDEN_MM = 7.0
_AORTA_GIVES_WAY = _LUNGS + ("esophagus",)


def _widen_aorta(ts: np.ndarray, widen_mm: float, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """``ts`` with the aorta grown by ``widen_mm`` into unlabelled voxels and the structures of
    ``_AORTA_GIVES_WAY``."""
    idx = ts_indices()
    aorta = ts == idx["aorta"]
    if widen_mm <= 0 or not aorta.any():
        return ts
    free = np.zeros(256, bool)
    free[[idx[n] for n in _AORTA_GIVES_WAY]] = True
    # only the aorta's box and the reach round it: the distance map of the whole image is 10x the work
    box = tuple(slice(max(0, int(w.min()) - r), int(w.max()) + r + 1) for w, r in
                zip(np.nonzero(aorta), (int(np.ceil(widen_mm / sp)) + 1 for sp in spacing_zyx)))
    part = ts[box]
    room = free[part] | (part == 0)  # unlabelled: fat and soft tissue (the aorta lies centimetres from the skin)
    near = ndimage.distance_transform_edt(~aorta[box], sampling=spacing_zyx) <= widen_mm
    out = ts.copy()
    out[box][near & room] = idx["aorta"]
    return out


def _with_viscera_moved(ts: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """The label map ``ts`` with the organs of ``_MOVE_WITH_DIAPHRAGM`` taken from ``moved`` (the same
    grid sampled through ``_diaphragm_height``): where an organ leaves, unlabelled soft tissue; an
    organ moving onto a bone, a muscle or a vessel that stays gives way to it."""
    idx = ts_indices()
    moving = np.zeros(256, bool)
    moving[[idx[n] for n in _MOVE_WITH_DIAPHRAGM]] = True
    free = moving[ts] | (ts == 0)  # where the moving organs may go
    out = np.where(moving[ts], 0, ts).astype(ts.dtype)
    take = free & moving[moved]
    out[take] = moved[take]
    return out


def _iliac_height(source: AnatomySource, shift_mm: float, spacing_mm: float = 4.0) -> sitk.Transform | None:
    """A displacement (source frame) that raises or lowers the iliac wings by ``shift_mm`` against
    the lumbar spine, the hip joints and the spine staying put.

    Where the iliac crests sit against the lumbar vertebrae differs between people by about a
    vertebra either way (the intercrestal line crosses L3/L4 to L5/S1), and with one source body
    every training image showed the crests 15 mm above L5's centre: nothing taught a network not
    to take the lumbar levels from the pelvis (on a real abdomen whose crests sit 28 mm above L5,
    1.5 drew every lumbar boundary 10-15 mm too high; training on this did not move them). The
    wings are stretched between the hip joints and the crests, shifted at the crests, and the shift
    fades over ``ILIAC_ABOVE_MM`` above them and towards the midline (``ILIAC_SPINE_MM``), so the
    spine, the sacrum's middle and the femora keep their places."""
    pelvis = source.pelvis
    if pelvis is None or shift_mm == 0:
        return None
    src = source.labels
    lo = np.array(src.GetOrigin())
    hi = lo + (np.array(src.GetSize()) - 1) * np.array(src.GetSpacing())
    # the field only where it moves anything: outside its domain a displacement field moves nothing
    # (on the whole-source lattice, so that the interpolated field is the same as over all of it)
    first = max(0.0, np.floor((pelvis.hip_joint_z - lo[2]) / spacing_mm) - 1)
    last = np.ceil((pelvis.crest_z + ILIAC_ABOVE_MM - lo[2]) / spacing_mm) + 1
    lo[2], hi[2] = lo[2] + first * spacing_mm, min(hi[2], lo[2] + last * spacing_mm)
    size = [int(np.ceil((h - l) / spacing_mm)) + 1 for l, h in zip(lo, hi)]
    x = lo[0] + np.arange(size[0]) * spacing_mm
    z = lo[2] + np.arange(size[2]) * spacing_mm
    near, far = ILIAC_SPINE_MM
    lateral = np.clip((np.abs(x - pelvis.midline_x) - near) / (far - near), 0, 1)
    lateral = lateral * lateral * (3 - 2 * lateral)  # smoothstep
    rise = np.clip((z - pelvis.hip_joint_z) / (pelvis.crest_z - pelvis.hip_joint_z), 0, 1)
    fade = np.clip(1 - (z - pelvis.crest_z) / ILIAC_ABOVE_MM, 0, 1)
    vertical = np.where(z <= pelvis.crest_z, rise, fade)
    field = np.zeros((size[2], size[1], size[0], 3))  # sitk array order z, y, x; vectors x, y, z
    # output point p shows the source at p + d: the crest seen shift_mm higher means d_z = -shift
    field[..., 2] = -shift_mm * vertical[:, None, None] * lateral[None, None, :]
    image = sitk.GetImageFromArray(field, isVector=True)
    image.SetOrigin(tuple(float(v) for v in lo))
    image.SetSpacing((spacing_mm,) * 3)
    return sitk.DisplacementFieldTransform(image)


def synthesise(source: AnatomySource, seed: int, spacing: float | tuple[float, float] | None = None,
               fov: str | None = None, phase: str | None = None, deform: float = 1.0,
               table: BoneTable | None = None, implants: bool | None = None,
               iliac_shift_mm: float | None = None, trabecular_hu: float | None = None,
               body_size: float | None = None, tilt_deg: float | None = None,
               diaphragm_shift_mm: float | None = None) -> SyntheticCase:
    """One CT-like image and its bone labels from ``source``; a pure function of the arguments.

    ``spacing``: isotropic mm, or (in-plane, slice) mm; default drawn (in-plane 1.6-2.6 mm,
    slices 1.6-5 mm). ``fov``/``phase`` force a field of view or a contrast phase. ``implants``:
    None draws them (a hip prosthesis per side, spinal screws, each now and then), True puts every
    kind the field of view allows, False none. They come from their own random stream, so an image
    without them is the image the same seed gave before they existed. ``iliac_shift_mm``: the iliac
    crests this far above (below, negative) the source body's place against the spine; default
    drawn (+-``ILIAC_SHIFT_MM``, times ``deform``). ``trabecular_hu``: the body's vertebral
    cancellous density; default drawn for an age of ``tissue.AGE_YEARS`` (its own random stream).
    ``body_size``: the body's size across (left-right and front-back) against the source's, the
    image widened to hold it; default drawn from ``BODY_SIZE`` (its own stream, times ``deform``).
    ``tilt_deg``: the body turned this far in the sagittal plane (about the left-right axis, positive
    turns the head backwards), the image deepened to hold it; default drawn up to
    ``SAGITTAL_TILT_DEG`` (its own stream, times ``deform``; less on a long field of view).
    ``diaphragm_shift_mm``: the diaphragm and the organs that move with it this far higher (lower,
    negative) against the skeleton; default drawn (+-``DIAPHRAGM_SHIFT_MM``, its own stream, times
    ``deform``).
    """
    t0 = time.perf_counter()
    table = table or default_table()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB0E5]))
    if spacing is None:
        s_xy = float(rng.uniform(1.6, 2.6))
        s_z = float(rng.choice([1.6, 2.0, 2.5, 3.0, 4.0, 5.0]))
    elif isinstance(spacing, (tuple, list)):
        s_xy, s_z = float(spacing[0]), float(spacing[1])
    else:
        s_xy = s_z = float(spacing)
    kind, z_lo, z_hi = _draw_fov(source, rng, s_z)
    if fov is not None:
        if fov not in FOV_KINDS:
            raise ValueError(f"unknown field of view {fov!r}: use one of {', '.join(FOV_KINDS)}")
        kind, z_lo, z_hi = _forced_fov(source, fov, rng, s_z)
    src = source.labels
    src_lo = np.array(src.GetOrigin())
    src_hi = src_lo + (np.array(src.GetSize()) - 1) * np.array(src.GetSpacing())
    lo = np.array([src_lo[0], src_lo[1], z_lo])
    hi = np.array([src_hi[0], src_hi[1], z_hi])
    centre = (lo + hi) / 2
    transform = _deformation(centre, lo, hi, rng, deform)
    size_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x512E]))
    size = 1.0 + (float(size_rng.uniform(*BODY_SIZE)) - 1.0) * deform
    if body_size is not None:
        if not 0.0 < body_size < float("inf"):
            raise ValueError(f"body_size is a factor of the source body's size across, above 0, not {body_size!r}")
        size = float(body_size)
    if size != 1.0:  # applied first, in the image's frame: the body drawn larger (smaller) about its centre
        scale = sitk.ScaleTransform(3, (1 / size, 1 / size, 1.0))
        scale.SetCenter(tuple(float(c) for c in centre))
        transform = sitk.CompositeTransform([transform, scale])
        grow = np.array([max(size, 1.0), max(size, 1.0), 1.0])  # a larger body still fits across the image
        lo, hi = centre - (centre - lo) * grow, centre + (hi - centre) * grow
    tilt_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7117]))
    tilt = float(tilt_rng.uniform(-1.0, 1.0)) * _tilt_limit(z_hi - z_lo) * deform
    if tilt_deg is not None:
        if not -45.0 <= tilt_deg <= 45.0:
            raise ValueError(f"tilt_deg is an angle in degrees from -45 to 45, not {tilt_deg!r}")
        tilt = float(tilt_deg)
    if tilt != 0.0:  # applied before everything else, in the image's frame, about its centre
        turn = sitk.Euler3DTransform()
        turn.SetCenter(tuple(float(c) for c in centre))
        turn.SetRotation(float(np.deg2rad(tilt)), 0.0, 0.0)
        transform = sitk.CompositeTransform([transform, turn])
        deeper = (hi[2] - lo[2]) / 2 * abs(np.sin(np.deg2rad(tilt)))  # the body's ends move front or back
        lo, hi = lo - np.array([0.0, deeper, 0.0]), hi + np.array([0.0, deeper, 0.0])
    pelvis_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x11AC]))
    iliac_mm = float(pelvis_rng.uniform(-ILIAC_SHIFT_MM, ILIAC_SHIFT_MM)) * deform
    if iliac_shift_mm is not None:
        iliac_mm = float(iliac_shift_mm)
    iliac = _iliac_height(source, iliac_mm)
    if iliac is not None:  # applied last, in the source's frame
        transform = sitk.CompositeTransform([iliac, transform])
    shape = [int(np.floor((hi[i] - lo[i]) / s)) + 1 for i, s in enumerate((s_xy, s_xy, s_z))]
    grid = sitk.Image(shape, sitk.sitkUInt8)
    grid.SetOrigin(tuple(float(v) for v in lo))
    grid.SetSpacing((s_xy, s_xy, s_z))
    ts = sitk.GetArrayFromImage(_sample_labels(src, grid, transform))
    breath_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD1A]))
    diaphragm_mm = float(breath_rng.uniform(-DIAPHRAGM_SHIFT_MM, DIAPHRAGM_SHIFT_MM)) * deform
    if diaphragm_shift_mm is not None:
        if not -100.0 <= diaphragm_shift_mm <= 100.0:
            raise ValueError(f"diaphragm_shift_mm is a height in mm from -100 to 100, not {diaphragm_shift_mm!r}")
        diaphragm_mm = float(diaphragm_shift_mm)
    breath = _diaphragm_height(source, diaphragm_mm)
    if breath is not None:  # the viscera sampled again, through the shift applied last (source frame)
        moved = _sample_labels(src, grid, sitk.CompositeTransform([breath, transform]))
        ts = _with_viscera_moved(ts, sitk.GetArrayViewFromImage(moved))
    spacing_zyx = (s_z, s_xy, s_xy)
    aorta_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA0A]))
    aorta_mm = float(aorta_rng.uniform(0, AORTA_WIDEN_MM)) * deform if aorta_rng.random() < 0.5 else 0.0
    ts = _widen_aorta(ts, aorta_mm, spacing_zyx)

    phase_ = tissue.draw_phase(rng, phase)
    implant_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A7]))
    density_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDE5]))
    cortex_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC07]))
    cortex_map = _cortex_map(ts, ts_indices(), cortex_rng)
    age_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA6E]))
    age = float(age_rng.uniform(*tissue.AGE_YEARS))
    trabecular = tissue.trabecular_for_age(age, age_rng) if trabecular_hu is None else float(trabecular_hu)
    rim_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x41B]))
    rim = float(rim_rng.uniform(*RIM_BONE_FRACTION))
    plaque_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9AC]))
    joint_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7017]))  # its own stream: the rest as before
    joints = (float(joint_rng.uniform(*tissue.JOINT_SPACE_MM)), float(joint_rng.uniform(*tissue.JOINT_HU)))
    disc_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD15C]))  # its own stream too
    disc_hu = float(disc_rng.uniform(*tissue.DISC_HU))
    ct, implant_kinds, plaques = _render(ts, rng, phase_, spacing_zyx, implant_rng, implants, density_rng,
                                         trabecular, cortex_map, rim, (age, plaque_rng), joints, disc_hu)
    labels = _bone_labels(ts, table)
    if rng.random() < 0.15:  # a reconstruction circle smaller than the body: arms cut off
        _circle_fov(ct, labels, rng)
    ct_img = sitk.GetImageFromArray(ct)
    ct_img.CopyInformation(grid)
    lab_img = sitk.GetImageFromArray(labels)
    lab_img.CopyInformation(grid)
    unlabelled = {b.name for b in table.foreground() if not b.totalsegmentator_total_name} | set(UNLABELLED_SLIVERS)
    labelled = [b.name for b in table.foreground() if b.name not in unlabelled]
    spec = {"seed": seed, "source": source.name, "fov": kind, "z_mm": [round(z_lo, 1), round(z_hi, 1)],
            "spacing_mm": [s_xy, s_xy, s_z], "phase": phase_.name, "deform": deform,
            "implants": implant_kinds, "iliac_shift_mm": round(iliac_mm, 1) if iliac is not None else 0.0,
            "trabecular_hu": round(trabecular, 1), "age_years": round(age, 1) if trabecular_hu is None else None,
            "thin_cortices": cortex_map is not None, "rim_bone_fraction": round(rim, 3),
            "body_size": round(size, 3), "sagittal_tilt_deg": round(tilt, 1),
            "diaphragm_shift_mm": round(diaphragm_mm, 1) if breath is not None else 0.0,
            "plaques": plaques, "aorta_widened_mm": round(aorta_mm, 1), "joint_space_mm": round(joints[0], 2),
            "disc_hu": round(disc_hu, 1),
            "seconds": round(time.perf_counter() - t0, 2)}
    src_img = sitk.GetImageFromArray(ts)
    src_img.CopyInformation(grid)
    return SyntheticCase(ct_img, lab_img, labelled, spec, src_img)


def _forced_fov(source: AnatomySource, kind: str, rng: np.random.Generator, s_z: float) -> tuple[str, float, float]:
    for _ in range(100):
        got = _draw_fov(source, rng, s_z)
        if got[0] == kind:
            return got
    raise RuntimeError(f"could not draw a {kind} field of view")  # unreachable with the probabilities above


def _render(ts: np.ndarray, rng: np.random.Generator, phase: tissue.ContrastPhase,
            spacing_zyx: tuple[float, float, float], implant_rng: np.random.Generator,
            implants: bool | None, density_rng: np.random.Generator, trabecular_hu: float,
            cortex_map: np.ndarray | None = None, rim_bone_fraction: float | None = None,
            plaques: tuple[float, np.random.Generator] | None = None,
            joints: tuple[float, float] | None = None,
            disc_hu: float | None = None) -> tuple[np.ndarray, list[str], int]:
    """HU for every voxel of a TotalSegmentator label map (see ``tissue.py`` for the ranges), the
    kinds of metal implant drawn into it, and how many calcified plaques. ``plaques``: the body's
    age and the plaques' own random stream (none without it). ``joints``: the joint spaces' width (mm)
    and HU (none drawn without it). ``disc_hu``: the intervertebral discs' HU (painted as the body's
    unnamed soft tissue without it)."""
    idx = ts_indices()
    shape = ts.shape
    s = spacing_zyx[1]

    def mask(*names: str) -> np.ndarray:
        lut = np.zeros(256, bool)
        lut[[idx[n] for n in names]] = True
        return lut[ts]

    ct = np.full(shape, tissue.AIR_HU, np.float32) + rng.normal(0, 5)
    body, muscle_wall, fat_layer, _ = tissue.envelope(ts > 0, rng, spacing_zyx)
    ct[body] = tissue.fat_and_muscle(shape, rng, s)[body]
    ct[fat_layer] = rng.uniform(-120, -80) + tissue.smooth_field(shape, rng, 2.0)[fat_layer] * 8
    depth = tissue.depth_mm(np.where(body, ts, 255).astype(np.uint8), spacing_zyx)
    skin = body & (depth < rng.uniform(1.0, 3.0)) & (ts == 0)
    ct[skin] = rng.uniform(0, 60)
    texture = tissue.smooth_field(shape, rng, 2.0)

    def paint(m: np.ndarray, hu: float, tex: float = 8.0) -> None:
        ct[m] = hu + texture[m] * tex

    u = rng.uniform
    paint(mask(*_MUSCLES) | muscle_wall, u(30, 65), 10)
    if disc_hu is not None:
        paint(intervertebral_discs(ts, spacing_zyx), disc_hu, 8)
    paint(mask("liver"), phase.liver, 8)
    paint(mask("spleen"), phase.spleen, 10)
    paint(mask("pancreas"), phase.pancreas, 12)
    paint(mask("kidney_left", "kidney_right"), phase.kidneys, 15)
    paint(mask("kidney_cyst_left", "kidney_cyst_right"), u(0, 15), 3)
    paint(mask("adrenal_gland_left", "adrenal_gland_right"), u(20, 60), 5)
    paint(mask("gallbladder"), u(0, 25), 3)
    paint(mask("urinary_bladder"), u(0, 20) if rng.random() < 0.85 else u(150, 500), 3)
    paint(mask("prostate"), u(30, 55), 6)
    paint(mask("thyroid_gland"), u(70, 120) if phase.name == "native" else u(120, 220), 10)
    paint(mask("spinal_cord"), u(25, 45), 4)
    paint(mask("brain"), u(25, 40), 4)
    # vessels and heart: bright in contrast phases, a darker myocardium round the chambers
    arteries = mask(*_ARTERIES)
    paint(arteries, phase.arteries, 10)
    paint(mask(*_VEINS), phase.veins, 10)
    heart = mask("heart")
    paint(heart, phase.heart, 15)
    paint(heart & (depth < u(4, 10)), phase.myocardium, 8)
    tissue.add_calcifications(ct, arteries & (depth < 2.5), rng)
    plaque_count = tissue.add_plaques(ct, arteries, depth, plaques[0], plaques[1], spacing_zyx) if plaques else 0
    # bowel: a wall round contents that are air, fluid or (oral contrast) bright
    bowel = mask(*_BOWEL)
    contents = tissue.smooth_field(shape, rng, 8 / s)
    lumen = bowel & (depth > u(1.5, 4))
    air_frac, contrast_frac = u(0.05, 0.4), (u(0.2, 0.7) if phase.oral_contrast else 0.0)
    q_air, q_con = np.quantile(contents[::3, ::3, ::3], [air_frac, 1 - contrast_frac])
    paint(bowel, u(30, 60) if phase.name == "native" else u(60, 120), 8)
    paint(lumen & (contents > q_air), u(0, 40), 15)
    ct[lumen & (contents <= q_air)] = u(-1000, -850)
    if contrast_frac > 0:
        paint(lumen & (contents >= q_con), u(200, 600), 40)
    # airways and lungs (denser at the back, where gravity pools blood), with vessels
    trachea = mask("trachea")
    paint(trachea, u(20, 50), 5)
    ct[trachea & (depth > 1.5)] = u(-1000, -950)
    lungs = mask(*_LUNGS)
    gravity = np.linspace(0, u(0, 80), shape[1], dtype=np.float32)[None, :, None]
    lung_hu = u(-920, -820)
    ct[lungs] = (lung_hu + gravity + texture * 10)[lungs]
    f1, f2 = (tissue.smooth_field(shape, rng, u(6, 12) / s) for _ in range(2))
    width = u(0.06, 0.12)
    vessels = lungs & (np.abs(f1) < width) & (np.abs(f2) < width)
    ct[vessels] = u(-100, 80) + (phase.arteries - 40) * 0.3
    # costal cartilage, sometimes calcified
    cartilage = mask("costal_cartilages")
    paint(cartilage, u(60, 160), 15)
    if rng.random() < 0.5:
        spots = cartilage & (texture > u(1.0, 2.0))
        ct[spots] = u(250, 700)
    # bones: cortical shell over trabecular core; long-bone shafts with marrow
    bone_lut = np.zeros(256, bool)
    bone_lut[np.nonzero(ts_to_table())[0]] = True
    bone = bone_lut[ts] | mask("skull")
    tissue.render_bone(ct, bone, depth, rng, long_bone=_shafts(ts, idx), spacing_mm=s, thin_cortex=True,
                       density_scale=_density_scale(ts, idx, density_rng), trabecular_hu=trabecular_hu,
                       cortex_mm_map=cortex_map, rim_bone_fraction=rim_bone_fraction)
    if joints is not None:
        tissue.add_joint_spaces(ct, ts_to_table()[ts], spacing_zyx, *joints)
    metal, kinds = _implants(ts, idx, body, spacing_zyx, implant_rng, implants)
    if kinds:
        ct[metal] = implant_rng.uniform(*tissue.METAL_IMPLANT_HU)
        tissue.add_metal_artifacts(ct, metal, implant_rng, spacing_zyx)
    tissue.add_metal(ct, body & ~bone & (depth < 5), rng)
    tissue.add_table(ct, body, rng, spacing_zyx)
    return tissue.scanner(ct, rng, spacing_zyx), kinds, plaque_count


FATTY_PELVIS_FACTOR = (0.2, 1.0)  # on the sacrum's and hips' cancellous density, in half the images
#: How much of a bone's outermost labelled voxel is bone (``tissue.render_bone``), drawn per image:
#: a label map made from CT calls a voxel bone from about half bone, so its edge layer is a mix.
RIM_BONE_FRACTION = (0.45, 1.0)


def _density_scale(ts: np.ndarray, idx: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """Each bone's cancellous density as a factor (0.6-1.25) of the image's: bones of one body differ
    (vertebral bodies denser than the pelvis). In half the images the sacrum and hips get a further
    0.2-1.0, the fatty marrow of older pelvises: cancellous cores down to 10-60 HU, as the sacral ala
    and the iliac bone of the old are often near fat and water (red marrow turns yellow there first;
    osteoporotic vertebrae are under 100-110 HU, Pickhardt et al., Ann Intern Med 2013). 0.5-1.0
    (cores no lower than 20-100 HU) left a real abdomen's sacrum, 30 HU inside, unfound."""
    lut = rng.uniform(0.6, 1.25, 256).astype(np.float32)
    if rng.random() < 0.5:
        fatty = rng.uniform(*FATTY_PELVIS_FACTOR)
        for name in ("sacrum", "hip_left", "hip_right", "vertebrae_S1"):
            if name in idx:
                lut[idx[name]] *= fatty
    return lut[ts]


#: Cortical shell thickness (mm) of the bones whose shell is thin: a vertebral body's is 0.2-0.5 mm
#: (Silva et al., J Bone Miner Res 1994; Roy et al., Spine 1999), the sacrum's alike, a rib's
#: 0.4-1.2 mm; the image's one draw (0.4-2.5 mm) stays for the others, and a long bone's shaft is
#: 3-6 mm. At 1-2 mm voxels such a shell shows as a faint rim, not a white ring: a network taught
#: that a vertebra is a bright ring misses a real one (a real thorax's T11-T12 at 4 mm, session 31).
THIN_CORTEX_MM = {"vertebrae": (0.2, 0.7), "sacrum": (0.2, 0.7), "rib": (0.4, 1.2)}
THIN_CORTEX_SHARE = 0.75  # of the images; the rest keep the image's one thickness (sclerotic spines)


def _cortex_map(ts: np.ndarray, idx: dict[str, int], rng: np.random.Generator) -> np.ndarray | None:
    """Per voxel the cortex thickness of its bone where that bone's shell is thin (``THIN_CORTEX_MM``,
    one draw per bone), NaN elsewhere; None in the images that keep one thickness for all."""
    lut = np.full(256, np.nan, np.float32)
    draws = rng.uniform(0.0, 1.0, 256)  # always drawn: the stream is the same whatever the share
    if rng.random() >= THIN_CORTEX_SHARE:
        return None
    for name, index in idx.items():
        for prefix, (lo, hi) in THIN_CORTEX_MM.items():
            if name.startswith(prefix):
                lut[index] = lo + (hi - lo) * draws[index]
    return lut[ts]


def _implants(ts: np.ndarray, idx: dict[str, int], body: np.ndarray, spacing_zyx: tuple[float, float, float],
              rng: np.random.Generator, force: bool | None) -> tuple[np.ndarray, list[str]]:
    """Where metal implants go (a mask) and which kinds: a total hip (the femoral head, neck and a
    stem down the proximal shaft, and a cup in the acetabulum) per side, and spinal fusion (two
    screws through the pedicles into each of 2-4 adjacent vertebrae, joined by rods behind them).
    The bones' labels stay as they are: the implant counts as the bone it replaces, as in
    TotalSegmentator's references; the rods lie in muscle and stay background."""
    metal = np.zeros(ts.shape, bool)
    kinds: list[str] = []
    if force is False:
        return metal, kinds
    sz, sy, sx = spacing_zyx
    for side in ("left", "right"):
        femur = ts == idx[f"femur_{side}"]
        want = rng.random() < HIP_PROSTHESIS_PROBABILITY
        if not (force or want) or femur.sum() * sz * sy * sx < 20_000:  # 20 ml: the head is in view
            continue
        zs = np.nonzero(femur.any(axis=(1, 2)))[0]
        top = int(zs[-1])  # LPS: z grows toward the head; the top of a femur is its head
        if top - zs[0] < 50 / sz:
            continue

        def centre(lo: int, hi: int) -> np.ndarray | None:  # the femur's centre in slices lo..hi
            part = femur[max(lo, 0):hi + 1]
            return np.array(ndimage.center_of_mass(part)) + (max(lo, 0), 0, 0) if part.any() else None

        head, neck_base = centre(top - int(20 / sz), top), centre(top - int(65 / sz), top - int(55 / sz))
        if head is None:
            continue
        head[0] = top - 22 / sz
        ball_mm = rng.uniform(14, 18)
        implant = _capsule(ts.shape, head, head, ball_mm, spacing_zyx)
        neck_mm = rng.uniform(6, 9)
        if neck_base is not None:
            implant |= _capsule(ts.shape, head, neck_base, neck_mm, spacing_zyx)
        stem_mm, bottom = rng.uniform(5, 8), max(int(zs[0]), top - int(rng.uniform(140, 200) / sz))
        points = [centre(z, z) for z in range(top - int(60 / sz), bottom - 1, -max(1, int(10 / sz)))]
        for a, b in zip([neck_base] + points, points):  # a slice without femur breaks the stem there
            if a is not None and b is not None:
                implant |= _capsule(ts.shape, a, b, stem_mm, spacing_zyx)
        # the cup replaces the acetabulum's cartilage and some bone: out to 25-30 mm (a native head is ~24 mm)
        cup = _capsule(ts.shape, head, head, rng.uniform(25, 30), spacing_zyx) & (ts == idx[f"hip_{side}"])
        metal |= (implant & (femur | (ts == idx[f"hip_{side}"]))) | cup
        kinds.append(f"hip_prosthesis_{side}")
    present = [n for n in _FUSED_LEVELS if np.count_nonzero(ts == idx[n]) * sz * sy * sx > 15_000]
    if present and (force or rng.random() < SPINAL_FUSION_PROBABILITY):
        count = int(rng.integers(2, 5))
        start = int(rng.integers(0, max(1, len(present) - count + 1)))
        offset_mm, radius_mm = rng.uniform(12, 20), rng.uniform(2.5, 3.5)
        heads = []
        for name in present[start:start + count]:
            v = ts == idx[name]
            zz, yy, xx = np.nonzero(v)
            cz, cx = zz.mean(), xx.mean()
            y_front, y_back = yy.min(), yy.max()  # LPS: y grows toward the back
            y_tip = y_front + 0.3 * (y_back - y_front)
            for sign in (-1, 1):
                px = cx + sign * offset_mm / sx
                screw = v & (np.abs(np.arange(ts.shape[0])[:, None, None] - cz) * sz < radius_mm) \
                    & (np.abs(np.arange(ts.shape[2])[None, None, :] - px) * sx < radius_mm) \
                    & (np.arange(ts.shape[1])[None, :, None] >= y_tip)
                metal |= screw
                heads.append((cz, y_back + 5 / sy, px, sign))
        for sign in (-1, 1):
            pts = sorted((h for h in heads if h[3] == sign), key=lambda h: h[0])
            for (z0, y0, x0, _), (z1, y1, x1, _) in zip(pts, pts[1:]):  # a rod between screw heads
                for t in np.linspace(0, 1, max(2, int(abs(z1 - z0)) * 2 + 1)):
                    z, y, x = z0 + t * (z1 - z0), y0 + t * (y1 - y0), x0 + t * (x1 - x0)
                    lo = [max(0, int(round(c - r))) for c, r in ((z, 2.5 / sz), (y, 2.5 / sy), (x, 2.5 / sx))]
                    hi = [int(round(c + r)) + 1 for c, r in ((z, 2.5 / sz), (y, 2.5 / sy), (x, 2.5 / sx))]
                    metal[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= body[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        kinds.append("spinal_fusion")
    return metal, kinds


def intervertebral_discs(ts: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """The intervertebral discs of a TotalSegmentator label map: unlabelled voxels within
    ``tissue.DISC_REACH_MM`` of two consecutive vertebrae and in front of the spinal cord (of the
    pair's centre without one): between the bodies, not the arches or the canal. S1 stands for the
    sacrum's top (the sacrum itself where S1 is not labelled)."""
    idx = ts_indices()
    boxes = ndimage.find_objects(ts)
    reach = tissue.DISC_REACH_MM
    pad = np.ceil(reach / np.asarray(spacing_zyx)).astype(int)
    out = np.zeros(ts.shape, bool)

    def box_of(value: int):  # find_objects lists labels up to the largest present only
        return boxes[value - 1] if value - 1 < len(boxes) else None

    for upper, lower in zip(_DISC_COLUMN, _DISC_COLUMN[1:]):
        pair = [idx[upper], idx[lower]]
        if lower == "vertebrae_S1" and box_of(idx[lower]) is None:
            pair[1] = idx["sacrum"]
        if any(box_of(p) is None for p in pair):
            continue
        lo = np.maximum(np.minimum(*[[s.start for s in box_of(p)] for p in pair]) - pad, 0)
        hi = np.minimum(np.maximum(*[[s.stop for s in box_of(p)] for p in pair]) + pad, ts.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        part = ts[box]
        near = [tissue.distance_to_mm(part == p, spacing_zyx) <= reach for p in pair]
        cord = np.nonzero(part == idx["spinal_cord"])[1]  # LPS: y grows toward the back
        front = cord.min() if cord.size else np.nonzero(np.isin(part, pair))[1].mean()
        disc = near[0] & near[1] & (part == 0) & (np.arange(part.shape[1])[None, :, None] < front)
        out[box] |= disc
    return out


def _capsule(shape: tuple[int, ...], a: np.ndarray, b: np.ndarray, radius_mm: float,
             spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Voxels within ``radius_mm`` of the segment from voxel position ``a`` to ``b`` (a ball when
    they coincide), computed in their bounding box only."""
    sp = np.asarray(spacing_zyx, float)
    pad = radius_mm / sp + 1
    lo = np.maximum(np.floor(np.minimum(a, b) - pad).astype(int), 0)
    hi = np.minimum(np.ceil(np.maximum(a, b) + pad).astype(int) + 1, shape)
    out = np.zeros(shape, bool)
    if np.any(hi <= lo):
        return out
    grid = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"), -1) * sp
    pa, pb = np.asarray(a) * sp, np.asarray(b) * sp
    d = pb - pa
    t = np.clip(((grid - pa) @ d) / max(float(d @ d), 1e-9), 0, 1)
    near = np.linalg.norm(grid - (pa + t[..., None] * d), axis=-1) <= radius_mm
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = near
    return out


def _shafts(ts: np.ndarray, idx: dict[str, int]) -> np.ndarray:
    """The middle of the femora and humeri along z (their diaphyses), where marrow is fatty."""
    out = np.zeros(ts.shape, bool)
    for name in _LONG_BONES:
        m = ts == idx[name]
        zs = np.nonzero(m.any(axis=(1, 2)))[0]
        if len(zs) > 10:
            lo, hi = zs[0] + (zs[-1] - zs[0]) // 4, zs[-1] - (zs[-1] - zs[0]) // 4
            out[lo:hi] |= m[lo:hi]
    return out


def _bone_labels(ts: np.ndarray, table: BoneTable) -> np.ndarray:
    """TotalSegmentator indices -> bone table indices; the sternum split into its three parts
    along z (manubrium top 27 %, xiphoid bottom 8 % of its extent)."""
    labels = ts_to_table(table)[ts]
    sternum = ts == ts_indices()["sternum"]
    zs = np.nonzero(sternum.any(axis=(1, 2)))[0]
    if len(zs):
        lo, hi = zs[0], zs[-1] + 1
        length = hi - lo
        man_lo = hi - int(round(0.27 * length))
        xiph_hi = lo + int(round(0.08 * length))
        parts = {name: table.by_name(name).index for name in STERNUM_PARTS}
        band = np.zeros(ts.shape[0], np.uint8)
        band[lo:hi] = parts["sternum_body"]
        band[man_lo:hi] = parts["sternum_manubrium"]
        band[lo:xiph_hi] = parts["sternum_xiphoid"]
        labels[sternum] = np.broadcast_to(band[:, None, None], ts.shape)[sternum]
    # slivers of bones the source cannot provide whole keep their class (left out of the loss)
    idx = ts_indices()
    labels[ts == idx["skull"]] = table.by_name("cranium").index
    labels[ts == idx["vertebrae_C7"]] = table.by_name("vertebra_C7").index
    return labels


def _circle_fov(ct: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """A reconstruction circle smaller than the grid: outside it the scanner writes -1024 and
    nothing is known, so labels there are background too (the network sees nothing)."""
    ny, nx = ct.shape[1:]
    r = rng.uniform(0.38, 0.5) * min(ny, nx)
    y, x = np.ogrid[:ny, :nx]
    outside = (y - ny / 2) ** 2 + (x - nx / 2) ** 2 > r * r
    ct[:, outside] = -1024
    labels[:, outside] = 0

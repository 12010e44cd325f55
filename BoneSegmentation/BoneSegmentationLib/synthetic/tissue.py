"""CT appearance drawn per image: what a real scanner shows around the bones.

Shared by the anatomy synthesiser (``anatomy.py``) and the procedural phantom (``phantom.py``) so
that both teach the network real surroundings: a contrast phase that makes the heart and vessels
anywhere from 30 to 750 HU, fat and muscle with texture, bone with a cortical shell over a
trabecular core of varying density, a CT table and cushion under the patient, calcifications and
metal, correlated noise and the blur of slice thickness and reconstruction kernel.

All ranges are Hounsfield units from clinical CT; every draw comes from the caller's generator,
so an image is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

PHASES = ("native", "arterial", "portal_venous")
AIR_HU = -1000.0


@dataclass(frozen=True)
class ContrastPhase:
    """Intensities (HU) that depend on the contrast phase of one image."""

    name: str
    arteries: float  # aorta and its branches, left heart
    veins: float  # venae cavae, iliac and portal veins
    heart: float  # heart chambers (the myocardium is drawn darker)
    myocardium: float
    kidneys: float
    liver: float
    spleen: float
    pancreas: float
    oral_contrast: bool  # bowel lumen bright (200-600 HU) in places


def draw_phase(rng: np.random.Generator, name: str | None = None) -> ContrastPhase:
    """A contrast phase and its intensities, from the ranges clinical CT shows."""
    name = name or str(rng.choice(PHASES, p=[0.3, 0.3, 0.4]))
    u = rng.uniform
    if name == "native":
        art = u(30, 55)
        return ContrastPhase(name, art, u(30, 55), u(30, 55), u(35, 55), u(25, 40), u(45, 70), u(40, 55),
                             u(30, 50), bool(rng.random() < 0.25))
    if name == "arterial":
        # CT angiography aims for 250 HU or more in the aorta, and a bolus-tracked early arterial
        # scan shows 300-600 HU, its heart's right chambers brighter still; with the aorta drawn
        # only to 450 HU, 1.9 called a real arch at 350-470 HU bone (evaluation/validation_scan.py)
        art = u(180, 600)
        return ContrastPhase(name, art, u(40, 200), art * u(0.6, 1.25), u(70, 130), u(120, 250), u(55, 90),
                             u(70, 180), u(80, 130), bool(rng.random() < 0.3))
    if name == "portal_venous":
        return ContrastPhase(name, u(120, 230), u(110, 210), u(110, 210), u(80, 130), u(130, 220), u(90, 140),
                             u(95, 140), u(80, 120), bool(rng.random() < 0.4))
    raise ValueError(f"unknown contrast phase {name!r}: use one of {', '.join(PHASES)}")


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, scale_vox: float) -> np.ndarray:
    """Zero-mean, unit-variance random field with features of about ``scale_vox`` voxels, made
    at low resolution and interpolated up (fast even for whole bodies)."""
    factor = max(1.0, scale_vox / 2.0)
    small = tuple(max(2, int(np.ceil(s / factor)) + 1) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma=min(2.0, scale_vox / 2))
    field = upsample_linear(field, tuple(shape))
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def upsample_linear(small: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``small`` (3D, float32) interpolated linearly onto ``shape``, its voxels' edges aligned and
    its edge values held beyond the outermost centres: ``ndimage.zoom(order=1, grid_mode=True,
    mode="nearest")``'s answer within float rounding.

    Why one axis at a time: linear interpolation is separable, so each axis is two gathers and a
    blend, and the first axes work on the small array: about 10x faster than scipy's zoom (which
    interpolates all three axes at each output voxel) for the coarse fields, about as fast for a
    field drawn nearly at full size. NumPy only, so that the phantom (the panel's sample) needs no
    PyTorch."""
    out = np.asarray(small, np.float32)
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        position = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0, m - 1)
        below = np.floor(position).astype(np.intp)
        weight = (position - below).astype(np.float32).reshape([n if a == axis else 1 for a in range(out.ndim)])
        low = np.take(out, below, axis=axis)
        step = np.take(out, np.minimum(below + 1, m - 1), axis=axis)
        step -= low
        step *= weight
        low += step
        out = low
    return out


def distance_to_mm(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Euclidean distance (mm, float32) from every voxel to the nearest voxel of ``mask`` (0 on it;
    infinite everywhere when ``mask`` is empty): ``ndimage.distance_transform_edt(~mask)``'s answer.

    Why SimpleITK's (Maurer's) transform: it runs on every core and keeps no feature transform
    (scipy's holds three int32 indices a voxel); 4-5x faster on a 2 mm whole body (1.6 s against
    7.6 s), the same distances."""
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=bool).view(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(distance), np.float32(0))


def depth_mm(labels: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest boundary between two different labels.

    One distance transform serves every structure: inside a bone it is the depth below the
    bone's surface (cortex = shallow), inside the heart the depth below its wall, and so on.
    """
    boundary = np.zeros(labels.shape, bool)
    for axis in range(3):
        a = np.swapaxes(labels, 0, axis)
        b = np.swapaxes(boundary, 0, axis)
        diff = a[1:] != a[:-1]
        b[1:] |= diff
        b[:-1] |= diff
    return distance_to_mm(boundary, spacing_zyx)


TRABECULAR_MAX_HU = 450.0
#: Adult ages the anatomy synthesiser draws a body's bone density for (a clinical CT population)
AGE_YEARS = (20.0, 90.0)
#: Vertebral trabecular attenuation at 20 and its fall per year, and the spread between people of
#: one age: about 250 HU young, 2-2.5 HU less a year, so about 110-150 HU at 70 and under 110 HU
#: (the osteoporotic range) in many of the old (Pickhardt et al., Ann Intern Med 2013; Jang et
#: al., Radiology 2019).
TRABECULAR_AT_20_HU, TRABECULAR_HU_PER_YEAR, TRABECULAR_SPREAD_HU = 250.0, 2.3, 35.0
TRABECULAR_RANGE_HU = (40.0, 380.0)


def trabecular_for_age(age_years: float, rng: np.random.Generator) -> float:
    """A body's vertebral cancellous HU at ``age_years``: the population's fall with age plus one
    person's spread. The anatomy synthesiser draws the age: a uniform 60-400 HU put half of its
    images above 230 HU, denser than most people who are scanned (bones of 70-150 HU went unseen
    on a real abdomen, see docs/real-ct-training.md "Bone density by age")."""
    mean = TRABECULAR_AT_20_HU - TRABECULAR_HU_PER_YEAR * (age_years - 20.0)
    return float(np.clip(mean + rng.normal(0.0, TRABECULAR_SPREAD_HU), *TRABECULAR_RANGE_HU))


def render_bone(ct: np.ndarray, bone: np.ndarray, depth: np.ndarray, rng: np.random.Generator,
                long_bone: np.ndarray | None = None, spacing_mm: float = 2.0, thin_cortex: bool = False,
                density_scale: np.ndarray | None = None, trabecular_hu: float | None = None,
                cortex_mm_map: np.ndarray | None = None, rim_bone_fraction: float | None = None) -> None:
    """Cortical shell (600-1800 HU, 0.8-2.5 mm) over a textured trabecular core whose density runs
    from osteoporotic (60 HU) to dense (400 HU); long-bone shafts get a thick cortex round fatty
    marrow. Partial volume at coarse spacing is left to the caller's blur.

    ``thin_cortex`` (the anatomy synthesiser): shells from 0.4 mm, and a shell thinner than a voxel
    fills the voxel by its thickness over the spacing, as the scanner averages it: a vertebral body's
    or the sacrum's 0.5 mm cortex in a 2 mm voxel shows as a faint rim over the cancellous core, not
    as the 600+ HU ring the older rule (1.5 x thickness / spacing + 0.3) drew. The procedural phantom
    keeps the older rule, so its held-out figures stay comparable across models.

    ``density_scale`` (per voxel, the anatomy synthesiser): each bone's cancellous density as a
    factor of the image's, so that one image holds denser and fattier bones side by side.
    ``trabecular_hu``: the image's cancellous density, drawn by the caller (``trabecular_for_age``)
    instead of uniformly here; the uniform draw is still taken, so every other draw stays as it was.

    ``cortex_mm_map`` (per voxel, NaN where the image's one thickness holds): each bone's own cortex,
    as the anatomy synthesiser draws it (``anatomy._cortex_map``: a vertebral body's shell is a
    tenth of a long bone's). With ``thin_cortex`` only.

    ``rim_bone_fraction`` (the anatomy synthesiser): how much of a voxel on a bone's outer edge is
    bone. A label map made from CT (TotalSegmentator's, a rater's) calls a voxel bone once about
    half of it is, so its outermost layer is partly bone and partly what lies outside; painting that
    layer as whole bone draws every bone fatter and brighter at its edge than a scanner shows it.
    The edge voxels (bone with a non-bone neighbour) get this share of their bone value and the rest
    from the non-bone voxels round them."""
    cortex_mm = rng.uniform(0.4, 2.5) if thin_cortex else rng.uniform(0.8, 2.5)
    if cortex_mm_map is not None and thin_cortex:
        cortex = np.where(np.isnan(cortex_mm_map), np.float32(cortex_mm), cortex_mm_map).astype(np.float32)
    else:
        cortex = cortex_mm
    cortical = rng.uniform(600, 1800)
    trabecular = rng.uniform(60, 400)
    if trabecular_hu is not None:
        trabecular = float(trabecular_hu)
    texture = smooth_field(ct.shape, rng, 1.5) * rng.uniform(20, 80)

    def cancellous(m: np.ndarray) -> float | np.ndarray:  # the cancellous HU in the voxels of m
        return trabecular if density_scale is None else np.minimum(trabecular * density_scale[m], TRABECULAR_MAX_HU)

    core = bone & (depth > cortex)
    ct[core] = cancellous(core) + texture[core]
    shell = bone & ~core
    # a shell thinner than a voxel shows as a weaker rim: blend by the fraction of the voxel it fills
    if thin_cortex:
        fill = np.minimum(1.0, (cortex[shell] if np.ndim(cortex) else cortex) / spacing_mm)
    else:
        fill = min(1.0, 1.5 * cortex_mm / spacing_mm + 0.3)
    ct[shell] = fill * cortical + (1 - fill) * cancellous(shell)
    if long_bone is not None and long_bone.any():
        shaft_cortex = rng.uniform(3.0, 6.0)
        marrow = long_bone & (depth > shaft_cortex)
        ct[long_bone & ~marrow & core] = cortical * rng.uniform(0.8, 1.0)
        ct[marrow] = rng.uniform(-80, 60) + texture[marrow] * 0.3
    if rim_bone_fraction is not None:
        _blend_rim(ct, bone, rim_bone_fraction)


def _blend_rim(ct: np.ndarray, bone: np.ndarray, fraction: float) -> None:
    """Mix each edge voxel of ``bone`` (one with a non-bone face neighbour; a bone cut by the
    image's border is not an edge there) with the mean of the non-bone voxels in its 3x3x3 box,
    ``fraction`` of it bone. ``render_bone`` writes only bone voxels, so the others in ``ct`` are
    what surrounds the bones."""
    rim = bone & ~ndimage.binary_erosion(bone, border_value=1)
    if not rim.any():
        return
    weight = ndimage.uniform_filter((~bone).astype(np.float32), size=3)  # > 0 on every edge voxel
    total = ndimage.uniform_filter(np.where(bone, np.float32(0.0), ct).astype(np.float32), size=3)
    ct[rim] = fraction * ct[rim] + (1.0 - fraction) * total[rim] / weight[rim]


#: A joint's space, both sides together (mm): articular cartilage and fluid between two bones whose
#: labels touch. The hip's is 3-5 mm in a young adult and narrows with age; facet, rib and carpal
#: joints are thinner. A label map made from CT (TotalSegmentator's) lets the two bones' labels touch
#: across it at 1.5 mm, so the space lies inside the labels as a dark line between two bone surfaces.
JOINT_SPACE_MM = (1.0, 4.5)
#: Cartilage and synovial fluid (HU): soft tissue, darker than any bone.
JOINT_HU = (10.0, 110.0)
#: An intervertebral disc (HU): fibrocartilage, 70-110 HU on real CT, as bright as the cancellous
#: core of an old vertebra. A label map leaves the disc unlabelled, and painted as the body's fat
#: and muscle it was a dark gap that told the network where one vertebra ends; on real CT the disc
#: is not dark, and a network that learned the gap labelled across it (a real abdomen's L4 and L5
#: each read half as the other).
DISC_HU = (60.0, 120.0)
#: How far from both vertebrae an unlabelled voxel may lie and be disc (mm): lumbar discs are
#: 8-12 mm high, thoracic 4-6 mm.
DISC_REACH_MM = 7.0


def _joint_faces(bones: np.ndarray):
    """Per axis, ``(axis, across)``: ``across[i]`` (in the array with that axis first) is True where
    voxels i and i+1 belong to two different bones (``bones``: one value per bone, 0 elsewhere)."""
    for axis in range(3):
        a = np.swapaxes(bones, 0, axis)
        yield axis, (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)


def bone_contacts(bones: np.ndarray) -> np.ndarray:
    """The voxels of a bone that face a voxel of another bone: where ``add_joint_spaces`` paints."""
    contacts = np.zeros(bones.shape, bool)
    for axis, across in _joint_faces(bones):
        c = np.swapaxes(contacts, 0, axis)
        c[1:] |= across
        c[:-1] |= across
    return contacts


def add_joint_spaces(ct: np.ndarray, bones: np.ndarray, spacing_zyx: tuple[float, float, float],
                     width_mm: float, joint_hu: float) -> int:
    """Draw the joint space where two different bones' labels touch (``bones``: one value per bone,
    0 elsewhere): each voxel on the joint gets half the width as its share of cartilage, blended as
    the scanner averages a layer thinner than a voxel (``min(1, width / 2 / spacing)`` along the axis
    that crosses the joint). Without it a synthesised femoral head and acetabulum, or two facets, read
    as one bright bone, and a network learns no boundary where a real CT shows a dark line.
    The cortex those voxels held moves one voxel inward as the subchondral plate. Only the voxels
    next to the joint are painted, so at the synthesiser's finest spacing (1.6 mm) a half width
    above 1.6 mm (up to 2.25 mm) leaves out the rest (up to 0.4 of the next voxel): the widest
    joints are drawn a little narrower there. The procedural phantom draws none (its figures stay
    comparable across models). Returns the voxels painted."""
    fill = np.zeros(bones.shape, np.float32)
    half = width_mm / 2.0
    for axis, across in _joint_faces(bones):
        f = np.swapaxes(fill, 0, axis)
        share = np.where(across, np.float32(min(1.0, half / spacing_zyx[axis])), np.float32(0))
        np.maximum(f[1:], share, out=f[1:])
        np.maximum(f[:-1], share, out=f[:-1])
    on_joint = fill > 0
    if not on_joint.any():
        return 0
    # the bone surface (its cortex, drawn on the label's edge) moves inward under the cartilage as
    # the subchondral plate: each voxel behind the joint takes the share of cortex its neighbour lost
    cross = ndimage.generate_binary_structure(3, 1)
    moved = ndimage.grey_dilation(np.where(on_joint, fill * ct, np.float32(-1e4)), footprint=cross)
    moved_share = ndimage.grey_dilation(fill, footprint=cross)
    behind = (bones > 0) & ~on_joint & (moved_share > 0)
    ct[on_joint] = (1 - fill[on_joint]) * ct[on_joint] + fill[on_joint] * np.float32(joint_hu)
    ct[behind] = np.maximum(ct[behind], (1 - moved_share[behind]) * ct[behind] + moved[behind])
    return int(np.count_nonzero(on_joint))


def fat_and_muscle(shape: tuple[int, int, int], rng: np.random.Generator, spacing_mm: float) -> np.ndarray:
    """The unnamed soft tissue of a body: muscle (30-60 HU) and fat (-120..-70 HU) mixed by a smooth
    random field, fat fraction from lean to obese."""
    fat_hu, muscle_hu = rng.uniform(-120, -70), rng.uniform(30, 60)
    fraction = rng.uniform(0.2, 0.7)
    mix = smooth_field(shape, rng, rng.uniform(6, 20) / spacing_mm)
    threshold = np.quantile(mix[:: 4, :: 4, :: 4], 1 - fraction)
    out = np.where(mix > threshold, fat_hu, muscle_hu).astype(np.float32)
    out += smooth_field(shape, rng, 2.0) * rng.uniform(3, 12)
    return out


MUSCLE_WALL_MM = (4.0, 12.0)  # chest and abdominal wall muscles outside the labelled hull


def close_in_plane(mask: np.ndarray, width: int) -> np.ndarray:
    """``mask`` closed by a ``width`` x ``width`` square in each slice (array axes 1 and 2), the
    array's outside counting as empty: ``ndimage.binary_closing`` with that square, voxel for voxel.

    Why running maxima and minima: a square is the product of two lines, and a running extreme
    costs the same whatever its length; 11x faster than scipy's closing on a 2 mm whole body
    (0.4 s against 4.3 s)."""
    out = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    for axis in (1, 2):
        out = ndimage.maximum_filter1d(out, width, axis=axis, mode="constant", cval=0)
    for axis in (1, 2):
        out = ndimage.minimum_filter1d(out, width, axis=axis, mode="constant", cval=0)
    return out.view(bool)


def envelope(inside: np.ndarray, rng: np.random.Generator, spacing_zyx: tuple[float, float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Body outline round the labelled structures: per-slice filled, closed hull, a muscle wall of
    ``MUSCLE_WALL_MM`` round it, then a subcutaneous fat layer of random thickness. Returns (body,
    muscle_wall, fat_layer, fat_thickness_mm).

    The wall is there because TotalSegmentator labels no chest or abdominal wall muscles: without
    it a rib lay between lung and fat, and where the fat was drawn thin, blurred fat fell below
    -300 HU and the lung met the air between the ribs, which no real chest does."""
    core = close_in_plane(inside, 17)  # a 9 x 9 square's closing, twice
    core = np.stack([ndimage.binary_fill_holes(s) for s in core])
    thickness = float(rng.uniform(4, 40))
    outside_distance = distance_to_mm(core, spacing_zyx)
    # thicker at the belly and back than at the sides: modulate with a smooth field
    local = thickness * (1 + 0.4 * smooth_field(core.shape, rng, 30 / spacing_zyx[1]))
    wall = float(rng.uniform(*MUSCLE_WALL_MM))
    body = core | (outside_distance <= wall + np.maximum(local, 0))
    muscle = body & ~core & (outside_distance <= wall)
    return body, muscle, body & ~core & ~muscle, thickness


def add_table(ct: np.ndarray, body: np.ndarray, rng: np.random.Generator, spacing_zyx: tuple[float, float, float],
              posterior_axis_sign: int = 1) -> None:
    """A curved CT table top (carbon fibre, 3-12 mm) and a foam cushion under the patient's back at
    a random gap; metal rails at its edges now and then; in half the images a second, thinner shell
    20-60 mm below the top (many tables are two shells around a foam or air core). Array axis 1
    is y (posterior + in LPS)."""
    zs, ys, xs = np.nonzero(body)
    if len(ys) == 0:
        return
    ny, nx = ct.shape[1], ct.shape[2]
    back = ys.max() if posterior_axis_sign > 0 else ys.min()
    sy, sx = spacing_zyx[1], spacing_zyx[2]
    cushion_mm = rng.uniform(0, 60)
    plate_mm = rng.uniform(3, 12)
    curve = rng.uniform(0, 0.0008)  # mm per mm^2: flat to gently dished
    cx = (xs.min() + xs.max()) / 2
    x_mm = (np.arange(nx) - cx) * sx
    top = back + posterior_axis_sign * (cushion_mm - curve * x_mm**2) / sy
    y = np.arange(ny)[:, None]
    depth_into = posterior_axis_sign * (y - top[None, :]) * sy  # mm below the table's top surface
    half_width = rng.uniform(200, 260) / sx
    across = np.abs(np.arange(nx) - cx) <= half_width
    plate = (depth_into >= 0) & (depth_into < plate_mm) & across[None, :]
    cushion = (depth_into < 0) & (depth_into >= -cushion_mm) & across[None, :]
    plate_hu, cushion_hu = rng.uniform(50, 500), rng.uniform(-900, -500)
    free = ~body
    ct[:, :, :][free & cushion[None]] = cushion_hu
    ct[:, :, :][free & plate[None]] = plate_hu
    if rng.random() < 0.3:  # rails
        rail = plate & (np.abs(np.abs(np.arange(nx) - cx) - half_width) < 3 / sx)[None, :]
        ct[free & rail[None]] = rng.uniform(1200, 3000)
    if rng.random() < 0.5:  # the lower shell
        below = plate_mm + rng.uniform(20, 60)
        shell = (depth_into >= below) & (depth_into < below + rng.uniform(2, 6)) & across[None, :]
        ct[free & shell[None]] = plate_hu * rng.uniform(0.7, 1.2)


def add_calcifications(ct: np.ndarray, vessel_wall: np.ndarray, rng: np.random.Generator, max_spots: int = 40) -> None:
    """Bright plaques (300-1000 HU) on a vessel wall, as in most older patients' aortas."""
    idx = np.flatnonzero(vessel_wall)
    if len(idx) == 0 or rng.random() < 0.4:
        return
    for i in rng.choice(idx, min(len(idx), int(rng.integers(1, max_spots))), replace=False):
        z, y, x = np.unravel_index(i, ct.shape)
        ct[z, y:y + 2, x:x + 2] = np.maximum(ct[z, y:y + 2, x:x + 2], rng.uniform(300, 1000))


#: Calcified plaques in an artery's wall, per decade of age above ``PLAQUE_FROM_YEARS`` (a Poisson
#: mean): most people over 60 have some in the abdominal aorta, most over 75 many (the Framingham
#: lateral radiograph score; CT: Wilson et al., Circulation 2001), and they lie on its back wall
#: next to the spine, where a network that has only seen bone that bright calls them bone.
PLAQUES_PER_DECADE, PLAQUE_FROM_YEARS, MAX_PLAQUES = 2.5, 40.0, 30
PLAQUE_HU = (300.0, 1400.0)
PLAQUE_LENGTH_MM = (4.0, 30.0)  # along the vessel (head to foot)
PLAQUE_ARC_MM = (3.0, 12.0)  # round its wall
PLAQUE_THICKNESS_MM = (0.8, 2.5)


def add_plaques(ct: np.ndarray, arteries: np.ndarray, depth: np.ndarray, age_years: float,
                rng: np.random.Generator, spacing_zyx: tuple[float, float, float]) -> int:
    """Calcified plaques (``PLAQUE_HU``) on the arteries' wall, more with age: each a patch of
    the wall's outer ``PLAQUE_THICKNESS_MM``, ``PLAQUE_ARC_MM`` round and ``PLAQUE_LENGTH_MM``
    along it, at a wall voxel drawn with twice the weight on the back half of the artery (the
    aorta's plaques gather beside the spine). Not bone: labels are the caller's and stay as they
    are. ``add_calcifications`` draws the older, one-slice spots. Returns how many were drawn."""
    count = min(MAX_PLAQUES, int(rng.poisson(PLAQUES_PER_DECADE * max(0.0, age_years - PLAQUE_FROM_YEARS) / 10.0)))
    wall = arteries & (depth < PLAQUE_THICKNESS_MM[1])
    idx = np.flatnonzero(wall)
    if count == 0 or len(idx) == 0:
        return 0
    zyx = np.array(np.unravel_index(idx, ct.shape))
    back = np.zeros(len(idx), bool)  # behind the centre of the arteries in that slice (array axis 1: posterior +, LPS)
    for z in np.unique(zyx[0]):
        here = zyx[0] == z
        sel = arteries[z]
        back[here] = zyx[1, here] > np.nonzero(sel)[0].mean() if sel.any() else False
    weight = np.where(back, 2.0, 1.0)
    drawn = 0
    for i in rng.choice(len(idx), size=count, p=weight / weight.sum()):
        centre = zyx[:, i]
        half = np.array([rng.uniform(*PLAQUE_LENGTH_MM), rng.uniform(*PLAQUE_ARC_MM), 0.0]) / 2
        half[2] = half[1]
        reach = np.ceil(half / np.array(spacing_zyx)).astype(int)
        lo = np.maximum(centre - reach, 0)
        hi = np.minimum(centre + reach + 1, ct.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = np.ogrid[box]
        inside = sum(((g - c) * s / h) ** 2 for g, c, s, h in zip(grid, centre, spacing_zyx, half)) <= 1.0
        patch = inside & arteries[box] & (depth[box] < rng.uniform(*PLAQUE_THICKNESS_MM))
        ct[box][patch] = np.maximum(ct[box][patch], rng.uniform(*PLAQUE_HU))
        drawn += 1
    return drawn


def add_metal(ct: np.ndarray, candidates: np.ndarray, rng: np.random.Generator, probability: float = 0.15) -> None:
    """Now and then a small metal object (ECG electrode, clip: 2000-3000 HU) in soft tissue; it is
    not bone and its label stays background."""
    if rng.random() >= probability:
        return
    idx = np.flatnonzero(candidates)
    for i in rng.choice(idx, min(len(idx), int(rng.integers(1, 4))), replace=False) if len(idx) else []:
        z, y, x = np.unravel_index(i, ct.shape)
        ct[max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = rng.uniform(2000, 3000)


def scanner(ct: np.ndarray, rng: np.random.Generator, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Slice-thickness and kernel blur, then noise with spatial correlation (5-60 HU), as int16."""
    thickness_mm = rng.uniform(0.5, 5.0)
    kernel_mm = rng.uniform(0.3, 1.2)
    sigma = (thickness_mm / 2.355 / spacing_zyx[0], kernel_mm / spacing_zyx[1], kernel_mm / spacing_zyx[2])
    out = ndimage.gaussian_filter(ct, sigma=sigma)
    noise = rng.standard_normal(ct.shape).astype(np.float32)
    corr = rng.uniform(0.4, 1.2)
    noise = ndimage.gaussian_filter(noise, sigma=(corr * 0.5, corr, corr))
    noise *= rng.uniform(5, 60) / max(float(noise.std()), 1e-6)
    out += noise
    return np.clip(out, -1024, 3071).astype(np.int16)


METAL_IMPLANT_HU = (2500.0, 4000.0)  # cobalt-chrome and titanium implants saturate a 12-bit CT


def add_metal_artifacts(ct: np.ndarray, metal: np.ndarray, rng: np.random.Generator,
                        spacing_zyx: tuple[float, float, float]) -> None:
    """Streaks round large metal (a prosthesis, spinal screws), slice by slice as a scanner makes them:
    bright and dark rays through each metal piece that fade with distance, a dark halo beside it
    (beam hardening), and a dark band between two pieces in one slice (photon starvation, the band
    between two hip prostheses). Strength grows with the metal's cross-section. The metal itself is
    left as it is; its labels are the caller's (an implant in a bone keeps the bone's label, as
    TotalSegmentator labels a hip prosthesis femur)."""
    slices = np.nonzero(metal.any(axis=(1, 2)))[0]
    if not len(slices):
        return
    sy, sx = spacing_zyx[1], spacing_zyx[2]
    ny, nx = ct.shape[1:]
    yy = (np.arange(ny, dtype=np.float32) * sy)[:, None]
    xx = (np.arange(nx, dtype=np.float32) * sx)[None, :]
    count = int(rng.integers(6, 17))
    angles = rng.uniform(0, np.pi, count)
    amplitudes = np.where(rng.random(count) < 0.6, -1.0, 1.0) * rng.uniform(100, 700, count)
    width_mm, decay_mm = rng.uniform(0.8, 2.5), rng.uniform(30, 100)
    halo_hu, band_hu = rng.uniform(50, 300), rng.uniform(150, 600)
    for z in slices:
        pieces, n = ndimage.label(metal[z])
        if n == 0:
            continue
        sizes = ndimage.sum_labels(np.ones_like(pieces), pieces, range(1, n + 1)) * sy * sx
        centres = ndimage.center_of_mass(metal[z], pieces, range(1, n + 1))
        art = np.zeros((ny, nx), np.float32)
        big = [(np.array(c) * (sy, sx), a) for c, a in zip(centres, sizes) if a >= 4 * sy * sx]
        for (cy, cx), area in big:
            strength = min(1.0, float(np.sqrt(area)) / 15.0)
            dy, dx = yy - cy, xx - cx
            r = np.sqrt(dy * dy + dx * dx)
            fade = np.exp(-r / decay_mm)
            jitter = rng.normal(0, 0.03, count)
            for theta, amp in zip(angles + jitter, amplitudes):
                across = dx * np.sin(theta) - dy * np.cos(theta)
                art += strength * amp * np.exp(-0.5 * (across / width_mm) ** 2) * fade
            art -= strength * halo_hu * np.exp(-r / 12.0)
        for i in range(len(big)):
            for j in range(i + 1, len(big)):
                (p, _), (q, _) = big[i], big[j]
                d = q - p
                length = float(np.hypot(*d))
                if length < 1e-3:
                    continue
                t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / length ** 2, 0, 1)
                off = np.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1]))
                art -= band_hu * np.exp(-0.5 * (off / rng.uniform(3, 8)) ** 2)
        keep = ~metal[z]
        ct[z][keep] += art[keep]

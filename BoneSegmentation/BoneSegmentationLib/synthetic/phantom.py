"""Synthetic upper-body skeleton phantom: a CT-like volume and a label map of all 125 bones.

No real 125-bone labels can be had here, so tests, the demo and the demo model use this
procedural anatomy. Bones are painted as ellipsoids and tubes (capsule chains) in patient
coordinates (LPS: +x = patient left, +y = posterior, +z = superior, millimetres) in a plausible
layout, so that bone identity is learnable from context as in real anatomy: vertebrae stacked
with discs and a gentle S-curve, ribs curving from their thoracic vertebra round the thorax,
arms on the lap or forearms crossed over the stomach, 27 bones per hand.

Each bone is painted into one integer label map (later primitives win), so labels never overlap.
CT: cortical shell (700-1500 HU) over trabecular core (150-400 HU), soft tissue, fat, lungs,
air, partial-volume blur and noise. Deterministic per seed.

``surroundings=True`` dresses the phantom as a real scan looks (``tissue.py``): a heart, aorta and
vena cava that a contrast phase makes 30-750 HU, fat and muscle with texture, lung vessels, a CT
table, calcifications, metal, correlated noise and slice blur. Training mixes these phantoms (all
125 bones, hands included) with images synthesised from real anatomy (``anatomy.py``); the
default (off) keeps the held-out phantoms of the evaluation unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core.bones import BoneTable, default_table
from . import tissue

DEMO_SEED = 4  # the demo's and Sample Data's phantom: a held-out seed (training uses 1000 and above)

DIGITS = ("thumb", "index", "middle", "ring", "little")
# tissue codes painted into Painter.tissue where surroundings are drawn (rendered per contrast phase)
HEART, ARTERY, VEIN = 5001.0, 5002.0, 5003.0


@dataclass
class PhantomSpec:
    """The random choices of one phantom (all derived from the seed)."""

    seed: int
    scale: float
    posture: str  # "lap" or "crossed"
    yaw_deg: float
    roll_deg: float
    curvature: float
    spacing: float
    fov: tuple[float, float]  # z range kept, in body mm (inferior, superior)
    extras: dict = field(default_factory=dict)


class Painter:
    """Paints primitives into a label map and a tissue map on a fixed LPS grid."""

    def __init__(self, shape_zyx: tuple[int, int, int], origin_xyz: np.ndarray, spacing: float,
                 rotation: np.ndarray):
        self.labels = np.zeros(shape_zyx, dtype=np.uint8)
        self.tissue = np.full(shape_zyx, -1000.0, dtype=np.float32)
        self.origin = origin_xyz
        self.spacing = spacing
        self.rotation = rotation  # body frame -> patient frame

    def _world(self, p) -> np.ndarray:
        return self.rotation @ np.asarray(p, dtype=float)

    def _box(self, lo: np.ndarray, hi: np.ndarray):
        """Voxel index slices (z, y, x) covering the world box, and the voxel coordinates."""
        i0 = np.floor((lo - self.origin) / self.spacing).astype(int)
        i1 = np.ceil((hi - self.origin) / self.spacing).astype(int) + 1
        shape = np.array(self.labels.shape[::-1])
        i0, i1 = np.clip(i0, 0, shape), np.clip(i1, 0, shape)
        if np.any(i1 <= i0):
            return None
        xs = self.origin[0] + self.spacing * np.arange(i0[0], i1[0])
        ys = self.origin[1] + self.spacing * np.arange(i0[1], i1[1])
        zs = self.origin[2] + self.spacing * np.arange(i0[2], i1[2])
        sl = (slice(i0[2], i1[2]), slice(i0[1], i1[1]), slice(i0[0], i1[0]))
        return sl, zs[:, None, None], ys[None, :, None], xs[None, None, :]

    def _apply(self, sl, mask, label: int | None, hu: float | None) -> None:
        if label is not None:
            self.labels[sl][mask] = label
        if hu is not None:
            self.tissue[sl][mask] = hu

    def ellipsoid(self, centre, radii, label: int | None = None, hu: float | None = None,
                  axes: np.ndarray | None = None) -> None:
        """Ellipsoid with semi-axes ``radii`` along the columns of ``axes`` (body frame)."""
        axes = np.eye(3) if axes is None else axes
        c = self._world(centre)
        frame = self.rotation @ axes
        r = np.asarray(radii, float)
        ext = np.abs(frame) @ r
        box = self._box(c - ext, c + ext)
        if box is None:
            return
        sl, z, y, x = box
        d = (x - c[0], y - c[1], z - c[2])
        q = 0
        for k in range(3):
            proj = frame[0, k] * d[0] + frame[1, k] * d[1] + frame[2, k] * d[2]
            q = q + (proj / r[k]) ** 2
        self._apply(sl, q <= 1.0, label, hu)

    def tube(self, points, radius, label: int | None = None, hu: float | None = None) -> None:
        """Chain of capsules through ``points`` (radius may be a scalar or one per point)."""
        pts = [self._world(p) for p in points]
        radii = np.broadcast_to(np.asarray(radius, float), (len(pts),))
        for (a, ra), (b, rb) in zip(zip(pts, radii), zip(pts[1:], radii[1:])):
            r = max(ra, rb)
            box = self._box(np.minimum(a, b) - r, np.maximum(a, b) + r)
            if box is None:
                continue
            sl, z, y, x = box
            ab = b - a
            denom = float(ab @ ab) or 1e-9
            t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / denom
            t = np.clip(t, 0.0, 1.0)
            dist2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
            rad = ra + (rb - ra) * t
            self._apply(sl, dist2 <= rad**2, label, hu)


def _frame(u) -> np.ndarray:
    """An orthonormal frame whose first column is ``u``."""
    u = np.asarray(u, float) / np.linalg.norm(u)
    helper = np.array([0, 0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0, 0])
    v = np.cross(u, helper)
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)], axis=1)


def _rot(yaw_deg: float, roll_deg: float) -> np.ndarray:
    a, b = np.deg2rad(yaw_deg), np.deg2rad(roll_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rz @ ry


def random_spec(seed: int, spacing: float = 2.0, partial: bool | None = None) -> PhantomSpec:
    rng = np.random.default_rng(seed)
    if partial is None:
        partial = rng.random() < 0.3
    fov = (-470.0, 700.0)
    if partial:
        lo = rng.uniform(-470, 100)
        fov = (lo, lo + rng.uniform(300, 600))
    return PhantomSpec(seed=seed, scale=float(rng.uniform(0.88, 1.12)),
                       posture="crossed" if rng.random() < 0.4 else "lap",
                       yaw_deg=float(rng.uniform(-6, 6)), roll_deg=float(rng.uniform(-3, 3)),
                       curvature=float(rng.uniform(0.5, 1.5)), spacing=spacing, fov=fov)


def make_phantom(seed: int = 0, spacing: float = 2.0, partial: bool | None = False,
                 spec: PhantomSpec | None = None,
                 table: BoneTable | None = None,
                 surroundings: bool = False) -> tuple[sitk.Image, sitk.Image, PhantomSpec]:
    """CT (int16 HU) and label map (uint8, bone table indices) on the same LPS grid;
    ``surroundings``: a realistic scan around the bones (contrast, table, texture, noise)."""
    spec = spec or random_spec(seed, spacing, partial)
    table = table or default_table()
    rng = np.random.default_rng(spec.seed + 7919)
    s = spec.scale
    lo_z, hi_z = spec.fov
    lo = np.array([-270.0 * s, -190.0 * s, max(lo_z, -470.0) * s])
    hi = np.array([270.0 * s, 190.0 * s, min(hi_z, 700.0) * s])
    shape_xyz = np.ceil((hi - lo) / spec.spacing).astype(int)
    painter = Painter(tuple(shape_xyz[::-1]), lo, spec.spacing, _rot(spec.yaw_deg, spec.roll_deg))
    anatomy = _Anatomy(painter, table, spec, rng)
    anatomy.build()
    if surroundings:
        extra = np.random.default_rng(np.random.SeedSequence([spec.seed, 0x5A11]))
        anatomy.vessels_and_heart()
        ct = _render_realistic(painter, extra)
        spec.extras["surroundings"] = True
    else:
        ct = _render_ct(painter, rng)
    ct_img = sitk.GetImageFromArray(ct)
    lab_img = sitk.GetImageFromArray(painter.labels)
    for img in (ct_img, lab_img):
        img.SetOrigin(tuple(float(v) for v in lo))
        img.SetSpacing((spec.spacing,) * 3)
    return ct_img, lab_img, spec


def _render_ct(p: Painter, rng: np.random.Generator) -> np.ndarray:
    ct = p.tissue.copy()
    bone = p.labels > 0
    # cortical shell: bone voxels with a neighbour of another label (or none)
    shell = np.zeros_like(bone)
    for axis in range(3):
        for shift in (1, -1):
            shell |= bone & (np.roll(p.labels, shift, axis=axis) != p.labels)
    ct[bone] = rng.uniform(180, 350)
    ct[shell] = rng.uniform(800, 1300)
    ct = ndimage.gaussian_filter(ct, sigma=0.6)
    ct += rng.normal(0, rng.uniform(10, 30), ct.shape).astype(np.float32)
    return np.clip(ct, -1024, 3000).astype(np.int16)


def _render_realistic(p: Painter, rng: np.random.Generator) -> np.ndarray:
    """The phantom's tissue codes rendered as a real scan shows them (see ``tissue.py``)."""
    spacing = (p.spacing,) * 3
    code = p.tissue
    phase = tissue.draw_phase(rng)
    ct = np.full(code.shape, tissue.AIR_HU, np.float32)
    body = code > -500
    soft = tissue.fat_and_muscle(code.shape, rng, p.spacing)
    ct[body] = soft[body]
    ct[np.isclose(code, -90)] = rng.uniform(-120, -80)  # subcutaneous fat envelope
    ct[np.isclose(code, 35)] = rng.uniform(25, 40)  # brain
    ct[np.isclose(code, 120)] = rng.uniform(60, 160)  # costal cartilage
    lungs = (code > -900) & (code < -800)
    ct[lungs] = rng.uniform(-920, -820) + tissue.smooth_field(code.shape, rng, 2.0)[lungs] * 10
    f1, f2 = (tissue.smooth_field(code.shape, rng, rng.uniform(6, 12) / p.spacing) for _ in range(2))
    width = rng.uniform(0.06, 0.12)
    vessels = lungs & (np.abs(f1) < width) & (np.abs(f2) < width)
    ct[vessels] = rng.uniform(-100, 80)
    regions = np.where(p.labels > 0, p.labels.astype(np.int32), 0)
    regions[(p.labels == 0) & (code == HEART)] = 1001
    regions[(p.labels == 0) & (code == ARTERY)] = 1002
    regions[(p.labels == 0) & (code == VEIN)] = 1003
    depth = tissue.depth_mm(np.where(body, regions, -1), spacing)
    heart = regions == 1001
    ct[heart] = phase.heart
    ct[heart & (depth < rng.uniform(4, 10))] = phase.myocardium
    ct[regions == 1002] = phase.arteries
    ct[regions == 1003] = phase.veins
    tissue.add_calcifications(ct, (regions == 1002) & (depth < 2.5), rng)
    bone = p.labels > 0
    tissue.render_bone(ct, bone, depth, rng, spacing_mm=p.spacing)
    tissue.add_metal(ct, body & ~bone & (depth < 5), rng)
    tissue.add_table(ct, body, rng, spacing)
    return tissue.scanner(ct, rng, spacing)


class _Anatomy:
    """Builds the 125 bones in the body frame; all lengths in mm, scaled by ``spec.scale``."""

    def __init__(self, painter: Painter, table: BoneTable, spec: PhantomSpec, rng: np.random.Generator):
        self.p, self.t, self.spec, self.rng = painter, table, spec, rng
        self.s = spec.scale

    def L(self, name: str) -> int:
        return self.t.by_name(name).index

    def jit(self, sd: float = 1.0) -> float:
        return float(self.rng.normal(0, sd))

    def build(self) -> None:
        s = self.s
        # soft tissue first (bones overwrite): torso, neck, head, thighs; lungs
        p = self.p
        for z0, z1, rx, ry in ((-470, 430, 175, 125), (400, 470, 65, 60)):
            p.tube([(0, 10 * s, z0 * s), (0, 10 * s, z1 * s)], [rx * s], hu=None)
        p.ellipsoid((0, 0, -40 * s), (180 * s, 130 * s, 430 * s), hu=-90)  # fat envelope
        p.ellipsoid((0, 0, -40 * s), (165 * s, 118 * s, 420 * s), hu=40)  # muscle / organs
        p.ellipsoid((0, 10 * s, 430 * s), (60 * s, 60 * s, 70 * s), hu=40)  # neck
        p.ellipsoid((0, 5 * s, 560 * s), (85 * s, 105 * s, 110 * s), hu=40)  # head
        for side in (1, -1):
            p.ellipsoid((side * 95 * s, 0, -360 * s), (85 * s, 90 * s, 150 * s), hu=40)  # thigh
            p.ellipsoid((side * 75 * s, 0, 200 * s), (62 * s, 75 * s, 130 * s), hu=-850)  # lung
        self.spine()
        self.skull()
        self.thorax()
        self.pelvis_and_legs()
        self.arms()

    def vessels_and_heart(self) -> None:
        """Heart in front of the mid-thoracic spine, aorta (arch, descending, iliac arteries) and
        inferior vena cava beside the vertebral bodies; painted only where no bone is."""
        s, p, zt = self.s, self.p, self.vertebra_z
        keep = p.labels.copy()
        yh = self.spine_y(zt["T8"]) - 85 * s
        p.ellipsoid((20 * s, yh, zt["T8"]), (55 * s, 45 * s, 60 * s), None, hu=HEART)
        arch_z = zt["T3"]
        desc = [(18 * s, self.spine_y(z) - 28 * s, z) for z in np.linspace(zt["T5"], zt["L4"], 12)]
        p.tube([(8 * s, yh, zt["T7"]), (5 * s, yh + 10 * s, arch_z), (15 * s, self.spine_y(arch_z) - 30 * s, arch_z),
                desc[0]] + desc, 12 * s, None, hu=ARTERY)
        bif = desc[-1]
        for side in (1, -1):
            p.tube([bif, (side * 55 * s, bif[1] + 10 * s, self.sacrum_z)], 7 * s, None, hu=ARTERY)
        ivc = [(-24 * s, self.spine_y(z) - 30 * s, z) for z in np.linspace(zt["L5"], zt["T9"], 10)]
        p.tube(ivc + [(5 * s, yh, zt["T8"])], 11 * s, None, hu=VEIN)
        p.labels[:] = keep  # the tubes carry no label; bones keep theirs

    # --- axial skeleton -------------------------------------------------------------------
    def spine_y(self, z: float) -> float:
        """Vertebral body centre (y) along the S-curve: lordosis in neck and lumbar, kyphosis in
        the thorax."""
        c = self.spec.curvature * self.s
        zn = z / self.s
        return self.s * 40 + c * (18 * np.sin((zn - 120) / 520 * 2 * np.pi) - 10 * np.exp(-((zn - 430) / 60) ** 2))

    def spine(self) -> None:
        s, p = self.s, self.p
        levels = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
        heights = [12] * 7 + list(np.linspace(17, 24, 12)) + [27, 28, 29, 29, 28]
        radii = list(np.linspace(9, 12, 7)) + list(np.linspace(13, 19, 12)) + list(np.linspace(21, 24, 5))
        z = 468 * s
        self.vertebra_z = {}
        for level, h, r in zip(levels, heights, radii):
            h, r = h * s, r * s
            zc = z - h / 2
            self.vertebra_z[level] = zc
            y = self.spine_y(zc)
            lab = self.L(f"vertebra_{level}")
            p.ellipsoid((0, y, zc), (r * 1.15, r * 0.85, h / 2), lab)
            # posterior arch: pedicles, transverse and spinous processes
            arch_y = y + r * 0.9
            p.tube([(-r * 0.6, y + r * 0.5, zc), (-r * 0.7, arch_y + 6 * s, zc), (0, arch_y + 10 * s, zc),
                    (r * 0.7, arch_y + 6 * s, zc), (r * 0.6, y + r * 0.5, zc)], 3.5 * s, lab)
            spin_len = (14 if level.startswith("C") else 26 if level.startswith("T") else 22) * s
            p.tube([(0, arch_y + 10 * s, zc), (0, arch_y + 10 * s + spin_len, zc - (6 if level.startswith("T") else 2) * s)],
                   3.5 * s, lab)
            tp = (16 if level.startswith("C") else 24 if level.startswith("T") else 30) * s
            p.tube([(-tp, arch_y + 2 * s, zc), (tp, arch_y + 2 * s, zc)], 3.0 * s, lab)
            z -= h + (4 if level.startswith("C") else 6 if level.startswith("T") else 9) * s
        # sacrum (wedge) and coccyx below L5
        y5 = self.spine_y(z)
        sac = self.L("sacrum")
        for k in range(5):
            zc = z - (8 + k * 18) * s
            w = (55 - k * 9) * s
            p.ellipsoid((0, y5 + (8 + k * 6) * s, zc), (w, 14 * s, 11 * s), sac)
        self.sacrum_z = z - 40 * s
        self.sacrum_y = y5 + 20 * s
        cz = z - 100 * s
        p.tube([(0, y5 + 40 * s, cz), (0, y5 + 36 * s, cz - 25 * s)], [7 * s, 4 * s], self.L("coccyx"))

    def skull(self) -> None:
        s, p = self.s, self.p
        top = self.vertebra_z["C1"]
        centre = np.array([0, 5 * s, top + 95 * s])
        cran = self.L("cranium")
        p.ellipsoid(centre, (72 * s, 92 * s, 82 * s), cran)
        p.ellipsoid(centre, (64 * s, 84 * s, 74 * s), None, hu=35)  # brain (not bone)
        p.ellipsoid(centre, (64 * s, 84 * s, 74 * s), 0)
        p.ellipsoid(centre + np.array([0, 8 * s, -70 * s]), (45 * s, 40 * s, 14 * s), cran)  # skull base
        p.ellipsoid((0, -62 * s, top + 30 * s), (30 * s, 20 * s, 18 * s), self.L("maxilla"))
        mand = self.L("mandible")
        for side in (1, -1):
            p.tube([(side * 48 * s, -5 * s, top + 25 * s), (side * 46 * s, -10 * s, top - 8 * s),
                    (side * 32 * s, -60 * s, top - 20 * s), (0, -78 * s, top - 22 * s)], 6 * s, mand)
        p.ellipsoid((0, -42 * s, self.vertebra_z["C3"] - 5 * s), (17 * s, 7 * s, 4 * s), self.L("hyoid"))

    def thorax(self) -> None:
        s, p = self.s, self.p
        front_y = -105 * s
        self.rib_ends = {}
        for k in range(1, 13):
            zc = self.vertebra_z[f"T{k}"]
            y0 = self.spine_y(zc) + 12 * s
            ax = (70 + 70 * np.sin(np.pi * min(k, 8) / 16) + (8 - k) * 0 ) * s if k < 8 else (140 - (k - 8) * 6) * s
            ay = (60 + 6 * min(k, 7)) * s
            yc = y0 - ay
            theta_end = {11: 0.50, 12: 0.40}.get(k, 0.85 if k <= 7 else 0.80 - 0.05 * (k - 8)) * np.pi
            drop = (30 + 7 * k) * s
            for side, sname in ((1, "left"), (-1, "right")):
                ts = np.linspace(0.12, theta_end, 14)
                pts = [(side * (16 * s + ax * np.sin(t)), yc + ay * np.cos(t), zc - drop * (t / np.pi) ** 1.4)
                       for t in ts]
                p.tube(pts, 5.0 * s, self.L(f"rib_{sname}_{k}"))
                self.rib_ends[(sname, k)] = pts[-1]
        # sternum parts in front, costal cartilage (soft tissue HU) from ribs 1-10 to it
        zt = self.vertebra_z
        man_top, man_bot = zt["T2"] + 5 * s, zt["T4"]
        body_bot = zt["T9"]
        p.ellipsoid((0, front_y, (man_top + man_bot) / 2), (26 * s, 8 * s, (man_top - man_bot) / 2), self.L("sternum_manubrium"))
        p.ellipsoid((0, front_y - 4 * s, (man_bot + body_bot) / 2 - 3 * s), (17 * s, 7 * s, (man_bot - body_bot) / 2 - 4 * s), self.L("sternum_body"))
        p.tube([(0, front_y - 2 * s, body_bot - 6 * s), (0, front_y + 4 * s, body_bot - 34 * s)], [6 * s, 3.5 * s], self.L("sternum_xiphoid"))
        for (sname, k), end in self.rib_ends.items():
            if k <= 10:
                target = (np.sign(end[0]) * 14 * s, front_y, np.clip(end[2], body_bot, man_top))
                p.tube([end, target], 4 * s, None, hu=120)
        # clavicles and scapulae
        for side, sname in ((1, "left"), (-1, "right")):
            zc = zt["T1"] + 8 * s
            p.tube([(side * 22 * s, front_y + 5 * s, man_top), (side * 80 * s, -95 * s, zc + 12 * s),
                    (side * 150 * s, -20 * s, zc + 14 * s)], 7 * s, self.L(f"clavicle_{sname}"))
            sc = self.L(f"scapula_{sname}")
            centre = (side * 100 * s, 105 * s, zt["T4"])
            axes = _frame((side * 0.25, 0.1, 1.0))
            p.ellipsoid(centre, (75 * s, 42 * s, 6 * s), sc, axes=axes @ np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]]).T)
            p.tube([(side * 70 * s, 115 * s, zt["T2"]), (side * 150 * s, 60 * s, zt["T1"] + 10 * s)], 6 * s, sc)
            self.shoulder = getattr(self, "shoulder", {})
            self.shoulder[sname] = np.array([side * 160 * s, 40 * s, zt["T1"] - 10 * s])

    def pelvis_and_legs(self) -> None:
        s, p = self.s, self.p
        zs = self.sacrum_z
        for side, sname in ((1, "left"), (-1, "right")):
            hip = self.L(f"hip_{sname}")
            wing = _frame((side * 0.5, -0.6, 0.3))
            p.ellipsoid((side * 95 * s, 30 * s, zs + 55 * s), (70 * s, 50 * s, 8 * s), hip,
                        axes=wing @ np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]]).T)
            acet = np.array([side * 95 * s, 0, zs - 45 * s])
            p.tube([(side * 95 * s, 30 * s, zs + 55 * s), (side * 100 * s, 20 * s, zs - 10 * s)], 9 * s, hip)  # ilium body
            p.tube([(side * 55 * s, self.sacrum_y, zs + 20 * s), (side * 100 * s, 20 * s, zs - 10 * s), acet], 14 * s, hip)
            # pubic and ischial rami start medial to the femoral head, which would otherwise cut them off
            medial = acet + np.array([-side * 32 * s, 0, 0])
            p.tube([(side * 80 * s, 15 * s, zs - 5 * s), medial], 11 * s, hip)
            p.tube([medial, (side * 60 * s, -40 * s, zs - 85 * s), (side * 8 * s, -55 * s, zs - 85 * s)], 10 * s, hip)
            p.tube([medial, (side * 75 * s, 30 * s, zs - 100 * s), (side * 30 * s, -20 * s, zs - 95 * s)], 9 * s, hip)
            fem = self.L(f"femur_{sname}")
            head = acet + np.array([side * 8 * s, 0, -4 * s])
            troch = np.array([side * 140 * s, 5 * s, zs - 60 * s])
            p.ellipsoid(head, (21 * s,) * 3, fem)
            p.tube([head, troch], 14 * s, fem)
            p.tube([troch, (side * 115 * s, -5 * s, -470 * s)], [17 * s, 13 * s], fem)
            self.lap_z = zs - 100 * s

    def arms(self) -> None:
        s, p = self.s, self.p
        for side, sname in ((1, "left"), (-1, "right")):
            shoulder = self.shoulder[sname]
            elbow = np.array([side * 190 * s, 45 * s, self.vertebra_z["L2"]])
            if self.spec.posture == "lap":
                wrist = np.array([side * 105 * s, -110 * s, self.lap_z + 40 * s])
            else:  # forearms crossed over the stomach: left hand on the right side
                wrist = np.array([-side * 70 * s, -150 * s, self.vertebra_z["L3"] + side * 25 * s])
            wrist = wrist + np.array([self.jit(8), self.jit(8), self.jit(8)]) * s
            p.tube([shoulder, elbow], 40 * s, None, hu=40)  # arm soft tissue
            p.tube([elbow, wrist], 32 * s, None, hu=40)
            p.ellipsoid(shoulder, (24 * s, 24 * s, 24 * s), self.L(f"humerus_{sname}"))
            p.tube([shoulder, elbow + np.array([0, 0, 10 * s])], [13 * s, 10 * s], self.L(f"humerus_{sname}"))
            forearm = wrist - elbow
            u = forearm / np.linalg.norm(forearm)
            across = np.cross(u, np.array([0, 0, 1.0]))
            across = across / (np.linalg.norm(across) or 1) * side
            start = elbow + u * 12 * s
            # side by side (supinated): the two bones never intersect, so each stays in one piece
            p.tube([start + across * 9 * s, wrist + across * 10 * s], [7 * s, 9 * s], self.L(f"radius_{sname}"))
            p.tube([start - across * 9 * s - u * 14 * s, wrist - across * 9 * s], [9 * s, 6 * s], self.L(f"ulna_{sname}"))
            if self.spec.posture == "lap":  # hands on the thighs, fingers pointing down the thigh
                hand_u = np.array([0.15 * side, -0.2, -1.0])
            else:  # hands resting on the belly, fingers pointing across the body
                hand_u = np.array([-side * 1.0, 0.2, -0.15])
            hand_u = hand_u / np.linalg.norm(hand_u)
            hand_across = np.cross(hand_u, np.array([0, 1.0, 0]))
            hand_across = hand_across / np.linalg.norm(hand_across)
            if hand_across @ across < 0:
                hand_across = -hand_across
            self.hand(sname, side, wrist + u * 14 * s, hand_u, hand_across)

    def hand(self, sname: str, side: int, base: np.ndarray, u: np.ndarray, across: np.ndarray) -> None:
        """8 carpals in two rows, 5 metacarpals, 14 phalanges; ``across`` points to the thumb."""
        s, p = self.s, self.p
        w = np.cross(u, across)
        p.tube([base - u * 10 * s, base + u * 110 * s], 22 * s, None, hu=40)  # hand soft tissue
        proximal = ["scaphoid", "lunate", "triquetrum", "pisiform"]
        distal = ["trapezium", "trapezoid", "capitate", "hamate"]
        for row, names, du in ((0, proximal, 0.0), (1, distal, 14.0)):
            for k, name in enumerate(names):
                off = (1.5 - k) * 11.0
                extra = w * 7 * s if name == "pisiform" else 0
                p.ellipsoid(base + u * du * s + across * off * s + extra, (5.5 * s, 5.0 * s, 5.0 * s),
                            self.L(f"{name}_{sname}"))
        mc_len = {"thumb": 38, "index": 58, "middle": 56, "ring": 50, "little": 46}
        ph_len = {"thumb": (28, 0, 20), "index": (36, 22, 16), "middle": (40, 26, 17),
                  "ring": (37, 24, 16), "little": (30, 18, 14)}
        for k, digit in enumerate(DIGITS):
            off = (2.0 - k) * 12.5 * s
            spread = (2.0 - k) * 0.06 + (0.55 if digit == "thumb" else 0.0)
            direction = u + across * spread
            direction /= np.linalg.norm(direction)
            start = base + u * 26 * s + across * off + (across * 6 * s if digit == "thumb" else 0) - (u * 10 * s if digit == "thumb" else 0)
            end = start + direction * mc_len[digit] * s
            p.tube([start, end], [5.0 * s, 4.2 * s], self.L(f"metacarpal_{sname}_{digit}"))
            pos = end + direction * 4 * s
            for part, length in zip(("proximal", "middle", "distal"), ph_len[digit]):
                if length == 0:
                    continue
                stop = pos + direction * length * s
                r = {"proximal": 4.2, "middle": 3.8, "distal": 3.5}[part] * s
                p.tube([pos, stop], r, self.L(f"{part}_phalanx_{sname}_{digit}"))
                pos = stop + direction * 4 * s

"""Six images from the anatomy synthesiser side by side, as training sees them: a coronal slice
through the spine of each (through the metal of the last two, abdomens with implants forced on),
CT on the left half of each panel and its bone labels (bone table colours) on the right. Writes
docs/synthetic-gallery.png.

    python tools/synthetic_gallery.py [--seeds 2001 2002 ...] [--out docs/synthetic-gallery.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from scipy import ndimage  # noqa: E402

from BoneSegmentationLib.core.bones import default_table  # noqa: E402
from BoneSegmentationLib.core.files import atomic_write  # noqa: E402
from BoneSegmentationLib.synthetic.anatomy import ATTRIBUTION, load_source, synthesise  # noqa: E402
from shared_data import ANATOMY  # noqa: E402  ../shared, named once for the tools



def coronal(case) -> tuple[np.ndarray, np.ndarray, float]:
    """The coronal slice holding most of the metal implants if any, else of the labelled vertebrae,
    and the slice's aspect ratio."""
    ct = sitk.GetArrayFromImage(case.ct)
    lab = sitk.GetArrayFromImage(case.labels)
    table = default_table()
    spine = np.isin(lab, [b.index for b in table.foreground() if b.region == "spine"])
    metal = (ct > 2400) & (ndimage.binary_dilation(lab > 0, iterations=2))  # implants in bone, not the table's rails
    target = metal if metal.any() else spine  # the coronal slice holding most of it (a tilted spine crosses many)
    y = int(np.argmax(np.count_nonzero(target, axis=(0, 2)))) if target.any() else ct.shape[1] // 2
    sx, _, sz = case.ct.GetSpacing()
    return ct[::-1, y, :], lab[::-1, y, :], sz / sx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs=6, default=[2001, 2002, 2003, 2004, 2005, 2006])
    ap.add_argument("--with-implants", type=int, default=2, metavar="N",
                    help="the last N images as abdomens with every metal implant forced on (default 2)")
    ap.add_argument("--anatomy", default=str(ANATOMY))
    ap.add_argument("--out", default="docs/synthetic-gallery.png")
    args = ap.parse_args()
    source = load_source(Path(args.anatomy))
    colours = np.zeros((256, 3))
    for b in default_table():
        colours[b.index] = np.array(b.rgb) / 255
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, seed in zip(axes.ravel(), args.seeds):
        forced = seed in args.seeds[len(args.seeds) - args.with_implants:]
        case = synthesise(source, seed, fov="abdomen", implants=True) if forced else synthesise(source, seed)
        ct, lab, aspect = coronal(case)
        grey = np.clip((ct + 400) / 1600, 0, 1)[..., None].repeat(3, axis=2)
        overlay = np.where((lab > 0)[..., None], 0.35 * grey + 0.65 * colours[lab], grey)
        ax.imshow(np.concatenate([grey, overlay], axis=1), aspect=aspect, interpolation="nearest")
        s = case.spec
        short = {"hip_prosthesis_left": "left hip", "hip_prosthesis_right": "right hip", "spinal_fusion": "spine"}
        metal = ("; metal: " + ", ".join(short.get(k, k) for k in s["implants"])) if s["implants"] else ""
        ax.set_title(f"seed {seed}: {s['phase'].replace('_', ' ')}, {s['fov'].replace('_', ' ')}, "
                     f"{s['spacing_mm'][0]:.1f} x {s['spacing_mm'][2]:.1f} mm, {s['seconds']:.1f} s\n"
                     f"bone {s['trabecular_hu']:.0f} HU, body x{s['body_size']:.2f}, "
                     f"tilt {s['sagittal_tilt_deg']:+.0f} deg, diaphragm {s['diaphragm_shift_mm']:+.0f} mm\n"
                     f"joint spaces {s['joint_space_mm']:.1f} mm, discs {s['disc_hu']:.0f} HU{metal}",
                     fontsize=10)
        ax.axis("off")
    fig.suptitle("Training images synthesised from one real body's labels (CT window -400..1200 HU | bone "
                 "labels; hands, forearms, skull parts and C1-C6 are unlabelled there)", fontsize=10)
    fig.text(0.5, 0.01, "Anatomy: " + ATTRIBUTION, ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    atomic_write(Path(args.out), lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

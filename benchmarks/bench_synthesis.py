"""What moving the diaphragm (or drawing the joint spaces) costs the anatomy synthesiser: the same
images (seed, view, spacing) synthesised with the diaphragm where the source body has it
(``diaphragm_shift_mm=0``: no second sampling of the label map) and shifted (the organs that move
with it sampled again), side by side in one process, alternating so that neither run gets a warmer
cache. With ``--joints`` the pair is an image without joint spaces (``tissue.add_joint_spaces`` not
called) and the same image with them; with ``--discs``, without and with the intervertebral discs
(``anatomy.intervertebral_discs``). With ``--speed`` the pair is the synthesiser as it was before
session 51 (the reference, kept here: the deformation evaluated at every voxel, scipy's zoom and
distance transform) and as it is now (the deformation sampled every ``FIELD_STEP_MM``, linear
upsampling one axis at a time, SimpleITK's distance transform, the body's closing as running extremes), with
how far the two images differ.

Reports wall time and peak memory (RSS above the level at the start) per image, best of
``--repeat``, and the ratios. Needs ../shared/data/anatomy/s0011_labels.nii.gz.

    python benchmarks/bench_synthesis.py                      # whole views at 2.5 mm, seeds 1998 1999
    python benchmarks/bench_synthesis.py --spacing 1.5 --fov thorax --repeat 3
    python benchmarks/bench_synthesis.py --joints --fov abdomen --spacing 1.5
    python benchmarks/bench_synthesis.py --discs --fov abdomen --spacing 1.5 --seeds 1998
    python benchmarks/bench_synthesis.py --speed --spacing 2.0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tools"))
from memory import measure  # noqa: E402
from shared_data import ANATOMY  # noqa: E402  ../shared, named once for the tools

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from scipy import ndimage  # noqa: E402

from BoneSegmentationLib.synthetic import anatomy, tissue  # noqa: E402
from BoneSegmentationLib.synthetic.anatomy import FOV_KINDS, load_source, synthesise  # noqa: E402


def _with_replaced(module, name: str, stand_in, source, seed: int, **kw):
    """The image synthesised with ``module.name`` replaced by ``stand_in`` (the same draws otherwise)."""
    found = getattr(module, name)
    setattr(module, name, stand_in)
    try:
        return synthesise(source, seed, **kw)
    finally:
        setattr(module, name, found)


def _without_joints(source, seed: int, **kw):
    """The image as the synthesiser drew it before joint spaces."""
    return _with_replaced(tissue, "add_joint_spaces", lambda *a, **k: 0, source, seed, **kw)


def _without_discs(source, seed: int, **kw):
    """The image as the synthesiser drew it before the intervertebral discs (their gap painted as the
    body's fat and muscle)."""
    return _with_replaced(anatomy, "intervertebral_discs", lambda ts, spacing_zyx: np.zeros(ts.shape, bool),
                          source, seed, **kw)


def _exact_labels(src, grid, transform):
    """Reference: the composite transform evaluated at every voxel."""
    return sitk.Resample(src, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _zoom_upsample(small, shape):
    """Reference: scipy's linear zoom, cropped or padded to ``shape``."""
    field = ndimage.zoom(small, [s / f for s, f in zip(shape, small.shape)], order=1, grid_mode=True, mode="nearest")
    field = field[tuple(slice(0, s) for s in shape)]
    return np.pad(field, [(0, s - f) for s, f in zip(shape, field.shape)], mode="edge")


def _scipy_distance(mask, spacing_zyx):
    """Reference: scipy's exact Euclidean distance transform."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing_zyx).astype(np.float32)


def _scipy_closing(mask, width):
    """Reference: the envelope's closing as it was, scipy's with a 9 x 9 square twice (width 17)."""
    assert width == 17, "the reference knows the envelope's one closing"
    return ndimage.binary_closing(mask, structure=np.ones((1, 9, 9), bool), iterations=2)


_REFERENCES = ((anatomy, "_sample_labels", _exact_labels), (tissue, "upsample_linear", _zoom_upsample),
               (tissue, "distance_to_mm", _scipy_distance), (tissue, "close_in_plane", _scipy_closing))


def _as_before(source, seed: int, **kw):
    """The image as the synthesiser drew it before session 51's speed-ups (the same draws)."""
    now = [getattr(module, name) for module, name, _ in _REFERENCES]
    for module, name, reference in _REFERENCES:
        setattr(module, name, reference)
    try:
        return synthesise(source, seed, **kw)
    finally:
        for (module, name, _), current in zip(_REFERENCES, now):
            setattr(module, name, current)


def _difference(a, b) -> str:
    """How far two images of one seed differ: labels (share of the labelled voxels) and CT."""
    la, lb = sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(b.labels)
    ca = sitk.GetArrayViewFromImage(a.ct).astype(np.float32)
    cb = sitk.GetArrayViewFromImage(b.ct).astype(np.float32)
    labels = np.count_nonzero(la != lb) / max(1, np.count_nonzero(la))
    return (f"labels {100 * labels:.3f} % of labelled voxels differ; CT mean |difference| "
            f"{np.abs(ca - cb).mean():.2f} HU, {100 * np.mean(np.abs(ca - cb) > 20):.2f} % of voxels over 20 HU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1998, 1999])
    ap.add_argument("--fov", choices=FOV_KINDS, default="whole")
    ap.add_argument("--spacing", type=float, default=2.5)
    ap.add_argument("--shift", type=float, default=30.0, help="the shifted run's diaphragm_shift_mm")
    ap.add_argument("--joints", action="store_true", help="compare without and with joint spaces instead")
    ap.add_argument("--discs", action="store_true", help="compare without and with intervertebral discs instead")
    ap.add_argument("--speed", action="store_true", help="compare the synthesiser before session 51's speed-ups and now")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--anatomy", default=str(ANATOMY))
    args = ap.parse_args()
    source = load_source(Path(args.anatomy))
    synthesise(source, args.seeds[0], spacing=8.0, fov=args.fov)  # warm-up: caches, imports
    if args.speed:
        runs = (("before (reference)", lambda seed, **kw: _as_before(source, seed, **kw)),
                ("now", lambda seed, **kw: synthesise(source, seed, **kw)))
    elif args.joints:
        runs = (("without joints", lambda seed, **kw: _without_joints(source, seed, **kw)),
                ("with joints", lambda seed, **kw: synthesise(source, seed, **kw)))
    elif args.discs:
        runs = (("without discs", lambda seed, **kw: _without_discs(source, seed, **kw)),
                ("with discs", lambda seed, **kw: synthesise(source, seed, **kw)))
    else:
        runs = (("in place", lambda seed, **kw: synthesise(source, seed, diaphragm_shift_mm=0.0, **kw)),
                (f"shifted {args.shift:+g} mm",
                 lambda seed, **kw: synthesise(source, seed, diaphragm_shift_mm=args.shift, **kw)))
    print(f"| seed | view | {runs[0][0]}: s; MiB | {runs[1][0]}: s; MiB | time ratio | memory ratio |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        best, cases = {}, {}
        for _ in range(args.repeat):
            for name, run in runs:
                cases.pop(name, None)
                with measure() as m:
                    cases[name] = run(seed, spacing=args.spacing, fov=args.fov)
                if name not in best or m.elapsed_s < best[name][0]:
                    best[name] = (m.elapsed_s, m.peak_mib)
                size = cases[name].ct.GetSize()
        differ = _difference(*(cases[name] for name, _ in runs)) if args.speed else ""
        del cases
        (t0, m0), (t1, m1) = best[runs[0][0]], best[runs[1][0]]
        print(f"| {seed} | {args.fov}, {size[0]} x {size[1]} x {size[2]} at {args.spacing:g} mm | {t0:.2f}; {m0:.0f} | "
              f"{t1:.2f}; {m1:.0f} | {t1 / t0:.2f} | {m1 / max(m0, 1e-6):.2f} |", flush=True)
        if differ:
            print(f"  seed {seed}: {differ}", flush=True)


if __name__ == "__main__":
    main()

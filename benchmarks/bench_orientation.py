"""What a CT not stored in LPS costs a whole segmentation, side by side in one process.

The network and the anatomical step read the CT in LPS (``sitk.DICOMOrient``); a NIfTI from
dcm2niix or nibabel is usually stored in RAS, so that is a copy of the CT. Until session 43 the
copy lived to the end of ``Segmenter.segment``, through the steps on the input grid (edge growth,
the canals and cores filled), where the peak is: one CT more at the peak. Now it is dropped once
the anatomical step has run. Runs, on the same thin-slice CT (a procedural phantom with
surroundings, resampled to thin slices) and the bundled model with default options:
1. stored in LPS (no copy): the reference;
2. stored in RAS (the same voxels flipped, direction diag(-1, -1, 1));
3. stored in RAS with the copy kept to the end, as before (a reference held to it).
After one warm-up run (the engine's first-call allocations), reports wall time and peak memory
(RSS above the level at the start), their ratios against the
LPS run, the peak in units of the CT's own bytes, and whether the three label maps are the same
in physical space (they must be: geometry is the input's).
    python benchmarks/bench_orientation.py                 # 512 x 512 x 300 at 0.8 x 0.8 x 1 mm
    python benchmarks/bench_orientation.py --slices 600
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

import BoneSegmentationLib.inference.segmenter as segmenter_module  # noqa: E402
from BoneSegmentationLib.inference.options import InferenceOptions  # noqa: E402
from BoneSegmentationLib.inference.segmenter import Segmenter  # noqa: E402
from BoneSegmentationLib.model.modelfile import load_model  # noqa: E402
from BoneSegmentationLib.model.registry import resolve_model  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import make_phantom  # noqa: E402


def thin_slice_phantom(size: int, slices: int, spacing: tuple[float, float, float]) -> sitk.Image:
    """The demo's phantom (seed 4, with surroundings) about its middle on a thin-slice grid, in LPS."""
    ct, _, _ = make_phantom(4, spacing=2.0, surroundings=True)
    centre = ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ct.GetSize()])
    shape = (size, size, slices)
    origin = [c - (n - 1) * s / 2 for c, n, s in zip(centre, shape, spacing)]
    return sitk.Resample(ct, shape, sitk.Transform(), sitk.sitkLinear, origin, spacing, (1, 0, 0, 0, 1, 0, 0, 0, 1),
                         -1024, sitk.sitkInt16)


def stored_in_ras(lps: sitk.Image) -> sitk.Image:
    """The same CT as a RAS-stored file holds it: first two axes flipped, direction diag(-1, -1, 1)."""
    ras = sitk.Flip(lps, [True, True, False], flipAboutOrigin=False)
    assert np.allclose(ras.GetDirection(), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return ras


class KeptOrientedCopy:
    """The segmenter's ``DICOMOrient`` with its result held until the run ends (as before session 43)."""

    def __init__(self):
        self.held = []
        self.original = segmenter_module.sitk.DICOMOrient

    def __enter__(self):
        def orient_and_keep(image, orientation):
            oriented = self.original(image, orientation)
            self.held.append(oriented)
            return oriented
        segmenter_module.sitk.DICOMOrient = orient_and_keep
        return self

    def __exit__(self, *exc):
        segmenter_module.sitk.DICOMOrient = self.original
        self.held.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="pixels across")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.0], metavar=("X", "Y", "Z"))
    args = ap.parse_args()
    lps = thin_slice_phantom(args.size, args.slices, tuple(args.spacing))
    ras = stored_in_ras(lps)
    ct_mib = np.prod(lps.GetSize()) * 2 / 2**20
    segmenter = Segmenter(load_model(resolve_model(None)), InferenceOptions(device="cpu"))
    print(f"CT {' x '.join(map(str, lps.GetSize()))} at {' x '.join(map(str, args.spacing))} mm ({ct_mib:.0f} MiB "
          "int16); bundled model, default options")
    segmenter.segment(lps)  # warm-up: the engine's first-call allocations are no run's
    runs = {}
    for name, image, kept in (("stored in LPS (reference)", lps, False), ("stored in RAS", ras, False),
                              ("stored in RAS, oriented copy kept (before)", ras, True)):
        if kept:
            with KeptOrientedCopy(), measure() as m:
                labels = segmenter.segment(image).labels
        else:
            with measure() as m:
                labels = segmenter.segment(image).labels
        runs[name] = (m.elapsed_s, m.peak_mib, labels)
        print(f"{name:44s} {m.elapsed_s:6.1f} s, peak {m.peak_mib:6.0f} MiB above the start ({m.peak_mib / ct_mib:.1f}x "
              "the CT)")
    t0, m0, reference = runs["stored in LPS (reference)"]
    for name, (t, m, labels) in runs.items():
        back = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        same = np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(reference))
        print(f"{name:44s} time {t / t0:.2f}x, peak memory {m / m0:.2f}x the LPS run; labels the same in physical "
              f"space: {same}")


if __name__ == "__main__":
    main()

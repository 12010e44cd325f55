"""The price of the input and output checks (core/imageio.py): reading a NIfTI with and without
the streamed pre-check (truncation, gzip CRC, pixdim, NaN), a compressed MetaImage with and without
its own (``core/metaimage.py``: the data's length, the zlib stream inflated once), and writing a
NIfTI with and without the read-back verification, side by side in one process, with ratios
against the unchecked run.

    python benchmarks/bench_file_checks.py              # a 512 x 512 x 300 int16 CT-like volume
    python benchmarks/bench_file_checks.py --slices 100 # smaller
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneSegmentationLib.core.imageio import check_nifti_file, read_image, verify_written, write_image
from BoneSegmentationLib.core.metaimage import check_metaimage_file


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    volume = (rng.normal(0, 300, (args.slices, 512, 512))).astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.8, 0.8, 1.5))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii.gz"
        sitk.WriteImage(image, str(path), useCompression=True)
        plain_read = best_of(lambda: sitk.ReadImage(str(path)))
        checked_read = best_of(lambda: read_image(path))
        check_only = best_of(lambda: check_nifti_file(path))
        mha = Path(tmp) / "ct.mha"
        sitk.WriteImage(image, str(mha), useCompression=True)
        plain_mha = best_of(lambda: sitk.ReadImage(str(mha)))
        checked_mha = best_of(lambda: read_image(mha))
        mha_check_only = best_of(lambda: check_metaimage_file(mha))
        out = Path(tmp) / "out.nii.gz"
        plain_write = best_of(lambda: sitk.WriteImage(image, str(out), useCompression=True))
        checked_write = best_of(lambda: write_image(image, out, overwrite=True))
        verify_only = best_of(lambda: verify_written(out, image, out))
    size = volume.nbytes / 2 ** 20
    print(f"volume {volume.shape[::-1]} int16, {size:.0f} MiB uncompressed")
    print("| step | unchecked (s) | checked (s) | ratio | the check alone (s) |")
    print("|---|---|---|---|---|")
    print(f"| read .nii.gz | {plain_read:.2f} | {checked_read:.2f} | {checked_read / plain_read:.2f}x | {check_only:.2f} |")
    print(f"| read .mha (compressed) | {plain_mha:.2f} | {checked_mha:.2f} | {checked_mha / plain_mha:.2f}x | "
          f"{mha_check_only:.2f} |")
    print(f"| write .nii.gz | {plain_write:.2f} | {checked_write:.2f} | {checked_write / plain_write:.2f}x | "
          f"{verify_only:.2f} |")


if __name__ == "__main__":
    main()

"""The price of the anatomical consistency step, side by side in one process:

1. a full 2 mm upper body (phantom seed 4, 648 x 211 x 299 voxels, 125 bones) whose label map is
   broken as networks break it (spine shifted by one level, ribs swapped, 40 stray fragments):
   the step on the 2 mm grid, against the same map's ``review_ranking`` (the step that already
   ran after every segmentation) as the reference, and its vertebra mirror test
   (``consistency/symmetry.py``) alone against the step, and its pelvis-at-the-ribs rule
   (``consistency/regions.py``) alone against the step, on the body and on its thorax with T8
   named sacrum, and its forearm-on-the-trunk rule (``consistency/limbs.py``) alone against the
   step, on the body (its own arms) and on the body without forearms and hands with a block of the
   right iliac wing named radius; the 4 mm labels' way to the input grid, and
   the edge growth that follows by default (``inference/edges.py``) against it, and the long
   bones' canals and the cores walled by bone and cortex filled on the input grid
   (``consistency/marrow.py``) against it too;
2. the bundled model on the same phantom (``--no-anatomy``), then the step on its labels on the
   model's grid, as the pipeline runs it: step time as a fraction of the network's;
3. ``--speckled``: the labels a random-weight network (width 4, the tests' model) gives on the same
   phantom at 4 mm, hundreds of thousands of one-to-few-voxel pieces as a scan that is not CT or a
   broken model gives: the step against ``review_ranking`` on the same map.

    pip install -e ".[benchmark]"
    python benchmarks/bench_anatomy.py             # both parts (the network takes minutes on a CPU)
    python benchmarks/bench_anatomy.py --no-network
    python benchmarks/bench_anatomy.py --no-network --speckled
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402

from BoneSegmentationLib.consistency.body import body_image, body_on_grid, keep_inside_body  # noqa: E402
from BoneSegmentationLib.consistency.changes import ConsistencyReport  # noqa: E402
from BoneSegmentationLib.consistency.geometry import Grid  # noqa: E402
from BoneSegmentationLib.consistency.limbs import relabel_distal_limb_on_trunk  # noqa: E402
from BoneSegmentationLib.consistency.marrow import fill_canals, fill_enclosed  # noqa: E402
from BoneSegmentationLib.consistency.regions import relabel_lower_body_among_ribs  # noqa: E402
from BoneSegmentationLib.consistency.symmetry import remove_asymmetric_vertebra  # noqa: E402
from BoneSegmentationLib.core.bones import default_table  # noqa: E402
from BoneSegmentationLib.model.random_weights import save_random_model  # noqa: E402
from BoneSegmentationLib.inference.edges import grow_into_edges  # noqa: E402
from BoneSegmentationLib.inference.to_input_grid import labels_to_input_grid  # noqa: E402
from BoneSegmentationLib.consistency.step import make_consistent, make_consistent_on_grid  # noqa: E402
from BoneSegmentationLib.inference.options import InferenceOptions  # noqa: E402
from BoneSegmentationLib.inference.review import review_ranking  # noqa: E402
from BoneSegmentationLib.inference.segmenter import Segmenter  # noqa: E402
from BoneSegmentationLib.inference.stitch import fine_grid  # noqa: E402
from BoneSegmentationLib.model.modelfile import load_model  # noqa: E402
from BoneSegmentationLib.model.registry import resolve_model  # noqa: E402
from BoneSegmentationLib.synthetic.label_errors import SHIFT_DOWN, SWAP_RIBS, sprinkle  # noqa: E402
from BoneSegmentationLib.synthetic.phantom import make_phantom  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--no-network", action="store_true")
    ap.add_argument("--speckled", action="store_true", help="also the step on a random-weight network's labels")
    args = ap.parse_args()
    ct, ref, _ = make_phantom(args.seed, spacing=2.0, partial=False)
    ct_lps, ref_lps = sitk.DICOMOrient(ct, "LPS"), sitk.DICOMOrient(ref, "LPS")
    labels = sitk.GetArrayFromImage(ref_lps)
    hu = sitk.GetArrayFromImage(ct_lps).astype(np.float32)
    broken = sprinkle(SWAP_RIBS[SHIFT_DOWN[labels]], hu, 3)
    broken_image = sitk.GetImageFromArray(broken)
    broken_image.CopyInformation(ref_lps)
    with measure() as ref_run:
        review_ranking(broken_image)
    with measure() as step_run:
        fixed, report = make_consistent(broken, ref_lps, hu)
    with measure() as mirror_run:  # the part of the step that is new in session 46, alone
        mirrored_out = broken.copy()
        remove_asymmetric_vertebra(mirrored_out, Grid.of(ref_lps), default_table(), hu, None, ConsistencyReport())
    table = default_table()
    with measure() as regions_run:  # session 48's rule alone: a whole body, nothing misnamed
        relabel_lower_body_among_ribs(broken.copy(), Grid.of(ref_lps), table, hu, ConsistencyReport())
    rows_ribs = np.nonzero(np.isin(labels, [b.index for b in table.group_members("ribs")]).any(axis=(1, 2)))[0]
    thorax = slice(int(rows_ribs.min()), int(rows_ribs.max()) + 1)  # LPS: array axis 0 runs head to foot
    chest = labels[thorax].copy()
    chest[chest == table.by_name("vertebra_T8").index] = table.by_name("sacrum").index
    chest_image = ref_lps[:, :, thorax.start:thorax.stop]
    with measure() as regions_chest_run:  # the same rule on the thorax alone, with T8 named sacrum
        renamed = relabel_lower_body_among_ribs(chest, Grid.of(chest_image), table, hu[thorax], ConsistencyReport())
    with measure() as limbs_run:  # session 49's rule alone: the broken body, its own arms
        relabel_distal_limb_on_trunk(broken.copy(), Grid.of(ref_lps), table, hu, ConsistencyReport())
    armless = labels.copy()
    armless[np.isin(armless, [b.index for b in table.foreground()
                              if b.region == "hand" or b.name.startswith(("radius", "ulna"))])] = 0
    wing = np.argwhere(armless == table.by_name("hip_right").index)
    top = wing[wing[:, 0] >= np.percentile(wing[:, 0], 95)]  # LPS: array axis 0 runs foot to head
    z, y, x = np.median(top, axis=0).astype(int)
    block = armless[z - 2:z + 2, y - 2:y + 2, x - 2:x + 2]
    block[block == table.by_name("hip_right").index] = table.by_name("radius_left").index
    with measure() as limbs_renamed_run:  # the same rule renaming the block
        limbs_renamed = relabel_distal_limb_on_trunk(armless, Grid.of(ref_lps), table, hu, ConsistencyReport())
    wrong = int(np.count_nonzero(fixed != labels))
    print(f"phantom seed {args.seed} at 2 mm: {labels.shape[::-1]} voxels, "
          f"{int(np.count_nonzero(broken != labels))} voxels broken, {wrong} wrong after the step, "
          f"{len(report.changes)} changes listed")
    with measure() as body_run:  # the body as the pipeline finds it: on the CT's grid, carried to the model's
        body_on_grid(ct, fine_grid(ct_lps, (4.0, 4.0, 4.0), 1))
    coarse = sitk.Resample(ref, fine_grid(ct_lps, (4.0, 4.0, 4.0), 1), sitk.Transform(), sitk.sitkNearestNeighbor)
    body = body_image(ct)
    with measure() as nearest_run:  # the 4 mm labels back on the input's grid (nearest), trimmed at the skin
        keep_inside_body(labels_to_input_grid(coarse, ct), body)
    # a network-like bone probability: the 4 mm bone mask blurred over a voxel
    bone = sitk.SmoothingRecursiveGaussian(sitk.Cast(coarse > 0, sitk.sitkFloat32), 4.0)
    with measure() as trim_run:  # as the pipeline does it: the boundary from the bone probability
        on_input = labels_to_input_grid(coarse, ct, bone=bone)
        keep_inside_body(on_input, body)
    with measure() as grow_run:  # edge growth (on by default), on the labels as they reach the input grid
        grown_labels, grown = grow_into_edges(on_input, ct, 4.0)
    with measure() as canal_run:  # the long bones' canals on the input grid (after edge growth, as the pipeline)
        canal_labels, canals = fill_canals(grown_labels, default_table())
    with measure() as enclosed_run:  # cores walled by bone and unlabelled cortex (after the canals, as the pipeline)
        _, enclosed = fill_enclosed(canal_labels, ct, bone, default_table())
    nearest_row = "4 mm labels to the input grid by nearest neighbour, trimmed to the body (reference for the next row)"
    rows = [("review ranking (reference)", ref_run), ("consistency step", step_run),
            ("its vertebra mirror test alone (remove_asymmetric_vertebra; against the step)", mirror_run),
            ("its pelvis-at-the-ribs rule alone, nothing misnamed (relabel_lower_body_among_ribs; against the step)",
             regions_run),
            (f"the same rule on the phantom's thorax with T8 named sacrum, {renamed} voxels renamed (against the step)",
             regions_chest_run),
            ("its forearm-on-the-trunk rule alone, on the broken body with its own arms "
             "(relabel_distal_limb_on_trunk; against the step)", limbs_run),
            (f"the same rule on the body without forearms and hands, {limbs_renamed} voxels of the iliac wing named "
             "radius renamed (against the step)", limbs_renamed_run),
            ("body on the CT's grid, to the 4 mm grid (body_on_grid, part of the step)", body_run),
            (nearest_row, nearest_run),
            ("4 mm labels to the input grid, boundary from the bone probability, trimmed to the body "
             "(labels_to_input_grid(bone=) + keep_inside_body)", trim_run),
            (f"edge growth (default) on those labels, {grown} voxels grown (grow_into_edges; against the row above)", grow_run),
            (f"long bones' canals filled on the input grid, {canals} voxels (fill_canals; against the boundary row)",
             canal_run),
            (f"cores walled by a bone and cortex filled on the input grid, {enclosed} voxels (fill_enclosed; "
             "against the boundary row)", enclosed_run)]
    references = {"consistency step": ref_run, rows[2][0]: step_run, rows[3][0]: step_run, rows[4][0]: step_run,
                  rows[5][0]: step_run, rows[6][0]: step_run,
                  rows[-4][0]: nearest_run, rows[-3][0]: trim_run,
                  rows[-2][0]: trim_run, rows[-1][0]: trim_run}  # row -> its reference
    if not args.no_network:
        model = load_model(resolve_model(None))
        segmenter = Segmenter(model, InferenceOptions(device="cpu", anatomy=False))
        with measure() as net_run:
            result = segmenter.segment(ct)
        grid = result.labels_model_grid
        with measure() as model_grid_run:
            make_consistent_on_grid(sitk.GetArrayFromImage(grid), grid, ct)
        rows += [(f"network, {model.info.name} {model.info.version} (reference for the next row)", net_run),
                 (f"step on the network's labels, model grid {grid.GetSize()}", model_grid_run)]
        references[rows[-1][0]] = net_run
    if args.speckled:
        speckled, speckled_image = speckled_labels(ct)
        with measure() as speckled_ref:
            review_ranking(speckled_image)
        with measure() as speckled_run:
            make_consistent_on_grid(speckled, speckled_image, ct)
        pieces = sum(ndimage.label(speckled == i, structure=np.ones((3, 3, 3), bool))[1]
                     for i in np.unique(speckled) if i)
        rows += [(f"review ranking of a random-weight network's labels, {pieces} pieces (reference for the next row)",
                  speckled_ref), ("consistency step on those labels", speckled_run)]
        references[rows[-1][0]] = speckled_ref
    print("| run | time s | peak MiB above start | time ratio to the row's reference |")
    print("|---|---|---|---|")
    for name, run in rows:
        reference = references.get(name)
        ratio = f"{run.elapsed_s / reference.elapsed_s:.2f}x" if reference else "-"
        print(f"| {name} | {run.elapsed_s:.2f} | {run.peak_mib:.0f} | {ratio} |")


def speckled_labels(ct: sitk.Image) -> tuple[np.ndarray, sitk.Image]:
    """The labels of a random-weight No-New-Net (width 4 as the tests' model, at 4 mm, seed 0) on ``ct``,
    on the network's grid, before the step."""
    with tempfile.TemporaryDirectory() as folder:
        path = save_random_model(Path(folder) / "random.pt", base_features=4, levels=3, patch=64,
                                 num_classes=default_table().num_classes, seed=0, spacing=4.0, purpose="the benchmark")
        result = Segmenter(load_model(path), InferenceOptions(device="cpu", anatomy=False, overlap=0.0)).segment(ct)
    grid = result.labels_model_grid
    return sitk.GetArrayFromImage(grid), grid


if __name__ == "__main__":
    main()

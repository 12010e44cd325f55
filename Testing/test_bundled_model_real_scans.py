"""The bundled model on the two real scans (the test set, never trained or tuned on), against
their TotalSegmentator references: "not bone what is not bone".

The targets are the real-CT issue's: predicted bone inside the heart, aorta and venae cavae under
1 % of those masks' voxels; predicted bone outside the body (table, air) under 0.1 % of all
predicted bone. Where the bundled model misses a target the test is a strict expected failure
that names the measured figure, so that it turns into a failure to notice the day the target is
met; a plain floor on the foreground Dice guards against a worse model being bundled."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from BoneSegmentationLib.core.imageio import read_ct
from BoneSegmentationLib.evaluation.totalsegmentator import evaluate_against_totalsegmentator
from BoneSegmentationLib.inference.options import InferenceOptions
from BoneSegmentationLib.inference.segmenter import segment_image
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.model.registry import resolve_model

SCANS = {"abdomen": ("ts_abdomen_ct.nii.gz", "ts_abdomen_totalseg.nii.gz"),
         "thorax": ("ts_thorax_dicom", "ts_thorax_totalseg.nii.gz")}


@pytest.fixture(scope="module")
def bundled():
    return load_model(resolve_model())


@pytest.fixture(scope="module", params=sorted(SCANS))
def scored(request, real_data, bundled):
    ct_name, ref_name = SCANS[request.param]
    ct = read_ct(real_data / ct_name)[0]
    labels = segment_image(ct, bundled, options=InferenceOptions(device="cpu")).labels
    result = evaluate_against_totalsegmentator(labels, sitk.ReadImage(str(real_data / ref_name)), ct)
    print(f"{request.param}: foreground Dice {result.foreground_dice:.3f}, bone in heart and vessels "
          f"{100 * result.bone_in_vessels:.2f} %, outside the body {100 * result.bone_outside_body:.3f} %")
    return request.param, result


def _expected_miss(request, scan: str, misses: dict[str, str]) -> None:
    if scan in misses:
        request.applymarker(pytest.mark.xfail(strict=True, reason=misses[scan]))


def test_no_bone_in_the_heart_and_great_vessels(request, scored):
    scan, result = scored
    _expected_miss(request, scan, {"thorax": "bundled 1.9: 6.97 % on the thorax slab with its edges grown "
                                             "(3.72 % without): the calcified wall of the aorta beside T12 "
                                             "taken into a vertebra's or the sacrum's label, and grown into "
                                             "the lumen next to it (1.8: 5.44 %; 1.7: 1.57 %; 1.6: 4.34 %)"})
    assert result.bone_in_vessels < 0.01


def test_no_bone_outside_the_body(request, scored):
    scan, result = scored
    assert result.bone_outside_body < 0.001


def test_foreground_dice_does_not_fall_below_the_bundled_models(scored):
    """Floors under the figures of the bundled model with the default options (1.9 with its edges
    grown, session 35: abdomen 0.811, thorax slab 0.578; without: 0.793 and 0.481; 1.8: 0.782 and
    0.502; 1.7: 0.771 and 0.461), not targets: the target is 0.80 on each scan. 1.9's
    trade, in the open: the slab's foreground falls 0.502 -> 0.481 (its vertebrae are still missed;
    its humeri are found better) for the abdomen's spine median 0.474 -> 0.656, ribs 0.610 ->
    0.681, all bones 0.580 -> 0.669 and the slab's aorta called bone 5.44 % -> 3.72 %; the slab's
    floor moves 0.48 -> 0.47, a hundredth under its figure as the abdomen's is
    (docs/real-ct-training.md, "Run 39"). With edge growth on by default the floors rise to 0.80
    and 0.57 (docs/real-ct-training.md, "Bone edges, not vessels")."""
    scan, result = scored
    assert result.foreground_dice >= {"abdomen": 0.80, "thorax": 0.57}[scan]

"""Left-right mirror averaging: the side swap is right for the whole bone table, and averaging
makes any network (random weights here) exactly equivariant to mirroring the body."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.cli import build_parser
from BoneSegmentationLib.core.errors import ModelFileError
from BoneSegmentationLib.inference.engine import rebuild_torch_network
from BoneSegmentationLib.inference.mirror import (FusedMirrorNetwork, MirrorAveraged, can_mirror, lateral_dim,
                                                   swap_permutation)
from BoneSegmentationLib.model.modelfile import load_model, read_metadata, save_model
from BoneSegmentationLib.inference.segmenter import segment_image
from BoneSegmentationLib.inference.options import InferenceOptions

from conftest import make_random_model


def test_swap_permutation_pairs_every_lateral_bone():
    table = default_table()
    names = table.names()
    perm = swap_permutation(names)
    assert [perm[p] for p in perm] == list(range(len(names)))  # an involution
    assert names[perm[names.index("rib_left_3")]] == "rib_right_3"
    assert names[perm[names.index("humerus_right")]] == "humerus_left"
    for bone in table:
        moved = perm[bone.index] != bone.index
        assert moved == (bone.laterality != "none"), bone.name
        if moved:
            assert table[perm[bone.index]].laterality != bone.laterality
    assert sum(p != i for i, p in enumerate(perm)) == 92


def test_unpaired_side_is_refused_with_advice():
    names = ["background", "humerus_left", "sternum"]
    with pytest.raises(ModelFileError, match="no mirror class 'humerus_right'.*--no-mirror"):
        swap_permutation(names)
    assert not can_mirror(names)
    assert can_mirror(default_table().names())


@pytest.mark.parametrize("orientation, dim", [("LPS", 4), ("RAS", 4), ("PLS", 3), ("SIR", 2)])
def test_lateral_dim_follows_the_orientation_code(orientation, dim):
    assert lateral_dim(orientation) == dim


def test_orientation_without_left_right_axis_is_refused():
    with pytest.raises(ModelFileError, match="one L/R axis"):
        lateral_dim("PSI")


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    path = make_random_model(tmp_path_factory.mktemp("mirror") / "random.pt", patch=32, spacing=4.0, seed=3)
    return load_model(path)


def test_mirror_averaged_patch_is_exactly_equivariant(random_model):
    net = MirrorAveraged(random_model.module, random_model.class_names, "LPS")
    perm = torch.tensor(swap_permutation(random_model.class_names))
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        direct = net(x)
        of_mirror = net(x.flip(-1))
        plain, plain_of_mirror = random_model.module(x), random_model.module(x.flip(-1))
    torch.testing.assert_close(of_mirror, direct.flip(-1)[:, perm], rtol=1e-5, atol=1e-5)
    # the random network alone is far from it, so the check above has teeth
    assert (plain_of_mirror - plain.flip(-1)[:, perm]).abs().max() > 1e-2


@pytest.mark.parametrize("orientation", ["LPS", "SAR"])
def test_fused_mirror_equals_the_average_of_two_passes(random_model, orientation):
    """The OpenVINO graph's mirror (one 1x1 convolution over both feature maps) is the same average."""
    net = rebuild_torch_network(random_model)
    fused = FusedMirrorNetwork(net, random_model.class_names, orientation).eval()
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = MirrorAveraged(random_model.module, random_model.class_names, orientation)(x)
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-5)
        assert (fused(x) - random_model.module(x)).abs().max() > 1e-2  # the mirror changed something


def mirrored_body(ct: sitk.Image) -> sitk.Image:
    """The physically mirrored CT: the array flipped left-right on the same grid (LPS axes)."""
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(ct)[:, :, ::-1].copy())
    out.CopyInformation(ct)
    return out


def test_segment_image_with_mirror_swaps_sides_for_a_mirrored_body(random_model):
    rng = np.random.default_rng(1)
    hu = rng.normal(0, 1, (40, 36, 44)).cumsum(axis=2) * 90.0  # structured, not symmetric
    ct = sitk.GetImageFromArray(hu.astype(np.float32))
    ct.SetSpacing((4.0, 4.0, 4.0))
    ct.SetOrigin((-80.0, 30.0, 400.0))
    perm = np.array(swap_permutation(random_model.class_names), dtype=np.uint8)

    def agreement(mirror: bool) -> float:
        a = sitk.GetArrayFromImage(segment_image(ct, random_model, options=InferenceOptions(device="cpu", engine="torch", anatomy=False, mirror={None: "model", True: "on", False: "off"}[mirror])).labels)
        b = sitk.GetArrayFromImage(segment_image(mirrored_body(ct), random_model, options=InferenceOptions(device="cpu", engine="torch", anatomy=False, mirror={None: "model", True: "on", False: "off"}[mirror])).labels)
        return float(np.mean(b == perm[a[:, :, ::-1]]))

    assert agreement(True) > 0.999  # float summation order may flip a rare near-tie
    assert agreement(False) < 0.9


def test_model_metadata_decides_the_default(random_model, tmp_path):
    assert not random_model.mirror_by_default
    meta = dict(random_model.metadata, inference={"mirror": True})
    path = save_model(random_model.module, meta, tmp_path / "mirrored.pt")
    model = load_model(path)
    assert model.mirror_by_default
    ct = sitk.GetImageFromArray(np.linspace(-1000, 1500, 32 ** 3, dtype=np.float32).reshape(32, 32, 32))
    ct.SetSpacing((4.0, 4.0, 4.0))
    assert segment_image(ct, model, options=InferenceOptions(device="cpu")).mirrored
    assert not segment_image(ct, model, options=InferenceOptions(device="cpu", mirror="off")).mirrored
    with pytest.raises(ModelFileError, match="'mirror' is true or false"):
        save_model(random_model.module, dict(meta, inference={"mirror": "yes"}), tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_bundled_model_asks_for_mirroring():
    from BoneSegmentationLib.model.registry import resolve_model
    meta = read_metadata(resolve_model(None))
    assert meta["inference"]["mirror"] is True
    assert json.dumps(meta["training"]).count("mirror") >= 1


@pytest.mark.parametrize("flag, expected", [([], "model"), (["--mirror"], "on"), (["--no-mirror"], "off")])
def test_cli_mirror_flag(flag, expected):
    for command in (["segment", "ct.nii.gz", "-o", "out.nii.gz"], ["demo"], ["compare", "d", "--models", "m"]):
        assert build_parser().parse_args(command + flag).mirror is expected

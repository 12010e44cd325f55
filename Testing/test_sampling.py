"""Balanced sampling: centre classes uniform (chi-square), presence far more even than uniform."""

import numpy as np
import SimpleITK as sitk
from scipy import stats

from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.training.sampling import PatchSampler, bright_background_locations, class_locations


def test_balanced_sampling_is_uniform_over_classes_and_beats_uniform():
    _, lab, _ = make_phantom(2, spacing=4.0)
    labels = sitk.GetArrayFromImage(lab)
    rng = np.random.default_rng(0)
    locs = [class_locations(labels, 126, rng)]
    patch = (24, 24, 24)
    draws = 6000
    presence = {}
    for mode in ("balanced", "uniform"):
        sampler = PatchSampler([labels.shape], locs, patch, mode, seed=1)
        seen = np.zeros(126)
        centred = np.zeros(126)
        for _ in range(draws):
            _, corner, c = sampler.draw()
            z, y, x = corner
            seen[np.unique(labels[z:z + 24, y:y + 24, x:x + 24])] += 1
            if c >= 0:
                centred[c] += 1
        presence[mode] = seen[1:] / draws
        if mode == "balanced":
            observed = centred[1:]
            assert observed.sum() == draws
            assert stats.chisquare(observed).pvalue > 0.01  # every class equally likely to be chosen
    bal, uni = presence["balanced"], presence["uniform"]
    assert bal.min() >= 1 / 125 * 0.8, "every bone appears in at least ~1/125 of patches"
    assert uni.min() < 0.01, "uniform sampling almost never sees some small bones"
    cv = {k: v.std() / v.mean() for k, v in presence.items()}
    assert cv["balanced"] < 0.6 * cv["uniform"], cv


def _bone_and_vessel():
    """A bright bone cube with a blurred rim, and a contrast-filled 'vessel' away from it (HU)."""
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[5:15, 5:15, 5:15] = 7
    image = np.full(labels.shape, 40.0)
    image[labels > 0] = 900.0
    image[4:16, 4:16, 4:16] = np.maximum(image[4:16, 4:16, 4:16], 300.0)  # partial volume round the bone
    image[25:35, 25:35, 25:35] = 350.0  # the vessel: background, but bright
    return image, labels


def test_hard_negatives_are_bright_background_away_from_bone():
    image, labels = _bone_and_vessel()
    locs = bright_background_locations(image, labels, 150.0, np.random.default_rng(0))
    assert len(locs) == 1000  # capped, from the 1000 vessel voxels
    z, y, x = locs.T
    assert (labels[z, y, x] == 0).all() and (image[z, y, x] > 150).all()
    assert ((locs >= 25) & (locs < 35)).all(), "the bone's bright rim is not a hard negative"
    assert len(bright_background_locations(np.full(labels.shape, 40.0), labels, 150.0, np.random.default_rng(0))) == 0


def test_a_share_of_patches_is_centred_on_hard_negatives_and_none_without():
    image, labels = _bone_and_vessel()
    rng = np.random.default_rng(0)
    locs = [class_locations(labels, 126, rng)]
    hard = [bright_background_locations(image, labels, 150.0, rng)]
    patch = (16, 16, 16)
    sampler = PatchSampler([labels.shape], locs, patch, seed=3, hard_negatives=hard, hard_negative_share=0.3)
    draws = [sampler.draw() for _ in range(2000)]
    centred_on_hard = [corner for _, corner, c in draws if c == 0]
    assert abs(len(centred_on_hard) / 2000 - 0.3) < 0.04
    # such a patch holds the vessel (centre within the patch's jitter of a vessel voxel)
    assert all((image[tuple(slice(a, a + 16) for a in corner)] == 350.0).any() for corner in centred_on_hard)
    plain = PatchSampler([labels.shape], locs, patch, seed=3)
    unshared = PatchSampler([labels.shape], locs, patch, seed=3, hard_negatives=hard, hard_negative_share=0.0)
    a, b = [plain.draw() for _ in range(50)], [unshared.draw() for _ in range(50)]
    assert all(x[0] == y[0] and np.array_equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b)), \
        "a share of 0 leaves the sampling stream as it was"

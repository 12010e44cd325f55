"""Balanced sampling: centre classes uniform (chi-square), presence far more even than uniform."""

import numpy as np
import SimpleITK as sitk
from scipy import stats

from BoneSegmentationLib.synthetic.phantom import make_phantom
from BoneSegmentationLib.training.sampling import PatchSampler, class_locations


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

"""Label map helpers: counting and replacing values without a pass per value."""

import numpy as np

from BoneSegmentationLib.core.labelmaps import label_counts, relabel


def test_relabel_matches_a_pass_per_value_whatever_the_values():
    rng = np.random.default_rng(0)
    for values, dtype in (((0, 1, 2, 7, 40), np.uint8), ((0, 3, 300, 70000), np.int32), ((-2, 0, 5), np.int16)):
        array = rng.choice(values, size=(6, 7, 8)).astype(dtype)
        lookup = {v: (3 * k + 1) % 126 for k, v in enumerate(values) if v > 0}
        expected = np.zeros(array.shape, np.uint8)
        for value, new in lookup.items():
            expected[array == value] = new
        out = relabel(array, lookup)
        assert out.dtype == np.uint8 and np.array_equal(out, expected), values


def test_label_counts_are_bincount():
    array = np.random.default_rng(1).integers(0, 126, (20, 30, 40)).astype(np.uint8)
    assert np.array_equal(label_counts(array), np.bincount(array.ravel()))

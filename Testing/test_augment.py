"""Training augmentation: labels follow the CT where a rotation reaches past the patch, the
intensity changes keep the labels and the generator stream, and each change does what it says."""

from __future__ import annotations

import torch

from BoneSegmentationLib.training.augment import (FADE_RANGE, GAMMA_RANGE, SHORT_VIEW_MM, SOFT_TISSUE, augment,
                                                  augment_intensity, fade_bone_cores, short_view_slices)


def _patch(label: int = 7, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.full((1, size, size, size), label, dtype=torch.int64)
    image = torch.full((1, 1, size, size, size), 0.4)  # 400 HU everywhere: bone
    return image, labels


def test_a_patch_full_of_bone_stays_bone_in_the_rotated_corners():
    """The CT repeats its border past the patch; the labels must too, or bone cut by a patch edge
    is taught as background there (the labels were padded with zeros until session 20)."""
    image, labels = _patch()
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        out_img, out_lab = augment(image, labels, gen, max_rotation_deg=30, scale_range=0.2, intensity=False)
        assert torch.allclose(out_img, image)
        assert torch.equal(out_lab, labels), f"seed {seed}: {(out_lab != 7).sum().item()} voxels lost their label"


def test_augmentation_is_a_function_of_the_generator_and_keeps_labels_integer():
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, 20, 20, 20, generator=gen)
    labels = (torch.rand(1, 20, 20, 20, generator=gen) * 5).long()
    a = augment(image, labels, torch.Generator().manual_seed(3))
    b = augment(image, labels, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[1].dtype == torch.int64 and set(a[1].unique().tolist()) <= set(range(5))
    c = augment(image, labels, torch.Generator().manual_seed(4))
    assert not torch.equal(a[0], c[0])


def test_each_intensity_change_draws_the_same_numbers_whether_or_not_it_applies():
    """A run resumed from a checkpoint continues the augmentation stream exactly; that needs the
    number of draws not to depend on which changes happened to apply."""
    image = torch.linspace(-1, 2, 8 ** 3).reshape(1, 1, 8, 8, 8)
    on, off = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    augment_intensity(image, on, p_gamma=1, p_low_resolution=1, p_noise=0)
    augment_intensity(image, off, p_gamma=0, p_low_resolution=0, p_noise=0)
    assert torch.equal(torch.rand(4, generator=on), torch.rand(4, generator=off))


def test_gamma_is_monotonic_and_keeps_the_ends_of_the_model_range():
    lo, hi = GAMMA_RANGE
    image = torch.linspace(lo, hi, 1000).reshape(1, 1, 10, 10, 10)
    changed = False
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        out = augment_intensity(image, gen, p_gamma=1, p_low_resolution=0, p_noise=0).flatten()
        assert bool((out[1:] >= out[:-1] - 1e-6).all()), f"seed {seed}: the order of grey values changed"
        baseline = augment_intensity(image, torch.Generator().manual_seed(seed), p_gamma=0, p_low_resolution=0,
                                     p_noise=0).flatten()
        changed |= not torch.allclose(out, baseline.clamp(lo, hi), atol=1e-3)
        assert out.min() >= lo - 1e-5 and out.max() <= hi + 1e-5
    assert changed, "gamma never changed a value in 20 draws"


def test_lower_resolution_blurs_an_edge_and_noise_has_the_drawn_size():
    image = torch.zeros(1, 1, 16, 16, 16)
    image[..., 8:] = 1.0  # a sharp edge along x
    blurred = None
    for seed in range(20):
        out = augment_intensity(image, torch.Generator().manual_seed(seed), p_gamma=0, p_low_resolution=1, p_noise=0)
        if out[0, 0, 8, 8, 7] - out[0, 0, 8, 8, 6] > 1e-3:  # the step spread past its two voxels
            blurred = out
            break
    assert blurred is not None, "a coarser resolution never blurred the edge"
    flat = torch.zeros(1, 1, 32, 32, 32)
    stds = [float(augment_intensity(flat, torch.Generator().manual_seed(s), p_gamma=0, p_low_resolution=0,
                                    p_noise=1).std()) for s in range(10)]
    assert 0 < max(stds) <= 0.05 * 1.1


def test_fading_bone_cores_keeps_the_shell_and_everything_outside_the_bone():
    """A faded patch: the core of a bone block moves toward soft tissue by the drawn factor, its
    one-voxel rim and every voxel outside the bone are untouched; with share 0 nothing is drawn."""
    image = torch.full((1, 1, 12, 12, 12), -0.1)
    labels = torch.zeros((1, 12, 12, 12), dtype=torch.long)
    labels[:, 3:9, 3:9, 3:9] = 7
    image[:, :, 3:9, 3:9, 3:9] = 0.8  # cortex
    image[:, :, 4:8, 4:8, 4:8] = 0.3  # core, 300 HU
    out = fade_bone_cores(image, labels, torch.Generator().manual_seed(0), share=1.0)
    core = torch.zeros_like(image, dtype=torch.bool)
    core[:, :, 4:8, 4:8, 4:8] = True
    assert torch.equal(out[~core], image[~core])
    factor = (out[core] - SOFT_TISSUE) / (0.3 - SOFT_TISSUE)
    assert torch.allclose(factor, factor[0].expand_as(factor)) and FADE_RANGE[0] <= float(factor[0]) <= FADE_RANGE[1]
    assert float(factor[0]) < 1.0
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    assert torch.equal(augment(image, labels, gen, intensity=False)[0],
                       augment(image, labels, torch.Generator().manual_seed(5), intensity=False, fade_share=0.0)[0])
    gen.set_state(state)
    never = fade_bone_cores(image, labels, gen, share=1e-9)
    assert torch.equal(never, image) and not torch.equal(gen.get_state(), state)  # drawn, not applied


def test_short_views_are_drawn_in_their_range_and_not_at_all_when_off():
    """``short_view_slices``: share 1 always gives a slab of 24-96 mm in slices of the model's
    spacing (never deeper than the patch); share 0 leaves the generator's stream untouched, so runs
    without it resume as before."""
    gen = torch.Generator().manual_seed(1)
    depths = [short_view_slices(gen, 1.0, 4.0, 64) for _ in range(200)]
    lo, hi = (round(mm / 4.0) for mm in SHORT_VIEW_MM)
    assert all(lo <= d <= hi for d in depths) and len(set(depths)) > 10
    assert max(short_view_slices(gen, 1.0, 1.0, 32) for _ in range(50)) == 32  # capped at the patch
    state = gen.get_state()
    assert short_view_slices(gen, 0.0, 4.0, 64) is None and torch.equal(gen.get_state(), state)
    assert {short_view_slices(gen, 0.5, 4.0, 64) is None for _ in range(100)} == {True, False}

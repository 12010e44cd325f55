"""Sparse CE + Dice equals a dense one-hot reference, value and gradient."""

import pytest
import torch

from BoneSegmentationLib.training.losses import EPS, sparse_ce_dice


def dense_reference(logits, target, smooth=0.0):
    c = logits.shape[1]
    ce = torch.nn.functional.cross_entropy(logits, target)
    p = torch.softmax(logits, 1)
    onehot = torch.nn.functional.one_hot(target, c).movedim(-1, 1).to(logits.dtype)
    dims = [0] + list(range(2, logits.ndim))
    inter = (p * onehot).sum(dims)
    den = p.sum(dims) + onehot.sum(dims) + EPS
    return ce + 1 - ((2 * inter + smooth) / den).mean()


@pytest.mark.parametrize("smooth", [0.0, EPS])
@pytest.mark.parametrize("shape,chunk", [((1, 5, 4, 6, 3), 7), ((2, 126, 6, 5, 7), 50), ((1, 126, 8, 8, 8), 1 << 16)])
def test_value_and_gradient_match_dense(shape, chunk, smooth):
    torch.manual_seed(sum(shape))
    x = (3 * torch.randn(shape, dtype=torch.float64)).requires_grad_()
    t = torch.randint(0, shape[1] // 2 + 1, (shape[0],) + shape[2:])  # some classes absent
    loss = sparse_ce_dice(x, t, chunk=chunk, smooth=smooth)
    loss.backward()
    grad = x.grad.clone()
    x.grad = None
    ref = dense_reference(x, t, smooth)
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    torch.testing.assert_close(grad, x.grad, rtol=1e-5, atol=1e-8)


def test_rejects_float_target():
    with pytest.raises(TypeError, match="integer label map"):
        sparse_ce_dice(torch.randn(1, 3, 4, 4, 4), torch.zeros(1, 4, 4, 4))


def dense_partial_reference(logits, target, labelled):
    """The partial-label rule written densely: drop voxels of unlabelled classes, average Dice
    over labelled classes (background included)."""
    c = logits.shape[1]
    keep = labelled[target]
    z = logits.movedim(1, -1)[keep]  # (kept voxels, C)
    t = target[keep]
    ce = torch.nn.functional.cross_entropy(z, t)
    p = torch.softmax(z, 1)
    onehot = torch.nn.functional.one_hot(t, c).to(z.dtype)
    inter, den = (p * onehot).sum(0), p.sum(0) + onehot.sum(0) + EPS
    return ce + 1 - ((2 * inter) / den)[labelled].mean()


def test_partial_labels_ignore_voxels_of_unlabelled_classes():
    torch.manual_seed(3)
    c = 12
    x = (2 * torch.randn(1, c, 6, 7, 5, dtype=torch.float64)).requires_grad_()
    t = torch.randint(0, c, (1, 6, 7, 5))
    labelled = torch.zeros(c, dtype=torch.bool)
    labelled[[0, 2, 3, 7]] = True  # e.g. only a few vertebrae were checked
    loss = sparse_ce_dice(x, t, labelled, chunk=17)
    loss.backward()
    grad = x.grad.clone()
    x.grad = None
    ref = dense_partial_reference(x, t, labelled)
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    torch.testing.assert_close(grad, x.grad, rtol=1e-5, atol=1e-8)
    ignored = ~labelled[t]
    assert ignored.any() and (~ignored).any()
    assert torch.all(grad.movedim(1, -1)[ignored] == 0)  # no gradient reaches ignored voxels
    assert grad.movedim(1, -1)[~ignored].abs().sum() > 0
    # what the ignored voxels hold (another unchecked bone, or anything) does not matter
    t2 = t.clone()
    t2[ignored] = 5 if not labelled[5] else 1
    x2 = x.detach().clone()
    x2[ignored.unsqueeze(1).expand_as(x2)] = 100.0
    assert float(sparse_ce_dice(x2, t2, labelled, chunk=17)) == pytest.approx(float(loss.detach()), rel=1e-7)


def test_all_labelled_equals_the_full_loss():
    torch.manual_seed(4)
    x = torch.randn(1, 9, 5, 5, 5, dtype=torch.float64)
    t = torch.randint(0, 9, (1, 5, 5, 5))
    full = sparse_ce_dice(x, t)
    assert float(sparse_ce_dice(x, t, torch.ones(9, dtype=torch.bool))) == float(full)
    with pytest.raises(ValueError, match="one entry per class"):
        sparse_ce_dice(x, t, torch.ones(4, dtype=torch.bool))


def test_absent_classes_give_no_dice_reward_for_crushing_them():
    """The shortcut that wrecked a demo training run: with a numerator smooth, the Dice of a
    class absent from the patch rises from 0 to 1 as its probability is crushed towards 1e-9,
    so the loss rewards suppressing every uncertain class. With the default (no numerator
    smooth) the loss moves only by the cross-entropy's share."""
    torch.manual_seed(5)
    c = 20
    t = torch.randint(0, 6, (1, 8, 8, 8))  # classes 6..19 are absent
    x = torch.randn(1, c, 8, 8, 8, dtype=torch.float64)
    crushed = x.clone()
    crushed[:, 6:] -= 30.0  # absent classes' probabilities to about 1e-13
    ce_drop = float(torch.nn.functional.cross_entropy(x, t) - torch.nn.functional.cross_entropy(crushed, t))
    for smooth, bigger_than_ce in [(0.0, False), (EPS, True)]:
        drop = float(sparse_ce_dice(x, t, smooth=smooth) - sparse_ce_dice(crushed, t, smooth=smooth))
        dice_drop = drop - ce_drop
        if bigger_than_ce:
            assert dice_drop > 0.5  # 14 of 20 classes' Dice jump from about 0 to about 1
        else:
            # the present classes' Dice improves a little (less probability mass leaks to absent
            # classes); the absent classes contribute nothing
            p, q = torch.softmax(x, 1), torch.softmax(crushed, 1)
            onehot = torch.nn.functional.one_hot(t, c).movedim(-1, 1).double()
            dims = [0, 2, 3, 4]
            d = lambda pr: (2 * (pr * onehot).sum(dims) / (pr.sum(dims) + onehot.sum(dims) + EPS))[:6].sum() / c
            assert dice_drop == pytest.approx(float(d(q) - d(p)), rel=1e-6)
            assert dice_drop < 0.2

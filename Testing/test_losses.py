"""Sparse CE + Dice equals a dense one-hot reference, value and gradient."""

import pytest
import torch

from BoneSegmentationLib.losses import EPS, sparse_ce_dice


def dense_reference(logits, target):
    c = logits.shape[1]
    ce = torch.nn.functional.cross_entropy(logits, target)
    p = torch.softmax(logits, 1)
    onehot = torch.nn.functional.one_hot(target, c).movedim(-1, 1).to(logits.dtype)
    dims = [0] + list(range(2, logits.ndim))
    inter = (p * onehot).sum(dims)
    den = p.sum(dims) + onehot.sum(dims) + EPS
    return ce + 1 - ((2 * inter + EPS) / den).mean()


@pytest.mark.parametrize("shape,chunk", [((1, 5, 4, 6, 3), 7), ((2, 126, 6, 5, 7), 50), ((1, 126, 8, 8, 8), 1 << 16)])
def test_value_and_gradient_match_dense(shape, chunk):
    torch.manual_seed(sum(shape))
    x = (3 * torch.randn(shape, dtype=torch.float64)).requires_grad_()
    t = torch.randint(0, shape[1] // 2 + 1, (shape[0],) + shape[2:])  # some classes absent
    loss = sparse_ce_dice(x, t, chunk=chunk)
    loss.backward()
    grad = x.grad.clone()
    x.grad = None
    ref = dense_reference(x, t)
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    torch.testing.assert_close(grad, x.grad, rtol=1e-5, atol=1e-8)


def test_rejects_float_target():
    with pytest.raises(TypeError, match="integer label map"):
        sparse_ce_dice(torch.randn(1, 3, 4, 4, 4), torch.zeros(1, 4, 4, 4))

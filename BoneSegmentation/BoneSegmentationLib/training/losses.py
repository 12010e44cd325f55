"""Cross-entropy + soft Dice over all classes from a sparse integer label (the paper's loss,
unweighted sum), computed without ever materialising a one-hot target or a full softmax copy.

The autograd function walks the voxels in chunks: the forward pass gathers the per-class Dice
statistics and the cross-entropy; the backward pass recomputes each chunk's softmax and writes
the gradient directly. Memory is about one extra logits-sized tensor (the gradient) instead of
the five or so that one-hot + softmax + autograd keep.

Dice (batch Dice over all voxels of the batch):
``D_c = (2 I_c + s) / (P_c + G_c + EPS)`` with ``I_c = sum p_c [t = c]``, ``P_c = sum p_c``,
``G_c = #[t = c]``; loss = mean CE + (1 - mean_c D_c).

The numerator smooth ``s`` is 0 by default, and that matters at 126 classes. A patch holds a
third of the classes at most; with ``s = EPS`` every absent class scores ``EPS / (P_c + EPS)``,
which reaches 1 only when the class's summed probability falls below 1e-5 over the whole patch.
That term is most of the Dice mean, so the network learns to crush every class it is not sure of
to probabilities of 1e-9: the demo model's training loss fell from 0.9 to 0.4 in 500 iterations
while validation Dice fell from 0.56 to 0.22 (present classes 0.52 -> 0.24, absent 0 -> 0.88).
With ``s = 0`` an absent class scores 0 whatever the network does, so its Dice gradient is zero
and only cross-entropy penalises its false positives; present classes are unchanged.

Partial labels (a case where the anatomist checked only some bones): ``labelled`` marks the
classes whose voxels are trusted; background always is. Voxels whose label is an unlabelled class
(still the model's unchecked prediction) are left out entirely: no cross-entropy term, not in any
Dice sum, zero gradient. The CE mean is over the kept voxels and the Dice mean over the labelled
classes (plus background). With every class labelled this is exactly the loss above.
"""

from __future__ import annotations

from typing import Optional

import torch

EPS = 1e-5


def _flat(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = logits.shape[1]
    return logits.movedim(1, 0).reshape(c, -1), target.reshape(-1)


class _SparseCEDice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor,
                chunk: int, smooth: float) -> torch.Tensor:
        z, t = _flat(logits.detach(), target)
        c, v = z.shape
        partial = not bool(labelled.all())
        inter = torch.zeros(c, dtype=torch.float64, device=z.device)
        psum = torch.zeros(c, dtype=torch.float64, device=z.device)
        ce = torch.zeros((), dtype=torch.float64, device=z.device)
        for s in range(0, v, chunk):
            zc, tc = z[:, s:s + chunk].float(), t[s:s + chunk]
            if partial:
                keep = labelled[tc]
                zc, tc = zc[:, keep], tc[keep]
            logp = torch.log_softmax(zc, dim=0)
            p_t = logp.gather(0, tc[None]).squeeze(0)
            ce -= p_t.sum(dtype=torch.float64)
            p = logp.exp_()
            psum += p.sum(dim=1, dtype=torch.float64)
            inter.index_add_(0, tc, p_t.exp().double())
        kept = t[labelled[t]] if partial else t
        n_kept = max(kept.numel(), 1)
        gsum = torch.bincount(kept, minlength=c).double()
        den = psum + gsum + EPS
        dice = (2 * inter + smooth) / den
        loss = ce / n_kept + (1 - dice[labelled].mean())
        ctx.save_for_backward(logits, target, labelled, inter, den)
        ctx.chunk, ctx.n_kept, ctx.partial, ctx.smooth = chunk, n_kept, partial, smooth
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, target, labelled, inter, den = ctx.saved_tensors
        z, t = _flat(logits.detach(), target)
        c, v = z.shape
        n_classes, n_kept = int(labelled.sum()), ctx.n_kept
        # dL_dice/dp_c[v] = (A_c - B_c [t=c]) / C over the labelled classes, 0 for the others
        a = torch.where(labelled, (2 * inter + ctx.smooth) / den**2 / n_classes, 0).float()
        b = torch.where(labelled, 2 / den / n_classes, 0).float()
        grad = torch.empty_like(logits)
        g = grad.movedim(1, 0).reshape(c, -1)  # a view when the channel dim is contiguous-movable
        view_ok = g.data_ptr() == grad.data_ptr() and g.is_contiguous()
        out = g if view_ok else torch.empty((c, v), dtype=logits.dtype, device=logits.device)
        for s in range(0, v, ctx.chunk):
            zc, tc = z[:, s:s + ctx.chunk].float(), t[s:s + ctx.chunk]
            p = torch.softmax(zc, dim=0)
            p_t = p.gather(0, tc[None])
            gp = a[:, None] - torch.zeros_like(p).scatter_(0, tc[None], b[tc][None])  # dDice/dp
            inner = (p * gp).sum(0, keepdim=True)
            gz = p * (gp - inner)  # through the softmax
            gz.scatter_add_(0, tc[None], -torch.ones_like(p_t) / n_kept)  # cross-entropy: (p - onehot)/V
            gz += p / n_kept
            if ctx.partial:
                gz[:, ~labelled[tc]] = 0  # voxels of unlabelled classes: no gradient at all
            out[:, s:s + ctx.chunk] = (gz * grad_out).to(out.dtype)
        if not view_ok:
            grad.copy_(out.reshape(c, *logits.shape[:1], *logits.shape[2:]).movedim(0, 1))
        return grad, None, None, None, None


def sparse_ce_dice(logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None,
                   chunk: int = 1 << 14, smooth: float = 0.0) -> torch.Tensor:
    """Loss for ``logits`` (N, C, *spatial) and integer ``target`` (N, *spatial); ``labelled``
    (bool, C) marks the trusted classes of a partially labelled case (default: all); ``smooth``
    is the Dice numerator's (see the module's docstring for why it is 0)."""
    if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise TypeError("target must be an integer label map")
    c = logits.shape[1]
    if labelled is None:
        labelled = torch.ones(c, dtype=torch.bool, device=logits.device)
    else:
        labelled = labelled.to(device=logits.device, dtype=torch.bool).clone()
        if labelled.shape != (c,):
            raise ValueError(f"labelled must have one entry per class ({c}), got {tuple(labelled.shape)}")
        labelled[0] = True  # background is always trusted
    return _SparseCEDice.apply(logits, target.long(), labelled, chunk, float(smooth))


def parent_kl(logits: torch.Tensor, parent_logits: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of KL(parent || network) of the class distributions: the "learning without
    forgetting" term (Li and Hoiem 2017) that holds a fine-tuned network's output to its parent's
    where the new data do not ask for a change. ``parent_logits`` carry no gradient."""
    if logits.shape != parent_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and the parent's {tuple(parent_logits.shape)} differ")
    parent = torch.log_softmax(parent_logits.detach().float(), dim=1)
    ours = torch.log_softmax(logits.float(), dim=1)
    return (parent.exp() * (parent - ours)).sum(dim=1).mean()

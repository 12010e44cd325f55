"""Left-right mirror averaging at test time, aware of left and right bones.

nnU-Net averages the network's output over mirrored copies of each patch. Here that is only
correct along the patient's left-right axis, and only if the classes are swapped too: a mirrored
body is still a plausible body, but its left humerus is where the right one was. So the patch and
its left-right mirror go through the network as a batch of two, the mirror's logits are flipped
back and their left/right channels exchanged, and the two are averaged (logits, as nnU-Net does).

Per patch the result is exactly equivariant, whatever the network: mirroring the input mirrors
the output and swaps left and right. ``FusedMirrorNetwork`` computes the same average inside one
graph for engines that compile it (OpenVINO): the last layer is a 1x1 convolution, so averaging
its two outputs equals one 1x1 convolution over both feature maps with the weights halved and the
mirror's rows swapped, and the window leaves the engine already averaged (half the output to copy,
no flip of 126 channels). On the held-out phantoms it raised every group's median Dice of
the demo model (see docs/demo-model-evaluation.md) for twice the inference time.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..core.errors import ModelFileError

SIDES = ("_left", "_right")


def swap_permutation(class_names: Sequence[str]) -> list[int]:
    """Index of each class's mirror image: ``x_left`` <-> ``x_right`` (anywhere in the name,
    e.g. ``rib_left_3``), every other class maps to itself."""
    index = {name: i for i, name in enumerate(class_names)}
    perm = []
    for name in class_names:
        sides = [s for s in SIDES if s in name]
        if not sides:
            perm.append(index[name])
            continue
        if len(sides) > 1:
            raise ModelFileError(f"class '{name}' names both sides; cannot mirror it")
        other = name.replace(sides[0], SIDES[1 - SIDES.index(sides[0])])
        if other not in index:
            raise ModelFileError(f"class '{name}' has no mirror class '{other}'; "
                                 "run without mirror averaging (--no-mirror)")
        perm.append(index[other])
    return perm


def can_mirror(class_names: Sequence[str]) -> bool:
    """True when every left or right class has its partner, so mirror averaging is possible."""
    try:
        swap_permutation(class_names)
    except ModelFileError:
        return False
    return True


def lateral_dim(orientation: str) -> int:
    """Dimension of an (N, C, D, H, W) patch that runs left-right, for a DICOM orientation code
    such as ``LPS`` (letter k is the direction of image index axis k; numpy reverses the axes)."""
    code = orientation.upper()
    positions = [k for k, letter in enumerate(code) if letter in "LR"]
    if len(code) != 3 or len(positions) != 1:
        raise ModelFileError(f"model orientation {orientation!r} is not a 3-letter code with one L/R axis")
    return 4 - positions[0]


class MirrorAveraged:
    """Wraps a network: ``net(x)`` averaged with the side-swapped mirror of ``net(mirror(x))``."""

    def __init__(self, net: Callable[[torch.Tensor], torch.Tensor], class_names: Sequence[str],
                 orientation: str):
        self.net = net
        self.dim = lateral_dim(orientation)
        self.perm = torch.tensor(swap_permutation(class_names))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([x, x.flip(self.dim)]))
        n = x.shape[0]
        mirrored = out[n:].flip(self.dim).index_select(1, self.perm.to(out.device))
        return (out[:n] + mirrored) / 2


class FusedMirrorNetwork(torch.nn.Module):
    """``MirrorAveraged`` as one module, for a network with ``features(x)`` and a bias-free or
    biased 1x1 ``classifier``: the mirror's features are flipped back (a few channels, not 126)
    and one 1x1 convolution with weights [W, W[perm]] / 2 gives the averaged logits."""

    def __init__(self, net: torch.nn.Module, class_names: Sequence[str], orientation: str):
        super().__init__()
        classifier = net.classifier
        if not isinstance(classifier, torch.nn.Conv3d) or tuple(classifier.kernel_size) != (1, 1, 1):
            raise ModelFileError("the fused mirror needs a network whose last layer is a 1x1 convolution")
        self.net = net
        self.dim = lateral_dim(orientation)
        perm = torch.tensor(swap_permutation(class_names))
        weight = classifier.weight.detach()
        self.head = torch.nn.Conv3d(2 * weight.shape[1], weight.shape[0], kernel_size=1,
                                    bias=classifier.bias is not None)
        with torch.no_grad():
            self.head.weight.copy_(torch.cat([weight, weight[perm]], dim=1) / 2)
            if classifier.bias is not None:
                self.head.bias.copy_((classifier.bias + classifier.bias[perm]) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two batch-1 passes, not one batch of two: OpenVINO's batch-2 kernels sum in another order
        # (logits 3x further from PyTorch's, enough to flip near-ties)
        mirrored = self.net.features(x.flip(self.dim)).flip(self.dim)
        return self.head(torch.cat([self.net.features(x), mirrored], dim=1))

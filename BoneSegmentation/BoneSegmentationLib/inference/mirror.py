"""Left-right mirror averaging at test time, aware of left and right bones.

nnU-Net averages the network's output over mirrored copies of each patch. Here that is only
correct along the patient's left-right axis, and only if the classes are swapped too: a mirrored
body is still a plausible body, but its left humerus is where the right one was. So the patch and
its left-right mirror go through the network as a batch of two, the mirror's logits are flipped
back and their left/right channels exchanged, and the two are averaged (logits, as nnU-Net does).

Per patch the result is exactly equivariant, whatever the network: mirroring the input mirrors
the output and swaps left and right. On the held-out phantoms it raised every group's median Dice of
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

"""No-New-Net (Isensee et al. 2018) as implemented in NiftyNet's ``no_new_net.py``, which the
paper used with only the classification layer sized for 126 classes.

Architecture (defaults: ``base_features=30``, ``levels=5``):

* Encoder level i (i = 0..levels-2): two 3x3x3 convolutions without bias, each followed by
  instance norm (affine, eps 1e-5) and LeakyReLU(0.02); features ``base * 2**i`` = 30, 60, 120, 240;
  then 2x2x2 max-pooling.
* Bottom: 240 -> 480 -> 240 (the second convolution halves the width again).
* Decoder level i (i = levels-2..0): trilinear x2 upsampling, concatenation with the skip of level
  i, two convolutions that halve the channels: 480->240->120, 240->120->60, 120->60->30, 60->30->30.
* Output: 1x1x1 convolution without bias to ``num_classes`` logits. No dropout, no softmax.

Input sides must be divisible by ``2 ** (levels - 1)`` (16 by default). About 14.5 M parameters
at the default width. Scriptable with ``torch.jit.script``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.02


class ConvNormAct(nn.Sequential):
    """3x3x3 convolution (no bias), instance norm, LeakyReLU(0.02)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, eps=1e-5, affine=True),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__(ConvNormAct(in_channels, mid_channels), ConvNormAct(mid_channels, out_channels))


class NoNewNet(nn.Module):
    """3D U-Net of the No-New-Net design; returns logits of shape (N, num_classes, D, H, W)."""

    def __init__(self, num_classes: int, in_channels: int = 1, base_features: int = 30, levels: int = 5):
        super().__init__()
        if levels < 2:
            raise ValueError("No-New-Net needs at least 2 resolution levels")
        self.num_classes = num_classes
        self.levels = levels
        self.size_divisor = 2 ** (levels - 1)
        widths = [base_features * 2**i for i in range(levels)]
        encoders = []
        channels = in_channels
        for i in range(levels - 1):
            encoders.append(DoubleConv(channels, widths[i], widths[i]))
            channels = widths[i]
        self.encoders = nn.ModuleList(encoders)
        self.bottom = DoubleConv(channels, widths[-1], widths[-2])
        decoders = []
        for i in range(levels - 2, -1, -1):
            out = widths[i - 1] if i > 0 else widths[0]
            decoders.append(DoubleConv(2 * widths[i], widths[i], out))
        self.decoders = nn.ModuleList(decoders)
        self.classifier = nn.Conv3d(widths[0], num_classes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last decoder's output, before the 1x1 classifier (the OpenVINO engine averages a
        window with its mirror image there, see ``inference.mirror.FusedMirrorNetwork``)."""
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool3d(x, kernel_size=2, stride=2)
        x = self.bottom(x)
        n = len(skips)
        for i, decoder in enumerate(self.decoders):
            x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)
            x = decoder(torch.cat([skips[n - 1 - i], x], dim=1))
        return x


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

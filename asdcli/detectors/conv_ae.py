"""``conv-ae``: a convolutional autoencoder on ``1 x n_mels x frames`` log-mel patches.

Windowing: patches of ``params.frames`` frames every ``params.hop`` frames (default half a
patch) cover the clip; a clip shorter than a patch is repeated along time to fill it. Any
``n_mels`` works: each stride-2 convolution halves the size (rounding up), the transposed
convolutions double it back and the output is cropped to the input size. Clip score: mean
reconstruction MSE over its patches.
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

import torch
from torch import nn

from asdcli.detectors.params import ConvAEParams
from asdcli.detectors.torch_base import Autoencoder, Dropout


def _encoded_size(size: int, n_layers: int) -> int:
    """Size after ``n_layers`` convolutions with kernel 3, stride 2, padding 1."""
    for _ in range(n_layers):
        size = (size - 1) // 2 + 1
    return size


class ConvAutoencoderNet(nn.Module):
    """``(B, 1, n_mels, frames) -> (B, 1, n_mels, frames)``.

    Encoder: ``len(channels)`` Conv2d (kernel 3, stride 2) + BatchNorm + LeakyReLU + dropout,
    then a fully connected bottleneck; the decoder mirrors it with ConvTranspose2d and ends in
    a linear transposed convolution to one channel.
    """

    def __init__(
        self, n_mels: int, frames: int, channels: list[int], bottleneck: int, dropout: float
    ):
        super().__init__()
        self.n_mels, self.frames = n_mels, frames
        n = len(channels)
        self.code_shape = (channels[-1], _encoded_size(n_mels, n), _encoded_size(frames, n))
        flat = channels[-1] * self.code_shape[1] * self.code_shape[2]

        enc: list[nn.Module] = []
        for c_in, c_out in pairwise([1, *channels]):
            enc += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2),
                Dropout(dropout),
            ]
        self.encoder = nn.Sequential(*enc)
        self.to_code = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, bottleneck), nn.BatchNorm1d(bottleneck), nn.LeakyReLU(0.2)
        )
        self.from_code = nn.Sequential(
            nn.Linear(bottleneck, flat), nn.BatchNorm1d(flat), nn.LeakyReLU(0.2)
        )
        dec: list[nn.Module] = []
        back = list(reversed(channels))
        for c_in, c_out in pairwise(back):
            dec += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2),
                Dropout(dropout),
            ]
        dec.append(nn.ConvTranspose2d(back[-1], 1, 3, stride=2, padding=1, output_padding=1))
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.from_code(self.to_code(self.encoder(x)))
        out = self.decoder(h.view(-1, *self.code_shape))
        # Each transposed convolution doubles the size, which can overshoot odd sizes: crop.
        cropped: torch.Tensor = out[:, :, : x.shape[2], : x.shape[3]]
        return cropped


class ConvAutoencoder(Autoencoder):
    """Convolutional autoencoder on log-mel patches (see the module docstring)."""

    name: ClassVar[str] = "conv-ae"
    params_cls: ClassVar[type[ConvAEParams]] = ConvAEParams
    params: ConvAEParams
    channels_last: ClassVar[bool] = True

    def _window(self) -> tuple[int, int]:
        return self.params.frames, self.params.hop or max(1, self.params.frames // 2)

    def _build_module(self, n_mels: int) -> nn.Module:
        p = self.params
        return ConvAutoencoderNet(n_mels, p.frames, list(p.channels), p.bottleneck, p.dropout)

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, frames) -> (B, 1, n_mels, frames)``."""
        return windows.unsqueeze(1)

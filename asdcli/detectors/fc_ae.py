"""``fc-ae``: a fully connected autoencoder on flattened, fixed-length log-mel crops.

Windowing: crops of ``params.frames`` frames every ``params.hop`` frames (default half a crop)
cover the clip; a clip shorter than one crop is repeated along time to fill it. Each crop is
flattened to ``n_mels * frames`` values. Clip score: mean reconstruction MSE over its crops.
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

import torch
from torch import nn

from asdcli.detectors.params import FCAEParams
from asdcli.detectors.torch_base import TorchDetector


def _dense(n_in: int, n_out: int, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


class FCAutoencoderNet(nn.Module):
    """``(B, input_dim) -> (B, input_dim)``.

    Encoder: ``input_dim -> hidden[0] -> ... -> bottleneck``, decoder the mirror image; every
    layer but the output is Linear + BatchNorm + ReLU, with dropout after the hidden layers.
    The output layer is linear because standardised inputs take both signs.
    """

    def __init__(self, input_dim: int, hidden: list[int], bottleneck: int, dropout: float):
        super().__init__()
        widths = [input_dim, *hidden]
        enc: list[nn.Module] = []
        for a, b in pairwise(widths):
            enc += _dense(a, b, dropout)
        enc += _dense(widths[-1], bottleneck, 0.0)
        dec: list[nn.Module] = []
        back = [bottleneck, *reversed(hidden)]
        for a, b in pairwise(back):
            dec += _dense(a, b, dropout)
        dec.append(nn.Linear(back[-1], input_dim))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class FCAutoencoder(TorchDetector):
    """Fully connected autoencoder on flattened crops (see the module docstring)."""

    name: ClassVar[str] = "fc-ae"
    params_cls: ClassVar[type[FCAEParams]] = FCAEParams
    params: FCAEParams

    def _window(self) -> tuple[int, int]:
        return self.params.frames, self.params.hop or max(1, self.params.frames // 2)

    def _build_module(self, n_mels: int) -> nn.Module:
        p = self.params
        return FCAutoencoderNet(n_mels * p.frames, list(p.hidden), p.bottleneck, p.dropout)

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, frames) -> (B, n_mels * frames)``."""
        return windows.flatten(1)

"""``lstm-ae``: an LSTM autoencoder over sequences of log-mel frames.

Windowing: sequences of ``params.frames`` frames every ``params.hop`` frames (default half a
sequence) cover the clip; a clip shorter than one sequence is repeated along time to fill it.
The encoder's final hidden states (both directions of the last layer) are projected to the
bottleneck, which is repeated over time as the decoder's input. Clip score: mean
reconstruction MSE over its sequences.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from asdcli.detectors.params import LSTMAEParams
from asdcli.detectors.torch_base import Autoencoder


class LSTMAutoencoderNet(nn.Module):
    """``(B, T, n_mels) -> (B, T, n_mels)``.

    Encoder: ``layers``-layer bidirectional LSTM; bottleneck: Linear from the concatenated
    final states ``(B, 2 * hidden) -> (B, bottleneck)``; decoder: ``layers``-layer LSTM over the
    repeated bottleneck, then Linear ``hidden -> n_mels`` per step. Dropout between layers.
    """

    def __init__(self, n_mels: int, hidden: int, layers: int, bottleneck: int, dropout: float):
        super().__init__()
        between = dropout if layers > 1 else 0.0  # torch applies it between stacked layers only
        self.encoder = nn.LSTM(
            n_mels, hidden, layers, batch_first=True, bidirectional=True, dropout=between
        )
        self.to_code = nn.Linear(2 * hidden, bottleneck)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.LSTM(bottleneck, hidden, layers, batch_first=True, dropout=between)
        self.output = nn.Linear(hidden, n_mels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.encoder(x)  # h_n: (layers * 2, B, hidden)
        code = self.to_code(torch.cat([h_n[-2], h_n[-1]], dim=1))
        steps = self.dropout(code).unsqueeze(1).expand(-1, x.shape[1], -1)
        out, _ = self.decoder(steps)
        recon: torch.Tensor = self.output(out)
        return recon


class LSTMAutoencoder(Autoencoder):
    """LSTM autoencoder over frame sequences (see the module docstring)."""

    name: ClassVar[str] = "lstm-ae"
    params_cls: ClassVar[type[LSTMAEParams]] = LSTMAEParams
    params: LSTMAEParams

    def _window(self) -> tuple[int, int]:
        return self.params.frames, self.params.hop or max(1, self.params.frames // 2)

    def _build_module(self, n_mels: int) -> nn.Module:
        p = self.params
        return LSTMAutoencoderNet(n_mels, p.hidden, p.layers, p.bottleneck, p.dropout)

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, frames) -> (B, frames, n_mels)``."""
        return windows.transpose(1, 2)

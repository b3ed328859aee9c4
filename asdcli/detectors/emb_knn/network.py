"""emb-knn's network: a compact CNN from a log-mel window to an embedding."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


class EmbeddingNet(nn.Module):
    """``(B, 1, n_mels, frames) -> (B, embedding)`` (not normalised).

    Blocks of two 3x3 convolutions + BatchNorm + ReLU and a 2x2 max-pool, one block per entry
    of ``channels``; then a pooling over time only (frequency position is kept: it is what
    tells machines apart), a linear layer to the embedding and a BatchNorm. ``pooling``
    ``"mean_max"`` concatenates the mean and the max over time (the max keeps short events
    that the mean dilutes).
    """

    def __init__(self, n_mels: int, channels: list[int], embedding: int, pooling: str = "mean"):
        super().__init__()
        self.pooling = pooling
        blocks: list[nn.Module] = []
        size = n_mels
        for c_in, c_out in pairwise([1, *channels]):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            size = -(-size // 2)
        self.features = nn.Sequential(*blocks)
        pooled = channels[-1] * size * (2 if pooling == "mean_max" else 1)
        self.head = nn.Sequential(nn.Linear(pooled, embedding), nn.BatchNorm1d(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, C, F', T')
        pooled = h.mean(dim=3)  # over time: frequency position is kept
        if self.pooling == "mean_max":
            pooled = torch.cat([pooled, h.amax(dim=3)], dim=1)
        out: torch.Tensor = self.head(pooled.flatten(1))
        return out

"""emb-knn's loss heads: angular-margin classifiers on the embedding, trained with the network
and discarded after training (only the embedding is used to score).

Both take soft targets ``(B, n_classes)`` summing to 1 per row, so that mixup can blend two
classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asdcli.detectors.params import EmbKNNParams


class ArcFaceHead(nn.Module):
    """Additive angular margin softmax (Deng et al., 2019) with soft (mixup) targets.

    ``forward(emb (B, E), targets (B, n_classes) summing to 1) -> scalar loss``. The margin is
    added to the angle of every class a sample belongs to, weighted by its share.
    """

    def __init__(self, embedding: int, n_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embedding))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(emb), F.normalize(self.weight))  # (B, n_classes)

    def forward(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(emb).clamp(-1 + 1e-7, 1 - 1e-7)
        with_margin = torch.cos(torch.acos(cos) + self.margin)
        # A class a sample belongs to (target > 0) gets the margin; mixup gives two such classes.
        logits = self.scale * torch.where(targets > 0, with_margin, cos)
        return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class SubClusterAdaCosHead(nn.Module):
    """Sub-cluster AdaCos (Wilkinghoff, 2021): ``sub_clusters`` centres per class and a scale
    that adapts to the batch (no margin to tune).

    ``forward(emb (B, E), targets (B, n_classes)) -> scalar loss``; a class's logit is the
    log-sum-exp of its centres' scaled cosines.
    """

    scale: torch.Tensor

    def __init__(self, embedding: int, n_classes: int, sub_clusters: int):
        super().__init__()
        self.n_classes, self.k = n_classes, sub_clusters
        self.weight = nn.Parameter(torch.empty(n_classes * sub_clusters, embedding))
        nn.init.xavier_uniform_(self.weight)
        # A buffer so the adapted scale is part of the state that early stopping restores.
        self.register_buffer("scale", torch.tensor(math.sqrt(2) * math.log(max(n_classes - 1, 2))))

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight))
        return cos.view(-1, self.n_classes, self.k).max(dim=2).values  # (B, n_classes)

    def forward(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        cos = cos.view(-1, self.n_classes, self.k)
        if self.training:
            with torch.no_grad():  # AdaCos: s = log(B_avg) / cos(median angle of true classes)
                s = self.scale
                true = targets > 0
                others = torch.exp(s * cos).sum(dim=2).masked_fill(true, 0).sum(dim=1)
                theta = torch.acos((cos.max(dim=2).values * targets).sum(dim=1))
                median = torch.clamp(theta.median(), max=math.pi / 4)
                b_avg = torch.clamp(others.mean(), min=1e-12)
                self.scale.copy_(torch.log(b_avg) / torch.cos(median))
        logits = torch.logsumexp(self.scale * cos, dim=2)
        return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def loss_head(params: EmbKNNParams, n_classes: int) -> nn.Module:
    """The head ``params.loss`` names, for ``n_classes`` classes of ``params.embedding``-d
    embeddings."""
    if params.loss == "arcface":
        return ArcFaceHead(params.embedding, n_classes, params.margin, params.scale)
    return SubClusterAdaCosHead(params.embedding, n_classes, params.sub_clusters)

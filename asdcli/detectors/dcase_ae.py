"""``dcase-ae``: the DCASE 2023 Task 2 baseline autoencoder (Harada et al., 2023).

Input vectors: ``params.context`` consecutive frames concatenated frame after frame (5 x 128
= 640 values for 128 mels), one vector per frame (hop 1), as in the baseline; a clip shorter
than ``context`` frames is repeated along time to fill one vector. Inputs are standardised
per mel band with the training statistics.

Network: dense ``640-128-128-128-128-8`` and back ``8-128-128-128-128-640``; every hidden Linear
is followed by ``BatchNorm1d(momentum=0.01, eps=1e-3)`` (Keras' 0.99 / 1e-3) and ReLU; Adam,
batches of ``params.batch_size`` (256) vectors, MSE loss.

Scores:

* ``"mse"``: mean squared reconstruction error over the clip's vectors.
* ``"mahalanobis"`` (the baseline's selective Mahalanobis): after training, the residuals
  ``x - x_hat`` of the training vectors give a mean and a pseudo-inverse covariance per domain
  (source, target; ``"unknown"`` counts as source; a domain without training vectors borrows
  the other's). A clip's score per domain is the mean over its vectors of the squared
  Mahalanobis distance ``(r - mu)^T S^+ (r - mu)`` (squared, as the baseline computes it); the
  clip score is the smaller of the source and target scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from asdcli.detectors.params import DCASEAEParams
from asdcli.detectors.torch_base import Autoencoder
from asdcli.detectors.windows import WindowSet
from asdcli.naming import ClipInfo

DOMAINS = ("source", "target")
# The baseline's encoder and decoder each have four hidden layers.
N_HIDDEN = 4


def _block(n_in: int, n_out: int) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, momentum=0.01, eps=1e-3), nn.ReLU()]


class DCASEAutoencoderNet(nn.Module):
    """``(B, input_dim) -> (B, input_dim)``: the baseline's dense autoencoder."""

    def __init__(self, input_dim: int, hidden: int = 128, bottleneck: int = 8):
        super().__init__()
        enc = _block(input_dim, hidden)
        for _ in range(N_HIDDEN - 1):
            enc += _block(hidden, hidden)
        enc += _block(hidden, bottleneck)
        dec = _block(bottleneck, hidden)
        for _ in range(N_HIDDEN - 1):
            dec += _block(hidden, hidden)
        dec.append(nn.Linear(hidden, input_dim))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder(self.encoder(x))
        return out


def _domain(clip: ClipInfo) -> int:
    return 1 if clip.domain == "target" else 0


class DCASEAutoencoder(Autoencoder):
    """The DCASE 2023 Task 2 baseline autoencoder (see the module docstring).

    Attributes (after :meth:`fit` with ``score="mahalanobis"``)
    ---------------------------------------------------------
    residual_mean_ : ndarray (2, input_dim)
        Mean training residual per domain (row 0 source, row 1 target).
    residual_precision_ : ndarray (2, input_dim, input_dim)
        Pseudo-inverse of the residual covariance per domain.
    """

    name: ClassVar[str] = "dcase-ae"
    params_cls: ClassVar[type[DCASEAEParams]] = DCASEAEParams
    params: DCASEAEParams

    residual_mean_: np.ndarray
    residual_precision_: np.ndarray
    saved_arrays: ClassVar[tuple[str, ...]] = ("residual_mean_", "residual_precision_")

    def _window(self) -> tuple[int, int]:
        return self.params.context, 1

    def _build_module(self, n_mels: int) -> nn.Module:
        p = self.params
        return DCASEAutoencoderNet(n_mels * p.context, p.hidden, p.bottleneck)

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, context) -> (B, context * n_mels)``, frame after frame as in the
        baseline (values ``n_mels * t .. n_mels * (t + 1)`` are frame ``t``)."""
        return windows.transpose(1, 2).flatten(1)

    # --- selective Mahalanobis -----------------------------------------------------------------

    def _residuals(self, windows: WindowSet) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(window indices (B,), residuals x - x_hat (B, input_dim) float64)``."""
        with torch.inference_mode():
            for idx, x in self._eval_batches(windows):
                yield idx, (x - self.module_(x)).double().cpu().numpy()

    def _after_fit(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        if self.params.score == "mahalanobis":
            self._fit_mahalanobis(windows, clips)
        return super()._after_fit(windows, clips)

    def _fit_mahalanobis(self, windows: WindowSet, clips: list[ClipInfo]) -> None:
        """Residual mean and pseudo-inverse covariance per domain (module docstring)."""
        domain_of_window = np.array([_domain(c) for c in clips], dtype=np.int64)[windows.clip_of]
        dim = self.n_mels_ * self.params.context
        n = np.zeros(2)
        s1 = np.zeros((2, dim))
        s2 = np.zeros((2, dim, dim))
        for idx, r in self._residuals(windows):
            for d in (0, 1):
                rd = r[domain_of_window[idx] == d]
                n[d] += rd.shape[0]
                s1[d] += rd.sum(axis=0)
                s2[d] += rd.T @ rd
        means = np.zeros((2, dim))
        precisions = np.zeros((2, dim, dim))
        for d in (0, 1):
            # A domain needs two vectors for a covariance; otherwise it borrows the other's.
            src = d if n[d] >= 2 else 1 - d
            mean = s1[src] / n[src]
            cov = (s2[src] - n[src] * np.outer(mean, mean)) / (n[src] - 1)
            if self.params.ridge > 0:
                cov = cov + self.params.ridge * np.trace(cov) / dim * np.eye(dim)
            means[d] = mean
            precisions[d] = np.linalg.pinv(cov, hermitian=True)
        self.residual_mean_ = means
        self.residual_precision_ = precisions

    def _clip_scores(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        if self.params.score == "mse":
            return super()._clip_scores(windows, clips)
        per_domain = np.empty((2, len(windows)))
        for idx, r in self._residuals(windows):
            for d in (0, 1):
                delta = r - self.residual_mean_[d]
                per_domain[d, idx] = ((delta @ self.residual_precision_[d]) * delta).sum(axis=1)
        scores: np.ndarray = np.minimum(
            windows.clip_means(per_domain[0]), windows.clip_means(per_domain[1])
        )
        return scores

"""``vae``: a variational autoencoder on vectors of ``context`` consecutive log-mel frames.

Input vectors: windows of ``params.context`` frames every ``params.hop`` frames, concatenated
frame after frame (as dcase-ae), so ``input_dim = context * n_mels``; a clip shorter than
``context`` frames is repeated along time to fill one vector. Inputs are standardised per mel
band with the training statistics.

Network (:class:`VAENet`): encoder ``input_dim -> hidden[0] -> ... -> hidden[-1]`` (Linear +
ReLU), two linear heads to ``mu`` and ``logvar`` ``(B, latent)`` of the diagonal Gaussian
posterior ``q(z|x)``; decoder the mirror image ``latent -> ... -> hidden[0] -> input_dim``
with a linear output (standardised inputs take both signs). No BatchNorm, so a window's loss
does not depend on the other windows of its batch. Prior ``p(z) = N(0, I)``.

Per-window terms, with ``D = input_dim``:

* ``recon = mean_d (x_d - x_hat_d)^2`` (Gaussian likelihood of fixed variance: MSE);
* ``KL = 0.5 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)`` (:func:`kl_divergence`).

Training loss per window: ``recon + beta * KL / D`` with ``z = mu + exp(logvar / 2) * eps``
(reparameterisation, ``eps`` from torch's global RNG, seeded by the training loop). Scaling: for a
decoder of variance 1/2, ``-ELBO = sum_d (x_d - x_hat_d)^2 + KL + const``, so the loss is
``-ELBO / D`` up to a constant at ``beta = 1``; read against the textbook unit-variance ELBO
(``0.5 * sum_d (x_d - x_hat_d)^2 + KL``), this ``beta`` weighs the KL like ``beta / 2`` there.
Dividing by ``D`` keeps the loss on the autoencoders' per-value MSE scale.

Scores (deterministic, eval mode, ``z = mu``): ``"elbo"``: ``recon + beta * KL / D``;
``"recon"``: ``recon``. Clip score: the mean over the clip's windows. Augmentation (mixup,
SpecAugment) applies through :class:`~asdcli.detectors.torch_base.Autoencoder`'s
``_batch_loss``: it calls :meth:`_errors` in train mode with the augmented input and the clean
target.
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from asdcli.detectors.params import VAEParams
from asdcli.detectors.torch_base import Autoencoder


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per row: ``(B, latent)`` x 2 -> ``(B,)``."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear + ReLU for each consecutive pair of ``widths`` (empty for one width)."""
    layers: list[nn.Module] = []
    for a, b in pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class VAENet(nn.Module):
    """``(B, input_dim) -> (x_hat (B, input_dim), mu (B, latent), logvar (B, latent))``.

    In train mode the decoder sees a sample ``z = mu + exp(logvar / 2) * eps``; in eval mode
    it sees ``z = mu``, so evaluation is deterministic.
    """

    def __init__(self, input_dim: int, hidden: list[int], latent: int):
        super().__init__()
        self.encoder = _mlp([input_dim, *hidden])
        width = hidden[-1] if hidden else input_dim
        self.mu = nn.Linear(width, latent)
        self.logvar = nn.Linear(width, latent)
        back = [latent, *reversed(hidden)]
        self.decoder = nn.Sequential(*_mlp(back), nn.Linear(back[-1], input_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, input_dim) -> (mu, logvar)``, each ``(B, latent)``."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent) -> (B, input_dim)``."""
        out: torch.Tensor = self.decoder(z)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu
        if self.training:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z), mu, logvar


class VAEDetector(Autoencoder):
    """Variational autoencoder on context-frame vectors (see the module docstring)."""

    name: ClassVar[str] = "vae"
    params_cls: ClassVar[type[VAEParams]] = VAEParams
    params: VAEParams

    def _window(self) -> tuple[int, int]:
        return self.params.context, self.params.hop

    def _build_module(self, n_mels: int) -> nn.Module:
        p = self.params
        return VAENet(n_mels * p.context, list(p.hidden), p.latent)

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, context) -> (B, context * n_mels)``, frame after frame (values
        ``n_mels * t .. n_mels * (t + 1)`` are frame ``t``)."""
        return windows.transpose(1, 2).flatten(1)

    def _errors(
        self, module: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-window ``(B,)``: in train mode the sampled loss ``recon + beta * KL / D``
        against ``target`` (default ``x``; the clean windows when augmentation alters ``x``);
        in eval mode the deterministic score at ``z = mu`` chosen by ``params.score``."""
        target = x if target is None else target
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = module(x)
        x_hat, mu, logvar = out
        beta, dim = self.params.beta, x.shape[1]
        if module.training:
            recon = F.mse_loss(x_hat, target, reduction="none").mean(dim=1)
            return recon + beta * kl_divergence(mu, logvar) / dim
        # float64: exp(logvar) of a far-out window must not overflow to an infinite score.
        recon = (x_hat.double() - target.double()).square().mean(dim=1)
        if self.params.score == "recon":
            return recon
        elbo: torch.Tensor = recon + beta * kl_divergence(mu.double(), logvar.double()) / dim
        return elbo

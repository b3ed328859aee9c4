"""``conv-ae``: a convolutional autoencoder on ``1 x n_mels x frames`` log-mel patches.

Windowing: patches of ``params.frames`` frames every ``params.hop`` frames (default half a
patch) cover the clip; a clip shorter than a patch is repeated along time to fill it. Any
``n_mels`` works: each stride-2 convolution halves the size (rounding up), the transposed
convolutions double it back and the output is cropped to the input size. Clip score: mean
reconstruction MSE over its patches.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import nn

from asdcli.detectors.params import ConvAEParams
from asdcli.detectors.torch_base import Autoencoder, Dropout


def _encoded_size(size: int, n_layers: int) -> int:
    """Size after ``n_layers`` convolutions with kernel 3, stride 2, padding 1."""
    for _ in range(n_layers):
        size = (size - 1) // 2 + 1
    return size


class _ToOneChannel(torch.autograd.Function):
    """The transposed convolution of :class:`ToOneChannel` as one matrix product and an
    overlap-add of its nine taps (with stride 2, each output pixel of phase ``(a, b)``, its row
    and column parity, sums one to four taps of neighbouring inputs)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """``(B, C, H, W)``, weight ``(C, 1, 3, 3)`` -> ``(B, 1, 2H, 2W)``."""
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # (B*H*W, C): a view when channels-last
        taps = weight.reshape(c, 9).t()  # (9, C)
        z = (taps @ rows.t()).view(3, 3, b, h, w)  # z[kh, kw]: every input's tap (kh, kw)
        y = x.new_empty(b, h, 2, w, 2)  # y[:, m, a, n, b] is output pixel (2m + a, 2n + b)
        y00, y01, y10, y11 = y[:, :, 0, :, 0], y[:, :, 0, :, 1], y[:, :, 1, :, 0], y[:, :, 1, :, 1]
        y00.copy_(z[1, 1])
        y01.copy_(z[1, 2])
        y01[:, :, :-1] += z[1, 0][:, :, 1:]
        y10.copy_(z[2, 1])
        y10[:, :-1] += z[0, 1][:, 1:]
        y11.copy_(z[2, 2])
        y11[:, :, :-1] += z[2, 0][:, :, 1:]
        y11[:, :-1] += z[0, 2][:, 1:]
        y11[:, :-1, :-1] += z[0, 0][:, 1:, 1:]
        if bias is not None:
            y += bias
        ctx.save_for_backward(rows, taps)
        ctx.shape = (b, c, h, w)
        return y.view(b, 1, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, taps = ctx.saved_tensors
        b, c, h, w = ctx.shape
        g = grad.reshape(b, h, 2, w, 2)
        g00, g01, g10, g11 = g[:, :, 0, :, 0], g[:, :, 0, :, 1], g[:, :, 1, :, 0], g[:, :, 1, :, 1]
        gz = grad.new_zeros(3, 3, b, h, w)  # each tap's share of the output's gradient
        gz[1, 1] = g00
        gz[1, 2] = g01
        gz[1, 0][:, :, 1:] = g01[:, :, :-1]
        gz[2, 1] = g10
        gz[0, 1][:, 1:] = g10[:, :-1]
        gz[2, 2] = g11
        gz[2, 0][:, :, 1:] = g11[:, :, :-1]
        gz[0, 2][:, 1:] = g11[:, :-1]
        gz[0, 0][:, 1:, 1:] = g11[:, :-1, :-1]
        gz = gz.view(9, -1)
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = (gz.t() @ taps).view(b, h, w, c).permute(0, 3, 1, 2) if need_x else None
        gw = (gz @ rows).t().reshape(c, 1, 3, 3) if need_w else None
        gb = grad.sum().reshape(1) if need_b else None
        return gx, gw, gb


class ToOneChannel(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d(channels, 1, 3, stride=2, padding=1, output_padding=1)``, the same
    parameters and state, computed on CPU as a matrix product (:class:`_ToOneChannel`): oneDNN
    computes this one-channel output at a tenth of its speed for the other layers (profiled,
    2-core EPYC: 27 ms of a 300-ms training step at batch 64, 12 ms this way). The sums run in
    another order (outputs agree to about 1e-6)."""

    def __init__(self, channels: int):
        super().__init__(channels, 1, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if x.device.type != "cpu" or output_size is not None:
            return super().forward(x, output_size)
        out: torch.Tensor = _ToOneChannel.apply(x, self.weight, self.bias)
        return out


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
                # In place: a batch norm's backward needs its input, not its output.
                nn.LeakyReLU(0.2, inplace=True),
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
                nn.LeakyReLU(0.2, inplace=True),
                Dropout(dropout),
            ]
        dec.append(ToOneChannel(back[-1]))
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

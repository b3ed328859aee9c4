"""emb-knn's network: a compact CNN from a log-mel window to an embedding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import torch
from torch import nn

# PyTorch's channels-last BatchNorm kernel, training, over this few channels (one AVX2 register)
# ran twice as slowly on 2 threads as on 1 (profiled, torch 2.14, fwd + bwd): run it on one.
SERIAL_BN_CHANNELS = 8


class _SerialBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of a channels-last ``(B, C, F, T)`` tensor on one thread: the
    same ATen kernels as :func:`torch.nn.functional.batch_norm` (running statistics updated in
    place), only the thread count differs."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        momentum: float,
        eps: float,
    ) -> torch.Tensor:
        with _one_thread():
            out, mean, invstd = torch.ops.aten.native_batch_norm(
                x, weight, bias, running_mean, running_var, True, momentum, eps
            )
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        normed: torch.Tensor = out
        return normed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        with _one_thread():
            dx, dw, db = torch.ops.aten.native_batch_norm_backward(
                grad, x, weight, None, None, mean, invstd, True, ctx.eps, [True, True, True]
            )
        return dx, dw, db, None, None, None, None


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SmallBatchNorm2d(nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` (same state) that trains a channels-last input of at most
    :data:`SERIAL_BN_CHANNELS` channels on one thread (see there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        serial = (
            self.training
            and self.num_features <= SERIAL_BN_CHANNELS
            and torch.get_num_threads() > 1
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
        )
        counted = self.num_batches_tracked
        if not serial or self.momentum is None or counted is None:
            return super().forward(x)
        counted.add_(1)  # what nn.BatchNorm2d counts in training
        out: torch.Tensor = _SerialBatchNorm.apply(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.momentum, self.eps
        )
        return out


def _paired_weight_index(out_channels: int) -> torch.Tensor:
    """Where each value of :class:`FirstConv`'s paired weight ``(2 * C, 2, 3, 3)`` comes from in
    the flattened ``(C, 1, 3, 3)`` weight followed by one zero (index ``9 * C``).

    Pixel pairs: output pair ``j`` holds pixels ``2j`` (parity ``p = 0``) and ``2j + 1``
    (``p = 1``); tap ``kw`` of pixel ``2j + p`` reads pixel ``2j + p + kw - 1``, which is pair
    ``j + dj`` at parity ``q`` with ``2 * dj + q = p + kw - 1``.
    """
    index = torch.full((2, out_channels, 2, 3, 3), 9 * out_channels, dtype=torch.long)
    taps = torch.arange(9 * out_channels).view(out_channels, 3, 3)  # (c, kh, kw)
    for p in range(2):
        for kw in range(3):
            dj, q = divmod(p + kw - 1, 2)
            index[p, :, q, :, dj + 1] = taps[:, :, kw]
    return index.view(2 * out_channels, 2, 3, 3)


class FirstConv(nn.Conv2d):
    """The network's first layer, a 3x3 convolution from one channel (no bias, padding 1):
    :class:`torch.nn.Conv2d`'s parameters and state, computed on CPU over pairs of neighbouring
    time frames.

    oneDNN ran this layer (1 -> 8 channels at full resolution) at a fraction of the others'
    speed. Read as pairs of frames, the same memory is a 2-channel input at half the width,
    and the layer a 3x3 convolution from 2 to ``2 * C`` channels whose weight holds each tap
    at the place its pair and parity give (zeros elsewhere, :func:`_paired_weight_index`);
    its output is the layer's, channels-last, as it lies in memory. The same sums in another
    order: outputs agree to float32 rounding (tested).
    """

    _pairs: torch.Tensor

    def __init__(self, out_channels: int):
        super().__init__(1, out_channels, 3, padding=1, bias=False)
        self.register_buffer("_pairs", _paired_weight_index(out_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if (
            x.device.type != "cpu"
            or c != 1
            or w % 2
            or not x.is_contiguous(memory_format=torch.channels_last)
        ):
            return super().forward(x)
        flat = torch.cat([self.weight.reshape(-1), self.weight.new_zeros(1)])
        paired = flat[self._pairs].contiguous(memory_format=torch.channels_last)
        # (N, 1, H, W) -> (N, 2, H, W/2): frame pairs as channels, the same memory.
        pairs = x.permute(0, 2, 3, 1).reshape(n, h, w // 2, 2).permute(0, 3, 1, 2)
        out = torch.nn.functional.conv2d(pairs, paired, padding=1)
        out = out.contiguous(memory_format=torch.channels_last)
        # (N, 2C, H, W/2) -> (N, C, H, W): back to frames, still the same memory.
        k = self.out_channels
        frames = out.permute(0, 2, 3, 1).reshape(n, h, w, k).permute(0, 3, 1, 2)
        return frames


class EmbeddingNet(nn.Module):
    """``(B, 1, n_mels, frames) -> (B, embedding)`` (not normalised).

    Blocks of two 3x3 convolutions + BatchNorm + ReLU and a 2x2 max-pool, one block per entry
    of ``channels`` (the second ReLU runs after the pool: the same outputs and gradients, since
    a max commutes with a ReLU, on a quarter of the values); then a pooling over time only
    (frequency position is kept: it is what tells machines apart), a linear layer to the
    embedding and a BatchNorm. ``pooling`` ``"mean_max"`` concatenates the mean and the max
    over time (the max keeps short events that the mean dilutes).
    """

    def __init__(self, n_mels: int, channels: list[int], embedding: int, pooling: str = "mean"):
        super().__init__()
        self.pooling = pooling
        blocks: list[nn.Module] = []
        size = n_mels
        for c_in, c_out in pairwise([1, *channels]):
            conv: nn.Module = (
                FirstConv(c_out) if c_in == 1 else nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            )
            blocks += [
                conv,
                SmallBatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                SmallBatchNorm2d(c_out),
                nn.MaxPool2d(2, ceil_mode=True),
                nn.ReLU(inplace=True),
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

"""``fc-ae``: a fully connected autoencoder on flattened, fixed-length log-mel crops.

Windowing: crops of ``params.frames`` frames every ``params.hop`` frames (default half a crop)
cover the clip; a clip shorter than one crop is repeated along time to fill it. Each crop is
flattened to ``n_mels * frames`` values. Clip score: mean reconstruction MSE over its crops.

Scoring speed. Evaluated on the CPU, the network (38.8 M weights) is limited by how fast its
weights stream from memory: a 10-s clip has only 9 crops. In float32 that is 155 MB per clip,
about 20 ms at the 8 GB/s that one core of the benchmark machine streams, and more through the
plain BLAS product, which runs slower for so few rows. In eval mode the errors therefore come
from :class:`_PackedNet`, the same network with each BatchNorm folded into its Linear layer and
the weights pre-packed by oneDNN in half precision where the CPU has it (AVX512-FP16 or
AVX-NE-CONVERT; float16: 78 MB, and the network alone ran 1.4x faster than packed float32 on
the benchmark machine), else in float32. float16 keeps 11 significant bits: on synthetic fan
and valve clips the scores agreed with the float32 module's to 6e-5 relative, in the same
order. A batch whose values leave float16's range (above 65504) is recomputed by the float32
module; where oneDNN is missing or its check batch disagrees with the module, the module is
used throughout.
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdcli.detectors.params import FCAEParams
from asdcli.detectors.torch_base import Autoencoder
from asdcli.detectors.windows import WindowSet

# What the packed copy is tried in, first to last, with how closely its output must match the
# module's on a check batch (relative to the output's largest value): float16 keeps 11
# significant bits; float32 differs only by folding the batch norms.
PACK_DTYPES = ((torch.float16, 1e-2), (torch.float32, 1e-4))
# Rows the packed weights are laid out for: oneDNN then streams them at memory speed for any
# batch from 1 to hundreds of rows (packed for 9 rows, 9-row products are 1.6x slower).
PACK_ROWS = 64


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
        self.input_dim = input_dim
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
        out: torch.Tensor = self.decoder(self.encoder(x))
        return out


class _PackedNet:
    """An eval-mode :class:`FCAutoencoderNet` for the CPU: BatchNorm folded into the Linear
    layers, weights pre-packed for oneDNN in ``dtype``. ``(B, input_dim) -> (B, input_dim)``
    float32."""

    def __init__(self, net: FCAutoencoderNet, rows: int, dtype: torch.dtype):
        self.dtype = dtype
        self.layers: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
        mods = [*net.encoder, *net.decoder]
        with torch.no_grad():
            for i, m in enumerate(mods):
                if not isinstance(m, nn.Linear):
                    continue
                w, b = m.weight.detach().clone(), m.bias.detach().clone()
                after = mods[i + 1 : i + 3]
                if after and isinstance(after[0], nn.BatchNorm1d):
                    bn = after[0]
                    assert bn.running_mean is not None and bn.running_var is not None
                    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    w *= scale[:, None]
                    b = (b - bn.running_mean) * scale + bn.bias
                relu = any(isinstance(a, nn.ReLU) for a in after)
                packed = torch.ops.mkldnn._reorder_linear_weight(w.to(dtype), rows)
                self.layers.append((packed, b.to(dtype), relu))

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        """The reconstruction, float32; None where a value left ``dtype``'s range."""
        x = x.to(self.dtype)
        for w, b, relu in self.layers:
            x = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
            # Checked at every layer, before its ReLU: the ReLU turns -inf into 0, which would
            # hide an overflow upstream (+inf here, -inf after the next product).
            if not bool(torch.isfinite(x).all()):
                return None
            if relu:
                x.relu_()
        return x.float()

    @classmethod
    def build(cls, net: nn.Module, rows: int) -> _PackedNet | None:
        """The packed copy of ``net`` in the first of :data:`PACK_DTYPES` that oneDNN can run
        on this CPU and that matches ``net``; None where none can be made."""
        mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        if not (isinstance(net, FCAutoencoderNet) and mkldnn):
            return None
        check = torch.randn(3, net.input_dim, generator=torch.Generator())  # not the global RNG
        with torch.inference_mode():
            want = net(check)
        scale = float(want.abs().max())
        for dtype, tolerance in PACK_DTYPES:
            try:
                packed = cls(net, rows, dtype)
                with torch.inference_mode():
                    got = packed(check)
            except (RuntimeError, AttributeError, TypeError):  # private ops: absent or changed;
                continue  # float16 needs AVX512-FP16 or AVX-NE-CONVERT
            if got is not None and torch.allclose(got, want, rtol=0, atol=tolerance * scale):
                return packed
        return None


class FCAutoencoder(Autoencoder):
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

    def _packed(self) -> _PackedNet | None:
        """The packed copy of ``module_`` (CPU only), rebuilt whenever its weights change
        (each epoch's validation; a loaded model packs once, at its first score)."""
        if self.device_.type != "cpu":
            return None
        tensors = [*self.module_.parameters(), *self.module_.buffers()]  # what state_dict holds
        versions = tuple(t._version for t in tensors)
        key = (id(self.module_), versions)
        if getattr(self, "_packed_key", None) != key:
            self._packed_net = _PackedNet.build(self.module_, max(PACK_ROWS, self._batch_size()))
            self._packed_key = key
        return self._packed_net

    def _window_errors(self, windows: WindowSet) -> np.ndarray:
        packed = self._packed()
        if packed is None:
            return super()._window_errors(windows)
        out = np.empty(len(windows), dtype=np.float64)
        with torch.inference_mode():
            for idx, x in self._eval_batches(windows):
                recon = packed(x)
                if recon is None:  # beyond float16's range: the float32 module
                    recon = self.module_(x)
                err = F.mse_loss(recon, x, reduction="none").mean(dim=1)
                out[idx] = err.double().numpy()
        return out

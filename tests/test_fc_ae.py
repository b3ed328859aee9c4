"""fc-ae's CPU scoring path: the folded, float16-packed copy of the network (`_PackedNet`)
against the float32 module it stands in for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asdcli.detectors import get_detector
from asdcli.detectors.fc_ae import FCAutoencoder, FCAutoencoderNet, _PackedNet
from asdcli.detectors.params import FCAEParams, TrainParams
from asdcli.naming import ClipInfo

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="oneDNN is not in this torch build"
)

N_MELS = 16
# float16 packing needs AVX512-FP16 or AVX-NE-CONVERT; other CPUs pack in float32.
FP16 = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: False)())
needs_fp16 = pytest.mark.skipif(not FP16, reason="this CPU has no float16 for oneDNN")


def _fitted(seed: int = 0) -> tuple[FCAutoencoder, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    shape = 10 * np.cos(np.linspace(0, 3, N_MELS))[:, None]
    feats = [(shape + rng.normal(0, 1, (N_MELS, 80))).astype(np.float32) for _ in range(12)]
    info = [
        ClipInfo(name=f"c{i}.wav", machine="fan", section="00", domain="source", split="train")
        for i in range(12)
    ]
    params = FCAEParams(frames=16, hidden=[64, 32], bottleneck=8)
    train = TrainParams(epochs=3, batch_size=16, seed=seed, device="cpu")
    det = get_detector("fc-ae")(params, train).fit(feats, info)
    assert isinstance(det, FCAutoencoder)
    return det, feats


def _module_scores(det: FCAutoencoder, feats: list[np.ndarray], monkeypatch) -> np.ndarray:
    """Scores through the float32 module: the packed copy made unavailable."""
    with monkeypatch.context() as m:
        m.setattr(_PackedNet, "build", classmethod(lambda cls, net, rows: None))
        det._packed_key = None
        scores = det.score(feats)
    det._packed_key = None
    return scores


def test_packed_scores_match_the_float32_module(monkeypatch):
    det, feats = _fitted()
    rng = np.random.default_rng(1)
    test = [f + rng.normal(0, s, f.shape).astype(np.float32) for s, f in enumerate(feats)]
    packed = det.score(test)
    assert det._packed() is not None
    assert det._packed().dtype == (torch.float16 if FP16 else torch.float32)
    module = _module_scores(det, test, monkeypatch)
    np.testing.assert_allclose(packed, module, rtol=1e-3 if FP16 else 1e-5)
    assert list(np.argsort(packed)) == list(np.argsort(module))
    if FP16:
        assert not np.array_equal(packed, module)  # the packed path did run, in half precision


def test_a_cpu_without_float16_gets_the_float32_packing():
    """Where oneDNN refuses float16 weights (no AVX512-FP16 or AVX-NE-CONVERT), the packed copy
    is made in float32, not dropped."""

    class NoHalf(_PackedNet):
        def __init__(self, net, rows, dtype):
            if dtype == torch.float16:
                raise RuntimeError("fp16 path needs the cpu support avx_ne_convert or avx512_fp16")
            super().__init__(net, rows, dtype)

    net = FCAutoencoderNet(32, [16], 4, 0.0).eval()
    packed = NoHalf.build(net, 64)
    assert isinstance(packed, NoHalf) and packed.dtype == torch.float32
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), net(x), rtol=1e-5, atol=1e-5)


@needs_fp16
def test_values_beyond_float16_are_scored_by_the_float32_module(monkeypatch):
    det, feats = _fitted()
    huge = [feats[0] * 1e6]  # standardised values near 1e6: the packed net overflows float16
    x = (huge[0][:, :16] - det.norm_mean_[:, None]) / det.norm_std_[:, None]
    with torch.inference_mode():
        assert det._packed()(torch.from_numpy(x).reshape(1, -1)) is None
    got = det.score(huge)
    assert np.isfinite(got).all()
    assert got[0] == _module_scores(det, huge, monkeypatch)[0]


@needs_fp16
def test_a_hidden_layer_that_overflows_is_caught_before_its_relu():
    """A pre-activation at -inf inside the network: a ReLU fused into the product would make it
    a finite 0 and the reconstruction would look valid."""
    net = FCAutoencoderNet(32, [16], 4, 0.0).eval()
    with torch.no_grad():
        first, second = [m for m in net.encoder if isinstance(m, torch.nn.Linear)][:2]
        first.weight.fill_(1.0)
        first.bias.zero_()
        second.weight.fill_(-1e4)  # a float16 weight; 16 inputs of 32 each: -5e6, beyond -65504
    packed = _PackedNet(net, 64, torch.float16)
    x = torch.ones(2, 32)  # in range: only the hidden layer overflows
    with torch.inference_mode():
        assert packed(x) is None
        assert torch.isfinite(_PackedNet(net, 64, torch.float32)(x)).all()


def test_a_packed_copy_that_disagrees_is_not_used():
    net = FCAutoencoderNet(32, [16], 4, 0.0).eval()
    assert isinstance(_PackedNet.build(net, 64), _PackedNet)

    class Off(_PackedNet):
        def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
            out = super().__call__(x)
            return None if out is None else out + 0.1 * out.abs().max()

    assert Off.build(net, 64) is None

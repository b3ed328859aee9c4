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
    assert det._packed() is not None and det._packed().dtype == torch.float16
    module = _module_scores(det, test, monkeypatch)
    np.testing.assert_allclose(packed, module, rtol=1e-3)
    assert not np.array_equal(packed, module)  # the packed path did run, in half precision
    assert list(np.argsort(packed)) == list(np.argsort(module))


def test_values_beyond_float16_are_scored_by_the_float32_module(monkeypatch):
    det, feats = _fitted()
    huge = [feats[0] * 1e6]  # standardised values near 1e6: the packed net overflows float16
    x = (huge[0][:, :16] - det.norm_mean_[:, None]) / det.norm_std_[:, None]
    with torch.inference_mode():
        assert det._packed()(torch.from_numpy(x).reshape(1, -1)) is None
    got = det.score(huge)
    assert np.isfinite(got).all()
    assert got[0] == _module_scores(det, huge, monkeypatch)[0]


def test_a_packed_copy_that_disagrees_is_not_used():
    net = FCAutoencoderNet(32, [16], 4, 0.0).eval()
    assert isinstance(_PackedNet.build(net, 64), _PackedNet)

    class Off(_PackedNet):
        def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
            out = super().__call__(x)
            return None if out is None else out + 0.1 * out.abs().max()

    assert Off.build(net, 64) is None

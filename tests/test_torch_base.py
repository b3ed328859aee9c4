"""The neural detectors' training loop: what it refuses, and what a window set tells a loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.detectors import get_detector, list_detectors
from asdcli.detectors.params import TrainParams
from asdcli.detectors.torch_base import TorchDetector
from asdcli.detectors.windows import WindowSet
from asdcli.errors import SettingsError

NEURAL = [name for name, _ in list_detectors() if issubclass(get_detector(name), TorchDetector)]


def test_every_neural_detector_is_covered():
    assert {"fc-ae", "conv-ae", "lstm-ae", "dcase-ae", "vae", "emb-knn"} <= set(NEURAL)


@pytest.mark.parametrize("name", NEURAL)
def test_zero_epochs_is_refused_before_any_training(name):
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(16, 70)).astype(np.float32) for _ in range(3)]
    det = get_detector(name)(None, TrainParams(epochs=0, device="cpu"))
    with pytest.raises(SettingsError, match="--epochs 0: the neural detectors need at least one"):
        det.fit(feats, None)
    assert not hasattr(det, "module_")  # nothing was built


def test_cli_train_with_zero_epochs_exits_2_and_writes_no_complete_run(tmp_path: Path):
    data = make_dataset(tmp_path / "data", machines=("fan",), n_train=3, n_test=2)
    store, runs = tmp_path / "f.h5", tmp_path / "runs"
    runner = CliRunner()
    done = runner.invoke(app, ["featurize", str(data), "--store", str(store)])
    assert done.exit_code == 0, done.output
    args = ["train", "conv-ae", "--epochs", "0", "--store", str(store), "--runs", str(runs)]
    done = runner.invoke(app, args)
    assert done.exit_code == 2, done.output
    assert "--epochs 0: the neural detectors need at least one epoch" in done.output
    assert "lof, gmm, knn" in done.output
    assert "Traceback" not in done.output
    # Refused before the run folder exists: nothing is left behind.
    assert not runs.exists() or not any(runs.iterdir())


def test_window_sets_know_which_input_clip_each_window_comes_from():
    clips = [np.zeros((2, n), np.float32) for n in (4, 9, 3)]
    ws = WindowSet(clips, length=4, hop=4, ids=np.array([7, 2, 5]))
    # Clip 0: one window; clip 1 (9 frames): starts 0, 4 and 5 (aligned to the end); clip 2:
    # padded to one window.
    assert ws.clip_of.tolist() == [0, 1, 1, 1, 2]
    assert ws.ids_of(np.arange(len(ws))).tolist() == [7, 2, 2, 2, 5]
    assert WindowSet(clips, 4, 4).ids_of(np.array([4, 0])).tolist() == [2, 0]
    with pytest.raises(ValueError, match="3 clips but 2 ids"):
        WindowSet(clips, 4, 4, ids=np.array([0, 1]))


def test_dropout_keeps_1_minus_p_scaled_is_seeded_and_off_in_eval():
    import torch

    from asdcli.detectors.torch_base import Dropout

    drop = Dropout(0.2).train()
    x = torch.ones(64, 8, 32, 16).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(drop(x), a)  # torch's seed fixes the mask
    assert not torch.equal(drop(x), a)  # and each call draws a new one
    kept = a != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.01
    np.testing.assert_allclose(a[kept].numpy(), 65536 / round(0.8 * 65536), rtol=1e-6)
    assert a.is_contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    torch.manual_seed(3)
    drop(x).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, a.detach())  # d/dx (x * mask) = mask
    assert torch.equal(drop.eval()(x), x) and dict(drop.state_dict()) == {}
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 1001, 2**16 + 3])
@pytest.mark.parametrize("seed", [0, 12345, 2**61 + 7])
def test_uint16_draws_are_the_generators_bytes(n: int, seed: int):
    from asdcli.detectors.torch_base import _uint16_draws

    got = _uint16_draws(np.random.default_rng(seed), n)
    want = np.frombuffer(np.random.default_rng(seed).bytes(2 * n), dtype="<u2")
    assert got.shape == (n,) and np.array_equal(got, want)


def test_dropout_masks_are_the_ones_drawn_from_the_generators_bytes():
    """The masks (so conv-ae's training) did not change with the faster draws: the mask of a
    seeded call is the one the bytes of its generator give."""
    import torch

    from asdcli.detectors.torch_base import Dropout

    x = torch.rand(4, 8, 16, 8) + 0.5
    torch.manual_seed(11)
    got = Dropout(0.3).train()(x)
    torch.manual_seed(11)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
    bits = np.frombuffer(rng.bytes(2 * x.numel()), dtype=np.uint16).reshape(x.shape)
    threshold = round(0.7 * 2**16)
    want = x * torch.from_numpy((bits < threshold).astype(np.float32) * (2**16 / threshold))
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    ("shape", "channels_last"),
    [((4, 16, 8, 6), True), ((3, 5, 7, 4), True), ((2, 3, 5, 3), False), ((2, 8, 1, 1), True)],
)
def test_conv_aes_last_layer_is_a_transposed_convolution(shape, channels_last: bool):
    """Same outputs and gradients as nn.ConvTranspose2d with the same parameters (odd sizes,
    a 1x1 input, either memory layout), and the same state_dict keys."""
    import torch
    from torch import nn

    from asdcli.detectors.conv_ae import ToOneChannel

    torch.manual_seed(0)
    layer = ToOneChannel(shape[1])
    ref = nn.ConvTranspose2d(shape[1], 1, 3, stride=2, padding=1, output_padding=1)
    ref.load_state_dict(layer.state_dict())
    assert layer.state_dict().keys() == ref.state_dict().keys()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(*shape).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(shape[0], 1, 2 * shape[2], 2 * shape[3])
    got = layer(x)
    want = ref(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.backward(grad)
    gx, x.grad = x.grad, None
    want.backward(grad)
    torch.testing.assert_close(gx, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_conv_aes_last_layer_passes_gradcheck():
    import torch

    from asdcli.detectors.conv_ae import _ToOneChannel

    torch.manual_seed(1)
    args = (
        torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True),
        torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(1, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(_ToOneChannel.apply, args)


def test_conv_ae_in_place_activations_train_as_out_of_place_ones():
    """conv-ae's LeakyReLUs overwrite their input (the batch norm's output, which nothing else
    needs): the same outputs and gradients as out-of-place ones, seeded dropout included."""
    import copy

    import torch
    from torch import nn

    from asdcli.detectors.conv_ae import ConvAutoencoderNet

    torch.manual_seed(0)
    net = ConvAutoencoderNet(20, 16, [4, 8], 6, dropout=0.3).to(memory_format=torch.channels_last)
    reference = copy.deepcopy(net)
    relus = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert sum(m.inplace for m in relus) == 3  # after the batch norm of each (transposed) conv
    for m in reference.modules():
        if isinstance(m, nn.LeakyReLU):
            m.inplace = False
    x = torch.randn(3, 1, 20, 16).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for model in (net, reference):
        model.train()
        torch.manual_seed(1)  # the same dropout masks
        out = model(x)
        (out - x).square().mean().backward()
        outs.append(out.detach())
        grads.append([p.grad for p in model.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("name", ["conv-ae", "emb-knn"])
def test_channels_last_models_save_contiguous_weights_and_load_to_the_same_scores(
    name, tmp_path: Path
):
    import torch

    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(16, 40)).astype(np.float32) for _ in range(6)]
    small = {"frames": 16, "channels": [4, 8]}
    det = get_detector(name)(small, TrainParams(epochs=1, batch_size=8, device="cpu"))
    clips = None
    if name == "emb-knn":
        from asdcli.naming import ClipInfo

        clips = [ClipInfo(name="x.wav", machine=("fan", "pump")[i % 2]) for i in range(6)]
    det.fit(feats, clips)
    conv = next(p for p in det.module_.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    det.save(tmp_path / "m")
    blob = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert all(t.is_contiguous() for t in blob["model"].values())  # as files were before
    back = type(det).load(tmp_path / "m", device="cpu")
    conv = next(p for p in back.module_.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(back.score(feats, clips), det.score(feats, clips))


def test_training_uses_fused_adam_on_cpu_and_it_trains_like_the_default_adam(monkeypatch):
    import torch

    from asdcli.detectors import torch_base

    made: list[object] = []

    class Recording(torch.optim.Adam):
        def __init__(self, params, **kw):
            made.append(kw.get("fused"))
            super().__init__(params, **kw)

    class Default(torch.optim.Adam):
        def __init__(self, params, **kw):
            kw.pop("fused", None)
            super().__init__(params, **kw)

    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(16, 40)).astype(np.float32) for _ in range(6)]

    def fit(adam: type, lr: float = 1e-3) -> list[np.ndarray]:
        monkeypatch.setattr(torch_base.torch.optim, "Adam", adam)
        small = {"frames": 2, "hidden": [32, 16], "bottleneck": 8}
        det = get_detector("fc-ae")(
            small,
            TrainParams(epochs=1, batch_size=1024, learning_rate=lr, device="cpu", val_split=0),
        )
        det.fit(feats, None)
        return [p.detach().numpy().copy() for p in det.module_.parameters()]

    def gap(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))

    fused, default = fit(Recording), fit(Default)
    assert made == [True]  # the training loop asked for the fused kernel
    # One batch: the same update to float32 rounding, where Adam's first step moves each
    # weight by about the learning rate, so doubling it moves them 1e-3 further. (Over many
    # steps the two drift apart: Adam divides by the gradients' root mean square, which
    # amplifies rounding where that is tiny.)
    assert gap(fused, default) < 1e-6
    assert gap(fused, fit(Default, lr=2e-3)) > 5e-4

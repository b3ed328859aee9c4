"""Training-time augmentation: SpecAugment masks and mixup, resolved from the settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asdcli.detectors.conv_ae import ConvAutoencoder
from asdcli.detectors.params import TrainParams
from asdcli.detectors.windows import WindowSet
from asdcli.settings import load_settings


def det(**train) -> ConvAutoencoder:
    d = ConvAutoencoder({"frames": 16}, TrainParams(device="cpu", **train))
    d._aug_rng = np.random.default_rng(0)
    return d


def test_autoencoders_default_to_no_augmentation_and_settings_override():
    assert det().augmentation() == {"mixup": 0.0, "time_mask": 0, "freq_mask": 0}
    x = torch.randn(4, 8, 16)
    assert det()._spec_augment(x) is x
    (mixed,) = det()._mixup(x)
    perm, lam = det()._mixup_pairs(4)
    assert mixed is x and lam == 1.0
    settings, _ = load_settings(None, {"train.time_mask": 5, "train.mixup": 0.4})
    assert settings.train.time_mask == 5 and settings.train.freq_mask is None


@pytest.mark.parametrize("time_mask, freq_mask", [(6, 0), (0, 3), (6, 3)])
def test_spec_augment_zeroes_one_contiguous_run_per_axis_and_keeps_the_rest(time_mask, freq_mask):
    torch.manual_seed(0)
    x = torch.randn(32, 8, 16) + 10  # no value is 0 before masking
    out = det(time_mask=time_mask, freq_mask=freq_mask)._spec_augment(x)
    zero = out == 0
    assert torch.equal(out[~zero], x[~zero])  # unmasked values untouched
    for w in range(x.shape[0]):
        cols = zero[w].all(dim=0).nonzero().flatten()  # masked frames (whole columns)
        rows = zero[w].all(dim=1).nonzero().flatten()  # masked bands (whole rows)
        assert len(cols) <= time_mask and len(rows) <= freq_mask
        for idx in (cols, rows):
            if len(idx) > 1:
                assert (idx.diff() == 1).all()  # one contiguous run
        # Every zero lies in a masked column or row.
        covered = torch.zeros_like(zero[w])
        covered[:, cols] = True
        covered[rows, :] = True
        assert not (zero[w] & ~covered).any()
    assert zero.any()  # with 32 windows, some mask is non-empty


def test_mixup_blends_each_window_with_a_partner():
    x = torch.randn(6, 4, 5)
    perm, lam = det(mixup=0.5)._mixup_pairs(6)
    (mixed,) = det(mixup=0.5)._mixup(x)  # the same seed draws the same partners and weight
    assert 0 < lam < 1 and sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])


def test_masked_training_reconstructs_the_clean_windows():
    """With SpecAugment the autoencoder's loss targets the unmasked input."""
    d = det(time_mask=8)
    module = d._build_module(8)
    d.module_, d.device_ = module, torch.device("cpu")
    torch.manual_seed(1)
    windows = torch.randn(4, 8, 16)
    torch.manual_seed(2)
    module.eval()
    loss = d._batch_loss(WindowSet(list(windows.numpy()), 16, 16), np.arange(4))
    torch.manual_seed(2)
    noisy = d._spec_augment(windows)
    expected = ((module(noisy.unsqueeze(1)) - windows.unsqueeze(1)) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not torch.equal(noisy, windows)

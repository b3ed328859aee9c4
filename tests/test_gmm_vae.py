"""The ``gmm`` and ``vae`` detectors against hand computations on tiny log-mel arrays.

The registry-wide contract (fit, score, save/load, seeding) lives in ``test_detectors.py``;
these tests check what is specific to each: the mixture's likelihood and parameter count, the
pooling, the VAE's KL and its deterministic scores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from asdcli.detectors import get_detector
from asdcli.detectors.gmm import GMMDetector, n_free_parameters, pool_clips
from asdcli.detectors.params import TrainParams
from asdcli.detectors.vae import VAEDetector, kl_divergence

torch.set_num_threads(2)

TRAIN = TrainParams(
    epochs=3, batch_size=32, learning_rate=3e-3, val_split=0.2, patience=5, seed=0, device="cpu"
)
VAE_SMALL = {"context": 3, "hidden": [16, 8], "latent": 3, "batch_size": 32}
N_MELS = 8
_SHAPE = -40 + 8 * np.cos(np.linspace(0, 2 * np.pi, N_MELS))


def _clips(n: int, seed: int, band: bool = False, n_mels: int = N_MELS) -> list[np.ndarray]:
    """``n`` clips of 12-30 frames: a fixed spectral shape plus unit noise; ``band`` adds a
    strong component that comes and goes in the upper half of the bands."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        frames = int(rng.integers(12, 31))
        x = _SHAPE[:n_mels, None] + rng.normal(0, 1.0, (n_mels, frames))
        if band:
            x[n_mels // 2 :] += 12.0 * (np.sin(np.arange(frames) / 2.0) > 0)
        out.append(x.astype(np.float32))
    return out


def _by_hand_pooled(features: list[np.ndarray]) -> np.ndarray:
    f64 = [f.astype(np.float64) for f in features]
    return np.stack([np.concatenate([f.mean(axis=1), f.std(axis=1)]) for f in f64])


# --- gmm ------------------------------------------------------------------------------------


def test_registry_resolves_both():
    assert get_detector("gmm") is GMMDetector
    assert get_detector("vae") is VAEDetector


def test_gmm_one_full_component_is_the_gaussian_negative_log_density():
    train, test = _clips(12, seed=0, n_mels=2), _clips(5, seed=1, n_mels=2)
    test.append(test[0] + 5.0)  # far from the training data
    reg = 1e-3
    det = GMMDetector({"n_components": 1, "covariance_type": "full", "reg_covar": reg}, TRAIN)
    det.fit(train, None)

    pooled = _by_hand_pooled(train)
    # The detector keeps float32 statistics (detector.json round-trips them exactly).
    mean = pooled.mean(axis=0).astype(np.float32)
    std = pooled.std(axis=0).astype(np.float32)
    z_train = (pooled - mean) / std
    z_test = (_by_hand_pooled(test) - mean) / std
    # One component: EM gives the sample mean and the biased sample covariance (+ reg_covar).
    cov = np.cov(z_train, rowvar=False, bias=True) + reg * np.eye(4)
    gauss = multivariate_normal(z_train.mean(axis=0), cov)

    np.testing.assert_allclose(det.train_scores_, -gauss.logpdf(z_train), rtol=1e-7)
    scores = det.score(test)
    np.testing.assert_allclose(scores, -gauss.logpdf(z_test), rtol=1e-7)
    assert scores[-1] > scores[:-1].max()  # higher = more anomalous


@pytest.mark.parametrize(
    ("covariance_type", "expected"),
    # k = 3 components, d = 6 (3 mels x mean, std): 2 weights + 18 means + covariances.
    [("full", 2 + 18 + 3 * 21), ("tied", 2 + 18 + 21), ("diag", 2 + 18 + 18), ("spherical", 23)],
)
def test_gmm_counts_free_parameters(covariance_type, expected):
    train = _clips(20, seed=2, n_mels=3)
    det = GMMDetector({"n_components": 3, "covariance_type": covariance_type}, TRAIN)
    det.fit(train, None)
    assert det.n_params_ == expected == n_free_parameters(3, 6, covariance_type)
    # Cross-check with scikit-learn's public BIC = -2 log L + n_params log n.
    z = det._vectors(train)
    n = len(train)
    mixture = GaussianMixture(3, covariance_type=covariance_type, reg_covar=1e-3, random_state=0)
    mixture.fit(z)
    from_bic = (mixture.bic(z) + 2 * mixture.score(z) * n) / np.log(n)
    assert from_bic == pytest.approx(expected)


def test_gmm_mean_std_max_pooling():
    clip = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]], dtype=np.float32)
    expected = [2.0, 2.0, np.sqrt(2 / 3), np.sqrt(8.0), 3.0, 6.0]
    np.testing.assert_allclose(pool_clips([clip], "mean_std_max")[0], expected, rtol=1e-6)
    np.testing.assert_allclose(pool_clips([clip], "mean_std")[0], expected[:4], rtol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        pool_clips([clip], "median")

    det = GMMDetector({"pooling": "mean_std_max"}, TRAIN).fit(_clips(10, seed=3), None)
    assert det.norm_mean_.shape == det.norm_std_.shape == (3 * N_MELS,)
    assert det.means_.shape == (2, 3 * N_MELS)
    assert det.score(_clips(3, seed=4)).shape == (3,)


def test_gmm_fits_two_clips_and_is_seeded():
    train, test = _clips(2, seed=5), _clips(4, seed=6)
    det = GMMDetector({"n_components": 5}, TRAIN).fit(train, None)
    assert det.weights_.shape == (2,)  # clipped to the training clips
    assert np.isfinite(det.score(test)).all()
    again = GMMDetector({"n_components": 5}, TRAIN).fit(train, None)
    np.testing.assert_array_equal(again.score(test), det.score(test))
    with pytest.raises(ValueError, match="at least 2"):
        GMMDetector(None, TRAIN).fit(train[:1], None)


def test_gmm_scores_a_band_anomaly_higher():
    det = GMMDetector({"pooling": "mean_std_max"}, TRAIN).fit(_clips(20, seed=7), None)
    normal = det.score(_clips(6, seed=8))
    anomalous = det.score(_clips(6, seed=9, band=True))
    assert anomalous.min() > normal.max()


# --- vae ------------------------------------------------------------------------------------


def test_kl_divergence():
    zeros = torch.zeros(2, 3)
    np.testing.assert_array_equal(kl_divergence(zeros, zeros).numpy(), [0.0, 0.0])
    # mu = 1, var = 1: 0.5 per latent dimension.
    assert kl_divergence(torch.ones(1, 4), torch.zeros(1, 4)).item() == pytest.approx(2.0)
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros(5, 3), torch.ones(5, 3))
    expected = torch.distributions.kl_divergence(posterior, prior).sum(dim=1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)


def _by_hand_vae(det: VAEDetector, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window ``(recon, KL)`` in float64 from the module's weights (hop 1, no padding)."""
    w = {k: v.double().numpy() for k, v in det.module_.state_dict().items()}

    def linear(a: np.ndarray, name: str) -> np.ndarray:
        return a @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def relu(a: np.ndarray) -> np.ndarray:
        return np.maximum(a, 0.0)

    x = (clip.astype(np.float64) - det.norm_mean_[:, None]) / det.norm_std_[:, None]
    context = det.params.context
    # Frame after frame: vector t holds frames t, t + 1, ... each with all mel bands.
    vectors = np.stack([x[:, t : t + context].T.ravel() for t in range(x.shape[1] - context + 1)])
    h = relu(linear(relu(linear(vectors, "encoder.0")), "encoder.2"))  # hidden [16, 8]
    mu, logvar = linear(h, "mu"), linear(h, "logvar")
    d = relu(linear(relu(linear(mu, "decoder.0")), "decoder.2"))  # z = mu
    x_hat = linear(d, "decoder.4")
    recon = ((vectors - x_hat) ** 2).mean(axis=1)
    kl = 0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar).sum(axis=1)
    return recon, kl


def test_vae_scores_are_deterministic_and_match_a_hand_computation():
    det = VAEDetector({**VAE_SMALL, "beta": 0.7}, TRAIN).fit(_clips(8, seed=10), None)
    clip = _clips(1, seed=11)[0]
    dim = N_MELS * det.params.context
    recon, kl = _by_hand_vae(det, clip)

    elbo = det.score([clip])
    torch.manual_seed(123)  # scoring draws no random numbers
    np.testing.assert_array_equal(det.score([clip]), elbo)
    np.testing.assert_allclose(elbo, [np.mean(recon + 0.7 * kl / dim)], rtol=1e-5)

    det.params.score = "recon"
    recon_score = det.score([clip])
    np.testing.assert_allclose(recon_score, [recon.mean()], rtol=1e-5)
    np.testing.assert_allclose(elbo - recon_score, [0.7 * kl.mean() / dim], rtol=1e-4)
    assert (kl > 0).all()


def test_vae_training_loss_is_sampled_and_eval_is_not():
    det = VAEDetector(VAE_SMALL, TRAIN).fit(_clips(6, seed=12), None)
    x = torch.randn(4, N_MELS * det.params.context)
    module = det.module_
    with torch.no_grad():
        module.eval()
        torch.testing.assert_close(det._errors(module, x), det._errors(module, x), rtol=0, atol=0)
        module.train()
        assert not torch.equal(det._errors(module, x), det._errors(module, x))
    module.eval()


def test_vae_augmentation_reaches_the_loss():
    clips = _clips(10, seed=13)
    plain = VAEDetector(VAE_SMALL, TRAIN).fit(clips, None)
    mixed = VAEDetector(VAE_SMALL, TRAIN.model_copy(update={"mixup": 0.4})).fit(clips, None)
    again = VAEDetector(VAE_SMALL, TRAIN.model_copy(update={"mixup": 0.4})).fit(clips, None)
    # mixup draws from its own RNG, so only a loss that uses it can change the model.
    assert mixed.history_[0]["loss"] != plain.history_[0]["loss"]
    assert mixed.history_ != plain.history_
    np.testing.assert_array_equal(mixed.train_scores_, again.train_scores_)
    assert all(np.isfinite(row["val_loss"]) for row in mixed.history_)


def test_vae_scores_a_band_anomaly_higher():
    train = TRAIN.model_copy(update={"epochs": 5})
    det = VAEDetector(VAE_SMALL, train).fit(_clips(16, seed=14), None)
    normal = det.score(_clips(6, seed=15))
    anomalous = det.score(_clips(6, seed=16, band=True))
    assert anomalous.min() > normal.max()

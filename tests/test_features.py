"""The log-mel front end against an independent NumPy implementation of the same definition,
and against torchaudio's MelSpectrogram, which it replaces."""

import numpy as np
import pytest

from asdcli.features import logmel, mel_filterbank, n_frames
from asdcli.settings import FeatureSettings


def _hz_to_mel(f):  # Slaney: linear below 1 kHz, logarithmic above
    f = np.asarray(f, dtype=np.float64)
    lin = 3.0 * f / 200.0
    log = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), 200.0 * m / 3.0)


def reference_logmel(x: np.ndarray, fs: FeatureSettings) -> np.ndarray:
    """float64 NumPy: centred constant-padded frames, periodic Hann, Slaney mel, fixed dB floor."""
    n_fft, hop = fs.n_fft, fs.hop_length
    xp = np.pad(x.astype(np.float64), n_fft // 2)
    count = 1 + (xp.size - n_fft) // hop
    frames = np.stack([xp[i * hop : i * hop + n_fft] for i in range(count)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, bins)
    freqs = np.linspace(0, fs.sample_rate / 2, n_fft // 2 + 1)
    f_max = fs.f_max or fs.sample_rate / 2
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fs.f_min), _hz_to_mel(f_max), fs.n_mels + 2))
    fb = np.zeros((fs.n_mels, freqs.size))
    for m in range(fs.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        tri = np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid))
        fb[m] = np.maximum(0.0, tri) * 2.0 / (hi - lo)
    mel = fb @ power.T
    return 10.0 * np.log10(np.maximum(mel, 1e-10))


@pytest.mark.parametrize("n_mels, n_fft, hop", [(128, 1024, 512), (64, 512, 256)])
def test_logmel_matches_reference_to_a_thousandth_of_a_db(n_mels, n_fft, hop):
    fs = FeatureSettings(n_mels=n_mels, n_fft=n_fft, hop_length=hop)
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    x = 0.1 * rng.standard_normal(t.size) + 0.5 * np.sin(2 * np.pi * 440 * t)
    ours = logmel(x.astype(np.float32), fs)
    ref = reference_logmel(x.astype(np.float32), fs)
    assert ours.shape == ref.shape == (n_mels, n_frames(t.size, fs))
    assert np.max(np.abs(ours - ref)) < 1e-3


def test_silence_sits_on_the_fixed_floor_and_level_is_absolute():
    fs = FeatureSettings()
    assert np.all(logmel(np.zeros(8000, np.float32), fs) == -100.0)
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    # Not normalised to the clip maximum: 20 dB more signal is 20 dB more everywhere.
    diff = logmel(10 * x, fs) - logmel(x, fs)
    assert np.allclose(diff, 20.0, atol=1e-3)


def test_batch_equals_one_by_one_and_snippet_agrees_with_whole_clip():
    fs = FeatureSettings(n_mels=32)
    rng = np.random.default_rng(2)
    batch = rng.standard_normal((3, 16000)).astype(np.float32)
    together = logmel(batch, fs)
    assert together.dtype == np.float32 and together.flags.c_contiguous
    for i in range(3):
        np.testing.assert_array_equal(together[i], logmel(batch[i], fs))  # bit for bit
    whole = logmel(batch[0], fs)
    part = logmel(batch[0][: 512 * 20], fs)
    # Interior frames (away from the padded edge) do not depend on the clip's length.
    np.testing.assert_allclose(part[:, 2:15], whole[:, 2:15], atol=1e-3)


TORCHAUDIO_CASES = [
    {},
    {"n_mels": 64, "n_fft": 512, "hop_length": 256},
    {"mel_scale": "htk", "mel_norm": "none"},
    {"win_length": 400, "pad_mode": "reflect"},
    {"center": False, "power": 1.0},
    {"f_min": 50.0, "f_max": 7000.0, "n_mels": 40},
    {"sample_rate": 22050, "n_fft": 2048, "hop_length": 441, "db_floor": -80.0},
]


@pytest.mark.parametrize("update", TORCHAUDIO_CASES)
def test_matches_torchaudio_melspectrogram(update):
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    fs = FeatureSettings(**update)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=fs.sample_rate,
        n_fft=fs.n_fft,
        win_length=fs.win_length,
        hop_length=fs.hop_length,
        f_min=fs.f_min,
        f_max=fs.f_max,
        n_mels=fs.n_mels,
        window_fn=torch.hann_window,
        power=fs.power,
        center=fs.center,
        pad_mode=fs.pad_mode,
        norm="slaney" if fs.mel_norm == "slaney" else None,
        mel_scale=fs.mel_scale,
    )
    fb = mel.mel_scale.fb.numpy()  # torch computes it in float32
    np.testing.assert_allclose(mel_filterbank(fs), fb, atol=2e-5 * fb.max())
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal((2, fs.sample_rate))).astype(np.float32)
    scale = 20.0 / fs.power
    amin = 10.0 ** (fs.db_floor / scale)
    with torch.inference_mode():
        ref = scale * torch.log10(torch.clamp(mel(torch.from_numpy(x)), min=amin)).numpy()
    ours = logmel(x, fs)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_results_are_independent_across_calls_threads_and_shapes():
    """logmel reuses per-thread work arrays: no result may share them or another's."""
    from concurrent.futures import ThreadPoolExecutor

    fs = FeatureSettings(n_mels=32)
    rng = np.random.default_rng(4)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (16000, 8000, 16000, 12345)]
    expected = [logmel(x, fs).copy() for x in clips]
    first = logmel(clips[0], fs)
    logmel(clips[2], fs)  # same shape: the same work arrays
    np.testing.assert_array_equal(first, expected[0])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: logmel(x, fs), clips * 8))
    for got, want in zip(results, expected * 8, strict=True):
        np.testing.assert_array_equal(got, want)


def test_scipy_kernels_load_without_importing_scipy_and_match_its_public_api():
    """featurize's start-up: the FFT and sparse product come from SciPy's extension modules,
    without importing scipy.fft/scipy.sparse (0.25 s); the results are SciPy's."""
    import subprocess
    import sys

    code = (
        "import sys; from asdcli.features import kernels; print(kernels()[2]); "
        "print(sorted(m for m in sys.modules if m in ('scipy.fft', 'scipy.sparse', 'scipy'))); "
        "print(sorted(m for m in sys.modules if m in ('numpy.fft', 'numpy.random')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["scipy extension modules", "[]", "[]"]

    import scipy.fft
    import scipy.sparse

    from asdcli.features import _csr, kernels

    rfft, spmm, _ = kernels()
    x = np.random.default_rng(3).standard_normal((2, 5, 64)).astype(np.float32)
    np.testing.assert_array_equal(rfft(x), scipy.fft.rfft(x, axis=-1))
    dense = np.where(np.random.default_rng(4).random((6, 33)) < 0.2, 1.5, 0.0).astype(np.float32)
    dense[2] = 0.0  # an empty row
    b = np.random.default_rng(5).random((33, 7)).astype(np.float32)
    np.testing.assert_allclose(spmm(_csr(dense), b), scipy.sparse.csr_matrix(dense) @ b, rtol=1e-6)


def test_the_kernel_check_rejects_a_routine_that_disagrees():
    """A SciPy whose private routines changed meaning falls back to its public API: the check
    that decides it fails on a slightly wrong FFT or sparse product."""
    from asdcli.features import _check, kernels

    rfft, spmm, _ = kernels()
    _check(rfft, spmm)  # the real ones pass
    with pytest.raises(ValueError, match="pocketfft"):
        _check(lambda x: rfft(x) * 1.001 + 1e-3, spmm)
    with pytest.raises(ValueError, match="csr_matvecs"):
        _check(rfft, lambda csr, x: spmm(csr, x) + 1e-3)
    with pytest.raises(ValueError, match="pocketfft"):
        _check(lambda x: rfft(x[:, ::-1].copy()), spmm)  # a transposed layout, not a scale

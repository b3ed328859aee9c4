"""The log-mel front end: one module, one definition.

``logmel`` is the definition used everywhere: power spectrogram (periodic Hann window, ``center``
padding with ``pad_mode``), mel filter bank (``mel_scale``/``mel_norm``, librosa's defaults as in
the DCASE baseline), then ``dB = 20 / power * log10(max(mel, amin))`` with ``amin`` set so
that the floor is exactly ``db_floor`` dB. The floor is fixed, never relative to a clip's maximum,
so a snippet and the whole clip agree frame by frame.

It is computed with NumPy and SciPy in float32 and matches torchaudio's ``MelSpectrogram`` (same
window, padding and filter bank) to about 1e-4 dB; ``tests/test_features.py`` checks both that
and an independent float64 reference. Not using torch keeps featurize light: importing torch
takes a process 1-2 s and 600 MB, as long as featurizing a thousand clips, and this front end
is 2x faster than torchaudio's on the CPU. The mel filter bank is sparse (about two non-zero
weights per FFT bin), so it is applied as a sparse matrix, ten times faster than the dense
product. The FFT and the sparse product are SciPy's compiled routines, loaded without importing
``scipy.fft`` and ``scipy.sparse`` (see :func:`kernels`).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from asdcli.settings import FeatureSettings

# (x float32 (..., n) -> complex64 (..., n // 2 + 1), CSR (indptr, indices, data, n_cols) and
# dense x (n_cols, k) float32 -> (n_rows, k) float32)
RFFT = Callable[[np.ndarray], np.ndarray]
SPMM = Callable[[tuple[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray], np.ndarray]


def _extension(package: Any, relative: str, name: str) -> Any:
    """Load the compiled module ``<package>/<relative>/<name>.*.so`` on its own."""
    folder = Path(package.origin).parent / relative
    (path,) = folder.glob(f"{name}.*.so")
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def kernels() -> tuple[RFFT, SPMM, str]:
    """The two compiled routines a log-mel needs: SciPy's float32 FFT (NumPy's is 8x slower in
    float32) and its sparse-times-dense product; and where they came from.

    They are loaded straight from SciPy's extension modules: importing ``scipy.fft`` and
    ``scipy.sparse`` costs 0.25 s (scipy.special, the array-API layer and most of NumPy's
    submodules), half the start-up of ``asd featurize``, for two functions. A SciPy whose
    private layout differs is noticed here (each routine is checked against NumPy once) and
    then the public functions are used: the results are the same, only the import is slower.
    """
    try:
        scipy_spec = importlib.util.find_spec("scipy")  # locates scipy without importing it
        assert scipy_spec is not None and scipy_spec.origin is not None
        pocketfft = _extension(scipy_spec, "fft/_pocketfft", "pypocketfft")
        sparsetools = _extension(scipy_spec, "sparse", "_sparsetools")

        def rfft(x: np.ndarray) -> np.ndarray:
            out: np.ndarray = pocketfft.r2c(x, (x.ndim - 1,), True, 0, None, 1)
            return out

        def spmm(csr: tuple[np.ndarray, np.ndarray, np.ndarray, int], x: np.ndarray) -> np.ndarray:
            indptr, indices, data, n_cols = csr
            out = np.zeros((len(indptr) - 1, x.shape[1]), dtype=np.float32)
            sparsetools.csr_matvecs(
                len(indptr) - 1, n_cols, x.shape[1], indptr, indices, data, x.ravel(), out.ravel()
            )
            return out

        _check(rfft, spmm)
        return rfft, spmm, "scipy extension modules"
    except Exception:  # another SciPy layout: the public API, same results
        import scipy.fft
        import scipy.sparse

        def public_rfft(x: np.ndarray) -> np.ndarray:
            out: np.ndarray = scipy.fft.rfft(x, axis=-1)
            return out

        def public_spmm(
            csr: tuple[np.ndarray, np.ndarray, np.ndarray, int], x: np.ndarray
        ) -> np.ndarray:
            indptr, indices, data, n_cols = csr
            m = scipy.sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_cols))
            return np.asarray(m @ x, dtype=np.float32)

        return public_rfft, public_spmm, "scipy.fft and scipy.sparse"


def _check(rfft: RFFT, spmm: SPMM) -> None:
    """Raise unless both routines agree with a plain computation on a small fixed case (a DFT
    as a matrix product: numpy.fft and numpy.random would add 9 ms to every start-up)."""
    x = np.sin(np.arange(48, dtype=np.float64).reshape(3, 16) * 0.37 + 0.1)
    k = np.arange(9)[:, None] * np.arange(16)[None, :]
    dft = x @ np.exp(-2j * np.pi * k / 16).T
    if not np.allclose(rfft(x.astype(np.float32)), dft, atol=1e-4):
        raise ValueError("pocketfft r2c disagrees with the DFT")
    pattern = (np.arange(64).reshape(4, 16) * 7) % 10
    dense = np.where(pattern < 3, np.cos(pattern + 1.0), 0).astype(np.float32)
    xt = x.T.astype(np.float32)
    if not np.allclose(spmm(_csr(dense), xt.copy()), dense @ xt, atol=1e-5):
        raise ValueError("csr_matvecs disagrees with a dense product")


def _csr(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``dense`` (rows, cols) as CSR arrays (indptr, indices, data) and its column count."""
    rows, cols = np.nonzero(dense)
    indptr = np.searchsorted(rows, np.arange(dense.shape[0] + 1)).astype(np.int32)
    return indptr, cols.astype(np.int32), dense[rows, cols].astype(np.float32), dense.shape[1]


def n_frames(n_samples: int, fs: FeatureSettings) -> int:
    """Frames of a clip of ``n_samples`` samples."""
    if fs.center:
        return 1 + n_samples // fs.hop_length
    return 1 + (n_samples - fs.n_fft) // fs.hop_length


def min_samples(fs: FeatureSettings) -> int:
    """The shortest clip that gives at least one full analysis window."""
    return fs.n_fft


def _hz_to_mel(f: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above.
    log = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, 3.0 * f / 200.0)


def _mel_to_hz(m: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, 200.0 * m / 3.0)


def mel_filterbank(fs: FeatureSettings) -> np.ndarray:
    """Triangular mel filters, float32 ``(n_fft // 2 + 1, n_mels)``; torchaudio's
    ``melscale_fbanks`` (and librosa's ``filters.mel`` for the Slaney settings)."""
    n_freqs = fs.n_fft // 2 + 1
    nyquist = fs.rate // 2  # a native rate must be resolved first (FeatureSettings.at_rate)
    f_max = fs.f_max if fs.f_max is not None else float(nyquist)
    freqs = np.linspace(0.0, nyquist, n_freqs)
    lo, hi = _hz_to_mel(np.array([fs.f_min, f_max], dtype=np.float64), fs.mel_scale)
    mels = np.linspace(lo, hi, fs.n_mels + 2)
    pts = _mel_to_hz(mels, fs.mel_scale)  # (n_mels + 2,) filter edges and centres in Hz
    diff = np.diff(pts)
    slopes = pts[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    if fs.mel_norm == "slaney":
        fb *= 2.0 / (pts[2:] - pts[:-2])  # equal area per filter
    return fb.astype(np.float32)


# Inputs up to this many samples keep their workspace (about 25 bytes per sample) for the next
# call: 2**21 samples, 2 minutes at 16 kHz.
KEEP_WORKSPACE_SAMPLES = 2**21


class _Workspace:
    """Arrays one log-mel call of a given input shape writes into, reused call after call.

    Not only to save allocations: glibc hands the few MB of temporaries a 10-s clip needs back
    to the OS when they are freed and the next call faults them in again as zeroed pages, which
    made a log-mel 3x slower (2.5 ms instead of 0.8 on the benchmark machine).
    """

    def __init__(self, fs: FeatureSettings, batch: int, samples: int):
        half = fs.n_fft // 2 if fs.center else 0
        self.shape = (batch, samples)
        self.padded = np.zeros((batch, samples + 2 * half), dtype=np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(self.padded, fs.n_fft, axis=1)
        self.frames = frames[:, :: fs.hop_length]  # (batch, n_frames, n_fft), a view
        count = self.frames.shape[1]
        n_freqs = fs.n_fft // 2 + 1
        self.windowed = np.empty((batch, count, fs.n_fft), dtype=np.float32)
        self.power = np.empty((batch, count, n_freqs), dtype=np.float32)
        self.imag2 = np.empty((batch, count, n_freqs), dtype=np.float32)
        self.bins = np.empty((n_freqs, batch * count), dtype=np.float32)


class _FrontEnd:
    """The settings turned into arrays once: window and transposed sparse filter bank."""

    def __init__(self, fs: FeatureSettings):
        self.fs = fs
        win_length = fs.win_length or fs.n_fft
        # Periodic Hann, centred in n_fft samples when shorter (as torch.stft pads it).
        hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
        self.window = np.zeros(fs.n_fft, dtype=np.float32)
        left = (fs.n_fft - win_length) // 2
        self.window[left : left + win_length] = hann
        self.filters = _csr(mel_filterbank(fs).T)  # (n_mels, n_freqs), sparse
        self.rfft, self.spmm, _ = kernels()
        # dB = 20 / power * log10(mel), computed as a natural log times a constant: NumPy's
        # float32 log is vectorised and log10 is not (0.07 ms against 0.25 for a 10-s clip).
        self.scale = np.float32(20.0 / fs.power / np.log(10.0))
        self.amin = np.float32(10.0 ** (fs.db_floor / (20.0 / fs.power)))
        self.floor = np.float32(fs.db_floor)
        self.log_amin = np.log(self.amin)
        self._local = threading.local()  # one workspace per thread: calls may run in parallel

    def _workspace(self, batch: int, samples: int) -> _Workspace:
        work: _Workspace | None = getattr(self._local, "work", None)
        if work is None or work.shape != (batch, samples):
            work = _Workspace(self.fs, batch, samples)
            if batch * samples <= KEEP_WORKSPACE_SAMPLES:  # not kept: a one-off long recording
                self._local.work = work
        return work

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """``(batch, time)`` float32 -> ``(batch, n_mels, frames)`` float32 dB."""
        fs = self.fs
        batch, samples = wave.shape
        w = self._workspace(batch, samples)
        half = fs.n_fft // 2 if fs.center else 0
        if half and fs.pad_mode == "reflect":
            w.padded[:] = np.pad(wave, ((0, 0), (half, half)), mode="reflect")
        else:
            w.padded[:, half : half + samples] = wave  # the zero edges stay zero
        count = w.frames.shape[1]
        np.multiply(w.frames, self.window, out=w.windowed)
        spec = self.rfft(w.windowed)  # (batch, n_frames, n_freqs) complex64
        np.square(spec.real, out=w.power)
        np.square(spec.imag, out=w.imag2)
        w.power += w.imag2
        if fs.power != 2.0:
            w.power **= fs.power / 2.0
        # Sparse (n_mels, n_freqs) @ (n_freqs, batch * frames): the bins must be the rows.
        np.copyto(w.bins, w.power.reshape(batch * count, -1).T)
        mel = self.spmm(self.filters, w.bins)  # (n_mels, batch * frames)
        np.maximum(mel, self.amin, out=mel)
        np.log(mel, out=mel)
        # Relative to the floor's log, so that the floor itself is exact (silence is -100 dB).
        mel -= self.log_amin
        np.maximum(mel, 0.0, out=mel)  # float32 rounding may land just below the floor
        mel *= self.scale
        mel += self.floor
        return mel.reshape(-1, batch, count).transpose(1, 0, 2)


@lru_cache(maxsize=4)
def _front_end(settings_json: str) -> _FrontEnd:
    return _FrontEnd(FeatureSettings.model_validate_json(settings_json))


def logmel(wave: np.ndarray, fs: FeatureSettings) -> np.ndarray:
    """Log-mel spectrogram.

    Parameters
    ----------
    wave : float32 (time,) or (batch, time) at ``fs.sample_rate`` (a rate in Hz, not native).

    Returns
    -------
    float32 (n_mels, frames) or (batch, n_mels, frames), in dB, C-contiguous.

    A batch is computed with one FFT call, but on a machine with a small cache one 10-s clip
    at a time is as fast (see ``benchmarks``); batching pays for short clips.
    """
    x = np.asarray(wave, dtype=np.float32)
    out = _front_end(fs.model_dump_json())(x.reshape(-1, x.shape[-1]))
    out = np.ascontiguousarray(out)
    return out[0] if x.ndim == 1 else out

"""The log-mel front end: one module, one definition.

``logmel`` is the definition used everywhere: power spectrogram (periodic Hann window, ``center``
padding with ``pad_mode``), mel filter bank (``mel_scale``/``mel_norm``, librosa's defaults as in
the DCASE baseline), then ``dB = 20 / power * log10(max(mel, amin))`` with ``amin`` set so
that the floor is exactly ``db_floor`` dB. The floor is fixed, never relative to a clip's maximum,
so a snippet and the whole clip agree frame by frame.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from asdcli.settings import FeatureSettings

if TYPE_CHECKING:
    import torch


def n_frames(n_samples: int, fs: FeatureSettings) -> int:
    """Frames of a clip of ``n_samples`` samples."""
    if fs.center:
        return 1 + n_samples // fs.hop_length
    return 1 + (n_samples - fs.n_fft) // fs.hop_length


def min_samples(fs: FeatureSettings) -> int:
    """The shortest clip that gives at least one full analysis window."""
    return fs.n_fft


def _build(fs: FeatureSettings) -> torch.nn.Module:
    import torch
    import torchaudio

    class LogMel(torch.nn.Module):
        """(..., time) float32 waveform -> (..., n_mels, frames) float32 dB."""

        def __init__(self) -> None:
            super().__init__()
            self.mel = torchaudio.transforms.MelSpectrogram(
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
            self.scale = 20.0 / fs.power
            self.amin = 10.0 ** (fs.db_floor / self.scale)

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            return self.scale * torch.log10(torch.clamp(self.mel(wave), min=self.amin))

    return LogMel().eval()


@lru_cache(maxsize=4)
def _module(settings_json: str) -> torch.nn.Module:
    return _build(FeatureSettings.model_validate_json(settings_json))


def logmel(wave: np.ndarray, fs: FeatureSettings) -> np.ndarray:
    """Log-mel spectrogram.

    Parameters
    ----------
    wave : float32 (time,) or (batch, time) at ``fs.sample_rate``.

    Returns
    -------
    float32 (n_mels, frames) or (batch, n_mels, frames), in dB.
    """
    import torch

    module = _module(fs.model_dump_json())
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy()

"""Cutting clips into fixed-length windows, and pooling clips into vectors (numpy only).

Windows cover every frame of a clip: starts step by ``hop`` and a last window is aligned to
the clip's end when the steps miss it. A clip shorter than one window is padded by repeating
it along time (a machine sound is roughly stationary, so repetition adds no edge that zeros or
reflection would); the padded clip gives exactly one window.
"""

from __future__ import annotations

import numpy as np


def repeat_pad(x: np.ndarray, length: int) -> np.ndarray:
    """``(n_mels, frames)`` -> ``(n_mels, max(frames, length))``, tiling the clip along time."""
    frames = x.shape[1]
    if frames >= length:
        return x
    reps = -(-length // frames)
    return np.tile(x, (1, reps))[:, :length]


def window_starts(frames: int, length: int, hop: int) -> np.ndarray:
    """Start frames of the windows that cover a ``frames``-long (padded) clip, ``(n_windows,)``."""
    if frames <= length:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, frames - length + 1, hop, dtype=np.int64)
    if starts[-1] != frames - length:
        starts = np.append(starts, frames - length)
    return starts


class WindowSet:
    """Every window of a list of clips, gathered on demand from one concatenated array.

    Windows are not materialised (dcase-ae has one per frame); :meth:`gather` fancy-indexes
    a batch out of ``data``, shape ``(n_mels, total_frames)``.

    Parameters
    ----------
    clips
        Standardised float32 ``(n_mels, frames)`` arrays.
    length, hop
        Window length and hop in frames.
    ids
        The caller's number of each clip, ``(n_clips,)`` (default ``0 .. n_clips - 1``): the
        training loop gives a subset of ``fit``'s clips their index there, so window ``i``
        comes from clip ``ids[clip_of[i]]`` of ``fit``'s input.
    """

    def __init__(
        self, clips: list[np.ndarray], length: int, hop: int, ids: np.ndarray | None = None
    ) -> None:
        padded = [repeat_pad(c, length) for c in clips]
        offsets = np.cumsum([0] + [p.shape[1] for p in padded[:-1]])
        starts = [
            window_starts(p.shape[1], length, hop) + o for p, o in zip(padded, offsets, strict=True)
        ]
        self.data = np.ascontiguousarray(np.concatenate(padded, axis=1), dtype=np.float32)
        self.starts = np.concatenate(starts)
        self.clip_of = np.repeat(np.arange(len(clips)), [len(s) for s in starts])
        self.n_clips = len(clips)
        self.ids = np.arange(len(clips)) if ids is None else np.asarray(ids, dtype=np.int64)
        if self.ids.shape != (len(clips),):
            raise ValueError(f"{len(clips)} clips but {self.ids.size} ids")
        self.length = length
        self._steps = np.arange(length)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Windows ``idx`` as a float32 array ``(len(idx), n_mels, length)``."""
        cols = self.starts[idx][:, None] + self._steps  # (B, length)
        return np.ascontiguousarray(self.data[:, cols].transpose(1, 0, 2))

    def ids_of(self, idx: np.ndarray) -> np.ndarray:
        """The :attr:`ids` of the clips that windows ``idx`` come from, ``(len(idx),)``."""
        ids: np.ndarray = self.ids[self.clip_of[idx]]
        return ids

    def clip_means(self, values: np.ndarray) -> np.ndarray:
        """Average per-window ``values`` ``(n_windows,)`` over each clip's windows ->
        ``(n_clips,)`` float64."""
        sums = np.bincount(self.clip_of, weights=values, minlength=self.n_clips)
        counts = np.bincount(self.clip_of, minlength=self.n_clips)
        return sums / counts


def pool_mean_std(features: list[np.ndarray]) -> np.ndarray:
    """Per-clip vector: mean over time of each mel band, then std over time of each band.

    ``n_clips x (n_mels, frames)`` -> ``(n_clips, 2 * n_mels)`` float64.
    """
    out = np.empty((len(features), 2 * features[0].shape[0]), dtype=np.float64)
    for i, f in enumerate(features):
        f64 = f.astype(np.float64)
        out[i] = np.concatenate([f64.mean(axis=1), f64.std(axis=1)])
    return out

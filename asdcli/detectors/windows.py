"""Cutting clips into fixed-length windows, and pooling clips into vectors (numpy only).

Windows cover every frame of a clip: starts step by ``hop`` and a last window is aligned to
the clip's end when the steps miss it. A clip shorter than one window is padded by repeating
it along time (a machine sound is roughly stationary, so repetition adds no edge that zeros or
reflection would); the padded clip gives exactly one window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class LazyClips(Protocol):
    """Clips read on access (:class:`asdcli.store.StoredClips` is one): ``clips[i]`` is float32
    ``(n_mels, frames)``, ``lengths`` ``(n_clips,)`` their frames without a read, and
    ``window(i, start, length)`` reads only frames ``start : start + length`` of clip ``i``."""

    lengths: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...

    def window(self, i: int, start: int, length: int) -> np.ndarray: ...


class LazySubset(Sequence[np.ndarray]):
    """Clips ``index`` ``(n,)`` of a :class:`LazyClips`, itself lazy (nothing is read)."""

    def __init__(self, clips: LazyClips, index: np.ndarray) -> None:
        self._clips = clips
        self._index = np.asarray(index, dtype=np.int64)
        self.lengths = np.asarray(clips.lengths)[self._index]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self._clips[int(self._index[i])]

    def window(self, i: int, start: int, length: int) -> np.ndarray:
        return self._clips.window(int(self._index[i]), start, length)


def subset(clips: Sequence[np.ndarray], index: np.ndarray) -> Sequence[np.ndarray]:
    """Clips ``index`` of ``clips``: a list of the same arrays, or a :class:`LazySubset`."""
    if isinstance(clips, LazyClips):
        return LazySubset(clips, index)
    return [clips[int(i)] for i in index]


Norm = tuple[np.ndarray, np.ndarray]  # per-mel (mean, std), each (n_mels,) float32


class WindowSet:
    """Every window of a list of clips, gathered on demand.

    Windows are not materialised (dcase-ae has one per frame); :meth:`gather` cuts a batch
    ``(B, n_mels, length)``. In-memory clips are standardised once into one concatenated
    array ``data`` ``(n_mels, total_frames)`` that :meth:`gather` fancy-indexes. A
    :class:`LazyClips` source is never held: :meth:`gather` reads each window's frames and
    standardises the batch, so memory stays one batch whatever the number of clips; the
    values are the same bit for bit (the same float32 operations on each element).

    Parameters
    ----------
    clips
        float32 ``(n_mels, frames)`` arrays, or a :class:`LazyClips`.
    length, hop
        Window length and hop in frames.
    ids
        The caller's number of each clip, ``(n_clips,)`` (default ``0 .. n_clips - 1``): the
        training loop gives a subset of ``fit``'s clips their index there, so window ``i``
        comes from clip ``ids[clip_of[i]]`` of ``fit``'s input.
    norm
        Per-mel ``(mean, std)`` to standardise with, ``(x - mean) / std``; None: as they are.
    """

    def __init__(
        self,
        clips: Sequence[np.ndarray],
        length: int,
        hop: int,
        ids: np.ndarray | None = None,
        norm: Norm | None = None,
    ) -> None:
        self._norm = None if norm is None else (norm[0][:, None], norm[1][:, None])
        self._lazy: LazyClips | None = clips if isinstance(clips, LazyClips) else None
        if self._lazy is not None:
            frames = np.asarray(self._lazy.lengths, dtype=np.int64)
        else:
            frames = np.array([c.shape[1] for c in clips], dtype=np.int64)
        padded = np.maximum(frames, length)
        offsets = np.cumsum(padded) - padded  # where each padded clip starts in ``data``
        starts = [
            window_starts(int(p), length, hop) + o for p, o in zip(padded, offsets, strict=True)
        ]
        self.starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        self.clip_of = np.repeat(np.arange(len(clips)), [len(s) for s in starts])
        self.n_clips = len(clips)
        self.ids = np.arange(len(clips)) if ids is None else np.asarray(ids, dtype=np.int64)
        if self.ids.shape != (len(clips),):
            raise ValueError(f"{len(clips)} clips but {self.ids.size} ids")
        self.length = length
        self._steps = np.arange(length)
        if self._lazy is not None:
            self._frames, self._offsets = frames, offsets
        else:
            parts = [repeat_pad(self._standardise(c), length) for c in clips]
            self.data = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        if self._norm is None:
            return x
        out: np.ndarray = (x - self._norm[0]) / self._norm[1]
        return out

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Windows ``idx`` as a float32 array ``(len(idx), n_mels, length)``."""
        if self._lazy is not None:
            return self._read(self._lazy, np.asarray(idx, dtype=np.int64))
        cols = self.starts[idx][:, None] + self._steps  # (B, length)
        return np.ascontiguousarray(self.data[:, cols].transpose(1, 0, 2))

    def _read(self, source: LazyClips, idx: np.ndarray) -> np.ndarray:
        """:meth:`gather` from a lazy source: one read per clip of the batch, covering its
        windows there (consecutive windows, as in scoring, share one read)."""
        clip = self.clip_of[idx]
        local = self.starts[idx] - self._offsets[clip]
        out: np.ndarray | None = None
        for c in np.unique(clip):
            rows = np.flatnonzero(clip == c)
            frames = int(self._frames[c])
            if frames < self.length:  # one window: the repeated clip
                block = repeat_pad(source[int(c)], self.length)
                lo = 0
            else:
                lo, hi = int(local[rows].min()), int(local[rows].max()) + self.length
                block = source.window(int(c), lo, hi - lo)
            if out is None:
                out = np.empty((len(idx), block.shape[0], self.length), dtype=np.float32)
            for r in rows:
                s = int(local[r]) - lo
                out[r] = block[:, s : s + self.length]
        assert out is not None, "gather of no windows"
        return self._standardise(out)

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


def pool_mean_std(features: Sequence[np.ndarray]) -> np.ndarray:
    """Per-clip vector: mean over time of each mel band, then std over time of each band.

    ``n_clips x (n_mels, frames)`` -> ``(n_clips, 2 * n_mels)`` float64.
    """
    out = np.empty((len(features), 2 * features[0].shape[0]), dtype=np.float64)
    for i, f in enumerate(features):
        f64 = f.astype(np.float64)
        out[i] = np.concatenate([f64.mean(axis=1), f64.std(axis=1)])
    return out

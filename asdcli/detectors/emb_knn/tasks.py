"""What emb-knn's network learns to tell apart: classes from the clip names, a self-supervised
task on transformed windows, and statistics exposure.

1. **Names** (:func:`class_keys`). Every training clip gets a class from what its name says:
   machine type x section x attribute values (``by="attributes"``), or machine type x section
   (``by="section"``, and for clips without attributes). If that leaves a single class, the
   domain is added.
2. **Self-supervised task** (``EmbKNNParams.self_supervised``, :func:`pretext`). Each training
   window is transformed at random and each transformation is a class of its own, crossed with
   the name classes: to tell how a window was changed, the network must learn what a normal
   window of that machine looks like. This is what lets emb-knn learn from one machine type
   without attributes, where the names give nothing to tell apart.

   * ``"shift"``: pitch-like shifts of the log-mel window by 0, +-1 or +-2 steps of
     ``n_mels / 64`` mel bands (two bands, about a semitone, at 128 bands; a machine that runs
     faster shifts its whole spectrum like this); 5 classes. The shift is circular, so that no
     band is left constant for the network to spot.
   * ``"stretch"``: the window's time axis stretched by 0.8, 1 or 1.25 about its centre
     (linear interpolation, circular); 3 classes.
   * ``"shift_stretch"``: every combination of the two; 15 classes.
   * ``"exposure"``: no transformation; with statistics exposure (3.) the task is then
     "as recorded" against "exposed".
   * ``"auto"``: none when the names alone (without the domain) give two or more classes, else
     :data:`AUTO_TASK`; ``"none"``: no task, and a single name class is refused.
3. **Statistics exposure** (``EmbKNNParams.exposure``, :func:`expose`). A share of each batch
   trades its per-band means over time for another window's and is labelled as the exposed
   twin of its class, so the embedding must notice changes of spectral level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch

from asdcli.naming import ClipInfo

# The task "auto" picks when the names give a single class.
AUTO_TASK = "shift"
SHIFT_STEPS = (0, -1, 1, -2, 2)  # the untransformed window first: it is class 0
STRETCH_RATES = (1.0, 0.8, 1.25)


def _key(clip: ClipInfo, by: str, with_domain: bool) -> str:
    parts = [clip.machine, clip.section]
    if by == "attributes" and clip.attributes:
        parts += [f"{k}={v}" for k, v in clip.attributes.items()]
    if with_domain:
        parts.append(clip.domain)
    return "|".join(parts)


def class_keys(clips: Sequence[ClipInfo], by: str) -> list[str]:
    """One class name per clip from its name (module docstring, step 1)."""
    keys = [_key(c, by, False) for c in clips]
    if len(set(keys)) < 2:
        keys = [_key(c, by, True) for c in clips]
    return keys


def names_tell_apart(clips: Sequence[ClipInfo], by: str) -> bool:
    """Whether the names give two or more classes without falling back on the domain."""
    return len({_key(c, by, False) for c in clips}) >= 2


def freq_shift(windows: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``(B, n_mels, T)`` windows, each moved up by ``offsets[b]`` mel bands (down when
    negative), circularly: ``out[b, m] = windows[b, (m - offsets[b]) mod n_mels]``."""
    n_mels = windows.shape[1]
    bands = torch.arange(n_mels, device=windows.device)
    src = (bands[None, :] - offsets.to(windows.device)[:, None]) % n_mels  # (B, n_mels)
    return torch.gather(windows, 1, src[:, :, None].expand(-1, -1, windows.shape[2]))


def time_stretch(windows: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """``(B, n_mels, T)`` windows played ``rates[b]`` times as fast about their centre:
    ``out[b, :, t] = windows[b, :, c + (t - c) * rate]`` with ``c = (T - 1) / 2``, linearly
    interpolated and read circularly. A rate of 1 returns the window exactly."""
    n_mels, frames = windows.shape[1], windows.shape[2]
    t = torch.arange(frames, dtype=torch.float32, device=windows.device)
    c = (frames - 1) / 2
    pos = torch.remainder(c + (t[None, :] - c) * rates.to(windows.device)[:, None], frames)
    lo = pos.floor().long()
    w = (pos - lo).to(windows.dtype)[:, None, :]  # (B, 1, T)
    hi = (lo + 1) % frames

    def at(i: torch.Tensor) -> torch.Tensor:
        return torch.gather(windows, 2, i[:, None, :].expand(-1, n_mels, -1))

    return at(lo) * (1 - w) + at(hi) * w


@dataclass(frozen=True)
class Pretext:
    """A self-supervised task: class ``c`` moves a window up by ``shifts[c]`` mel bands and
    plays it ``rates[c]`` times as fast; class 0 is the untransformed window."""

    names: tuple[str, ...]
    shifts: tuple[int, ...]
    rates: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.names)

    def apply(self, windows: torch.Tensor, choice: np.ndarray) -> torch.Tensor:
        """``(B, n_mels, T)`` windows, window ``b`` transformed as class ``choice[b]``."""
        pick = torch.from_numpy(np.asarray(choice, dtype=np.int64))
        out = windows
        if any(self.shifts):
            out = freq_shift(out, torch.tensor(self.shifts)[pick])
        if any(r != 1.0 for r in self.rates):
            out = time_stretch(out, torch.tensor(self.rates)[pick])
        return out


def pretext(task: str, n_mels: int) -> Pretext | None:
    """The transformations of ``task`` (``"shift"``, ``"stretch"``, ``"shift_stretch"``) for
    windows of ``n_mels`` bands; None for a task without any (``"none"``, ``"exposure"``)."""
    step = max(1, round(n_mels / 64))
    shifts = [s * step for s in SHIFT_STEPS] if "shift" in task else [0]
    rates = list(STRETCH_RATES) if "stretch" in task else [1.0]
    if len(shifts) * len(rates) == 1:
        return None
    combos = list(product(shifts, rates))
    names = []
    for s, r in combos:
        parts = ([f"shift={s:+d}"] if len(shifts) > 1 else []) + (
            [f"stretch={r:g}"] if len(rates) > 1 else []
        )
        names.append(",".join(parts))
    return Pretext(tuple(names), tuple(s for s, _ in combos), tuple(r for _, r in combos))


def expose(
    windows: torch.Tensor,
    targets: torch.Tensor,
    share: float,
    n_classes: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics exposure on ``(B, n_mels, T)`` windows with targets ``(B, 2 * n_classes)``:
    ``round(share * B)`` random windows trade their per-band mean over time for a random
    partner's and move to their class's exposed twin (class ``c`` -> ``c + n_classes``)."""
    n = round(share * windows.shape[0])
    if n == 0:
        return windows, targets
    idx = torch.from_numpy(rng.choice(windows.shape[0], n, replace=False))
    partner = torch.from_numpy(rng.integers(0, windows.shape[0], n))
    exposed, new_targets = windows.clone(), targets.clone()
    exposed[idx] = (
        windows[idx]
        - windows[idx].mean(dim=2, keepdim=True)
        + windows[partner].mean(dim=2, keepdim=True)
    )
    new_targets[idx] = torch.roll(targets[idx], n_classes, dims=1)
    return exposed, new_targets

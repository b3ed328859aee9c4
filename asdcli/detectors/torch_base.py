"""The training loop of the neural detectors, and the base of the autoencoders.

:class:`TorchDetector` owns everything but what is learned: seeding, the device, per-mel input
standardisation, cutting clips into windows, the validation split, batching, the Adam loop with
early stopping and best-epoch restore, Ctrl-C handling, the augmentation helpers, batched
inference and saving. A subclass says

* what the network is: :meth:`~TorchDetector._build_module`, :meth:`~TorchDetector._window`
  (window length and hop in frames) and :meth:`~TorchDetector._to_input` (a batch of windows
  ``(B, n_mels, length)`` -> the module's input; default as is);
* what it learns: :meth:`~TorchDetector._batch_loss` (the training loss of some windows of a
  :class:`~asdcli.detectors.windows.WindowSet`) and :meth:`~TorchDetector._val_loss` (what
  early stopping watches);
* how it scores: :meth:`~TorchDetector._clip_scores`;
* optionally: :meth:`~TorchDetector._build_head` (a module trained and early-stopped with the
  network but not saved, e.g. a classifier's loss head), :meth:`~TorchDetector._after_fit`
  (what is learned from the trained network, e.g. neighbour banks; it returns the training
  clips' scores) and :attr:`~TorchDetector.saved_arrays` (array attributes saved with the
  weights).

A window set knows which of ``fit``'s clips each window comes from
(:meth:`~asdcli.detectors.windows.WindowSet.ids_of`), so a classifier finds its labels there.

:class:`Autoencoder` fills in the loss and the score for the reconstruction detectors: the
per-window error :meth:`~Autoencoder._errors` (default MSE), its mean over a batch for training
and over the held-out windows for validation, and its mean over a clip's windows as the score.

Augmentation (training only, from :class:`~asdcli.detectors.params.TrainParams`, ``None``
meaning :attr:`~TorchDetector.default_augmentation`): :meth:`~TorchDetector._mixup` blends each
window with a partner by a Beta(alpha, alpha) weight (an autoencoder reconstructs the blend, a
classifier blends its targets alike); :meth:`~TorchDetector._spec_augment` masks random runs of
frames and mel bands (an autoencoder reconstructs the unmasked window).
"""

from __future__ import annotations

import io
import pickle
import random
import time
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.deterministic
from pydantic import BaseModel
from torch import nn

from asdcli.detectors.base import Detector, ParamsContext, Progress, resolve_device
from asdcli.detectors.params import TrainParams
from asdcli.detectors.windows import WindowSet, subset
from asdcli.errors import SettingsError
from asdcli.files import write_bytes
from asdcli.naming import ClipInfo

__all__ = ["Autoencoder", "TorchDetector", "resolve_device", "val_split_indices"]

WEIGHTS_FILE = "model.pt"
# Floor for per-mel std: a band that never changes (e.g. at the dB floor) must not divide by 0.
STD_FLOOR = 1e-3


def val_split_indices(n_clips: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded clip-level split -> ``(train_idx, val_idx)``, both sorted.

    At least one validation clip when ``n_clips >= 2`` and ``val_split > 0``, never all of them;
    none when there is a single clip.
    """
    n_val = 0
    if n_clips >= 2 and val_split > 0:
        n_val = min(max(1, round(val_split * n_clips)), n_clips - 1)
    perm = np.random.default_rng(seed).permutation(n_clips)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split ``order`` into batches without dropping anything (``drop_last=False``).

    A trailing batch of one window joins the previous batch: BatchNorm cannot train on one
    sample, and silently dropping it would lose data.
    """
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return batches


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with a cheaper mask on CPU: CPU ``bernoulli_`` (what
    ``nn.Dropout`` draws) took a third of a conv-ae training step (profiled); 16-bit uniform
    draws from numpy's PCG64 make the layer about three times cheaper. An element is kept
    with probability ``round((1 - p) * 2**16) / 2**16`` (``1 - p`` to within 1e-5) and
    scaled by its inverse.
    Each call seeds its generator from torch's, so ``torch.manual_seed`` fixes the masks. No
    state: the module's ``state_dict`` is ``nn.Dropout``'s (empty)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True, self.inplace)
        threshold = round((1.0 - self.p) * 2**16)
        if threshold == 0:
            return torch.zeros_like(x)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        bits = _uint16_draws(rng, x.numel())
        keep = (bits < threshold).astype(np.float32) * np.float32(2**16 / threshold)
        # The mask in x's own memory layout (channels-last or not): a dense elementwise product.
        mask = torch.from_numpy(keep).as_strided(x.shape, x.stride())
        return x.mul_(mask) if self.inplace else x * mask


def _uint16_draws(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` 16-bit draws, the same as ``np.frombuffer(rng.bytes(2 * n), "<u2")``, 4x faster.

    ``Generator.bytes`` draws 32-bit integers (for PCG64, the low then the high half of each
    64-bit output) and copies them three times; the raw 64-bit outputs read as little-endian
    16-bit words are the same sequence (``tests/test_torch_base.py`` checks it).
    """
    raw = rng.bit_generator.random_raw(-(-n // 4))
    return raw.astype("<u8", copy=False).view("<u2")[:n]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_epochs(train: TrainParams) -> None:
    if train.epochs < 1:
        raise SettingsError(
            f"--epochs {train.epochs}: the neural detectors need at least one epoch; use a "
            "pooled-statistics detector (lof, gmm, knn) for a training-free model"
        )


class TorchDetector(Detector):
    """Base of the neural detectors; see the module docstring for what subclasses add.

    Attributes (after :meth:`fit`, besides :class:`Detector`'s)
    ----------------------------------------------------------
    module_ : nn.Module
        The trained network with the best epoch's weights, in eval mode.
    device_ : torch.device
        Where ``module_`` lives.
    val_indices_ : ndarray of int
        Training clips held out for early stopping (empty after :meth:`load`).
    """

    module_: nn.Module
    device_: torch.device
    val_indices_: np.ndarray
    _aug_rng: np.random.Generator

    # Augmentation used when TrainParams leaves a setting at None.
    default_augmentation: ClassVar[dict[str, float]] = {
        "mixup": 0.0,
        "time_mask": 0,
        "freq_mask": 0,
    }
    # Array attributes (float or int ndarrays) that scoring needs besides the weights: saved
    # with them in model.pt under the name without the trailing underscore. One that a model
    # does not have (dcase-ae's Mahalanobis state when it scores by MSE) is not saved.
    saved_arrays: ClassVar[tuple[str, ...]] = ()
    # Lazy features (a store's StoredClips) are read a batch of windows at a time, never held.
    streams: ClassVar[bool] = True
    # 2-D conv nets: weights and activations in channels-last (NHWC) memory, where oneDNN's
    # convolutions and max-pooling are faster on CPU (profiled). Same weights and state_dict;
    # only the order of floating-point sums may differ.
    channels_last: ClassVar[bool] = False

    # --- subclass hooks ------------------------------------------------------------------------

    @classmethod
    def resolve_params(
        cls, params: BaseModel, context: ParamsContext
    ) -> tuple[BaseModel, list[str]]:
        # Refused before the run folder exists, so `--epochs 0` leaves nothing behind.
        if context.train is not None:
            _check_epochs(context.train)
        return super().resolve_params(params, context)

    @abstractmethod
    def _build_module(self, n_mels: int) -> nn.Module:
        """The untrained network for ``n_mels`` mel bands."""

    @abstractmethod
    def _window(self) -> tuple[int, int]:
        """``(length, hop)`` in frames of the windows a clip is cut into."""

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, length)`` standardised windows -> the module's input."""
        return windows

    @abstractmethod
    def _batch_loss(self, windows: WindowSet, idx: np.ndarray) -> torch.Tensor:
        """Training loss (scalar tensor) of windows ``idx`` of the training windows, with the
        network (and head) in train mode; augmentation is applied here."""

    @abstractmethod
    def _val_loss(self, windows: WindowSet) -> float:
        """Loss of the held-out clips' windows in eval mode, without augmentation: what early
        stopping watches and ``history_``'s ``val_loss`` reports."""

    @abstractmethod
    def _clip_scores(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        """Scores ``(n_clips,)`` of the clips of ``windows`` (``clips`` their metadata)."""

    def _build_head(self, clips: list[ClipInfo]) -> nn.Module | None:
        """A module trained and early-stopped with the network but not saved (a classifier's
        loss head), built after the network from every training clip's metadata; None: none."""
        return None

    def _after_fit(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        """Called once the best weights are restored, with every training clip's windows:
        learn what scoring needs besides the weights and return the training clips' scores
        ``(n_clips,)`` (default: :meth:`_clip_scores`)."""
        return self._clip_scores(windows, clips)

    # --- augmentation ------------------------------------------------------------------------

    def augmentation(self) -> dict[str, float]:
        """The augmentation in effect: ``{"mixup", "time_mask", "freq_mask"}``."""
        tp = self.train
        chosen = {"mixup": tp.mixup, "time_mask": tp.time_mask, "freq_mask": tp.freq_mask}
        return {k: (self.default_augmentation[k] if v is None else v) for k, v in chosen.items()}

    def _mixup_pairs(self, n: int) -> tuple[torch.Tensor, float]:
        """Mixup partners of a batch of ``n``: ``(partner index (n,), weight lam)`` with
        ``lam ~ Beta(alpha, alpha)``; the identity and 1.0 when mixup is off."""
        alpha = self.augmentation()["mixup"]
        if alpha <= 0 or n < 2:
            return torch.arange(n), 1.0
        lam = float(self._aug_rng.beta(alpha, alpha))
        return torch.from_numpy(self._aug_rng.permutation(n)), lam

    def _mixup(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Mixup of a batch: each ``(B, ...)`` tensor (the windows, and a classifier's soft
        targets) becomes ``lam * t + (1 - lam) * t[perm]``, all with one draw of
        :meth:`_mixup_pairs`; the tensors themselves when mixup is off."""
        perm, lam = self._mixup_pairs(tensors[0].shape[0])
        if lam == 1.0:
            return list(tensors)
        return [lam * t + (1.0 - lam) * t[perm.to(t.device)] for t in tensors]

    def _spec_augment(self, windows: torch.Tensor) -> torch.Tensor:
        """SpecAugment time and frequency masks on ``(B, n_mels, length)``, one random mask of
        each kind per window (masked values become 0, the standardised mean)."""
        aug = self.augmentation()
        if not (aug["time_mask"] or aug["freq_mask"]):
            return windows
        import torchaudio.transforms as T

        x = windows.unsqueeze(1)  # iid masks need (B, channel, freq, time)
        if aug["time_mask"]:
            x = T.TimeMasking(int(aug["time_mask"]), iid_masks=True)(x)
        if aug["freq_mask"]:
            x = T.FrequencyMasking(int(aug["freq_mask"]), iid_masks=True)(x)
        return x.squeeze(1)

    # --- training ----------------------------------------------------------------------------

    def _batch_size(self) -> int:
        """Windows per batch: the detector's own ``batch_size`` parameter where it has one
        (dcase-ae and vae count vectors of a few frames), else ``train.batch_size``."""
        own = getattr(self.params, "batch_size", None)
        return self.train.batch_size if own is None else int(own)

    def _fit(
        self, features: Sequence[np.ndarray], clips: list[ClipInfo], progress: Progress | None
    ) -> np.ndarray:
        tp = self.train
        _check_epochs(tp)
        device = resolve_device(tp.device)
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        was_filling = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
        try:
            # Same seed, same data -> same model; CUDA would also need CUBLAS_WORKSPACE_CONFIG.
            if device.type == "cpu":
                torch.use_deterministic_algorithms(True)
            # Deterministic mode also fills every new tensor with NaN, a debugging aid that
            # took ~10 % of a training step; no op here reads memory it has not written.
            torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
            _seed_everything(tp.seed)
            self.device_ = device
            # Statistics from all training clips; the validation clips are normal data too.
            # One clip at a time: a lazy source is read once and never held.
            total, s1, s2 = 0, np.zeros(self.n_mels_), np.zeros(self.n_mels_)
            for f in features:
                total += f.shape[1]
                s1 = s1 + f.sum(axis=1, dtype=np.float64)
                s2 = s2 + np.square(f, dtype=np.float64).sum(axis=1)
            mean = s1 / total
            std = np.sqrt(np.maximum(s2 / total - mean**2, 0.0))
            self.norm_mean_ = mean.astype(np.float32)
            self.norm_std_ = np.maximum(std, STD_FLOOR).astype(np.float32)

            train_idx, val_idx = val_split_indices(len(features), tp.val_split, tp.seed)
            self.val_indices_ = val_idx
            length, hop = self._window()
            norm = (self.norm_mean_, self.norm_std_)
            train_ws = WindowSet(subset(features, train_idx), length, hop, train_idx, norm)
            val_ws = None
            if len(val_idx):
                val_ws = WindowSet(subset(features, val_idx), length, hop, val_idx, norm)
            if len(train_ws) < 2:
                raise ValueError(
                    f"{self.name} needs at least 2 training windows of {length} frames; "
                    f"got {len(train_ws)} from {len(train_idx)} clip(s)"
                )
            self.module_ = self._placed(self._build_module(self.n_mels_))
            head = self._build_head(clips)
            trainable = nn.ModuleList([self.module_] + ([] if head is None else [head]))
            self.n_params_ = sum(p.numel() for p in trainable.parameters())
            self._train_loop(trainable, train_ws, val_ws, progress)
            del train_ws, val_ws  # in memory: the standardised copies
            return self._after_fit(self._windows_of(features), clips)
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=warn_only)
            torch.utils.deterministic.fill_uninitialized_memory = was_filling  # type: ignore[attr-defined]

    def _train_loop(
        self,
        trainable: nn.Module,
        train_ws: WindowSet,
        val_ws: WindowSet | None,
        progress: Progress | None,
    ) -> None:
        """Adam on ``trainable`` (the network and its head) with early stopping on the
        validation loss (the training loss without validation clips); restores the best
        epoch's weights, also after Ctrl-C (interrupted before any epoch finished, the partly
        trained weights are kept)."""
        tp = self.train
        # Fused: one pass per parameter instead of a dozen. Measured on a 2-core EPYC, 1
        # thread, batch 64: a fc-ae step (39 M parameters) 685 -> 372 ms, conv-ae's (4.4 M)
        # 270 -> 264 ms. The update agrees with the default one to float32 rounding.
        fused = True if self.device_.type in ("cpu", "cuda") else None
        optimiser = torch.optim.Adam(trainable.parameters(), lr=tp.learning_rate, fused=fused)
        rng = np.random.default_rng(tp.seed)
        self._aug_rng = np.random.default_rng(tp.seed + 1)
        best, best_state, waited = np.inf, None, 0
        try:
            for epoch in range(1, tp.epochs + 1):
                start = time.perf_counter()
                trainable.train()
                loss_sum, seen = 0.0, 0
                for idx in _batches(rng.permutation(len(train_ws)), self._batch_size()):
                    loss = self._batch_loss(train_ws, idx)
                    optimiser.zero_grad(set_to_none=True)
                    torch.autograd.backward(loss)
                    optimiser.step()
                    loss_sum += loss.item() * len(idx)
                    seen += len(idx)
                train_loss = loss_sum / seen
                val_loss = None
                if val_ws is not None:
                    trainable.eval()
                    val_loss = self._val_loss(val_ws)
                row = {
                    "epoch": epoch,
                    "loss": train_loss,
                    "val_loss": val_loss,
                    "seconds": time.perf_counter() - start,
                }
                self.history_.append(row)
                monitored = train_loss if val_loss is None else val_loss
                if monitored < best:  # NaN never improves
                    best, waited = monitored, 0
                    best_state = {k: v.detach().clone() for k, v in trainable.state_dict().items()}
                else:
                    waited += 1
                if progress is not None:
                    progress(row)
                if not np.isfinite(train_loss):
                    if best_state is None:
                        raise FloatingPointError(
                            f"{self.name} training diverged in epoch 1 (loss {train_loss}); "
                            "lower the learning rate"
                        )
                    warnings.warn(
                        f"{self.name} training diverged in epoch {epoch}; keeping the best "
                        "epoch's weights",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                    break
                if waited >= tp.patience:
                    break
        except KeyboardInterrupt:
            # Ctrl-C: keep what was learned; the caller saves and marks the run incomplete.
            self.interrupted_ = True
        if best_state is not None:
            trainable.load_state_dict(best_state)
        trainable.eval()

    def _placed(self, module: nn.Module) -> nn.Module:
        """``module`` on :attr:`device_`, in channels-last memory where :attr:`channels_last`."""
        module = module.to(self.device_)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    # --- inference -----------------------------------------------------------------------------

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device_)

    def _eval_batches(self, windows: WindowSet) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(window indices (B,), module input)`` for every window, in fixed batches with the
        network in eval mode (so the same model gives bit-identical values). Iterate under
        ``torch.inference_mode()``."""
        self.module_.eval()
        bs = self._batch_size()
        for i in range(0, len(windows), bs):
            idx = np.arange(i, min(i + bs, len(windows)))
            yield idx, self._to_input(self._tensor(windows.gather(idx)))

    def _windows_of(self, features: Sequence[np.ndarray]) -> WindowSet:
        length, hop = self._window()
        return WindowSet(features, length, hop, norm=(self.norm_mean_, self.norm_std_))

    def _score(self, features: Sequence[np.ndarray], clips: list[ClipInfo]) -> np.ndarray:
        return self._clip_scores(self._windows_of(features), clips)

    # --- persistence ---------------------------------------------------------------------------

    def _save_state(self, folder: Path) -> list[str]:
        # Contiguous: the file's layout does not depend on how the model ran (channels_last).
        state = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        extra = {
            name.rstrip("_"): torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
            for name in self.saved_arrays
            if hasattr(self, name)
        }
        # Serialised in memory, then written atomically: a full disk is a clear DiskFullError
        # (torch.save straight to a file reports it as an errno-less RuntimeError).
        buffer = io.BytesIO()
        torch.save({"model": state, "extra": extra}, buffer)
        write_bytes(folder / WEIGHTS_FILE, buffer.getvalue())
        return [WEIGHTS_FILE]

    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        path = folder / WEIGHTS_FILE
        if not path.is_file():
            raise ValueError(f"{folder} has {meta['name']}'s detector.json but no {WEIGHTS_FILE}")
        # weights_only: a tensors-only file, nothing is unpickled beyond tensors and dicts.
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as exc:
            raise ValueError(
                f"{path} is not a tensors-only weights file ({type(exc).__name__}); it is not "
                "loaded"
            ) from None
        if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
            raise ValueError(f"{path} is not a weights file written by asd")
        self.device_ = resolve_device(device or "auto")
        module = self._build_module(self.n_mels_)
        module.load_state_dict(blob["model"])
        self.module_ = self._placed(module).eval()
        self.val_indices_ = np.zeros(0, dtype=np.int64)
        for name in self.saved_arrays:
            if name.rstrip("_") in blob["extra"]:
                setattr(self, name, blob["extra"][name.rstrip("_")].numpy())


class Autoencoder(TorchDetector):
    """Base of the reconstruction detectors: loss, validation loss and score are one
    per-window error, :meth:`_errors` (default: MSE of the reconstruction).

    Training reconstructs the clean (mixed-up) windows from their SpecAugment-masked copies;
    validation loss and clip score are the mean per-window error in eval mode.
    """

    def _errors(
        self, module: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-window loss ``(B,)``: mean squared error between ``module(x)`` and ``target``
        (default ``x`` itself; training passes the unmasked windows when SpecAugment masks)."""
        target = x if target is None else target
        return F.mse_loss(module(x), target, reduction="none").flatten(1).mean(dim=1)

    def _batch_loss(self, windows: WindowSet, idx: np.ndarray) -> torch.Tensor:
        """The mean error of reconstructing the mixed-up windows from their masked copies."""
        (clean,) = self._mixup(self._tensor(windows.gather(idx)))
        noisy = self._spec_augment(clean)
        return self._errors(self.module_, self._to_input(noisy), self._to_input(clean)).mean()

    def _val_loss(self, windows: WindowSet) -> float:
        return float(self._window_errors(windows).mean())

    def _clip_scores(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        """Scores ``(n_clips,)``: the mean per-window error of each clip."""
        return windows.clip_means(self._window_errors(windows))

    def _window_errors(self, windows: WindowSet) -> np.ndarray:
        """Per-window errors ``(n_windows,)`` float64 in eval mode."""
        out = np.empty(len(windows), dtype=np.float64)
        with torch.inference_mode():
            for idx, x in self._eval_batches(windows):
                out[idx] = self._errors(self.module_, x).double().cpu().numpy()
        return out

    def validation_loss(self, features: list[np.ndarray]) -> float:
        """Mean per-window loss of these clips in eval mode: what ``history_``'s ``val_loss``
        reports for the validation clips (``features[i]`` for ``i`` in ``val_indices_``)."""
        self._check_fitted()
        feats = self._check_features(features, fitting=False)
        return float(self._window_errors(self._windows_of(feats)).mean())

"""Template base class of the autoencoders (PyOD ``base_dl`` habit).

:class:`TorchDetector` owns everything but the network: seeding, the device, per-mel input
standardisation, the validation split, the Adam loop with early stopping and best-epoch restore,
Ctrl-C handling, scoring and saving. A subclass says

* :meth:`~TorchDetector._build_module`: the plain ``nn.Module``;
* :meth:`~TorchDetector._window`: how a clip becomes windows (length and hop in frames);
* :meth:`~TorchDetector._to_input`: how a batch of windows becomes the module's input;
* optionally :meth:`~TorchDetector._errors` (per-window loss, default MSE),
  :meth:`~TorchDetector._clip_scores` (default: mean per-window error of each clip) and
  :meth:`~TorchDetector._batch_loss` (default: the augmented windows' mean error).

Augmentation (training only, from :class:`~asdcli.detectors.params.TrainParams`, ``None``
meaning :attr:`~TorchDetector.default_augmentation`): mixup blends two windows with a
Beta(alpha, alpha) weight and the autoencoder reconstructs the blend; SpecAugment masks random
runs of frames and mel bands of the input only, so the autoencoder learns to fill them in.
"""

from __future__ import annotations

import random
import time
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdcli.detectors.base import Detector, Progress, resolve_device
from asdcli.detectors.windows import WindowSet
from asdcli.naming import ClipInfo

__all__ = ["TorchDetector", "resolve_device", "val_split_indices"]

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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TorchDetector(Detector):
    """Base of the autoencoder detectors; see the module docstring for what subclasses add.

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

    # Augmentation used when TrainParams leaves a setting at None.
    default_augmentation: ClassVar[dict[str, float]] = {
        "mixup": 0.0,
        "time_mask": 0,
        "freq_mask": 0,
    }

    # --- subclass hooks ------------------------------------------------------------------------

    @abstractmethod
    def _build_module(self, n_mels: int) -> nn.Module:
        """The untrained network for ``n_mels`` mel bands."""

    @abstractmethod
    def _window(self) -> tuple[int, int]:
        """``(length, hop)`` in frames of the windows a clip is cut into."""

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, length)`` standardised windows -> the module's input (and target)."""
        return windows

    def _errors(
        self, module: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-window loss ``(B,)``: mean squared error between ``module(x)`` and ``target``
        (default ``x`` itself; training passes the unmasked windows when SpecAugment masks)."""
        target = x if target is None else target
        return F.mse_loss(module(x), target, reduction="none").flatten(1).mean(dim=1)

    def _batch_loss(
        self, module: nn.Module, windows: torch.Tensor, clip_ids: np.ndarray
    ) -> torch.Tensor:
        """Training loss (scalar) of a batch of standardised windows ``(B, n_mels, length)``;
        ``clip_ids`` ``(B,)`` are their clips' indices in the ``fit`` input."""
        clean, _, _ = self._mixup(windows)
        noisy = self._spec_augment(clean)
        return self._errors(module, self._to_input(noisy), self._to_input(clean)).mean()

    def _val_loss(self, windows: WindowSet, clip_ids: np.ndarray) -> float:
        """Validation loss: mean per-window error of the held-out clips (``clip_ids`` as in
        :meth:`_batch_loss`, one per clip of ``windows``)."""
        return float(self._window_errors(windows).mean())

    def _batch_size(self) -> int:
        return self.train.batch_size

    def _after_fit(self, windows: WindowSet, clips: list[ClipInfo]) -> None:
        """Called once the best weights are restored, with every training clip's windows."""

    def _clip_scores(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        """Scores ``(n_clips,)``: the mean per-window error of each clip."""
        return windows.clip_means(self._window_errors(windows))

    def _extra_state(self) -> dict[str, np.ndarray]:
        """Arrays besides the weights that scoring needs; saved as tensors with the weights."""
        return {}

    def _set_extra_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_extra_state` returned."""

    # --- augmentation ------------------------------------------------------------------------

    def augmentation(self) -> dict[str, float]:
        """The augmentation in effect: ``{"mixup", "time_mask", "freq_mask"}``."""
        tp = self.train
        chosen = {"mixup": tp.mixup, "time_mask": tp.time_mask, "freq_mask": tp.freq_mask}
        return {k: (self.default_augmentation[k] if v is None else v) for k, v in chosen.items()}

    def _mixup(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(mixed windows, partner index (B,), weight lam)``; ``lam * x + (1 - lam) * x[perm]``.
        Without mixup: the windows, the identity and 1.0."""
        alpha = self.augmentation()["mixup"]
        perm = torch.arange(windows.shape[0], device=windows.device)
        if alpha <= 0 or windows.shape[0] < 2:
            return windows, perm, 1.0
        lam = float(self._aug_rng.beta(alpha, alpha))
        perm = torch.from_numpy(self._aug_rng.permutation(windows.shape[0])).to(windows.device)
        return lam * windows + (1.0 - lam) * windows[perm], perm, lam

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

    def _fit(
        self, features: list[np.ndarray], clips: list[ClipInfo], progress: Progress | None
    ) -> np.ndarray:
        tp = self.train
        device = resolve_device(tp.device)
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        try:
            # Same seed, same data -> same model; CUDA would also need CUBLAS_WORKSPACE_CONFIG.
            if device.type == "cpu":
                torch.use_deterministic_algorithms(True)
            _seed_everything(tp.seed)
            self.device_ = device
            # Statistics from all training clips; the validation clips are normal data too.
            total = sum(f.shape[1] for f in features)
            s1 = sum(f.sum(axis=1, dtype=np.float64) for f in features)
            s2 = sum(np.square(f, dtype=np.float64).sum(axis=1) for f in features)
            mean = s1 / total
            std = np.sqrt(np.maximum(s2 / total - mean**2, 0.0))
            self.norm_mean_ = mean.astype(np.float32)
            self.norm_std_ = np.maximum(std, STD_FLOOR).astype(np.float32)
            std_clips = [self._standardise(f) for f in features]

            train_idx, val_idx = val_split_indices(len(features), tp.val_split, tp.seed)
            self.val_indices_ = val_idx
            length, hop = self._window()
            train_ws = WindowSet([std_clips[i] for i in train_idx], length, hop)
            val_ws = None
            if len(val_idx):
                val_ws = WindowSet([std_clips[i] for i in val_idx], length, hop)
            if len(train_ws) < 2:
                raise ValueError(
                    f"{self.name} needs at least 2 training windows of {length} frames; "
                    f"got {len(train_ws)} from {len(train_idx)} clip(s)"
                )
            self._train_clip_ids, self._val_clip_ids = train_idx, val_idx
            self._prepare(clips)
            self.module_ = self._build_module(self.n_mels_).to(device)
            self.n_params_ = sum(p.numel() for p in self._trainable().parameters())
            self._train_loop(train_ws, val_ws, progress)
            all_ws = WindowSet(std_clips, length, hop)
            self._after_fit(all_ws, clips)
            return self._clip_scores(all_ws, clips)
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=warn_only)

    def _prepare(self, clips: list[ClipInfo]) -> None:
        """Called before the module is built, with every training clip (e.g. to derive
        classes from their names)."""

    def _trainable(self) -> nn.Module:
        """What the optimiser trains: the module (emb-knn adds its loss head)."""
        return self.module_

    def _train_loop(
        self, train_ws: WindowSet, val_ws: WindowSet | None, progress: Progress | None
    ) -> None:
        """Adam with early stopping on the validation loss (the training loss without
        validation clips); restores the best epoch's weights, also after Ctrl-C (interrupted
        before any epoch finished, the partly trained weights are kept)."""
        tp = self.train
        module = self.module_
        trainable = self._trainable()
        optimiser = torch.optim.Adam(trainable.parameters(), lr=tp.learning_rate)
        rng = np.random.default_rng(tp.seed)
        self._aug_rng = np.random.default_rng(tp.seed + 1)
        best, best_state, waited = np.inf, None, 0
        try:
            for epoch in range(1, tp.epochs + 1):
                start = time.perf_counter()
                trainable.train()
                loss_sum, seen = 0.0, 0
                for idx in _batches(rng.permutation(len(train_ws)), self._batch_size()):
                    clip_ids = self._train_clip_ids[train_ws.clip_of[idx]]
                    loss = self._batch_loss(module, self._tensor(train_ws.gather(idx)), clip_ids)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    loss_sum += loss.item() * len(idx)
                    seen += len(idx)
                train_loss = loss_sum / seen
                val_loss = self._val_loss(val_ws, self._val_clip_ids) if val_ws else None
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
        module.eval()

    # --- scoring -----------------------------------------------------------------------------

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.norm_mean_[:, None]) / self.norm_std_[:, None]

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device_)

    def _window_errors(self, windows: WindowSet) -> np.ndarray:
        """Per-window errors ``(n_windows,)`` float64 in eval mode (batch order is fixed, so
        the same model gives bit-identical values)."""
        self.module_.eval()
        out = np.empty(len(windows), dtype=np.float64)
        bs = self._batch_size()
        with torch.inference_mode():
            for i in range(0, len(windows), bs):
                idx = np.arange(i, min(i + bs, len(windows)))
                x = self._to_input(self._tensor(windows.gather(idx)))
                out[idx] = self._errors(self.module_, x).double().cpu().numpy()
        return out

    def _windows_of(self, features: list[np.ndarray]) -> WindowSet:
        length, hop = self._window()
        return WindowSet([self._standardise(f) for f in features], length, hop)

    def _score(self, features: list[np.ndarray], clips: list[ClipInfo]) -> np.ndarray:
        return self._clip_scores(self._windows_of(features), clips)

    def validation_loss(self, features: list[np.ndarray]) -> float:
        """Mean per-window loss of these clips in eval mode: what ``history_``'s ``val_loss``
        reports for the validation clips (``features[i]`` for ``i`` in ``val_indices_``)."""
        self._check_fitted()
        feats = self._check_features(features, fitting=False)
        return float(self._window_errors(self._windows_of(feats)).mean())

    # --- persistence ---------------------------------------------------------------------------

    def _save_state(self, folder: Path) -> list[str]:
        state = {k: v.detach().cpu() for k, v in self.module_.state_dict().items()}
        extra = self._extra_state()
        extra_t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in extra.items()}
        torch.save({"model": state, "extra": extra_t}, folder / WEIGHTS_FILE)
        return [WEIGHTS_FILE]

    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        path = folder / WEIGHTS_FILE
        if not path.is_file():
            raise ValueError(f"{folder} has {meta['name']}'s detector.json but no {WEIGHTS_FILE}")
        # weights_only: a tensors-only file, nothing is unpickled beyond tensors and dicts.
        blob = torch.load(path, map_location="cpu", weights_only=True)
        self.device_ = resolve_device(device or "auto")
        module = self._build_module(self.n_mels_)
        module.load_state_dict(blob["model"])
        self.module_ = module.to(self.device_).eval()
        self.val_indices_ = np.zeros(0, dtype=np.int64)
        self._set_extra_state({k: v.numpy() for k, v in blob["extra"].items()})

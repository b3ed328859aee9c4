"""``emb-knn``: auxiliary classification + k nearest neighbours in embedding space.

The recipe of the strongest DCASE 2023-2024 first-shot systems, compactly:

1. **Classes** (:mod:`.tasks`). Every training clip gets a class from its name (machine type x
   section x attribute values); where the names tell nothing apart (one machine type without
   attributes or sections), a self-supervised task supplies the classes: each window is
   shifted in frequency (or stretched in time) at random and the network tells how.
   Statistics exposure adds an "exposed" twin of every class.
2. **Network** (:mod:`.network`, :mod:`.heads`). A compact CNN on standardised log-mel windows
   ``(1, n_mels, frames)`` to an embedding, trained on *all* machine types at once
   (:attr:`joint`) with an angular-margin loss head (ArcFace, or sub-cluster AdaCos), mixup
   and SpecAugment (on by default, see :attr:`default_augmentation`). The head is discarded
   after training.
3. **Embedding of a clip.** The mean of its windows' embeddings, L2-normalised: ``(emb,)``.
4. **Score** (:mod:`.banks`). The cosine distance to the ``k`` nearest training embeddings of
   the same machine type and section, separately against the source and the target training
   clips, the smaller of the two. Training-clip scores (for the decision threshold) leave each
   clip out of its own neighbours; otherwise every training clip would be at distance 0.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdcli.detectors.emb_knn.banks import Banks, build_banks, density_scales, knn_scores
from asdcli.detectors.emb_knn.heads import loss_head
from asdcli.detectors.emb_knn.network import EmbeddingNet
from asdcli.detectors.emb_knn.tasks import (
    AUTO_TASK,
    Pretext,
    class_keys,
    expose,
    names_tell_apart,
    pretext,
)
from asdcli.detectors.params import EmbKNNParams
from asdcli.detectors.torch_base import TorchDetector
from asdcli.detectors.windows import WindowSet
from asdcli.naming import ClipInfo

__all__ = ["EmbKNNDetector"]

log = logging.getLogger(__name__)

BANKS_FILE = "banks.json"


class EmbKNNDetector(TorchDetector):
    """Auxiliary classification embeddings + cosine k-NN (see the module docstring).

    Attributes (after :meth:`fit`, besides :class:`TorchDetector`'s)
    ---------------------------------------------------------------
    classes_ : list of str
        The classes the network was trained to tell apart (before exposure): name classes,
        each crossed with the self-supervised task's transformations where one was used
        (``"fan|00|shift=+2"``).
    bank_ : ndarray of float32, shape (n_bank, embedding)
        L2-normalised training embeddings (plus oversampled target points).
    bank_group_ : ndarray of int, shape (n_bank,)
        Index into :attr:`groups_` of each bank row.
    groups_ : list of str
        ``"machine|section|domain"`` of each neighbour bank.
    bank_scale_ : ndarray of float64, shape (n_groups,)
        Each bank's distances are divided by this (1 unless ``density_norm``).
    """

    name: ClassVar[str] = "emb-knn"
    params_cls: ClassVar[type[EmbKNNParams]] = EmbKNNParams
    params: EmbKNNParams
    joint: ClassVar[bool] = True
    default_augmentation: ClassVar[dict[str, float]] = {
        "mixup": 1.0,
        "time_mask": 8,
        "freq_mask": 8,
    }
    saved_arrays: ClassVar[tuple[str, ...]] = ("bank_", "bank_group_", "bank_scale_")
    channels_last: ClassVar[bool] = True

    classes_: list[str]
    bank_: np.ndarray
    bank_group_: np.ndarray
    bank_scale_: np.ndarray
    groups_: list[str]
    _head: nn.Module
    _labels: torch.Tensor  # (n_clips,): each training clip's class, untransformed
    _pretext: Pretext | None = None

    # --- network and classes -------------------------------------------------------------------

    def _window(self) -> tuple[int, int]:
        return self.params.frames, self.params.hop or max(1, self.params.frames // 2)

    def _build_module(self, n_mels: int) -> nn.Module:
        p = self.params
        return EmbeddingNet(n_mels, list(p.channels), p.embedding, p.pooling)

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, frames) -> (B, 1, n_mels, frames)``."""
        return windows.unsqueeze(1)

    def _build_head(self, clips: list[ClipInfo]) -> nn.Module:
        """The classes (:mod:`.tasks`) and the loss head over them (and their exposed twins)."""
        p = self.params
        keys = class_keys(clips, p.classes)
        names = sorted(set(keys))
        task: str = p.self_supervised
        if task == "auto":
            task = "none" if names_tell_apart(clips, p.classes) else AUTO_TASK
            if task != "none":
                log.info(
                    "emb-knn: the clip names give %d class(es) (%s); learning the "
                    "self-supervised task %r with them",
                    len(names),
                    ", ".join(names[:3]),
                    task,
                )
        self._pretext = pretext(task, self.n_mels_)
        n_transforms = 1 if self._pretext is None else len(self._pretext)
        exposed = task != "none" and p.exposure > 0
        if len(names) * n_transforms * (2 if exposed else 1) < 2:
            raise ValueError(
                "emb-knn needs at least two classes to learn from, but every training clip "
                f"has the same machine type, section and domain ({names[0]}); train it on "
                "several machine types or sections, or give it a self-supervised task "
                "(-p self_supervised=auto)"
            )
        if self._pretext is None:
            self.classes_ = names
        else:
            self.classes_ = [f"{k}|{t}" for k in names for t in self._pretext.names]
        index = {k: i * n_transforms for i, k in enumerate(names)}
        self._labels = torch.tensor([index[k] for k in keys], dtype=torch.long)
        self._head = loss_head(p, self._n_outputs()).to(self.device_)
        return self._head

    def _n_outputs(self) -> int:
        """Classes of the loss head: each class twice (as is, exposed) with exposure."""
        return len(self.classes_) * (2 if self.params.exposure > 0 else 1)

    def _targets(self, clip_ids: np.ndarray, transform: np.ndarray | None = None) -> torch.Tensor:
        """One-hot targets ``(B, n_outputs)`` of windows of clips ``clip_ids`` (indices into
        ``fit``'s clips), transformed as self-supervised class ``transform`` ``(B,)``."""
        labels = self._labels[torch.from_numpy(clip_ids)]
        if transform is not None:
            labels = labels + torch.from_numpy(transform)
        return F.one_hot(labels, self._n_outputs()).float().to(self.device_)

    def _expose(
        self, windows: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Statistics exposure of a batch (:func:`.tasks.expose`)."""
        return expose(windows, targets, self.params.exposure, len(self.classes_), self._aug_rng)

    def _batch_loss(self, windows: WindowSet, idx: np.ndarray) -> torch.Tensor:
        """Classification loss of the transformed, exposed, mixed-up, masked windows."""
        x = self._tensor(windows.gather(idx))
        transform = None
        if self._pretext is not None:
            transform = self._aug_rng.integers(0, len(self._pretext), len(idx))
            x = self._pretext.apply(x, transform)
        x, targets = self._expose(x, self._targets(windows.ids_of(idx), transform))
        x, targets = self._mixup(x, targets)
        emb = self.module_(self._to_input(self._spec_augment(x)))
        loss: torch.Tensor = self._head(emb, targets)
        return loss

    def _val_loss(self, windows: WindowSet) -> float:
        """Classification loss of the held-out clips' windows, without augmentation. With a
        self-supervised task, window ``i`` is transformed as class ``i mod n_transforms``
        (fixed, so every epoch sees the same task): early stopping then watches the task
        that is learned, not only the untransformed class."""
        total = 0.0
        with torch.inference_mode():
            for idx, x in self._eval_batches(windows):
                transform = None
                if self._pretext is not None:
                    transform = idx % len(self._pretext)
                    recorded = x.squeeze(1)  # the module's input is (B, 1, n_mels, frames)
                    x = self._to_input(self._pretext.apply(recorded, transform))
                targets = self._targets(windows.ids_of(idx), transform)
                loss = self._head(self.module_(x), targets)
                total += float(loss) * len(idx)
        return total / len(windows)

    # --- embeddings and neighbours ---------------------------------------------------------------

    def embed(self, windows: WindowSet) -> np.ndarray:
        """L2-normalised clip embeddings ``(n_clips, embedding)`` float32: the mean of each
        clip's window embeddings."""
        sums = np.zeros((windows.n_clips, self.params.embedding), dtype=np.float64)
        with torch.inference_mode():
            for idx, x in self._eval_batches(windows):
                np.add.at(sums, windows.clip_of[idx], self.module_(x).double().cpu().numpy())
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        emb: np.ndarray = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
        return emb

    def _after_fit(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        """The neighbour banks; returns the training clips' leave-one-out scores."""
        p = self.params
        banks, loo = build_banks(
            self.embed(windows),
            clips,
            k=p.k,
            source_means=p.source_means,
            density_norm=p.density_norm,
            oversample_target=p.oversample_target,
            seed=self.train.seed,
        )
        self.groups_, self.bank_, self.bank_group_, self.bank_scale_ = banks
        return loo

    def _banks(self) -> Banks:
        return Banks(self.groups_, self.bank_, self.bank_group_, self.bank_scale_)

    def _knn(
        self, emb: np.ndarray, clips: list[ClipInfo], bank_clip: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores ``(n_clips,)`` of embeddings ``emb`` (:func:`.banks.knn_scores`)."""
        return knn_scores(emb, clips, self._banks(), self.params.k, bank_clip)

    def _bank_scales(self, emb: np.ndarray, group_of: np.ndarray) -> np.ndarray:
        """``(n_groups,)`` scales of :attr:`groups_` (1 unless ``density_norm``)."""
        if not self.params.density_norm:
            return np.ones(len(self.groups_))
        return density_scales(emb, group_of, self.groups_, self.params.k)

    def _clip_scores(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        return self._knn(self.embed(windows), clips)

    # --- one machine type's share of a joint model ------------------------------------------------

    def restrict(self, machine: str, keep: np.ndarray) -> Self:
        """A copy for one machine type: its banks only, ``train_scores_[keep]``. The network
        is shared (not copied)."""
        rows = [i for i, g in enumerate(self.groups_) if g.split("|")[0] == machine]
        if not rows:
            raise ValueError(f"this emb-knn model has no training clips of {machine!r}")
        sub = copy.copy(self)
        remap = np.full(len(self.groups_), -1, dtype=np.int64)
        remap[rows] = np.arange(len(rows))
        mask = np.isin(self.bank_group_, rows)
        sub.groups_ = [self.groups_[i] for i in rows]
        sub.bank_scale_ = self.bank_scale_[rows]
        sub.bank_ = self.bank_[mask]
        sub.bank_group_ = remap[self.bank_group_[mask]]
        sub.train_scores_ = self.train_scores_[np.asarray(keep, dtype=bool)]
        return sub

    # --- persistence ---------------------------------------------------------------------------

    def _save_state(self, folder: Path) -> list[str]:
        files = super()._save_state(folder)
        doc = {"classes": self.classes_, "groups": self.groups_}
        (folder / BANKS_FILE).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return [*files, BANKS_FILE]

    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        path = folder / BANKS_FILE
        if not path.is_file():
            raise ValueError(f"{folder} has emb-knn's detector.json but no {BANKS_FILE}")
        doc = json.loads(path.read_text(encoding="utf-8"))
        self.classes_, self.groups_ = list(doc["classes"]), list(doc["groups"])
        super()._load_state(folder, meta, device)

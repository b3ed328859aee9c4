"""``emb-knn``: auxiliary attribute classification + k nearest neighbours in embedding space.

The recipe of the strongest DCASE 2023-2024 first-shot systems, compactly:

1. **Classes.** Every training clip gets a class from what its name says: machine type x
   section x attribute values (``params.classes == "attributes"``), or machine type x section
   for clips without attributes (and when ``classes == "section"``). If that leaves a single
   class, the domain is added; a single class after that is refused (nothing to learn).
2. **Network.** A compact CNN on standardised log-mel windows ``(1, n_mels, frames)``: blocks of
   two 3x3 convolutions + BatchNorm + ReLU and a 2x2 max-pool, a mean over time (frequency
   position is kept: it is what tells machines apart), a linear layer to the embedding and a
   BatchNorm. It is trained on *all* machine types at once (:attr:`joint`), with an
   angular-margin loss (ArcFace, or sub-cluster AdaCos with an adaptive scale) on top, mixup and
   SpecAugment (on by default, see :attr:`default_augmentation`).
3. **Embedding of a clip.** The mean of its windows' embeddings, L2-normalised: ``(emb,)``.
4. **Score.** The cosine distance ``1 - cos`` to the ``k`` nearest training embeddings of the
   same machine type and section, computed separately against the source and the target
   training clips and combined by taking the smaller, so ten target clips count as much as a
   thousand source ones. ``oversample_target`` adds SMOTE-style points interpolated between
   pairs of target embeddings. A clip whose section is unknown to the model is compared with
   every section of its machine type (or of every machine type when that is unknown too).

Training-clip scores (for the decision threshold) leave each clip out of its own neighbours;
otherwise every training clip would be at distance 0.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdcli.detectors.params import EmbKNNParams
from asdcli.detectors.torch_base import TorchDetector
from asdcli.detectors.windows import WindowSet
from asdcli.naming import ClipInfo

BANKS_FILE = "banks.json"
DOMAINS = ("source", "target")


class EmbeddingNet(nn.Module):
    """``(B, 1, n_mels, frames) -> (B, embedding)`` (not normalised)."""

    def __init__(self, n_mels: int, channels: list[int], embedding: int, pooling: str = "mean"):
        super().__init__()
        self.pooling = pooling
        blocks: list[nn.Module] = []
        size = n_mels
        for c_in, c_out in pairwise([1, *channels]):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            size = -(-size // 2)
        self.features = nn.Sequential(*blocks)
        pooled = channels[-1] * size * (2 if pooling == "mean_max" else 1)
        self.head = nn.Sequential(nn.Linear(pooled, embedding), nn.BatchNorm1d(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, C, F', T')
        pooled = h.mean(dim=3)  # over time: frequency position is kept
        if self.pooling == "mean_max":  # the max keeps short events the mean dilutes
            pooled = torch.cat([pooled, h.amax(dim=3)], dim=1)
        return self.head(pooled.flatten(1))


class ArcFaceHead(nn.Module):
    """Additive angular margin softmax (Deng et al., 2019) with soft (mixup) targets.

    ``forward(emb (B, E), targets (B, n_classes) summing to 1) -> scalar loss``. The margin is
    added to the angle of every class a sample belongs to, weighted by its share.
    """

    def __init__(self, embedding: int, n_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embedding))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(emb), F.normalize(self.weight))  # (B, n_classes)

    def forward(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(emb).clamp(-1 + 1e-7, 1 - 1e-7)
        with_margin = torch.cos(torch.acos(cos) + self.margin)
        # A class a sample belongs to (target > 0) gets the margin; mixup gives two such classes.
        logits = self.scale * torch.where(targets > 0, with_margin, cos)
        return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class SubClusterAdaCosHead(nn.Module):
    """Sub-cluster AdaCos (Wilkinghoff, 2021): ``sub_clusters`` centres per class and a scale
    that adapts to the batch (no margin to tune).

    ``forward(emb (B, E), targets (B, n_classes)) -> scalar loss``; a class's logit is the
    log-sum-exp of its centres' scaled cosines.
    """

    scale: torch.Tensor

    def __init__(self, embedding: int, n_classes: int, sub_clusters: int):
        super().__init__()
        self.n_classes, self.k = n_classes, sub_clusters
        self.weight = nn.Parameter(torch.empty(n_classes * sub_clusters, embedding))
        nn.init.xavier_uniform_(self.weight)
        # A buffer so the adapted scale is part of the state that early stopping restores.
        self.register_buffer("scale", torch.tensor(math.sqrt(2) * math.log(max(n_classes - 1, 2))))

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight))
        return cos.view(-1, self.n_classes, self.k).max(dim=2).values  # (B, n_classes)

    def forward(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        cos = cos.view(-1, self.n_classes, self.k)
        if self.training:
            with torch.no_grad():  # AdaCos: s = log(B_avg) / cos(median angle of true classes)
                s = self.scale
                true = targets > 0
                others = torch.exp(s * cos).sum(dim=2).masked_fill(true, 0).sum(dim=1)
                theta = torch.acos((cos.max(dim=2).values * targets).sum(dim=1))
                median = torch.clamp(theta.median(), max=math.pi / 4)
                b_avg = torch.clamp(others.mean(), min=1e-12)
                self.scale.copy_(torch.log(b_avg) / torch.cos(median))
        logits = torch.logsumexp(self.scale * cos, dim=2)
        return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class _Trainable(nn.Module):
    """The embedding network and its loss head, trained and early-stopped together."""

    def __init__(self, net: nn.Module, head: nn.Module):
        super().__init__()
        self.net, self.head = net, head


def class_keys(clips: Sequence[ClipInfo], by: str) -> list[str]:
    """One class name per clip (see the module docstring, step 1)."""

    def key(c: ClipInfo, with_domain: bool) -> str:
        parts = [c.machine, c.section]
        if by == "attributes" and c.attributes:
            parts += [f"{k}={v}" for k, v in c.attributes.items()]
        if with_domain:
            parts.append(c.domain)
        return "|".join(parts)

    keys = [key(c, False) for c in clips]
    if len(set(keys)) < 2:
        keys = [key(c, True) for c in clips]
    return keys


def _group(clip: ClipInfo) -> str:
    """The neighbour bank a training clip joins: machine|section|domain (unknown = source)."""
    domain = "target" if clip.domain == "target" else "source"
    return f"{clip.machine}|{clip.section}|{domain}"


class EmbKNNDetector(TorchDetector):
    """Auxiliary classification embeddings + cosine k-NN (see the module docstring).

    Attributes (after :meth:`fit`, besides :class:`TorchDetector`'s)
    ---------------------------------------------------------------
    classes_ : list of str
        The class names the network was trained to tell apart.
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

    classes_: list[str]
    _both: _Trainable
    bank_: np.ndarray
    bank_group_: np.ndarray
    bank_scale_: np.ndarray
    groups_: list[str]

    # --- network -------------------------------------------------------------------------------

    def _window(self) -> tuple[int, int]:
        return self.params.frames, self.params.hop or max(1, self.params.frames // 2)

    def _build_module(self, n_mels: int) -> nn.Module:
        p = self.params
        return EmbeddingNet(n_mels, list(p.channels), p.embedding, p.pooling)

    def _to_input(self, windows: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, frames) -> (B, 1, n_mels, frames)``."""
        return windows.unsqueeze(1)

    def _prepare(self, clips: list[ClipInfo]) -> None:
        keys = class_keys(clips, self.params.classes)
        self.classes_ = sorted(set(keys))
        if len(self.classes_) < 2:
            raise ValueError(
                "emb-knn needs at least two classes to learn from, but every training clip "
                f"has the same machine type, section and domain ({self.classes_[0]}); train it "
                "on several machine types or sections, or use another detector"
            )
        index = {k: i for i, k in enumerate(self.classes_)}
        self._labels = torch.tensor([index[k] for k in keys], dtype=torch.long)

    def _trainable(self) -> nn.Module:
        if not hasattr(self, "_both") or self._both.net is not self.module_:
            p, n = self.params, self._n_outputs()
            head: nn.Module
            if p.loss == "arcface":
                head = ArcFaceHead(p.embedding, n, p.margin, p.scale)
            else:
                head = SubClusterAdaCosHead(p.embedding, n, p.sub_clusters)
            self._both = _Trainable(self.module_, head.to(self.device_))
        return self._both

    def _n_outputs(self) -> int:
        """Classes of the loss head: each class twice (as is, exposed) with exposure."""
        return len(self.classes_) * (2 if self.params.exposure > 0 else 1)

    def _targets(self, clip_ids: np.ndarray) -> torch.Tensor:
        labels = self._labels[torch.from_numpy(clip_ids)]
        return F.one_hot(labels, self._n_outputs()).float().to(self.device_)

    def _expose(
        self, windows: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Statistics exposure on ``(B, n_mels, frames)``: a share of the windows trade their
        per-band mean over time for a random partner's, and move to their class's exposed
        twin (class ``c`` -> ``c + n_classes``)."""
        n = round(self.params.exposure * windows.shape[0])
        if n == 0:
            return windows, targets
        rng = self._aug_rng
        idx = torch.from_numpy(rng.choice(windows.shape[0], n, replace=False))
        partner = torch.from_numpy(rng.integers(0, windows.shape[0], n))
        exposed, new_targets = windows.clone(), targets.clone()
        exposed[idx] = (
            windows[idx]
            - windows[idx].mean(dim=2, keepdim=True)
            + windows[partner].mean(dim=2, keepdim=True)
        )
        n_classes = len(self.classes_)
        new_targets[idx] = torch.roll(targets[idx], n_classes, dims=1)
        return exposed, new_targets

    def _batch_loss(
        self, module: nn.Module, windows: torch.Tensor, clip_ids: np.ndarray
    ) -> torch.Tensor:
        windows, targets = self._expose(windows, self._targets(clip_ids))
        mixed, perm, lam = self._mixup(windows)
        targets = lam * targets + (1 - lam) * targets[perm]
        emb = module(self._to_input(self._spec_augment(mixed)))
        loss: torch.Tensor = self._both.head(emb, targets)
        return loss

    def _val_loss(self, windows: WindowSet, clip_ids: np.ndarray) -> float:
        """Classification loss of the held-out clips' windows (no augmentation)."""
        self._both.eval()
        total, bs = 0.0, self._batch_size()
        with torch.inference_mode():
            for i in range(0, len(windows), bs):
                idx = np.arange(i, min(i + bs, len(windows)))
                emb = self.module_(self._to_input(self._tensor(windows.gather(idx))))
                loss = self._both.head(emb, self._targets(clip_ids[windows.clip_of[idx]]))
                total += float(loss) * len(idx)
        return total / len(windows)

    # --- embeddings and neighbours ---------------------------------------------------------------

    def embed(self, windows: WindowSet) -> np.ndarray:
        """L2-normalised clip embeddings ``(n_clips, embedding)`` float32: the mean of each
        clip's window embeddings."""
        self.module_.eval()
        bs = self._batch_size()
        sums = np.zeros((windows.n_clips, self.params.embedding), dtype=np.float64)
        with torch.inference_mode():
            for i in range(0, len(windows), bs):
                idx = np.arange(i, min(i + bs, len(windows)))
                emb = self.module_(self._to_input(self._tensor(windows.gather(idx))))
                np.add.at(sums, windows.clip_of[idx], emb.double().cpu().numpy())
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)

    def _after_fit(self, windows: WindowSet, clips: list[ClipInfo]) -> None:
        emb = self.embed(windows)
        groups = [_group(c) for c in clips]
        self.groups_ = sorted(set(groups))
        index = {g: i for i, g in enumerate(self.groups_)}
        group_of = np.array([index[g] for g in groups], dtype=np.int64)
        rows, owners, clip_of = [], [], []  # bank rows, their bank, the clip they are (or -1)
        for g, name in enumerate(self.groups_):
            members = np.flatnonzero(group_of == g)
            n_means = self.params.source_means
            if name.endswith("|source") and 0 < n_means < len(members):
                rows.append(self._kmeans(emb[members], n_means))
                clip_of.append(np.full(n_means, -1))
            else:
                rows.append(emb[members])
                clip_of.append(members)
            owners.append(np.full(len(rows[-1]), g))
        self.bank_ = np.concatenate(rows).astype(np.float32)
        self.bank_group_ = np.concatenate(owners).astype(np.int64)
        self.bank_scale_ = self._bank_scales(emb, group_of)
        # Training clips' scores leave the clip itself out of the bank (k-means centres stay:
        # each averages many clips). Synthetic target points join after, as for test clips.
        self._loo_scores: np.ndarray | None = self._knn(emb, clips, np.concatenate(clip_of))
        extra, extra_group = self._oversample(emb, group_of)
        self.bank_ = np.concatenate([self.bank_, extra]).astype(np.float32)
        self.bank_group_ = np.concatenate([self.bank_group_, extra_group])

    def _bank_scales(self, emb: np.ndarray, group_of: np.ndarray) -> np.ndarray:
        """``(n_groups,)``: 1, or with ``density_norm`` the mean leave-one-out k-NN distance
        among each bank's training clips (a bank of one borrows the mean scale of its section,
        else of its machine type)."""
        scales = np.ones(len(self.groups_))
        if not self.params.density_norm:
            return scales
        found = np.full(len(self.groups_), np.nan)
        for g in range(len(self.groups_)):
            e = emb[group_of == g].astype(np.float64)
            if len(e) < 2:
                continue
            sims = e @ e.T
            np.fill_diagonal(sims, -np.inf)
            k = min(self.params.k, len(e) - 1)
            top = -np.sort(-sims, axis=1)[:, :k]
            found[g] = max(float((1.0 - top.mean(axis=1)).mean()), 1e-6)
        for g, name in enumerate(self.groups_):
            if np.isfinite(found[g]):
                scales[g] = found[g]
                continue
            # A bank of one: borrow the mean scale of its section's banks, else its machine's.
            for prefix in (name.rsplit("|", 1)[0] + "|", name.split("|")[0] + "|", ""):
                same = [found[h] for h, n in enumerate(self.groups_) if n.startswith(prefix)]
                if np.isfinite(same).any():
                    scales[g] = float(np.nanmean(same))
                    break
        return scales

    def _kmeans(self, emb: np.ndarray, n: int) -> np.ndarray:
        """``n`` spherical k-means centres (L2-normalised) of ``emb`` ``(m, E)``."""
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=n, n_init=3, random_state=self.train.seed).fit(emb)
        c = km.cluster_centers_
        return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)

    def _oversample(self, emb: np.ndarray, group_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SMOTE-style target points: ``oversample_target`` per target bank, each on the segment
        between two random members (re-normalised)."""
        n_extra = self.params.oversample_target
        rng = np.random.default_rng(self.train.seed + 2)
        points, owners = [np.zeros((0, emb.shape[1]), np.float32)], [np.zeros(0, np.int64)]
        for g, name in enumerate(self.groups_):
            members = np.flatnonzero(group_of == g)
            if not n_extra or not name.endswith("|target") or len(members) < 2:
                continue
            a = emb[rng.choice(members, n_extra)]
            b = emb[rng.choice(members, n_extra)]
            p = a + rng.uniform(0, 1, (n_extra, 1)) * (b - a)
            points.append(p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12))
            owners.append(np.full(n_extra, g, dtype=np.int64))
        return np.concatenate(points).astype(np.float32), np.concatenate(owners)

    def _candidate_groups(self, clip: ClipInfo) -> list[int]:
        """Banks a clip is compared with: its machine and section, else its machine, else all."""
        for match in (
            lambda m, s: m == clip.machine and s == clip.section,
            lambda m, s: m == clip.machine,
            lambda m, s: True,
        ):
            found = [i for i, g in enumerate(self.groups_) if match(*g.split("|")[:2])]
            if found:
                return found
        return []

    def _knn(
        self, emb: np.ndarray, clips: list[ClipInfo], bank_clip: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores ``(n_clips,)``: min over candidate banks of the mean cosine distance to the
        ``k`` nearest members. ``bank_clip`` ``(n_bank,)``: which query each bank row is
        (-1: none); a query never counts itself as a neighbour."""
        sims = emb.astype(np.float64) @ self.bank_.T.astype(np.float64)  # (n_clips, n_bank)
        if bank_clip is not None:
            rows = np.flatnonzero(bank_clip >= 0)
            sims[bank_clip[rows], rows] = -np.inf
        scores = np.full(len(emb), np.inf)
        cache: dict[tuple[str, str], list[int]] = {}
        for i, clip in enumerate(clips):
            groups = cache.setdefault((clip.machine, clip.section), self._candidate_groups(clip))
            for g in groups:
                s = sims[i, self.bank_group_ == g]
                s = s[np.isfinite(s)]
                if s.size == 0:
                    continue
                k = min(self.params.k, s.size)
                top = np.partition(s, s.size - k)[s.size - k :]
                scores[i] = min(scores[i], (1.0 - float(top.mean())) / self.bank_scale_[g])
        # A clip with no neighbour at all (a bank of one, left out): the largest distance.
        return np.where(np.isfinite(scores), scores, 2.0)

    def _clip_scores(self, windows: WindowSet, clips: list[ClipInfo]) -> np.ndarray:
        # Right after _after_fit, the template asks for the training clips' scores: those are
        # the leave-one-out ones already computed.
        loo, self._loo_scores = getattr(self, "_loo_scores", None), None
        if loo is not None:
            return loo
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

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank_, "bank_group": self.bank_group_, "bank_scale": self.bank_scale_}

    def _set_extra_state(self, state: dict[str, np.ndarray]) -> None:
        self.bank_ = state["bank"].astype(np.float32)
        self.bank_group_ = state["bank_group"].astype(np.int64)
        self.bank_scale_ = state["bank_scale"].astype(np.float64)

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

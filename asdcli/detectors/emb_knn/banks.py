"""emb-knn's neighbour banks: which training embeddings a clip is compared with, and how.

Every training clip joins the bank of its machine type, section and domain
(``"machine|section|domain"``, unknown domains count as source). A clip's score is the cosine
distance ``1 - cos`` to the ``k`` nearest members of a bank, for each bank of its machine type
and section, and the smallest of those: so ten target clips count as much as a thousand source
ones. Refinements, each a parameter of :class:`~asdcli.detectors.params.EmbKNNParams`:

* ``source_means``: a source bank becomes that many spherical k-means centres, so the dense
  source bank and the sparse target bank give distances on one scale;
* ``density_norm``: each bank's distances are divided by the mean leave-one-out k-NN distance
  among its own training clips (LOF-like);
* ``oversample_target``: SMOTE-style points between pairs of target embeddings join the target
  banks.

Embeddings are L2-normalised rows, ``(n, embedding)``; everything here is numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from asdcli.naming import ClipInfo


class Banks(NamedTuple):
    """The neighbour banks of a model (:func:`build_banks`)."""

    groups: list[str]  # "machine|section|domain" of each bank
    bank: np.ndarray  # (n_bank, embedding) float32, unit rows
    bank_group: np.ndarray  # (n_bank,) int64: index into groups
    scale: np.ndarray  # (n_groups,) float64: each bank's distances are divided by it


def bank_name(clip: ClipInfo) -> str:
    """The bank a training clip joins: ``machine|section|domain`` (unknown domain = source)."""
    domain = "target" if clip.domain == "target" else "source"
    return f"{clip.machine}|{clip.section}|{domain}"


def candidate_banks(groups: Sequence[str], clip: ClipInfo) -> list[int]:
    """Banks a clip is compared with: its machine and section, else its machine, else all."""
    for match in (
        lambda m, s: m == clip.machine and s == clip.section,
        lambda m, s: m == clip.machine,
        lambda m, s: True,
    ):
        found = [i for i, g in enumerate(groups) if match(*g.split("|")[:2])]
        if found:
            return found
    return []


def knn_scores(
    emb: np.ndarray,
    clips: Sequence[ClipInfo],
    banks: Banks,
    k: int,
    bank_clip: np.ndarray | None = None,
) -> np.ndarray:
    """Scores ``(n_clips,)`` of embeddings ``emb`` ``(n_clips, E)``: min over the candidate
    banks of the mean cosine distance to the ``k`` nearest members, over the bank's scale.
    ``bank_clip`` ``(n_bank,)``: which query each bank row is (-1: none); a query never counts
    itself as a neighbour. A clip with no neighbour at all (a bank of one, left out) gets the
    largest distance, 2."""
    sims = emb.astype(np.float64) @ banks.bank.T.astype(np.float64)  # (n_clips, n_bank)
    if bank_clip is not None:
        rows = np.flatnonzero(bank_clip >= 0)
        sims[bank_clip[rows], rows] = -np.inf
    scores = np.full(len(emb), np.inf)
    cache: dict[tuple[str, str], list[int]] = {}
    for i, clip in enumerate(clips):
        groups = cache.setdefault((clip.machine, clip.section), candidate_banks(banks.groups, clip))
        for g in groups:
            s = sims[i, banks.bank_group == g]
            s = s[np.isfinite(s)]
            if s.size == 0:
                continue
            kk = min(k, s.size)
            top = np.partition(s, s.size - kk)[s.size - kk :]
            scores[i] = min(scores[i], (1.0 - float(top.mean())) / banks.scale[g])
    return np.where(np.isfinite(scores), scores, 2.0)


def density_scales(
    emb: np.ndarray, group_of: np.ndarray, groups: Sequence[str], k: int
) -> np.ndarray:
    """``(n_groups,)``: the mean leave-one-out k-NN distance among each bank's training clips
    (``group_of`` ``(n_clips,)`` their bank). A bank of one borrows the mean scale of its
    section's banks, else of its machine type's, else of all."""
    scales = np.ones(len(groups))
    found = np.full(len(groups), np.nan)
    for g in range(len(groups)):
        e = emb[group_of == g].astype(np.float64)
        if len(e) < 2:
            continue
        sims = e @ e.T
        np.fill_diagonal(sims, -np.inf)
        kk = min(k, len(e) - 1)
        top = -np.sort(-sims, axis=1)[:, :kk]
        found[g] = max(float((1.0 - top.mean(axis=1)).mean()), 1e-6)
    for g, name in enumerate(groups):
        if np.isfinite(found[g]):
            scales[g] = found[g]
            continue
        for prefix in (name.rsplit("|", 1)[0] + "|", name.split("|")[0] + "|", ""):
            same = [found[h] for h, n in enumerate(groups) if n.startswith(prefix)]
            if np.isfinite(same).any():
                scales[g] = float(np.nanmean(same))
                break
    return scales


def kmeans_centres(emb: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` spherical k-means centres (L2-normalised) of ``emb`` ``(m, E)``, ``(n, E)``."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(emb)
    c = km.cluster_centers_
    return np.asarray(c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12))


def oversample_targets(
    emb: np.ndarray, group_of: np.ndarray, groups: Sequence[str], n_extra: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE-style target points: ``n_extra`` per target bank of two or more clips, each on the
    segment between two random members (re-normalised) -> ``(points (n, E) float32, their
    bank (n,) int64)``."""
    rng = np.random.default_rng(seed)
    points, owners = [np.zeros((0, emb.shape[1]), np.float32)], [np.zeros(0, np.int64)]
    for g, name in enumerate(groups):
        members = np.flatnonzero(group_of == g)
        if not n_extra or not name.endswith("|target") or len(members) < 2:
            continue
        a = emb[rng.choice(members, n_extra)]
        b = emb[rng.choice(members, n_extra)]
        p = a + rng.uniform(0, 1, (n_extra, 1)) * (b - a)
        points.append(p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12))
        owners.append(np.full(n_extra, g, dtype=np.int64))
    return np.concatenate(points).astype(np.float32), np.concatenate(owners)


def build_banks(
    emb: np.ndarray,
    clips: Sequence[ClipInfo],
    *,
    k: int,
    source_means: int,
    density_norm: bool,
    oversample_target: int,
    seed: int,
) -> tuple[Banks, np.ndarray]:
    """The banks of the training embeddings ``emb`` ``(n_clips, E)`` (module docstring), and
    the training clips' scores ``(n_clips,)`` with each clip left out of its own bank (k-means
    centres stay: each averages many clips; the oversampled points join after, as for test
    clips)."""
    names = [bank_name(c) for c in clips]
    groups = sorted(set(names))
    index = {g: i for i, g in enumerate(groups)}
    group_of = np.array([index[g] for g in names], dtype=np.int64)
    rows, owners, clip_of = [], [], []  # bank rows, their bank, the clip they are (or -1)
    for g, name in enumerate(groups):
        members = np.flatnonzero(group_of == g)
        if name.endswith("|source") and 0 < source_means < len(members):
            rows.append(kmeans_centres(emb[members], source_means, seed))
            clip_of.append(np.full(source_means, -1))
        else:
            rows.append(emb[members])
            clip_of.append(members)
        owners.append(np.full(len(rows[-1]), g))
    scale = density_scales(emb, group_of, groups, k) if density_norm else np.ones(len(groups))
    real = Banks(
        groups,
        np.concatenate(rows).astype(np.float32),
        np.concatenate(owners).astype(np.int64),
        scale,
    )
    loo = knn_scores(emb, clips, real, k, np.concatenate(clip_of))
    extra, extra_group = oversample_targets(emb, group_of, groups, oversample_target, seed + 2)
    banks = Banks(
        groups,
        np.concatenate([real.bank, extra]).astype(np.float32),
        np.concatenate([real.bank_group, extra_group]),
        scale,
    )
    return banks, loo

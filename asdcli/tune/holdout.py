"""The holdout: labelled test clips the search never sees, and scores over a clip subset.

The objective of `asd tune` is the official score on the store's labelled test clips, as DCASE
development sets are used. :func:`split_holdout` first sets a share of them aside, stratified
by machine type, section, domain and label, so the best trial can be scored at the end on clips
that did not guide the search. Clips are named ``machine/file name``
(:func:`asdcli.naming.clip_key`), which the submission files keep unique, so the split is the
same on every machine that holds the same data, wherever its folders are.

:func:`subset_score` computes the DCASE metrics (:mod:`asdcli.metrics`) of one run over a
subset of its scored clips.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asdcli import metrics as M
from asdcli.errors import RunError
from asdcli.naming import clip_key
from asdcli.runs import Run
from asdcli.score import CLIP_TABLE, CLIP_TABLE_HEADER
from asdcli.store import ClipRecord

LABELS = ("normal", "anomaly")


@dataclass(frozen=True)
class HoldoutSplit:
    """The labelled test clips, as :func:`clip_key` names: searched on, or held out.

    ``search`` and ``holdout`` are disjoint; together they are every labelled test clip of the
    machine types tuned.
    """

    search: frozenset[str]
    holdout: frozenset[str]
    fraction: float

    def fingerprint(self) -> str:
        """Short hash of both clip sets: the same split, the same print."""
        h = hashlib.sha1()
        for name, keys in (("search", self.search), ("holdout", self.holdout)):
            h.update(f"{name}\n".encode())
            for key in sorted(keys):
                h.update(f"{key}\n".encode())
        return h.hexdigest()[:16]


def split_holdout(records: Iterable[ClipRecord], fraction: float, seed: int) -> HoldoutSplit:
    """Set ``fraction`` of the labelled test clips aside, stratified.

    Each stratum (machine, section, domain, label) gives ``round(fraction * n)`` of its ``n``
    clips to the holdout, chosen at random with ``seed``, but at most ``n - 1``: the search
    keeps at least one clip of every stratum. Clips of split ``train``, or without a known
    label, are in neither set.

    Returns the same split for the same clips and seed, in any order.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must be in [0, 1), not {fraction}")
    strata: dict[tuple[str, str, str, str], list[str]] = {}
    for r in records:
        if r.split == "test" and r.label in LABELS:
            strata.setdefault((r.machine, r.section, r.domain, r.label), []).append(
                clip_key(r.machine, r.name)
            )
    rng = np.random.default_rng(seed)
    search: set[str] = set()
    holdout: set[str] = set()
    for stratum in sorted(strata):
        keys = sorted(set(strata[stratum]))
        n_out = min(math.floor(fraction * len(keys) + 0.5), len(keys) - 1)
        order = rng.permutation(len(keys))
        holdout.update(keys[i] for i in order[:n_out])
        search.update(keys[i] for i in order[n_out:])
    return HoldoutSplit(frozenset(search), frozenset(holdout), fraction)


@dataclass(frozen=True)
class ClipScore:
    """One row of a run's clip table (``scores.csv``, written by `asd score`)."""

    machine: str
    section: str
    file: str
    domain: str
    label: str
    score: float
    decision: int

    @property
    def key(self) -> str:
        return clip_key(self.machine, self.file)


def read_clip_scores(run: Run) -> list[ClipScore]:
    """The clip table of a scored run.

    Raises
    ------
    RunError
        The run has not been scored, or the table does not parse.
    """
    path = run.scores_dir / CLIP_TABLE
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != CLIP_TABLE_HEADER:
                raise RunError(f"{path} has columns {reader.fieldnames}, not a clip table.")
            return [
                ClipScore(
                    row["machine"],
                    row["section"],
                    row["file"],
                    row["domain"],
                    row["label"],
                    float(row["score"]),
                    int(row["decision"]),
                )
                for row in reader
            ]
    except FileNotFoundError:
        raise RunError(f"Run {run.name} has no {CLIP_TABLE}; score it with `asd score`.") from None
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, KeyError) as exc:
        raise RunError(f"{path} cannot be read ({exc}).") from None


@dataclass
class SubsetScore:
    """The official score and its parts over a subset of a run's clips.

    ``auc_source``, ``auc_target`` and ``pauc`` are harmonic means over sections; ``None``
    where not computable (``skipped`` says which section value was left out).
    """

    official_score: float | None
    auc_source: float | None
    auc_target: float | None
    pauc: float | None
    n_clips: int
    clips: frozenset[str]
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the clip names."""
        return {
            "official_score": self.official_score,
            "auc_source": self.auc_source,
            "auc_target": self.auc_target,
            "pauc": self.pauc,
            "n_clips": self.n_clips,
            "skipped": list(self.skipped),
        }


def subset_score(
    rows: Iterable[ClipScore], keys: Collection[str], max_fpr: float = M.MAX_FPR
) -> SubsetScore:
    """DCASE metrics of the labelled clips of ``rows`` named in ``keys``, per section, pooled
    into the official score (:func:`asdcli.metrics.summarize`). Clips outside ``keys`` play no
    part: changing their scores changes nothing here."""
    wanted = set(keys)
    by_section: dict[tuple[str, str], list[ClipScore]] = {}
    used: set[str] = set()
    for r in rows:
        if r.key in wanted and r.label in LABELS:
            by_section.setdefault((r.machine, r.section), []).append(r)
            used.add(r.key)
    per_section = {
        sec: M.section_metrics(
            np.array([c.score for c in clips], dtype=float),
            np.array([int(c.label == "anomaly") for c in clips], dtype=int),
            np.array([c.domain for c in clips], dtype=str),
            np.array([c.decision for c in clips], dtype=int),
            max_fpr=max_fpr,
        )
        for sec, clips in sorted(by_section.items())
    }
    summary = M.summarize(per_section)
    means = summary["means"]
    return SubsetScore(
        official_score=summary["official_score"],
        auc_source=means["auc_source"]["harmonic"],
        auc_target=means["auc_target"]["harmonic"],
        pauc=means["pauc"]["harmonic"],
        n_clips=len(used),
        clips=frozenset(used),
        skipped=[s for s in summary["skipped"] if s.rsplit(": ", 1)[-1] in M.OFFICIAL_FIELDS],
    )

"""asd tune: the stratified holdout, and official scores over a clip subset (hand-made cases)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from asdcli.naming import clip_key
from asdcli.store import ClipRecord
from asdcli.tune.holdout import ClipScore, split_holdout, subset_score


def records(prefix: str = "/data") -> list[ClipRecord]:
    """Strata of 10, 5, 2 and 1 labelled test clips, plus clips no split may take."""
    out = []

    def add(machine, domain, label, n, split="test"):
        for _ in range(n):
            name = f"section_00_{domain}_{split}_{label}_{len(out):04d}.wav"
            out.append(
                ClipRecord(
                    name=name,
                    machine=machine,
                    section="00",
                    domain=domain,
                    split=split,
                    label=label,
                    path=f"{prefix}/{machine}/{split}/{name}",
                )
            )

    add("fan", "source", "normal", 10)
    add("fan", "source", "anomaly", 5)
    add("fan", "target", "normal", 2)
    add("fan", "target", "anomaly", 1)
    add("valve", "source", "normal", 5)
    add("fan", "source", "normal", 4, split="train")  # training clips: never evaluated
    add("fan", "source", "unknown", 3)  # no label: cannot be evaluated
    return out


def test_the_holdout_takes_its_share_of_every_stratum_and_nothing_else():
    recs = records()
    split = split_holdout(recs, 0.3, seed=0)
    assert not split.search & split.holdout
    labelled = {
        clip_key(r.machine, r.name) for r in recs if r.split == "test" and r.label != "unknown"
    }
    assert split.search | split.holdout == labelled
    by_stratum = Counter(
        (r.machine, r.domain, r.label) for r in recs if clip_key(r.machine, r.name) in split.holdout
    )
    # round(0.3 n), but the search keeps at least one clip of each stratum
    assert by_stratum == {
        ("fan", "source", "normal"): 3,
        ("fan", "source", "anomaly"): 2,
        ("fan", "target", "normal"): 1,
        ("valve", "source", "normal"): 2,
    }


def test_the_split_depends_on_the_clips_and_the_seed_only():
    recs = records()
    split = split_holdout(recs, 0.3, seed=0)
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    assert split_holdout(shuffled, 0.3, seed=0) == split
    # other folders holding the same files (another machine of a shared study): the same split
    assert split_holdout(records(prefix="/mnt/other"), 0.3, seed=0) == split
    assert split_holdout(recs, 0.3, seed=0).fingerprint() == split.fingerprint()
    other = split_holdout(recs, 0.3, seed=1)
    assert other.holdout != split.holdout and other.fingerprint() != split.fingerprint()
    nothing = split_holdout(recs, 0.0, seed=0)
    assert not nothing.holdout and nothing.search == split.search | split.holdout
    with pytest.raises(ValueError):
        split_holdout(recs, 1.0, seed=0)


def clip(name, domain, label, score, machine="fan"):
    return ClipScore(machine, "00", name, domain, label, score, int(score > 0.5))


SEARCH = [
    clip("s1", "source", "normal", 0.1),
    clip("s2", "source", "normal", 0.2),
    clip("t1", "target", "normal", 0.3),
    clip("t2", "target", "normal", 0.9),
    clip("a1", "source", "anomaly", 0.8),
    clip("a2", "target", "anomaly", 0.5),
]
HELD_OUT = [clip("h1", "source", "normal", 5.0), clip("h2", "target", "anomaly", -5.0)]


def test_the_official_score_of_a_subset_uses_only_its_clips():
    rows = SEARCH + HELD_OUT + [clip("u1", "source", "unknown", 0.7)]
    keys = {c.key for c in SEARCH} | {"fan/u1"}  # an unlabelled clip is not evaluated
    result = subset_score(rows, keys)
    # AUC-s: source normals (0.1, 0.2) against every anomaly (0.8, 0.5): all above
    assert result.auc_source == 1.0
    # AUC-t: target normals (0.3, 0.9) against the anomalies: 2 of 4 pairs in order
    assert result.auc_target == 0.5
    y = [0, 0, 0, 0, 1, 1]
    pauc = roc_auc_score(y, [c.score for c in SEARCH], max_fpr=0.1)
    assert result.pauc == pytest.approx(pauc)
    assert result.official_score == pytest.approx(scipy.stats.hmean([1.0, 0.5, pauc]))
    assert result.n_clips == 6 and result.clips == {c.key for c in SEARCH}
    # the held-out clips, whatever their scores, change nothing
    moved = [clip(c.file, c.domain, c.label, -c.score) for c in HELD_OUT]
    assert subset_score(SEARCH + moved, keys) == result
    # ... while a search clip does: a2 at 0.95 is above 0.3 and 0.9, a1 (0.8) above 0.3 only
    changed = [clip("a2", "target", "anomaly", 0.95), *SEARCH[:5]]
    assert subset_score(changed, keys).auc_target == 0.75


def test_a_subset_without_both_labels_has_no_score_and_says_what_is_missing():
    result = subset_score(SEARCH, {"fan/s1", "fan/s2"})
    assert result.official_score is None and result.n_clips == 2
    assert result.skipped and all(s.startswith("fan/00: ") for s in result.skipped)

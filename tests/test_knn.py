"""knn: pooled statistics, per-section standardisation, source and target banks (numpy only).

The contract (direction, save/load, shapes) is covered for knn by tests/test_detectors.py,
which runs over the registry; here are the hand-computable cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_distances, euclidean_distances

from asdcli.detectors import get_detector, load_detector
from asdcli.detectors.knn import KNNDetector, distances, knn_distance, pool_stats
from asdcli.naming import ClipInfo


def _info(i: int, domain: str = "source", section: str = "00") -> ClipInfo:
    return ClipInfo(name=f"c{i}.wav", machine="fan", section=section, domain=domain)


def _const(values: list[float], frames: int = 4) -> np.ndarray:
    """A clip whose band b is the constant values[b]: mean = max = values, std = 0."""
    return np.tile(np.asarray(values, dtype=np.float32)[:, None], (1, frames))


def test_pool_stats_order_and_values():
    x = np.array([[1.0, 3.0], [0.0, 4.0]], dtype=np.float32)  # two bands, two frames
    got = pool_stats([x], ["max", "mean", "std"])  # listed out of order: mean, std, max
    np.testing.assert_allclose(got, [[2.0, 2.0, 1.0, 2.0, 3.0, 4.0]])
    assert pool_stats([x], ["mean"]).shape == (1, 2)


@pytest.mark.parametrize(
    "metric, reference", [("euclidean", euclidean_distances), ("cosine", cosine_distances)]
)
def test_distances_match_scikit_learn(metric, reference):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(4, 7))
    np.testing.assert_allclose(distances(a, b, metric), reference(a, b), atol=1e-9)


def test_knn_distance_is_the_mean_of_the_k_smallest():
    d = np.array([[5.0, 1.0, 3.0], [2.0, 2.0, 8.0]])
    np.testing.assert_allclose(knn_distance(d, 2), [2.0, 2.0])
    np.testing.assert_allclose(knn_distance(d, 10), [3.0, 4.0])  # k clipped to the bank


def _fitted(train, infos, **params):
    det = KNNDetector({"pooling": ["mean"], **params})
    return det.fit(train, infos)


def test_scores_by_hand_with_one_section():
    # Bands (x, y): training clips at (0, 0), (2, 0), (0, 4); per-band means (2/3, 4/3),
    # population stds (sqrt(8)/3, sqrt(32)/3).
    train = [_const([0, 0]), _const([2, 0]), _const([0, 4])]
    det = _fitted(train, [_info(i) for i in range(3)])
    sx, sy = np.sqrt(8) / 3, np.sqrt(32) / 3
    # Leave-one-out: (0,0) -> nearest other is (2,0) at 2/sx or (0,4) at 4/sy (= 2/sx, equal).
    np.testing.assert_allclose(det.train_scores_[0], 2 / sx)
    # (2,0) -> (0,0) at 2/sx; (0,4) -> (0,0) at 4/sy.
    np.testing.assert_allclose(det.train_scores_[1:], [2 / sx, 4 / sy])
    # A new clip at (1, 0): distance 1/sx to either of the first two.
    np.testing.assert_allclose(det.score([_const([1, 0])], [_info(9)]), [1 / sx])


def test_a_target_clip_is_judged_by_the_target_bank():
    # Source clips near 0, one target clip at 10 (band 0); a test clip at 10 is normal for
    # the target domain: its score is its distance to the target bank, not to the source.
    train = [_const([v, 0]) for v in (0.0, 0.5, 1.0, 1.5)] + [_const([10.0, 0])]
    infos = [_info(i) for i in range(4)] + [_info(4, "target")]
    det = _fitted(train, infos, k=1)
    near_target, between = det.score([_const([10.0, 0]), _const([5.5, 0])], [_info(8), _info(9)])
    assert near_target == pytest.approx(0.0, abs=1e-9)
    assert between > 1.0  # far from both banks: anomalous


def test_sections_are_standardised_and_banked_separately():
    # Section 01 is the same machine 40 dB louder; each section's statistics are its own.
    base = [_const([0, 0]), _const([2, 0]), _const([0, 4]), _const([2, 4])]
    train = base + [c + 40 for c in base]
    infos = [_info(i, section="00") for i in range(4)] + [_info(i, section="01") for i in range(4)]
    det = _fitted(train, infos)
    a = det.score([_const([1, 2])], [ClipInfo(name="a", section="00")])
    b = det.score([_const([41, 42])], [ClipInfo(name="b", section="01")])
    np.testing.assert_allclose(a, b)  # the same clip relative to its own section
    # A section never trained on is scored against every clip with the global statistics.
    unseen = det.score([_const([1, 2])], [ClipInfo(name="c", section="07")])
    assert np.isfinite(unseen).all()


def test_training_scores_leave_each_clip_out():
    train = [_const([0, 0]), _const([0, 0]), _const([3, 1])]
    det = _fitted(train, [_info(i) for i in range(3)])
    # The duplicates find each other at 0; no clip is ever its own neighbour.
    np.testing.assert_allclose(det.train_scores_[:2], 0.0, atol=1e-12)
    assert det.train_scores_[2] > 0


def test_a_lone_target_clip_left_out_falls_back_to_the_source_bank():
    train = [_const([0, 0]), _const([1, 0]), _const([5, 0])]
    infos = [_info(0), _info(1), _info(2, "target")]
    det = _fitted(train, infos)
    assert np.isfinite(det.train_scores_).all()
    # Band 0 is 0, 1, 5 (std sqrt(14/3)); band 1 is constant. Without itself the target clip
    # has no target bank left: its distance to the nearest source clip, 5 - 1.
    assert det.train_scores_[2] == pytest.approx(4 / np.sqrt(14 / 3))


def test_save_load_round_trip_and_no_pickle(tmp_path):
    rng = np.random.default_rng(1)
    train = [rng.normal(size=(6, 10)).astype(np.float32) for _ in range(8)]
    infos = [_info(i, "target" if i == 0 else "source") for i in range(8)]
    det = KNNDetector({"pooling": ["mean", "std", "max"], "k": 2}).fit(train, infos)
    det.save(tmp_path / "m")
    back = load_detector(tmp_path / "m")
    assert isinstance(back, get_detector("knn"))
    test = [rng.normal(size=(6, 7)).astype(np.float32) for _ in range(3)]
    np.testing.assert_array_equal(back.score(test, infos[:3]), det.score(test, infos[:3]))
    # An object array (which needs pickle to load) in the state file is refused.
    np.savez(tmp_path / "m" / "banks.npz", bank=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="not a knn state file"):
        load_detector(tmp_path / "m")


def test_pooling_must_list_each_statistic_once():
    with pytest.raises(ValueError, match="twice"):
        KNNDetector({"pooling": ["mean", "mean"]})

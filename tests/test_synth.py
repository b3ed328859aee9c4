"""The synthetic dataset: DCASE naming and counts, determinism, level matching, difficulty."""

import hashlib

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

from asdcli.features import logmel
from asdcli.naming import parse_path
from asdcli.settings import FeatureSettings
from asdcli.synth import MACHINES, synthesize


def digests(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_names_counts_and_attributes_csv(tmp_path):
    s = synthesize(tmp_path, machines=["bearing", "valve"], n_train=12, n_test=8, seconds=1)
    for m in ("bearing", "valve"):
        infos = [parse_path(p) for p in (tmp_path / m).rglob("*.wav")]
        assert all(i.pattern == "dcase2023" and i.machine == m for i in infos)
        train = [i for i in infos if i.split == "train"]
        assert all(i.label == "normal" for i in train)
        assert sum(i.domain == "target" for i in train) == 1 == s.counts[m]["train_target"]
        assert len(train) == 12
        test = [(i.domain, i.label) for i in infos if i.split == "test"]
        for group in [
            ("source", "normal"),
            ("source", "anomaly"),
            ("target", "normal"),
            ("target", "anomaly"),
        ]:
            assert test.count(group) == 2
        assert all(i.attributes for i in infos)
        lines = (tmp_path / m / "attributes_00.csv").read_text().splitlines()
        assert lines[0].startswith("file_name,d1p,d1v")
        listed = {line.split(",")[0] for line in lines[1:]}
        assert listed == {f"{m}/{p.parent.name}/{p.name}" for p in (tmp_path / m).rglob("*.wav")}


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    kw = dict(machines=["fan", "slider"], n_train=4, n_test=4, seconds=0.5)
    synthesize(tmp_path / "a", seed=3, **kw)
    synthesize(tmp_path / "b", seed=3, **kw)
    synthesize(tmp_path / "c", seed=4, **kw)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    a, c = digests(tmp_path / "a"), digests(tmp_path / "c")
    assert a != c and len(a) == len(c)


def test_a_clip_does_not_depend_on_which_machines_are_made(tmp_path):
    synthesize(tmp_path / "a", machines=["gearbox"], n_train=2, n_test=4, seconds=0.5)
    synthesize(tmp_path / "b", machines=["fan", "gearbox"], n_train=2, n_test=4, seconds=0.5)
    assert digests(tmp_path / "a" / "gearbox") == digests(tmp_path / "b" / "gearbox")


def _test_set(root, machine, difficulty, n_test=40, seconds=1.0):
    synthesize(
        root,
        machines=[machine],
        n_train=20,
        n_test=n_test,
        seconds=seconds,
        difficulty=difficulty,
        target_train=10,
        seed=1,
    )
    return [
        (parse_path(p), sf.read(p, dtype="float32")[0])
        for p in sorted((root / machine).rglob("*.wav"))
    ]


@pytest.mark.parametrize("machine", MACHINES)
def test_loudness_does_not_reveal_anomalies(tmp_path, machine):
    clips = [
        (i, x)
        for i, x in _test_set(tmp_path, machine, 0.1, n_test=80, seconds=0.5)
        if i.split == "test"
    ]
    y = [i.label == "anomaly" for i, _ in clips]
    rms = [float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) for _, x in clips]
    assert 0.3 < roc_auc_score(y, rms) < 0.7


@pytest.mark.parametrize("machine", MACHINES)
def test_anomalies_are_detectable_and_difficulty_makes_them_harder(tmp_path, machine):
    fs = FeatureSettings(n_mels=64)

    def auc(difficulty):
        clips = _test_set(tmp_path / str(difficulty), machine, difficulty)
        feats = {id(x): logmel(x, fs) for _, x in clips}
        # A simple spectral detector: per-band mean and std over time, z-scored distance to
        # the training clips of the same domain.
        vec = {k: np.r_[v.mean(1), v.std(1)] for k, v in feats.items()}
        scores, labels = [], []
        for dom in ("source", "target"):
            train = np.array(
                [vec[id(x)] for i, x in clips if i.split == "train" and i.domain == dom]
            )
            mu, sd = train.mean(0), train.std(0) + 1e-3
            for i, x in clips:
                if i.split == "test" and i.domain == dom:
                    scores.append(np.linalg.norm((vec[id(x)] - mu) / sd))
                    labels.append(i.label == "anomaly")
        return roc_auc_score(labels, scores)

    easy, hard = auc(0.0), auc(1.0)
    assert easy > 0.8
    assert hard < easy


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"machines": ["pump"]}, "known: bearing"),
        ({"n_train": 0}, "--train"),
        ({"n_test": 3}, "--test"),
        ({"seconds": 0}, "--seconds"),
        ({"difficulty": 1.5}, "--difficulty"),
    ],
)
def test_invalid_arguments_name_the_argument(tmp_path, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        synthesize(tmp_path, **kwargs)

"""The synthetic dataset: DCASE naming and counts, determinism, level matching, difficulty."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

from asdcli.naming import parse_path
from asdcli.synth import MACHINES, SynthArgumentError, SynthSummary, synthesize
from asdcli.synth.machines import MACHINE_TYPES


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def clips(root: Path, machine: str) -> list[tuple]:
    """(ClipInfo, float64 samples) for every WAV of one machine, sorted by path."""
    return [
        (parse_path(p), sf.read(p, dtype="float64")[0])
        for p in sorted((root / machine).rglob("*.wav"))
    ]


def test_layout_names_counts_and_attributes_csv(tmp_path):
    s = synthesize(tmp_path, n_train=8, n_test=8, seconds=0.25, target_train=2)
    assert isinstance(s, SynthSummary) and s.out == tmp_path and s.seconds > 0
    for m in MACHINES:
        infos = [parse_path(p) for p in (tmp_path / m).rglob("*.wav")]
        assert all(i.pattern == "dcase2023" and i.machine == m for i in infos)
        assert all(i.section == "00" and i.attributes for i in infos)
        values = MACHINE_TYPES[m].attributes
        for i in infos:
            assert list(i.attributes) == list(values[i.domain])
            assert all(v in values[i.domain][k] for k, v in i.attributes.items())
            assert i.name.split("_")[5] == f"{i.index:04d}"
        groups: dict[str, list[int]] = {}
        for i in infos:
            key = f"train_{i.domain}" if i.split == "train" else f"test_{i.domain}_{i.label}"
            groups.setdefault(key, []).append(i.index)
        assert {k: sorted(v) for k, v in groups.items()} == {
            "train_source": list(range(6)),
            "train_target": [0, 1],
            "test_source_normal": [0, 1],
            "test_source_anomaly": [0, 1],
            "test_target_normal": [0, 1],
            "test_target_anomaly": [0, 1],
        }
        assert s.counts[m] == {k: len(v) for k, v in groups.items()}
        assert all(i.label == "normal" for i in infos if i.split == "train")

        with open(tmp_path / m / "attributes_00.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["file_name", "d1p", "d1v", "d2p", "d2v"]
        listed = {r[0]: r[1:] for r in rows[1:]}
        on_disk = {f"{m}/{p.parent.name}/{p.name}": p for p in (tmp_path / m).rglob("*.wav")}
        assert set(listed) == set(on_disk)
        for rel, cells in listed.items():
            attrs = parse_path(on_disk[rel]).attributes
            assert cells == [x for kv in attrs.items() for x in kv]
    assert not list(tmp_path.rglob("*.part"))


def test_default_target_share_and_wav_format(tmp_path):
    s = synthesize(tmp_path, machines=["fan"], n_train=150, n_test=4, seconds=0.05)
    assert s.counts["fan"]["train_target"] == 2 and s.counts["fan"]["train_source"] == 148
    wav = next((tmp_path / "fan" / "test").glob("*.wav"))
    info = sf.info(wav)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 800)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synthesize(tmp_path / name, n_train=4, n_test=4, seconds=0.5, seed=seed)
    a, b, c = (digests(tmp_path / k) for k in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".wav"))


def test_a_clip_does_not_depend_on_which_machines_are_made(tmp_path):
    synthesize(tmp_path / "a", machines=["gearbox"], n_train=2, n_test=4, seconds=0.5)
    synthesize(tmp_path / "b", machines=["valve", "gearbox"], n_train=2, n_test=4, seconds=0.5)
    assert digests(tmp_path / "a" / "gearbox") == digests(tmp_path / "b" / "gearbox")


def test_loudness_does_not_reveal_anomalies(tmp_path):
    synthesize(tmp_path, n_train=1, n_test=48, seconds=0.25, difficulty=0.0, seed=2)
    labels, rms = [], []
    for m in MACHINES:
        test = [(i, x) for i, x in clips(tmp_path, m) if i.split == "test"]
        level: dict[str, list[float]] = {"normal": [], "anomaly": []}
        for i, x in test:
            level[i.label].append(20 * np.log10(np.sqrt(np.mean(x**2))))
            assert np.abs(x).max() < 0.999  # no clipping
        assert abs(np.mean(level["normal"]) - np.mean(level["anomaly"])) < 1.5, m
        labels += [i.label == "anomaly" for i, _ in test]
        rms += [float(np.sqrt(np.mean(x**2))) for _, x in test]
    assert 0.4 < roc_auc_score(labels, rms) < 0.6


def spectral_features(x: np.ndarray, sr: int = 16000, n_fft: int = 1024) -> np.ndarray:
    """Per-band mean and std over time of a log-power spectrogram in 40 mel-spaced bands."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[:: n_fft // 2]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    mel = np.linspace(0.0, 2595 * np.log10(1 + sr / 2 / 700), 41)
    edges = np.round(700 * (10 ** (mel / 2595) - 1) / (sr / n_fft)).astype(int)
    edges = np.unique(np.maximum(edges, 1))
    bands = np.log10(np.add.reduceat(power, edges[:-1], axis=1) + 1e-12)
    return np.r_[bands.mean(0), bands.std(0)]


def knn_auc(root: Path, machine: str) -> float:
    """AUC of a simple spectral detector: z-scored distance to the nearest training clip."""
    data = [(i, spectral_features(x)) for i, x in clips(root, machine)]
    train = np.array([f for i, f in data if i.split == "train"])
    test = [(i, f) for i, f in data if i.split == "test"]
    mu, sd = train.mean(0), train.std(0) + 1e-3
    z_train = (train - mu) / sd
    scores = [np.min(np.linalg.norm(z_train - (f - mu) / sd, axis=1)) for _, f in test]
    return roc_auc_score([i.label == "anomaly" for i, _ in test], scores)


@pytest.fixture(scope="module")
def by_difficulty(tmp_path_factory) -> dict[float, Path]:
    roots = {}
    for difficulty in (0.1, 0.9):
        root = tmp_path_factory.mktemp(f"d{difficulty}")
        synthesize(
            root, n_train=24, n_test=32, seconds=1.0, target_train=8, difficulty=difficulty, seed=1
        )
        roots[difficulty] = root
    return roots


@pytest.mark.parametrize("machine", MACHINES)
def test_anomalies_are_detectable_and_difficulty_makes_them_harder(by_difficulty, machine):
    easy, hard = knn_auc(by_difficulty[0.1], machine), knn_auc(by_difficulty[0.9], machine)
    assert easy > 0.8
    assert hard < easy - 0.1


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"machines": ["pump"]}, "known: bearing, fan"),
        ({"machines": []}, "machines"),
        ({"n_train": 0}, "n_train"),
        ({"n_test": 2}, "n_test"),
        ({"n_test": 10}, "n_test"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": float("nan")}, "seconds"),
        ({"sample_rate": 4000}, "sample_rate"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"difficulty": -0.1}, "difficulty"),
        ({"seed": -1}, "seed"),
        ({"n_train": 5, "target_train": 6}, "target_train"),
    ],
)
def test_invalid_arguments_name_the_argument(tmp_path, kwargs, needle):
    with pytest.raises(SynthArgumentError, match=needle) as caught:
        synthesize(tmp_path / "out", **kwargs)
    assert caught.value.argument in kwargs  # the CLI names the flag of exactly this argument
    assert not (tmp_path / "out").exists()


def test_progress_reports_every_clip_and_other_sample_rates_work(tmp_path):
    calls = []
    synthesize(
        tmp_path,
        machines="slider",
        n_train=3,
        n_test=4,
        seconds=0.2,
        sample_rate=8000,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(k, 7) for k in range(1, 8)]
    x, sr = sf.read(next((tmp_path / "slider" / "train").glob("*.wav")))
    assert sr == 8000 and x.shape == (1600,) and np.isfinite(x).all() and np.abs(x).max() > 0


def test_every_fault_kind_meets_every_attribute_combination():
    from asdcli.synth.dataset import plan

    for m, mtype in MACHINE_TYPES.items():
        for domain, values in mtype.attributes.items():
            n_combos = int(np.prod([len(v) for v in values.values()]))
            specs = [
                s
                for s in plan(m, 1, 4 * n_combos * len(mtype.anomalies), 1)
                if s.label == "anomaly" and s.domain == domain
            ]
            pairs = {(s.attributes, s.anomaly) for s in specs}
            assert len(pairs) == n_combos * len(mtype.anomalies), (m, domain)

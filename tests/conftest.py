"""Shared fixtures: tiny DCASE-named datasets written with soundfile, no synth dependency."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soundfile as sf

if TYPE_CHECKING:
    from asdcli.settings import Settings


def write_clip(path: Path, seconds: float = 1.0, sr: int = 16000, seed: int = 0, **kw) -> Path:
    """A 1-s noisy tone clip (float32 written as PCM_16 unless subtype is given)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (300 + 10 * (seed % 7)) * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, **kw)
    return path


def make_dataset(
    root: Path, machines=("bearing", "fan"), n_train: int = 6, n_test: int = 4, seconds=1.0
) -> Path:
    """root/<machine>/{train,test}/ with DCASE 2023 names; test is balanced 4 ways."""
    seed = 0
    for m in machines:
        for i in range(n_train):
            dom = "target" if i == 0 else "source"
            write_clip(
                root / m / "train" / f"section_00_{dom}_train_normal_{i:04d}_vel_{i % 3}.wav",
                seconds,
                seed=seed,
            )
            seed += 1
        for i in range(n_test):
            dom = ("source", "target")[i % 2]
            lab = ("normal", "anomaly")[(i // 2) % 2]
            write_clip(
                root / m / "test" / f"section_00_{dom}_test_{lab}_{i:04d}_vel_1.wav",
                seconds,
                seed=seed,
            )
            seed += 1
    return root


def tiny_emb_knn_settings(tmp_path: Path) -> Settings:
    """Settings for a quick emb-knn run in ``tmp_path``: 32 mels, 2 epochs, a small network."""
    from asdcli.settings import load_settings

    settings, _ = load_settings(
        None,
        {
            "paths.store": tmp_path / "f.h5",
            "paths.runs": tmp_path / "runs",
            "features.n_mels": 32,
            "train.epochs": 2,
            "detectors.emb_knn.frames": 16,
            "detectors.emb_knn.channels": [4, 8],
        },
    )
    return settings


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ASD_ variables or conf/config.yaml of the developer leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("ASD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

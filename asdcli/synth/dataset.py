"""The synthetic dataset: DCASE 2023 layout, naming, splits, domains, levels and determinism.

One section (00) per machine type, as in DCASE 2023::

    OUT/<machine>/train/section_00_<source|target>_train_normal_<iiii>_<attr>_<val>_....wav
    OUT/<machine>/test/section_00_<source|target>_test_<normal|anomaly>_<iiii>_<attr>_<val>_....wav
    OUT/<machine>/attributes_00.csv        file_name,d1p,d1v,d2p,d2v  (name/value pairs)

Indices count per (domain, split, label) from 0000. A clip's attribute values cycle through all
combinations of its domain's values (so every combination is covered and normal and anomalous
test clips share one distribution); an anomalous clip's fault kind cycles through the type's
faults.

One clip = machine (+ fault) + factory background at a random SNR, through a random microphone
coloration, then scaled to an RMS level drawn from one range for every clip, so loudness says
nothing about the label. The fault's energy relative to the machine falls linearly in dB with
the difficulty (:func:`fault_ratio_db`). Every clip has its own random generator seeded from
(seed, machine, domain, split, label, index): a clip never depends on which others are made.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asdcli.naming import format_attributes
from asdcli.synth.machines import (
    MACHINE_TYPES,
    background,
    microphone,
    n_samples,
    rms,
    snr_db,
)

MACHINES: tuple[str, ...] = tuple(MACHINE_TYPES)
SECTION = "00"
# Clip RMS in dBFS, the same range for every clip. At least 32 dB of headroom above the level
# keeps even the impulsive faults (bearing spalls, valve clicks) from clipping in 16 bits.
LEVEL_DBFS = (-36.0, -32.0)
# Fault energy relative to the machine sound (dB) at difficulty 0 and 1, and its spread per clip.
FAULT_DB_EASY, FAULT_DB_HARD, FAULT_DB_SPREAD = 0.0, -28.0, 2.0

# Below this much audio (clip-seconds, ~2 s of work) one process is faster than a pool.
PARALLEL_MIN_SECONDS = 500.0

_CODES = {"source": 0, "target": 1, "train": 0, "test": 1, "normal": 0, "anomaly": 1}


@dataclass
class SynthSummary:
    """What :func:`synthesize` wrote: ``counts[machine]["test_source_anomaly"]`` etc. and the wall
    time in seconds."""

    out: Path
    counts: dict[str, dict[str, int]]
    seconds: float


@dataclass(frozen=True)
class ClipSpec:
    """One clip to make: who it is (the name's fields) and, for anomalies, its fault."""

    machine: str
    domain: str
    split: str
    label: str
    index: int
    attributes: tuple[tuple[str, str], ...]
    anomaly: str | None = None

    @property
    def name(self) -> str:
        attrs = format_attributes(dict(self.attributes))
        return (
            f"section_{SECTION}_{self.domain}_{self.split}_{self.label}_{self.index:04d}"
            + (f"_{attrs}" if attrs else "")
            + ".wav"
        )

    @property
    def relpath(self) -> str:
        """``<machine>/<split>/<name>``, as in ``attributes_00.csv``."""
        return f"{self.machine}/{self.split}/{self.name}"


def fault_ratio_db(difficulty: float) -> float:
    """Typical fault energy relative to the healthy machine sound, dB: 0 dB at difficulty 0
    (obvious), -28 dB at difficulty 1 (subtle)."""
    return FAULT_DB_EASY + difficulty * (FAULT_DB_HARD - FAULT_DB_EASY)


def clip_rng(seed: int, spec: ClipSpec) -> np.random.Generator:
    """The clip's own generator, keyed by who the clip is: the same for every run (with one
    numpy version) and whichever other machines or clips are made."""
    key = [
        seed,
        zlib.crc32(spec.machine.encode()),
        _CODES[spec.domain],
        _CODES[spec.split],
        _CODES[spec.label],
        spec.index,
    ]
    return np.random.default_rng(np.random.SeedSequence(key))


def plan(machine: str, n_train: int, n_test: int, target_train: int) -> list[ClipSpec]:
    """Every clip of one machine type: train source, train target, then the test groups."""
    mtype = MACHINE_TYPES[machine]

    def group(domain: str, split: str, label: str, count: int) -> list[ClipSpec]:
        values = mtype.attributes[domain]
        combos = list(itertools.product(*values.values()))
        kinds = mtype.anomalies
        cycle = math.lcm(len(combos), len(kinds))
        specs = []
        for i in range(count):
            attrs = tuple(zip(values, combos[i % len(combos)], strict=True))
            # Faults cycle fast; shifting the cycle by one every lcm(combinations, kinds) clips
            # makes every combination meet every fault kind.
            kind = kinds[(i + i // cycle) % len(kinds)] if label == "anomaly" else None
            specs.append(ClipSpec(machine, domain, split, label, i, attrs, kind))
        return specs

    per_group = n_test // 4
    specs = group("source", "train", "normal", n_train - target_train)
    specs += group("target", "train", "normal", target_train)
    for domain, label in itertools.product(("source", "target"), ("normal", "anomaly")):
        specs += group(domain, "test", label, per_group)
    return specs


def render(
    spec: ClipSpec, seconds: float, sample_rate: int, difficulty: float, seed: int
) -> np.ndarray:
    """The clip's samples: float64 (n,) in [-1, 1], n = round(seconds * sample_rate)."""
    rng = clip_rng(seed, spec)
    mtype = MACHINE_TYPES[spec.machine]
    ratio_db = fault_ratio_db(difficulty) + mtype.fault_db
    ratio_db += rng.uniform(-FAULT_DB_SPREAD, FAULT_DB_SPREAD)
    x = mtype.generate(rng, seconds, sample_rate, dict(spec.attributes), spec.anomaly, ratio_db)
    n = n_samples(seconds, sample_rate)
    noise = background(rng, n, sample_rate, spec.domain)
    # The background is set relative to the machine as heard (fault included), so the SNR does
    # not depend on the label.
    x = x + noise * max(rms(x), 1e-6) * 10.0 ** (-snr_db(rng, spec.domain) / 20.0)
    x = microphone(rng, x, sample_rate)
    # Level matching: every clip gets an RMS drawn from one range, whatever its label.
    level = 10.0 ** (rng.uniform(*LEVEL_DBFS) / 20.0)
    r = rms(x)
    x = x * (level / r) if r > 0 else x
    return np.clip(x, -1.0, 1.0)


def write_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM atomically: a hidden temp file in the same folder, then a rename, so an
    interrupted run never leaves a half-written WAV under the final name."""
    tmp = path.with_name(f".{path.name}.part")
    sf.write(tmp, x, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def attributes_csv(specs: Sequence[ClipSpec]) -> str:
    """DCASE-style ``attributes_00.csv`` text: ``file_name,d1p,d1v,d2p,d2v,...``."""
    width = max((len(s.attributes) for s in specs), default=0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file_name"] + [f"d{i}{c}" for i in range(1, width + 1) for c in "pv"])
    for s in specs:
        cells = [v for pair in s.attributes for v in pair]
        w.writerow([s.relpath] + cells + [""] * (2 * width - len(cells)))
    return buf.getvalue()


class SynthArgumentError(ValueError):
    """An argument :func:`synthesize` cannot honour. ``argument`` is its name, so that a front
    end can name it its own way (the CLI names the flag); ``str()`` reads ``"<name> <detail>"``."""

    def __init__(self, argument: str, detail: str) -> None:
        super().__init__(f"{argument} {detail}")
        self.argument = argument
        self.detail = detail


def _check(
    machines: Sequence[str],
    n_train: int,
    n_test: int,
    seconds: float,
    sample_rate: int,
    difficulty: float,
    seed: int,
    target_train: int | None,
) -> None:
    """Raise :class:`SynthArgumentError`, naming the argument, for anything :func:`synthesize`
    cannot honour."""
    unknown = [m for m in machines if m not in MACHINE_TYPES]
    if unknown or not machines:
        what = f"names unknown type(s) {', '.join(map(repr, unknown))}" if unknown else "is empty"
        raise SynthArgumentError("machines", f"{what}; known: {', '.join(MACHINES)}")
    if not isinstance(n_train, int) or n_train < 1:
        raise SynthArgumentError("n_train", f"must be an integer >= 1 (got {n_train!r})")
    if not isinstance(n_test, int) or n_test < 4 or n_test % 4:
        raise SynthArgumentError(
            "n_test",
            "must be a multiple of 4 and >= 4, for balanced normal/anomaly x source/target "
            f"groups (got {n_test!r})",
        )
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise SynthArgumentError("seconds", f"must be a positive number (got {seconds!r})")
    if not isinstance(sample_rate, int) or sample_rate < 8000:
        raise SynthArgumentError(
            "sample_rate", f"must be an integer >= 8000 Hz (got {sample_rate!r})"
        )
    if not (isinstance(difficulty, int | float) and 0.0 <= difficulty <= 1.0):
        raise SynthArgumentError("difficulty", f"must be between 0 and 1 (got {difficulty!r})")
    if not isinstance(seed, int) or seed < 0:
        raise SynthArgumentError("seed", f"must be an integer >= 0 (got {seed!r})")
    if target_train is not None and (
        not isinstance(target_train, int) or not 0 <= target_train <= n_train
    ):
        raise SynthArgumentError(
            "target_train",
            f"must be between 0 and the number of training clips {n_train} (got {target_train!r})",
        )


def synthesize(
    out: Path,
    machines: Sequence[str] = MACHINES,
    n_train: int = 100,
    n_test: int = 40,
    seconds: float = 10.0,
    sample_rate: int = 16000,
    difficulty: float = 0.5,
    seed: int = 0,
    target_train: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic dataset in the DCASE 2023 layout under ``out``.

    Parameters
    ----------
    out : folder to write ``<machine>/{train,test}/*.wav`` and ``<machine>/attributes_00.csv``.
    machines : machine types, a subset of :data:`MACHINES` (a single name is accepted too).
    n_train : normal training clips per machine, of which ``target_train`` (default 1 %, at
        least 1, like DCASE's 990 source / 10 target) are target domain.
    n_test : test clips per machine, a multiple of 4: a quarter each of source normal, source
        anomaly, target normal and target anomaly.
    seconds, sample_rate : clip length in s and sample rate in Hz (mono, 16-bit PCM).
    difficulty : 0 = obvious faults ... 1 = subtle ones (see :func:`fault_ratio_db`).
    seed : same seed and arguments, byte-identical files.
    progress : called as ``progress(done, total)`` after each clip.

    Files already in ``out`` under other names (say, from a larger earlier run) are left alone.

    Raises
    ------
    ValueError
        An unknown machine type or an argument out of range; the message names it.
    """
    machines = [machines] if isinstance(machines, str) else list(dict.fromkeys(machines))
    _check(machines, n_train, n_test, seconds, sample_rate, difficulty, seed, target_train)
    t0 = time.perf_counter()
    n_target = max(1, round(n_train / 100)) if target_train is None else target_train
    n_target = min(n_target, n_train)
    out = Path(out)

    plans = {m: plan(m, n_train, n_test, n_target) for m in machines}
    jobs = []
    for machine, specs in plans.items():
        for split in ("train", "test"):
            folder = out / machine / split
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.wav.part"):  # left by an interrupted run
                stale.unlink()
        jobs += [
            (spec, out / spec.relpath, seconds, sample_rate, difficulty, seed) for spec in specs
        ]

    workers = _workers(len(jobs) * seconds)
    if workers > 1:
        # Forked, not spawned: spawn would re-import the caller's __main__, which breaks scripts
        # without a main guard. The workers only run numpy, scipy and soundfile.
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            done = pool.map(_make, jobs, chunksize=4)
            for i, _ in enumerate(done, start=1):
                if progress is not None:
                    progress(i, len(jobs))
    else:
        for i, job in enumerate(jobs, start=1):
            _make(job)
            if progress is not None:
                progress(i, len(jobs))

    for machine, specs in plans.items():
        csv_path = out / machine / f"attributes_{SECTION}.csv"
        tmp = csv_path.with_name(f".{csv_path.name}.part")
        tmp.write_text(attributes_csv(specs), encoding="utf-8")
        os.replace(tmp, csv_path)
    counts = {machine: _count(specs) for machine, specs in plans.items()}
    return SynthSummary(out=out, counts=counts, seconds=time.perf_counter() - t0)


def _make(job: tuple[ClipSpec, Path, float, int, float, int]) -> None:
    """Render and write one clip (a top-level function, so worker processes can run it)."""
    spec, path, seconds, sample_rate, difficulty, seed = job
    write_wav(path, render(spec, seconds, sample_rate, difficulty, seed), sample_rate)


def _workers(audio_seconds: float) -> int:
    """Worker processes for a job of ``audio_seconds`` of audio: 1 (no pool) for small jobs,
    where starting processes would cost more than it saves; else one per usable core, up to 8."""
    if (
        audio_seconds < PARALLEL_MIN_SECONDS
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 8))


def _count(specs: Sequence[ClipSpec]) -> dict[str, int]:
    keys = ["train_source", "train_target"] + [
        f"test_{d}_{lab}" for d in ("source", "target") for lab in ("normal", "anomaly")
    ]
    counts = dict.fromkeys(keys, 0)
    for s in specs:
        key = f"train_{s.domain}" if s.split == "train" else f"test_{s.domain}_{s.label}"
        counts[key] += 1
    return counts

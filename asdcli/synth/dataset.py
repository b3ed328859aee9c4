"""The synthetic dataset: DCASE 2023 layout, naming, splits, domains, levels and determinism.

Per machine type, section 00 (one section per machine, as in DCASE 2023)::

    OUT/<machine>/train/section_00_<source|target>_train_normal_<iiii>_<attr>_<val>....wav
    OUT/<machine>/test/section_00_<source|target>_test_<normal|anomaly>_<iiii>_<attr>_<val>....wav
    OUT/<machine>/attributes_00.csv     file_name,d1p,d1v,d2p,d2v,...

Each clip = machine sound + fault (anomalies only) + background noise, through a microphone
coloration, then normalised to a level drawn from the same range for every clip, so loudness
says nothing about the label. The fault's energy relative to the machine sound falls with the
difficulty: +4 dB at difficulty 0, -26 dB at difficulty 1.

The target domain shifts the attributes (speed, load, pattern...) and the background noise
(another colour, lower SNR). Every clip has its own random generator seeded from (seed,
machine, domain, split, label, index), so a clip does not depend on which others are made.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from asdcli.naming import format_attributes
from asdcli.synth.machines import MACHINE_TYPES, colored_noise, harmonics

MACHINES: tuple[str, ...] = tuple(MACHINE_TYPES)
LEVEL_DBFS = (-28.0, -20.0)  # clip RMS range, same for normal and anomalous clips


@dataclass(frozen=True)
class ClipSpec:
    machine: str
    domain: str
    split: str
    label: str
    index: int
    seed: int

    def rng(self) -> np.random.Generator:
        ids = [
            self.seed,
            zlib.crc32(self.machine.encode()),
            ("source", "target").index(self.domain),
            ("train", "test").index(self.split),
            ("normal", "anomaly").index(self.label),
            self.index,
        ]
        return np.random.default_rng(np.random.SeedSequence(ids))


@dataclass
class SynthSummary:
    out: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


def fault_gain_db(difficulty: float) -> float:
    """Fault energy relative to the machine sound, in dB."""
    return 4.0 - 30.0 * difficulty


def _render(spec: ClipSpec, seconds: float, sr: int, difficulty: float):
    """One clip: (file name, attributes, float32 samples)."""
    rng = spec.rng()
    mtype = MACHINE_TYPES[spec.machine]
    values = mtype.source if spec.domain == "source" else mtype.target
    attrs = {k: str(rng.choice(v)) for k, v in values.items()}
    n = int(round(seconds * sr))
    fault_kind = str(rng.choice(mtype.faults)) if spec.label == "anomaly" else None
    normal, fault = mtype.physics(rng, n, sr, attrs, fault_kind)
    signal = normal / (normal.std() + 1e-12)
    if fault_kind is not None:
        gain = 10 ** (fault_gain_db(difficulty) / 20)
        signal = signal + gain * fault / (fault.std() + 1e-12)

    # Background: factory hum + coloured noise; the target domain is noisier and browner.
    if spec.domain == "source":
        snr_db, colour = rng.uniform(8, 12), rng.uniform(0.8, 1.2)
    else:
        snr_db, colour = rng.uniform(4, 8), rng.uniform(1.3, 1.7)
    noise = colored_noise(rng, n, sr, colour) + 0.3 * harmonics(
        rng, n, sr, 50.0, np.array([1.0, 0.5, 0.3])
    )
    noise /= noise.std() + 1e-12
    x = signal / (signal.std() + 1e-12) + 10 ** (-snr_db / 20) * noise

    # Microphone coloration: a gentle random tilt and one broad bump/dip (+-1.5 dB).
    tilt, bump_f, bump_db = rng.uniform(-1.5, 1.5), rng.uniform(500, 5000), rng.uniform(-1.5, 1.5)

    def mic(f: np.ndarray) -> np.ndarray:
        octaves = np.log2(np.maximum(f, 50.0) / 1000.0)
        bump = bump_db * np.exp(-0.5 * (octaves - np.log2(bump_f / 1000.0)) ** 2)
        return 10 ** ((tilt * octaves / 4 + bump) / 20)

    spec_x = np.fft.rfft(x) * mic(np.fft.rfftfreq(n, 1 / sr))
    x = np.fft.irfft(spec_x, n)
    level = 10 ** (rng.uniform(*LEVEL_DBFS) / 20)
    x = x / (np.sqrt(np.mean(x**2)) + 1e-12) * level
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    name = (
        f"section_00_{spec.domain}_{spec.split}_{spec.label}_{spec.index:04d}_"
        f"{format_attributes(attrs)}.wav"
    )
    return name, attrs, x


def _write_one(args: tuple[ClipSpec, Path, float, int, float]) -> tuple[str, str, dict[str, str]]:
    spec, folder, seconds, sr, difficulty = args
    name, attrs, x = _render(spec, seconds, sr, difficulty)
    path = folder / spec.split / name
    tmp = path.with_name(f".{name}.tmp")
    sf.write(tmp, x, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return spec.machine, f"{spec.machine}/{spec.split}/{name}", attrs


def _validate(machines, n_train, n_test, seconds, sample_rate, difficulty, target_train):
    unknown = [m for m in machines if m not in MACHINE_TYPES]
    if unknown or not machines:
        raise ValueError(
            f"--machines: unknown machine type(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(MACHINES)}"
        )
    if n_train < 1:
        raise ValueError(f"--train must be at least 1 (got {n_train})")
    if n_test < 4:
        raise ValueError(
            f"--test must be at least 4, one per normal/anomaly x domain (got {n_test})"
        )
    if seconds <= 0:
        raise ValueError(f"--seconds must be positive (got {seconds})")
    if sample_rate < 4000:
        raise ValueError(f"--sample-rate must be at least 4000 Hz (got {sample_rate})")
    if not 0 <= difficulty <= 1:
        raise ValueError(f"--difficulty must be between 0 and 1 (got {difficulty})")
    if target_train is not None and not 0 <= target_train <= n_train:
        raise ValueError(f"--target-train must be between 0 and --train (got {target_train})")


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
    workers: int | None = None,
) -> SynthSummary:
    """Write a synthetic dataset in the DCASE 2023 layout under ``out``.

    ``n_train`` normal training clips per machine, of which ``target_train`` (default 1 %, at
    least 1, like DCASE's 990/10) are target domain; ``n_test`` test clips per machine split
    evenly over normal/anomaly x source/target. Same arguments, byte-identical files.
    """
    machines = list(machines)
    _validate(machines, n_train, n_test, seconds, sample_rate, difficulty, target_train)
    t0 = time.perf_counter()
    n_target = max(1, round(n_train / 100)) if target_train is None else target_train
    per_group = n_test // 4
    jobs = []
    summary = SynthSummary(Path(out))
    for m in machines:
        folder = Path(out) / m
        (folder / "train").mkdir(parents=True, exist_ok=True)
        (folder / "test").mkdir(parents=True, exist_ok=True)
        specs = [
            ClipSpec(m, "source", "train", "normal", i, seed) for i in range(n_train - n_target)
        ]
        specs += [ClipSpec(m, "target", "train", "normal", i, seed) for i in range(n_target)]
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                specs += [ClipSpec(m, domain, "test", label, i, seed) for i in range(per_group)]
        summary.counts[m] = {
            "train_source": n_train - n_target,
            "train_target": n_target,
            "test_source_normal": per_group,
            "test_source_anomaly": per_group,
            "test_target_normal": per_group,
            "test_target_anomaly": per_group,
        }
        jobs += [(s, folder, seconds, sample_rate, difficulty) for s in specs]

    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if len(jobs) * seconds > 200 else 1
    rows: dict[str, list[tuple[str, dict[str, str]]]] = {m: [] for m in machines}
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_write_one, jobs, chunksize=8)
            for i, (m, rel, attrs) in enumerate(results, 1):
                rows[m].append((rel, attrs))
                if progress:
                    progress(i, len(jobs))
    else:
        for i, job in enumerate(jobs, 1):
            m, rel, attrs = _write_one(job)
            rows[m].append((rel, attrs))
            if progress:
                progress(i, len(jobs))

    for m, items in rows.items():
        lines = []
        width = max(len(a) for _, a in items)
        header = ["file_name"] + [f"d{i}{c}" for i in range(1, width + 1) for c in "pv"]
        for rel, attrs in items:
            cells = [rel] + [x for kv in attrs.items() for x in kv]
            lines.append(",".join(cells + [""] * (len(header) - len(cells))))
        csv_path = Path(out) / m / "attributes_00.csv"
        tmp = csv_path.with_name(".attributes_00.csv.tmp")
        tmp.write_text(",".join(header) + "\n" + "\n".join(lines) + "\n")
        os.replace(tmp, csv_path)
    summary.seconds = time.perf_counter() - t0
    return summary

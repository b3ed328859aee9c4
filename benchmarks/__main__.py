"""Benchmarks: ``python -m benchmarks [--quick] [--out benchmarks/results.json]``.

Synthesizes its own data, measures, prints a rich table and writes a JSON file. Speeds are
reported as ratios against a reference measured in the same run, so the figures compare across
machines. ``--quick`` shrinks every size to a smoke test (CI runs it; its numbers mean little).

Measurements:
1. featurize throughput (WAV -> HDF5, 10-s 16-kHz clips) with 1 and 2 workers, against the DCASE
   baseline front end (librosa.load + librosa.feature.melspectrogram per file in a loop);
2. the compute floor: the same log-mel on already-decoded clips in memory, no I/O;
3. scoring latency per clip, end to end from WAV to score, per detector, on one core;
4. training time per epoch (autoencoders) and fit time (lof, iforest);
5. peak memory (RSS) of featurize at two dataset sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console()


def _synth(root: Path, n_clips: int, seconds: float, machines: tuple[str, ...] = ("fan",)) -> Path:
    from asdcli.synth import synthesize

    per_machine = max(n_clips // len(machines), 8)
    n_test = max(4, (per_machine // 5) // 4 * 4)
    synthesize(
        root,
        machines=machines,
        n_train=per_machine - n_test,
        n_test=n_test,
        seconds=seconds,
        seed=0,
    )
    return root


def _wavs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.wav"))


def _warm_up() -> None:
    """Pay one-off costs (torch import, librosa's JIT compilation) before any timing."""
    import librosa

    from asdcli.features import logmel
    from asdcli.settings import FeatureSettings

    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    logmel(x, FeatureSettings())
    librosa.feature.melspectrogram(y=x, sr=16000, n_fft=1024, hop_length=512, n_mels=128)


def bench_featurize(root: Path, workers: int) -> dict[str, Any]:
    from asdcli.featurize import featurize
    from asdcli.settings import FeatureSettings

    files = _wavs(root)
    store = root.parent / f"bench-{workers}.h5"
    store.unlink(missing_ok=True)
    t0 = time.perf_counter()
    featurize([root], FeatureSettings(), store, workers=workers)
    seconds = time.perf_counter() - t0
    audio = sum(_duration(f) for f in files)
    return {
        "clips": len(files),
        "seconds": seconds,
        "clips_per_s": len(files) / seconds,
        "real_time_factor": audio / seconds,
    }


def _duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


def bench_librosa(root: Path) -> dict[str, Any]:
    """The DCASE baseline's front end: one file at a time, librosa all the way."""
    import librosa

    files = _wavs(root)
    t0 = time.perf_counter()
    for f in files:
        y, sr = librosa.load(str(f), sr=16000, mono=True)
        mel = librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=1024, hop_length=512, n_mels=128, power=2.0
        )
        _ = 20.0 / 2.0 * np.log10(np.maximum(mel, 1e-10))
    seconds = time.perf_counter() - t0
    return {"clips": len(files), "seconds": seconds, "clips_per_s": len(files) / seconds}


def bench_floor(root: Path, threads: int) -> dict[str, Any]:
    """Log-mel of decoded clips in memory, batched, with ``threads`` torch threads."""
    import soundfile as sf
    import torch

    from asdcli.features import logmel
    from asdcli.settings import FeatureSettings

    fs = FeatureSettings()
    clips = np.stack([sf.read(str(f), dtype="float32")[0] for f in _wavs(root)])
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        logmel(clips[:2], fs)  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(clips), 16):
            logmel(clips[i : i + 16], fs)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    return {"clips": len(clips), "seconds": seconds, "clips_per_s": len(clips) / seconds}


def bench_detectors(root: Path, n_latency: int, epochs: int) -> dict[str, Any]:
    """Fit each detector on the store's fan clips; time per epoch; WAV-to-score latency."""
    import torch

    from asdcli.audio import read_audio
    from asdcli.detectors import get_detector, list_detectors
    from asdcli.detectors.params import DetectorParams, TrainParams
    from asdcli.features import logmel
    from asdcli.featurize import featurize
    from asdcli.settings import FeatureSettings
    from asdcli.store import FeatureStore

    fs = FeatureSettings()
    store = root.parent / "bench-det.h5"
    store.unlink(missing_ok=True)
    featurize([root], fs, store, workers=2)
    st = FeatureStore(store)
    recs = [r for r in st.clips(fs.key()) if r.split == "train"]
    feats = st.load(fs.key(), recs)
    test_files = sorted((root / "fan" / "test").glob("*.wav"))[:n_latency]
    out: dict[str, Any] = {}
    torch.set_num_threads(1)  # latency on one core
    for name, _ in list_detectors():
        cls = get_detector(name)
        params = getattr(DetectorParams(), name.replace("-", "_"))
        det = cls(params, TrainParams(epochs=epochs, patience=epochs + 1, device="cpu"))
        t0 = time.perf_counter()
        det.fit(feats, recs)
        fit_s = time.perf_counter() - t0
        n_epochs = max(len(det.history_), 1)
        latencies = []
        for f in test_files:
            t0 = time.perf_counter()
            clip = read_audio(f, fs.sample_rate, fs.n_fft)
            det.score([logmel(clip.samples, fs)])
            latencies.append((time.perf_counter() - t0) * 1000)
        out[name] = {
            "fit_s": fit_s,
            "epoch_s": fit_s / n_epochs if det.history_ else None,
            "train_clips": len(recs),
            "latency_ms_median": statistics.median(latencies),
            "latency_ms_p95": float(np.percentile(latencies, 95)),
            "latency_clips": len(latencies),
        }
    return out


_RSS_CHILD = """
import resource, sys
from pathlib import Path
from asdcli.featurize import featurize
from asdcli.settings import FeatureSettings
featurize([Path(sys.argv[1])], FeatureSettings(), Path(sys.argv[2]), workers=1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_rss(root: Path) -> float:
    """Peak RSS (MiB) of a featurize run in a fresh process (workers=1, so it is one process)."""
    store = root.parent / "bench-rss.h5"
    store.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(root), str(store)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: a smoke test.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    args = parser.parse_args(argv)
    q = args.quick
    n_feat, seconds = (16, 1.0) if q else (400, 10.0)
    n_small, n_big = (8, 32) if q else (1000, 4000)
    n_train, n_latency, epochs = (16, 4, 1) if q else (1000, 50, 2)

    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "quick": q,
    }
    _warm_up()
    with tempfile.TemporaryDirectory(prefix="asd-bench-") as tmp:
        tmp_path = Path(tmp)
        console.print(f"synthesizing {n_feat} clips of {seconds:g} s ...")
        feat_root = _synth(tmp_path / "feat", n_feat, seconds)
        results["featurize"] = {
            "workers_1": bench_featurize(feat_root, 1),
            "workers_2": bench_featurize(feat_root, 2),
            "librosa_reference": bench_librosa(feat_root),
            "floor_1_thread": bench_floor(feat_root, 1),
            "floor_2_threads": bench_floor(feat_root, 2),
        }
        console.print("memory ...")
        small = _synth(tmp_path / "small", n_small, 1.0 if q else 10.0)
        big = _synth(tmp_path / "big", n_big, 1.0 if q else 10.0)
        results["memory_mib"] = {
            f"featurize_{n_small}": bench_rss(small),
            f"featurize_{n_big}": bench_rss(big),
        }
        console.print("detectors ...")
        det_root = _synth(tmp_path / "det", n_train + 5 * n_latency // 4 * 4, seconds)
        results["detectors"] = bench_detectors(det_root, n_latency, epochs)

    results["peak_rss_mib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    _print(results)
    console.print(f"results in {args.out}")
    return results


def _print(r: dict[str, Any]) -> None:
    f = r["featurize"]
    ref = f["librosa_reference"]["clips_per_s"]
    table = Table(
        title="Featurize (10-s clips, WAV -> features)" if not r["quick"] else "Featurize"
    )
    for c in ("what", "clips/s", "x realtime", "vs librosa", "vs floor"):
        table.add_column(c, justify="left" if c == "what" else "right")
    for key, label, floor in (
        ("workers_1", "asd featurize, 1 worker", "floor_1_thread"),
        ("workers_2", "asd featurize, 2 workers", "floor_2_threads"),
    ):
        m = f[key]
        table.add_row(
            label,
            f"{m['clips_per_s']:.1f}",
            f"{m['real_time_factor']:.0f}",
            f"{m['clips_per_s'] / ref:.1f}x",
            f"{m['clips_per_s'] / f[floor]['clips_per_s']:.2f}",
        )
    table.add_row("librosa reference (DCASE baseline loop)", f"{ref:.1f}", "", "1.0x", "")
    for key in ("floor_1_thread", "floor_2_threads"):
        table.add_row(
            f"compute floor, {key.split('_', 1)[1].replace('_', ' ')}",
            f"{f[key]['clips_per_s']:.1f}",
            "",
            "",
            "",
        )
    console.print(table)
    mem = Table(title="Peak RSS of featurize (MiB)")
    for k in r["memory_mib"]:
        mem.add_column(k, justify="right")
    mem.add_row(*(f"{v:.0f}" for v in r["memory_mib"].values()))
    console.print(mem)
    det = Table(title="Detectors (one core for latency)")
    for c in ("detector", "fit s", "s/epoch", "latency median ms", "p95 ms"):
        det.add_column(c, justify="left" if c == "detector" else "right")
    for name, d in r["detectors"].items():
        det.add_row(
            name,
            f"{d['fit_s']:.1f}",
            f"{d['epoch_s']:.2f}" if d["epoch_s"] else "-",
            f"{d['latency_ms_median']:.1f}",
            f"{d['latency_ms_p95']:.1f}",
        )
    console.print(det)


if __name__ == "__main__":
    main()

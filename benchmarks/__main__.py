"""Benchmarks: ``python -m benchmarks [--quick] [--out benchmarks/results.json]``.

Synthesizes its own data, measures, prints rich tables and writes a JSON file. Speeds are
reported as ratios against references measured in the same run, so the figures compare across
machines. ``--quick`` shrinks every size to a smoke test (CI runs it; its numbers mean little).

Measurements:
1. featurize throughput (WAV -> HDF5, 10-s 16-kHz clips) with 1 and 2 workers on a DCASE-sized
   development set (8,400 clips), against the DCASE baseline front end (librosa.load +
   librosa.feature.melspectrogram per file in a loop);
2. the compute floor: the same log-mel on already-decoded clips in memory (no I/O), in 1 and 2
   processes, plus what featurize adds to it: decoding the WAVs, writing the store;
3. the store's chunking and compression options: write cost, size, cost of reading one clip;
4. scoring latency per clip, end to end from WAV to score, per detector, on one core;
5. training time per epoch (autoencoders) and fit time (lof, iforest);
6. peak memory (RSS) of featurize at two dataset sizes.

The DCASE-sized sets repeat a few hundred synthesized clips under many names (hard links, one
machine folder per copy): featurize treats every path as its own clip, so the work is that of
as many distinct files, minus reading them from a cold disk (the WAVs are in the page cache).
The machine's background load (CPU used by other processes) is sampled and reported, since a
shared machine makes every timing slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
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

from asdcli.allocator import keep_freed_memory
from benchmarks.floor import bench_floor

console = Console()

DCASE_DEV_CLIPS = 8400  # DCASE 2023 Task 2 development set: 7 machine types x 1,200 clips


# --------------------------------------------------------------------------- data


def _synth(root: Path, n_clips: int, seconds: float) -> Path:
    from asdcli.synth import synthesize

    n_test = max(4, (n_clips // 5) // 4 * 4)
    synthesize(root, machines=("fan",), n_train=n_clips - n_test, n_test=n_test, seconds=seconds)
    return root


def _wavs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.wav"))


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.hardlink_to(src)
    except OSError:  # another file system: copy
        shutil.copyfile(src, dst)


def _replicate(unique: Path, out: Path, n_clips: int) -> Path:
    """``n_clips`` paths over the clips of ``unique/fan``: copy ``k`` is machine folder
    ``fan<k>`` (same names, so the DCASE naming and layout hold)."""
    clips = _wavs(unique / "fan")
    copies = -(-n_clips // len(clips))
    made = 0
    for k in range(copies):
        for src in clips:
            if made == n_clips:
                return out
            _link(src, out / f"fan{k:02d}" / src.relative_to(unique / "fan"))
            made += 1
    return out


def _training_set(unique: Path, out: Path, n_train: int) -> Path:
    """``fan/train`` with ``n_train`` paths cycling over the unique training clips, and the
    unique test clips."""
    train = sorted((unique / "fan" / "train").glob("*.wav"))
    for i in range(n_train):
        src = train[i % len(train)]
        _link(src, out / "fan" / "train" / f"{src.stem}_copy_{i // len(train)}.wav")
    for src in sorted((unique / "fan" / "test").glob("*.wav")):
        _link(src, out / "fan" / "test" / src.name)
    return out


def _duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


def _cpu_busy() -> float:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def background_load(seconds: float = 2.0) -> float:
    """Cores kept busy by other processes, sampled while this one sleeps."""
    start = _cpu_busy()
    time.sleep(seconds)
    return (_cpu_busy() - start) / seconds


def _warm_up() -> None:
    """Pay one-off costs (imports, librosa's JIT compilation) before any timing."""
    import librosa

    from asdcli.features import logmel
    from asdcli.settings import FeatureSettings

    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    logmel(x, FeatureSettings())
    librosa.feature.melspectrogram(y=x, sr=16000, n_fft=1024, hop_length=512, n_mels=128)


# --------------------------------------------------------------------------- featurize


def bench_featurize(root: Path, workers: int, seconds_per_clip: float) -> dict[str, Any]:
    """``featurize`` into a new store, timed as a whole (helper start-up included)."""
    from asdcli.featurize import featurize
    from asdcli.settings import FeatureSettings

    store = root.parent / f"bench-{workers}.h5"
    store.unlink(missing_ok=True)
    busy = _cpu_busy()
    t0, c0 = time.perf_counter(), time.process_time()
    summary = featurize([root], FeatureSettings(), store, workers=workers)
    seconds = time.perf_counter() - t0
    busy = _cpu_busy() - busy
    return {
        # CPU of this process only: with helpers, their share is missing.
        "cpu_ms_per_clip_this_process": (time.process_time() - c0) / summary.new * 1000,
        "clips": summary.new,
        "seconds": seconds,
        "clips_per_s": summary.new / seconds,
        "real_time_factor": summary.new * seconds_per_clip / seconds,
        "machine_cores_busy": busy / seconds,
        "store_mib": store.stat().st_size / 2**20,
    }


def bench_command(root: Path, workers: int) -> dict[str, Any]:
    """The whole ``asd featurize --workers N`` command in a new process, start-up and exit
    included, into a new store."""
    store = root.parent / "bench-command.h5"
    store.unlink(missing_ok=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "asdcli", "featurize", str(root), "--store", str(store),
         "--workers", str(workers)],
        capture_output=True, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    clips = len(_wavs(root))
    store.unlink()
    return {"workers": workers, "clips": clips, "seconds": seconds, "clips_per_s": clips / seconds}


def bench_librosa(root: Path) -> dict[str, Any]:
    """The DCASE baseline's front end: one file at a time, librosa all the way.

    With one BLAS thread: on an idle machine two threads are no faster (4.3 ms per clip either
    way, measured), and on a busy one they wait on each other and are 2x slower, which would
    flatter every ratio to this reference.
    """
    import librosa
    from threadpoolctl import threadpool_limits

    files = _wavs(root)
    with threadpool_limits(1):
        t0 = time.perf_counter()
        for f in files:
            y, sr = librosa.load(str(f), sr=16000, mono=True)
            mel = librosa.feature.melspectrogram(
                y=y, sr=sr, n_fft=1024, hop_length=512, n_mels=128, power=2.0
            )
            _ = 20.0 / 2.0 * np.log10(np.maximum(mel, 1e-10))
        seconds = time.perf_counter() - t0
    return {"clips": len(files), "seconds": seconds, "clips_per_s": len(files) / seconds}


def bench_parts(root: Path) -> dict[str, float]:
    """Milliseconds per clip, one process, as featurize does each step: decoding a WAV (one at
    a time, dropped after), its log-mel, adding it to a store (a task's frames written to the
    journal, the batch adopted and staged, the commit)."""
    from asdcli.audio import read_audio
    from asdcli.features import logmel
    from asdcli.featurize import TASK_FILES
    from asdcli.naming import parse_path
    from asdcli.settings import FeatureSettings
    from asdcli.store import ClipRecord, StoreWriter, save_frames

    fs = FeatureSettings()
    files = _wavs(root)
    read_audio(files[0], fs.sample_rate)
    t0 = time.perf_counter()
    for f in files:
        read_audio(f, fs.sample_rate, fs.n_fft)
    decode = time.perf_counter() - t0
    clips = [read_audio(f, fs.sample_rate, fs.n_fft).samples for f in files]
    t0 = time.perf_counter()
    feats = [logmel(c, fs) for c in clips]
    compute = time.perf_counter() - t0
    del clips
    store = root.parent / "bench-parts.h5"
    store.unlink(missing_ok=True)
    records = [
        ClipRecord(**vars(parse_path(f)), path=str(f), n_frames=x.shape[1])
        for f, x in zip(files, feats, strict=True)
    ]
    t0 = time.perf_counter()
    with StoreWriter(store, fs.key(), fs.model_dump(mode="json")) as writer:
        for i in range(0, len(records), TASK_FILES):  # as featurize: a task's clips, one batch
            frames_path = writer.reserve_batch()
            save_frames(frames_path, np.concatenate([x.T for x in feats[i : i + TASK_FILES]]))
            writer.adopt_batch(frames_path, records[i : i + TASK_FILES])
    write = time.perf_counter() - t0
    n = len(files) / 1000
    return {"decode_ms": decode / n, "logmel_ms": compute / n, "store_ms": write / n}


STORE_OPTIONS: dict[str, dict[str, Any]] = {
    "none, chunks 1024": {"chunks": 1024},
    "none, chunks 8192": {"chunks": 8192},
    "lzf+shuffle, chunks 1024": {"chunks": 1024, "compression": "lzf", "shuffle": True},
    "gzip-1+shuffle, chunks 1024": {
        "chunks": 1024,
        "compression": "gzip",
        "compression_opts": 1,
        "shuffle": True,
    },
}


def bench_store_options(store: Path, n_clips: int, n_reads: int = 200) -> dict[str, Any]:
    """Rewrite the frames of the first ``n_clips`` clips of ``store`` with each of
    :data:`STORE_OPTIONS`; time writing them (ms per clip, including fsync), the size
    (relative to raw float32) and reading one clip."""
    import h5py  # the options themselves are HDF5's; the store is read through its API

    from asdcli.store import FeatureStore

    st = FeatureStore(store)
    (info,) = st.feature_sets()
    clips = st.load(info.key, st.clips(info.key)[:n_clips])  # (n_mels, frames) each
    frames = np.concatenate([c.T for c in clips])  # the store's (frames, n_mels) layout
    lengths = np.array([c.shape[1] for c in clips])
    offsets = np.cumsum(lengths) - lengths
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(offsets), n_reads)
    out: dict[str, Any] = {}
    for name, opts in STORE_OPTIONS.items():
        path = store.with_name("bench-options.h5")
        opts = dict(opts)
        chunks = (min(opts.pop("chunks"), len(frames)), frames.shape[1])
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            d = f.create_dataset(
                "frames", shape=frames.shape, dtype=np.float32, chunks=chunks, **opts
            )
            for i in range(0, len(frames), 256 * 313):  # in journal-batch-sized blocks
                d[i : i + 256 * 313] = frames[i : i + 256 * 313]
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
        write = time.perf_counter() - t0
        size = path.stat().st_size
        t0 = time.perf_counter()
        with h5py.File(path, "r") as f:
            d = f["frames"]
            for i in picks:
                d[offsets[i] : offsets[i] + lengths[i]]
        read = time.perf_counter() - t0
        out[name] = {
            "write_ms_per_clip": write / len(offsets) * 1000,
            "size_vs_raw": size / frames.nbytes,
            "read_clip_ms": read / n_reads * 1000,
        }
        path.unlink()
    return out


_RSS_CHILD = """
import sys
from pathlib import Path
from asdcli.allocator import keep_freed_memory
from asdcli.featurize import featurize
from asdcli.settings import FeatureSettings
keep_freed_memory()  # as `asd featurize` does
featurize([Path(sys.argv[1])], FeatureSettings(), Path(sys.argv[2]), workers=1)
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
"""


def bench_rss(root: Path) -> float:
    """Peak RSS (MiB) of a featurize run in a fresh process (workers=1, so it is one process).

    VmHWM, not ``getrusage``'s ru_maxrss: that one survives exec, so a child started by a large
    process reports at least the parent's size.
    """
    store = root.parent / "bench-rss.h5"
    store.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(root), str(store)],
        capture_output=True,
        text=True,
        check=True,
    )
    store.unlink(missing_ok=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def bench_startup(clip: Path, runs: int = 5) -> dict[str, float]:
    """``asd featurize`` on a folder of one clip, as a new process each time, best of ``runs``:
    seconds from launch to the first clip computed (featurize's DEBUG log line says when), and
    to the command's exit. With ``--workers 2`` the first clips are computed by the launching
    process itself while helpers start, so this is the start-up of any worker count."""
    folder = clip.parent.parent / "startup" / "fan" / "train"
    _link(clip, folder / clip.name)
    # As a user's second run: Python's compiled modules are written and then used (a setting
    # that stops Python from writing them would make every run compile asd's modules again).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    first, whole = [], []
    for i in range(-1, runs):  # run -1: untimed, writes the compiled modules
        store = folder.parent.parent.parent / f"startup-{i}.h5"
        store.unlink(missing_ok=True)
        t0 = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "asdcli", "--log-level", "DEBUG", "featurize",
             str(folder.parent.parent), "--store", str(store), "--workers", "2"],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        if i < 0:
            continue
        whole.append(time.time() - t0)
        stamp = next(ln for ln in done.stderr.splitlines() if "first 1 clip(s) computed" in ln)
        first.append(float(stamp.rsplit("time.time()=", 1)[1]) - t0)
    return {"first_clip_s": min(first), "command_s": min(whole), "runs": runs}


_TRAIN_RSS_CHILD = """
import sys
from asdcli.cli import main
try:
    main(sys.argv[1:])
finally:
    print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
"""


def bench_train_rss(unique: Path, out: Path, n_train: int, epochs: int) -> dict[str, float]:
    """Peak RSS (MiB) of ``asd train emb-knn`` in a fresh process, on ``n_train`` training
    clips (featurized first, in another process): emb-knn streams its training windows from
    the store, so this should not grow with the number of clips."""
    from asdcli.store import FeatureStore

    data = _training_set(unique, out / "data", n_train)
    store = out / "features.h5"
    subprocess.run(
        [sys.executable, "-m", "asdcli", "featurize", str(data), "--store", str(store)],
        capture_output=True, check=True,
    )  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN_RSS_CHILD, "train", "emb-knn", "--store", str(store),
         "--runs", str(out / "runs"), "--epochs", str(epochs), "--device", "cpu"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"asd train emb-knn failed:\n{done.stderr[-2000:]}")
    st = FeatureStore(store)
    (info,) = st.feature_sets()
    frames = sum(r.n_frames for r in st.clips(info.key))
    features_mib = frames * info.settings["n_mels"] * 4 / 2**20  # float32, as a full load holds
    return {
        "train_clips": n_train,
        "features_mib": features_mib,
        "peak_rss_mib": int(done.stdout.strip().splitlines()[-1]) / 1024,
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------- detectors


def score_latencies(det: Any, files: list[Path], fs: Any) -> tuple[list[float], float]:
    """Milliseconds from WAV file to score for each of ``files``, one clip per call as
    ``asd serve`` scores them, after one warm-up clip; and the page faults per clip over them
    (counted exactly, unlike the drifting times; about 3 µs each under KVM)."""
    from asdcli.audio import read_audio
    from asdcli.features import logmel

    det.score([logmel(read_audio(files[0], fs.sample_rate).samples, fs)])  # warm-up
    latencies = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for f in files:
        t0 = time.perf_counter()
        clip = read_audio(f, fs.sample_rate, fs.n_fft)
        det.score([logmel(clip.samples, fs)])
        latencies.append((time.perf_counter() - t0) * 1000)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return latencies, faults / len(files)


def bench_detectors(root: Path, n_latency: int, epochs: int) -> dict[str, Any]:
    """Fit each detector on the store's fan clips; time per epoch; WAV-to-score latency."""
    import torch

    from asdcli.detectors import get_detector, list_detectors
    from asdcli.detectors.params import DetectorParams, TrainParams
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
    threads = torch.get_num_threads()
    for name, _ in list_detectors():
        cls = get_detector(name)
        params = getattr(DetectorParams(), name.replace("-", "_"))
        det = cls(params, TrainParams(epochs=epochs, patience=epochs + 1, device="cpu"))
        torch.set_num_threads(threads)  # training uses every core, as `asd train` does
        t0 = time.perf_counter()
        try:
            det.fit(feats, recs)
        except ValueError as exc:  # e.g. an ensemble, made of trained runs
            out[name] = {"skipped": str(exc)}
            continue
        fit_s = time.perf_counter() - t0
        n_epochs = max(len(det.history_), 1)
        torch.set_num_threads(1)  # latency on one core
        latencies, faults_per_clip = score_latencies(det, test_files, fs)
        out[name] = {
            "fit_s": fit_s,
            "epoch_s": fit_s / n_epochs if det.history_ else None,
            "train_clips": len(recs),
            "latency_ms_median": statistics.median(latencies),
            "latency_ms_p95": float(np.percentile(latencies, 95)),
            "latency_clips": len(latencies),
            "faults_per_clip": faults_per_clip,
        }
    torch.set_num_threads(threads)
    return out


# --------------------------------------------------------------------------- main


PARTS = ("featurize", "startup", "memory", "detectors")
# Above this many cores busy with other work, timings and ratios are unreliable (a loaded
# machine slows the references and asd differently): the results say so.
LOAD_WARN_CORES = 0.2


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: a smoke test.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"Comma-separated subset of {', '.join(PARTS)}."
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="Featurize runs per worker count; the best counts."
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts {sorted(parts - set(PARTS))}; choose from {PARTS}")
    # As the `asd` command does; featurize's workers and the `asd` subprocesses set it too.
    allocator = keep_freed_memory()
    q = args.quick
    n_unique, seconds = (16, 1.0) if q else (400, 10.0)
    n_dev = 2 * n_unique if q else DCASE_DEV_CLIPS
    n_small, n_big = (8, 32) if q else (1000, 4000)
    n_train, n_latency, epochs = (16, 4, 1) if q else (1000, 50, 2)

    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "platform": platform.platform(),
        },
        "quick": q,
        "allocator_keeps_freed_memory": allocator,
        "command": " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "background_load_cores": {},
    }
    _warm_up()
    with tempfile.TemporaryDirectory(prefix="asd-bench-") as tmp:
        tmp_path = Path(tmp)
        console.print(f"synthesizing {n_unique} clips of {seconds:g} s ...")
        unique = _synth(tmp_path / "unique", n_unique, seconds)
        if "featurize" in parts:
            dev = _replicate(unique, tmp_path / "dev", n_dev)
            results["background_load_cores"]["featurize"] = background_load()
            console.print(
                f"featurize: {n_dev} clips, 1 and 2 workers, the compute floor, the whole "
                f"command and the librosa reference, best of {args.repeat} interleaved runs ..."
            )
            runs: dict[str, list[dict[str, Any]]] = {}
            # Interleaved, references included: on a shared machine the speed drifts by tens of
            # percent within minutes, and a drift then hits asd and its references alike.
            for _ in range(args.repeat):
                for workers, floor in ((1, "floor_1_process"), (2, "floor_2_processes")):
                    runs.setdefault(floor, []).append(bench_floor(unique, workers))
                    runs.setdefault(f"workers_{workers}", []).append(
                        bench_featurize(dev, workers, seconds)
                    )
                runs.setdefault("librosa_reference", []).append(bench_librosa(unique))
                runs.setdefault("command_workers_2", []).append(bench_command(dev, 2))
            feat: dict[str, Any] = {
                "dev_set_clips": n_dev,
                "unique_clips": n_unique,
                "clip_seconds": seconds,
            }
            for key, done in runs.items():
                feat[key] = max(done, key=lambda m: m["clips_per_s"])
                feat[key]["all_clips_per_s"] = [m["clips_per_s"] for m in done]
            feat["parts_ms_per_clip"] = bench_parts(unique)
            results["featurize"] = feat
            results["store_options"] = bench_store_options(dev.parent / "bench-2.h5", n_unique)
        if "startup" in parts:
            console.print("start-up of `asd featurize` ...")
            results["background_load_cores"]["startup"] = background_load()
            results["startup"] = bench_startup(_wavs(unique)[0])
        if "memory" in parts:
            console.print("memory ...")
            results["memory_mib"] = {
                f"featurize_{n}": bench_rss(_replicate(unique, tmp_path / f"rss{n}", n))
                for n in (n_small, n_big)
            }
            console.print("memory of `asd train emb-knn` ...")
            results["train_rss"] = [
                bench_train_rss(unique, tmp_path / f"train-rss{n}", n, 1)
                for n in ((16, 64) if q else (250, 1000))
            ]
        if "detectors" in parts:
            console.print("detectors ...")
            results["background_load_cores"]["detectors"] = background_load()
            det_root = _training_set(unique, tmp_path / "det", n_train)
            results["detectors"] = bench_detectors(det_root, n_latency, epochs)

    results["peak_rss_mib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["background_load_cores"]["end"] = background_load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    _print(results)
    md = markdown(results)
    args.out.with_suffix(".md").write_text(md)
    console.print(f"results in {args.out} and {args.out.with_suffix('.md')} (README tables)")
    return results


def _featurize_rows(r: dict[str, Any]) -> list[list[str]]:
    """Rows of the featurize table: what, clips/s, x real time, vs librosa, vs floor, seconds."""
    f = r["featurize"]
    ref = f["librosa_reference"]["clips_per_s"]
    rows = []
    for key, label, floor in (
        ("workers_1", "asd featurize, 1 worker", "floor_1_process"),
        ("workers_2", "asd featurize, 2 workers", "floor_2_processes"),
    ):
        m = f[key]
        rows.append(
            [
                label,
                f"{m['clips_per_s']:.0f}",
                f"{m['real_time_factor']:.0f}",
                f"{m['clips_per_s'] / ref:.1f}x",
                f"{m['clips_per_s'] / f[floor]['clips_per_s']:.2f}",
                f"{m['seconds']:.1f}",
            ]
        )
    if "command_workers_2" in f:  # from launch to exit, in a new process
        m = f["command_workers_2"]
        rows.append(
            [
                "the whole command, 2 workers",
                f"{m['clips_per_s']:.0f}",
                f"{m['clips_per_s'] * f['clip_seconds']:.0f}",
                f"{m['clips_per_s'] / ref:.1f}x",
                f"{m['clips_per_s'] / f['floor_2_processes']['clips_per_s']:.2f}",
                f"{m['seconds']:.1f}",
            ]
        )
    rows.append(["librosa, DCASE baseline loop", f"{ref:.0f}", "", "1.0x", "", ""])
    for key, label in (("floor_1_process", "1 process"), ("floor_2_processes", "2 processes")):
        rows.append([f"compute floor, {label}", f"{f[key]['clips_per_s']:.0f}", "", "", "", ""])
    return rows


FEATURIZE_COLUMNS = ("what", "clips/s", "x real time", "vs librosa", "vs floor", "seconds")
DETECTOR_COLUMNS = (
    "detector", "fit s", "s/epoch", "latency median ms", "p95 ms", "page faults per clip"
)  # fmt: skip


def _detector_rows(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, d in r["detectors"].items():
        if "skipped" in d:
            rows.append([name, "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                name,
                f"{d['fit_s']:.1f}",
                f"{d['epoch_s']:.2f}" if d["epoch_s"] else "-",
                f"{d['latency_ms_median']:.1f}",
                f"{d['latency_ms_p95']:.1f}",
                f"{d['faults_per_clip']:.0f}" if "faults_per_clip" in d else "-",
            ]
        )
    return rows


def _table(title: str, columns: tuple[str, ...], rows: list[list[str]], caption: str = "") -> Table:
    table = Table(title=title, caption=caption or None)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def load_warning(r: dict[str, Any]) -> str:
    """A warning when any part ran beside other work (empty on an idle machine)."""
    busy = {k: v for k, v in r["background_load_cores"].items() if v > LOAD_WARN_CORES}
    if not busy:
        return ""
    parts = ", ".join(f"{k} {v:.1f}" for k, v in busy.items())
    return (
        f"WARNING: background load above {LOAD_WARN_CORES} cores ({parts}): timings and ratios "
        "are unreliable; README figures come only from idle runs."
    )


def _print(r: dict[str, Any]) -> None:
    load = r["background_load_cores"]
    if load_warning(r):
        console.print(f"[bold red]{load_warning(r)}[/]")
    if "featurize" in r:
        f = r["featurize"]
        console.print(
            _table(
                f"Featurize, WAV -> HDF5 store ({f['dev_set_clips']} clips)",
                FEATURIZE_COLUMNS,
                _featurize_rows(r),
                f"background load: {load['featurize']:.1f} cores busy",
            )
        )
        parts = ", ".join(f"{k[:-3]} {v:.2f} ms" for k, v in f["parts_ms_per_clip"].items())
        console.print(f"One clip in one process: {parts}")
        rows = [
            [name, f"{o['write_ms_per_clip']:.2f}", f"{o['size_vs_raw']:.2f}",
             f"{o['read_clip_ms']:.3f}"]
            for name, o in r["store_options"].items()
        ]  # fmt: skip
        columns = ("chunking, compression", "write ms/clip", "size vs raw", "read 1 clip ms")
        console.print(_table("Store options", columns, rows))
    if "startup" in r:
        console.print(_startup_line(r))
    if "memory_mib" in r:
        mem = r["memory_mib"]
        columns = tuple(k.replace("featurize_", "") + " clips" for k in mem)
        rows = [[f"{v:.0f}" for v in mem.values()]]
        console.print(_table("Peak RSS of featurize, 1 worker (MiB)", columns, rows))
        console.print(_train_rss_line(r))
    if "detectors" in r:
        caption = f"background load: {load['detectors']:.1f} cores busy"
        console.print(
            _table("Detectors (latency on one core)", DETECTOR_COLUMNS, _detector_rows(r), caption)
        )


def _startup_line(r: dict[str, Any]) -> str:
    s = r["startup"]
    return (
        f"Start-up of `asd featurize --workers 2`, new process, best of {s['runs']}: launch to "
        f"the first clip computed {s['first_clip_s']:.2f} s (whole command on one clip "
        f"{s['command_s']:.2f} s)."
    )


def _train_rss_line(r: dict[str, Any]) -> str:
    rows = "; ".join(
        f"{t['train_clips']} clips ({t['features_mib']:.0f} MiB of features): "
        f"{t['peak_rss_mib']:.0f} MiB"
        for t in r["train_rss"]
    )
    return f"Peak RSS of `asd train emb-knn --epochs 1` (streams from the store): {rows}."


def _md(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name as Linux reports it ("" elsewhere): runs on different hardware
    differ by more than their noise, so each run says where it ran."""
    try:
        with cpuinfo.open() as f:
            return next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        return ""


SPREAD_LABELS = {
    "workers_1": "1 worker",
    "workers_2": "2 workers",
    "command_workers_2": "the whole command",
    "librosa_reference": "librosa",
    "floor_1_process": "floor 1 process",
    "floor_2_processes": "floor 2 processes",
}


def _spread_line(f: dict[str, Any]) -> str:
    """How far the interleaved runs of each featurize row lay apart (the table has the best),
    e.g. ``"Runs (clips/s, slowest-fastest): 1 worker 256-312, ..."``."""
    ranges = [
        f"{label} {min(f[k]['all_clips_per_s']):.0f}-{max(f[k]['all_clips_per_s']):.0f}"
        for k, label in SPREAD_LABELS.items()
        if k in f and len(f[k].get("all_clips_per_s", [])) > 1
    ]
    return f"Runs (clips/s, slowest-fastest): {', '.join(ranges)}." if ranges else ""


def markdown(r: dict[str, Any]) -> str:
    """The README's tables, from one run's results."""
    out = []
    load = r["background_load_cores"]
    machine = r.get("machine", {})
    if machine.get("cpu"):
        out.append(
            f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, Python {machine['python']}.\n"
        )
    if load_warning(r):
        out.append(f"**{load_warning(r)}**\n")
    if "featurize" in r:
        f = r["featurize"]
        out.append(
            f"Featurize, WAV to HDF5 store, {f['dev_set_clips']} clips of {f['clip_seconds']:g} s "
            f"(background load {load['featurize']:.1f} cores):\n"
        )
        out.append(_md(FEATURIZE_COLUMNS, _featurize_rows(r)))
        spread = _spread_line(f)
        if spread:
            out.append(f"\n{spread}\n")
        parts = ", ".join(f"{k[:-3]} {v:.2f} ms" for k, v in f["parts_ms_per_clip"].items())
        out.append(f"\nOne clip in one process: {parts}.\n")
        cpu_1 = f["workers_1"]["cpu_ms_per_clip_this_process"]
        cpu_floor = f["floor_1_process"]["cpu_ms_per_clip"]
        out.append(
            f"\nCPU per clip, 1 worker: featurize {cpu_1:.2f} ms, compute floor {cpu_floor:.2f} ms "
            f"(floor/featurize {cpu_floor / cpu_1:.2f}, independent of the background load).\n"
        )
    if "startup" in r:
        out.append(f"\n{_startup_line(r)}\n")
    if "memory_mib" in r:
        mem = ", ".join(
            f"{k.replace('featurize_', '')} clips {v:.0f} MiB" for k, v in r["memory_mib"].items()
        )
        out.append(f"\nPeak RSS of featurize (1 worker): {mem}.\n")
        out.append(f"\n{_train_rss_line(r)}\n")
    if "detectors" in r:
        out.append(
            f"\nDetectors: scoring latency per 10-s clip, WAV to score, one core "
            f"(background load {load['detectors']:.1f} cores):\n"
        )
        out.append(_md(DETECTOR_COLUMNS, _detector_rows(r)))
    return "\n".join(out)


if __name__ == "__main__":
    main()

"""The compute floor: log-mel of decoded clips in memory, in processes that start together.

A module of its own (not ``benchmarks/__main__.py``) so that its worker function can be
imported by the processes multiprocessing starts.
"""

from __future__ import annotations

import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np


def _floor_child(files: list[str], barrier: Any, out: Any) -> None:
    """Decode ``files`` (untimed), wait for the others, then time their log-mels as featurize
    computes them (equal-length clips batched up to ``BATCH_SAMPLES``)."""
    from asdcli.allocator import keep_freed_memory
    from asdcli.audio import read_audio
    from asdcli.features import logmel
    from asdcli.featurize import BATCH_SAMPLES
    from asdcli.settings import FeatureSettings

    keep_freed_memory()  # as featurize's workers do
    fs = FeatureSettings()
    clips = np.stack([read_audio(Path(f), fs.sample_rate).samples for f in files])
    per_call = max(1, BATCH_SAMPLES // clips.shape[1])
    logmel(clips[:1], fs)  # warm-up
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(clips), per_call):
        logmel(clips[i : i + per_call], fs)
    out.put((time.perf_counter() - t0, time.process_time() - c0))


def bench_floor(root: Path, processes: int) -> dict[str, Any]:
    """Log-mel of decoded clips in memory, split over ``processes`` that start together."""
    ctx = get_context("forkserver")
    files = [str(f) for f in sorted(root.rglob("*.wav"))]
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_floor_child, args=(files[i::processes], barrier, out))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        times = [out.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    seconds = max(wall for wall, _ in times)
    return {
        "clips": len(files),
        "seconds": seconds,
        "clips_per_s": len(files) / seconds,
        "cpu_ms_per_clip": sum(cpu for _, cpu in times) / len(files) * 1000,
    }

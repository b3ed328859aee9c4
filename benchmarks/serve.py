"""Serving benchmark: ``python -m benchmarks.serve [--requests N] [--quick]``.

Trains ``dcase-ae`` and ``knn`` on a small synthetic set of 10-s clips, then for each detector
starts `asd serve`'s server in its own process on a loopback port and sends ``--requests``
scoring requests (raw ``audio/wav`` bodies, the test clips in turn) at concurrency 1, 4 and
16, one level after the other. It prints, per detector and concurrency: throughput (clips/s),
client-side latency p50/p95/p99, errors (any answer but 200), and the server's resident
memory (RSS) after a warm-up (500 requests at concurrency 16) and at the end of each level,
with its growth since the warm-up. Each server also writes every result to its
history database, as in real use. The run is bounded and stops by itself.

Targets (issue 16, 2-core machine, 10-s clips): at least 100 clips/s with dcase-ae, p99 under
100 ms at concurrency 4, zero errors, RSS growth under 10 % over 5,000 requests.

The client runs on the same machine and takes CPU from the server (on 2 cores, a fair share);
torch uses one thread (``OMP_NUM_THREADS=1``) in the server, as the README advises beside
another job. ``--quick`` is a smoke test: tiny data and a few requests, its numbers mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
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

console = Console(width=max(Console().width, 120))  # the table is wide

DETECTORS = ("dcase-ae", "knn")
CONCURRENCY = (1, 4, 16)
WARMUP = 500  # requests at the highest concurrency before RSS is first read

SERVER = """
import sys
from pathlib import Path
from asdcli.monitor.server import serve
from asdcli.monitor.settings import ServeSettings
run, port, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
serve(Path(run), ServeSettings(port=port, db=Path(db)))
"""


def _train(work: Path, quick: bool) -> dict[str, Path]:
    """Synthesize fan clips, featurize them, train each detector; detector -> run folder."""
    from asdcli.featurize import featurize
    from asdcli.settings import load_settings
    from asdcli.synth import synthesize
    from asdcli.train import train

    data = work / "data"
    n_train, n_test = (12, 4) if quick else (60, 20)
    synthesize(data, machines=("fan",), n_train=n_train, n_test=n_test, seconds=10.0)
    settings, _ = load_settings(
        overrides={
            "paths.store": str(work / "features.h5"),
            "paths.runs": str(work / "runs"),
            "train.epochs": 1 if quick else 3,
        }
    )
    featurize([data], settings.features, settings.paths.store)
    return {d: train(settings, d).run.path for d in DETECTORS}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _load(url: str, clips: list[bytes], n: int, concurrency: int) -> tuple[list[float], int]:
    """``n`` requests, ``concurrency`` at a time: their latencies in s, and the errors."""
    import httpx

    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, errors
            while sent < n:
                i = sent
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        "/v1/score",
                        content=clips[i % len(clips)],
                        params={"machine": "fan", "filename": f"clip{i % len(clips)}.wav"},
                        headers={"content-type": "audio/wav"},
                    )
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def _bench_detector(
    detector: str, run: Path, clips: list[bytes], work: Path, requests: int, warmup: int
) -> list[dict[str, Any]]:
    import httpx

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    db = work / f"monitor-{detector}.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(run), str(port), str(db)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server for {detector} exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server for {detector} did not start")
            time.sleep(0.2)
        # Warm-up at the highest concurrency: every scoring thread exists, and the working set
        # of 16 requests in flight is reached (it plateaus there), before RSS is first read.
        asyncio.run(_load(url, clips, warmup, max(CONCURRENCY)))
        rss0 = _rss_mib(proc.pid)
        for c in CONCURRENCY:
            t0 = time.perf_counter()
            lat, errors = asyncio.run(_load(url, clips, requests, c))
            seconds = time.perf_counter() - t0
            rss1 = _rss_mib(proc.pid)
            ms = np.asarray(lat) * 1000
            rows.append(
                {
                    "detector": detector,
                    "concurrency": c,
                    "requests": requests,
                    "errors": errors,
                    "clips_per_s": requests / seconds,
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p95_ms": float(np.percentile(ms, 95)),
                    "p99_ms": float(np.percentile(ms, 99)),
                    "rss_start_mib": rss0,
                    "rss_end_mib": rss1,
                    "rss_growth": rss1 / rss0 - 1,
                }
            )
            console.print(
                f"  {detector} c={c}: {rows[-1]['clips_per_s']:.0f} clips/s, "
                f"p99 {rows[-1]['p99_ms']:.1f} ms, {errors} error(s)",
                highlight=False,
            )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows


def _table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for name in (
        "detector",
        "concurrency",
        "requests",
        "errors",
        "clips/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "RSS start MiB",
        "RSS end MiB",
        "RSS growth",
    ):
        table.add_column(name, justify="left" if name == "detector" else "right")
    for r in rows:
        table.add_row(
            r["detector"],
            str(r["concurrency"]),
            f"{r['requests']:,}",
            str(r["errors"]),
            f"{r['clips_per_s']:.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['rss_start_mib']:.0f}",
            f"{r['rss_end_mib']:.0f}",
            f"{r['rss_growth']:+.1%}",
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=5000,
        help="requests per detector and concurrency level [5000]",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny data, 40 requests")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--work", type=Path, help="folder for data and runs [a temporary one]")
    args = parser.parse_args(argv)
    requests = 40 if args.quick else args.requests
    if requests < 1:
        parser.error("--requests must be at least 1")

    work = args.work or Path(tempfile.mkdtemp(prefix="asd-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        console.print(f"Training {', '.join(DETECTORS)} on synthetic 10-s clips in {work} ...")
        runs = _train(work, args.quick)
        clips = [p.read_bytes() for p in sorted((work / "data" / "fan" / "test").glob("*.wav"))]
        rows: list[dict[str, Any]] = []
        for detector, run in runs.items():
            console.print(
                f"Serving {detector}: {requests:,} requests at concurrency "
                f"{', '.join(map(str, CONCURRENCY))} ..."
            )
            rows += _bench_detector(
                detector, run, clips, work, requests, 40 if args.quick else WARMUP
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    from benchmarks.__main__ import cpu_model

    cores = os.cpu_count()
    # The processor by name, as the other benchmarks say it: latencies differ between them.
    title = (
        f"asd serve on {cpu_model() or platform.machine()}, {cores} CPU core(s), 10-s clips, "
        f"raw WAV bodies, client on the same machine"
    )
    console.print(_table(rows, title))
    durations = [r["requests"] / r["clips_per_s"] for r in rows]
    console.print(
        f"{sum(r['requests'] for r in rows):,} requests in "
        f"{sum(durations):.0f} s; median throughput "
        f"{statistics.median(r['clips_per_s'] for r in rows):.0f} clips/s."
    )
    if args.out:
        args.out.write_text(json.dumps({"title": title, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Detector ranking: every registered detector on one synthetic benchmark, one command.

    OMP_NUM_THREADS=1 python -m benchmarks.ranking   # ~15 minutes on 2 CPU cores
    python -m benchmarks.ranking --quick    # a 2-minute smoke run of the same steps
    OMP_NUM_THREADS=1 python -m benchmarks.ranking --data DIR [DIR ...]   # real recordings

Synthesizes all machine types with ``asd synth``'s default difficulty and a fixed seed, in the
DCASE 2023 first-shot shape scaled to what trains in minutes on 2 cores (per machine type: 100
training clips of which 10 target-domain, 60 test clips balanced over domain x label, 4-s
clips; DCASE has 1,000 training clips of 10 s, 10 of them target), featurizes them, then
trains, scores and evaluates every detector with the same functions as
``asd train/score/evaluate``, and ranks the runs with ``asd report --compare``'s code. Writes
``benchmarks/ranking.md`` (the table the README shows) and ``ranking.json``; the data and runs
stay in ``--work`` (a temporary folder by default). The README's table was made with
``OMP_NUM_THREADS=1`` (one torch thread: on 2 shared cores, two threads per process
oversubscribe and slow small networks many times over).

``--data DIR [DIR ...]`` ranks the same detectors, with their default settings, on real
recordings instead: each DIR is a data set as ``asd featurize`` takes it (a machine folder or a
folder of machine folders with ``train/`` and ``test/``). Each set gets its own store and runs
under ``--work``; the result is ``ranking_real.md`` / ``ranking_real.json``: one table per set
and a summary of every detector's official score on every set.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

HERE = Path(__file__).resolve().parent

DATASET = {"n_train": 100, "target_train": 10, "n_test": 60, "seconds": 4.0}
QUICK_DATASET = {"n_train": 24, "target_train": 4, "n_test": 20, "seconds": 1.0}
EPOCHS, QUICK_EPOCHS = 15, 2
SEED = 0

# (run label, detector, hyper-parameter overrides). Order = training order; the ensemble
# comes last because it combines earlier runs.
ENTRIES: list[tuple[str, str, dict[str, Any]]] = [
    ("dcase-ae", "dcase-ae", {}),
    ("dcase-ae-mahalanobis", "dcase-ae", {"score": "mahalanobis"}),
    ("fc-ae", "fc-ae", {}),
    ("conv-ae", "conv-ae", {}),
    ("lstm-ae", "lstm-ae", {}),
    ("lof", "lof", {}),
    ("iforest", "iforest", {}),
    ("gmm", "gmm", {}),
    ("vae", "vae", {}),
    ("knn", "knn", {}),
    ("emb-knn", "emb-knn", {}),
    ("ensemble", "ensemble", {}),  # members: the runs named below
]
ENSEMBLE_MEMBERS = ("knn", "emb-knn", "gmm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ranking", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny data, 2 epochs (smoke test)")
    parser.add_argument("--work", type=Path, help="folder for data, store and runs")
    parser.add_argument("--out", type=Path, help="folder for ranking.md/json [benchmarks/]")
    parser.add_argument("--only", help="comma-separated run labels to train (default: all)")
    parser.add_argument(
        "--report-only", action="store_true", help="rank the runs already in --work, train none"
    )
    parser.add_argument(
        "--data", type=Path, nargs="+", metavar="DIR", help="rank on these real data sets"
    )
    args = parser.parse_args(argv)
    from asdcli.allocator import keep_freed_memory

    keep_freed_memory()  # as the `asd` command does before it trains
    console = Console()
    work = args.work or Path(tempfile.mkdtemp(prefix="asd-ranking-"))
    out = args.out or (Path(tempfile.mkdtemp(prefix="asd-ranking-out-")) if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    if args.data:
        missing = [str(d) for d in args.data if not d.is_dir()]
        if missing:
            parser.error(f"not a folder: {', '.join(missing)}")
        sets: dict[str, list[dict[str, Any]]] = {}
        for folder in args.data:
            sub = work / folder.resolve().name
            done = (
                _labelled_runs(sub)
                if args.report_only
                else run(sub, quick=args.quick, only=args.only, console=console, data=folder)
            )
            sets[folder.resolve().name] = rank(done, sub, console)
        write_real(sets, out, quick=args.quick, console=console)
        return 0
    if args.report_only:
        rows = {
            (p.parent / "label.txt").read_text().strip(): p.parent
            for p in sorted((work / "runs").glob("*/label.txt"))
        }
    else:
        rows = run(work, quick=args.quick, only=args.only, console=console)
    write(rows, work, out, quick=args.quick, console=console)
    return 0


def _labelled_runs(work: Path) -> dict[str, Path]:
    return {
        (p.parent / "label.txt").read_text().strip(): p.parent
        for p in sorted((work / "runs").glob("*/label.txt"))
    }


def run(
    work: Path, quick: bool, only: str | None, console: Console, data: Path | None = None
) -> dict[str, Path]:
    """Synthesize (or take ``data``), featurize, train/score/evaluate every entry; returns
    label -> run folder."""
    from asdcli.errors import UserError
    from asdcli.evaluate import evaluate_run
    from asdcli.featurize import featurize
    from asdcli.score import score_run
    from asdcli.settings import load_settings
    from asdcli.synth import synthesize
    from asdcli.train import train

    work.mkdir(parents=True, exist_ok=True)
    store, runs_root = work / "features.h5", work / "runs"
    dataset = QUICK_DATASET if quick else DATASET
    if data is None:  # the synthetic benchmark, generated once into the work folder
        data = work / "data"
        if not (data / "bearing").is_dir():
            console.rule(f"synthesize {dataset}")
            synthesize(data, seed=SEED, **dataset)  # type: ignore[arg-type]
    base = {
        "paths.store": store,
        "paths.runs": runs_root,
        "train.epochs": QUICK_EPOCHS if quick else EPOCHS,
        "train.seed": SEED,
        "train.device": "cpu",
    }
    settings, _ = load_settings(None, base)
    console.rule("featurize")
    featurize([data], settings.features, store, workers=settings.featurize.workers)

    wanted = set(only.split(",")) if only else None
    done = _labelled_runs(work)  # runs already in --work are kept: an interrupted ranking resumes
    for label, detector, params in ENTRIES:
        if wanted is not None and label not in wanted:
            continue
        if label in done:
            console.print(f"{label}: already trained in {done[label]}")
            continue
        overrides = {f"detectors.{detector.replace('-', '_')}.{k}": v for k, v in params.items()}
        if detector == "ensemble":
            missing = [m for m in ENSEMBLE_MEMBERS if m not in done]
            if missing:
                console.print(f"[yellow]skip ensemble: member runs {missing} not trained")
                continue
            overrides["detectors.ensemble.members"] = [str(done[m]) for m in ENSEMBLE_MEMBERS]
        settings, _ = load_settings(None, {**base, **overrides})
        console.rule(f"{label}: train, score, evaluate")
        t0 = time.perf_counter()
        try:
            result = train(settings, detector)
        except UserError as exc:  # e.g. emb-knn with a single class: a finding, not a crash
            console.print(f"[yellow]{label} cannot train here: {exc}")
            continue
        score_run(result.run.path, store)
        metrics = evaluate_run(result.run.path, figures=False)
        (result.run.path / "label.txt").write_text(label + "\n", encoding="utf-8")
        console.print(
            f"{label}: official {metrics.official_score:.4f} "
            f"({time.perf_counter() - t0:.0f} s) -> {result.run.path}"
        )
        done[label] = result.run.path
    return done


def rank(done: dict[str, Path], work: Path, console: Console) -> list[dict[str, Any]]:
    """Rank the runs under ``work/runs`` with ``asd report --compare``'s code; one row each."""
    from asdcli.cli.render import comparison_table
    from asdcli.report import compare

    runs_root = work / "runs"
    comparison = compare(runs_root, out_md=runs_root / "report.md", figure=runs_root / "cmp.png")
    console.print(comparison_table(comparison))
    label_of = {path.resolve(): label for label, path in done.items()}
    rows = []
    for rank, r in enumerate(comparison.ranked, start=1):
        rows.append(
            {
                "rank": rank,
                "detector": label_of.get(r.path.resolve(), r.detector),
                "official": r.official_score,
                "auc_source": r.auc_source,
                "auc_target": r.auc_target,
                "pauc": r.pauc,
                "train_seconds": r.train_seconds,
                "n_params": r.n_params,
                "per_machine": r.per_machine,
            }
        )
    return rows


def _meta(quick: bool) -> dict[str, Any]:
    from asdcli.runs import library_versions

    return {
        "command": ("OMP_NUM_THREADS=1 " if _torch_threads() == 1 else "")
        + "python -m benchmarks.ranking"
        + (" --quick" if quick else ""),
        "epochs": QUICK_EPOCHS if quick else EPOCHS,
        "machine": machine_line(),
        "versions": library_versions(),
    }


def write(done: dict[str, Path], work: Path, out: Path, quick: bool, console: Console) -> None:
    """Rank the synthetic runs and write ranking.md / ranking.json."""
    rows = rank(done, work, console)
    machines = sorted({m for r in rows for m in r["per_machine"]})
    dataset = QUICK_DATASET if quick else DATASET
    meta = {
        "command": ("OMP_NUM_THREADS=1 " if _torch_threads() == 1 else "")
        + "python -m benchmarks.ranking"
        + (" --quick" if quick else ""),
        **_meta(quick),
        "dataset": {**dataset, "machines": machines, "difficulty": 0.5, "seed": SEED},
    }
    (out / "ranking.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8"
    )
    (out / "ranking.md").write_text(markdown(rows, meta), encoding="utf-8")
    console.print(f"Wrote {out / 'ranking.md'} and {out / 'ranking.json'}; runs in {work / 'runs'}")


def write_real(
    sets: dict[str, list[dict[str, Any]]], out: Path, quick: bool, console: Console
) -> None:
    """ranking_real.md / .json: a summary of official scores per set, then each set's table."""
    meta = _meta(quick)
    meta["command"] += " --data " + " ".join(sets)
    labels = [label for label, _, _ in ENTRIES]
    score = {(name, r["detector"]): r["official"] for name, rows in sets.items() for r in rows}
    lines = [
        f"Produced by `{meta['command']}` on {meta['machine']}: every detector with its default "
        f"settings, {meta['epochs']} epochs max, seed {SEED}, on real recordings. Official "
        "score = harmonic mean of AUC-s, AUC-t (where the set has a target domain) and pAUC "
        "(max FPR 0.1). The sets are small: differences of a few hundredths are noise.",
        "",
        "| detector | " + " | ".join(sets) + " | mean |",
        "|---|" + "---:|" * (len(sets) + 1),
    ]
    summary = []
    for label in labels:
        values = [score.get((name, label)) for name in sets]
        known = [v for v in values if v is not None]
        mean = sum(known) / len(known) if len(known) == len(values) and known else None
        summary.append((mean if mean is not None else -1.0, label, values, mean))
    for _, label, values, mean in sorted(summary, key=lambda t: -t[0]):
        lines.append(f"| {label} | " + " | ".join(_f(v) for v in values) + f" | {_f(mean)} |")
    for name, rows in sets.items():
        lines += ["", f"### {name}", "", *markdown_rows(rows)]
    (out / "ranking_real.json").write_text(
        json.dumps({"meta": meta, "sets": sets}, indent=2) + "\n", encoding="utf-8"
    )
    (out / "ranking_real.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    console.print(f"Wrote {out / 'ranking_real.md'} and {out / 'ranking_real.json'}")


def machine_line() -> str:
    """``"AMD EPYC, 2 CPU cores, 1 torch thread(s)"``: the processor by name, because
    floating-point results, and so the scores, differ between processors
    (``platform.processor()`` says only "x86_64" on Linux)."""
    from benchmarks.__main__ import cpu_model

    return (
        f"{cpu_model() or platform.machine()}, {_cpus()} CPU cores, "
        f"{_torch_threads()} torch thread(s)"
    )


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The README table: rank, detector, official, AUC-s, AUC-t, pAUC, training time."""
    d = meta["dataset"]
    lines = [
        f"Produced by `{meta['command']}` on {meta['machine']}: {len(d['machines'])} synthetic "
        f"machine types, {d['n_train']} training clips each ({d['target_train']} target), "
        f"{d['n_test']} test clips, {d['seconds']:g}-s clips, difficulty {d['difficulty']}, "
        f"seed {d['seed']}, {meta['epochs']} epochs max. Official score = harmonic mean of "
        "AUC-s, AUC-t and pAUC (max FPR 0.1) over all machine types (DCASE 2023 Task 2).",
        "",
        *markdown_rows(rows),
    ]
    return "\n".join(lines) + "\n"


def markdown_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The ranking table's header and rows."""
    lines = [
        "| rank | detector | official | AUC-s | AUC-t | pAUC | train s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        seconds = "n/a" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(
            f"| {r['rank']} | {r['detector']} | {_f(r['official'])} | {_f(r['auc_source'])} | "
            f"{_f(r['auc_target'])} | {_f(r['pauc'])} | {seconds} |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

"""Training speed, the old code against this one in one run, on the ranking benchmark.

    OMP_NUM_THREADS=1 python -m benchmarks.training        # ~15 minutes on 2 CPU cores
    python -m benchmarks.training --quick                  # a smoke run of the same steps

The reference is another commit of this repository (``--against``, by default
:data:`REFERENCE`, the code before the training speed-ups), exported with ``git archive``. Each
side runs its own ``benchmarks.ranking --only conv-ae,emb-knn`` on the same synthetic data
(synthesized once), in a new Python process that imports that side's ``asdcli`` and the same
installed libraries: ``python -S`` with ``PYTHONPATH`` set, so the editable install cannot
hand the reference this checkout's modules. Sides alternate, ``--rounds`` times each, so that
the machine's drift hits both alike.

Per detector it reports the median seconds per epoch (from each run's ``history.csv``: the
training loop and the validation loss, not the featurizing and scoring around it), the epochs
trained, and the official score, AUC-s, AUC-t and pAUC. The ranking is deterministic (one
seed, one data set), so a side's rounds give the same scores; a difference between the sides
is the new code's arithmetic (channels-last convolutions add in another order, conv-ae's
dropout masks come from another generator). Writes
``benchmarks/training.md`` and ``training.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The parent of c2ebbca ("Training speed: ..."): the training code the issue measured.
REFERENCE = "69621588c0ccd49710ecdab88a6ce8dffd4adf13"
LABELS = ("conv-ae", "emb-knn")
SIDES = ("reference", "this checkout")
SCORES = ("official", "auc_source", "auc_target", "pauc")


class BenchmarkError(Exception):
    """A reference that cannot be exported or a side that fails: the message says which."""


def export_tree(repo: Path, ref: str, dest: Path) -> str:
    """Write commit ``ref`` of the git repository ``repo`` into ``dest`` (no ``.git``); returns
    the full commit hash."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", commit],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchmarkError(
            f"git cannot export {ref!r} from {repo} ({exc}). A shallow clone lacks old "
            "commits: `git fetch --unshallow`, or pass --against with a commit it has."
        ) from exc
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(dest, filter="data")
        else:  # git's own archive of this repository: trusted
            tar.extractall(dest)
    return commit


def side_env(tree: Path) -> dict[str, str]:
    """The environment of a process that imports ``tree``'s packages and the installed
    libraries (with ``python -S``: no ``.pth`` file runs, so no editable-install finder)."""
    paths = sysconfig.get_paths()
    libs = dict.fromkeys([str(tree), paths["purelib"], paths["platlib"]])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(libs)}


def side_run(tree: Path, code: str, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run ``code`` in a process of ``tree``'s side (``python -S``, :func:`side_env`);
    ``kwargs`` go to :func:`subprocess.run`."""
    return subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=tree, env=side_env(tree), **kwargs
    )


def run_side(tree: Path, work: Path, data: Path, quick: bool, seed: int, log: Path) -> Path:
    """``tree``'s ``benchmarks.ranking --only conv-ae,emb-knn`` on ``data``, training with
    ``seed`` (the module's ``SEED``: a ranking of any age has one); its out folder."""
    work.mkdir(parents=True)
    (work / "data").symlink_to(data, target_is_directory=True)  # the ranking then skips synth
    out = work / "out"
    args = ["--only", ",".join(LABELS), "--work", str(work), "--out", str(out)]
    args += ["--quick"] * quick
    code = (
        f"import sys\nimport benchmarks.ranking as r\nr.SEED = {seed}\nsys.exit(r.main({args!r}))"
    )
    with log.open("w") as fh:
        done = side_run(tree, code, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise BenchmarkError(f"the ranking of {tree} failed (exit {done.returncode}); see {log}")
    return out


def epoch_seconds(run: Path) -> list[float]:
    """Seconds of each epoch of a run folder, from its ``history.csv``."""
    with (run / "history.csv").open(newline="") as fh:
        return [float(row["seconds"]) for row in csv.DictReader(fh)]


def side_result(work: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Per label: scores (from the ranking's ``ranking.json``) and seconds per epoch."""
    rows = {r["detector"]: r for r in json.loads((out / "ranking.json").read_text())["rows"]}
    result = {}
    for label_file in sorted((work / "runs").glob("*/label.txt")):
        label = label_file.read_text().strip()
        if label in rows and label in LABELS:
            r = rows[label]
            result[label] = {
                "epoch_seconds": epoch_seconds(label_file.parent),
                **{k: r[k] for k in SCORES},
                "train_seconds": r["train_seconds"],
            }
    return result


def summarise(rounds: dict[str, list[dict[str, dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Per label and side: median seconds per epoch over every epoch of every round, epochs
    per round, the scores (of the first round; ``scores_differ`` if a round disagreed); and
    the speed-up, the reference's median over this checkout's."""
    summary: dict[str, dict[str, Any]] = {}
    for label in LABELS:
        entry: dict[str, Any] = {}
        for side in SIDES:
            results = [r[label] for r in rounds.get(side, []) if label in r]
            if not results:
                continue
            first = results[0]
            entry[side] = {
                "epoch_s_median": statistics.median(s for r in results for s in r["epoch_seconds"]),
                "epochs": [len(r["epoch_seconds"]) for r in results],
                **{k: first[k] for k in SCORES},
                "scores_differ": any(r[k] != first[k] for r in results for k in SCORES),
            }
        if all(side in entry for side in SIDES):
            ref, new = (entry[side]["epoch_s_median"] for side in SIDES)
            entry["speedup"] = ref / new
        summary[label] = entry
    return summary


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Produced by `{meta['command']}` on {meta['machine']}, {meta['date']}: "
        f"reference {meta['reference'][:10]}, this checkout {meta['checkout'][:10]}"
        f"{' with uncommitted changes' if meta.get('checkout_dirty') else ''}; "
        f"{meta['rounds']} round(s), the sides alternating. Seconds per epoch are medians over "
        "every epoch of every round (the training loop and the validation loss; conv-ae trains "
        "one model per machine type, so its epochs are per machine type). Scores are "
        f"the ranking benchmark's (synthetic data), training seed {meta.get('seed', 0)}.",
        "",
        "| detector | s/epoch, reference | s/epoch, now | speed-up | epochs, reference / now "
        "| official, reference | official, now | AUC-s | AUC-t | pAUC |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for label, e in summary.items():
        ref, new = e.get(SIDES[0]), e.get(SIDES[1])
        if ref is None or new is None:
            continue
        pair = " / ".join(",".join(str(n) for n in s["epochs"]) for s in (ref, new))
        lines.append(
            f"| {label} | {_f(ref['epoch_s_median'], 2)} | {_f(new['epoch_s_median'], 2)} | "
            f"{_f(e['speedup'], 2)}x | {pair} | {_f(ref['official'])} | {_f(new['official'])} | "
            + " | ".join(
                f"{_f(ref[k])} / {_f(new[k])}" for k in ("auc_source", "auc_target", "pauc")
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__)
    parser.add_argument("--against", default=REFERENCE, help="the reference commit [%(default)s]")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side [%(default)s]")
    parser.add_argument("--quick", action="store_true", help="the ranking's tiny --quick data")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed of both sides (the data is the "
        "ranking's, made with its seed 0) [%(default)s]",
    )
    parser.add_argument("--work", type=Path, help="folder for the trees, data and runs")
    parser.add_argument("--out", type=Path, help="folder for training.md/json [benchmarks/]")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    console = Console()
    work = args.work or Path(tempfile.mkdtemp(prefix="asd-training-"))
    out = args.out or (work if args.quick else HERE)
    try:
        summary, meta = _run(args, work, console)
    except BenchmarkError as exc:
        console.print(f"[red]{exc}")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "training.json").write_text(
        json.dumps({"meta": meta, "detectors": summary}, indent=2) + "\n", encoding="utf-8"
    )
    (out / "training.md").write_text(markdown(summary, meta), encoding="utf-8")
    console.print(markdown(summary, meta))
    console.print(f"Wrote {out / 'training.md'} and {out / 'training.json'}; runs in {work}")
    return 0


def _run(
    args: argparse.Namespace, work: Path, console: Console
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    earlier = sorted(work.glob("round*"))
    if earlier or (work / "reference").exists():
        raise BenchmarkError(
            f"{work} holds an earlier run ({(earlier or [work / 'reference'])[0].name}); "
            "pass a new --work folder."
        )
    from asdcli.synth import synthesize
    from benchmarks.ranking import DATASET, QUICK_DATASET, SEED, machine_line

    trees = {SIDES[0]: work / "reference", SIDES[1]: REPO}
    reference = export_tree(REPO, args.against, trees[SIDES[0]])
    checkout = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True,
    ).stdout.strip() != ""  # fmt: skip
    data = work / "data"
    if not (data / "bearing").is_dir():
        console.print("synthesizing the ranking benchmark's data ...")
        synthesize(data, seed=SEED, **(QUICK_DATASET if args.quick else DATASET))  # type: ignore[arg-type]
    rounds: dict[str, list[dict[str, dict[str, Any]]]] = {side: [] for side in SIDES}
    for i in range(args.rounds):
        order = SIDES if i % 2 == 0 else SIDES[::-1]  # ABBA: a drift hits both sides alike
        for side in order:
            side_work = work / f"round{i + 1}-{side.replace(' ', '-')}"
            console.print(f"round {i + 1}: {side} ({trees[side]}) ...")
            t0 = time.perf_counter()
            log = side_work.with_suffix(".log")
            side_out = run_side(trees[side], side_work, data, args.quick, args.seed, log)
            rounds[side].append(side_result(side_work, side_out))
            console.print(f"  {time.perf_counter() - t0:.0f} s")
    meta = {
        "command": ("OMP_NUM_THREADS=1 " if os.environ.get("OMP_NUM_THREADS") == "1" else "")
        + "python -m benchmarks.training"
        + (f" --against {args.against}" if args.against != REFERENCE else "")
        + (f" --rounds {args.rounds}" if args.rounds != 2 else "")
        + (f" --seed {args.seed}" if args.seed else "")
        + (" --quick" if args.quick else ""),
        "machine": machine_line(),
        "date": time.strftime("%Y-%m-%d"),
        "reference": reference,
        "checkout": checkout,
        "checkout_dirty": dirty,  # uncommitted changes to tracked files were measured too
        "rounds": args.rounds,
        "seed": args.seed,
        "quick": args.quick,
        "per_round": rounds,
    }
    return summarise(rounds), meta


if __name__ == "__main__":
    raise SystemExit(main())

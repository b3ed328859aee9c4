"""The workers of `asd tune`: run trials until the study has its number of them.

:func:`run_worker` runs trials in this process; :func:`run_workers` starts ``jobs`` worker
processes (spawned, each in its own process group, with its share of the CPU threads) that
share the storage. Ctrl-C reaches the main process, which passes it on once to each worker:
each marks its running trial failed and stops. A worker killed outright (kill -9) is noticed:
its running trial is marked failed while the others go on.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from asdcli.errors import UserError
from asdcli.tune.objective import (
    Objective,
    StudyPlan,
    TrialFailed,
    TrialRow,
    counted,
    make_pruner,
    make_sampler,
    quiet_optuna,
    trial_row,
)
from asdcli.tune.storage import fail_dead_trials, open_storage

MAX_FAILURES_IN_A_ROW = 3

# progress(finished trials, trials wanted, the trial that just ended or None)
StudyProgress = Callable[[int, int, TrialRow | None], None]


def run_worker(
    plan: StudyPlan,
    on_trial: Callable[[TrialRow], None] | None = None,
    study: optuna.Study | None = None,
) -> None:
    """Run trials of the study until it has ``plan.trials``, the deadline passes, or trials
    fail :data:`MAX_FAILURES_IN_A_ROW` times in a row (then a :class:`UserError` says why).

    ``study``: the study, opened with this plan's sampler and pruner (default: load it).
    KeyboardInterrupt marks the running trial failed and propagates.
    """
    quiet_optuna()
    if study is None:
        study = optuna.load_study(
            study_name=plan.name,
            storage=open_storage(plan.storage),
            sampler=make_sampler(plan.seed, plan.startup_trials),
            pruner=make_pruner(plan),
        )
    objective = Objective(plan)
    failures: list[str] = []
    while True:
        fail_dead_trials(study)
        if counted(study) >= plan.trials:
            return
        if plan.deadline is not None and time.time() >= plan.deadline:
            return
        objective.last = None
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        if objective.last is None:
            continue
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == objective.last)
        if objective.surplus:
            return
        if trial.state == TrialState.FAIL:
            failures.append(str(trial.user_attrs.get("error", "failed")))
            if len(failures) >= MAX_FAILURES_IN_A_ROW:
                raise UserError(
                    f"{len(failures)} trials in a row failed; the last: {failures[-1]}.\n"
                    "Narrow the search space (tune.spaces in the settings YAML)."
                )
        else:
            failures = []
        if on_trial is not None:
            on_trial(trial_row(trial, plan.space))


def _worker_process(plan: StudyPlan, threads: int, errors: Any) -> None:
    """Entry point of a worker process (``--jobs``)."""
    # Its own process group: a Ctrl-C at the terminal reaches the main process, which passes it
    # on once; a worker that got it twice could be cut short while it marks its trial failed.
    os.setpgid(0, 0)
    from asdcli.allocator import keep_freed_memory
    from asdcli.interrupts import keep_ctrl_c

    keep_ctrl_c()  # the Ctrl-C the main process passes on must stop the trial

    keep_freed_memory()  # as `asd train` has it: a spawned process starts with glibc's defaults
    try:
        import torch

        torch.set_num_threads(threads)
        run_worker(plan)
    except KeyboardInterrupt:
        sys.exit(130)
    except UserError as exc:
        errors.put(("user", str(exc)))
        sys.exit(2)
    except BaseException:
        errors.put(("fault", traceback.format_exc()))
        sys.exit(1)


def finished(study: optuna.Study) -> int:
    """Trials complete or pruned."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_workers(
    plan: StudyPlan, jobs: int, study: optuna.Study, progress: StudyProgress | None
) -> list[str]:
    """Run ``jobs`` worker processes until they end; notes on the ones that failed."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    errors = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    procs = [
        ctx.Process(target=_worker_process, args=(plan, threads, errors), name=f"asd-tune-{i}")
        for i in range(jobs)
    ]
    for p in procs:
        p.start()
    notes: list[str] = []
    seen = finished(study)
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.5 / jobs)
            fail_dead_trials(study)
            done = finished(study)
            if progress is not None and done != seen:
                seen = done
                progress(done, plan.trials, None)
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
                p.join()
        raise
    for i, p in enumerate(procs):
        if p.exitcode is not None and p.exitcode < 0:
            notes.append(
                f"Worker {i} (pid {p.pid}) was ended by signal {-p.exitcode}; its running "
                "trial was marked failed. Run the same command to finish the study."
            )
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    if not problems and any(p.exitcode not in (None, 0, 130) and p.exitcode > 0 for p in procs):
        codes = ", ".join(str(p.exitcode) for p in procs)
        problems.append(("fault", f"worker exit codes {codes}; see the messages above"))
    for kind, message in problems:
        if kind == "user":
            raise UserError(message)
    for _, message in problems:
        raise RuntimeError(f"a worker process failed:\n{message}")
    return notes

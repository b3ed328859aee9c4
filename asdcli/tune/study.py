"""`asd tune`: a hyper-parameter study of one detector, with Optuna.

:func:`run_study` checks the request (:func:`plan_study`), opens or continues the study in its
Optuna storage (:func:`open_study`, :mod:`asdcli.tune.storage`), runs trials until the study has
the number asked for (:mod:`asdcli.tune.workers`, each trial an
:class:`~asdcli.tune.objective.Objective` call), then scores the best trial on the holdout,
beside its search score, and writes ``best.yaml`` (the best run's settings, for
``asd --config``) and the figures in the study's folder. Running the same command again
continues the study; :func:`list_studies` lists a storage's studies for `asd report`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from asdcli.errors import DataError, RunError, UserError
from asdcli.tune.holdout import SubsetScore, read_clip_scores, split_holdout
from asdcli.tune.holdout import subset_score as score_subset
from asdcli.tune.objective import (
    StudyPlan,
    TrialRow,
    make_pruner,
    make_sampler,
    quiet_optuna,
    trial_row,
)
from asdcli.tune.settings import TuneSettings, dump_space
from asdcli.tune.space import Param, resolve_space
from asdcli.tune.storage import (
    fail_dead_trials,
    is_database,
    open_storage,
    redact,
    storage_string,
    studies_dir,
)
from asdcli.tune.workers import StudyProgress, finished, run_worker, run_workers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from asdcli.settings import Settings

BEST_YAML = "best.yaml"
HISTORY_PNG = "optimization_history.png"
IMPORTANCE_PNG = "param_importances.png"
STUDY_ATTR = "asd"  # the study's user attribute: what it tunes, on which clips
BEST_ATTR = "asd_best"  # ... and its best trial's search and holdout scores
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class TuneResult:
    """What :func:`run_study` did.

    Attributes
    ----------
    study, storage : the study's name and its storage (a URL's password hidden).
    folder : where ``best.yaml`` and the figures are.
    trials : every trial of the study, by number.
    added : trials that finished (complete or pruned) during this call.
    best : the best complete trial (None: none yet).
    search, holdout : the best trial's scores on the search clips and on the holdout
        (``holdout`` is None without holdout clips).
    objective : one line saying what the objective measures.
    """

    study: str
    storage: str
    folder: Path
    trials: list[TrialRow]
    added: int
    wanted: int
    space: dict[str, Param]
    objective: str
    best: TrialRow | None = None
    search: SubsetScore | None = None
    holdout: SubsetScore | None = None
    best_yaml: Path | None = None
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def finished(self) -> int:
        return sum(t.state in ("complete", "pruned") for t in self.trials)


# --------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------


def _study_attrs(plan: StudyPlan) -> dict[str, Any]:
    return {
        "detector": plan.detector,
        "machines": list(plan.machines) if plan.machines else None,
        "feature_key": plan.feature_key,
        "holdout": plan.split.fraction,
        "split": plan.split.fingerprint(),
        "search_clips": len(plan.split.search),
        "holdout_clips": len(plan.split.holdout),
        "seed": plan.seed,
        "space": dump_space({k: p.spec for k, p in plan.space.items()}),
    }


def open_study(plan: StudyPlan, notes: list[str]) -> optuna.Study:
    """Create the study, or load it and check it tunes the same thing on the same clips."""
    study = optuna.create_study(
        study_name=plan.name,
        storage=open_storage(plan.storage),
        direction="maximize",
        load_if_exists=True,
        sampler=make_sampler(plan.seed, plan.startup_trials),
        pruner=make_pruner(plan),
    )
    mine = _study_attrs(plan)
    theirs = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(theirs, dict) and not study.get_trials(deepcopy=False):
        study.set_user_attr(STUDY_ATTR, mine)  # new (or made by another asd a moment ago)
        return study
    if not isinstance(theirs, dict) or study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(
            f"Study {plan.name} in {redact(plan.storage)} was not made by asd tune; pass "
            "another --study NAME."
        )
    why = {
        "detector": f"tunes {theirs.get('detector')}, not {plan.detector}",
        "machines": f"tunes machine types {theirs.get('machines') or 'all'}",
        "feature_key": f"was made on feature set {theirs.get('feature_key')}",
        "holdout": f"holds out {theirs.get('holdout')} of the test clips",
        "split": "was made on other test clips (the store changed) or another tune.seed",
    }
    for key, reason in why.items():
        if theirs.get(key) != mine[key]:
            raise UserError(
                f"Study {plan.name} {reason}: its trials are not comparable with these.\n"
                "Pass another --study NAME to start a new study."
            )
    if theirs.get("space") != mine["space"]:
        notes.append(
            f"The search space differs from the one study {plan.name} started with; TPE "
            "models the trials of both."
        )
    return study


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise UserError(
            f"--study {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)."
        )


def plan_study(
    settings: Settings,
    detector: str,
    *,
    trials: int | None = None,
    study: str | None = None,
    storage: str | None = None,
    holdout: float | None = None,
    timeout: float | None = None,
    machines: Sequence[str] | None = None,
    tune: TuneSettings | None = None,
) -> tuple[StudyPlan, list[str]]:
    """Check the arguments against the settings and the store; the plan, and notes.

    See :func:`run_study` for the parameters.
    """
    from asdcli.detectors import canonical_name
    from asdcli.detectors.torch_base import TorchDetector
    from asdcli.train import open_feature_set, resolve_detector, training_clips

    cls = resolve_detector(detector)
    name = canonical_name(detector)
    tune = tune or settings.tune
    trials = tune.trials if trials is None else trials
    fraction = tune.holdout if holdout is None else holdout
    if trials < 1:
        raise UserError(f"--trials {trials}: give at least 1.")
    if not 0 <= fraction < 1:
        raise UserError(f"--holdout {fraction}: give a share in [0, 1), e.g. 0.3.")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout {timeout}: give a number of seconds above 0.")
    study_name = study or name
    _check_name(study_name)
    neural = issubclass(cls, TorchDetector)
    space, notes = resolve_space(name, tune, neural)

    store, key = open_feature_set(settings)
    available = training_clips(store, key)
    chosen = sorted(set(machines) if machines else set(available))
    missing = [m for m in chosen if m not in available]
    if missing or not chosen:
        raise DataError(
            f"No training clips for machine {', '.join(missing) or '(any)'} in "
            f"{settings.paths.store}; machines with training clips: "
            f"{', '.join(sorted(available)) or 'none'}."
        )
    split = split_holdout((r for r in store.clips(key) if r.machine in chosen), fraction, tune.seed)
    if not split.search:
        raise DataError(
            f"{settings.paths.store} has no labelled test clips of {', '.join(chosen)}: the "
            "objective is the official score on them. Featurize test clips whose names say "
            "normal or anomaly."
        )
    plan = StudyPlan(
        settings=settings,
        detector=name,
        machines=tuple(chosen) if machines else None,
        name=study_name,
        storage=storage_string(settings, tune, storage),
        space=space,
        trials=trials,
        deadline=time.time() + timeout if timeout is not None else None,
        split=split,
        seed=tune.seed,
        startup_trials=tune.startup_trials,
        prune=tune.prune and neural and not any(p.name == "loss" for p in space.values()),
        feature_key=key,
        folder=studies_dir(settings, tune) / study_name,
    )
    return plan, notes


def run_study(
    settings: Settings,
    detector: str,
    *,
    trials: int | None = None,
    study: str | None = None,
    storage: str | None = None,
    jobs: int = 1,
    holdout: float | None = None,
    timeout: float | None = None,
    machines: Sequence[str] | None = None,
    tune: TuneSettings | None = None,
    progress: StudyProgress | None = None,
) -> TuneResult:
    """Run (or continue) the hyper-parameter study of ``detector``.

    Parameters
    ----------
    settings : the base settings; every trial changes only its searched values.
    trials : the trials the study should have (default ``tune.trials``); re-running with a
        larger number adds the difference.
    study : its name (default: the detector's name).
    storage : a journal file path or a database URL (default: see
        :func:`~asdcli.tune.storage.storage_string`).
    jobs : worker processes on this machine, sharing the storage.
    holdout : share of the labelled test clips the search never sees (default ``tune.holdout``).
    timeout : no new trial starts after this many seconds.
    machines : tune on these machine types only (default: all with training clips).
    tune : the ``tune`` settings (default: ``settings.tune`` where the settings have it).
    progress : called with (finished trials, trials wanted, the trial that ended or None).

    Raises
    ------
    UserError
        An unknown detector, an unusable store or storage, a study made for something else,
        no labelled test clips, or trials that keep failing.
    """
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: give at least 1.")
    plan, notes = plan_study(
        settings,
        detector,
        trials=trials,
        study=study,
        storage=storage,
        holdout=holdout,
        timeout=timeout,
        machines=machines,
        tune=tune,
    )
    quiet_optuna()
    the_study = open_study(plan, notes)
    fail_dead_trials(the_study)
    before = finished(the_study)

    interrupted = False
    try:
        if jobs == 1:
            on_trial = (
                None
                if progress is None
                else lambda row: progress(finished(the_study), plan.trials, row)
            )
            run_worker(plan, on_trial, the_study)
        else:
            notes.extend(run_workers(plan, jobs, the_study, progress))
    except KeyboardInterrupt:
        interrupted = True
    fail_dead_trials(the_study)

    rows = [trial_row(t, plan.space) for t in the_study.get_trials(deepcopy=False)]
    result = TuneResult(
        study=plan.name,
        storage=redact(plan.storage),
        folder=plan.folder,
        trials=rows,
        added=finished(the_study) - before,
        wanted=plan.trials,
        space=plan.space,
        objective=plan.objective,
        notes=notes,
        interrupted=interrupted,
    )
    if interrupted:
        return result
    complete = [r for r in rows if r.state == "complete" and r.value is not None]
    if not complete:
        result.notes.append("No trial is complete yet: no best trial, nothing written.")
        return result
    result.best = max(complete, key=lambda r: (r.value or 0.0, -r.number))
    _finish(result, the_study, plan)
    return result


def _finish(result: TuneResult, study: optuna.Study, plan: StudyPlan) -> None:
    """Score the best trial on the holdout; write best.yaml and the figures."""
    from asdcli.files import write_text
    from asdcli.runs import load_run

    best = result.best
    assert best is not None and best.run is not None
    try:
        run = load_run(Path(best.run), require_complete=False)
        rows = read_clip_scores(run)
    except RunError as exc:
        result.notes.append(
            f"The best trial's run cannot be read here ({exc}); if another machine ran it, run "
            "asd tune there for its holdout score and best.yaml."
        )
        return
    max_fpr = plan.settings.evaluation.max_fpr
    result.search = score_subset(rows, plan.split.search, max_fpr)
    if plan.split.holdout:
        result.holdout = score_subset(rows, plan.split.holdout, max_fpr)
    else:
        result.notes.append("--holdout 0: no clip is held out, so the search score is all.")
    study.set_user_attr(
        BEST_ATTR,
        {
            "trial": best.number,
            "run": best.run,
            "search": result.search.to_dict(),
            "holdout": result.holdout.to_dict() if result.holdout else None,
        },
    )
    holdout_text = (
        f"{result.holdout.official_score:.4f}"
        if result.holdout and result.holdout.official_score is not None
        else "n/a"
    )
    header = (
        f"# asd tune, study {result.study}, trial {best.number} of {len(result.trials)}: "
        f"official score {best.value:.4f} on the search clips, {holdout_text} on the holdout.\n"
        f"# The settings of run {run.name}; use them with `asd --config {BEST_YAML} train "
        f"{plan.detector}`.\n"
    )
    result.best_yaml = write_text(
        result.folder / BEST_YAML, header + run.settings_path.read_text(encoding="utf-8")
    )
    result.figures = _figures(study, result.folder, plan.seed, result.notes)


def _figures(study: optuna.Study, folder: Path, seed: int, notes: list[str]) -> list[Path]:
    """The optimisation history and the parameter importances (fANOVA), as PNG files."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from asdcli.files import write_png

    def save(draw: Callable[[], Any], path: Path) -> Path:
        with plt.rc_context():  # optuna sets a global style; keep it to these figures
            fig: Figure = draw().figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            try:
                return write_png(fig, path)
            finally:
                plt.close(fig)

    written = [save(lambda: ovm.plot_optimization_history(study), folder / HISTORY_PNG)]
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        written.append(
            save(
                lambda: ovm.plot_param_importances(study, evaluator=evaluator),
                folder / IMPORTANCE_PNG,
            )
        )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        notes.append(f"No parameter importance figure: {exc}")
    return written


# --------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------


@dataclass
class StudyRow:
    """One study of a storage, for `asd report`."""

    name: str
    detector: str | None
    complete: int
    pruned: int
    failed: int
    running: int
    best_trial: int | None
    best_value: float | None
    holdout_value: float | None
    started: str | None


def list_studies(storage: str) -> list[StudyRow]:
    """Every study in ``storage`` (a journal file that does not exist holds none).

    Raises
    ------
    StorageError
        A database that cannot be reached.
    """
    if not is_database(storage) and not Path(storage).is_file():
        return []
    quiet_optuna()
    opened = open_storage(storage)
    rows = []
    for summary in optuna.get_all_study_summaries(opened, include_best_trial=True):
        study = optuna.load_study(study_name=summary.study_name, storage=opened)
        # surplus trials were never run (asdcli.tune.objective): not failures
        states = [
            t.state for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")
        ]
        attrs = summary.user_attrs.get(STUDY_ATTR) or {}
        best = summary.user_attrs.get(BEST_ATTR) or {}
        holdout = (best.get("holdout") or {}).get("official_score")
        value = summary.best_trial.value if summary.best_trial else None
        rows.append(
            StudyRow(
                name=summary.study_name,
                detector=attrs.get("detector"),
                complete=states.count(TrialState.COMPLETE),
                pruned=states.count(TrialState.PRUNED),
                failed=states.count(TrialState.FAIL),
                running=states.count(TrialState.RUNNING),
                best_trial=summary.best_trial.number if summary.best_trial else None,
                best_value=value if value is not None and math.isfinite(value) else None,
                holdout_value=holdout if isinstance(holdout, int | float) else None,
                started=(
                    summary.datetime_start.isoformat(timespec="seconds")
                    if summary.datetime_start
                    else None
                ),
            )
        )
    return rows

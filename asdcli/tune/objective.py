"""One trial of `asd tune`: its plan, its sampler and pruner, and the objective itself.

:class:`Objective` is a plain function of an Optuna trial: it draws values from the detector's
search space (:mod:`asdcli.tune.space`), then trains, scores and evaluates as ``asd train
--evaluate`` does, into an ordinary run folder whose manifest is tagged with the study and the
trial number (``manifest["tune"]``). Its value is the DCASE official score on the search clips:
the store's labelled test clips less the holdout (:mod:`asdcli.tune.holdout`).

* **Sampler** (:func:`make_sampler`): TPE, where trial ``n`` draws with a random state seeded
  by ``(tune.seed, n)``, so a resumed or parallel study never repeats the random start-up
  trials, and one process gives the same study every time.
* **How many trials**: a trial counts when fewer than ``trials`` trials numbered below it are
  finished or running (:func:`counted`); one that would be surplus (two workers starting the
  last trial at once) is not run and is marked failed with the attribute ``surplus``. So
  workers on several machines never overshoot, and failed trials are made up for.
* **Pruning** (neural detectors): the negated validation loss of each epoch of the first
  machine type trained is reported to a median pruner (the study maximises); a pruned trial
  stops like Ctrl-C, and its run is kept, marked incomplete with the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from asdcli.errors import DataError
from asdcli.tune.holdout import HoldoutSplit, read_clip_scores
from asdcli.tune.holdout import subset_score as score_subset
from asdcli.tune.space import Param, apply_values, decode, suggest
from asdcli.tune.storage import redact, worker_identity

if TYPE_CHECKING:
    from asdcli.runs import Run
    from asdcli.settings import Settings

PRUNER_STARTUP_TRIALS = 3
PRUNER_WARMUP_EPOCHS = 2


class TrialFailed(Exception):
    """A trial that cannot give a score (parameters the data cannot train, a diverged loss);
    the trial is marked failed and the study goes on."""


# Errors of one trial's parameters, not of the study: the next trial may do fine.
_TRIAL_ERRORS: tuple[type[BaseException], ...] = (
    DataError,
    ValueError,
    ArithmeticError,
    RuntimeError,
)


@dataclass(frozen=True)
class StudyPlan:
    """Everything a worker needs to run trials (picklable, for worker processes)."""

    settings: Settings
    detector: str
    machines: tuple[str, ...] | None
    name: str
    storage: str
    space: dict[str, Param]
    trials: int
    deadline: float | None
    split: HoldoutSplit
    seed: int
    startup_trials: int
    prune: bool
    feature_key: str
    folder: Path  # best.yaml and the figures

    @property
    def objective(self) -> str:
        """One line saying what the objective measures."""
        return (
            f"Objective: the DCASE official score on {len(self.split.search)} labelled test "
            "clips of the store, as DCASE development sets are used; "
            f"{len(self.split.holdout)} more ({self.split.fraction:.0%}) are held out and "
            "score only the best trial."
        )


@dataclass
class TrialRow:
    """One trial as the study's table shows it."""

    number: int
    state: str  # complete, pruned, fail, running, waiting
    value: float | None
    params: dict[str, Any]
    run: str | None
    reason: str | None = None
    surplus: bool = False


def trial_seed(seed: int, number: int) -> int:
    """The random seed of trial ``number``'s sampler."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """TPE whose random state is a function of the study's seed and the trial number.

    Each trial gets a TPE sampler of its own, seeded with :func:`trial_seed`; constant liar
    treats running trials as bad results, so parallel workers spread out.
    """

    def __init__(self, seed: int, startup_trials: int) -> None:
        self.seed = seed
        self.startup_trials = startup_trials
        self._tpe: dict[int, optuna.samplers.TPESampler] = {}

    def _for(self, number: int) -> optuna.samplers.TPESampler:
        if number not in self._tpe:  # one trial at a time per process: keep the current one
            tpe = optuna.samplers.TPESampler(
                seed=trial_seed(self.seed, number),
                n_startup_trials=self.startup_trials,
                constant_liar=True,
            )
            self._tpe = {number: tpe}
        return self._tpe[number]

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self._for(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        return self._for(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self._for(trial.number).sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._for(trial.number).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._for(trial.number).after_trial(study, trial, state, values)


def make_sampler(seed: int, startup_trials: int) -> TrialSeededSampler:
    """The study's sampler (see the module doc)."""
    return TrialSeededSampler(seed, startup_trials)


def make_pruner(plan: StudyPlan) -> optuna.pruners.BasePruner:
    """A median pruner where the plan prunes, else none."""
    if not plan.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS
    )


# --------------------------------------------------------------------------------------------
# one trial
# --------------------------------------------------------------------------------------------


class _EpochReporter:
    """The training progress hook of a trial: reports the first machine type's validation loss
    (negated: the study maximises) per epoch; a pruned trial stops like Ctrl-C."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.machine: str | None = None
        self.pruned_at: int | None = None

    def __call__(self, machine: str, event: dict[str, Any]) -> None:
        if "event" in event or "epoch" not in event:
            return  # start / done markers
        if self.machine is None:
            self.machine = machine
        if machine != self.machine:
            return  # other machine types' losses are on other scales
        loss = event.get("val_loss")
        loss = event["loss"] if loss is None else loss
        self.trial.report(-float(loss), int(event["epoch"]))
        if self.trial.should_prune():
            self.pruned_at = int(event["epoch"])
            raise KeyboardInterrupt  # train() keeps the weights so far, marks the run incomplete


def counted(study: optuna.Study, below: int | None = None) -> int:
    """Trials that count toward the study's total: finished (complete, pruned) or running,
    numbered below ``below`` (all when None)."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=live)
        if below is None or t.number < below
    )


def _tag(run: Run, info: dict[str, Any]) -> None:
    """Record the study and trial in the run's manifest."""
    run.manifest.setdefault("tune", {}).update(info)
    run.save_manifest()


class Objective:
    """The objective: one trial's official score on the search clips (see the module doc)."""

    def __init__(self, plan: StudyPlan) -> None:
        self.plan = plan
        self.last: int | None = None
        self.surplus = False

    def __call__(self, trial: optuna.Trial) -> float:
        self.last = trial.number
        trial.set_user_attr("worker", worker_identity())
        try:
            return self._run(trial)
        except TrialFailed as exc:
            trial.set_user_attr("error", str(exc))
            raise

    def _run(self, trial: optuna.Trial) -> float:
        from pydantic import ValidationError

        from asdcli.evaluate import evaluate_run
        from asdcli.score import score_run
        from asdcli.train import train

        plan = self.plan
        if counted(trial.study, below=trial.number) >= plan.trials:
            self.surplus = True
            trial.set_user_attr("surplus", True)
            raise TrialFailed(f"not run: the study already has its {plan.trials} trials")
        values = suggest(trial, plan.space)
        try:
            settings = apply_values(plan.settings, values)
        except ValidationError as exc:
            raise TrialFailed(f"these values do not make valid settings: {exc}") from None
        reporter = _EpochReporter(trial) if plan.prune else None
        try:
            result = train(settings, plan.detector, plan.machines, progress=reporter)
        except _TRIAL_ERRORS as exc:
            raise TrialFailed(f"training failed: {exc}") from exc
        run = result.run
        trial.set_user_attr("run", str(run.path.resolve()))
        tag = {"study": plan.name, "trial": trial.number, "storage": redact(plan.storage)}
        _tag(run, tag)
        if result.interrupted:
            if reporter is not None and reporter.pruned_at is not None:
                run.manifest["reason"] = (
                    f"pruned by asd tune at epoch {reporter.pruned_at} (study {plan.name}, "
                    f"trial {trial.number})"
                )
                run.save_manifest()
                raise optuna.TrialPruned(f"pruned at epoch {reporter.pruned_at}")
            trial.set_user_attr("error", "interrupted (Ctrl-C)")
            raise KeyboardInterrupt
        try:
            score_run(run.path, settings.paths.store)
            # On the search clips only: the run's metrics, and so `asd report --compare`'s
            # ranking of trials, must not see the holdout.
            evaluate_run(
                run.path,
                max_fpr=settings.evaluation.max_fpr,
                figures=False,
                clips=plan.split.search,
            )
        except _TRIAL_ERRORS as exc:
            raise TrialFailed(f"scoring failed: {exc}") from exc
        search = score_subset(read_clip_scores(run), plan.split.search, settings.evaluation.max_fpr)
        trial.set_user_attr("search", search.to_dict())
        _tag(run, {"search_score": search.official_score, "search_clips": search.n_clips})
        if search.official_score is None:
            raise TrialFailed(
                "the official score cannot be computed on the search clips (no section has "
                "both normal and anomalous clips)"
            )
        return search.official_score


def quiet_optuna() -> None:
    """Optuna's own log lines and experimental-feature warnings off: asd reports the trials."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def trial_row(trial: optuna.trial.FrozenTrial, space: dict[str, Param]) -> TrialRow:
    state = trial.state.name.lower()
    reason = trial.user_attrs.get("error")
    if state == "fail" and reason is None:
        reason = "its process ended before the trial finished (killed or interrupted)"
    return TrialRow(
        number=trial.number,
        state=state,
        value=trial.value if state == "complete" else None,
        params=decode(space, trial.params),
        run=trial.user_attrs.get("run"),
        reason=reason,
        surplus=bool(trial.user_attrs.get("surplus", False)),
    )

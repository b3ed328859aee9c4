"""``ensemble``: the weighted mean of several detectors' standardised scores.

Members (``params.members``) are either

* **trained runs** (run folders): the member's model for the clips' machine type is loaded from
  the run, nothing is retrained; or
* **detector names** (``"lof"``, ``"gmm"``...): the member is trained here, on the same clips,
  with its default hyper-parameters and the ensemble's training settings.

Before a run starts, :meth:`EnsembleDetector.resolve_params` checks the members once: run names
under the runs folder become absolute paths of complete, unmodified runs with the run's
feature set, and the machine types are those every member run has a model for
(``asd train ensemble --members RUN1,RUN2``).

Each member's score is standardised with the mean and std of that member's own training scores
(:attr:`EnsembleDetector.member_mean_` / ``member_std_``, one value per member), so scores on
different scales (an MSE, a log-likelihood, a cosine distance) weigh as the weights say. A saved
ensemble copies its members' models into ``members/<i>/`` and the statistics into
``member_stats.json``: it keeps working when a member run is moved or deleted.

An ensemble learns from the clips of one machine type (the member runs' models are per machine
type); its training scores are the members' own training scores, standardised and averaged, when
the members were trained on the same clips (same count), else the members' scores of the clips.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from asdcli.detectors.base import Detector, ParamsContext, Progress
from asdcli.detectors.params import EnsembleParams
from asdcli.errors import DataError, UserError
from asdcli.files import read_json, write_json
from asdcli.naming import UNKNOWN, ClipInfo
from asdcli.runs import find_run, is_run_folder, load_run

log = logging.getLogger(__name__)

MEMBERS_DIR = "members"
STATS_FILE = "member_stats.json"
# Floor for a member's training-score std (a member that scores every training clip the same).
STD_FLOOR = 1e-12


class EnsembleDetector(Detector):
    """Weighted mean of standardised member scores (see the module docstring).

    Attributes (after :meth:`fit`, besides :class:`Detector`'s)
    ----------------------------------------------------------
    members_ : list of Detector
        The fitted members, in ``params.members`` order.
    member_mean_, member_std_ : ndarray of float32, shape (n_members,)
        Mean and std (floored at ``STD_FLOOR``) of each member's training scores.
    """

    name: ClassVar[str] = "ensemble"
    params_cls: ClassVar[type[EnsembleParams]] = EnsembleParams
    params: EnsembleParams

    members_: list[Detector]
    member_mean_: np.ndarray
    member_std_: np.ndarray

    @classmethod
    def resolve_params(
        cls, params: BaseModel, context: ParamsContext
    ) -> tuple[BaseModel, list[str]]:
        """Members named as runs become absolute run paths; keep the machines they all have.

        A run member is looked up as a folder, then as a run name under ``context.runs_root``;
        it must be complete, unmodified since training (its hashes) and trained on
        ``context.feature_key``. Detector names stay as they are.

        Raises
        ------
        UserError
            No members, bad weights, a member that is neither a run nor a detector, a run of
            other features; :class:`~asdcli.errors.RunError` for an unusable member run;
            :class:`~asdcli.errors.DataError` when no machine type is left.
        """
        from asdcli.detectors import canonical_name

        p = EnsembleParams.model_validate(params.model_dump())
        try:
            _check(p)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        resolved: list[str] = []
        kept = list(context.machines)
        for member in p.members:
            folder = find_run(member, context.runs_root)
            if folder is None:
                try:
                    resolved.append(canonical_name(member))
                except ValueError:
                    raise UserError(
                        f"ensemble member {member!r} is neither a run folder (looked in . and "
                        f"{context.runs_root}) nor a detector name; `asd report` lists the runs."
                    ) from None
                continue
            run = load_run(folder)  # refuses incomplete runs with a clear message
            if run.feature_key != context.feature_key:
                raise UserError(
                    f"ensemble member {run.name} was trained on other features (key "
                    f"{run.feature_key}, current {context.feature_key}); train the ensemble "
                    f"with the member's feature settings (--config {run.settings_path})."
                )
            has = set(run.completed_machines)
            dropped = [m for m in kept if m not in has]
            if dropped:
                log.warning(
                    "Ensemble member %s has no model for %s: left out.",
                    run.name,
                    ", ".join(dropped),
                )
            kept = [m for m in kept if m in has]
            run.verify(kept, override=None)  # its models are copied into the ensemble
            resolved.append(str(run.path.resolve()))
        if not kept:
            raise DataError(
                "The ensemble members have no machine type in common with the store's training "
                "clips."
            )
        return params.model_copy(update={"members": resolved}), kept

    def _weights(self) -> np.ndarray:
        n = len(self.params.members)
        w = np.ones(n) if self.params.weights is None else np.asarray(self.params.weights, float)
        return np.asarray(w / w.sum())

    def _member(
        self, member: str, features: Sequence[np.ndarray], clips: list[ClipInfo]
    ) -> Detector:
        from asdcli.detectors import get_detector, load_detector

        if not is_run_folder(Path(member)):
            return get_detector(member)(None, self.train).fit(features, clips)
        machines = {c.machine for c in clips}
        if len(machines) != 1 or UNKNOWN in machines:
            raise ValueError(
                "an ensemble of trained runs learns from one machine type at a time; the "
                f"clips are of {', '.join(sorted(machines))}"
            )
        machine = machines.pop()
        folder = load_run(Path(member), require_complete=False).model_dir(machine)
        if not folder.is_dir():
            raise ValueError(f"member run {member} has no model for {machine}")
        return load_detector(folder, device=self.train.device)

    def _fit(
        self, features: Sequence[np.ndarray], clips: list[ClipInfo], progress: Progress | None
    ) -> np.ndarray:
        _check(self.params)
        self.members_ = [self._member(m, features, clips) for m in self.params.members]
        # The input is not standardised here: each member does its own.
        self.norm_mean_ = np.zeros(0, dtype=np.float32)
        self.norm_std_ = np.zeros(0, dtype=np.float32)
        # float32 statistics, as they were stored before they had their own file: scores are
        # the same after load.
        self.member_mean_ = np.array(
            [m.train_scores_.mean() for m in self.members_], dtype=np.float32
        )
        self.member_std_ = np.array(
            [max(m.train_scores_.std(), STD_FLOOR) for m in self.members_], dtype=np.float32
        )
        self.n_params_ = sum(m.n_params_ for m in self.members_)
        own = [
            m.train_scores_ if len(m.train_scores_) == len(features) else m.score(features, clips)
            for m in self.members_
        ]
        return self._combine(own)

    def _combine(self, member_scores: list[np.ndarray]) -> np.ndarray:
        """``n_members x (n_clips,)`` raw scores -> ``(n_clips,)`` weighted standardised mean."""
        z = [
            (np.asarray(s, np.float64) - float(mu)) / float(sd)
            for s, mu, sd in zip(member_scores, self.member_mean_, self.member_std_, strict=True)
        ]
        return np.tensordot(self._weights(), np.stack(z), axes=1)

    def _score(self, features: Sequence[np.ndarray], clips: list[ClipInfo]) -> np.ndarray:
        return self._combine([m.score(features, clips) for m in self.members_])

    def member_scores(
        self, features: Sequence[np.ndarray], clips: list[ClipInfo] | None = None
    ) -> np.ndarray:
        """Each member's raw scores ``(n_members, n_clips)`` (for inspecting an ensemble)."""
        self._check_fitted()
        return np.stack([m.score(features, clips) for m in self.members_])

    def _save_state(self, folder: Path) -> list[str]:
        files = []
        for i, member in enumerate(self.members_):
            name = f"{MEMBERS_DIR}/{i}"
            member.save(folder / name)
            files.append(name)
        write_json(
            folder / STATS_FILE,
            {"mean": self.member_mean_.tolist(), "std": self.member_std_.tolist()},
        )
        return [*files, STATS_FILE]

    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        from asdcli.detectors import load_detector

        names = [n for n in meta["files"] if n != STATS_FILE]
        self.members_ = [load_detector(folder / name, device=device) for name in names]
        n = len(self.params.members)
        if len(self.members_) != n:
            raise ValueError(f"{folder}: {len(self.members_)} member models, expected {n}")
        if STATS_FILE in meta["files"]:
            stats = read_json(folder / STATS_FILE)
            mean, std = stats["mean"], stats["std"]
        else:  # saved before the statistics had their own file
            mean, std = meta["normalisation"]["mean"], meta["normalisation"]["std"]
        self.member_mean_ = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.member_std_ = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.member_mean_.shape != (n,) or self.member_std_.shape != (n,):
            raise ValueError(f"{folder}: member score statistics are not one value per member")


def _check(p: EnsembleParams) -> None:
    """The member list and weights make an ensemble, else a ValueError saying how to fix it."""
    if not p.members:
        raise ValueError(
            "an ensemble needs members: run folders, run names under the runs folder, or "
            "detector names, e.g. `asd train ensemble --members RUN1,RUN2` (or lof,gmm)"
        )
    if p.weights is not None:
        if len(p.weights) != len(p.members):
            raise ValueError(
                f"{len(p.weights)} weights for {len(p.members)} members of the ensemble; give one "
                "weight per member"
            )
        if min(p.weights) < 0 or sum(p.weights) <= 0:
            raise ValueError("ensemble weights must be >= 0 and not all 0")

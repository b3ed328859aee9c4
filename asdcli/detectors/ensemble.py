"""``ensemble``: the weighted mean of several detectors' standardised scores.

Members (``params.members``) are either

* **trained runs** (run folders; ``asd train ensemble --members RUN1,RUN2`` resolves run names
  under the runs folder to paths first): the member's model for the clips' machine type is
  loaded from ``<run>/models/<machine>/``, nothing is retrained; or
* **detector names** (``"lof"``, ``"gmm"``...): the member is trained here, on the same clips,
  with its default hyper-parameters and the ensemble's training settings.

Each member's score is standardised with the mean and std of that member's own training scores
(stored as :attr:`~asdcli.detectors.base.Detector.norm_mean_` / ``norm_std_``, one value per
member), so scores on different scales (an MSE, a log-likelihood, a cosine distance) weigh as
the weights say. A saved ensemble copies its members' models into ``members/<i>/``: it keeps
working when a member run is moved or deleted.

An ensemble learns from the clips of one machine type (the member runs' models are per machine
type); its training scores are the members' own training scores, standardised and averaged, when
the members were trained on the same clips (same count), else the members' scores of the clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from asdcli.detectors.base import Detector, Progress
from asdcli.detectors.params import EnsembleParams
from asdcli.naming import UNKNOWN, ClipInfo

MEMBERS_DIR = "members"
# Floor for a member's training-score std (a member that scores every training clip the same).
STD_FLOOR = 1e-12


def is_run_folder(member: str) -> bool:
    """A member given as a path to a run folder (it has a manifest), not a detector name."""
    return (Path(member) / "manifest.json").is_file()


class EnsembleDetector(Detector):
    """Weighted mean of standardised member scores (see the module docstring).

    Attributes (after :meth:`fit`, besides :class:`Detector`'s)
    ----------------------------------------------------------
    members_ : list of Detector
        The fitted members, in ``params.members`` order.
    """

    name: ClassVar[str] = "ensemble"
    params_cls: ClassVar[type[EnsembleParams]] = EnsembleParams
    params: EnsembleParams

    members_: list[Detector]

    def _weights(self) -> np.ndarray:
        n = len(self.params.members)
        w = np.ones(n) if self.params.weights is None else np.asarray(self.params.weights, float)
        return w / w.sum()

    def _check_params(self) -> None:
        p = self.params
        if not p.members:
            raise ValueError(
                "an ensemble needs members: run folders or detector names, e.g. --members RUN1,RUN2"
            )
        if p.weights is not None:
            if len(p.weights) != len(p.members):
                raise ValueError(
                    f"{len(p.weights)} weights for {len(p.members)} members; give one per member"
                )
            if min(p.weights) < 0 or sum(p.weights) <= 0:
                raise ValueError("ensemble weights must be >= 0 and not all 0")

    def _member(self, member: str, features: list[np.ndarray], clips: list[ClipInfo]) -> Detector:
        from asdcli.detectors import get_detector, load_detector

        if not is_run_folder(member):
            return get_detector(member)(None, self.train).fit(features, clips)
        from asdcli.runs import load_run

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
        self, features: list[np.ndarray], clips: list[ClipInfo], progress: Progress | None
    ) -> np.ndarray:
        self._check_params()
        self.members_ = [self._member(m, features, clips) for m in self.params.members]
        # float32 statistics, as detector.json stores them: scores are the same after load.
        self.norm_mean_ = np.array(
            [m.train_scores_.mean() for m in self.members_], dtype=np.float32
        )
        self.norm_std_ = np.array(
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
            for s, mu, sd in zip(member_scores, self.norm_mean_, self.norm_std_, strict=True)
        ]
        return np.tensordot(self._weights(), np.stack(z), axes=1)

    def _score(self, features: list[np.ndarray], clips: list[ClipInfo]) -> np.ndarray:
        return self._combine([m.score(features, clips) for m in self.members_])

    def member_scores(
        self, features: list[np.ndarray], clips: list[ClipInfo] | None = None
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
        return files

    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        from asdcli.detectors import load_detector

        self.members_ = [load_detector(folder / name, device=device) for name in meta["files"]]
        if len(self.members_) != len(self.params.members):
            raise ValueError(
                f"{folder}: {len(self.members_)} member models, expected {len(self.params.members)}"
            )

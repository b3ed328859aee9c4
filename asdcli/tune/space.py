"""A detector's search space, one trial's values in it, and the settings of that trial.

The space of detector ``D`` is, by dotted settings key:

* ``train.*`` from :attr:`TrainParams.space <asdcli.detectors.params.TrainParams>`, for the
  neural detectors only (the others do not train with it), less the parameters ``D`` has a
  field of its own for (dcase-ae's ``batch_size`` replaces the loop's);
* ``detectors.<d>.*`` from ``D``'s parameters class;
* then ``tune.spaces.train`` and ``tune.spaces.<d>`` replace entries (``null`` drops one).

Choices may be any YAML value (lists of widths too): Optuna stores non-scalar choices as their
JSON text, and :func:`suggest` turns them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asdcli.errors import SettingsError
from asdcli.tune.settings import (
    TRAIN_SECTION,
    Kind,
    ParamSpace,
    TuneSettings,
    check_param,
    default_spaces,
    params_class,
)

if TYPE_CHECKING:
    import optuna

    from asdcli.settings import Settings

_SCALARS = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One searched setting.

    Attributes
    ----------
    key : str
        Its dotted settings key (``detectors.lof.n_neighbors``); also its Optuna name.
    spec : ParamSpace
    kind : ``"int"``, ``"float"`` or ``"categorical"``
    """

    key: str
    spec: ParamSpace
    kind: Kind

    @property
    def name(self) -> str:
        """The last part of the key (``n_neighbors``), for tables."""
        return self.key.rpartition(".")[2]


def resolve_space(
    detector: str, tune: TuneSettings, neural: bool
) -> tuple[dict[str, Param], list[str]]:
    """The search space of ``detector`` (a canonical name such as ``conv-ae``), and notes.

    Parameters
    ----------
    tune : the ``tune`` settings (their ``spaces`` override the defaults).
    neural : whether the detector trains with the ``train`` settings (a TorchDetector).

    Returns
    -------
    (space, notes): ``space`` maps dotted keys to :class:`Param`; ``notes`` say which
    overrides do not apply to this detector.

    Raises
    ------
    SettingsError
        The detector has nothing to search.
    """
    section = detector.replace("-", "_")
    det_cls = params_class(section)
    defaults = default_spaces()
    notes: list[str] = []
    chosen: dict[str, tuple[str, str, ParamSpace]] = {}  # key -> (section, name, spec)
    if neural:
        for name, spec in defaults[TRAIN_SECTION].items():
            if name not in det_cls.model_fields:
                chosen[f"train.{name}"] = (TRAIN_SECTION, name, spec)
    for name, spec in defaults[section].items():
        chosen[f"detectors.{section}.{name}"] = (section, name, spec)

    for name, override in tune.spaces.get(TRAIN_SECTION, {}).items():
        if not neural:
            notes.append(
                f"tune.spaces.train.{name} is not searched: {detector} does not train with the "
                "train settings."
            )
        elif name in det_cls.model_fields:
            notes.append(
                f"tune.spaces.train.{name} is not searched: {detector} has its own {name} "
                f"(tune.spaces.{section}.{name})."
            )
        elif override is None:
            chosen.pop(f"train.{name}", None)
        else:
            chosen[f"train.{name}"] = (TRAIN_SECTION, name, override)
    for name, override in tune.spaces.get(section, {}).items():
        key = f"detectors.{section}.{name}"
        if override is None:
            chosen.pop(key, None)
        else:
            chosen[key] = (section, name, override)

    if not chosen:
        raise SettingsError(
            f"{detector} has no hyper-parameters to search; give some under "
            f"tune.spaces.{section} in the settings YAML."
        )
    space = {
        key: Param(key, spec, check_param(params_class(sec), sec, name, spec))
        for key, (sec, name, spec) in chosen.items()
    }
    return space, notes


def _encode(choice: Any) -> Any:
    """A choice as Optuna can store it: scalars as they are, anything else as JSON text."""
    return choice if isinstance(choice, _SCALARS) else json.dumps(choice)


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
    """One value per parameter of ``space``, drawn by the trial's sampler; dotted key -> value."""
    values: dict[str, Any] = {}
    for key, p in space.items():
        s = p.spec
        if p.kind == "categorical":
            assert s.choices is not None
            encoded = {_encode(c): c for c in s.choices}
            values[key] = encoded[trial.suggest_categorical(key, list(encoded))]
        else:
            assert s.low is not None and s.high is not None
            if p.kind == "int":
                step = int(s.step) if s.step is not None else 1
                values[key] = trial.suggest_int(key, int(s.low), int(s.high), step=step, log=s.log)
            else:
                step_f = float(s.step) if s.step is not None else None
                values[key] = trial.suggest_float(
                    key, float(s.low), float(s.high), step=step_f, log=s.log
                )
    return values


def decode(space: dict[str, Param], params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored values of a trial (``trial.params``) as setting values."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        p = space.get(key)
        if p is not None and p.kind == "categorical" and p.spec.choices is not None:
            value = {_encode(c): c for c in p.spec.choices}.get(value, value)
        out[key] = value
    return out


def apply_values(settings: Settings, values: dict[str, Any]) -> Settings:
    """A copy of ``settings`` with ``values`` (dotted key -> value) set, each one validated.

    Raises
    ------
    pydantic.ValidationError
        A value its setting refuses.
    """
    new = settings.model_copy(deep=True)
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node: Any = new
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
    return new

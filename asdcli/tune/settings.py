"""The ``tune:`` settings section: how ``asd tune`` searches, and overrides of the spaces.

The default search space of each detector lives beside its parameters
(:attr:`asdcli.detectors.params.Section.space`); ``tune.spaces`` replaces entries of it::

    tune:
      spaces:
        train: {learning_rate: {low: 1.0e-4, high: 1.0e-3, log: true}}
        lof: {n_neighbors: {low: 5, high: 30}, metric: {choices: [euclidean, manhattan]}}
        gmm: {covariance_type: null}        # null: not searched, the setting's value is used

An unknown section or parameter, or an impossible range, is a validation error, which
:func:`asdcli.settings.load_settings` reports as a :class:`~asdcli.errors.SettingsError` (exit 2).
This module imports neither optuna nor torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import Field, ValidationError, field_validator, model_validator

from asdcli.detectors.params import DetectorParams, Section, TrainParams

Kind = Literal["int", "float", "categorical"]
TRAIN_SECTION = "train"
"""The ``tune.spaces`` key of the training loop's parameters (:class:`TrainParams`)."""


class ParamSpace(Section):
    """One searched parameter: a numeric range (``low``..``high``) or a list of ``choices``."""

    low: int | float | None = Field(None, description="Lowest value searched (inclusive).")
    high: int | float | None = Field(None, description="Highest value searched (inclusive).")
    log: bool = Field(False, description="Sample on a log scale (low must be above 0).")
    step: int | float | None = Field(None, description="Spacing of the values searched.")
    choices: list[Any] | None = Field(None, description="The values searched, instead of a range.")

    @model_validator(mode="after")
    def _possible(self) -> ParamSpace:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("give either choices or low and high, not both")
            if not self.choices:
                raise ValueError("choices is empty; list at least one value")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices lists a value twice: {self.choices}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range), or choices")
        if isinstance(self.low, bool) or isinstance(self.high, bool):
            raise ValueError("low and high must be numbers")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log needs low above 0, not {self.low}")
        if self.step is not None:
            if self.step <= 0:
                raise ValueError(f"step must be above 0, not {self.step}")
            if self.log:
                raise ValueError("give log or step, not both")
            n = (self.high - self.low) / self.step
            if not math.isclose(n, round(n), abs_tol=1e-9):
                raise ValueError(
                    f"high - low ({self.high} - {self.low}) is not a multiple of step {self.step}"
                )
        return self

    @property
    def is_range(self) -> bool:
        return self.choices is None


def params_class(section: str) -> type[Section]:
    """The parameters class a ``tune.spaces`` section names (``train``, ``lof``, ``fc_ae``...).

    Raises
    ------
    ValueError
        Naming the known sections.
    """
    if section == TRAIN_SECTION:
        return TrainParams
    field = DetectorParams.model_fields.get(section)
    if field is None or not isinstance(field.annotation, type):
        known = ", ".join([TRAIN_SECTION, *DetectorParams.model_fields])
        raise ValueError(f"{section}: unknown section; known sections: {known}")
    cls: type[Section] = field.annotation
    return cls


def check_name(cls: type[Section], section: str, name: str) -> None:
    """Raise ``ValueError("lof.foo: unknown parameter; ...")`` unless ``cls`` has ``name``."""
    if name not in cls.model_fields:
        known = ", ".join(cls.model_fields) or "none"
        raise ValueError(f"{section}.{name}: unknown parameter; {section}'s parameters: {known}")


def param_kind(cls: type[Section], section: str, name: str, spec: ParamSpace) -> Kind:
    """How a parameter is sampled: from its choices, or a range suiting the field's type.

    Raises
    ------
    ValueError
        A range for a parameter that is not a number, or fractional bounds for an integer.
    """
    if spec.choices is not None:
        return "categorical"
    annotation = cls.model_fields[name].annotation
    union = get_origin(annotation) in (Union, UnionType)
    types = set(get_args(annotation) if union else (annotation,)) - {type(None)}
    if float in types:
        return "float"
    if int not in types:
        raise ValueError(
            f"{section}.{name} is not a number; search it with choices: [...] instead of a range"
        )
    bounds = [v for v in (spec.low, spec.high, spec.step) if v is not None]
    if any(float(v) != int(v) for v in bounds):
        raise ValueError(f"{section}.{name} is an integer; give integer low, high and step")
    return "int"


def check_param(cls: type[Section], section: str, name: str, spec: ParamSpace) -> Kind:
    """Check that ``name`` is a parameter of ``cls``, that ``spec`` suits its type and that
    every value ``spec`` can give (its bounds, each choice) is a valid value of it; its kind.

    Raises
    ------
    ValueError
        ``"lof.foo: unknown parameter; ..."`` or ``"lof.n_neighbors: low 0 is not a valid
        value (...)"``.
    """
    check_name(cls, section, name)
    kind = param_kind(cls, section, name, spec)
    values = (
        {f"choice {c!r}": c for c in spec.choices}
        if spec.choices is not None
        else {f"low {spec.low!r}": spec.low, f"high {spec.high!r}": spec.high}
    )
    probe = cls.model_construct()
    for what, value in values.items():
        try:
            cls.__pydantic_validator__.validate_assignment(probe, name, value)
        except ValidationError as exc:
            why = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ValueError(f"{section}.{name}: {what} is not a valid value ({why})") from None
    return kind


class TuneSettings(Section):
    """asd tune: the hyper-parameter search (Optuna TPE) and its search spaces."""

    trials: int = Field(20, ge=1, description="Trials the study should have (finished ones).")
    holdout: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="Share of the labelled test clips held out from the search (stratified by "
        "machine, section, domain and label); the best trial is scored on them at the end.",
    )
    seed: int = Field(0, ge=0, description="Seeds the sampler (per trial) and the holdout split.")
    startup_trials: int = Field(
        5, ge=0, description="Random trials before TPE starts modelling the results."
    )
    prune: bool = Field(
        True,
        description="Neural detectors: a median pruner stops trials whose validation loss lags "
        "(off while the loss function itself is searched: its values are not comparable).",
    )
    dir: Path | None = Field(
        None, description="Where studies are kept; null = a folder `studies` beside the runs."
    )
    storage: str | None = Field(
        None,
        description="Optuna storage: a database URL (postgresql://..., sqlite:///...) or a "
        "journal file path; null = studies/optuna-journal.log.",
    )
    spaces: dict[str, dict[str, ParamSpace | None]] = Field(
        default_factory=dict,
        description="Overrides of the search spaces: section (train, lof, fc_ae...) -> "
        "parameter -> {low, high, log, step} or {choices}; null leaves it out of the search.",
    )

    @field_validator("spaces")
    @classmethod
    def _known(
        cls, value: dict[str, dict[str, ParamSpace | None]]
    ) -> dict[str, dict[str, ParamSpace | None]]:
        for section, params in value.items():
            params_cls = params_class(section)
            for name, spec in params.items():
                if spec is None:
                    check_name(params_cls, section, name)
                else:
                    check_param(params_cls, section, name, spec)
        return value


def default_spaces() -> dict[str, dict[str, ParamSpace]]:
    """Every section's default space, validated: ``{"train": {...}, "lof": {...}, ...}``.

    Raises
    ------
    ValueError
        A default space in :mod:`asdcli.detectors.params` that is not valid (a bug).
    """
    out: dict[str, dict[str, ParamSpace]] = {}
    for section in (TRAIN_SECTION, *DetectorParams.model_fields):
        cls = params_class(section)
        specs = {name: ParamSpace.model_validate(raw) for name, raw in cls.space.items()}
        for name, spec in specs.items():
            check_param(cls, section, name, spec)
        out[section] = specs
    return out


def dump_space(space: dict[str, ParamSpace]) -> dict[str, dict[str, Any]]:
    """A resolved space as plain data (unset keys left out), e.g. for a study's attributes."""
    return {key: spec.model_dump(exclude_defaults=True) for key, spec in space.items()}


__all__ = [
    "TRAIN_SECTION",
    "Kind",
    "ParamSpace",
    "TuneSettings",
    "check_name",
    "check_param",
    "param_kind",
    "default_spaces",
    "dump_space",
    "params_class",
]

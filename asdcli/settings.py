"""All settings in one pydantic-settings model.

Precedence, lowest to highest: defaults < YAML file < ``ASD_*`` environment variables < flags.
The YAML file is ``--config PATH``, else ``$ASD_CONFIG``, else ``conf/config.yaml`` in the working
directory when it exists. Nested keys use ``__`` in the environment: ``ASD_TRAIN__EPOCHS=5``.

:func:`load_settings` is the one entry point; it turns every validation problem into a
:class:`~asdcli.errors.SettingsError` whose lines name the key, the value and where it came from.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as _PydanticSettingsError

from asdcli.detectors.params import DetectorParams, Section, TrainParams
from asdcli.errors import SettingsError
from asdcli.monitor.settings import ServeSettings, WatchSettings
from asdcli.tune.settings import TuneSettings

ENV_PREFIX = "ASD_"
DEFAULT_CONFIG = Path("conf/config.yaml")


class FeatureSettings(Section):
    """Log-mel front end. Defaults follow the DCASE 2023 Task 2 baseline (librosa conventions).

    Every field here changes the features, so all of them enter :meth:`key`.
    """

    sample_rate: Annotated[int, Field(ge=1000)] | Literal["native"] = Field(
        16000,
        description="Hz, or native: the files' own rate. Files at another rate are resampled.",
    )
    n_fft: int = Field(1024, ge=16, description="FFT size in samples.")
    hop_length: int = Field(512, ge=1, description="Hop between frames in samples.")
    win_length: int | None = Field(None, ge=1, description="Window length; null means n_fft.")
    n_mels: int = Field(128, ge=1, description="Mel bands.")
    f_min: float = Field(0.0, ge=0, description="Lowest mel filter edge in Hz.")
    f_max: float | None = Field(None, gt=0, description="Highest edge in Hz; null = Nyquist.")
    power: float = Field(2.0, gt=0, description="2 = power spectrogram, 1 = magnitude.")
    db_floor: float = Field(
        -100.0, lt=0, description="Fixed dB floor (not relative to the clip maximum)."
    )
    mel_scale: Literal["slaney", "htk"] = "slaney"
    mel_norm: Literal["slaney", "none"] = "slaney"
    center: bool = Field(True, description="Pad so frame t is centred on sample t*hop.")
    pad_mode: Literal["constant", "reflect"] = "constant"

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        # One clear message instead of one per member of the union.
        if isinstance(value, str) and value.strip().lower() == "native":
            return "native"
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1000:
            raise ValueError("expected a sample rate in Hz (at least 1000) or native")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSettings:
        problems = []
        if self.hop_length > self.n_fft:
            problems.append(f"hop_length {self.hop_length} is larger than n_fft {self.n_fft}")
        if self.win_length is not None and self.win_length > self.n_fft:
            problems.append(f"win_length {self.win_length} is larger than n_fft {self.n_fft}")
        # With a native rate, f_max is checked against Nyquist once the files' rate is known
        # (at_rate); f_min against an explicit f_max can be checked now.
        nyquist = self.sample_rate / 2 if self.sample_rate != "native" else None
        if self.f_max is not None and nyquist is not None and self.f_max > nyquist:
            problems.append(f"f_max {self.f_max} Hz is above the Nyquist frequency {nyquist} Hz")
        top = self.f_max if self.f_max is not None else nyquist
        if top is not None and self.f_min >= top:
            problems.append(f"f_min {self.f_min} Hz must be below f_max {top} Hz")
        bins = self.n_fft // 2 + 1
        if self.n_mels > bins:
            problems.append(
                f"n_mels {self.n_mels} exceeds the {bins} FFT bins of n_fft {self.n_fft}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def native(self) -> bool:
        """True until the files' own rate is filled in (:meth:`at_rate`)."""
        return self.sample_rate == "native"

    @property
    def rate(self) -> int:
        """The sample rate in Hz; only for settings with a known rate."""
        if self.sample_rate == "native":
            raise ValueError("sample_rate is native: resolve it with at_rate() first")
        return self.sample_rate

    def at_rate(self, rate: int) -> FeatureSettings:
        """These settings with ``sample_rate: native`` replaced by ``rate``, the files' rate.

        Raises
        ------
        SettingsError
            The other settings do not fit that rate (f_max above its Nyquist frequency...).
        """
        if not self.native:
            return self
        try:
            return FeatureSettings.model_validate({**self.model_dump(), "sample_rate": rate})
        except ValidationError as exc:
            why = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise SettingsError(
                f"features.sample_rate is native and the files are at {rate} Hz: {why}. "
                "Change the setting, or set features.sample_rate to resample the files."
            ) from None

    def key(self) -> str:
        """Short hash naming this feature set in the store: equal settings, equal key.

        Only settings with a rate in Hz have a key: a native rate is first resolved to the
        files' rate (:meth:`at_rate`, ``FeatureStore.resolve``), so the store knows the real
        rate and ``native`` on 48 kHz files names the same set as ``sample_rate: 48000``.
        """
        if self.native:
            raise SettingsError(
                "features.sample_rate: native stands for the files' rate, which is not known "
                "here; set features.sample_rate to that rate in Hz."
            )
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


class FeaturizeSettings(Section):
    workers: int = Field(1, ge=0, description="Worker processes; 0 = one per CPU core.")
    strict: bool = Field(False, description="Stop on the first unreadable file.")
    batch_clips: int = Field(
        256,
        ge=1,
        description="Most clips per journal batch (a task holds up to 32): what a crash can lose.",
    )


class EvaluationSettings(Section):
    max_fpr: float = Field(0.1, gt=0, le=1, description="pAUC range, as the DCASE evaluator.")


class PathSettings(Section):
    store: Path = Field(Path("features.h5"), description="The HDF5 feature store.")
    runs: Path = Field(Path("runs"), description="Where run folders are written.")


# The YAML layer, handed to the source below for the duration of one load_settings call.
_YAML_LAYER: ContextVar[dict[str, Any] | None] = ContextVar("_YAML_LAYER", default=None)


class _YamlLayer(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_YAML_LAYER.get() or {})


class Settings(BaseSettings):
    """Everything ``asd`` can be told, by section."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    features: FeatureSettings = Field(default_factory=FeatureSettings)
    featurize: FeaturizeSettings = Field(default_factory=FeaturizeSettings)
    train: TrainParams = Field(default_factory=TrainParams)
    detectors: DetectorParams = Field(default_factory=DetectorParams)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    paths: PathSettings = Field(default_factory=PathSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags (init kwargs) > environment > YAML > defaults.
        return (init_settings, env_settings, _YamlLayer(settings_cls))

    def to_yaml(self) -> str:
        import yaml  # here, not at the top: 15 ms of every command's start-up

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def flat_settings(settings: BaseModel) -> dict[str, Any]:
    """Every setting as ``{dotted key: JSON value}`` (``{"train.epochs": 30, ...}``)."""
    return _flatten(settings.model_dump(mode="json"))


def default_value(dotted: str) -> Any:
    """The default of one setting, e.g. ``default_value("train.epochs") == 30``.

    The CLI shows these in its help, so the help and the settings model cannot disagree.
    """
    defaults = _defaults()
    if dotted not in defaults:
        raise KeyError(dotted)
    return copy.deepcopy(defaults[dotted])


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    # Once per process: the CLI asks for ~90 defaults while it builds its commands.
    return _flatten(Settings.model_construct().model_dump(mode="json"))


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"train.epochs": 5}`` -> ``{"train": {"epochs": 5}}``.

    Raises
    ------
    SettingsError
        A key given both as a value and as a section (``train`` and ``train.epochs``).
    """
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parents[: i + 1])
                raise SettingsError(f"{section} is given both as a value and as a section.")
        if isinstance(node.get(leaf), dict):
            raise SettingsError(f"{dotted} is given both as a value and as a section.")
        node[leaf] = value
    return tree


# Settings nest three levels (detectors.lof.n_neighbors) and values hold short lists; deeper
# than this is a mistake, or a YAML alias that holds itself (``a: &x [*x]``).
MAX_DEPTH = 32


def _check_tree(node: Any, path: Path, where: str = "", depth: int = 0) -> None:
    """Refuse what YAML can express but settings cannot be: keys that are not text, and
    nesting without end."""
    if depth > MAX_DEPTH:
        parts = where.split(".")
        shown = ".".join(parts[:3]) + ("..." if len(parts) > 3 else "")
        raise SettingsError(
            f"{path}: {shown or 'the file'} is nested too deeply (an alias that holds itself?)."
        )
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                under = f" under {where}" if where else ""
                raise SettingsError(
                    f"{path}: key {key!r}{under} is not a setting name; `asd config` lists them."
                )
            _check_tree(value, path, f"{where}.{key}" if where else key, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _check_tree(value, path, where, depth + 1)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a settings YAML file; syntax errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"Config file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"Config file {path} cannot be read: {exc}") from None
    import yaml

    # libyaml's parser where PyYAML has it: the same safe subset, 10x faster (13 ms of the
    # start-up for conf/config.yaml in pure Python).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        # An error is rare: word it as PyYAML's own parser does.
        worded = exc if loader is yaml.SafeLoader else _worded_yaml_error(text, exc)
        mark = getattr(worded, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(worded, "problem", None) or str(worded).splitlines()[0]
        raise SettingsError(f"{path}{where}: YAML syntax error: {problem}.") from None
    except RecursionError:
        raise SettingsError(f"{path}: nested too deeply to be a settings file.") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # Scalars the grammar accepts but cannot build, e.g. the date 2020-13-45.
        raise SettingsError(
            f"{path}: a value cannot be read ({exc}); put quotes around it to keep it as text."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of sections (features:, train:, ...).")
    _check_tree(data, path)
    return data


def _worded_yaml_error(text: str, exc: Exception) -> Exception:
    """The syntax error PyYAML's pure-Python parser raises for ``text``: it names the character
    at fault (libyaml says "found character that cannot start any token"); ``exc`` where that
    parser fails otherwise."""
    import yaml

    try:
        yaml.safe_load(text)
    except yaml.YAMLError as worded:
        return worded
    except (RecursionError, ValueError, TypeError, OverflowError):
        pass
    return exc


def config_path(explicit: Path | None) -> Path | None:
    """The YAML file in force: --config, else $ASD_CONFIG, else conf/config.yaml if present."""
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _env_layer() -> dict[str, str]:
    """ASD_ variables as dotted keys (for provenance and error messages)."""
    flat = {}
    for name, value in os.environ.items():
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG":
            flat[name[len(ENV_PREFIX) :].lower().replace("__", ".")] = value
    return flat


def _env_parse_problem() -> str | None:
    """Name the ASD_ variable whose value should be JSON (a list or mapping) but is not."""
    defaults = _flatten(Settings.model_construct().model_dump(mode="json"))
    for key, value in _env_layer().items():
        if isinstance(defaults.get(key), list | dict):
            try:
                json.loads(value)
            except ValueError:
                name = ENV_PREFIX + key.upper().replace(".", "__")
                example = json.dumps(defaults[key])
                return f"{name} = {value!r}: expected a JSON value like '{example}'."
    return None


def _describe(errors: list[Any], origin: dict[str, str], given: dict[str, Any]) -> list[str]:
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        msg = err["msg"].removeprefix("Value error, ")
        where = origin.get(loc)
        if where is None:  # a section-level check: blame the keys of that section it names
            named = [
                o for k, o in origin.items() if k.startswith(loc + ".") and k[len(loc) + 1 :] in msg
            ]
            where = ", ".join(dict.fromkeys(named)) or None
        src = f" (from {where})" if where else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown setting{src}; `asd config` lists the valid ones.")
            continue
        value = given.get(loc)
        shown = f" = {value!r}" if value is not None and loc in given else ""
        lines.append(f"{loc or 'settings'}{shown}: {msg}{src}")
    return lines


def load_settings(
    config: Path | None = None,
    overrides: dict[str, Any] | None = None,
    flag_names: dict[str, str] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """Resolve the settings from every layer.

    Parameters
    ----------
    config : the YAML file given with --config, or None to use the default lookup.
    overrides : flag values as dotted keys (``{"train.epochs": 5}``); None values are ignored.
    flag_names : how the caller names each override in messages (the CLI passes its own flags:
        ``{"train.learning_rate": "--lr"}``); an override without a name is called by its key.

    Returns
    -------
    (settings, sources): ``sources`` maps each dotted key whose value differs from the default to
    where it came from (``"conf/config.yaml"``, ``"ASD_TRAIN__EPOCHS"``, ``"--epochs"``...).
    """
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = config_path(config)
    yaml_tree = read_yaml(path) if path is not None else {}

    origin: dict[str, str] = {}
    given: dict[str, Any] = {}
    if path is not None:
        for key, value in _flatten(yaml_tree).items():
            origin[key], given[key] = str(path), value
    for key, value in _env_layer().items():
        origin[key], given[key] = ENV_PREFIX + key.upper().replace(".", "__"), value
    for key, value in flags.items():
        origin[key], given[key] = (flag_names or {}).get(key, f"the override {key}"), value

    token = _YAML_LAYER.set(yaml_tree)
    try:
        settings = Settings(**_nest(flags))
    except ValidationError as exc:
        lines = _describe(exc.errors(), origin, given)
        raise SettingsError("Invalid settings:\n  " + "\n  ".join(lines)) from None
    except _PydanticSettingsError as exc:
        raise SettingsError(_env_parse_problem() or f"Invalid ASD_ variable: {exc}") from None
    finally:
        _YAML_LAYER.reset(token)

    defaults = _flatten(Settings.model_construct().model_dump(mode="json"))
    resolved = _flatten(settings.model_dump(mode="json"))
    sources = {
        key: origin.get(key, "?")
        for key, value in resolved.items()
        if value != defaults.get(key) and key in origin
    }
    return settings, sources


CONFIG_HEADER = (
    "# asd settings with their defaults. Precedence: defaults < this file < ASD_* variables"
    " < flags.\n"
    "# Edit what you need; keep it as conf/config.yaml in the working folder or pass --config"
    " PATH.\n\n"
)


def default_config_text() -> str:
    """The shipped ``conf/config.yaml``: every setting at its default, with its description."""
    return CONFIG_HEADER + commented_yaml(Settings())


def commented_yaml(settings: BaseModel, indent: int = 0) -> str:
    """The settings as YAML, each key preceded by its description as a comment."""
    lines: list[str] = []
    pad = " " * indent
    values = settings.model_dump(mode="json")
    for name, info in type(settings).model_fields.items():
        sub = getattr(settings, name)
        doc = info.description
        if doc is None and isinstance(sub, BaseModel):
            doc = (type(sub).__doc__ or "").strip().split("\n")[0] or None
        if doc:
            lines.append(f"{pad}# {doc}")
        if isinstance(sub, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.append(commented_yaml(sub, indent + 2))
            if indent == 0:
                lines.append("")
        else:
            import yaml

            dumped = yaml.safe_dump(values[name], default_flow_style=True, width=1000)
            lines.append(f"{pad}{name}: {dumped.removesuffix(chr(10)).removesuffix('...').strip()}")
    return "\n".join(lines)

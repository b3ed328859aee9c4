"""Adapter from scikit-learn outlier estimators to the :class:`Detector` contract.

Each clip becomes one vector: the mean and the std over time of each mel band
(``(n_mels, frames) -> (2 * n_mels,)``), standardised with the training vectors' statistics.

scikit-learn's ``score_samples`` is *higher for normal* points; :func:`anomaly_scores` flips
that sign, and it is the only place that does.

Model files hold plain arrays, never a pickle
---------------------------------------------
A run folder may come from someone else, and loading a pickle (joblib) runs whatever code it
names. So every scikit-learn detector saves what it learned as named numeric arrays in
``model.npz`` (:func:`save_arrays`), read back with ``allow_pickle=False`` and checked name by
name, dtype by dtype and shape by shape (:func:`load_arrays`); scoring after a load is plain
numpy (plus a scikit-learn neighbour index for ``lof``, rebuilt from the stored vectors). skops
was the alternative: it loads scikit-learn objects without pickle's code execution, but an
isolation forest needs ``sklearn.tree._tree.Tree`` trusted, whose node indices scikit-learn
follows without bounds checks (skops itself warns that a crafted file can then read out of
bounds or crash the process). Arrays need no new dependency, do not depend on the
scikit-learn version that wrote them, and numpy checks every index.

Folders written by asd < 0.2 hold ``model.joblib``; it is never opened, the load says to train
again.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from asdcli.detectors.base import Detector, Progress
from asdcli.detectors.windows import pool_mean_std
from asdcli.files import write_bytes
from asdcli.naming import ClipInfo

MODEL_FILE = "model.npz"
LEGACY_MODEL_FILE = "model.joblib"  # a pickle, written by asd < 0.2: never loaded
# Floor for the std of a pooled feature that is constant over the training clips.
STD_FLOOR = 1e-6
# Stored dtypes a model file may hold: floats, signed and unsigned integers, booleans.
_NUMERIC_KINDS = "fiub"
ZIP_MAGIC = b"PK\x03\x04"  # how every .npz that np.savez writes begins


def anomaly_scores(normality: np.ndarray) -> np.ndarray:
    """scikit-learn normality (higher = more normal) -> anomaly score (higher = anomalous)."""
    return -np.asarray(normality, dtype=np.float64)


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named numeric arrays to ``path`` (an uncompressed ``.npz``), atomically."""
    for name, value in arrays.items():
        if np.asarray(value).dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"{name}: only numeric arrays go into a model file")
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buffer.getvalue())


def load_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read what :func:`save_arrays` wrote: exactly the arrays ``names``, numeric and finite.

    Never unpickles: a pickle (or anything but an ``.npz`` of plain arrays) is refused.

    Raises
    ------
    ValueError
        The file is unreadable, not an ``.npz``, holds object arrays, other names, or
        non-finite floats; the message names the file.
    """
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ValueError(f"{path} cannot be read ({exc.strerror})") from None
    if magic != ZIP_MAGIC:  # np.load would try to unpickle anything else (and refuse)
        raise ValueError(
            f"{path} is not an .npz archive of arrays (a pickle, perhaps: asd never loads one)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = tuple(sorted(npz.files))
            if found != tuple(sorted(names)):
                raise ValueError(
                    f"arrays {', '.join(found) or 'none'}; expected {', '.join(names)}"
                )
            arrays = {name: npz[name] for name in names}
    # What a damaged or crafted zip can raise (encrypted or unknown compression included).
    except (
        ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
        zlib.error,
    ) as exc:  # fmt: skip
        raise ValueError(f"{path} is not a model file asd can read ({exc})") from None
    for name, value in arrays.items():
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"{path}: array {name} has dtype {value.dtype}, not a number")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{path}: array {name} holds NaN or infinite values")
    return arrays


def expect_shape(name: str, value: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` if it has ``shape`` (``None``: any length on that axis), else ValueError."""
    ok = value.ndim == len(shape) and all(
        want is None or have == want for have, want in zip(value.shape, shape, strict=True)
    )
    if not ok:
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"array {name} has shape {value.shape}, expected {want}")
    return value


class SklearnDetector(Detector):
    """Base of the detectors that wrap a scikit-learn estimator on pooled clip vectors.

    A subclass fits its estimator on the standardised vectors, keeps what scoring needs as
    arrays (never the pickled estimator) and scores from those arrays, after :meth:`fit` and
    after :meth:`load` alike, so both give the same scores.
    """

    min_train_clips: int = 1
    # The names of the arrays in model.npz (what _arrays returns and _set_arrays reads).
    model_arrays: ClassVar[tuple[str, ...]]

    @abstractmethod
    def _fit_vectors(self, z: np.ndarray) -> np.ndarray:
        """Learn from standardised training vectors ``(n_train, dim)``; set ``n_params_``;
        return the training vectors' normality ``(n_train,)`` (higher = more normal)."""

    @abstractmethod
    def _normality(self, z: np.ndarray) -> np.ndarray:
        """Normality ``(n_clips,)`` of standardised vectors ``(n_clips, dim)``."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """The learned state, as the arrays named in :attr:`model_arrays`."""

    @abstractmethod
    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the learned state from :meth:`_arrays`'s output (numeric, finite, the
        right names); a :class:`ValueError` when shapes or values do not fit together."""

    @property
    def dim_(self) -> int:
        """Length of the pooled vector (of the normalisation statistics)."""
        return int(self.norm_mean_.shape[0])

    def _pool(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """``n_clips x (n_mels, frames)`` -> pooled ``(n_clips, dim)`` float64 (default: the
        per-band mean and std over time, ``dim = 2 * n_mels``)."""
        return pool_mean_std(features)

    def _vectors(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """``n_clips x (n_mels, frames)`` -> standardised pooled vectors ``(n_clips, dim)``."""
        z: np.ndarray = (self._pool(features) - self.norm_mean_) / self.norm_std_
        return z

    def _fit(
        self, features: Sequence[np.ndarray], clips: list[ClipInfo], progress: Progress | None
    ) -> np.ndarray:
        if len(features) < self.min_train_clips:
            raise ValueError(
                f"{self.name} needs at least {self.min_train_clips} training clips, "
                f"got {len(features)}"
            )
        pooled = self._pool(features)
        # float32 like the autoencoders' statistics, so detector.json round-trips them exactly.
        self.norm_mean_ = pooled.mean(axis=0).astype(np.float32)
        self.norm_std_ = np.maximum(pooled.std(axis=0), STD_FLOOR).astype(np.float32)
        return anomaly_scores(self._fit_vectors(self._vectors(features)))

    def _score(self, features: Sequence[np.ndarray], clips: list[ClipInfo]) -> np.ndarray:
        return anomaly_scores(self._normality(self._vectors(features)))

    def _save_state(self, folder: Path) -> list[str]:
        save_arrays(folder / MODEL_FILE, self._arrays())
        return [MODEL_FILE]

    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        path = folder / MODEL_FILE
        legacy = folder / LEGACY_MODEL_FILE
        if LEGACY_MODEL_FILE in meta.get("files", []) or (legacy.exists() and not path.exists()):
            raise ValueError(
                f"{legacy} was saved with pickle (asd < 0.2), which is not loaded for safety; "
                "train it again"
            )
        if not path.is_file():
            raise ValueError(f"{folder} has {meta['name']}'s detector.json but no {MODEL_FILE}")
        arrays = load_arrays(path, self.model_arrays)
        try:
            self._set_arrays(arrays)
        except ValueError as exc:
            raise ValueError(f"{path} does not hold a usable {self.name} model ({exc})") from None

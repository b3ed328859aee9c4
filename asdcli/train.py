"""Training: one detector per machine type on the store's training clips, into a run folder.

Only one machine type's features are in memory at a time. Joint detectors (emb-knn) learn
from every machine type at once and then save one model per type; they read their clips from
the store as they go (:meth:`FeatureStore.lazy`), so memory does not grow with the data set.
Ctrl-C stops training, keeps the best weights of the machine in progress and marks the run
``incomplete``. Every file of the run is written through :class:`asdcli.runs.Run`; each machine
type's model and threshold are recorded in the manifest (with their hashes) as soon as they are
saved. A full disk stops training with a :class:`~asdcli.files.DiskFullError`, the run marked
``incomplete`` where the manifest can still be written; earlier runs are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from asdcli.errors import DataError, StoreError, UserError
from asdcli.files import disk_full_error, is_disk_full
from asdcli.runs import Run, start_run
from asdcli.settings import Settings
from asdcli.store import ClipRecord, FeatureStore

if TYPE_CHECKING:
    from asdcli.detectors.base import Detector

log = logging.getLogger(__name__)

# progress(machine, event): event is a history row {"epoch", "loss", "val_loss", "seconds"},
# or {"event": "start", "epochs": n} / {"event": "done"} around each machine.
TrainProgress = Callable[[str, dict[str, Any]], None]
# The "machine" a joint detector's training progress and history are reported under.
JOINT = "all"


@dataclass
class TrainResult:
    run: Run
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupted: bool = False


def fingerprint(records: Sequence[ClipRecord]) -> str:
    """Hash of the training clips (paths, sizes, modification times): same data, same print."""
    h = hashlib.sha1()
    for r in sorted(records, key=lambda r: r.path):
        h.update(f"{r.path}\0{r.size}\0{r.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def training_clips(store: FeatureStore, key: str) -> dict[str, list[ClipRecord]]:
    """Machine -> its training clips (split train; clips labelled anomaly are left out)."""
    by_machine: dict[str, list[ClipRecord]] = {}
    for r in store.clips(key):
        if r.split == "train" and r.label != "anomaly":
            by_machine.setdefault(r.machine, []).append(r)
    return by_machine


def resolve_detector(name: str) -> type[Detector]:
    """The registered detector class, with unknown names turned into a user error."""
    from asdcli.detectors import get_detector

    try:
        return get_detector(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def open_feature_set(settings: Settings) -> tuple[FeatureStore, str]:
    """The store and the key of the current feature settings, which it must hold."""
    store = FeatureStore(settings.paths.store)
    key = store.resolve(settings.features).key()  # native: the rate its set was made at
    if not store.has(key):
        sets = ", ".join(
            f"{s.key} (n_mels={s.settings.get('n_mels')}, {s.n_clips} clips)"
            for s in store.feature_sets()
        )
        raise StoreError(
            f"{settings.paths.store} has no features for the current feature settings "
            f"(key {key}); it holds: {sets or 'nothing'}. Run `asd featurize DATA` with these "
            "settings first."
        )
    return store, key


def train(
    settings: Settings,
    detector: str,
    machines: Sequence[str] | None = None,
    progress: TrainProgress | None = None,
) -> TrainResult:
    """Train ``detector`` on each machine type of the store; returns the run written.

    Parameters
    ----------
    settings : resolved settings (features select the feature set; train and detectors the
        hyper-parameters; paths the store and the runs folder).
    detector : registry name or alias (``conv-ae``, ``conv_autoencoder``...).
    machines : restrict to these machine types (default: every machine with training clips).
    """
    from asdcli.detectors import canonical_name, params_key, resolve_device
    from asdcli.detectors.base import ParamsContext
    from asdcli.thresholds import fit_gamma_threshold, threshold_record

    cls = resolve_detector(detector)
    name = canonical_name(detector)
    try:
        resolve_device(settings.train.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    store, key = open_feature_set(settings)
    available = training_clips(store, key)
    if machines:
        missing = [m for m in machines if m not in available]
        if missing:
            raise DataError(
                f"No training clips for machine {', '.join(missing)} in {settings.paths.store}; "
                f"machines with training clips: {', '.join(sorted(available)) or 'none'}."
            )
        chosen = list(dict.fromkeys(machines))
    else:
        chosen = sorted(available)
        untrainable = sorted({r.machine for r in store.clips(key)} - set(available))
        if untrainable:
            log.warning(
                "No training clips for machine %s: it is not trained (it has test clips only).",
                ", ".join(untrainable),
            )
        if not chosen:
            raise DataError(
                f"{settings.paths.store} has no training clips (files in <machine>/train/)."
            )

    params: BaseModel = getattr(settings.detectors, params_key(name))
    params, chosen = cls.resolve_params(
        params, ParamsContext(settings.paths.runs, key, tuple(chosen), settings.train)
    )
    run = start_run(
        settings.paths.runs,
        name,
        {
            "machines": chosen,
            "params": params.model_dump(mode="json"),
            "train_params": settings.train.model_dump(mode="json"),
            "feature_key": key,
            "feature_settings": store.resolve(settings.features).model_dump(mode="json"),
            "store": str(settings.paths.store.resolve()),
            "training_clips": {m: len(available[m]) for m in chosen},
            "fingerprints": {m: fingerprint(available[m]) for m in chosen},
        },
    )

    result = TrainResult(run)
    history: list[list[Any]] = []
    train_scores: list[list[Any]] = []
    thresholds: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    try:
        run.write_settings(settings.to_yaml())
        for machine, det, records, seconds in _fitted_models(
            cls, params, settings, store, key, {m: available[m] for m in chosen}, progress
        ):
            det.save(run.model_dir(machine))
            fit = fit_gamma_threshold(det.train_scores_, settings.train.threshold_percentile)
            thresholds[machine] = threshold_record(fit)
            if not cls.joint or not history:  # a joint model's history is written once
                history_name = JOINT if cls.joint else machine
                for row in det.history_:
                    history.append(
                        [
                            history_name,
                            row["epoch"],
                            row["loss"],
                            row.get("val_loss"),
                            row["seconds"],
                        ]
                    )
            for r, s in zip(records, det.train_scores_, strict=True):
                train_scores.append([machine, r.section, r.domain, r.name, float(s)])
            result.machines[machine] = {
                "seconds": round(seconds, 3),
                "n_params": int(det.n_params_),
                "epochs": len(det.history_),
                "threshold": fit.threshold,
            }
            run.write_training_outputs(thresholds, history, train_scores)
            run.manifest["train_seconds"] = round(time.perf_counter() - t0, 3)
            run.complete_machine(machine, det.n_params_)
            if progress:
                progress(machine, {"event": "done", **result.machines[machine]})
            if det.interrupted_:
                raise KeyboardInterrupt
        _training_figures(run, history)
        run.manifest["status"] = "complete"
        run.manifest["train_seconds"] = round(time.perf_counter() - t0, 3)
        run.save_manifest()
    except KeyboardInterrupt:
        result.interrupted = True
        _stop(run, "interrupted (Ctrl-C)")
        return result
    except BaseException as exc:
        _stop(run, f"failed: {type(exc).__name__}: {exc}")
        if is_disk_full(exc) and not isinstance(exc, UserError):
            # A file a detector writes itself, not through asdcli.files.
            raise disk_full_error(run.path) from exc
        raise
    return result


def _stop(run: Run, reason: str) -> None:
    """Mark the run incomplete. On a full disk the manifest may not be writable either: it
    then still says ``running``, which :func:`asdcli.runs.load_run` reads as incomplete once
    this process has ended."""
    run.manifest["status"] = "incomplete"
    run.manifest["reason"] = reason
    with contextlib.suppress(OSError, UserError):
        run.save_manifest()


def _fit_one(
    det: Detector,
    features: Sequence[np.ndarray],
    records: list[ClipRecord],
    machine: str,
    progress: TrainProgress | None,
) -> None:
    def on_epoch(row: dict[str, Any]) -> None:
        if progress:
            progress(machine, row)

    try:
        det.fit(features, records, progress=on_epoch)
    except ValueError as exc:  # data the detector cannot learn from: the user's to fix
        raise DataError(f"{det.name} cannot train on {machine}: {exc}") from None


def _fitted_models(
    cls: type[Detector],
    params: BaseModel,
    settings: Settings,
    store: FeatureStore,
    key: str,
    records_of: dict[str, list[ClipRecord]],
    progress: TrainProgress | None,
) -> Iterator[tuple[str, Detector, list[ClipRecord], float]]:
    """Yield ``(machine, fitted detector, its training clips, seconds)`` per machine type.

    A per-machine detector holds one machine type's features at a time. A joint one
    (``cls.joint``, e.g. emb-knn) learns from every machine type at once from lazy clips
    (:meth:`FeatureStore.lazy`; one that does not stream reads them into memory); each machine
    type then gets its own share of the model (:meth:`Detector.restrict`).
    """
    if not cls.joint:
        for machine, records in records_of.items():
            features = store.load(key, records)
            det = cls(params, settings.train)
            if progress:
                progress(machine, {"event": "start", "epochs": settings.train.epochs})
            t = time.perf_counter()
            _fit_one(det, features, records, machine, progress)
            del features
            yield machine, det, records, time.perf_counter() - t
        return
    everything = [r for records in records_of.values() for r in records]
    det = cls(params, settings.train)
    if progress:
        progress(JOINT, {"event": "start", "epochs": settings.train.epochs})
    t = time.perf_counter()
    with store.lazy(key, everything) as clips:
        _fit_one(det, clips, everything, JOINT, progress)
    seconds = time.perf_counter() - t
    machine_of = np.array([r.machine for r in everything])
    for machine, records in records_of.items():
        yield machine, det.restrict(machine, machine_of == machine), records, seconds


def _training_figures(run: Run, history: list[list[Any]]) -> None:
    """One training curve per machine type (or one for a joint model) with epochs."""
    from asdcli.files import write_png
    from asdcli.plots import build_training_curve

    by_machine: dict[str, list[dict[str, Any]]] = {}
    for machine, epoch, loss, val_loss, seconds in history:
        by_machine.setdefault(machine, []).append(
            {"epoch": epoch, "loss": loss, "val_loss": val_loss, "seconds": seconds}
        )
    for machine, rows in by_machine.items():
        write_png(
            build_training_curve(rows, f"{run.detector} on {machine}: training curve"),
            run.training_curve_path(machine),
        )

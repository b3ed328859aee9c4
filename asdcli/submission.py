"""The DCASE submission files: their names, writing and reading.

`asd score` writes them and `asd evaluate` reads them back; both go through this module, the
only one that knows the names. Per machine type and section (DCASE 2023 Task 2)::

    anomaly_score_<machine>_section_<ss>_test.csv     file.wav,score rows, no header
    decision_result_<machine>_section_<ss>_test.csv   file.wav,0|1 rows (1 = anomaly)

and the official evaluator's ground truth, for renamed evaluation clips::

    ground_truth_data/ground_truth_<machine>_section_<ss>_test.csv     file,label  (0/1)
    ground_truth_domain/ground_truth_<machine>_section_<ss>_test.csv   file,domain (0 source,
                                                                                     1 target)

Names are parsed anchored on the end, so machine names may hold underscores (``toy_car``).
Files are named by clip file name only; a path in the first column is reduced to its name.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from asdcli.errors import DataError
from asdcli.files import csv_text

SCORES = "anomaly_score"
DECISIONS = "decision_result"
GROUND_TRUTH_LABELS = "ground_truth_data"
GROUND_TRUTH_DOMAINS = "ground_truth_domain"
DOMAIN_CODES = ("source", "target")
"""The ground truth's domain column: 0 is source, 1 is target."""

_NAME = re.compile(
    rf"^(?P<kind>{SCORES}|{DECISIONS})_(?P<machine>.+)_section_(?P<section>\d+)_test\.csv$"
)


def _file_name(kind: str, machine: str, section: str) -> str:
    return f"{kind}_{machine}_section_{section}_test.csv"


def score_file_name(machine: str, section: str) -> str:
    """``anomaly_score_<machine>_section_<section>_test.csv``."""
    return _file_name(SCORES, machine, section)


def decision_file_name(machine: str, section: str) -> str:
    """``decision_result_<machine>_section_<section>_test.csv``."""
    return _file_name(DECISIONS, machine, section)


def parse_file_name(name: str) -> tuple[str, str, str] | None:
    """``(kind, machine, section)`` of a submission file name, ``None`` for other names.

    >>> parse_file_name("anomaly_score_toy_car_section_01_test.csv")
    ('anomaly_score', 'toy_car', '01')
    """
    m = _NAME.match(name)
    return (m["kind"], m["machine"], m["section"]) if m else None


def submission_files(folder: Path) -> list[Path]:
    """Every score and decision file in ``folder``, sorted (none when it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if parse_file_name(p.name) and p.is_file())


def find_score_files(folder: Path) -> list[tuple[str, str, Path]]:
    """``(machine, section, path)`` of every anomaly score file in ``folder``, sorted."""
    found = []
    for path in submission_files(folder):
        kind, machine, section = parse_file_name(path.name) or ("", "", "")
        if kind == SCORES:
            found.append((machine, section, path))
    return found


def decision_path(score_path: Path) -> Path:
    """The decision file that goes with a score file (beside it)."""
    parsed = parse_file_name(score_path.name)
    if parsed is None or parsed[0] != SCORES:
        raise ValueError(f"{score_path.name} is not an anomaly score file name")
    return score_path.with_name(decision_file_name(parsed[1], parsed[2]))


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def section_files(
    machine: str, section: str, rows: Sequence[tuple[str, float, int]]
) -> dict[str, bytes]:
    """The two files of one section: ``{file name: content}``.

    Parameters
    ----------
    machine, section : str
    rows : sequence of ``(clip file name, score, decision 0|1)``, in the order to write.
    """
    return {
        score_file_name(machine, section): csv_text((n, s) for n, s, _ in rows).encode(),
        decision_file_name(machine, section): csv_text((n, d) for n, _, d in rows).encode(),
    }


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def _rows(path: Path, what: str) -> list[tuple[int, str, str]]:
    """``(line number, file, value)`` of a headerless two-column CSV; blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({exc}).") from None
    out = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise DataError(f"{path}, line {lineno}: expected `{what}`, got {','.join(row)!r}.")
        out.append((lineno, PurePath(row[0].strip()).name, row[1].strip()))
    return out


def _unique(rows: list[tuple[int, str, Any]], path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lineno, name, value in rows:
        if name in out:
            raise DataError(f"{path}, line {lineno}: clip {name} is listed twice.")
        out[name] = value
    return out


def read_scores(path: Path) -> dict[str, float]:
    """``file -> score`` from an anomaly score file (NaN allowed, noted by the metrics).

    Raises
    ------
    DataError
        An unreadable file, a malformed row, a score that is not a number, a clip twice.
    """
    parsed = []
    for lineno, name, value in _rows(path, "file,score"):
        try:
            parsed.append((lineno, name, float(value)))
        except ValueError:
            raise DataError(f"{path}, line {lineno}: score {value!r} is not a number.") from None
    return _unique(parsed, path)


def _read_01(path: Path, what: str) -> dict[str, int]:
    parsed = []
    for lineno, name, value in _rows(path, what):
        if value not in ("0", "1"):
            raise DataError(f"{path}, line {lineno}: expected 0 or 1, got {value!r}.")
        parsed.append((lineno, name, int(value)))
    return _unique(parsed, path)


def read_decisions(path: Path) -> dict[str, int]:
    """``file -> 0|1`` from a decision file (1 = decided anomalous)."""
    return _read_01(path, "file,decision")


def read_ground_truth(folder: Path, machine: str, section: str) -> dict[str, tuple[int, str]]:
    """``file -> (label 0|1, "source"|"target")`` from the official evaluator's CSV folders.

    Raises
    ------
    DataError
        If either CSV of this machine type and section is missing or malformed.
    """
    name = _file_name("ground_truth", machine, section)
    data_path = folder / GROUND_TRUTH_LABELS / name
    domain_path = folder / GROUND_TRUTH_DOMAINS / name
    for path in (data_path, domain_path):
        if not path.is_file():
            raise DataError(
                f"Ground truth {path} is missing: {folder} has no ground truth for "
                f"{machine} section {section}, which the run scored."
            )
    labels = _read_01(data_path, "file,label")
    domains = _read_01(domain_path, "file,domain")
    if set(labels) != set(domains):
        odd = sorted(set(labels) ^ set(domains))
        raise DataError(
            f"{data_path} and {domain_path} list different clips ({len(odd)} differ, e.g. "
            f"{odd[0]})."
        )
    return {f: (labels[f], DOMAIN_CODES[domains[f]]) for f in labels}

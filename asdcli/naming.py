"""DCASE file-name conventions: what a clip's name says about it.

Supported patterns (all case-sensitive, extension ``.wav``):

* DCASE 2021-2024 development: ``section_00_source_train_normal_0000_<k1>_<v1>_<k2>_<v2>.wav``
  (attributes are ``key_value`` pairs; values may hold underscores-free tokens).
* DCASE 2021-2024 evaluation, unlabeled: ``section_00_0000.wav``; labeled after the challenge:
  ``section_00_test_normal_0000.wav`` style names are handled by the first pattern when they
  carry a domain, else by the ground-truth CSVs.
* DCASE 2020: ``normal_id_00_00000000.wav``, ``anomaly_id_00_00000000.wav`` and unlabeled
  ``id_00_00000000.wav``. The machine id plays the role of the section; the domain is source.

Any other name parses to a :class:`ClipInfo` whose label, domain and section are ``unknown``;
:func:`parse_name` never raises.

The folder decides the split: a clip in ``<machine>/train/`` is a training clip whatever its
name says (users re-split data sets by moving files, not by renaming them); the name's split
is used only where the folder gives none. :func:`name_split` tells what the name alone says.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

SPLITS = ("train", "test")
DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")
UNKNOWN = "unknown"

# ASCII digits only (``\d`` also takes other scripts' digits), and an index that fits the
# store's int64 column: a longer run of digits is not a DCASE name.
_NUM = r"[0-9]+"
_INDEX = r"[0-9]{1,18}"
_DCASE2023 = re.compile(
    rf"^section_(?P<section>{_NUM})_(?P<domain>source|target)_(?P<split>train|test)_"
    rf"(?P<label>normal|anomaly)_(?P<index>{_INDEX})(?:_(?P<attrs>.*))?$"
)
_DCASE_EVAL = re.compile(rf"^section_(?P<section>{_NUM})_(?P<index>{_INDEX})$")
_DCASE2020 = re.compile(
    rf"^(?:(?P<label>normal|anomaly)_)?id_(?P<section>{_NUM})_(?P<index>{_INDEX})$"
)


@dataclass(frozen=True)
class ClipInfo:
    """What is known about one clip, from its name and folder.

    ``section`` is a zero-padded string (``"00"``), ``index`` is -1 when the name has none,
    ``attributes`` maps attribute names to values as strings (``{"vel": "12"}``).
    """

    name: str
    machine: str = UNKNOWN
    section: str = UNKNOWN
    domain: str = UNKNOWN
    split: str = UNKNOWN
    label: str = UNKNOWN
    index: int = -1
    attributes: dict[str, str] = field(default_factory=dict)
    pattern: str = UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_anomaly(self) -> bool:
        return self.label == "anomaly"


def clip_key(machine: str, name: str) -> str:
    """A clip's name across a data set: ``"fan/section_00_source_test_normal_0001.wav"``
    (DCASE submission files name clips by file name within a machine type)."""
    return f"{machine}/{name}"


def parse_attributes(text: str) -> dict[str, str]:
    """``"vel_12_loc_A"`` -> ``{"vel": "12", "loc": "A"}``.

    An odd trailing token (DCASE 2021 names such as ``..._strength_1_ambient``) is kept under
    the key ``"extra"`` so no information is lost.
    """
    tokens = [t for t in text.split("_") if t != ""]
    attrs: dict[str, str] = {}
    for i in range(0, len(tokens) - 1, 2):
        attrs[tokens[i]] = tokens[i + 1]
    if len(tokens) % 2 == 1:
        attrs["extra"] = tokens[-1]
    return attrs


def format_attributes(attrs: dict[str, str]) -> str:
    """Inverse of :func:`parse_attributes` for well-formed pairs."""
    return "_".join(f"{k}_{v}" for k, v in attrs.items())


def parse_name(filename: str, machine: str = UNKNOWN, folder_split: str = UNKNOWN) -> ClipInfo:
    """Parse one file name (with or without folders) into a :class:`ClipInfo`.

    ``machine`` and ``folder_split`` come from the folder layout (``<machine>/<split>/file``);
    the folder's split, when it is ``train`` or ``test``, wins over the name's.
    """
    base, stem = _base_and_stem(filename)
    split = folder_split if folder_split in SPLITS else UNKNOWN

    m = _DCASE2023.match(stem)
    if m:
        return ClipInfo(
            name=base,
            machine=machine,
            section=m["section"],
            domain=m["domain"],
            split=split if split != UNKNOWN else m["split"],
            label=m["label"],
            index=int(m["index"]),
            attributes=parse_attributes(m["attrs"] or ""),
            pattern="dcase2023",
        )
    m = _DCASE_EVAL.match(stem)
    if m:
        return ClipInfo(
            name=base,
            machine=machine,
            section=m["section"],
            split=split,
            index=int(m["index"]),
            pattern="dcase-eval",
        )
    m = _DCASE2020.match(stem)
    if m:
        label = m["label"] or UNKNOWN
        # DCASE 2020 training folders hold normal clips only, named normal_id_...
        return ClipInfo(
            name=base,
            machine=machine,
            section=m["section"],
            domain="source",
            split=split,
            label=label,
            index=int(m["index"]),
            pattern="dcase2020",
        )
    return ClipInfo(name=base, machine=machine, split=split)


def _base_and_stem(filename: str) -> tuple[str, str]:
    base = PurePath(str(filename)).name
    return base, (base[:-4] if base.lower().endswith(".wav") else base)


def name_split(filename: str) -> str:
    """The split the file name alone says (``train``/``test``), or ``unknown``."""
    m = _DCASE2023.match(_base_and_stem(filename)[1])
    return m["split"] if m else UNKNOWN


def split_and_machine(path: PurePath) -> tuple[str, str]:
    """Folder conventions: ``.../<machine>/<train|test>/file.wav`` -> (machine, split).

    A file whose parent is not a split folder takes its parent as the machine and an unknown split.
    """
    parent = path.parent
    if parent.name in SPLITS:
        return (parent.parent.name or UNKNOWN), parent.name
    return (parent.name or UNKNOWN), UNKNOWN


def parse_path(path: PurePath) -> ClipInfo:
    """Parse a clip from its full path: machine and split from folders, the rest from the name."""
    machine, split = split_and_machine(path)
    return parse_name(path.name, machine=machine, folder_split=split)

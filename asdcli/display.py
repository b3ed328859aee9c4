"""How numbers are shown, in rich tables and Markdown reports alike (no heavy imports)."""

from __future__ import annotations


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric for display: ``n/a`` when not computable (``None``)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def seconds_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def params_text(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"

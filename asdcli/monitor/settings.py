"""Settings of `asd serve`, `asd watch` and `asd history`: the ``serve`` and ``watch`` sections.

They are sections of the one settings model (:class:`asdcli.settings.Settings`), so
``ASD_SERVE__TOKEN``, ``serve:`` in ``conf/config.yaml`` and flags all apply.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from asdcli.detectors.params import Section


class ServeSettings(Section):
    """`asd serve`: the scoring API, its limits, and the history database."""

    host: str = Field(
        "127.0.0.1", description="Address to bind; any but a loopback address needs a token."
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    token: SecretStr | None = Field(
        None,
        description="Require `Authorization: Bearer TOKEN` on every route but /healthz "
        "(set it with ASD_SERVE__TOKEN rather than in a file).",
    )
    max_upload_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest WAV file accepted, in bytes (413 above)."
    )
    max_seconds: float = Field(
        60.0, gt=0, description="Longest clip accepted, in seconds (422 above)."
    )
    max_batch_files: int = Field(64, ge=1, description="Most files in one /v1/score/batch call.")
    scoring_threads: int = Field(
        4, ge=1, description="Clips scored at once, in threads off the event loop."
    )
    stream_hop: float = Field(
        0.5,
        gt=0,
        le=1,
        description="WebSocket stream: hop between windows as a fraction of the window "
        "(0.5 = windows overlap by half).",
    )
    stream_seconds: float | None = Field(
        None,
        gt=0,
        description="WebSocket stream window in seconds; null = the length of the run's "
        "training clips.",
    )
    db: Path = Field(
        Path("monitor.db"),
        description="History database (SQLite) that asd serve and asd watch append to.",
    )
    refresh_seconds: int = Field(10, ge=1, description="Dashboard: seconds between reloads.")
    dashboard_points: int = Field(
        300, ge=10, description="Dashboard: latest results drawn per machine."
    )


class WatchSettings(Section):
    """`asd watch`: how new files are noticed and when they count as complete."""

    stable_seconds: float = Field(
        1.0,
        ge=0,
        description="A file is scored once its size and modification time have not changed "
        "for this long (it may still be being written).",
    )
    force_polling: bool = Field(
        False,
        description="Poll the folder instead of using file-system events (network drives); "
        "polling is also the fallback when events are unavailable.",
    )
    poll_seconds: float = Field(0.5, gt=0, description="Polling interval in seconds.")

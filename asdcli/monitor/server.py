"""Running `asd serve`: the bind policy, and the server's life from start to shutdown."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from asdcli.errors import UserError
from asdcli.monitor.history import History
from asdcli.monitor.service import ScoringService
from asdcli.monitor.settings import ServeSettings

# websockets' sans-I/O protocol: uvicorn's "websockets" one uses that library's deprecated API.
WS_PROTOCOL = "websockets-sansio"


class BindRefused(UserError):
    """A non-loopback address without a token."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); names other than
    ``localhost`` are not resolved: they count as reachable from elsewhere."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on an address other machines can reach without a token.

    Raises
    ------
    BindRefused
        Saying why and the two ways out.
    """
    if token or is_loopback(host):
        return
    raise BindRefused(
        f"Refusing to serve on {host} without a token: anyone who can reach this machine could "
        "send clips and read the history.\nSet one with --token or ASD_SERVE__TOKEN (clients "
        "then send Authorization: Bearer TOKEN), or bind to 127.0.0.1."
    )


def serve(
    run: Path,
    settings: ServeSettings,
    *,
    allow_incomplete: bool = False,
    trust_modified: bool = False,
    device: str | None = None,
    sockets: list[socket.socket] | None = None,
    log_level: str = "warning",
) -> None:
    """Load ``run``, open the history, and serve until Ctrl-C (or SIGTERM).

    ``sockets``: already bound sockets to serve on instead of ``settings.host:port``.

    Raises
    ------
    BindRefused, RunError, HistoryError
        Before anything listens.
    """
    import uvicorn

    from asdcli.monitor.api import create_app

    token = settings.token.get_secret_value() if settings.token else None
    check_bind(settings.host, token)
    service = ScoringService(
        run,
        allow_incomplete=allow_incomplete,
        trust_modified=trust_modified,
        max_seconds=settings.max_seconds,
        device=device,
    )
    with History(settings.db) as history:
        app = create_app(service, history, settings)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            ws=WS_PROTOCOL,
            ws_max_size=settings.max_upload_bytes,
            timeout_graceful_shutdown=5,
        )
        uvicorn.Server(config).run(sockets=sockets)

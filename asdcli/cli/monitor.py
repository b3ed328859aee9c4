"""The Typer commands `asd serve`, `asd watch` and `asd history`: settings in, one call, rich out.

Plain functions with Typer annotations; the CLI registers them (``app.command()(serve)``).
Errors are :class:`~asdcli.errors.UserError`\\ s, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live

from asdcli.cli import render
from asdcli.cli.common import err, help_default, out, resolve_settings

LIVE_ROWS = 20


def serve(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="Run folder (from asd train).")],
    host: Annotated[
        str | None, typer.Option(help=help_default("Address to bind.", "serve.host"))
    ] = None,
    port: Annotated[int | None, typer.Option(help=help_default("Port.", "serve.port"))] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="ASD_SERVE__TOKEN",
            help="Require Authorization: Bearer TOKEN (needed to bind beyond loopback).",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        Path | None, typer.Option(help=help_default("History database.", "serve.db"))
    ] = None,
    max_upload_bytes: Annotated[
        int | None, typer.Option(help="Largest upload in bytes (413 above).")
    ] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Longest clip in seconds.")] = None,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Serve an interrupted run's weights.")
    ] = False,
    trust_modified: Annotated[
        bool, typer.Option("--trust-modified", help="Serve a run whose model files changed.")
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="Torch device of neural models: auto, cpu, cuda.")
    ] = None,
) -> None:
    """Serve a run over HTTP: a scoring API, a live stream, metrics and a dashboard.

    POST /v1/score, /v1/score/batch, WS /v1/stream, GET /metrics, and a dashboard at /.
    API documentation at /docs. Every result goes to the history database.
    """
    from asdcli.monitor.server import serve as run_server

    flags = ("host", "port", "token", "db", "max_upload_bytes", "max_seconds")
    section = resolve_settings(ctx, {f"serve.{f}": f for f in flags}).serve
    where = f"http://{section.host}:{section.port}"
    err.print(
        f"Serving [bold]{run}[/] on {where} (dashboard {where}/, API docs {where}/docs, "
        f"history {section.db}); Ctrl-C stops.",
        highlight=False,
    )
    run_server(
        run,
        section,
        allow_incomplete=allow_incomplete,
        trust_modified=trust_modified,
        device=device,
    )


def watch(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Folder to watch (its subfolders too).")],
    run: Annotated[Path, typer.Option("--run", help="Run folder to score with.")],
    machine: Annotated[
        str | None,
        typer.Option(help="Machine of every file \\[default: from each file's folders]."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Score what is there, then exit (for cron).")
    ] = False,
    db: Annotated[
        Path | None, typer.Option(help=help_default("History database.", "serve.db"))
    ] = None,
    stable_seconds: Annotated[
        float | None,
        typer.Option(help="Seconds a file's size must stay unchanged before it is scored."),
    ] = None,
    polling: Annotated[
        bool | None, typer.Option("--polling", help="Poll instead of file-system events.")
    ] = None,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Use an interrupted run's weights.")
    ] = False,
    trust_modified: Annotated[
        bool, typer.Option("--trust-modified", help="Use a run whose model files changed.")
    ] = False,
) -> None:
    """Score every new WAV file under FOLDER, each once, into the history database.

    Each file is scored once also across restarts; a live table shows the latest.
    """
    from asdcli.monitor.history import History
    from asdcli.monitor.service import ScoringService
    from asdcli.monitor.watch import Handled, watch_folder

    settings = resolve_settings(
        ctx,
        {
            "serve.db": "db",
            "watch.stable_seconds": "stable_seconds",
            "watch.force_polling": "polling",
        },
    )
    serve_section, section = settings.serve, settings.watch
    service = ScoringService(
        run,
        allow_incomplete=allow_incomplete,
        trust_modified=trust_modified,
        max_seconds=serve_section.max_seconds,
    )
    title = f"asd watch {folder} (run {service.name})"
    latest: list[Handled] = []
    with History(serve_section.db) as history:
        if once:
            summary = watch_folder(folder, service, history, section, machine=machine, once=True)
            out.print(render.watch_table(summary.handled, title))
        else:
            err.print(f"Watching {folder}; results go to {serve_section.db}. Ctrl-C stops.")
            with Live(render.watch_table([], title), console=out, auto_refresh=False) as live:

                def show(done: Handled) -> None:
                    latest.append(done)
                    del latest[:-LIVE_ROWS]
                    live.update(render.watch_table(latest, title), refresh=True)

                summary = watch_folder(
                    folder, service, history, section, machine=machine, on_handled=show
                )
    err.print(
        f"{summary.scored} file(s) scored, {summary.failed} skipped, {summary.already} "
        "handled by an earlier watch.",
        highlight=False,
    )


def history(
    ctx: typer.Context,
    machine: Annotated[str | None, typer.Option(help="Only this machine.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only results since: 30m, 12h, 1d, 2w or a date.")
    ] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV (every column) instead.")] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the newest N results \\[default: all].")
    ] = None,
    db: Annotated[
        Path | None, typer.Option(help=help_default("History database.", "serve.db"))
    ] = None,
) -> None:
    """Print the results asd serve and asd watch recorded, oldest first, or export them."""
    from asdcli.files import csv_text
    from asdcli.monitor.history import COLUMNS, History, parse_since

    section = resolve_settings(ctx, {"serve.db": "db"}).serve
    start = parse_since(since) if since is not None else None
    with History(section.db, readonly=True) as h:
        entries = h.query(machine=machine, since=start, limit=limit)
    if csv:
        header = ("id", "iso_time", *COLUMNS)
        rows = [(e.id, e.iso_time, *e.row()) for e in entries]
        sys.stdout.write(csv_text(rows, header=header))
        return
    out.print(render.history_table(entries, section.db))

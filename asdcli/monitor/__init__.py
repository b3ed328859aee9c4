"""Monitoring: `asd serve` (the scoring API and dashboard), `asd watch` (a folder of new
recordings) and `asd history`, over one loaded run and one history database.

| module | what lives there |
|---|---|
| ``service.py`` | a run loaded once; one WAV (path, bytes or samples) -> a :class:`ScoredClip` |
| ``history.py`` | the SQLite history (``monitor.db``): the only module that knows its schema |
| ``api.py`` | the FastAPI app: routers, auth, request/response models, the stream |
| ``server.py`` | the bind policy and running the app with uvicorn |
| ``watch.py`` | watching a folder: stable files, each scored once across restarts |
| ``dashboard.py`` | the dashboard page, charts as server-drawn SVG (``templates/``) |
| ``metrics.py`` | the Prometheus metrics |
| ``settings.py`` | the ``serve`` and ``watch`` settings sections |
| (``asdcli/cli/monitor.py``) | the Typer commands ``serve``, ``watch``, ``history`` |

Nothing here is imported by ``asd --help``; FastAPI and uvicorn load when a command needs them.
"""

"""The HTTP API of `asd serve`: a FastAPI app over a :class:`ScoringService` and the history.

One router per concern (health, scoring, the stream, metrics, the dashboard), the token check
as a dependency, pydantic models for every answer and error (so the OpenAPI spec at
``/openapi.json`` documents them), and scoring in worker threads (at most
``serve.scoring_threads`` at once), never on the event loop: a slow clip delays no other
request.

Errors are JSON, ``{"error": code, "message": text}`` (plus ``known_machines`` for an unknown
machine), with a 4xx status for anything the client sent: 401 no or wrong token, 404 unknown
machine, 413 body over ``serve.max_upload_bytes``, 415 not audio or not a WAV upload, 422
empty, unreadable (NaN samples, truncated, too short), longer than ``serve.max_seconds``, or
invalid parameters. 503: the history cannot be written (disk full). The server keeps serving
after each of them.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Query,
    Request,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from asdcli.monitor.dashboard import render_dashboard
from asdcli.monitor.history import History, HistoryError
from asdcli.monitor.metrics import CONTENT_TYPE, Metrics
from asdcli.monitor.service import (
    BadSection,
    ClipRejected,
    ClipTooLong,
    EmptyClip,
    NotAudio,
    ScoredClip,
    ScoringService,
    UnknownMachine,
    UnreadableClip,
)
from asdcli.monitor.settings import ServeSettings

WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "application/octet-stream")
STATUS: dict[type[ClipRejected], int] = {
    EmptyClip: 422,
    NotAudio: 415,
    UnreadableClip: 422,
    ClipTooLong: 422,
    UnknownMachine: 404,
    BadSection: 422,
}
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


# --- request and response models ---------------------------------------------------------------


class ScoreResponse(BaseModel):
    """One scored clip: ``decision`` 1 (anomalous) when ``score > threshold``."""

    file: str
    machine: str
    section: str
    score: float
    threshold: float | None = Field(description="null: the run has no threshold (decision 0).")
    decision: Literal[0, 1]
    run: str
    detector: str
    latency_ms: float = Field(description="Decoding, log-mel and model, in milliseconds.")
    duration: float = Field(description="Seconds of audio scored.")
    warning: str | None = Field(None, description="E.g. the clip was resampled.")


class ErrorResponse(BaseModel):
    error: str = Field(description="Machine-readable reason (empty, not_audio, too_long, ...).")
    message: str
    known_machines: list[str] | None = None


class BatchItem(BaseModel):
    """One file of a batch: its result, or the error that kept it from being scored."""

    file: str
    status: int = Field(description="The HTTP status this file alone would have had.")
    result: ScoreResponse | None = None
    error: ErrorResponse | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]


class MachineModel(BaseModel):
    machine: str
    sections: list[str]
    threshold: float | None
    clip_seconds: float = Field(description="Training clip length: the stream's window.")


class ModelsResponse(BaseModel):
    run: str
    detector: str
    sample_rate: int
    machines: list[MachineModel]


class Health(BaseModel):
    status: Literal["ok"]
    run: str
    detector: str
    machines: int
    uptime_s: float


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503)
}
_WAV_SCHEMA = {"type": "string", "format": "binary"}
SCORE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": _WAV_SCHEMA,
                        "machine": {"type": "string"},
                        "section": {"type": "string"},
                    },
                    "required": ["file"],
                }
            },
            "audio/wav": {"schema": _WAV_SCHEMA},
        },
    }
}
BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": _WAV_SCHEMA, "minItems": 1}},
                    "required": ["files"],
                }
            }
        },
    }
}


# --- state, errors, auth -----------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, known: list[str] | None = None):
        super().__init__(message)
        self.status, self.code, self.known = status, code, known

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=self.code, message=str(self), known_machines=self.known)


def _rejection(exc: ClipRejected) -> ApiError:
    known = exc.known if isinstance(exc, UnknownMachine) else None
    return ApiError(STATUS.get(type(exc), 422), exc.code, str(exc), known)


@dataclass
class AppState:
    service: ScoringService
    history: History
    settings: ServeSettings
    metrics: Metrics = field(default_factory=Metrics)
    started: float = field(default_factory=time.time)
    limiter: anyio.CapacityLimiter | None = None

    @property
    def token(self) -> str | None:
        return self.settings.token.get_secret_value() if self.settings.token else None

    def record(self, result: ScoredClip, source: str) -> None:
        """Count and append one result to the history (in a worker thread: it blocks)."""
        self.metrics.scored(
            result.detector, result.machine, result.decision, result.latency_ms / 1000.0
        )
        self.history.append([result.entry(source)])

    def score_upload(
        self, data: bytes, file: str | None, machine: str | None, section: str | None
    ) -> ScoredClip:
        try:
            result = self.service.score_bytes(data, file=file, machine=machine, section=section)
        except ClipRejected as exc:
            self.metrics.rejected.labels(exc.code).inc()
            raise
        self.record(result, "serve")
        return result

    async def in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(self.settings.scoring_threads)
        return await anyio.to_thread.run_sync(func, *args, limiter=self.limiter)


def _response(r: ScoredClip) -> ScoreResponse:
    fields = asdict(r)
    fields.pop("sample_rate")
    return ScoreResponse(**fields)


def state_of(request: Request) -> AppState:
    s: AppState = request.app.state.asd
    return s


_bearer = HTTPBearer(auto_error=False, description="serve.token, when one is set.")


def _token_ok(expected: str | None, given: str | None) -> bool:
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """Every route but /healthz: ``Authorization: Bearer <serve.token>`` when a token is set."""
    given = credentials.credentials if credentials else None
    if not _token_ok(state_of(request).token, given):
        raise ApiError(401, "unauthorized", "Send the server's token: Authorization: Bearer TOKEN.")


def require_token_or_query(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    token: str | None = Query(None, description="The token, for a browser (dashboard)."),
) -> None:
    """The dashboard: the header, or ``?token=`` since a browser cannot send the header."""
    given = credentials.credentials if credentials else token
    if not _token_ok(state_of(request).token, given):
        raise ApiError(401, "unauthorized", "Open the dashboard as /?token=TOKEN.")


# --- routers -----------------------------------------------------------------------------------

health = APIRouter(tags=["health"])


@health.get("/healthz", response_model=Health)
def healthz(request: Request) -> Health:
    """Liveness: the run is loaded and the server answers (no token needed)."""
    s = state_of(request)
    return Health(
        status="ok",
        run=s.service.name,
        detector=s.service.detector,
        machines=len(s.service.machines),
        uptime_s=round(time.time() - s.started, 3),
    )


scoring = APIRouter(
    prefix="/v1", tags=["scoring"], dependencies=[Depends(require_token)], responses=ERRORS
)


def _param(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ApiError(422, "invalid_request", f"{name} must be text, not a file.")


async def _upload(
    request: Request, filename: str | None
) -> tuple[bytes, str | None, dict[str, Any]]:
    """The WAV of a request: a multipart ``file`` field, or the raw body. -> (bytes, file name,
    other form fields)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_request", "The multipart body needs a file field `file`.")
        data = await upload.read()
        fields = {k: v for k, v in form.items() if k != "file"}
        return data, filename or upload.filename, fields
    if kind in WAV_TYPES:
        return await request.body(), filename, {}
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {kind or 'none'}: send the WAV as multipart/form-data (field `file`) or "
        "as the body with Content-Type: audio/wav.",
    )


@scoring.post("/score", response_model=ScoreResponse, openapi_extra=SCORE_BODY)
async def score(
    request: Request,
    machine: str | None = Query(None, max_length=200, description="Default: from the path."),
    section: str | None = Query(None, max_length=200, description="Default: from the name."),
    filename: str | None = Query(None, max_length=1000, description="Name of a raw body."),
) -> ScoreResponse:
    """Score one WAV file: a multipart upload (field ``file``) or a raw ``audio/wav`` body.

    Machine and section, when not given, are read from the file name as featurize does
    (``fan/test/section_00_...wav``: machine from the folder, section from the name).
    """
    s = state_of(request)
    data, name, fields = await _upload(request, filename)
    machine = machine or _param(fields.get("machine"), "machine")
    section = section or _param(fields.get("section"), "section")
    try:
        result = await s.in_thread(s.score_upload, data, name, machine, section)
    except ClipRejected as exc:
        raise _rejection(exc) from None
    return _response(result)


@scoring.post("/score/batch", response_model=BatchResponse, openapi_extra=BATCH_BODY)
async def score_batch(
    request: Request,
    machine: str | None = Query(None, max_length=200, description="Default: from each path."),
    section: str | None = Query(None, max_length=200, description="Default: from each name."),
) -> BatchResponse:
    """Score several WAV files (multipart, one ``files`` field each); one result per file, in
    order. A file that cannot be scored gets its error; the others are scored all the same."""
    s = state_of(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the files as multipart/form-data, one field `files` each.",
        )
    limit = s.settings.max_batch_files
    form = await request.form(max_files=limit, max_fields=limit + 8)
    uploads = [u for u in form.getlist("files") if isinstance(u, UploadFile)]
    if not uploads:
        raise ApiError(422, "invalid_request", "No file: add one multipart field `files` per WAV.")
    if machine is not None:
        try:
            s.service.check_machine(machine)
        except UnknownMachine as exc:
            raise _rejection(exc) from None
    files = [(await u.read(), u.filename) for u in uploads]

    def run() -> list[BatchItem]:
        items = []
        for i, (data, name) in enumerate(files):
            shown = name or f"file {i + 1}"
            if len(data) > s.settings.max_upload_bytes:
                err = ApiError(
                    413,
                    "too_large",
                    f"{shown} is {len(data)} bytes, over serve.max_upload_bytes "
                    f"({s.settings.max_upload_bytes}).",
                )
                items.append(BatchItem(file=shown, status=413, error=err.body()))
                continue
            try:
                r = s.score_upload(data, name, machine, section)
                items.append(BatchItem(file=r.file, status=200, result=_response(r)))
            except ClipRejected as exc:
                err = _rejection(exc)
                items.append(BatchItem(file=shown, status=err.status, error=err.body()))
        return items

    return BatchResponse(results=await s.in_thread(run))


@scoring.get("/models", response_model=ModelsResponse)
def models(request: Request) -> ModelsResponse:
    """The run: detector, sample rate, and per machine its sections and threshold."""
    svc = state_of(request).service
    return ModelsResponse(
        run=svc.name,
        detector=svc.detector,
        sample_rate=svc.sample_rate,
        machines=[
            MachineModel(
                machine=m,
                sections=svc.sections.get(m, []),
                threshold=svc.thresholds.get(m),
                clip_seconds=svc.clip_seconds(m),
            )
            for m in svc.machines
        ],
    )


monitoring = APIRouter(tags=["monitoring"])


@monitoring.get(
    "/metrics",
    dependencies=[Depends(require_token)],
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."},
        401: {"model": ErrorResponse},
    },
)
def metrics(request: Request) -> Response:
    """Requests, latencies, and decisions per machine, in Prometheus text format."""
    return Response(state_of(request).metrics.exposition(), media_type=CONTENT_TYPE)


@monitoring.get(
    "/",
    response_class=HTMLResponse,
    dependencies=[Depends(require_token_or_query)],
    # Errors are JSON here too (FastAPI would document them as HTML, the page's type).
    responses={
        401: {"model": ErrorResponse, "content": {"application/json": {}}},
        422: {"model": ErrorResponse, "content": {"application/json": {}}},
    },
)
def dashboard(request: Request) -> HTMLResponse:
    """One panel per machine: score over time with the threshold, the latest decisions, the
    anomalies of the last 24 h. Reloads itself."""
    s = state_of(request)
    return HTMLResponse(
        render_dashboard(
            s.history,
            run=s.service.name,
            detector=s.service.detector,
            machines=s.service.machines,
            points=s.settings.dashboard_points,
            refresh_seconds=s.settings.refresh_seconds,
        )
    )


# --- the stream --------------------------------------------------------------------------------

stream = APIRouter(tags=["stream"])
FORMATS = {"s16le": ("<i2", 1.0 / 32768.0), "f32le": ("<f4", 1.0)}


class StreamWindows:
    """Raw PCM bytes in, overlapping windows of mono float32 samples out.

    ``window`` and ``hop`` are in samples at the stream's rate; interleaved channels are
    averaged, as a multi-channel file is.
    """

    def __init__(self, fmt: str, channels: int, window: int, hop: int) -> None:
        self.dtype, self.scale = FORMATS[fmt]
        self.channels, self.window, self.hop = channels, window, hop
        self.frame_bytes = np.dtype(self.dtype).itemsize * channels
        self._rest = b""
        self._pending = np.zeros(0, dtype=np.float32)
        self.start = 0  # stream sample index of the first pending sample
        self.emitted = 0

    def feed(self, data: bytes) -> list[tuple[int, np.ndarray]]:
        """Add bytes; the windows now complete, as (first sample index, samples)."""
        data = self._rest + data
        usable = len(data) - len(data) % self.frame_bytes
        self._rest = data[usable:]
        x = np.frombuffer(data[:usable], dtype=self.dtype).astype(np.float32)
        if self.scale != 1.0:
            x *= np.float32(self.scale)
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        self._pending = np.concatenate([self._pending, x])
        out = []
        while self._pending.shape[0] >= self.window:
            out.append((self.start, self._pending[: self.window].copy()))
            self._pending = self._pending[self.hop :]
            self.start += self.hop
            self.emitted += 1
        return out

    def tail(self) -> tuple[int, np.ndarray] | None:
        """At the end of a stream that never filled a window: what it sent, as one window."""
        if self.emitted or self._pending.shape[0] == 0:
            return None
        return self.start, self._pending.copy()


@stream.websocket("/v1/stream")
async def stream_scores(
    websocket: WebSocket,
    machine: str = Query(...),
    sample_rate: int | None = Query(None, ge=1000, le=384000),
    format: Literal["s16le", "f32le"] = Query("s16le"),
    channels: int = Query(1, ge=1, le=32),
    section: str | None = Query(None, max_length=200),
    token: str | None = Query(None),
) -> None:
    """Live scoring: send raw PCM chunks (binary messages) of ``format`` at ``sample_rate``
    (default: the run's) with ``channels`` interleaved; receive one JSON result per window of
    the machine's training-clip length, windows overlapping by ``1 - serve.stream_hop``.
    Send the text ``end`` to finish: a stream shorter than one window is scored whole, then
    ``{"event": "end", "windows": N}`` comes and the server closes."""
    s: AppState = websocket.app.state.asd
    auth = websocket.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else token
    await websocket.accept()
    started = time.perf_counter()
    route = "/v1/stream"
    if not _token_ok(s.token, given):
        s.metrics.requests.labels(route, "401").inc()
        await websocket.send_json(
            ApiError(
                401, "unauthorized", "Send the token: Authorization: Bearer TOKEN, or ?token=."
            )
            .body()
            .model_dump()
        )
        await websocket.close(code=1008)
        return
    try:
        s.service.check_machine(machine)
    except UnknownMachine as exc:
        s.metrics.requests.labels(route, "404").inc()
        await websocket.send_json(_rejection(exc).body().model_dump())
        await websocket.close(code=1008)
        return
    rate = sample_rate or s.service.sample_rate
    window = max(int(round(s.service.clip_seconds(machine) * rate)), 1)
    if s.settings.stream_seconds is not None:
        window = max(int(round(s.settings.stream_seconds * rate)), 1)
    hop = max(int(round(window * s.settings.stream_hop)), 1)
    windows = StreamWindows(format, channels, window, hop)
    status = "200"

    def score_window(start: int, samples: np.ndarray) -> dict[str, Any]:
        name = f"stream:{machine}@{start / rate:.3f}s"
        try:
            r = s.service.score_samples(samples, rate, file=name, machine=machine, section=section)
        except ClipRejected as exc:
            s.metrics.rejected.labels(exc.code).inc()
            return _rejection(exc).body().model_dump() | {"start_s": start / rate}
        s.record(r, "stream")
        return _response(r).model_dump() | {
            "window": start // hop,
            "start_s": start / rate,
            "end_s": (start + samples.shape[0]) / rate,
        }

    try:
        await websocket.send_json(
            {"event": "start", "window_samples": window, "hop_samples": hop, "sample_rate": rate}
        )
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                for start, samples in windows.feed(message["bytes"]):
                    await websocket.send_json(await s.in_thread(score_window, start, samples))
            elif (message.get("text") or "").strip().lower() == "end":
                tail = windows.tail()
                if tail is not None:  # (shorter than an analysis window: an error message)
                    await websocket.send_json(await s.in_thread(score_window, *tail))
                    windows.emitted += 1
                await websocket.send_json({"event": "end", "windows": windows.emitted})
                await websocket.close()
                break
    except WebSocketDisconnect:
        pass
    except HistoryError as exc:
        status = "503"
        await websocket.send_json(ApiError(503, "history", str(exc)).body().model_dump())
        await websocket.close(code=1011)
    finally:
        s.metrics.requests.labels(route, status).inc()
        s.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


# --- middleware and the app --------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class LimitsAndMetrics:
    """ASGI middleware: refuses bodies over the limit with 413 (from ``Content-Length`` at
    once, else while reading), and counts every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, state: AppState, paths: frozenset[str]) -> None:
        self.app, self.state, self.paths = app, state, paths

    def _limit(self, path: str) -> int:
        s = self.state.settings
        if path.rstrip("/").endswith("/score/batch"):
            return s.max_upload_bytes * s.max_batch_files
        return s.max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        limit = self._limit(scope.get("path", ""))
        status = {"code": 500, "started": False}

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        length = dict(scope.get("headers", [])).get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > limit:
                raise _BodyTooLarge
            await self.app(scope, receive_limited, send_counted)
        except _BodyTooLarge:
            if not status["started"]:
                body = ErrorResponse(
                    error="too_large",
                    message=f"The body is over {limit} bytes (serve.max_upload_bytes"
                    + (
                        " x serve.max_batch_files"
                        if limit != self.state.settings.max_upload_bytes
                        else ""
                    )
                    + ").",
                )
                await JSONResponse(body.model_dump(), status_code=413)(scope, receive, send_counted)
        finally:
            # The route template; a body refused before routing counts under its plain path
            # when that is a route (never an arbitrary URL: the label set stays bounded).
            route = getattr(scope.get("route"), "path", None)
            path = scope.get("path", "")
            template = route or (path if path in self.paths else "unmatched")
            self.state.metrics.requests.labels(template, str(status["code"])).inc()
            self.state.metrics.request_seconds.labels(template).observe(time.perf_counter() - t0)


def _error_json(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        exc.body().model_dump(exclude_none=True), status_code=exc.status, headers=headers
    )


def create_app(service: ScoringService, history: History, settings: ServeSettings) -> FastAPI:
    """The app serving ``service``'s run and writing to ``history``.

    The caller owns ``history`` and closes it after the server stops.
    """
    state = AppState(service, history, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.limiter = anyio.CapacityLimiter(settings.scoring_threads)
        yield

    app = FastAPI(
        title="asd serve",
        summary=f"Anomalous sound detection with run {service.name} ({service.detector}).",
        version="1",
        lifespan=lifespan,
    )
    app.state.asd = state
    routers = (health, scoring, monitoring, stream)
    for router in routers:
        app.include_router(router)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_json(exc)

    @app.exception_handler(HistoryError)
    async def _history_error(request: Request, exc: HistoryError) -> JSONResponse:
        return _error_json(ApiError(503, "history", str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return _error_json(ApiError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error_json(ApiError(422, "invalid_request", problems or "invalid request"))

    if state.token is None:  # the spec says what is true: no token, no security scheme
        full_openapi = app.openapi

        def openapi() -> dict[str, Any]:
            spec = full_openapi()
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    operation.pop("security", None)
            spec.get("components", {}).pop("securitySchemes", None)
            return spec

        app.openapi = openapi  # type: ignore[method-assign]

    paths = frozenset(str(getattr(r, "path", "")) for router in routers for r in router.routes)
    app.add_middleware(LimitsAndMetrics, state=state, paths=paths)
    return app

"""`asd serve`'s API on a real uvicorn server, with httpx as the client."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from monitor_support import serving, trained_run

from asdcli.audio import resample
from asdcli.monitor.history import History
from asdcli.monitor.server import BindRefused, check_bind, is_loopback


def wav_bytes(x: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def tone(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def knn():
    return trained_run("knn")


@pytest.fixture(scope="module")
def server(knn, tmp_path_factory):
    db = tmp_path_factory.mktemp("serve") / "monitor.db"
    # Small limits, so that the size and duration checks can be hit with small files.
    with serving(knn.run, db, max_upload_bytes=200_000, max_seconds=5.0) as (url, app):
        yield url, app, db


def healthy(url: str) -> bool:
    r = httpx.get(f"{url}/healthz", timeout=10)
    return r.status_code == 200 and r.json()["status"] == "ok"


def test_score_equals_asd_score_for_every_test_clip(knn, server):
    """Acceptance: score and decision of /v1/score equal `asd score`'s, to 1e-5, both as a
    multipart upload (machine from the folders in the file name) and as a raw body."""
    url, _, _ = server
    assert len(knn.scores) == 8
    with httpx.Client(base_url=url, timeout=30) as client:
        for i, row in enumerate(knn.scores):
            data = Path(row["path"]).read_bytes()
            if i % 2:
                name = f"{row['machine']}/test/{row['file']}"
                r = client.post("/v1/score", files={"file": (name, data, "audio/wav")})
            else:
                r = client.post(
                    "/v1/score",
                    content=data,
                    headers={"content-type": "audio/wav"},
                    params={"machine": row["machine"], "filename": row["file"]},
                )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["score"] == pytest.approx(float(row["score"]), abs=1e-5)
            assert body["decision"] == int(row["decision"])
            assert (body["machine"], body["section"], body["file"]) == (
                row["machine"],
                row["section"],
                row["file"],
            )
            assert body["run"] == knn.run.name and body["detector"] == "knn"
            assert body["warning"] is None and body["latency_ms"] > 0


def test_every_bad_input_gets_a_json_4xx_and_the_server_stays_healthy(knn, server):
    url, _, _ = server
    good = knn.clip().read_bytes()
    nan = tone(1.0)
    nan[100] = np.nan
    truncated = good[:44] + good[44:1000]  # header says more data than there is
    cases = {
        "not audio": (415, "not_audio", b"this is not a WAV file at all" * 10, {}),
        "empty": (422, "empty", b"", {}),
        "over the size limit": (413, "too_large", wav_bytes(tone(7.0)), {}),
        "over the duration limit": (422, "too_long", wav_bytes(tone(7.0, sr=8000), 8000), {}),
        "unknown machine": (404, "unknown_machine", good, {"machine": "toaster"}),
        "NaN samples": (422, "unreadable_audio", wav_bytes(nan, subtype="FLOAT"), {}),
        "truncated": (422, "unreadable_audio", truncated, {}),
        "bad section": (422, "bad_section", good, {"section": "../../etc"}),
    }
    with httpx.Client(base_url=url, timeout=30) as client:
        for what, (status, code, data, params) in cases.items():
            params = {"machine": "bearing", **params}
            r = client.post(
                "/v1/score", content=data, headers={"content-type": "audio/wav"}, params=params
            )
            assert r.status_code == status, (what, r.text)
            body = r.json()
            assert body["error"] == code, what
            assert body["message"], what
            if code == "unknown_machine":
                assert body["known_machines"] == ["bearing", "fan"]
                assert "bearing, fan" in body["message"]
            if what == "NaN samples":
                assert "NaN" in body["message"]
            assert healthy(url), f"unhealthy after {what}"

        # Not a WAV upload at all: wrong content type, multipart without a file.
        r = client.post("/v1/score", content=good, headers={"content-type": "text/plain"})
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
        r = client.post("/v1/score", data={"machine": "bearing"}, files={"other": ("a", b"x")})
        assert r.status_code == 422 and "file" in r.json()["message"]
        # No machine given and none in the name: 404 listing the known machines.
        r = client.post("/v1/score", content=good, headers={"content-type": "audio/wav"})
        assert r.status_code == 404 and r.json()["known_machines"] == ["bearing", "fan"]

        # Over the limit without a Content-Length (chunked): refused while reading.
        def chunks():
            for _ in range(30):
                yield b"\0" * 10_000

        r = client.post("/v1/score", content=chunks(), headers={"content-type": "audio/wav"})
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        # A parameter of the wrong shape.
        r = client.post(
            "/v1/score",
            content=good,
            params={"machine": "x" * 500},
            headers={"content-type": "audio/wav"},
        )
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"
        assert client.get("/no/such/route").status_code == 404
    assert healthy(url)


def test_another_sample_rate_is_resampled_with_a_warning(knn, server, tmp_path):
    """An 8-kHz upload is scored as the same clip resampled to 16 kHz beforehand."""
    url, app, _ = server
    x8 = tone(1.0, sr=8000, seed=3)
    r = httpx.post(
        f"{url}/v1/score",
        content=wav_bytes(x8, 8000, subtype="FLOAT"),
        headers={"content-type": "audio/wav"},
        params={"machine": "fan"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "resampled" in body["warning"] and "8 kHz -> 16 kHz" in body["warning"]
    x16 = resample(x8, 8000, 16000)
    direct = app.state.asd.service.score_bytes(
        wav_bytes(x16, 16000, subtype="FLOAT"), machine="fan"
    )
    assert direct.warning is None
    assert body["score"] == pytest.approx(direct.score, abs=1e-5)


def test_batch_scores_each_file_and_reports_each_error(knn, server):
    url, _, _ = server
    a, b = knn.clip("bearing", 0), knn.clip("fan", 1)
    files = [
        ("files", (f"bearing/test/{a.name}", a.read_bytes(), "audio/wav")),
        ("files", ("bearing/test/junk.wav", b"junk" * 100, "audio/wav")),
        ("files", (f"fan/test/{b.name}", b.read_bytes(), "audio/wav")),
    ]
    r = httpx.post(f"{url}/v1/score/batch", files=files, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [200, 415, 200]
    expected = {(row["machine"], row["file"]): float(row["score"]) for row in knn.scores}
    assert results[0]["result"]["score"] == pytest.approx(expected["bearing", a.name], abs=1e-5)
    assert results[2]["result"]["score"] == pytest.approx(expected["fan", b.name], abs=1e-5)
    assert results[1]["error"]["error"] == "not_audio" and results[1]["result"] is None
    # A machine for the whole batch that the run does not know: 404 for the request.
    r = httpx.post(f"{url}/v1/score/batch", files=files[:1], params={"machine": "x"}, timeout=30)
    assert r.status_code == 404 and r.json()["known_machines"] == ["bearing", "fan"]
    r = httpx.post(f"{url}/v1/score/batch", content=b"x", headers={"content-type": "audio/wav"})
    assert r.status_code == 415


def test_models_lists_machines_sections_and_thresholds(knn, server):
    url, _, _ = server
    body = httpx.get(f"{url}/v1/models", timeout=10).json()
    thresholds = json.loads((knn.run / "thresholds.json").read_text())
    assert body["run"] == knn.run.name and body["detector"] == "knn"
    assert body["sample_rate"] == 16000
    assert [m["machine"] for m in body["machines"]] == ["bearing", "fan"]
    for m in body["machines"]:
        assert m["threshold"] == pytest.approx(thresholds[m["machine"]]["threshold"])
        assert m["sections"] == ["00"]
        assert m["clip_seconds"] == pytest.approx(1.0)  # make_dataset's clips


def test_metrics_count_requests_latencies_and_decisions(knn, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    with (
        serving(knn.run, tmp_path / "m.db") as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        rows = [r for r in knn.scores if r["machine"] == "fan"]
        for row in rows:
            client.post(
                "/v1/score",
                files={"file": (f"fan/test/{row['file']}", Path(row["path"]).read_bytes())},
            )
        client.post(
            "/v1/score",
            content=b"nope",
            headers={"content-type": "audio/wav"},
            params={"machine": "fan"},
        )
        big = b"\0" * (16 * 1024 * 1024 + 1)  # over the default serve.max_upload_bytes
        assert client.post("/v1/score", content=big).status_code == 413
        text = client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ok = samples[("asd_requests_total", (("route", "/v1/score"), ("status", "200")))]
    assert ok == len(rows)
    assert samples[("asd_requests_total", (("route", "/v1/score"), ("status", "415")))] == 1
    anomalous = sum(int(r["decision"]) for r in rows)
    for decision, n in (("1", anomalous), ("0", len(rows) - anomalous)):
        key = ("asd_decisions_total", (("decision", decision), ("machine", "fan")))
        assert samples.get(key, 0) == n
    count = ("asd_score_seconds_count", (("detector", "knn"),))
    assert samples[count] == len(rows)
    assert samples[("asd_rejected_clips_total", (("reason", "not_audio"),))] == 1
    assert samples[("asd_request_seconds_count", (("route", "/v1/score"),))] == len(rows) + 2
    too_large = ("asd_requests_total", (("route", "/v1/score"), ("status", "413")))
    assert samples[too_large] == 1  # refused before routing, still under its route


def test_every_result_is_appended_to_the_history(knn, tmp_path):
    db = tmp_path / "h.db"
    with serving(knn.run, db) as (url, _):
        for row in knn.scores[:3]:
            params = {"machine": row["machine"], "filename": row["file"]}
            httpx.post(
                f"{url}/v1/score",
                params=params,
                content=Path(row["path"]).read_bytes(),
                headers={"content-type": "audio/wav"},
                timeout=30,
            )
        httpx.post(f"{url}/v1/score", content=b"", headers={"content-type": "audio/wav"})
    with History(db, readonly=True) as h:
        entries = h.query()
    assert [e.file for e in entries] == [row["file"] for row in knn.scores[:3]]
    for e, row in zip(entries, knn.scores[:3], strict=True):
        assert e.score == pytest.approx(float(row["score"]), abs=1e-5)
        assert (e.machine, e.decision, e.run, e.source) == (
            row["machine"],
            int(row["decision"]),
            knn.run.name,
            "serve",
        )


def test_token_is_required_except_for_healthz(knn, tmp_path):
    clip = knn.clip().read_bytes()
    with serving(knn.run, tmp_path / "t.db", token="s3cret") as (url, _):
        post = {
            "content": clip,
            "params": {"machine": "bearing"},
            "headers": {"content-type": "audio/wav"},
        }
        r = httpx.post(f"{url}/v1/score", **post)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        bad = {**post, "headers": {**post["headers"], "authorization": "Bearer nope"}}
        assert httpx.post(f"{url}/v1/score", **bad).status_code == 401
        good = {**post, "headers": {**post["headers"], "authorization": "Bearer s3cret"}}
        assert httpx.post(f"{url}/v1/score", **good, timeout=30).status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/").status_code == 401
        assert httpx.get(f"{url}/", params={"token": "s3cret"}).status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_binding_beyond_loopback_needs_a_token():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(BindRefused, match="without a token") as info:
            check_bind(host, None)
        assert "ASD_SERVE__TOKEN" in str(info.value) and "127.0.0.1" in str(info.value)
        check_bind(host, "a-token")


def test_a_slow_clip_does_not_stall_other_requests(knn, server):
    """Scoring runs in worker threads: while one request is stuck in scoring, others are
    answered (with scoring on the event loop, the second request would wait forever)."""
    url, app, _ = server
    state = app.state.asd
    release, entered = threading.Event(), threading.Event()
    original = state.service.score_bytes

    def slow_then_normal(data, **kw):
        if kw.get("file") == "slow.wav":
            entered.set()
            assert release.wait(30)
        return original(data, **kw)

    state.service.score_bytes = slow_then_normal
    try:
        slow: dict[str, httpx.Response] = {}
        clip = knn.clip().read_bytes()
        thread = threading.Thread(
            target=lambda: slow.setdefault(
                "r",
                httpx.post(
                    f"{url}/v1/score",
                    content=clip,
                    timeout=60,
                    params={"machine": "bearing", "filename": "slow.wav"},
                    headers={"content-type": "audio/wav"},
                ),
            )
        )
        thread.start()
        assert entered.wait(30)
        t0 = time.monotonic()
        fast = httpx.post(
            f"{url}/v1/score",
            content=clip,
            params={"machine": "bearing"},
            headers={"content-type": "audio/wav"},
            timeout=30,
        )
        assert fast.status_code == 200 and "r" not in slow
        assert time.monotonic() - t0 < 30
        release.set()
        thread.join(30)
        assert slow["r"].status_code == 200
        assert slow["r"].json()["score"] == pytest.approx(fast.json()["score"])
    finally:
        release.set()
        state.service.score_bytes = original


@pytest.mark.slow
def test_a_torch_detector_scores_as_asd_score_too(tmp_path):
    """dcase-ae (float32 torch, clips batched by `asd score`, one at a time here)."""
    run = trained_run("dcase-ae")
    with serving(run.run, tmp_path / "d.db") as (url, _), httpx.Client(base_url=url) as client:
        for row in run.scores:
            r = client.post(
                "/v1/score",
                files={"file": (f"{row['machine']}/{row['file']}", Path(row["path"]).read_bytes())},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            assert r.json()["score"] == pytest.approx(float(row["score"]), abs=1e-5)
            assert r.json()["decision"] == int(row["decision"])

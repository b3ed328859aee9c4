"""WS /v1/stream on a real server: a recording sent in chunks, scored window by window."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from monitor_support import serving, trained_run
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from asdcli.monitor.api import StreamWindows
from asdcli.monitor.history import History


@pytest.fixture(scope="module")
def knn():
    return trained_run("knn")


def recording(knn, machine: str = "bearing") -> tuple[np.ndarray, list[float]]:
    """Three test clips of ``machine`` back to back as int16 PCM, and their `asd score`s."""
    rows = [r for r in knn.scores if r["machine"] == machine][:3]
    pcm = np.concatenate([sf.read(r["path"], dtype="int16")[0] for r in rows])
    return pcm, [float(r["score"]) for r in rows]


def stream(url: str, query: str, chunks: list[bytes]) -> list[dict]:
    """Send ``chunks`` then ``end``; every message the server sent until it closed."""
    messages = []
    with connect(f"{url.replace('http', 'ws')}/v1/stream?{query}", open_timeout=20) as ws:
        try:
            for c in chunks:
                ws.send(c)
            ws.send("end")
        except ConnectionClosed:  # refused: the server said why, then closed
            pass
        try:
            for raw in ws:
                messages.append(json.loads(raw))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1008  # policy: refused
    return messages


def test_a_recording_sent_in_chunks_is_scored_per_overlapping_window(knn, tmp_path):
    pcm, clip_scores = recording(knn)
    data = pcm.astype("<i2").tobytes()
    chunks = [data[i : i + 3001] for i in range(0, len(data), 3001)]  # odd: splits samples
    db = tmp_path / "s.db"
    with serving(knn.run, db) as (url, app):
        messages = stream(url, "machine=bearing", chunks)
        service = app.state.asd.service
    start, *windows, end = messages
    assert start == {
        "event": "start",
        "window_samples": 16000,
        "hop_samples": 8000,
        "sample_rate": 16000,
    }
    # 3 s of audio, 1-s windows (the training clips' length), hop 0.5 s: 5 windows.
    assert [w["window"] for w in windows] == [0, 1, 2, 3, 4]
    assert [w["start_s"] for w in windows] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert end == {"event": "end", "windows": 5}
    # Windows that are exactly a clip score as `asd score` scored that clip.
    for w, expected in zip(windows[::2], clip_scores, strict=True):
        assert w["score"] == pytest.approx(expected, abs=1e-5)
    # The others as the same samples scored directly.
    x = pcm.astype(np.float32) / 32768.0
    for w in windows[1::2]:
        i = int(w["start_s"] * 16000)
        direct = service.score_samples(x[i : i + 16000], 16000, file="d", machine="bearing")
        assert w["score"] == pytest.approx(direct.score, abs=1e-5)
        assert w["decision"] == direct.decision
    with History(db, readonly=True) as h:
        entries = h.query()
    assert [e.source for e in entries] == ["stream"] * 5
    assert [e.score for e in entries] == pytest.approx([w["score"] for w in windows])


def test_float_stereo_at_another_rate_is_mixed_down_and_resampled(knn, tmp_path):
    rate = 8000
    t = np.arange(int(2.2 * rate)) / rate
    left = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    right = (0.1 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    interleaved = np.stack([left, right], axis=1).astype("<f4").tobytes()
    chunks = [interleaved[i : i + 4096] for i in range(0, len(interleaved), 4096)]
    with serving(knn.run, tmp_path / "s.db") as (url, app):
        messages = stream(url, f"machine=fan&sample_rate={rate}&format=f32le&channels=2", chunks)
        service = app.state.asd.service
    windows = [m for m in messages if "score" in m]
    assert len(windows) == 3  # 2.2 s: windows at 0, 0.5, 1.0 s (1.5 s would end past 2.2)
    assert all("8 kHz -> 16 kHz" in w["warning"] for w in windows)
    mono = (left + right) / 2
    direct = service.score_samples(
        mono[rate // 2 : rate // 2 + rate], rate, file="d", machine="fan"
    )
    assert windows[1]["score"] == pytest.approx(direct.score, abs=1e-5)


def test_a_stream_shorter_than_a_window_is_scored_whole_at_the_end(knn, tmp_path):
    pcm, _ = recording(knn)
    short = pcm[:12000].astype("<i2").tobytes()  # 0.75 s < the 1-s window
    with serving(knn.run, tmp_path / "s.db") as (url, app):
        messages = stream(url, "machine=bearing", [short])
        direct = app.state.asd.service.score_samples(
            pcm[:12000].astype(np.float32) / 32768.0, 16000, file="d", machine="bearing"
        )
    assert messages[-1] == {"event": "end", "windows": 1}
    assert messages[1]["score"] == pytest.approx(direct.score, abs=1e-5)


def test_unknown_machine_and_missing_token_are_refused_with_a_reason(knn, tmp_path):
    with serving(knn.run, tmp_path / "s.db") as (url, _):
        messages = stream(url, "machine=toaster", [])
    assert messages[0]["error"] == "unknown_machine"
    assert messages[0]["known_machines"] == ["bearing", "fan"]
    with serving(knn.run, tmp_path / "t.db", token="tok") as (url, _):
        assert stream(url, "machine=fan", [])[0]["error"] == "unauthorized"
        ok = stream(url, "machine=fan&token=tok", [])
        assert ok[0]["event"] == "start" and ok[-1] == {"event": "end", "windows": 0}


def test_stream_windows_split_bytes_at_any_boundary():
    """The framing alone: samples split across messages, channels averaged, hop respected."""
    x = np.arange(40, dtype="<i2").reshape(-1, 2)  # 20 stereo frames
    data = x.tobytes()
    w = StreamWindows("s16le", channels=2, window=8, hop=4)
    got = []
    for i in range(0, len(data), 7):  # 7 bytes: never a whole frame
        got.extend(w.feed(data[i : i + 7]))
    mono = x.astype(np.float32).mean(axis=1) / 32768.0
    assert [s for s, _ in got] == [0, 4, 8, 12]
    for start, samples in got:
        np.testing.assert_allclose(samples, mono[start : start + 8], rtol=1e-6)
    assert w.tail() is None

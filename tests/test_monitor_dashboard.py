"""The dashboard: the panel geometry on hand-made histories, and the page in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from monitor_support import serving, trained_run

from asdcli.monitor.dashboard import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, build_panel
from asdcli.monitor.history import Entry

CHROMIUM = Path("/usr/bin/chromium")


def entry(t: float, score: float, threshold: float | None = 2.0, decision: int = 0) -> Entry:
    return Entry(
        time=t,
        source="serve",
        file=f"c{t}.wav",
        machine="fan",
        section="00",
        score=score,
        threshold=threshold,
        decision=decision,
        run="r",
        detector="knn",
    )


def test_panel_maps_time_to_x_and_score_to_y():
    entries = [entry(100, 1.0), entry(110, 3.0, decision=1), entry(130, 2.0)]
    p = build_panel("fan", entries, (1, 3))
    xs = [q.x for q in p.points]
    ys = {q.score: q.y for q in p.points}
    assert xs[0] == LEFT and xs[-1] == WIDTH - RIGHT
    assert xs[1] == pytest.approx(LEFT + (WIDTH - LEFT - RIGHT) / 3, abs=0.01)  # 10 of 30 s
    assert ys[3.0] < ys[2.0] < ys[1.0]  # higher scores are drawn higher up
    assert min(ys.values()) >= TOP and max(ys.values()) <= HEIGHT - BOTTOM
    # The threshold (2.0) is drawn at the height of the point scoring 2.0.
    threshold_ys = [float(xy.split(",")[1]) for xy in p.threshold_path.split()]
    assert threshold_ys == pytest.approx([ys[2.0]] * 3, abs=0.01)
    assert [q.decision for q in p.points] == [0, 1, 0]
    assert [e.time for e in p.latest] == [130, 110, 100]  # newest first
    assert (p.anomalies_24h, p.results_24h) == (1, 3)
    assert p.state == "normal"  # the latest decision


def test_panel_edge_cases():
    empty = build_panel("fan", [], (0, 0))
    assert empty.points == [] and empty.threshold_path == "" and empty.state == "normal"
    one = build_panel("fan", [entry(5, 7.0, threshold=None, decision=1)], (1, 1))
    assert len(one.points) == 1 and one.threshold_path == "" and one.state == "anomalous"
    assert TOP <= one.points[0].y <= HEIGHT - BOTTOM
    same_time = build_panel("fan", [entry(5, 1.0), entry(5, 2.0), entry(5, 3.0)], (0, 3))
    assert len({q.x for q in same_time.points}) == 3  # spread, not stacked


@pytest.fixture(scope="module")
def knn():
    return trained_run("knn")


def post_clips(url: str, knn, token: str | None = None, n: int | None = None) -> dict:
    """The run's test clips (the first ``n``), posted once each; the answers by machine."""
    answers: dict[str, list[dict]] = {}
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        for row in knn.scores[:n]:
            r = client.post(
                "/v1/score",
                files={
                    "file": (f"{row['machine']}/test/{row['file']}", Path(row["path"]).read_bytes())
                },
            )
            assert r.status_code == 200
            answers.setdefault(row["machine"], []).append(r.json())
    return answers


def test_dashboard_html_has_a_panel_per_machine(knn, tmp_path):
    with serving(knn.run, tmp_path / "d.db", refresh_seconds=7) as (url, _):
        empty = httpx.get(url).text
        assert empty.count('class="panel"') == 2 and "No results yet" in empty
        post_clips(url, knn)
        page = httpx.get(url)
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<meta http-equiv="refresh" content="7">' in html
    assert 'data-machine="bearing"' in html and 'data-machine="fan"' in html
    assert html.count('<circle class="point') == len(knn.scores)
    # Self-contained: no script, no stylesheet or image fetched from anywhere.
    assert "<script" not in html and "<link" not in html and " src=" not in html


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no headless Chromium at {CHROMIUM} (apt-get install -y chromium)",
)
def test_dashboard_in_headless_chromium(knn, tmp_path):
    from playwright.sync_api import sync_playwright

    with serving(knn.run, tmp_path / "b.db", token="tok", refresh_seconds=2) as (url, _):
        answers = post_clips(url, knn, token="tok")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu"],
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                requests: list[str] = []
                page.on("request", lambda r: requests.append(r.url))
                response = page.goto(f"{url}/?token=tok")
                assert response is not None and response.status == 200
                assert page.title() == f"asd monitor: {knn.run.name}"
                panels = page.locator("section.panel")
                assert panels.count() == 2
                for machine, results in answers.items():
                    panel = page.locator(f'section.panel[data-machine="{machine}"]')
                    assert panel.locator("svg.chart").is_visible()
                    points = panel.locator("circle.point")
                    assert points.count() == len(results)
                    scores = [
                        float(points.nth(i).get_attribute("data-score") or "nan")
                        for i in range(points.count())
                    ]
                    assert scores == pytest.approx([r["score"] for r in results])
                    anomalous = sum(r["decision"] for r in results)
                    assert panel.locator("circle.point.anomaly").count() == anomalous
                    assert panel.locator(".anomalies-24h").inner_text() == str(anomalous)
                    assert panel.locator("polyline.threshold").count() == 1
                    assert panel.locator("table.latest tbody tr").count() == len(results)
                    box = points.first.bounding_box()
                    assert box is not None and box["width"] > 0  # drawn, not just present
                refresh = page.locator('meta[http-equiv="refresh"]').get_attribute("content")
                assert refresh == "2"
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
                assert all(r.startswith(url) for r in requests)  # nothing from elsewhere
                # The page reloads itself, showing what arrived meanwhile.
                before = panels.first.locator("circle.point").count()
                post_clips(url, knn, token="tok", n=1)  # a bearing clip: the first panel
                page.wait_for_function(
                    "n => document.querySelector('section.panel')"
                    ".querySelectorAll('circle.point').length > n",
                    arg=before,
                    timeout=30_000,
                )
            finally:
                browser.close()

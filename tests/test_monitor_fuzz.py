"""Schemathesis against `asd serve`'s own OpenAPI spec, on a live server: no 5xx for any input,
valid or not, and every answer as the spec documents it."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from monitor_support import serving, trained_run
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    db = tmp_path_factory.mktemp("fuzz") / "monitor.db"
    with serving(trained_run("knn").run, db, max_upload_bytes=100_000, token=TOKEN) as (url, _):
        yield url


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
def test_no_input_makes_the_server_fail(live, mode):
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json", headers=AUTH)
    assert {"/v1/score", "/v1/score/batch", "/v1/models", "/healthz", "/metrics", "/"} <= set(
        schema
    )
    seen: set[str] = set()

    # Few examples: every operation is drawn a few times, which keeps the suite fast.
    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case):
        seen.add(case.operation.label)
        # With the token, to reach the routes; schemathesis also checks that a wrong one
        # is refused.
        # Not positive_data_acceptance: a WAV is binary to the schema, so schema-valid bytes
        # are mostly not audio, which is refused (415/422) as it should be. Not
        # negative_data_rejection: unknown query parameters are ignored, as HTTP APIs do.
        response = case.call_and_validate(
            headers=AUTH, excluded_checks=[positive_data_acceptance, negative_data_rejection]
        )
        assert response.status_code < 500, (case.operation.label, response.text)

    check()
    assert len(seen) >= 4  # most operations were tried
    assert httpx.get(f"{live}/healthz", timeout=10).status_code == 200

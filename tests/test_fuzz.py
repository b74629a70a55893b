"""Bad input: requests generated from the OpenAPI schema (schemathesis), valid and invalid, against the API served
over a real socket with real PostgreSQL and Temporal. No answer may be a 5xx, and every error must be JSON in the
stable shape `{code: str, message: str}`.

The two SSE streams (`/v1/jobs/{jobId}/events`, `/v1/canvases/{workflowId}/events`) are left out of the generated
run: a stream that is found answers 200 and stays open, which a generic request would wait on forever. Their error
answers are checked below, with the inputs that used to break them.

`FUZZ_MAX_EXAMPLES` sets the examples per operation (25 by default, bounded for `make test`); the examples are
derandomized, so a run is repeatable and a failure reproduces.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.main import create_app
from core.config import Settings
from tests.fakes.server import free_port
from tests.fixtures.drills import api_process

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
STREAMING_PATHS = r"/events$"
REQUEST_TIMEOUT_SECONDS = 10
API_KEY = "fuzz-api-key"
# Generated requests carry the key, so they reach the routes rather than stop at the key check.
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
async def fuzzed_api(
    database_url: str, temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """The API as its own process. Jobs it starts wait on a task queue no worker polls: nothing calls out."""
    fuzz_settings = Settings(
        _env_file=None,
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal_address,
        TASK_QUEUE=f"fuzz-{uuid.uuid4().hex[:10]}",
        APP_URL=f"http://127.0.0.1:{free_port()}",
        LOCAL_STORAGE_DIR=Path(tmp_path_factory.mktemp("fuzz")) / "files",
        POLLINATIONS_ENABLED=False,
        API_KEYS=[API_KEY],
        DATABASE_POOL_SIZE=5,
    )
    async with api_process(fuzz_settings) as api:
        yield api.base_url


def app_schema() -> Any:
    """The app's own OpenAPI document; building it needs no database or Temporal (the lifespan does not run)."""
    document = create_app(Settings(_env_file=None)).openapi()
    return schemathesis.openapi.from_dict(document).exclude(path_regex=STREAMING_PATHS)


schema = app_schema()


def error_shape_problems(body: Any) -> list[str]:
    """What is wrong with an error body; empty when it is `{code: str, message: str, ...}`."""
    if not isinstance(body, dict):
        return [f"the body is {type(body).__name__}, not an object"]
    return [f"`{name}` is not a string" for name in ("code", "message") if not isinstance(body.get(name), str)]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_no_server_errors_and_stable_error_bodies(case: Any, fuzzed_api: str) -> None:
    response = case.call(base_url=fuzzed_api, headers=AUTHORIZED, timeout=REQUEST_TIMEOUT_SECONDS)
    reproduce = case.as_curl_command()
    assert response.status_code < 500, f"{response.status_code} {response.text[:500]}\n{reproduce}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            pytest.fail(f"{response.status_code} error is not JSON: {response.text[:500]}\n{reproduce}")
        problems = error_shape_problems(body)
        assert not problems, f"{response.status_code} {problems}: {response.text[:500]}\n{reproduce}"


NODE = {"workflowId": "c1", "nodeId": "n1"}
NUL_CASES = [
    ("PUT", "/v1/canvases/c1/nodes/n1", {"data": {"\u0000": None}}),
    ("PUT", "/v1/canvases/c1/nodes/n1", {"type": "image\u0000"}),
    ("POST", "/v1/jobs", {"workflowId": "c1", "nodeId": "n1", "promptSpec": {"basePrompt": "a\u0000b"}}),
    (
        "POST",
        "/v1/jobs",
        {"workflowId": "c1", "nodeId": "n1", "promptSpec": {"basePrompt": "a"}, "metadata": {"k": "\u0000"}},
    ),
    ("GET", "/v1/jobs/%00", None),
    ("GET", "/v1/jobs?workflowId=%00", None),
    ("GET", "/v1/stats?workflowId=%00", None),
    ("POST", "/v1/jobs/%00/cancel", None),
    ("POST", "/v1/jobs/%00/retry", None),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_CASES)
def test_nul_characters_are_refused_as_invalid(fuzzed_api: str, method: str, path: str, body: Any) -> None:
    """PostgreSQL cannot hold U+0000 in text or JSON; the fuzzer found that it used to answer 500."""
    response = httpx.request(method, fuzzed_api + path, json=body, headers=AUTHORIZED, timeout=REQUEST_TIMEOUT_SECONDS)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    assert "NUL" in response.json()["message"]


def test_canvas_ids_outside_the_id_alphabet_are_refused(fuzzed_api: str) -> None:
    """Canvas ids become storage keys: a NUL (or any character outside letters, digits and . _ -) is refused."""
    response = httpx.get(fuzzed_api + "/v1/canvases/%00/nodes", headers=AUTHORIZED, timeout=REQUEST_TIMEOUT_SECONDS)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    assert response.json()["details"][0]["field"] == "path.workflowId"


SSE_ERROR_CASES = [
    ("/v1/jobs/no-such-job/events", {}, 404),
    ("/v1/jobs/no-such-job/events", {"Last-Event-ID": "abc"}, 400),
    # U+00B2 passes str.isdigit() but not int(); it used to answer 500.
    ("/v1/jobs/no-such-job/events", {"Last-Event-ID": "\u00b2"}, 400),
    # Past PostgreSQL's bigint: the stream used to start (200) and then break.
    ("/v1/jobs/no-such-job/events", {"Last-Event-ID": "99999999999999999999999"}, 400),
    ("/v1/canvases/c1/events", {"Last-Event-ID": "\u00b2"}, 400),
    ("/v1/canvases/c1/events", {"Last-Event-ID": "99999999999999999999999"}, 400),
    ("/v1/jobs/%00/events", {}, 422),
    ("/v1/canvases/%00/events", {}, 422),
]


@pytest.mark.parametrize(("path", "headers", "status"), SSE_ERROR_CASES)
def test_event_streams_refuse_bad_input_before_streaming(
    fuzzed_api: str, path: str, headers: dict[str, str], status: int
) -> None:
    encoded = {name: value.encode("latin-1") for name, value in {**AUTHORIZED, **headers}.items()}
    response = httpx.get(fuzzed_api + path, headers=encoded, timeout=REQUEST_TIMEOUT_SECONDS)
    assert response.status_code == status, response.text
    assert not error_shape_problems(response.json())

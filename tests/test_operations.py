"""What an operator sees and bounds: the Prometheus metrics the API and the workers export (ours and the Temporal
SDK's), and BUDGET_USD_PER_DAY, against real Temporal, PostgreSQL and the provider fakes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from core.config import Settings
from core.db import create_engine, session_factory
from core.logs import JsonFormatter
from store.budget import seconds_until_utc_midnight
from store.budget import spent_today as spent_in
from tests.fakes.app import FakeProviders
from tests.fakes.openai import OPENAI
from tests.fakes.server import free_port
from tests.fixtures.drills import AppProcess, settings_environment, wait_healthy, worker_process
from tests.fixtures.stack import Stack, make_settings, running_stack, was_cancelled
from tests.helpers import eventually

Samples = Counter[tuple[str, frozenset[tuple[str, str]]]]
ROOT = Path(__file__).resolve().parent.parent
METRIC_NAME = re.compile(r"\b(?:imagejobs|temporal)_[a-z_]+\b")
FLARE = {"provider": "openai", "model": "gpt-image-2.5-flare"}
LOW = {"quality": "low"}  # the catalog's low square image: $0.006
LOW_PRICE = 0.006


def parse(exposition: str) -> Samples:
    samples: Samples = Counter()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] += sample.value
    return samples


async def scrape(stack: Stack) -> Samples:
    return parse((await stack.api.get("/metrics")).text)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    """The change of every series of `name` whose labels include `labels`, summed."""
    wanted = set(labels.items())
    return sum(value - before.get(key, 0) for key, value in after.items() if key[0] == name and wanted <= set(key[1]))


async def test_the_scraped_counters_show_exactly_the_outcomes_and_error_classes(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    throttled = {"error": {"message": "Rate limit reached.", "type": "requests", "param": None, "code": None}}
    async with running_stack(make_settings(provider_settings, LOCAL_PROVIDER_DELAY_MS=200), temporal_client) as stack:
        since = datetime.now(UTC).isoformat()
        before = await scrape(stack)
        local = [await stack.start(f"picture {index}") for index in range(5)]
        fake_providers.script.queue(OPENAI, ("status", 429, throttled, {"retry-after-ms": "100"}))
        retried = await stack.start("after a 429", **FLARE, promptSpec=LOW)
        await stack.wait(retried["jobId"])
        fake_providers.script.queue(OPENAI, "moderation")
        refused = await stack.start("refused", **FLARE)
        records = [await stack.wait(job["jobId"]) for job in (*local, retried, refused)]
    # The cancelled job's provider takes long enough that the cancellation always lands before anything is stored.
    async with running_stack(
        make_settings(provider_settings, LOCAL_PROVIDER_DELAY_MS=20_000), temporal_client
    ) as stack:
        slow = await make_cancelled(stack)
        after = await scrape(stack)
        stats = (await stack.api.get("/v1/stats", params={"since": since})).json()
    assert [record["status"] for record in records] == ["completed"] * 6 + ["failed"]
    assert was_cancelled(slow)
    finished = "imagejobs_jobs_finished_total"
    assert delta(after, before, finished, provider="local", outcome="completed") == 5
    assert delta(after, before, finished, provider="local", outcome="cancelled") == 1
    assert delta(after, before, finished, **FLARE, outcome="completed") == 1
    assert delta(after, before, finished, **FLARE, outcome="failed") == 1
    assert delta(after, before, finished) == 8
    assert delta(after, before, "imagejobs_jobs_started_total") == 8
    errors = "imagejobs_provider_errors_total"
    assert delta(after, before, errors, provider="openai", **{"class": "rate_limited"}) == 1
    assert delta(after, before, errors, provider="openai", **{"class": "content_policy"}) == 1
    assert delta(after, before, errors) == 2
    assert delta(after, before, "imagejobs_job_duration_seconds_count", phase="total") == 8
    assert delta(after, before, "imagejobs_job_duration_seconds_count", phase="queued") == 6
    for phase in ("generating", "storing", "node_update"):  # the completed jobs' phases
        assert delta(after, before, "imagejobs_job_duration_seconds_count", phase=phase) == 6, phase
    assert delta(after, before, "imagejobs_job_duration_seconds_sum", phase="storing") > 0
    assert delta(after, before, "imagejobs_cost_usd_total", **FLARE) > 0
    assert delta(after, before, "imagejobs_storage_uploads_total", result="stored") == 6
    assert delta(after, before, "imagejobs_storage_upload_bytes_total") > 0
    # The same jobs, as GET /v1/stats reports them per provider and model.
    rows = {(row["provider"], row["model"]): row for row in stats["providers"]}
    local_row, flare_row = rows[("local", "procedural")], rows[("openai", FLARE["model"])]
    assert (local_row["completed"], local_row["failed"], local_row["cancelled"]) == (5, 0, 1)
    assert (flare_row["completed"], flare_row["failed"], flare_row["rateLimited"]) == (1, 1, 1)
    assert local_row["costUsd"] == 0 and flare_row["costUsd"] > 0
    assert 0 < local_row["p50Seconds"] <= local_row["p95Seconds"] and local_row["pollTimeouts"] == 0


async def make_cancelled(stack: Stack) -> dict[str, Any]:
    """A local job cancelled while its provider works."""
    started = await stack.start("too slow", promptSpec={"size": "64x64"})
    await stack.wait(started["jobId"], statuses=("running",))
    assert (await stack.api.post(f"/v1/jobs/{started['jobId']}/cancel")).status_code == 202
    return await stack.wait(started["jobId"])


async def test_an_image_refused_for_carrying_base64_is_counted(stack: Stack) -> None:
    before = await scrape(stack)
    body = {"workflowId": "c1", "nodeId": "n1", "provider": "local", "promptSpec": {"basePrompt": "x"}}
    refused = await stack.api.post("/v1/jobs", json=body | {"metadata": {"thumb": "data:image/png;base64," + "A" * 64}})
    after = await scrape(stack)
    assert refused.status_code == 422
    assert delta(after, before, "imagejobs_base64_refusals_total") == 1


async def test_the_time_to_answer_is_measured_per_route_template_never_per_id(stack: Stack) -> None:
    started = await stack.start("timed")
    before = await scrape(stack)
    assert (await stack.api.get(f"/v1/jobs/{started['jobId']}")).status_code == 200
    assert (await stack.api.get("/v1/jobs/job_nothing_here")).status_code == 404
    assert (await stack.api.get("/no/such/page/" + uuid.uuid4().hex)).status_code == 404
    after = await scrape(stack)

    name = "imagejobs_http_request_duration_seconds_count"
    assert delta(after, before, name, method="GET", route="/v1/jobs/{jobId}", status="200") == 1
    assert delta(after, before, name, method="GET", route="/v1/jobs/{jobId}", status="404") == 1
    assert delta(after, before, name, route="other", status="404") == 1
    routes = {dict(labels)["route"] for (sample, labels) in after if sample == name}
    assert not any(started["jobId"] in route for route in routes), routes


async def test_a_worker_serves_its_metrics_and_the_sdks_and_the_deploy_files_name_only_exported_ones(
    stack_settings: Settings, temporal_client: Client
) -> None:
    port = free_port()
    settings = make_settings(
        stack_settings, WORKER_METRICS_PORT=port, WORKER_METRICS_HOST="127.0.0.1", LOCAL_PROVIDER_DELAY_MS=0
    )
    async with running_stack(settings, temporal_client, workers=False) as stack:
        with worker_process(settings):
            record = await stack.wait((await stack.start("served by the worker process"))["jobId"], timeout=60)
            exposition = await read_when_up(f"http://127.0.0.1:{port}/metrics")
    assert record["status"] == "completed"
    samples = {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}
    assert any(name.startswith("temporal_") and name.endswith("_total") for name in samples), sorted(samples)[:20]
    assert "imagejobs_jobs_finished_total" in samples and "imagejobs_handoff_backlog" in samples
    assert "imagejobs_jobs_waiting_for_slot" in samples
    exported = samples | declared_sample_names()
    named = deploy_metric_names()
    assert {name for name in named if name.startswith("imagejobs_")}, "the deploy files name none of our metrics"
    assert named <= exported, f"named but not exported: {sorted(named - exported)}"


def declared_sample_names() -> set[str]:
    """Every sample name our declared metrics can export, whether or not one was observed yet."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("imagejobs_")
        for suffix in suffixes.get(family.type, ("",))
    }


def deploy_metric_names() -> set[str]:
    """The metric names the Grafana dashboard's queries and the alert rules use."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/imagejobs.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    queries += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return {name for query in queries for name in METRIC_NAME.findall(query)}


async def read_when_up(url: str) -> str:
    """The worker's exposition once it serves, and once the SDK has polled (its first metrics exist)."""
    found = ""

    async def serving_sdk_metrics() -> bool:
        nonlocal found
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                found = (await http.get(url)).text
        except httpx.TransportError:
            return False
        return "temporal_" in found

    await eventually(serving_sdk_metrics, timeout=60, what="the worker's metrics with the SDK's")
    return found


# --- The budget ----------------------------------------------------------------------------------------------


async def spent_today(settings: Settings) -> float:
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            return await spent_in(session)
    finally:
        await engine.dispose()


async def post_job(stack: Stack, node: str, **fields: Any) -> httpx.Response:
    body = {"workflowId": "canvas-budget", "nodeId": node, "promptSpec": {"basePrompt": "a lighthouse", **LOW}}
    return await stack.api.post("/v1/jobs", json=body | fields)


async def test_a_budget_of_one_and_a_half_images_admits_one_refuses_the_next_and_lets_free_jobs_run(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    # The database is shared with earlier tests: the day's spend so far is part of the day's budget.
    budget = await spent_today(provider_settings) + 1.5 * LOW_PRICE
    settings = make_settings(provider_settings, BUDGET_USD_PER_DAY=budget)
    async with running_stack(settings, temporal_client) as stack:
        first = await post_job(stack, "n1", **FLARE)
        first_record = await stack.wait(first.json()["jobId"])
        second = await post_job(stack, "n2", **FLARE)
        free = await post_job(stack, "n3", provider="local")
        free_record = await stack.wait(free.json()["jobId"])
    assert first.status_code == 202 and first_record["status"] == "completed"
    assert second.status_code == 429, second.text
    assert second.json()["code"] == "budget_exceeded"
    assert f"${budget:.2f}" in second.json()["message"]
    assert 0 < int(second.headers["Retry-After"]) <= seconds_until_utc_midnight() + 5
    assert free_record["status"] == "completed"
    assert len(fake_providers.requests("POST", "/v1/images/generations")) == 1


async def test_concurrent_starts_cannot_overshoot_the_budget_and_a_canvas_run_is_checked_whole(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    budget = await spent_today(provider_settings) + 3.5 * LOW_PRICE
    settings = make_settings(provider_settings, BUDGET_USD_PER_DAY=budget)
    async with running_stack(settings, temporal_client, workers=False) as stack:
        answers = await asyncio.gather(*(post_job(stack, f"race-{index}", **FLARE) for index in range(10)))
        node = {"type": "image_generation", "data": {"prompt": "a ship", "provider": "openai", "model": FLARE["model"]}}
        board = {"nodes": [{"id": "s1", "position": {"x": 0, "y": 0}, **node}], "edges": []}
        assert (await stack.api.put("/v1/canvases/canvas-budget-run", json=board)).status_code == 200
        run = await stack.api.post("/v1/canvases/canvas-budget-run/runs", json={})
    assert sorted(answer.status_code for answer in answers) == [202] * 3 + [429] * 7
    assert run.status_code == 429 and run.json()["code"] == "budget_exceeded", run.text


async def test_a_tenants_budget_holds_its_own_starts_and_no_one_elses(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    admin = {"Authorization": "Bearer budget-admin"}
    settings = make_settings(provider_settings, ADMIN_API_KEY="budget-admin")
    async with running_stack(settings, temporal_client, workers=False) as stack:
        keys = []
        for name, budget in (("thrifty", 1.5 * LOW_PRICE), ("unlimited", None)):
            tenant = (await stack.api.post("/v1/tenants", json={"name": name}, headers=admin)).json()
            await stack.api.patch(f"/v1/tenants/{tenant['id']}", json={"budgetUsdPerDay": budget}, headers=admin)
            key = (await stack.api.post(f"/v1/tenants/{tenant['id']}/keys", headers=admin)).json()["key"]
            keys.append({"Authorization": f"Bearer {key}"})
        thrifty, unlimited = keys
        stack.api.headers.update(thrifty)
        first, second = await post_job(stack, "n1", **FLARE), await post_job(stack, "n2", **FLARE)
        stack.api.headers.update(unlimited)
        others = [await post_job(stack, f"o{index}", **FLARE) for index in range(3)]
    assert first.status_code == 202, first.text
    assert (second.status_code, second.json()["code"]) == (429, "budget_exceeded")
    assert "the tenant's budgetUsdPerDay" in second.json()["message"]
    assert [other.status_code for other in others] == [202, 202, 202], "one tenant's budget held another's starts"


def test_seconds_until_utc_midnight_counts_to_the_next_day() -> None:
    assert seconds_until_utc_midnight(datetime(2026, 12, 6, 23, 59, 0, tzinfo=UTC)) == 60
    assert seconds_until_utc_midnight(datetime(2026, 12, 6, 0, 0, 0, tzinfo=UTC)) == 86400


# --- Structured logs -----------------------------------------------------------------------------------------


async def test_with_log_format_json_every_line_is_json_and_a_jobs_lines_carry_its_id(
    provider_settings: Settings, fake_providers: FakeProviders, tmp_path: Path
) -> None:
    throttled = {"error": {"message": "Rate limit reached.", "type": "requests", "param": None, "code": None}}
    fake_providers.script.queue(OPENAI, ("status", 429, throttled, {"retry-after-ms": "100"}))
    settings = make_settings(provider_settings, LOG_FORMAT="json", LOG_LEVEL="INFO", LOCAL_PROVIDER_DELAY_MS=100)
    environment = settings_environment(settings)
    port = settings.app_url.rsplit(":", 1)[1]
    api = AppProcess(["cli", "api", "--host", "127.0.0.1", "--port", port], environment, output=tmp_path / "api.log")
    worker = AppProcess(["worker"], environment, output=tmp_path / "worker.log")
    api.start()
    worker.start()
    try:
        await wait_healthy(settings.app_url)
        async with httpx.AsyncClient(base_url=settings.app_url, timeout=30) as http:
            body = {"workflowId": "canvas-logs", "nodeId": "n1", "promptSpec": {"basePrompt": "a lighthouse"}}
            local = await http.post("/v1/jobs", json=body | {"provider": "local"}, headers={"X-Request-ID": "req-42"})
            retried = await http.post("/v1/jobs", json=body | {"nodeId": "n2", **FLARE})
            jobs = [local.json()["jobId"], retried.json()["jobId"]]

            async def ended() -> bool:
                statuses = [(await http.get(f"/v1/jobs/{job}")).json()["status"] for job in jobs]
                return all(status == "completed" for status in statuses)

            await eventually(ended, timeout=60, what="both jobs to complete")
    finally:
        api.stop()
        worker.stop()
    lines = [line for name in ("api.log", "worker.log") for line in (tmp_path / name).read_text().splitlines() if line]
    records = [json.loads(line) for line in lines]  # every line parses, or this fails naming it
    assert local.headers["X-Request-ID"] == "req-42" and len(retried.headers["X-Request-ID"]) == 32
    assert any(record.get("requestId") == "req-42" for record in records), "the request's lines carry its id"
    assert any(record.get("jobId") == jobs[0] for record in records), "the local job's own (access) line"
    worker_lines = [record for record in records if record.get("jobId") == jobs[1] and record["logger"] == "httpx"]
    assert len(worker_lines) == 2 and all(record["provider"] == "openai" for record in worker_lines)
    retry_lines = [record for record in records if record.get("errorClass") == "ProviderUnavailable"]
    assert retry_lines and all("exception" not in record for record in retry_lines), retry_lines
    assert all(record["jobId"] == jobs[1] for record in retry_lines)


def test_a_log_line_keeps_a_files_path_and_hides_a_long_token() -> None:
    token = "A" * 80
    path = "/files/images/ops-demo/job_db87d56db62c4693ae9d1159cb6b38f9.png"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, f"GET {path} then {token}", None, None)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == f"GET {path} then [redacted]"

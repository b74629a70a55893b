"""Rows written before a migration read correctly after it: a job from before the contract change (0003), and a
canvas run from before its columns were renamed (0015)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from core.db import libpq_url, run_migrations, session_factory
from models.schemas import ImageJobRecord, ImageProgressEvent
from models.vocabulary import NodeRunState
from store import canvas_nodes, canvas_runs, run_events, runs


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """An empty database on the test server, dropped afterwards."""
    name = f"migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    head, _, tail = database_url.partition("?")
    yield f"{head.rsplit('/', 1)[0]}/{name}?{tail}"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


OLD_PAYLOAD = {"imageUrl": "http://h/files/a.png", "imageUrls": ["http://h/files/a.png"], "progress": 1.0}


async def test_a_job_recorded_before_0003_reads_in_the_new_shapes(fresh_database: str) -> None:
    run_migrations(fresh_database, "0002")
    with psycopg.connect(libpq_url(fresh_database), autocommit=True) as old:
        old.execute(
            "INSERT INTO runs (id, kind, subject_id, node_id, status, processor, request, payload, started_at,"
            " finished_at) VALUES ('job_old', 'image_gen', 'canvas-old', 'n1', 'completed', 'openai:dall-e-3',"
            " %s, %s, now(), now())",
            (json.dumps({"promptSpec": {"prompt": "an old job"}, "metadata": {"k": 1}}), json.dumps(OLD_PAYLOAD)),
        )
        old.execute(
            "INSERT INTO run_events (run_id, kind, payload) VALUES ('job_old', 'progress', %s)",
            (json.dumps({"progress": 0.45}),),
        )
        old.execute(
            "INSERT INTO workflow_nodes (workflow_id, id, node_type, node_data)"
            " VALUES ('canvas-old', 'n1', 'image', %s)",
            (json.dumps({"status": "completed", "progress": 1.0}),),
        )
    run_migrations(fresh_database, "head")

    engine = create_async_engine(fresh_database)
    try:
        async with session_factory(engine)() as session:
            run = await runs.get_run(session, job_id="job_old")
            assert run is not None
            record = ImageJobRecord.from_run(run)
            (event,) = await run_events.list_events(session, job_id="job_old")
            (node,) = await canvas_nodes.list_nodes(session, canvas_id="canvas-old")
    finally:
        await engine.dispose()
    assert (record.workflow_id, record.provider, record.model) == ("canvas-old", "openai", "dall-e-3")
    assert record.progress == 100 and record.image_url == "http://h/files/a.png"
    assert record.prompt_spec == {"prompt": "an old job"} and record.metadata == {"k": 1}
    assert record.started_at is not None
    progress = ImageProgressEvent.from_event(event)
    assert (progress.progress, progress.message) == (45, "45%")
    assert node.node_data["progress"] == 100


async def test_a_canvas_run_recorded_before_0015_reads_under_its_new_column_names(fresh_database: str) -> None:
    run_migrations(fresh_database, "0014")
    with psycopg.connect(libpq_url(fresh_database), autocommit=True) as old:
        old.execute("INSERT INTO canvas_runs (id, canvas_id, status) VALUES ('crun_old', 'canvas-old', 'completed')")
        for position, node in enumerate(["b", "a"]):  # stored out of id order, so the test sees `order` sort
            old.execute(
                "INSERT INTO canvas_run_nodes (run_id, node_id, canvas_id, position, state, content_hash)"
                " VALUES ('crun_old', %s, 'canvas-old', %s, 'completed', 'h')",
                (node, position),
            )
    run_migrations(fresh_database, "head")

    with psycopg.connect(libpq_url(fresh_database), autocommit=True) as listener:
        listener.execute("LISTEN imagejobs")
        listener.execute("UPDATE canvas_run_nodes SET version = version + 1 WHERE node_id = 'a'")
        notice = next(listener.notifies(timeout=5, stop_after=1))
    engine = create_async_engine(fresh_database)
    try:
        async with session_factory(engine)() as session:
            found = await canvas_runs.read_canvas_run(session, canvas_id="canvas-old", run_id="crun_old")
    finally:
        await engine.dispose()
    assert found is not None
    run, nodes = found
    assert run.status == "completed"
    assert [(node.canvas_run_id, node.node_id, node.order, node.state) for node, _job in nodes] == [
        ("crun_old", "b", 0, NodeRunState.COMPLETED),
        ("crun_old", "a", 1, NodeRunState.COMPLETED),
    ]
    assert json.loads(notice.payload) == {"kind": "canvas_run", "canvasId": "canvas-old", "canvasRunId": "crun_old"}

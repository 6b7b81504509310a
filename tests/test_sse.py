"""Server-Sent Events: the same events as the WebSocket, resumable with Last-Event-ID."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import sqlalchemy as sa

from livecode.config import Settings
from tests.utils import TIMEOUT, LiveServer, free_port, joined, outputs, run_server

SOURCE = "import time\nfor i in range(5):\n    print('n', i)\n    time.sleep(0.1)\n"


def read_events(
    server: LiveServer, execution_id: str, **headers: str
) -> list[tuple[str, dict[str, Any]]]:
    """Every (id, event) of the stream until `finished`."""
    events = []
    with httpx.stream(
        "GET", f"{server.url}/executions/{execution_id}/events", headers=headers, timeout=TIMEOUT
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            event = json.loads(fields["data"])
            assert fields["event"] == event["type"]
            events.append((fields["id"], event))
            fields = {}
            if event["type"] == "finished":
                break
    return events


def test_sse_streams_and_resumes(server: LiveServer) -> None:
    """An event stream gives a run's events as they happen, and resumes after Last-Event-ID."""
    with server.client() as client:
        execution_id = client.post(
            "/executions", json={"language": "python", "source_code": SOURCE}
        ).json()["execution_id"]
    streamed = read_events(server, execution_id)
    events = [event for _, event in streamed]
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "COMPLETED"
    assert joined(events, "stdout") == events[-1]["stdout"] == "".join(f"n {i}\n" for i in range(5))
    seqs = [e["seq"] for e in outputs(events)]
    assert seqs == list(range(1, len(seqs) + 1))
    # Resume after the second output, as a browser's EventSource does with Last-Event-ID.
    resumed = [event for _, event in read_events(server, execution_id, **{"Last-Event-ID": "2"})]
    assert [e["seq"] for e in outputs(resumed)] == seqs[2:]
    assert (
        joined(events[:0] + outputs(events)[:2], "stdout") + joined(resumed, "stdout")
        == events[-1]["stdout"]
    )


def test_an_event_source_that_saw_finished_gets_204(server: LiveServer) -> None:
    """EventSource reconnects by itself after the stream ends; it must not replay forever."""
    with server.client() as client:
        execution_id = client.post(
            "/executions?wait=true", json={"language": "python", "source_code": "print(1)"}
        ).json()["execution_id"]
    streamed = read_events(server, execution_id)
    last_id, finished = streamed[-1]
    assert finished["type"] == "finished" and last_id.endswith("-finished")
    again = httpx.get(
        f"{server.url}/executions/{execution_id}/events", headers={"Last-Event-ID": last_id}
    )
    assert again.status_code == 204


def test_sse_with_redis_down_is_503(distributed_server: LiveServer) -> None:
    """Both servers share one database; the second one's Redis is not there."""
    with distributed_server.client() as client:
        execution_id = client.post(
            "/executions?wait=true", json={"language": "python", "source_code": "print(1)"}
        ).json()["execution_id"]
    no_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(database_url=distributed_server.settings.database_url, redis_url=no_redis)
    with run_server(settings) as server_without_redis:
        answer = httpx.get(
            f"{server_without_redis.url}/executions/{execution_id}/events", timeout=TIMEOUT
        )
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "unavailable"
    assert int(answer.headers["Retry-After"]) >= 1


def test_a_run_refused_for_redis_is_not_left_queued(server_without_redis: LiveServer) -> None:
    """A run refused because Redis is down is stored FAILED, never left QUEUED."""
    source = f"print('{uuid.uuid4()}')"
    with server_without_redis.client() as client:
        refused = client.post("/executions", json={"language": "python", "source_code": source})
        assert refused.status_code == 503
    engine = sa.create_engine(server_without_redis.settings.database_url)
    with engine.connect() as connection:
        query = sa.text("SELECT status, reason FROM executions WHERE source_code = :source")
        statuses = [tuple(row) for row in connection.execute(query, {"source": source})]
    engine.dispose()
    assert statuses == [("FAILED", "internal_error")]


def test_sse_unknown_execution_is_404(server: LiveServer) -> None:
    """The event stream of an unknown execution is a 404."""
    answer = httpx.get(f"{server.url}/executions/00000000-0000-0000-0000-000000000000/events")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    bad = httpx.get(f"{server.url}/executions/x/events?since=-3")
    assert bad.status_code in (400, 404)

"""/metrics: what an operator's Prometheus reads from a server and from a worker process."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.utils import (
    TIMEOUT,
    LiveServer,
    distributed_env,
    free_port,
    own_database,
    own_redis,
    run_process,
    wait_until,
    wait_until_http_ok,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_server_counts_its_executions_sockets_and_queue(embedded_server: LiveServer) -> None:
    """After a run: the execution counted by language, status and reason; run time and sandbox
    overhead observed; the queue's depth read from the store; in Prometheus text."""
    with embedded_server.client() as client:
        ran = client.post(
            "/executions?wait=true", json={"language": "python", "source_code": "print(1)"}
        )
        assert ran.status_code == 200
        answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    done = ("language", "python"), ("reason", "exit"), ("status", "COMPLETED")
    assert found[("livecode_executions_total", done)] >= 1
    assert found[("livecode_executions_queued_total", (("language", "python"),))] >= 1
    assert found[("livecode_run_duration_seconds_count", (("language", "python"),))] >= 1
    assert found[("livecode_sandbox_overhead_seconds_count", (("language", "python"),))] >= 1
    assert found[("livecode_queued_executions", ())] >= 0
    for name in (
        "livecode_websocket_connections",
        "livecode_followers",
        "livecode_relay_lag_seconds_count",
        "livecode_queue_wait_seconds_count",
        "livecode_store_errors_total",
        "livecode_bus_errors_total",
    ):
        assert (name, ()) in found, name


def test_a_worker_serves_its_metrics_on_its_own_port() -> None:
    """LIVECODE_METRICS_PORT: a worker process's attempts, on a port of its own."""
    metrics_port, port = free_port(), free_port()
    with own_redis() as redis_server, own_database() as database:
        env = {**distributed_env(database, redis_server.url), "LIVECODE_PORT": str(port)}
        url = f"http://127.0.0.1:{port}"
        with run_process(["serve"], env, ready_url=f"{url}/health"):
            with run_process(["worker"], {**env, "LIVECODE_METRICS_PORT": str(metrics_port)}):
                wait_until_http_ok(f"{url}/health/workers")
                with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
                    ran = client.post(
                        "/executions?wait=true",
                        json={"language": "python", "source_code": "print(1)"},
                    )
                assert ran.status_code == 200

                def attempts() -> float:
                    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                    return samples(text).get(
                        ("livecode_execution_attempts_total", (("attempt", "1"),)), 0.0
                    )

                assert wait_until(attempts, "the worker counted its attempt") == 1

"""/metrics: what an operator's Prometheus reads from a server and from a worker process, and
that a tenant's key reads none of it."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from livecode.config import ConfigError, Settings
from tests.utils import (
    TIMEOUT,
    LiveServer,
    bearer,
    create_key,
    distributed_env,
    embedded_settings,
    free_port,
    own_database,
    own_redis,
    run_process,
    run_server,
    wait_until,
    wait_until_http_ok,
)

OPERATOR = "metrics-" + "o" * 24
# a proxy on this machine forwarding a request for someone elsewhere
FROM_ELSEWHERE = {"X-Forwarded-For": "203.0.113.7"}


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


def test_the_operator_token_reads_metrics_and_a_tenant_key_is_forbidden(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With LIVECODE_METRICS_TOKEN: its bearer gets the metrics; a tenant's key is 403 (it is
    a good key, for the tenant's own things only); no token, or a wrong one, 401."""
    settings = embedded_settings(tmp_path_factory, metrics_token=OPERATOR)
    key = create_key(settings.database_url, "alice")
    with run_server(settings) as server, server.client() as client:
        answer = client.get("/metrics", headers=bearer(OPERATOR))
        assert answer.status_code == 200 and "livecode_executions_total" in answer.text
        refused = client.get("/metrics", headers=bearer(key))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert "LIVECODE_METRICS_TOKEN" in refused.json()["error"]["message"]
        for headers in ({}, bearer(OPERATOR[:-1]), bearer("lc_" + "x" * 40)):
            answer = client.get("/metrics", headers=headers)
            assert answer.status_code == 401 and "livecode_" not in answer.text, headers
        # the operator's token is no tenant's key: it runs nothing
        assert client.get("/languages", headers=bearer(OPERATOR)).status_code == 401
        assert client.get("/languages", headers=bearer(key)).status_code == 200


def test_without_an_operator_token_metrics_answer_this_machine_only(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Keys but no LIVECODE_METRICS_TOKEN: a request from this machine without a key gets the
    metrics; one a proxy forwards for someone elsewhere is 401 naming the setting; a tenant's
    key is 403, from here too."""
    settings = embedded_settings(tmp_path_factory)
    key = create_key(settings.database_url, "alice")
    with run_server(settings) as server, server.client() as client:
        assert "livecode_executions_total" in client.get("/metrics").text
        elsewhere = client.get("/metrics", headers=FROM_ELSEWHERE)
        assert elsewhere.status_code == 401
        assert "LIVECODE_METRICS_TOKEN" in elsewhere.json()["error"]["message"]
        assert client.get("/metrics", headers=bearer(key)).status_code == 403


def test_without_keys_metrics_are_served_as_everything_is(
    embedded_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No keys, no operator token: /metrics as before, under the rules of a server without
    keys: this machine (a token sent anyway not checked), or everyone when allowed."""
    with embedded_server.client() as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/metrics", headers=bearer("lc_" + "q" * 40)).status_code == 200
        assert client.get("/metrics", headers=FROM_ELSEWHERE).status_code == 401
    settings = embedded_settings(tmp_path_factory, allow_anonymous=True)
    with run_server(settings) as server, server.client() as client:
        assert client.get("/metrics", headers=FROM_ELSEWHERE).status_code == 200


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"LIVECODE_METRICS_TOKEN": "short"}, "at least 16"),
        ({"LIVECODE_METRICS_TOKEN": OPERATOR, "LIVECODE_API_KEYS": OPERATOR}, "API_KEYS"),
    ],
)
def test_a_guessable_or_tenant_metrics_token_stops_the_process(
    environ: dict[str, str], says: str
) -> None:
    """A metrics token that could be guessed, or that is a tenant's key, is refused at start."""
    with pytest.raises(ConfigError, match=f"LIVECODE_METRICS_TOKEN.*{says}"):
        Settings.from_env(environ)


def test_a_worker_serves_its_metrics_on_its_own_port() -> None:
    """LIVECODE_METRICS_PORT: a worker process's attempts, on a port of its own, to the bearer
    of LIVECODE_METRICS_TOKEN only."""
    metrics_port, port = free_port(), free_port()
    with own_redis() as redis_server, own_database() as database:
        env = {
            **distributed_env(database, redis_server.url),
            "LIVECODE_PORT": str(port),
            "LIVECODE_METRICS_TOKEN": OPERATOR,
        }
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

                scrape = f"http://127.0.0.1:{metrics_port}/metrics"
                refused = httpx.get(scrape, headers=bearer(OPERATOR[:-1]))
                assert refused.status_code == 401 and "livecode_" not in refused.text

                def attempts() -> float:
                    text = httpx.get(scrape, headers=bearer(OPERATOR)).text
                    return samples(text).get(
                        ("livecode_execution_attempts_total", (("attempt", "1"),)), 0.0
                    )

                assert wait_until(attempts, "the worker counted its attempt") == 1

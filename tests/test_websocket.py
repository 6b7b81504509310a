"""The WebSocket protocol message by message, against real servers in both modes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.test_rest import LIMIT_SETTINGS
from tests.utils import (
    LiveServer,
    Socket,
    embedded_settings,
    joined,
    outputs,
    own_distributed_server,
    run_server,
    wait_final,
    ws_connect,
)

pytestmark = pytest.mark.anyio

LINES = "import time\nfor i in range(4):\n    print('line', i)\n    time.sleep(0.3)\n"
STREAMING = {
    "python": LINES,
    "javascript": "let i=0;const t=setInterval(()=>{console.log('line',i);if(++i==4)clearInterval(t)},300);",
    "c++": "#include <iostream>\n#include <thread>\n#include <chrono>\nint main(){for(int i=0;i<4;i++){std::cout<<\"line \"<<i<<'\\n';std::this_thread::sleep_for(std::chrono::milliseconds(300));}}",
}


async def create(ws: Socket, source: str, language: str = "python") -> dict:
    answer = await ws.request({"type": "create", "language": language, "source_code": source})
    assert answer["type"] == "created", answer
    return answer["session"]


async def answers_to(ws: Socket, message: dict) -> list[dict]:
    """The answers echoing a message's ref: none for a fine stdin, an error for a refused one."""
    await ws.send({**message, "ref": "m"})
    await ws.send({"type": "ping", "ref": "after"})
    answers = []
    while (event := await ws.recv()).get("ref") != "after":
        if event.get("ref") == "m":
            answers.append(event)
    return answers


async def run(ws: Socket, session_id: str, **options: object) -> str:
    answer = await ws.request({"type": "run", "session_id": session_id, **options})
    assert answer["type"] == "queued" and answer["status"] == "QUEUED", answer
    return answer["execution_id"]


async def test_run_streams_status_output_and_finished(server: LiveServer) -> None:
    """run -> queued (ref echoed), status events, output with seq 1..n, then finished."""
    async with ws_connect(server) as ws:
        session = await create(
            ws, "print('a')\nprint('é' * 3)\nimport sys; print('oops', file=sys.stderr)"
        )
        execution_id = await run(ws, session["id"])
        seen = await ws.until("finished", execution_id)
    statuses = [e["status"] for e in seen if e["type"] == "status"]
    assert statuses[:2] == ["QUEUED", "RUNNING"]
    chunks = outputs(seen)
    assert [e["seq"] for e in chunks] == list(range(1, len(chunks) + 1))
    finished = seen[-1]
    assert finished["status"] == "COMPLETED"
    assert joined(seen, "stdout") == finished["stdout"] == "a\n" + "é" * 3 + "\n"
    assert joined(seen, "stderr") == finished["stderr"] == "oops\n"
    with server.client() as client:
        stored = client.get(f"/executions/{execution_id}").json()
    assert stored["stdout"] == finished["stdout"] and stored["stderr"] == finished["stderr"]


@pytest.mark.parametrize("language", ["python", "javascript", "c++"])
async def test_output_arrives_line_by_line_without_flushing(
    server: LiveServer, language: str
) -> None:
    """A loop of plain print / console.log / cout << '\\n' with sleeps arrives as it is written."""
    async with ws_connect(server) as ws:
        session = await create(ws, STREAMING[language], language)
        await run(ws, session["id"])
        arrivals = []
        loop = asyncio.get_running_loop()
        while True:
            event = await ws.recv()
            if event["type"] == "output":
                arrivals.append((loop.time(), event["data"]))
            if event["type"] == "finished":
                break
    assert "".join(data for _, data in arrivals) == "".join(f"line {i}\n" for i in range(4))
    assert len(arrivals) == 4, arrivals
    gaps = [later[0] - earlier[0] for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert all(gap > 0.15 for gap in gaps), gaps


async def test_late_subscriber_gets_everything_once(server: LiveServer) -> None:
    """A socket that subscribes after the run finished gets the same events, with the same seq."""
    async with ws_connect(server) as ws:
        session = await create(ws, "for i in range(3000): print(i)")
        execution_id = await run(ws, session["id"])
        live = await ws.until("finished", execution_id)
    async with ws_connect(server) as late:
        await late.send({"type": "subscribe", "execution_id": execution_id})
        replayed = await late.until("finished", execution_id)
        await late.send({"type": "subscribe", "execution_id": execution_id, "since": 2})
        resumed = await late.until("finished", execution_id)
    assert [(e["seq"], e["data"]) for e in outputs(replayed)] == [
        (e["seq"], e["data"]) for e in outputs(live)
    ]
    assert joined(replayed, "stdout") == "".join(f"{i}\n" for i in range(3000))
    assert [e["seq"] for e in outputs(resumed)] == [e["seq"] for e in outputs(live)][2:]


async def test_reconnect_with_since_mid_run(server: LiveServer) -> None:
    """A socket that drops mid-run and resubscribes with `since` misses nothing, repeats nothing."""
    source = "import time\nfor i in range(8):\n    print('tick', i)\n    time.sleep(0.15)\n"
    async with ws_connect(server) as first:
        session = await create(first, source)
        execution_id = await run(first, session["id"])
        before = []
        while len(outputs(before)) < 2:
            before.append(await first.recv())
    last_seq = outputs(before)[-1]["seq"]
    async with ws_connect(server) as second:
        await second.send({"type": "subscribe", "execution_id": execution_id, "since": last_seq})
        after = await second.until("finished", execution_id)
    seqs = [e["seq"] for e in outputs(before) + outputs(after)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert joined(before, "stdout") + joined(after, "stdout") == after[-1]["stdout"]
    assert after[-1]["stdout"] == "".join(f"tick {i}\n" for i in range(8))


async def test_two_sockets_on_one_session(server: LiveServer) -> None:
    """Autosave answers `saved` after the commit; the other follower gets `session.updated`."""
    async with ws_connect(server) as editor, ws_connect(server) as viewer:
        session = await create(editor, "v1")
        opened = await viewer.request({"type": "open", "session_id": session["id"]})
        assert opened["type"] == "opened" and opened["session"]["source_code"] == "v1"
        saved = await editor.request(
            {
                "type": "autosave",
                "session_id": session["id"],
                "source_code": "v2",
                "base_version": 1,
            }
        )
        assert saved["type"] == "saved" and saved["version"] == 2 and saved["updated_at"]
        update = await viewer.recv()
        assert update == {
            "type": "session.updated",
            "session_id": session["id"],
            "version": 2,
            "source_code": "v2",
        }
        stale = await viewer.request(
            {"type": "autosave", "session_id": session["id"], "source_code": "x", "base_version": 1}
        )
        assert stale["type"] == "error" and stale["code"] == "conflict"
        pong = await editor.request({"type": "ping"})
        assert pong["type"] == "pong"  # the editor received no echo of its own save before this
    with server.client() as client:
        assert client.get(f"/code-sessions/{session['id']}").json()["source_code"] == "v2"


async def test_interactive_stdin(server: LiveServer) -> None:
    """An interactive run reads what the socket sends while it runs, up to the end of input."""
    source = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper())\nprint('bye')"
    async with ws_connect(server) as ws:
        session = await create(ws, source)
        execution_id = await run(ws, session["id"], interactive=True)
        seen = []
        while not any(e["type"] == "status" and e["status"] == "RUNNING" for e in seen):
            seen.append(await ws.recv())
        await ws.send({"type": "stdin", "execution_id": execution_id, "data": "hello\n"})
        while "HELLO\n" not in joined(seen, "stdout"):
            seen.append(await ws.recv())
        await ws.send(
            {"type": "stdin", "execution_id": execution_id, "data": "again\n", "eof": True}
        )
        seen += await ws.until("finished", execution_id)
    assert seen[-1]["status"] == "COMPLETED"
    assert seen[-1]["stdout"] == "HELLO\nAGAIN\nbye\n"


async def test_cancel_over_the_socket(server: LiveServer) -> None:
    """Cancelling over the socket ends a running program as CANCELLED, its output kept."""
    async with ws_connect(server) as ws:
        session = await create(ws, "import time\nprint('go', flush=True)\ntime.sleep(60)")
        execution_id = await run(ws, session["id"])
        seen = []
        while "go\n" not in joined(seen, "stdout"):
            seen.append(await ws.recv())
        await ws.send({"type": "cancel", "execution_id": execution_id})
        finished = (await ws.until("finished", execution_id))[-1]
    assert (finished["status"], finished["reason"]) == ("CANCELLED", "cancelled")
    assert finished["stdout"] == "go\n"


async def test_unsubscribe_stops_events(server: LiveServer) -> None:
    """After unsubscribe, a socket gets no more events of that run, not even finished."""
    async with ws_connect(server) as ws:
        session = await create(
            ws, "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.2)"
        )
        execution_id = await run(ws, session["id"])
        answer = await ws.request({"type": "unsubscribe", "execution_id": execution_id})
        assert answer == {
            "type": "unsubscribed",
            "ref": answer["ref"],
            "execution_id": execution_id,
        }
        with server.client() as client:
            wait_final(client, execution_id)  # its `finished` is published right after
        pong = await ws.request({"type": "ping"})
        assert pong["type"] == "pong"
        # Only events already queued before the unsubscribe may have arrived; no `finished`.
        with pytest.raises(TimeoutError):
            while True:
                event = await ws.recv(timeout=0.5)
                assert event["type"] != "finished"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "bad_request"),
        (json.dumps([1, 2]), "bad_request"),
        (json.dumps({"type": "dance", "ref": "r1"}), "bad_request"),
        (json.dumps({"type": "create", "ref": "r1"}), "bad_request"),
        (
            json.dumps({"type": "create", "ref": "r1", "language": "cobol", "source_code": ""}),
            "bad_request",
        ),
        (
            json.dumps(
                {"type": "create", "ref": "r1", "language": "python", "source_code": "x" * 262145}
            ),
            "too_large",
        ),
        (json.dumps({"type": "open", "ref": "r1", "session_id": "nope"}), "not_found"),
        (
            json.dumps(
                {
                    "type": "subscribe",
                    "ref": "r1",
                    "execution_id": "00000000-0000-0000-0000-000000000000",
                }
            ),
            "not_found",
        ),
        (
            json.dumps({"type": "run", "ref": "r1", "session_id": "x", "limits": {"memory_mb": 0}}),
            "bad_request",
        ),
        (
            json.dumps(
                {
                    "type": "autosave",
                    "ref": "r1",
                    "session_id": "x",
                    "source_code": "",
                    "base_version": 2**64,
                }
            ),
            "bad_request",
        ),
        (
            json.dumps({"type": "run", "ref": "r1", "session_id": "x", "interactive": "yes"}),
            "bad_request",
        ),
        ("[" * 100_000, "bad_request"),
    ],
)
async def test_every_error_keeps_the_socket(server: LiveServer, message: str, code: str) -> None:
    """Each bad message gets an error event with its code, and the socket stays open."""
    async with ws_connect(server) as ws:
        await ws.connection.send(message)
        error = await ws.recv()
        assert error["type"] == "error" and error["code"] == code and error["message"]
        if '"ref"' in message:
            assert error["ref"] == "r1"
        assert (await ws.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize(("limit", "setting"), LIMIT_SETTINGS)
async def test_a_limit_above_the_maximum_is_an_error_event(
    server: LiveServer, limit: str, setting: str
) -> None:
    """Over the socket the same refusal is an error event (bad_request); the socket stays."""
    maximum = getattr(server.settings, setting)
    async with ws_connect(server) as ws:
        session = await create(ws, "pass")
        refused = await ws.request(
            {"type": "run", "session_id": session["id"], "limits": {limit: maximum + 1}}
        )
        assert refused["type"] == "error" and refused["code"] == "bad_request", refused
        assert f"limits.{limit}" in refused["message"] and f"{maximum:g}" in refused["message"]
        await run(ws, session["id"], limits={limit: maximum})


async def test_rate_limited_and_conflicting_stdin(server: LiveServer) -> None:
    """The 11th run in a minute is rate limited; stdin to a non-interactive run is a conflict."""
    async with ws_connect(server) as ws:
        session = await create(ws, "pass")
        answers = [
            await ws.request({"type": "run", "session_id": session["id"]}) for _ in range(11)
        ]
        assert [a["type"] for a in answers] == ["queued"] * 10 + ["error"]
        assert answers[-1]["code"] == "rate_limited" and answers[-1]["retry_after"] >= 1
        not_interactive = await ws.request(
            {"type": "stdin", "execution_id": answers[0]["execution_id"], "data": "x"}
        )
        assert not_interactive["type"] == "error" and not_interactive["code"] == "conflict"
        assert (await ws.request({"type": "ping"}))["type"] == "pong"


async def test_flooding_closes_the_socket(embedded_server: LiveServer) -> None:
    """A socket flooding the server with messages is closed with code 1008."""
    async with ws_connect(embedded_server) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(5000):
                await ws.connection.send('{"type":"ping"}')
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_foreign_origin_is_refused(embedded_server: LiveServer) -> None:
    """A socket from a foreign Origin is refused with 403; the server's own Origin is served."""
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(embedded_server, origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    async with ws_connect(embedded_server, origin=embedded_server.url) as ws:
        assert (await ws.request({"type": "ping"}))["type"] == "pong"


async def test_redis_down_is_an_unavailable_error_and_the_socket_stays(
    server_without_redis: LiveServer,
) -> None:
    """With Redis down, a run is refused as unavailable, and the socket still autosaves."""
    async with ws_connect(server_without_redis) as ws:
        session = await create(ws, "print(1)")
        refused = await ws.request({"type": "run", "session_id": session["id"]})
        assert refused["type"] == "error" and refused["code"] == "unavailable"
        assert refused["retry_after"] >= 1
        saved = await ws.request(
            {"type": "autosave", "session_id": session["id"], "source_code": "print(2)"}
        )
        assert saved["type"] == "saved" and saved["version"] == 2


async def test_nul_and_invalid_bytes_arrive_as_replacement_characters(server: LiveServer) -> None:
    """Output that is not valid UTF-8 (or holds NUL) is sent and stored alike, as U+FFFD."""
    source = "import sys\nsys.stdout.buffer.write(b'a\\x00b\\xffc\\n')"
    async with ws_connect(server) as ws:
        session = await create(ws, source)
        execution_id = await run(ws, session["id"])
        seen = await ws.until("finished", execution_id)
    assert seen[-1]["status"] == "COMPLETED"
    assert joined(seen, "stdout") == seen[-1]["stdout"] == "a\ufffdb\ufffdc\n"
    with server.client() as client:
        assert client.get(f"/executions/{execution_id}").json()["stdout"] == "a\ufffdb\ufffdc\n"


async def test_stdin_sent_before_the_run_starts_is_not_lost(server: LiveServer) -> None:
    """Input sent before the run starts is read by the program."""
    async with ws_connect(server) as ws:
        session = await create(ws, "print(input()[::-1])")
        execution_id = await run(ws, session["id"], interactive=True)
        await ws.send(
            {"type": "stdin", "execution_id": execution_id, "data": "olleh\n", "eof": True}
        )
        finished = (await ws.until("finished", execution_id))[-1]
    assert (finished["status"], finished["stdout"]) == ("COMPLETED", "hello\n")


async def test_followers_are_told_when_the_session_is_deleted(server: LiveServer) -> None:
    """Deleting a session ends its running execution as CANCELLED for the sockets following it."""
    async with ws_connect(server) as ws:
        session = await create(ws, "import time\nprint('up', flush=True)\ntime.sleep(60)")
        execution_id = await run(ws, session["id"])
        seen = []
        while "up\n" not in joined(seen, "stdout"):
            seen.append(await ws.recv())
        with server.client() as client:
            assert client.delete(f"/code-sessions/{session['id']}").status_code == 204
        finished = (await ws.until("finished", execution_id))[-1]
    assert (finished["status"], finished["reason"]) == ("CANCELLED", "cancelled")


async def test_interactive_stdin_has_one_cap_per_execution(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """An interactive run's stdin, given at the start and sent later, has one cap in all."""
    settings = embedded_settings(tmp_path_factory, max_stdin_bytes=1000)
    with run_server(settings) as small:
        async with ws_connect(small) as ws:
            session = await create(ws, "import time\ntime.sleep(30)")
            execution_id = await run(ws, session["id"], interactive=True, stdin="x" * 400)
            assert (
                await answers_to(
                    ws, {"type": "stdin", "execution_id": execution_id, "data": "y" * 500}
                )
                == []
            )
            over = await answers_to(
                ws, {"type": "stdin", "execution_id": execution_id, "data": "z" * 200}
            )
            assert [(e["type"], e["code"]) for e in over] == [("error", "too_large")]
            await ws.send({"type": "cancel", "execution_id": execution_id})
            await ws.until("finished", execution_id)


async def test_a_socket_too_slow_for_session_updates_is_told_and_can_open_again(
    embedded_server: LiveServer,
) -> None:
    """A socket too slow for session updates is told so; opening the session again resumes them."""
    big = base64.b64encode(os.urandom(150_000)).decode()  # each update carries the source
    async with ws_connect(embedded_server, max_queue=1) as viewer:
        session = await create(viewer, "v1")
        async with httpx.AsyncClient(base_url=embedded_server.url, timeout=30) as http:
            for n in range(300):  # the viewer reads none of these meanwhile
                saved = await http.patch(
                    f"/code-sessions/{session['id']}", json={"source_code": f"{big}{n}"}
                )
                assert saved.status_code == 200
        received = []
        while (event := await viewer.recv())["type"] == "session.updated":
            received.append(event["version"])
        assert event["type"] == "error" and event["session_id"] == session["id"], event
        assert "too slow" in event["message"]
        # What it got is in order and far from all 300: the server held no more for it.
        assert received == sorted(received) and len(received) < 150
        opened = await viewer.request({"type": "open", "session_id": session["id"]})
        assert opened["session"]["version"] == 301
        async with httpx.AsyncClient(base_url=embedded_server.url) as http:
            await http.patch(f"/code-sessions/{session['id']}", json={"source_code": "after"})
        update = await viewer.recv()
        assert (update["type"], update["source_code"], update["version"]) == (
            "session.updated",
            "after",
            302,
        )


PROMPT = "import os\nname = input('name? ')\nprint(f'hello, {name}', os.isatty(1))"
SIZE_THEN_SIGWINCH = (
    "import os, signal\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})\n"
    "print(tuple(os.get_terminal_size()), flush=True)\n"
    "signal.sigwait({signal.SIGWINCH})\n"
    "print('SIGWINCH', tuple(os.get_terminal_size()), flush=True)\n"
)


async def test_a_tty_run_is_a_terminal_answered_over_stdin(server: LiveServer) -> None:
    """A tty run prompts without a newline, reads the keystrokes the socket sends (echoed, as a
    terminal does), and streams one stream whose joined chunks are the stored stdout, also for
    a late subscriber."""
    async with ws_connect(server) as ws:
        session = await create(ws, PROMPT)
        execution_id = await run(ws, session["id"], tty=True)
        seen: list[dict] = []
        while "name? " not in joined(seen, "stdout"):
            seen.append(await ws.recv())
        await ws.send({"type": "stdin", "execution_id": execution_id, "data": "ada\r"})
        seen += await ws.until("finished", execution_id)
    finished = seen[-1]
    assert (finished["status"], finished["tty"], finished["interactive"]) == (
        "COMPLETED",
        True,
        True,
    )
    assert finished["stdout"] == "name? ada\r\nhello, ada True\r\n" == joined(seen, "stdout")
    assert finished["stderr"] == "" and {e["stream"] for e in outputs(seen)} == {"stdout"}
    assert [e["seq"] for e in outputs(seen)] == list(range(1, len(outputs(seen)) + 1))
    async with ws_connect(server) as late:
        await late.send({"type": "subscribe", "execution_id": execution_id})
        replayed = await late.until("finished", execution_id)
    assert [(e["seq"], e["data"]) for e in outputs(replayed)] == [
        (e["seq"], e["data"]) for e in outputs(seen)
    ]


async def test_resize_reaches_a_tty_run(server: LiveServer) -> None:
    """A tty run's program reads the run's cols and rows at its start (whenever it starts), and
    a resize sends it SIGWINCH with the new size."""
    async with ws_connect(server) as ws:
        execution_id, answers = await _tty_run_resized(ws, (120, 40), (100, 30))
        assert answers == []
        seen = await ws.until("finished", execution_id)
    assert seen[-1]["stdout"] == "(120, 40)\r\nSIGWINCH (100, 30)\r\n"


async def _tty_run_resized(
    ws: Socket, size: tuple[int, int], new_size: tuple[int, int]
) -> tuple[str, list[dict]]:
    """Start SIZE_THEN_SIGWINCH in a terminal of `size`; once it printed that, resize it to
    `new_size`: its execution id, and the answers to the resize."""
    session = await create(ws, SIZE_THEN_SIGWINCH)
    execution_id = await run(ws, session["id"], tty=True, cols=size[0], rows=size[1])
    seen: list[dict] = []
    while f"{size}\r\n" not in joined(seen, "stdout"):
        seen.append(await ws.recv())
    resize = {"type": "resize", "execution_id": execution_id}
    answers = await answers_to(ws, {**resize, "cols": new_size[0], "rows": new_size[1]})
    return execution_id, answers


async def test_a_tty_runs_execution_keeps_its_starting_size_after_a_resize(
    server: LiveServer,
) -> None:
    """`finished` of a tty run says the size its program started with (cols, rows as asked),
    also after a resize reached the program, and so do a late subscriber's `finished` and
    REST; without a size asked, 80x24; without tty, no size at all."""
    async with ws_connect(server) as ws:
        execution_id, answers = await _tty_run_resized(ws, (100, 30), (50, 20))
        assert answers == []
        finished = (await ws.until("finished", execution_id))[-1]
        assert finished["stdout"] == "(100, 30)\r\nSIGWINCH (50, 20)\r\n"
        assert (finished["tty"], finished["cols"], finished["rows"]) == (True, 100, 30)
        await ws.send({"type": "subscribe", "execution_id": execution_id})
        replayed = (await ws.until("finished", execution_id))[-1]
        assert (replayed["cols"], replayed["rows"]) == (100, 30)
        sized = await create(ws, "import os\nprint(tuple(os.get_terminal_size()))")
        default_id = await run(ws, sized["id"], tty=True)
        by_default = (await ws.until("finished", default_id))[-1]
        assert by_default["stdout"] == "(80, 24)\r\n"
        assert (by_default["cols"], by_default["rows"]) == (80, 24)
        plain_id = await run(ws, (await create(ws, "print('no tty')"))["id"])
        plain = (await ws.until("finished", plain_id))[-1]
        assert plain["stdout"] == "no tty\n", plain
        assert {"tty", "cols", "rows"}.isdisjoint(plain), plain
    with server.client() as client:
        stored = client.get(f"/executions/{execution_id}").json()
    assert (stored["cols"], stored["rows"]) == (100, 30)


@pytest.mark.parametrize("mode", ["embedded", "distributed"])
async def test_a_resize_before_the_start_is_the_size_the_execution_says_it_started_with(
    mode: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A resize that reaches a tty run while it waits for a worker is the size its program
    starts with, and the size `finished` and REST then say it started with."""
    with _one_worker_thread(mode, tmp_path_factory) as server:
        await _resize_while_queued(server)


@contextlib.contextmanager
def _one_worker_thread(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with one worker thread, and a store and queue of its own: no other test's run
    can hold that thread, or take it."""
    if mode == "embedded":
        with run_server(embedded_settings(tmp_path_factory, worker_threads=1)) as server:
            yield server
        return
    with own_distributed_server(LIVECODE_WORKER_THREADS="1") as server:
        yield server


async def _resize_while_queued(server: LiveServer) -> None:
    async with ws_connect(server) as ws:
        # Given the one worker thread busy, so that the tty run waits, QUEUED
        sleeper = await create(ws, "import time\ntime.sleep(60)")
        busy = {await run(ws, sleeper["id"])}
        running: set[str] = set()
        while running != busy:
            event = await ws.recv()
            if event["type"] == "status" and event["status"] == "RUNNING":
                running.add(event["execution_id"])
        sized = await create(ws, "import os\nprint(tuple(os.get_terminal_size()))")
        execution_id = await run(ws, sized["id"], tty=True, cols=100, rows=30)
        resize = {"type": "resize", "execution_id": execution_id, "cols": 120, "rows": 40}
        assert await answers_to(ws, resize) == []
        # When a worker is free again
        for busy_id in busy:
            await ws.send({"type": "cancel", "execution_id": busy_id})
        finished = (await ws.until("finished", execution_id))[-1]
    # Then the program started at the resized size, and the execution says so
    assert finished["stdout"] == "(120, 40)\r\n", finished
    assert (finished["cols"], finished["rows"]) == (120, 40)
    with server.client() as client:
        stored = client.get(f"/executions/{execution_id}").json()
    assert (stored["cols"], stored["rows"]) == (120, 40)


async def test_a_runs_terminal_size_is_checked(server: LiveServer) -> None:
    """cols and rows past 1..1000, one without the other, or without tty: bad_request, the
    socket stays open and no execution is made."""
    async with ws_connect(server) as ws:
        session = await create(ws, "print('hi')")
        message = {"type": "run", "session_id": session["id"], "tty": True, "cols": 80, "rows": 24}
        refusals = [
            ({**message, "cols": 1001}, "cols: Input should be less than or equal to 1000"),
            ({**message, "rows": 0}, "rows: Input should be greater than or equal to 1"),
            ({**message, "cols": "80"}, "cols: must be a JSON number"),
            ({**message, "rows": None}, "cols and rows: give both"),
            ({**message, "tty": False}, "only a run with tty: true has a terminal"),
        ]
        for refused, words in refusals:
            answers = await answers_to(ws, refused)
            assert [(e["type"], e["code"]) for e in answers] == [("error", "bad_request")]
            assert words in answers[0]["message"]
        assert (await ws.request({"type": "ping"}))["type"] == "pong"
    with server.client() as client:
        assert client.get(f"/executions/session/{session['id']}").json() == []


async def test_resize_is_refused_where_there_is_no_terminal(server: LiveServer) -> None:
    """resize of a run without tty is a conflict, of a finished run too, of nothing not found,
    and a size out of bounds a bad request; the socket stays open."""
    async with ws_connect(server) as ws:
        session = await create(ws, "import time\ntime.sleep(30)")
        execution_id = await run(ws, session["id"])
        resize = {"type": "resize", "execution_id": execution_id, "cols": 80, "rows": 24}
        assert [e["code"] for e in await answers_to(ws, resize)] == ["conflict"]
        too_wide = {**resize, "cols": 1001}
        assert [e["code"] for e in await answers_to(ws, too_wide)] == ["bad_request"]
        unknown = {**resize, "execution_id": "00000000-0000-4000-8000-000000000000"}
        assert [e["code"] for e in await answers_to(ws, unknown)] == ["not_found"]
        await ws.send({"type": "cancel", "execution_id": execution_id})
        await ws.until("finished", execution_id)
        assert [e["code"] for e in await answers_to(ws, resize)] == ["conflict"]


async def test_a_tty_run_that_times_out_says_so_on_its_terminal(server: LiveServer) -> None:
    """The timeout notice of a tty run is the terminal's last line, on its one stream."""
    async with ws_connect(server) as ws:
        session = await create(ws, "print('waiting')\ninput()")
        execution_id = await run(ws, session["id"], tty=True, limits={"timeout_s": 1})
        seen = await ws.until("finished", execution_id)
    finished = seen[-1]
    assert finished["status"] == "TIMEOUT"
    assert finished["stdout"] == "waiting\r\nExecution exceeded 1 second timeout"
    assert joined(seen, "stdout") == finished["stdout"] and finished["stderr"] == ""


SUM = {
    "python": "import sys\na, b = map(int, sys.stdin.read().split())\n"
    "print(a + b, *sys.argv[1:])\nprint('case', a, file=sys.stderr)",
    "javascript": "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/)"
    ".map(Number);\nconsole.log([a + b, ...process.argv.slice(2)].join(' '));\n"
    "console.error('case', a);",
    "c++": "#include <iostream>\nint main(int argc, char** argv) { long a, b; std::cin >> a >> b;\n"
    "  std::cout << a + b; for (int i = 1; i < argc; i++) std::cout << ' ' << argv[i];\n"
    "  std::cout << '\\n'; std::cerr << \"case \" << a << '\\n'; }",
}
CASES = [
    {"stdin": "1 2", "expected_output": "3 run-arg"},  # the run's args, as it has none
    {"stdin": "2 2", "args": ["x"], "expected_output": "4 x  \n"},  # trailing space ignored
    {"stdin": "3 3", "expected_output": "7"},
    {"stdin": "4 4"},
]


def case_joined(events: list[dict], case: int, stream: str) -> str:
    return "".join(
        e["data"] for e in outputs(events) if e.get("case") == case and e["stream"] == stream
    )


@pytest.mark.parametrize("language", ["python", "javascript", "c++"])
async def test_cases_report_each_its_output_and_verdict(server: LiveServer, language: str) -> None:
    """A run with cases streams each case's output tagged with its index; the finished
    execution has one result per case (status, output, times, verdict), and every way of
    joining the events gives back what is stored: per case, and per stream for the run."""
    async with ws_connect(server) as ws:
        session = await create(ws, SUM[language], language)
        execution_id = await run(ws, session["id"], cases=CASES, args=["run-arg"])
        seen = await ws.until("finished", execution_id)
    finished = seen[-1]
    cases = finished["cases"]
    assert [case["stdout"] for case in cases] == [
        "3 run-arg\n",
        "4 x\n",
        "6 run-arg\n",
        "8 run-arg\n",
    ]
    assert [case.get("verdict") for case in cases] == ["accepted", "accepted", "wrong_answer", None]
    for index, case in enumerate(cases):
        assert (case["status"], case["reason"], case["exit_code"]) == ("COMPLETED", "exit", 0)
        assert case["execution_time_ms"] >= 0 and case["memory_kb"] > 0
        assert case_joined(seen, index, "stdout") == case["stdout"]
        assert case_joined(seen, index, "stderr") == case["stderr"] == f"case {index + 1}\n"
    assert (finished["status"], finished["reason"]) == ("COMPLETED", "exit")
    assert joined(seen, "stdout") == finished["stdout"] == "".join(c["stdout"] for c in cases)
    assert joined(seen, "stderr") == finished["stderr"]
    assert all("case" not in e for e in outputs(seen) if e["stream"] == "compile")
    assert [e["seq"] for e in outputs(seen)] == list(range(1, len(outputs(seen)) + 1))
    async with ws_connect(server) as late:
        await late.send({"type": "subscribe", "execution_id": execution_id})
        replayed = await late.until("finished", execution_id)
    assert outputs(replayed) == outputs(seen)  # with their case indexes
    with server.client() as client:
        assert client.get(f"/executions/{execution_id}").json()["cases"] == cases


async def test_a_compile_error_runs_no_case(server: LiveServer) -> None:
    """C++ that does not compile runs no case: every case reports compile_error, only the
    compiler's output is streamed."""
    async with ws_connect(server) as ws:
        session = await create(ws, "int main() { nope }", "c++")
        execution_id = await run(ws, session["id"], cases=CASES)
        seen = await ws.until("finished", execution_id)
    finished = seen[-1]
    assert (finished["status"], finished["reason"]) == ("FAILED", "compile_error")
    assert "nope" in finished["compile_output"] == joined(seen, "compile")
    assert [(c["status"], c["reason"], c["stdout"]) for c in finished["cases"]] == [
        ("FAILED", "compile_error", "")
    ] * len(CASES)
    assert {e["stream"] for e in outputs(seen)} == {"compile"}


async def test_a_case_timing_out_beside_passing_ones(server: LiveServer) -> None:
    """One case loops and times out; the others pass; the run says TIMEOUT."""
    source = "import sys\nn = int(sys.stdin.read())\nwhile n == 2: pass\nprint(n)"
    cases = [{"stdin": str(n), "expected_output": str(n)} for n in (1, 2, 3)]
    async with ws_connect(server) as ws:
        session = await create(ws, source)
        execution_id = await run(ws, session["id"], cases=cases, limits={"timeout_s": 1})
        seen = await ws.until("finished", execution_id)
    finished = seen[-1]
    assert [(c["status"], c.get("verdict")) for c in finished["cases"]] == [
        ("COMPLETED", "accepted"),
        ("TIMEOUT", None),
        ("COMPLETED", "accepted"),
    ]
    assert finished["cases"][1]["error"] == "Execution exceeded 1 second timeout"
    assert (finished["status"], finished["reason"]) == ("TIMEOUT", "timeout")
    assert joined(seen, "stderr") == finished["stderr"] == ""


async def test_cases_over_the_cap_or_with_a_terminal_are_refused(server: LiveServer) -> None:
    """More cases than LIVECODE_MAX_CASES, no case at all, or cases with tty, interactive or a
    stdin of the run's own are refused with bad_request; the socket stays open."""
    most = server.settings.max_cases
    async with ws_connect(server) as ws:
        session = await create(ws, "print(input())")
        for options in (
            {"cases": [{"stdin": "x"}] * (most + 1)},
            {"cases": []},
            {"cases": [{"stdin": "x"}], "tty": True},
            {"cases": [{"stdin": "x"}], "interactive": True},
            {"cases": [{"stdin": "x"}], "stdin": "y"},
        ):
            answer = await ws.request({"type": "run", "session_id": session["id"], **options})
            assert (answer["type"], answer["code"]) == ("error", "bad_request"), options
        execution_id = await run(ws, session["id"], cases=[{"stdin": "x\n"}] * most)
        finished = (await ws.until("finished", execution_id))[-1]
    assert [case["stdout"] for case in finished["cases"]] == ["x\n"] * most

"""docs/protocol.md stays true: every message, field, event and error code of the code is in
it, and its JavaScript client runs against a real server, through a dropped socket."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import typing
from pathlib import Path

import pytest

from livecode import errors, events, protocol, websocket
from tests.proxy import proxy_to
from tests.utils import REPO, TIMEOUT, LiveServer

DOC = (Path(REPO) / "docs" / "protocol.md").read_text()


def section(heading: str) -> str:
    """The text of the `### heading` section."""
    start = DOC.index(f"### {heading}\n")
    end = DOC.find("\n#", start + 1)
    return DOC[start:end]


def client_message_models() -> list[type[protocol._Client]]:
    union = typing.get_args(typing.get_args(protocol.ClientMessage)[0])
    return list(union)


def test_every_client_message_has_a_section_with_its_fields() -> None:
    models = client_message_models()
    assert [typing.get_args(m.model_fields["type"].annotation)[0] for m in models] == (
        protocol.MESSAGE_TYPES
    )
    for model in models:
        kind = typing.get_args(model.model_fields["type"].annotation)[0]
        text = section(f"`{kind}`")
        for field in set(model.model_fields) - {"type", "ref"}:
            assert re.search(rf"\b{field}\b", text), f"{kind}.{field} is not in its section"
    for field in protocol.RequestedLimits.model_fields:
        assert f"{field}:" in section("`run`")


def test_every_error_code_is_in_the_table() -> None:
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.LivecodeError)
    }
    table = DOC[DOC.index("## Errors") : DOC.index("## Close codes")]
    for code in codes:
        assert f"| `{code}` |" in table, code


def test_every_event_type_the_server_sends_is_described() -> None:
    """Every `type` of events.Event (the typed union of what the server sends) is in the table."""
    kinds = set()
    for shape in typing.get_args(events.Event):
        kinds |= set(typing.get_args(typing.get_type_hints(shape)["type"]))
    assert {
        "created",
        "queued",
        "status",
        "output",
        "finished",
        "session.updated",
        "error",
    } <= kinds
    table = DOC[DOC.index("## Server events") : DOC.index("## Errors")]
    for kind in kinds:
        assert f"`{kind}`" in table, kind


def test_close_codes_are_the_servers() -> None:
    from livecode.cli import WS_MAX_FRAME_BYTES

    closes = DOC[DOC.index("## Close codes") : DOC.index("## Delivery guarantee")]
    assert f"| {websocket.POLICY_VIOLATION} policy violation |" in closes
    assert f"a frame over {WS_MAX_FRAME_BYTES >> 20} MiB" in closes
    assert "| 1012 service restart |" in closes
    assert f"| {websocket.CLOSE_UNAUTHORIZED} unauthorized |" in closes
    assert f"| {websocket.TRY_AGAIN_LATER} try again later |" in closes


def test_the_javascript_client_resumes_after_a_dropped_socket(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    """runLive() from the doc, in Node: the socket is reset mid-run; the output shown equals the
    stored output, each chunk once."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    [example] = [
        block for block in re.findall(r"```js\n(.*?)```", DOC, re.S) if "function runLive" in block
    ]
    harness = """
const line = (value) => process.stdout.write(JSON.stringify(value) + "\\n");
runLive(process.env.LIVECODE_WS, "python", process.env.SOURCE, {
  onOutput: (stream, text) => line({ stream, text }),
}).then((finished) => { line({ finished }); process.exit(0); },
        (error) => { console.error(String(error)); process.exit(1); });
"""
    script = tmp_path / "run_live.mjs"
    script.write_text(example + harness)
    source = "import time\nfor i in range(10):\n    print('line', i, 'ü', flush=True)\n    time.sleep(0.05)\n"
    with proxy_to(embedded_server.url) as proxy:
        env = {
            "LIVECODE_WS": proxy.url.replace("http", "ws") + "/ws",
            "SOURCE": source,
            "PATH": "/usr/bin:/bin",
        }
        process = subprocess.Popen(
            [node, "--experimental-websocket", str(script)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        shown = []
        try:
            while True:
                line = process.stdout.readline()
                assert line, process.stderr.read() if process.stderr else "node ended"
                item = json.loads(line)
                if "finished" in item:
                    finished = item["finished"]
                    break
                shown.append(item["text"])
                if len(shown) == 2:
                    proxy.cut()
            assert process.wait(TIMEOUT) == 0
        finally:
            process.kill()
            process.wait()
    assert proxy.accepted == 2
    assert "".join(shown) == finished["stdout"] == "".join(f"line {i} ü\n" for i in range(10))

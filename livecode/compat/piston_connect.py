"""WS /api/v2/connect: Piston's interactive execution, on livecode's interactive runs.

The wire, as Piston's ``api/src/api/v2.js`` speaks it (JSON text frames)::

    client  {"type": "init", language, version, files, args?, run_timeout?, ...}   within 1 s
    server  {"type": "runtime", language, version}
    server  {"type": "stage", "stage": "compile"}    compiled languages: compiler output as data,
            {"type": "exit", "stage": "compile", code, signal}
    server  {"type": "stage", "stage": "run"}
    server  {"type": "data", "stream": "stdout" | "stderr", "data"}   as the program writes
    client  {"type": "data", "stream": "stdin", "data"}               to the program's stdin
    client  {"type": "signal", "signal": "SIGTERM"}                   ends the run
    server  {"type": "exit", "stage": "run", code, signal}, then close 4999 "Job Completed"

Close codes: 4000 a second init, 4001 no init within 1 s, 4002 after an ``error`` message
(e.g. an unknown runtime), 4003 data or a signal before init, 4004 data for another stream
than stdin, 4005 an unknown signal name. As in Piston, ``init.stdin`` is ignored and stdin is
never closed. Unlike Piston, whose signals reach nothing today, a signal ends the run: livecode
cancels it, which kills the program's whole process tree. A client that goes away cancels its
run too.

livecode tells no moment between a compile and the program's start: the compile stage ends
when the program's first output or the end of the run arrives. stdin sent while the compiler
runs does not reach the program (the runner hands it to the compile stage, which drops it), so
an interactive C++ client writes once the program has said something.

A run whose worker stops is run again from the start (README, Reliability), and Piston's
client cannot be told to drop the output it has: it is given only one attempt's. A run that
goes back to the queue before it sent any data goes on unseen; one that had sent some ends
the job with an ``error`` (close 4002), and is cancelled, rather than send a second
attempt's output after the first's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from livecode.browser import origin_allowed
from livecode.compat import auth
from livecode.compat.piston_job import (
    SIGNALS,
    Job,
    JobInvalid,
    Runtime,
    parse_job,
    runtimes_of,
    stage_ending,
)
from livecode.compat.runs import compile_failed, is_timeout_notice
from livecode.errors import Conflict, LivecodeError
from livecode.services import Services
from livecode.store import Execution
from livecode.tenants import Tenant
from livecode.websocket import POLICY_VIOLATION
from runners import ExecutionStatus, Reason

__all__ = ["connect"]

logger = logging.getLogger(__name__)

INIT_TIMEOUT_S = 1.0
ALREADY_INITIALIZED = 4000
INITIALIZATION_TIMEOUT = 4001
NOTIFIED_ERROR = 4002
NOT_INITIALIZED = 4003
STDIN_ONLY = 4004
INVALID_SIGNAL = 4005
JOB_COMPLETED = 4999
RUN_AGAIN = (
    "the worker running the job stopped, and the job would start again: "
    "the output sent is all this job gives"
)


async def connect(websocket: WebSocket) -> None:
    """Serve one interactive Piston job until it ends or the client goes away."""
    services: Services = websocket.app.state.services
    if not origin_allowed(websocket, services.settings.allowed_origins):
        await websocket.close(code=POLICY_VIOLATION)
        return
    try:
        tenant = auth.tenant(websocket)
    except LivecodeError as exc:
        # Piston's protocol has no way to give a key later: no key (or a wrong one, or the
        # store down) is a refused upgrade, HTTP 403, as for a refused Origin.
        logger.info("Piston socket refused: %s", exc.message)
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    await _Job(websocket, services, tenant).serve()


class _Job:
    """One socket's job: the client's messages in, the run's events out."""

    def __init__(self, websocket: WebSocket, services: Services, tenant: Tenant) -> None:
        self.websocket = websocket
        self.services = services
        self.tenant = tenant
        self.execution_id: str | None = None
        self.is_final = False  # the run has ended: nothing to cancel when the client leaves
        self.signal: str | None = None  # the signal the client sent, if it did
        self.is_closed = False
        self.pump: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()

    async def serve(self) -> None:
        receiver = asyncio.create_task(self._receive())
        self.receiver = receiver
        try:
            await asyncio.wait({receiver})
        finally:
            receiver.cancel()
            if self.pump is not None:
                self.pump.cancel()
                await asyncio.gather(self.pump, return_exceptions=True)
            await self._cancel_run()

    async def _receive(self) -> None:
        deadline = asyncio.get_running_loop().time() + INIT_TIMEOUT_S
        try:
            while not self.is_closed:
                try:
                    async with asyncio.timeout_at(None if self.execution_id else deadline):
                        message = await self.websocket.receive()
                except TimeoutError:
                    await self._close(INITIALIZATION_TIMEOUT, "Initialization Timeout")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", "replace")
                await self._handle(text)
        except WebSocketDisconnect:
            return

    async def _handle(self, text: str) -> None:
        try:
            message = json.loads(text)
            if not isinstance(message, dict):
                return  # no type: Piston's switch ignores it
            match message.get("type"):
                case "init":
                    await self._init(message)
                case "data":
                    await self._data(message)
                case "signal":
                    await self._signal(message)
        except (ValueError, JobInvalid, LivecodeError) as exc:
            text = exc.message if isinstance(exc, JobInvalid | LivecodeError) else str(exc)
            await self._fail(text)
        except Exception:
            logger.exception("piston socket: message failed")
            await self._fail("internal error")

    async def _init(self, message: dict[str, Any]) -> None:
        if self.execution_id is not None:
            await self._close(ALREADY_INITIALIZED, "Already Initialized")
            return
        runtimes = runtimes_of(self.services.languages)
        job = parse_job(
            message, settings=self.services.settings, runtimes=runtimes, interactive=True
        )
        execution = await run_in_threadpool(self._start, job)
        self.execution_id = execution.id
        runtime = job.runtime
        await self._send(
            {"type": "runtime", "language": runtime.language, "version": runtime.version}
        )
        self.pump = asyncio.create_task(self._pump(execution.id, runtime))

    async def _data(self, message: dict[str, Any]) -> None:
        if self.execution_id is None:
            await self._close(NOT_INITIALIZED, "Not yet initialized")
        elif message.get("stream") != "stdin":
            await self._close(STDIN_ONLY, "Can only write to stdin")
        elif not isinstance(message.get("data"), str):
            raise ValueError("data must be a string")
        else:
            try:
                await run_in_threadpool(
                    functools.partial(
                        self.services.commands.send_stdin,
                        self.execution_id,
                        message["data"],
                        False,
                        tenant=self.tenant,
                    )
                )
            except Conflict:
                pass  # the program has ended: Piston's write to its stdin goes nowhere too

    async def _signal(self, message: dict[str, Any]) -> None:
        if self.execution_id is None:
            await self._close(NOT_INITIALIZED, "Not yet initialized")
        elif message.get("signal") not in SIGNALS.values():
            await self._close(INVALID_SIGNAL, "Invalid signal")
        else:
            self.signal = message["signal"]
            await run_in_threadpool(
                functools.partial(
                    self.services.commands.cancel, self.execution_id, tenant=self.tenant
                )
            )

    async def _pump(self, execution_id: str, runtime: Runtime) -> None:
        """Send the run's events as Piston's messages, then close with 4999."""
        try:
            await self._relay(execution_id, runtime)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("piston socket: following execution %s failed", execution_id)
            await self._fail("internal error")
        self.receiver.cancel()

    async def _relay(self, execution_id: str, runtime: Runtime) -> None:
        stage = "compile" if runtime.livecode.is_compiled else "run"
        await self._send({"type": "stage", "stage": stage})
        held: dict[str, Any] | None = None  # a stderr chunk that may be livecode's timeout notice
        is_data_sent = False  # the client has output of the current attempt
        assert self.services.relay is not None
        async with self.services.relay.follow(execution_id) as events:
            async for event in events:
                if event["type"] == "error":  # the follow ended early (output lost, shutdown)
                    await self._fail(str(event.get("message")))
                    return
                if (
                    event["type"] == "status"
                    and event["status"] == ExecutionStatus.QUEUED
                    and is_data_sent
                ):
                    # Back in the queue after it ran: its next attempt writes its output again.
                    await self._fail(RUN_AGAIN)
                    return
                if held is not None and not (
                    event["type"] == "finished" and event.get("reason") == Reason.TIMEOUT
                ):
                    await self._send(held)
                held = None
                if event["type"] == "finished":
                    break
                if event["type"] != "output":
                    continue
                is_data_sent = True
                if event["stream"] == "compile":
                    await self._send({"type": "data", "stream": "stderr", "data": event["data"]})
                    continue
                if stage == "compile":
                    await self._end_compile(0, None)
                    stage = "run"
                data = {"type": "data", "stream": event["stream"], "data": event["data"]}
                if event["stream"] == "stderr" and is_timeout_notice(event["data"]):
                    held = data
                else:
                    await self._send(data)
        execution = await run_in_threadpool(
            functools.partial(
                self.services.commands.get_execution, execution_id, tenant=self.tenant
            )
        )
        self.is_final = execution.is_final
        await self._end(execution, stage)
        await self._close(JOB_COMPLETED, "Job Completed")

    async def _end(self, execution: Execution, stage: str) -> None:
        if stage == "compile":
            if compile_failed(execution):
                if execution.reason == Reason.TIMEOUT:
                    await self._end_compile(None, "SIGKILL")
                else:
                    await self._end_compile(execution.exit_code or 1, None)
                return
            await self._end_compile(0, None)
        code: int | None
        signal: str | None
        if execution.reason in (Reason.CANCELLED, Reason.INTERNAL_ERROR):
            code, signal = None, self.signal or "SIGKILL"
        else:
            code, signal, _, _ = stage_ending(execution)
        await self._send({"type": "exit", "stage": "run", "code": code, "signal": signal})

    async def _end_compile(self, code: int | None, signal: str | None) -> None:
        await self._send({"type": "exit", "stage": "compile", "code": code, "signal": signal})
        if code == 0:
            await self._send({"type": "stage", "stage": "run"})

    def _start(self, job: Job) -> Execution:
        return self.services.commands.run_once(
            language=job.runtime.livecode.id,
            source_code=job.source_code,
            options=job.options,
            tenant=self.tenant,
        )

    async def _cancel_run(self) -> None:
        """A client gone before its run ended takes the run with it."""
        if self.execution_id is None or self.is_final:
            return
        try:
            await run_in_threadpool(
                functools.partial(
                    self.services.commands.cancel, self.execution_id, tenant=self.tenant
                )
            )
        except LivecodeError as exc:
            logger.warning("could not cancel execution %s: %s", self.execution_id, exc)

    async def _fail(self, message: str) -> None:
        """Piston's end of a socket on any error: an `error` message, then close 4002."""
        await self._send({"type": "error", "message": message})
        await self._close(NOTIFIED_ERROR, "Notified Error")

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._sending:
            if self.is_closed:
                return
            try:
                await self.websocket.send_text(json.dumps(message))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.is_closed = True

    async def _close(self, code: int, reason: str) -> None:
        async with self._sending:
            if self.is_closed:
                return
            self.is_closed = True
            try:
                await self.websocket.close(code=code, reason=reason)
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass

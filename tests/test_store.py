"""Store tests, each run against SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from livecode import errors, store as store_module
from livecode.store import Execution, Session, SessionStatus, Store
from livecode.store.records import CaseResult
from livecode.tables import code_sessions, executions, metadata
from runners import ExecutionStatus, Reason, Verdict
from tests.utils import SCHEMA_SQL, TIMEOUT, postgresql_schema, require_postgresql

LIMITS = {"timeout_s": 5.0, "memory_mb": 128, "max_processes": 16, "output_limit_bytes": 1024}


def _session(store: Store, owner: str = "") -> Session:
    return store.create_session("python", "print(1)", owner=owner)


def _execution(
    store: Store,
    session_id: str | None = None,
    owner: str = "",
    **overrides: Any,
) -> Execution:
    arguments: dict[str, Any] = {
        "session_id": session_id,
        "language": "python",
        "source_code": "print(1)",
        "stdin": None,
        "args": (),
        "limits": LIMITS,
        "interactive": False,
        "owner": owner,
    }
    arguments.update(overrides)
    return store.create_execution(**arguments)


def _finish(store: Store, execution_id: str, **overrides: Any) -> Execution | None:
    arguments: dict[str, Any] = {
        "status": ExecutionStatus.COMPLETED,
        "reason": "exit",
        "exit_code": 0,
        "signal": None,
        "stdout": "1\n",
        "stderr": "",
        "compile_output": None,
        "stdout_truncated": False,
        "stderr_truncated": False,
        "execution_time_ms": 12,
        "cpu_time_ms": 10,
        "memory_kb": 9000,
        "chunks": [("stdout", 2)],
    }
    arguments.update(overrides)
    return store.finish(execution_id, **arguments)


def _row_count(store: Store, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# -- statuses ------------------------------------------------------------------------------


def test_status_is_final() -> None:
    """Only QUEUED and RUNNING are not final; values are what we store and send."""
    assert [s for s in ExecutionStatus if not s.is_final] == [
        ExecutionStatus.QUEUED,
        ExecutionStatus.RUNNING,
    ]
    assert ExecutionStatus("TIMEOUT") is ExecutionStatus.TIMEOUT
    assert f"{ExecutionStatus.CANCELLED}" == "CANCELLED"


def test_records_have_their_tables_columns() -> None:
    """Each column is a field of its record and each field a column: the three stay in step."""
    assert set(Execution.model_fields) == set(executions.c.keys())
    assert set(Session.model_fields) == set(code_sessions.c.keys())


# -- sessions ------------------------------------------------------------------------------


def test_create_and_get_session(store: Store) -> None:
    """A new session is ACTIVE at version 1 with aware UTC timestamps, and reads back equal."""
    session = store.create_session("python", "print('hi')", owner="alice")
    assert uuid.UUID(session.id).version == 4 and str(uuid.UUID(session.id)) == session.id
    assert session.status is SessionStatus.ACTIVE
    assert (session.version, session.run_count) == (1, 0)
    assert session.created_at.tzinfo is not None
    assert session.created_at.utcoffset() == dt.timedelta(0)
    assert session.created_at == session.updated_at
    assert store.get_session(session.id, owner="alice") == session


def test_get_session_not_found(store: Store) -> None:
    """Unknown ids, invalid ids and another owner's session are all NotFound."""
    session = _session(store, owner="alice")
    for session_id, owner in [
        (str(uuid.uuid4()), "alice"),
        ("not-a-uuid", "alice"),
        ("", "alice"),
        (session.id, "bob"),
        (session.id, ""),
    ]:
        with pytest.raises(errors.NotFound):
            store.get_session(session_id, owner=owner)


def test_get_session_accepts_any_uuid_spelling(store: Store) -> None:
    """Ids are compared in canonical form: an upper-case id finds the same session."""
    session = _session(store)
    assert store.get_session(session.id.upper()).id == session.id


def test_save_source_increments_version(store: Store) -> None:
    """Each save bumps the version and updated_at and is visible to the next read."""
    session = _session(store)
    saved = store.save_source(session.id, "print(2)", base_version=None)
    assert (saved.version, saved.source_code) == (2, "print(2)")
    assert saved.updated_at >= session.updated_at and saved.created_at == session.created_at
    saved = store.save_source(session.id, "print(3)", base_version=2)
    assert saved.version == 3
    assert store.get_session(session.id) == saved


def test_save_source_stale_base_version_changes_nothing(store: Store) -> None:
    """A stale base_version raises VersionConflict with the current version; nothing changes."""
    session = _session(store)
    store.save_source(session.id, "print(2)", base_version=1)
    with pytest.raises(errors.VersionConflict) as caught:
        store.save_source(session.id, "lost update", base_version=1)
    assert caught.value.current_version == 2
    assert caught.value.code == "conflict" and caught.value.http_status == 409
    current = store.get_session(session.id)
    assert (current.version, current.source_code) == (2, "print(2)")


def test_save_source_not_found(store: Store) -> None:
    """Saving another owner's, an unknown or an invalid session is NotFound, not a conflict."""
    session = _session(store, owner="alice")
    with pytest.raises(errors.NotFound):
        store.save_source(session.id, "x", base_version=1, owner="bob")
    with pytest.raises(errors.NotFound):
        store.save_source(str(uuid.uuid4()), "x", base_version=None)
    with pytest.raises(errors.NotFound):
        store.save_source("nope", "x", base_version=None)
    assert store.get_session(session.id, owner="alice").version == 1


def test_concurrent_saves_with_the_same_base_version(store: Store) -> None:
    """Of saves racing from the same base_version, exactly one wins."""
    session = _session(store)
    outcomes = _race(8, lambda i: store.save_source(session.id, f"v{i}", base_version=1))
    wins = [o for o in outcomes if isinstance(o, Session)]
    assert len(wins) == 1
    assert all(isinstance(o, errors.VersionConflict) for o in outcomes if o not in wins)
    assert store.get_session(session.id).version == 2


def test_delete_session_cascades(store: Store) -> None:
    """Deleting a session deletes its executions and returns the ones still QUEUED or RUNNING."""
    session = _session(store)
    other = _session(store)
    queued = _execution(store, session.id)
    running = _execution(store, session.id)
    done = _execution(store, session.id)
    kept = _execution(store, other.id)
    store.claim(running.id)
    store.claim(done.id)
    _finish(store, done.id)

    active = store.delete_session(session.id)

    assert sorted(active) == sorted([queued.id, running.id])
    with pytest.raises(errors.NotFound):
        store.get_session(session.id)
    for execution in (queued, running, done):
        with pytest.raises(errors.NotFound):
            store.get_execution(execution.id)
    assert store.get_execution(kept.id).id == kept.id
    with pytest.raises(errors.NotFound):
        store.delete_session(session.id)


def test_foreign_key_cascades_in_the_database(store: Store) -> None:
    """ON DELETE CASCADE is enforced by the database itself (SQLite too: foreign_keys=ON)."""
    session = _session(store)
    _execution(store, session.id)
    with store.engine.begin() as conn:
        conn.execute(code_sessions.delete().where(code_sessions.c.id == session.id))
    assert _row_count(store, executions) == 0


def test_delete_session_wrong_owner(store: Store) -> None:
    """Another owner cannot delete a session; it is NotFound and stays."""
    session = _session(store, owner="alice")
    with pytest.raises(errors.NotFound):
        store.delete_session(session.id, owner="bob")
    with pytest.raises(errors.NotFound):
        store.delete_session("garbage")
    assert store.get_session(session.id, owner="alice") == session


# -- creating executions -------------------------------------------------------------------


def test_create_execution(store: Store) -> None:
    """A new execution is QUEUED and keeps exactly what it was asked to run."""
    session = _session(store, owner="alice")
    execution = _execution(
        store,
        session.id,
        owner="alice",
        source_code="import sys\nprint(sys.argv)  # ünïcode",
        stdin=b"\x00\xffinput\n",
        args=["-x", "y z"],
        interactive=True,
    )
    assert execution.status is ExecutionStatus.QUEUED and not execution.is_final
    assert execution.attempt == 0
    assert execution.queued_at == execution.created_at
    assert execution.started_at is None and execution.finished_at is None
    assert execution.chunks is None and execution.stdout is None
    read = store.get_execution(execution.id, owner="alice")
    assert read == execution
    assert read.stdin == b"\x00\xffinput\n"
    assert read.args == ("-x", "y z")
    assert read.limits == LIMITS
    assert read.interactive is True
    assert store.get_session(session.id, owner="alice").run_count == 1


def test_a_tty_execution_says_so(store: Store) -> None:
    """An execution asked for with a terminal keeps that; others have none."""
    with_tty = _execution(store, interactive=True, tty=True)
    assert store.get_execution(with_tty.id).tty is True
    assert store.get_execution(_execution(store).id).tty is False


def test_a_database_of_an_older_release_gets_the_new_columns(store: Store) -> None:
    """A database made before the tty and cases columns existed gets them when the tables are
    made again (SQLite: create_tables; PostgreSQL: schema.sql), and its executions read as
    without."""
    execution = _execution(store)
    with store.engine.begin() as conn:
        for column in ("tty", "case_inputs", "cases"):
            conn.exec_driver_sql(f"ALTER TABLE executions DROP COLUMN {column}")
    if store.engine.dialect.name == "sqlite":
        store.create_tables()
    else:
        store.apply_schema_sql(SCHEMA_SQL)
    read = store.get_execution(execution.id)
    assert (read.tty, read.case_inputs, read.cases) == (False, None, None)
    assert store.get_execution(_execution(store, tty=True).id).tty is True


def test_create_execution_without_session(store: Store) -> None:
    """A one-shot execution has no session."""
    execution = _execution(store, None, language="javascript", source_code="console.log(1)")
    read = store.get_execution(execution.id)
    assert read.session_id is None and read.language == "javascript"


def test_a_judge0_submission_keeps_its_own_fields(store: Store) -> None:
    """A Judge0 submission's request fields are stored with it; other executions have none."""
    fields = {"language_id": 54, "expected_output": "4\n", "wall_time_limit": 2.5}
    submission = _execution(store, None, judge0=fields)
    assert store.get_execution(submission.id).judge0 == fields
    assert store.get_execution(_execution(store).id).judge0 is None


def test_create_execution_unknown_session(store: Store) -> None:
    """Running an unknown, invalid or another owner's session is NotFound and inserts nothing."""
    session = _session(store, owner="alice")
    for session_id, owner in [(str(uuid.uuid4()), ""), ("bad", ""), (session.id, "bob")]:
        with pytest.raises(errors.NotFound):
            _execution(store, session_id, owner=owner, max_runs_per_session=5)
        with pytest.raises(errors.NotFound):
            _execution(store, session_id, owner=owner)
    assert _row_count(store, executions) == 0


def test_run_count_cap(store: Store) -> None:
    """Past max_runs_per_session, RateLimited (the cap never lifts) and nothing is inserted."""
    session = _session(store)
    for _ in range(3):
        _execution(store, session.id, max_runs_per_session=3)
    with pytest.raises(errors.RateLimited) as caught:
        _execution(store, session.id, max_runs_per_session=3)
    assert caught.value.retry_after == store_module.RUNS_EXHAUSTED_RETRY_S
    assert "3 runs" in caught.value.message
    assert _row_count(store, executions) == 3
    assert store.get_session(session.id).run_count == 3


def test_queue_caps_refuse_a_session_run_and_count_nothing(store: Store) -> None:
    """A full queue (Unavailable) or a creator with its QUEUED cap reached (RateLimited)
    refuses a session's run before anything is written: the run is not counted either."""
    session = _session(store)
    _execution(store, session.id, created_by="tenant")
    with pytest.raises(errors.Unavailable):
        _execution(store, session.id, max_queued=1, max_runs_per_session=5)
    with pytest.raises(errors.RateLimited) as caught:
        _execution(store, session.id, created_by="tenant", max_queued_by_creator=1)
    assert "at most 1 executions queued" in caught.value.message
    assert _execution(store, session.id, created_by="other", max_queued_by_creator=1)
    assert _row_count(store, executions) == 2
    assert store.get_session(session.id).run_count == 2


def test_a_session_run_takes_what_it_leaves_out_from_the_session(store: Store) -> None:
    """Language and source left out are the session's as the run is counted; given, they are
    the run's own."""
    session = store.create_session("python", "print('session')")
    own = _execution(store, session.id, language=None, source_code=None)
    assert (own.language, own.source_code) == ("python", "print('session')")
    stored = store.get_execution(own.id)
    assert (stored.language, stored.source_code) == ("python", "print('session')")
    given = _execution(store, session.id, language=None, source_code="print('given')")
    assert store.get_execution(given.id).source_code == "print('given')"


def test_run_count_cap_under_concurrency(store: Store) -> None:
    """Racing runs never exceed the cap."""
    session = _session(store)
    outcomes = _race(8, lambda i: _execution(store, session.id, max_runs_per_session=3))
    assert sum(isinstance(o, Execution) for o in outcomes) == 3
    assert sum(isinstance(o, errors.RateLimited) for o in outcomes) == 5
    assert _row_count(store, executions) == 3


def test_count_queued_and_running(store: Store) -> None:
    """count_queued counts QUEUED executions only, count_running RUNNING ones."""
    assert (store.count_queued(), store.count_running()) == (0, 0)
    first, second, third = (_execution(store) for _ in range(3))
    store.claim(first.id)
    store.cancel_queued(second.id)
    assert (store.count_queued(), store.count_running()) == (1, 1)
    store.claim(third.id)
    assert (store.count_queued(), store.count_running()) == (0, 2)
    _finish(store, first.id)
    assert (store.count_queued(), store.count_running()) == (0, 1)


# -- status moves --------------------------------------------------------------------------


def test_claim(store: Store) -> None:
    """Claim moves QUEUED to RUNNING, counts the attempt and stamps started_at."""
    execution = _execution(store)
    claimed = store.claim(execution.id)
    assert claimed is not None
    assert claimed.status is ExecutionStatus.RUNNING and claimed.attempt == 1
    assert claimed.started_at is not None and claimed.started_at >= claimed.queued_at
    assert store.get_execution(execution.id) == claimed


def test_claim_is_idempotent(store: Store) -> None:
    """A redelivered message claims nothing: RUNNING, final, unknown and invalid ids give None."""
    execution = _execution(store)
    assert store.claim(execution.id) is not None
    assert store.claim(execution.id) is None
    _finish(store, execution.id)
    assert store.claim(execution.id) is None
    assert store.claim(str(uuid.uuid4())) is None
    assert store.claim("not-a-uuid") is None
    assert store.get_execution(execution.id).attempt == 1


def test_concurrent_claims(store: Store) -> None:
    """Two threads claiming the same execution: exactly one wins."""
    for _ in range(5):
        execution = _execution(store)
        execution_id = execution.id
        outcomes = _race(2, lambda i, execution_id=execution_id: store.claim(execution_id))
        assert sum(isinstance(o, Execution) for o in outcomes) == 1
        assert sum(o is None for o in outcomes) == 1
        assert store.get_execution(execution.id).attempt == 1


def test_finish(store: Store) -> None:
    """Finish writes the final state, output and chunks, and stamps finished_at."""
    execution = _execution(store)
    store.claim(execution.id)
    finished = _finish(
        store,
        execution.id,
        status=ExecutionStatus.FAILED,
        reason="runtime_error",
        exit_code=1,
        stdout="a" * 70_000,
        stderr="Traceback ✗\n",
        compile_output="",
        stderr_truncated=True,
        chunks=[("stdout", 65_536), ("stderr", 12), ("stdout", 4_464)],
        error_message=None,
    )
    assert finished is not None and finished.is_final
    assert finished.status is ExecutionStatus.FAILED and finished.reason == "runtime_error"
    assert finished.finished_at is not None and finished.started_at is not None
    assert finished.finished_at >= finished.started_at
    read = store.get_execution(execution.id)
    assert read == finished
    assert read.stdout == "a" * 70_000 and read.stderr == "Traceback ✗\n"
    assert read.stderr_truncated is True and read.stdout_truncated is False
    assert read.chunks == [("stdout", 65_536), ("stderr", 12), ("stdout", 4_464)]
    assert (read.exit_code, read.signal, read.memory_kb) == (1, None, 9000)


def test_finish_is_guarded(store: Store) -> None:
    """A second finish (or one for an unknown id) returns None and changes nothing."""
    execution = _execution(store)
    store.claim(execution.id)
    first = _finish(store, execution.id)
    assert _finish(store, execution.id, status=ExecutionStatus.TIMEOUT, reason="timeout") is None
    assert store.get_execution(execution.id) == first
    assert _finish(store, str(uuid.uuid4())) is None
    assert _finish(store, "junk") is None


def test_finish_from_queued(store: Store) -> None:
    """An internal error before claim finishes a QUEUED execution directly."""
    execution = _execution(store)
    finished = _finish(
        store,
        execution.id,
        status=ExecutionStatus.FAILED,
        reason="internal_error",
        exit_code=None,
        stdout="",
        chunks=[],
        error_message="sandbox unavailable",
    )
    assert finished is not None
    assert finished.started_at is None and finished.attempt == 0
    assert finished.error_message == "sandbox unavailable" and finished.chunks == []


def test_finish_accepts_plain_strings_and_list_chunks(store: Store) -> None:
    """Callers may pass the status as a string and the chunk index as lists (JSON-shaped)."""
    execution = _execution(store)
    store.claim(execution.id)
    finished = _finish(store, execution.id, status="TIMEOUT", chunks=[["stdout", 2]])
    assert finished is not None and finished.status is ExecutionStatus.TIMEOUT
    assert finished.chunks == [("stdout", 2)]


def test_an_execution_with_cases_keeps_them_and_their_results(store: Store) -> None:
    """The cases asked for are kept (never sent); each case's result is stored with the end,
    and the chunk index says which case each chunk was of."""
    case_inputs = [{"stdin": "1", "args": None, "expected_output": "1"}, {"stdin": "x\u0000"}]
    execution = _execution(store, case_inputs=case_inputs)
    assert store.get_execution(execution.id).case_inputs == case_inputs
    store.claim(execution.id)
    results = [
        CaseResult(status=ExecutionStatus.COMPLETED, reason=Reason.EXIT, exit_code=0,
                   stdout="1\n", stderr="", verdict=Verdict.ACCEPTED, execution_time_ms=3),
        CaseResult(status=ExecutionStatus.TIMEOUT, reason=Reason.TIMEOUT, signal=9, stdout="",
                   stderr="", error_message="Execution exceeded 1 second timeout"),
    ]  # fmt: skip
    finished = _finish(
        store,
        execution.id,
        status=ExecutionStatus.TIMEOUT,
        reason="timeout",
        cases=results,
        chunks=[["compile", 4], ("stdout", 2, 0)],
    )
    assert finished is not None and finished.cases == results
    assert finished.chunks == [("compile", 4), ("stdout", 2, 0)]
    read = store.get_execution(execution.id)
    assert read.cases == results and read.chunks == finished.chunks
    assert _execution(store).case_inputs is None


def test_finish_needs_a_final_status(store: Store) -> None:
    """Finishing with a non-final status is a programming error."""
    execution = _execution(store)
    with pytest.raises(RuntimeError):
        _finish(store, execution.id, status=ExecutionStatus.RUNNING)
    assert store.get_execution(execution.id).status is ExecutionStatus.QUEUED


def test_cancel_queued(store: Store) -> None:
    """A QUEUED execution is CANCELLED with reason 'cancelled'; then nothing else moves it."""
    execution = _execution(store)
    cancelled = store.cancel_queued(execution.id)
    assert cancelled is not None
    assert cancelled.status is ExecutionStatus.CANCELLED and cancelled.reason == "cancelled"
    assert cancelled.finished_at is not None and cancelled.chunks == []
    assert store.cancel_queued(execution.id) is None
    assert store.claim(execution.id) is None
    assert _finish(store, execution.id) is None


def test_cancel_queued_only_when_queued(store: Store) -> None:
    """A RUNNING execution is not cancelled by cancel_queued (its program is)."""
    execution = _execution(store)
    store.claim(execution.id)
    assert store.cancel_queued(execution.id) is None
    assert store.cancel_queued("nope") is None
    assert store.get_execution(execution.id).status is ExecutionStatus.RUNNING


def test_get_execution_not_found(store: Store) -> None:
    """Unknown ids, invalid ids and another owner's execution are NotFound."""
    execution = _execution(store, owner="alice")
    for execution_id, owner in [(str(uuid.uuid4()), "alice"), ("x", "alice"), (execution.id, "")]:
        with pytest.raises(errors.NotFound):
            store.get_execution(execution_id, owner=owner)


# -- listing -------------------------------------------------------------------------------


def test_list_executions_pages_newest_first(store: Store) -> None:
    """Pages of `limit`, newest first, following the `before` cursor to the end."""
    session = _session(store)
    _execution(store)  # one-shot, not listed
    created = [_execution(store, session.id) for _ in range(7)]
    newest_first = [e.id for e in reversed(created)]

    assert [e.id for e in store.list_executions(session.id)] == newest_first

    pages: list[list[str]] = []
    before: str | None = None
    while True:
        page = store.list_executions(session.id, limit=3, before=before)
        if not page:
            break
        pages.append([e.id for e in page])
        before = page[-1].id
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]


def test_list_executions_ties_broken_by_id(store: Store) -> None:
    """Executions created at the same instant are ordered by id, and paging keeps them all."""
    session = _session(store)
    created = [_execution(store, session.id) for _ in range(5)]
    same_instant = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with store.engine.begin() as conn:
        conn.execute(executions.update().values(created_at=same_instant))
    expected = sorted((e.id for e in created), reverse=True)
    first = store.list_executions(session.id, limit=2)
    rest = store.list_executions(session.id, limit=10, before=first[-1].id)
    assert [e.id for e in first + rest] == expected


def test_list_executions_errors(store: Store) -> None:
    """Unknown or another owner's session, or a cursor that is no execution of it, is
    NotFound; a cursor that is no id, or a bad limit, is InvalidValue."""
    session = _session(store, owner="alice")
    elsewhere = _execution(store, None, owner="alice")
    assert store.list_executions(session.id, owner="alice") == []
    with pytest.raises(errors.NotFound):
        store.list_executions(session.id, owner="bob")
    with pytest.raises(errors.NotFound):
        store.list_executions(str(uuid.uuid4()))
    with pytest.raises(errors.NotFound):
        store.list_executions("zzz")
    with pytest.raises(errors.InvalidValue):
        store.list_executions(session.id, owner="alice", before="zzz")
    for before in (str(uuid.uuid4()), elsewhere.id):
        with pytest.raises(errors.NotFound):
            store.list_executions(session.id, owner="alice", before=before)
    with pytest.raises(errors.InvalidValue):
        store.list_executions(session.id, owner="alice", limit=0)


# -- lifecycle -----------------------------------------------------------------------------


def test_ping_and_create_tables_again(store: Store) -> None:
    """ping answers; creating the tables again is harmless."""
    store.ping()
    store.create_tables()
    store.ping()


def test_create_tables_adds_new_columns_to_an_older_database(tmp_path: Path) -> None:
    """An embedded database made before executions.judge0 gets the column, its rows kept."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE executions DROP COLUMN judge0")
    engine.dispose()
    store = Store.from_url(url)
    try:
        store.create_tables()
        execution = _execution(store, None, judge0={"language_id": 71})
        assert store.get_execution(execution.id).judge0 == {"language_id": 71}
    finally:
        store.close()


def test_unreachable_database_is_unavailable() -> None:
    """A database that cannot be reached raises Unavailable, chained to the driver's error."""
    unreachable = Store.from_url("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(errors.Unavailable) as caught:
            unreachable.get_session(str(uuid.uuid4()))
        assert caught.value.http_status == 503 and caught.value.retry_after is not None
        assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
        with pytest.raises(errors.Unavailable):
            unreachable.ping()
    finally:
        unreachable.close()


def test_sqlite_from_url_pragmas(tmp_path: Path) -> None:
    """An embedded store uses WAL, synchronous=NORMAL, a busy timeout and foreign keys."""
    sqlite_store = Store.from_url(f"sqlite:///{tmp_path / 'embedded.db'}")
    try:
        with sqlite_store.engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 1,
            "busy_timeout": 5000,
            "foreign_keys": 1,
        }
    finally:
        sqlite_store.close()


@pytest.mark.postgresql
def test_postgresql_from_url() -> None:
    """from_url builds a working psycopg 3 engine, also from a bare postgresql:// URL."""
    url = require_postgresql()
    bare = sa.make_url(url).set(drivername="postgresql")
    postgresql_store = Store.from_url(bare.render_as_string(hide_password=False))
    try:
        assert postgresql_store.engine.dialect.driver == "psycopg"
        assert postgresql_store.engine.pool.size() == 10  # type: ignore[attr-defined]
        postgresql_store.ping()
    finally:
        postgresql_store.close()


# -- helpers -------------------------------------------------------------------------------


def _race(n: int, call: Any) -> list[Any]:
    """Run call(i) in n threads released together; return each result or raised exception."""
    barrier = threading.Barrier(n)
    outcomes: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = call(i)
        except Exception as exc:  # collected for the assertions
            outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


@pytest.mark.postgresql
def test_lost_postgresql_connections_fail_one_call_then_reconnect() -> None:
    """Pooled connections killed under the store (a database restart) fail the next call with
    Unavailable, not a driver error; the pool then drops every connection it had, so the calls
    after that work instead of each meeting another dead connection."""
    with postgresql_schema() as (engine, _schema):
        postgresql_store = Store(engine)
        postgresql_store.apply_schema_sql(SCHEMA_SQL)
        try:
            execution = _execution(postgresql_store)
            held = [engine.connect() for _ in range(3)]  # three connections in the pool
            backend_pids = [
                conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() for conn in held
            ]
            for conn in held:
                conn.close()
            admin = sa.create_engine(engine.url, poolclass=sa.NullPool)
            with admin.connect() as conn:
                for backend_pid in backend_pids:
                    conn.exec_driver_sql(f"SELECT pg_terminate_backend({backend_pid})")
            admin.dispose()
            with pytest.raises(errors.Unavailable):
                postgresql_store.claim(execution.id)
            claimed = postgresql_store.claim(execution.id)
            assert claimed is not None and claimed.status == ExecutionStatus.RUNNING
            assert postgresql_store.get_execution(execution.id).status == ExecutionStatus.RUNNING
        finally:
            postgresql_store.close()


def test_sqlite_connection_closed_under_the_store_is_opened_again(tmp_path: Path) -> None:
    """The store keeps SQLite's one connection; if it is closed behind its back (invalidated),
    one call is Unavailable and the next one works on a new connection."""
    sqlite_store = Store.from_url(f"sqlite:///{tmp_path / 'reopened.db'}")
    sqlite_store.create_tables()
    try:
        execution = _execution(sqlite_store)
        with sqlite_store.engine.connect() as conn:
            conn.invalidate()  # closes the pool's one connection
        with pytest.raises(errors.Unavailable):
            sqlite_store.get_execution(execution.id)
        assert sqlite_store.get_execution(execution.id).id == execution.id
        assert sqlite_store.claim(execution.id) is not None
    finally:
        sqlite_store.close()

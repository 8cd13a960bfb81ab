"""X-Ray (Powertools Tracer), when tracing is on: a subsegment per unit of work, one per
statement (its SQL, never its parameters) and one per new connection.

The handler calls these only with tracing on, except `traced`, which takes the
handler's `tracer` or None (tracing off) and then does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from dataaccess.errors import DomainError
from failures import describe

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer


@contextlib.contextmanager
def traced(tracer: Tracer | None, name: str, **annotations: int | str) -> Iterator[None]:
    """A subsegment around a unit of work when tracing is on. A failure is marked with
    `describe(error)`, never the error's own text, which may quote values."""
    recorder = tracer.provider if tracer is not None else None
    subsegment = recorder.begin_subsegment(name) if recorder is not None else None
    if subsegment is None:  # tracing off, or no trace to join
        yield
        return
    for key, value in annotations.items():
        subsegment.put_annotation(key, value)
    try:
        yield
    except Exception as exc:
        mark_failed(subsegment, exc)
        raise
    finally:
        recorder.end_subsegment()


def mark_failed(subsegment: Any, exc: BaseException) -> None:
    """A rejected event is the caller's error (an X-Ray error); anything else is ours (a fault)."""
    if isinstance(exc, DomainError):
        subsegment.add_error_flag()
    else:
        subsegment.add_fault_flag()
    subsegment.put_annotation("error", describe(exc))


def trace_engine(tracer: Tracer, engine: Engine) -> None:
    """A remote subsegment for each statement on `engine` (the SQL as sent to the driver,
    with placeholders: psycopg2 binds the values later) and for each new connection
    (IAM token, TLS and login: most of a cold invocation's database time)."""
    recorder = tracer.provider
    url = engine.url
    name = f"{url.database}@{url.host}"
    sql = {
        "url": f"postgresql://{url.host}:{url.port}/{url.database}",
        "database_type": "PostgreSQL",
    }

    def connected(dbapi_connection: Any, record: Any) -> None:
        subsegment = recorder.begin_subsegment(f"connect {name}", "remote")
        if subsegment is not None:
            subsegment.start_time = record.last_connect_time  # before the token was minted
            recorder.end_subsegment()

    # The statement's subsegment rides on its execution context, from before the
    # cursor executes to after it returns or fails.
    def executing(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        subsegment = recorder.begin_subsegment(name, "remote")
        if subsegment is not None:
            subsegment.set_sql({**sql, "sanitized_query": statement})
            context.__dict__["xray_subsegment"] = subsegment

    def executed(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        if context.__dict__.pop("xray_subsegment", None) is not None:
            recorder.end_subsegment()

    def failed(error: sa_exc.ExceptionContext) -> None:
        context = error.execution_context
        subsegment = context.__dict__.pop("xray_subsegment", None) if context else None
        if subsegment is not None:
            mark_failed(subsegment, error.sqlalchemy_exception or error.original_exception)
            recorder.end_subsegment()

    sa_event.listen(engine, "connect", connected)
    sa_event.listen(engine, "before_cursor_execute", executing)
    sa_event.listen(engine, "after_cursor_execute", executed)
    sa_event.listen(engine, "handle_error", failed)

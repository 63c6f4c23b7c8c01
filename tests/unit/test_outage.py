"""Which errors mean "the database is unreachable" (waited out) and which are the
envelope's own failure (retried and counted)."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from routing.engine import is_outage


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_connection_failures_are_outages() -> None:
    assert is_outage(ConnectionRefusedError())
    assert is_outage(InterfaceError("SELECT 1", {}, Exception("connection is closed")))
    assert is_outage(OperationalError("SELECT 1", {}, _PgError("57P01")))  # admin shutdown
    assert is_outage(OperationalError("SELECT 1", {}, _PgError("08006")))
    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = ConnectionResetError()
    assert is_outage(wrapped)


def test_data_errors_are_not_outages() -> None:
    assert not is_outage(ValueError("bad phone number"))
    assert not is_outage(IntegrityError("INSERT", {}, _PgError("23505")))
    assert not is_outage(OperationalError("SELECT", {}, _PgError("40P01")))  # deadlock

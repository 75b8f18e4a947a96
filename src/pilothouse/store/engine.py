"""The Store: one async engine, write transactions, and the mapping of driver failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from pilothouse.errors import StoreUnavailable

Dialect = Literal["sqlite", "postgresql"]

_AFTER_COMMIT = "pilothouse_after_commit"
_UNAVAILABLE = (OperationalError, InterfaceError, OSError, asyncio.TimeoutError)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=5000",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # pysqlite's own transaction handling starts transactions late; emit BEGIN ourselves so a
    # read-then-write inside a write transaction is atomic (IMMEDIATE takes the write lock).
    mode = "BEGIN IMMEDIATE" if conn.get_execution_options().get("pilothouse_write") else "BEGIN"
    conn.exec_driver_sql(mode)


def after_commit(conn: AsyncConnection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the write transaction on ``conn`` has committed."""
    conn.info.setdefault(_AFTER_COMMIT, []).append(callback)


def is_unavailable(exc: BaseException) -> bool:
    """Whether a driver error means the store cannot be reached (not a constraint failure)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _UNAVAILABLE)


class Store:
    """Connections to the database, with write serialisation where the engine needs it."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect: Dialect = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
            kwargs["connect_args"] = {"timeout": 5, "command_timeout": 30}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        # SQLite has one writer; queue writers in-process instead of spinning on SQLITE_BUSY.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a read transaction."""
        with unavailable_as("read"):
            async with self.engine.connect() as conn, conn.begin():
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a write transaction, committed on success."""
        if self._write_lock is not None:
            async with self._write_lock, self._write_transaction() as conn:
                yield conn
        else:
            async with self._write_transaction() as conn:
                yield conn

    @asynccontextmanager
    async def _write_transaction(self) -> AsyncIterator[AsyncConnection]:
        with unavailable_as("written"):
            async with self.engine.connect() as raw:
                conn = await raw.execution_options(pilothouse_write=True)
                # conn.info lives with the pooled DBAPI connection: start each transaction clean.
                conn.info.pop(_AFTER_COMMIT, None)
                try:
                    async with conn.begin():
                        yield conn
                except BaseException:
                    conn.info.pop(_AFTER_COMMIT, None)
                    raise
                for callback in conn.info.pop(_AFTER_COMMIT, []):
                    callback()

    @asynccontextmanager
    async def serial_writes(self) -> AsyncIterator[None]:
        """Hold the in-process writer queue (SQLite's) for a write made outside ``write()``."""
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


@contextmanager
def unavailable_as(verb: str) -> Iterator[None]:
    """Turn a driver's "cannot reach the database" into StoreUnavailable (a 503)."""
    try:
        yield
    except DBAPIError as exc:
        if is_unavailable(exc):
            raise StoreUnavailable(f"the store cannot be {verb}: {_brief(exc)}") from exc
        raise
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"the store cannot be {verb}: {_brief(exc)}") from exc


def _brief(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return first[0][:200] if first else type(exc).__name__

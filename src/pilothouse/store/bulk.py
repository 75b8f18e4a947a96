"""Insert many rows of one table in one transaction, without SQLAlchemy's per-row work.

For tables written on a hot path (usage rows: one per LLM call). SQLAlchemy's executemany
processes every parameter of every row in Python and, on SQLite, crosses to aiosqlite's thread
once per statement (BEGIN, INSERT, COMMIT). Here a batch costs:

- SQLite: one hop to a thread of our own, which runs ``BEGIN IMMEDIATE``, the ``executemany``
  and ``COMMIT`` on its own ``sqlite3`` connection to the same file, under the store's write
  lock (SQLite has one writer; the lock queues us with the store's other writers in process);
- PostgreSQL: one ``executemany`` of asyncpg (one prepared statement, pipelined, atomic) on a
  pooled connection.

Values go through the column types' own bind processors for the dialect, so what is stored is
byte for byte what SQLAlchemy would store (timestamps above all). A row that conflicts on
``key`` is skipped, which makes a retried batch harmless.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from sqlalchemy import Table

from pilothouse.errors import StoreUnavailable
from pilothouse.store.engine import Store, unavailable_as

DRIVER_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
Statement = tuple[str, list[tuple[Any, ...]]]
"""SQL with ``?`` placeholders and the parameter tuples to execute it with."""


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (the SQL here holds no literal ``?``)."""
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]


SQLITE_PRAGMAS = ("PRAGMA busy_timeout=5000", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")


def open_sqlite(store: Store) -> sqlite3.Connection:
    """A ``sqlite3`` connection of a writer's own to the store's file, for its one thread
    (autocommit: the writer issues ``BEGIN IMMEDIATE`` and ``COMMIT`` itself)."""
    path = store.engine.url.database
    if not path or path == ":memory:":
        raise sqlite3.OperationalError("bulk writes need a SQLite file, not memory")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    return conn


class OwnWriter:
    """A hot-path writer's own way into the store, one transaction at a time.

    SQLite: a ``sqlite3`` connection of its own on a thread of its own, the transaction taken
    with ``BEGIN IMMEDIATE`` under the store's writer queue (one thread hop per transaction).
    PostgreSQL: a pooled asyncpg connection inside a transaction. Either way a failure of the
    driver is raised as StoreUnavailable and the transaction is rolled back.
    """

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self._name = name
        self._thread: ThreadPoolExecutor | None = None
        self._sqlite: sqlite3.Connection | None = None

    async def sqlite(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``work`` on the thread, inside one transaction committed after it."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        async with self._store.serial_writes():
            await loop.run_in_executor(self._thread, self._sqlite_transaction, work)

    async def postgres(self, work: Callable[[Any], Awaitable[None]]) -> None:
        """Await ``work(asyncpg connection)`` inside one transaction committed after it."""
        with unavailable_as("written"):
            async with self._store.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                try:
                    async with driver.transaction():
                        await work(driver)
                except DRIVER_FAILURES as exc:
                    raise StoreUnavailable(f"the store cannot be written: {exc}") from exc

    async def close(self) -> None:
        """Close the SQLite connection and its thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, self._sqlite_close)
            thread.shutdown(wait=False)

    def _sqlite_transaction(self, work: Callable[[sqlite3.Connection], None]) -> None:
        try:
            conn = self._sqlite
            if conn is None:
                conn = self._sqlite = open_sqlite(self._store)
            conn.execute("BEGIN IMMEDIATE")
            try:
                work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store cannot be written: {exc}") from exc

    def _sqlite_close(self) -> None:
        conn, self._sqlite = self._sqlite, None
        if conn is not None:
            conn.close()


class BulkInsert:
    """``await insert(rows)`` writes ``rows`` (mappings with every column) atomically."""

    def __init__(self, store: Store, table: Table, key: str) -> None:
        self._store = store
        dialect = store.engine.dialect
        self._columns: list[tuple[str, Callable[[Any], Any] | None]] = [
            (c.name, c.type.bind_processor(dialect)) for c in table.columns
        ]
        names = ", ".join(name for name, _ in self._columns)
        if store.dialect == "sqlite":
            marks = ", ".join("?" for _ in self._columns)
        else:
            marks = ", ".join(f"${i}" for i in range(1, len(self._columns) + 1))
        self._sql = (
            f"INSERT INTO {table.name} ({names}) VALUES ({marks}) ON CONFLICT ({key}) DO NOTHING"
        )
        self._writer = OwnWriter(store, "bulk-insert")

    @property
    def sql(self) -> str:
        """The INSERT (``?`` placeholders on SQLite, ``$n`` on PostgreSQL)."""
        return self._sql

    def values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """``row`` as the driver's parameters, in column order."""
        return tuple(
            row[name] if process is None else process(row[name]) for name, process in self._columns
        )

    async def __call__(
        self, rows: Sequence[Mapping[str, Any]], then: Sequence[Statement] = ()
    ) -> None:
        """Insert ``rows``, then run each of ``then`` (SQL with ``?`` placeholders, executed
        once per parameter tuple), all in one transaction; raise StoreUnavailable if it did not
        commit."""
        values = [self.values(row) for row in rows]
        steps = [(self._sql, values), *((sql, params) for sql, params in then if params)]
        if self._store.dialect == "postgresql":
            pg_steps = [(numbered(sql), params) for sql, params in steps]

            async def write_pg(driver: Any) -> None:
                for sql, params in pg_steps:
                    await driver.executemany(sql, params)

            await self._writer.postgres(write_pg)
            return

        def write_sqlite(conn: sqlite3.Connection) -> None:
            for sql, params in steps:
                conn.executemany(sql, params)

        await self._writer.sqlite(write_sqlite)

    async def close(self) -> None:
        """Close the SQLite connection and its thread (idempotent)."""
        await self._writer.close()

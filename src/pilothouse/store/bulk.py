"""Writes on a hot path, without SQLAlchemy's per-row and per-statement work.

For the tables written once or twice per LLM call (usage rows, budget reservations and
counters). SQLAlchemy's executemany processes every parameter of every row in Python and, on
SQLite, crosses to aiosqlite's thread once per statement (BEGIN, INSERT, COMMIT). Here a
transaction costs:

- SQLite: ``BEGIN IMMEDIATE``, the statements and ``COMMIT`` on a ``sqlite3`` connection of
  our own, on the event loop's thread, under the store's write lock (SQLite has one writer; the
  lock queues us with the store's other writers in process). No thread: with
  ``synchronous=NORMAL`` a WAL commit does not wait for the disk, so the transaction is pure CPU
  (a few hundred microseconds for a tick of 32 calls), and a thread only added a hop and a
  contest for the GIL at every statement on a busy CPU. What could make the loop wait is run
  on a thread of our own instead: a transaction that finds the write lock taken (another
  process: ``BEGIN IMMEDIATE`` fails at once, nothing was done, and the transaction runs on the
  thread, which waits for the lock as any writer does), and the WAL checkpoint (off on our
  connection, run on the thread's every so many transactions);
- PostgreSQL: asyncpg's ``executemany`` (one prepared statement, pipelined) and ``fetch`` on a
  connection the writer keeps (no pool checkout and no ping per transaction), in one
  transaction.

``RowInsert`` turns rows into parameters through the column types' own bind processors, so what
is stored is byte for byte what SQLAlchemy would store (timestamps above all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Table, make_url

from pilothouse.errors import StoreUnavailable
from pilothouse.store.engine import Store

log = logging.getLogger(__name__)

DRIVER_FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. the server ended the connection while it was idle
    OSError,
    TimeoutError,
)
RUN_AGAIN = (  # failures after which nothing was committed: the transaction can run again
    asyncpg.DeadlockDetectedError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
)
V = TypeVar("V")
Statement = tuple[str, list[tuple[Any, ...]]]
"""SQL with ``?`` placeholders and the parameter tuples to execute it with."""


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (the SQL here holds no literal ``?``)."""
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]


SQLITE_PRAGMAS = ("PRAGMA busy_timeout=5000", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")
# The connection on the event loop's thread never waits: not for the write lock, not for a
# checkpoint (OwnWriter runs both on its thread).
SQLITE_INLINE_PRAGMAS = (
    "PRAGMA busy_timeout=0",
    "PRAGMA wal_autocheckpoint=0",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
# Transactions between WAL checkpoints: a tick writes a few pages to tens, so the WAL stays
# within some thousands of pages (SQLite's own default checkpoints at 1,000).
CHECKPOINT_EVERY = 64


def sqlite_path(store: Store) -> str:
    """The store's SQLite file (a writer of its own needs a file, not memory)."""
    path = store.engine.url.database
    if not path or path == ":memory:":
        raise sqlite3.OperationalError("bulk writes need a SQLite file, not memory")
    return path


def open_sqlite(store: Store, pragmas: tuple[str, ...] = SQLITE_PRAGMAS) -> sqlite3.Connection:
    """A ``sqlite3`` connection of a writer's own to the store's file, for the one thread that
    opens it (autocommit: the writer issues ``BEGIN IMMEDIATE`` and ``COMMIT`` itself)."""
    conn = sqlite3.connect(sqlite_path(store), isolation_level=None, check_same_thread=True)
    for pragma in pragmas:
        conn.execute(pragma)
    return conn


def _busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


def _asyncpg_dsn(url: str) -> str:
    """The store's SQLAlchemy URL as a DSN asyncpg takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# A hot-path writer only looks rows up by their keys. A table whose rows are inserted and
# deleted by the thousand a second (the ledger's reservations) looks empty to PostgreSQL's
# planner once vacuumed, and a statement planned then scans it whole; the plan is kept with
# the connection's prepared statement while the table fills with dead rows (until autovacuum's
# next ANALYZE, if it runs at all), and every tick reads them all: measured, half the server's
# CPU of a budgeted call. The writer's connection is told to scan only where no index serves
# (by a statement, not a startup parameter, which a connection pooler may refuse).
KEYED_ONLY = "SET enable_seqscan = off"


class OwnWriter:
    """A hot-path writer's own way into the store, one transaction at a time.

    SQLite: a ``sqlite3`` connection of its own on the event loop's thread, the transaction
    taken with ``BEGIN IMMEDIATE`` under the store's writer queue; when another process holds
    the write lock, the transaction runs on a thread of its own instead, and so do the WAL
    checkpoints (see the module). PostgreSQL: an asyncpg connection of its own, finding rows
    by key (``KEYED_ONLY``). Either way a failure of the driver is raised as StoreUnavailable
    and the transaction is rolled back.
    """

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self._name = name
        self._thread: ThreadPoolExecutor | None = None
        self._sqlite: sqlite3.Connection | None = None  # the thread's
        self._inline: sqlite3.Connection | None = None  # the event loop's
        self._commits = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._pg: asyncpg.Connection | None = None

    async def sqlite(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``work`` inside one transaction committed after it (``work`` may be run on
        either connection: it must not keep one)."""
        async with self._store.serial_writes():
            try:
                conn = self._inline
                if conn is None:
                    conn = self._inline = open_sqlite(self._store, SQLITE_INLINE_PRAGMAS)
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if not _busy(exc):
                    raise StoreUnavailable(f"the store cannot be written: {exc}") from exc
                # Another process writes: wait for it on the thread, not on the loop.
                await self._on_thread(self._sqlite_transaction, work)
            else:
                _run_in_transaction(conn, work)
            self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and self._checkpointing is None:
            self._checkpointing = asyncio.create_task(self._checkpoint())

    async def _on_thread(self, function: Callable[..., None], *args: Any) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def _checkpoint(self) -> None:
        """Checkpoint the WAL on the thread, holding the write lock (the lock is fair: the
        checkpoint goes before the next transaction), so that it completes and the next
        transaction starts the WAL over; one racing a stream of writers never catches up. A
        failure is logged: what was written is committed, and the next checkpoint catches up."""
        try:
            async with self._store.serial_writes():
                await self._on_thread(self._sqlite_checkpoint)
        except Exception as exc:  # nobody awaits a checkpoint: say why it failed, here
            log.warning("%s: WAL checkpoint failed: %s", self._name, exc)
        finally:
            self._checkpointing = None

    def _sqlite_checkpoint(self) -> None:
        conn = self._sqlite
        if conn is None:
            conn = self._sqlite = open_sqlite(self._store)
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def postgres(
        self, work: Callable[[Any], Awaitable[None]], *, transaction: bool = True
    ) -> None:
        """Await ``work(asyncpg connection)`` inside one transaction committed after it
        (``work`` may be run twice: it must start from its inputs each time). Without
        ``transaction``, ``work`` must be one statement that is harmless to run twice.

        The writer keeps one connection of its own (no pool checkout, no ping per
        transaction); a failure of the driver drops it, and the next transaction connects
        again."""
        for attempt in (1, 2):
            committing = False
            try:
                conn = await self._connection()
                if not transaction:
                    await work(conn)
                    return
                async with conn.transaction():
                    await work(conn)
                    committing = True
                return
            except DRIVER_FAILURES as exc:
                await self._drop_postgres()
                # A connection that died while idle (the server restarted, say) is replaced
                # and the transaction run again; never once COMMIT was sent (it may have
                # committed).
                if committing or attempt == 2 or not isinstance(exc, RUN_AGAIN):
                    raise StoreUnavailable(f"the store cannot be written: {exc}") from exc

    async def postgres_once(self, work: Callable[[Any], Awaitable[V]]) -> V:
        """Await ``work(asyncpg connection)``, one statement committed by itself, once: a
        failure of the driver is raised as StoreUnavailable and never run again (it may have
        committed), and the connection is replaced."""
        try:
            return await work(await self._connection())
        except DRIVER_FAILURES as exc:
            await self._drop_postgres()
            raise StoreUnavailable(f"the store cannot be written: {exc}") from exc

    async def _connection(self) -> asyncpg.Connection:
        conn = self._pg
        if conn is None or conn.is_closed():
            conn = await asyncpg.connect(
                _asyncpg_dsn(self._store.url), timeout=5, command_timeout=30
            )
            try:
                await conn.execute(KEYED_ONLY)
            except BaseException:
                conn.terminate()
                raise
            self._pg = conn
        return conn

    async def _drop_postgres(self) -> None:
        conn, self._pg = self._pg, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        """Close the writer's connection, and on SQLite its thread (idempotent)."""
        conn, self._pg = self._pg, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(*DRIVER_FAILURES):
                await conn.close(timeout=5)
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
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
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store cannot be written: {exc}") from exc
        _run_in_transaction(conn, work)

    def _sqlite_close(self) -> None:
        conn, self._sqlite = self._sqlite, None
        if conn is not None:
            conn.close()


def _run_in_transaction(
    conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], None]
) -> None:
    """Run ``work`` in the transaction ``conn`` has begun, then commit (or roll back)."""
    try:
        work(conn)
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreUnavailable(f"the store cannot be written: {exc}") from exc
        raise


class RowInsert:
    """The ``INSERT`` of whole rows of ``table``, skipping a row whose ``key`` exists (without
    a key, such a row fails the statement), and each row as the driver's parameters (through
    the columns' own bind processors for the dialect, so what is stored is byte for byte what
    SQLAlchemy would store)."""

    def __init__(
        self, store: Store, table: Table, key: str | None, omit: frozenset[str] = frozenset()
    ) -> None:
        dialect = store.engine.dialect
        # The type as the dialect runs it (``dialect_impl``): a TypeDecorator's own processor
        # is built on its generic impl, which on SQLite hands sqlite3 a datetime to adapt itself
        # (deprecated in Python 3.12, and not the text SQLAlchemy stores). Columns in ``omit``
        # are not written (the database's NULL or default stands).
        self._columns: list[tuple[str, Callable[[Any], Any] | None]] = [
            (c.name, c.type.dialect_impl(dialect).bind_processor(dialect))
            for c in table.columns
            if c.name not in omit
        ]
        names = ", ".join(name for name, _ in self._columns)
        marks = ", ".join("?" for _ in self._columns)
        skip = f" ON CONFLICT ({key}) DO NOTHING" if key is not None else ""
        self.sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks}){skip}"
        """The statement, with ``?`` placeholders (``numbered`` makes them PostgreSQL's)."""

    def as_is(self, names: tuple[str, ...]) -> bool:
        """Whether a tuple of values for the columns ``names``, in that order, is already the
        driver's parameters: they are the table's columns in its order, none processed."""
        return tuple(name for name, _ in self._columns) == names and all(
            process is None for _, process in self._columns
        )

    def values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """``row`` (a mapping with every column) as the driver's parameters, in column order."""
        return tuple(
            row[name] if process is None else process(row[name]) for name, process in self._columns
        )

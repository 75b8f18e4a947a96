"""The ledger writer stores usage rows as SQLAlchemy would, skips conflicts, and writes a tick
atomically."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, make_url, select, text

from pilothouse.budgets.writer import LedgerWriter
from pilothouse.errors import StoreUnavailable
from pilothouse.gateway.tables import usage_records
from pilothouse.services import Services
from pilothouse.store import bulk as bulk_module
from pilothouse.store.bulk import sqlite_path
from pilothouse.store.engine import Store

WHEN = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=UTC)


async def _org(services: Services) -> str:
    async with services.store.read() as conn:
        return str((await conn.execute(text("SELECT id FROM organizations"))).scalar_one())


def _row(org: str, request_id: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in usage_records.columns}
    row.update(
        request_id=request_id,
        org_id=org,
        labels='{"run": "a"}',
        skills='["git"]',
        plugins="[]",
        endpoint="/v1/chat/completions",
        model_alias="m",
        stream=1,
        input_tokens=10,
        output_tokens=2**40,  # beyond 32 bits
        cache_read_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        cost_picos=123_456_789_012,
        status="ok",
        http_status=200,
        retries=0,
        estimated=0,
        latency_ms=5,
        created_at=WHEN,
    )
    row.update(changes)
    return row


async def _rows(services: Services) -> list[dict[str, Any]]:
    async with services.store.read() as conn:
        result = await conn.execute(select(usage_records).order_by(usage_records.c.request_id))
        return [dict(r) for r in result.mappings()]


async def _count(services: Services) -> int:
    async with services.store.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar())


class Writer:
    """A ledger writer of its own, writing ``rows`` in one tick."""

    def __init__(self, services: Services) -> None:
        self._writer = LedgerWriter(services.store)

    async def __aenter__(self) -> Writer:
        self._writer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._writer.stop()

    async def __call__(self, rows: list[dict[str, Any]]) -> None:
        await asyncio.gather(*(self._writer.record(row) for row in rows))


# Text that a JSON parameter must carry exactly: quotes, backslashes, control characters,
# JSON inside a string, characters beyond ASCII and beyond the BMP.
AWKWARD = 'he said "no" \\ C:\\tmp\\x\nline two\tend \u00e9 \u2713 \U0001f680 {"a": [1, "\\u0041"]}'


async def test_rows_read_back_as_sqlalchemys_own_rows_do(services: Services) -> None:
    org = await _org(services)
    awkward = {
        "error": AWKWARD,
        "client_session": AWKWARD[:100],
        "labels": '{"k\\"ey": "v\\u00e9 \u2713"}',
    }
    async with Writer(services) as bulk:
        await bulk([_row(org, "req_bulk", **awkward)])
    async with services.store.write() as conn:
        await conn.execute(insert(usage_records).values(_row(org, "req_orm", **awkward)))
    bulk_row, orm_row = await _rows(services)
    assert bulk_row == {**orm_row, "request_id": "req_bulk"}
    assert bulk_row["error"] == AWKWARD
    assert bulk_row["created_at"] == WHEN
    # Stored alike, byte for byte (a time included: on SQLite, SQLAlchemy's text, not what
    # sqlite3's own datetime adapter would make of it), so range queries and ordering treat
    # both rows the same.
    async with services.store.read() as conn:
        stored = await conn.execute(
            text("SELECT CAST(created_at AS TEXT) FROM usage_records ORDER BY request_id")
        )
        as_bulk, as_orm = stored.scalars()
        assert as_bulk == as_orm
        since = WHEN - timedelta(microseconds=1)
        found = await conn.execute(
            select(usage_records.c.request_id).where(usage_records.c.created_at > since)
        )
        assert sorted(found.scalars()) == ["req_bulk", "req_orm"]


async def test_a_row_whose_key_exists_is_skipped(services: Services) -> None:
    org = await _org(services)
    async with Writer(services) as bulk:
        await bulk([_row(org, "req_1"), _row(org, "req_2")])
        await bulk([_row(org, "req_2", output_tokens=1), _row(org, "req_3")])
    rows = await _rows(services)
    assert [r["request_id"] for r in rows] == ["req_1", "req_2", "req_3"]
    assert rows[1]["output_tokens"] == 2**40


async def test_a_batch_with_a_bad_row_writes_nothing_and_says_so(services: Services) -> None:
    org = await _org(services)
    async with Writer(services) as bulk:
        with pytest.raises(StoreUnavailable, match="cannot be written"):
            await bulk([_row(org, "req_good"), _row("org_missing", "req_bad")])
        assert await _count(services) == 0
        await bulk([_row(org, "req_good")])  # the writer is still usable afterwards
    assert await _count(services) == 1


async def test_batches_interleave_with_the_stores_own_writers(services: Services) -> None:
    org = await _org(services)

    async def orm_writes(n: int) -> None:
        for i in range(n):
            async with services.store.write() as conn:
                await conn.execute(insert(usage_records).values(_row(org, f"orm_{i:03}")))

    async def bulk_writes(bulk: Writer, n: int) -> None:
        for i in range(n):
            await bulk([_row(org, f"bulk_{i:03}_{j}") for j in range(5)])

    async with Writer(services) as bulk:
        await asyncio.gather(orm_writes(40), bulk_writes(bulk, 40))
    assert await _count(services) == 40 + 40 * 5


async def test_the_writer_survives_a_tick_it_cannot_build(services: Services) -> None:
    org = await _org(services)
    writer = LedgerWriter(services.store)
    writer.start()
    try:
        broken = _row(org, "req_broken", latency_ms=object())  # no driver takes it
        with pytest.raises(StoreUnavailable, match=r"(not|cannot be) written"):
            await writer.record(broken)
        await writer.record(_row(org, "req_fine"))  # the writer still runs
    finally:
        await writer.stop()
    assert [r["request_id"] for r in await _rows(services)] == ["req_fine"]


class CuttableProxy:
    """A TCP proxy to PostgreSQL whose connections can be made dead without the client
    knowing: after ``cut()``, what a client sends next is answered with a reset."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._cut = False
        self.port = 0
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self._cut = True

    async def close(self) -> None:
        self._server.close()
        for client, server in self._pairs:
            client.transport.abort()
            server.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._pairs.append((writer, up_writer))
        cut_pair = False

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: bool) -> None:
            nonlocal cut_pair
            while data := await src.read(65536):
                if client and self._cut and not cut_pair:
                    cut_pair = True
                    self._cut = False  # the next connection is a new, healthy one
                    writer.transport.abort()  # the client's data is met with a reset
                    up_writer.transport.abort()
                    return
                dst.write(data)
            dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, True), pipe(up_reader, writer, False), return_exceptions=True
        )


async def test_a_lost_postgresql_connection_is_replaced_and_the_tick_written(
    services: Services,
) -> None:
    """The writer keeps its own connection: if it died while idle, unnoticed (a server
    restart, a proxy's timeout), the next tick connects again instead of failing its calls."""
    if services.store.dialect != "postgresql":
        pytest.skip("the writer's own connection is PostgreSQL's")
    org = await _org(services)
    url = make_url(services.store.url)
    proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    store = Store(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    writer = LedgerWriter(store)
    writer.start()
    try:
        await writer.record(_row(org, "req_before"))
        proxy.cut()
        await writer.record(_row(org, "req_after"))
        assert proxy.connections == 2
    finally:
        await writer.stop()
        await store.dispose()
        await proxy.close()
    assert [r["request_id"] for r in await _rows(services)] == ["req_after", "req_before"]


async def test_a_write_lock_held_by_another_process_is_waited_for_off_the_event_loop(
    services: Services,
) -> None:
    """SQLite: the writer's transactions run on the event loop's thread, never waiting there.
    When another process holds the write lock, the tick waits for it on the writer's thread:
    it is written once the lock is free, and the loop goes on serving meanwhile."""
    if services.store.dialect != "sqlite":
        pytest.skip("SQLite's one write lock")
    org = await _org(services)
    other = sqlite3.connect(sqlite_path(services.store), isolation_level=None)
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    async with Writer(services) as bulk:
        await bulk([_row(org, "req_first")])  # the writer's own connection is open
        other.execute("BEGIN IMMEDIATE")
        beating = asyncio.create_task(heartbeat())
        waiting = asyncio.create_task(bulk([_row(org, "req_waited")]))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # waiting for the lock, not failed
        assert beats >= 20  # and the loop was free meanwhile
        other.execute("COMMIT")
        await waiting
        beating.cancel()
    other.close()
    assert [r["request_id"] for r in await _rows(services)] == ["req_first", "req_waited"]


async def test_the_wal_is_checkpointed_while_the_writer_writes(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: the writer's connection does not checkpoint (that could make the loop wait on
    the disk); the writer checkpoints on its thread every so many transactions, so the WAL
    starts over instead of growing without bound."""
    if services.store.dialect != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    monkeypatch.setattr(bulk_module, "CHECKPOINT_EVERY", 8)
    org = await _org(services)
    path = sqlite_path(services.store)
    async with Writer(services) as bulk:
        for i in range(200):
            await bulk([_row(org, f"req_{i:03}_{j}") for j in range(4)])
    # The WAL holds the pages written since it last started over: far fewer than 200
    # transactions' worth.
    probe = sqlite3.connect(path, isolation_level=None)
    busy, in_wal, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    probe.close()
    assert busy == 0
    assert await _count(services) == 800
    assert 0 <= in_wal < 8 * 20, in_wal

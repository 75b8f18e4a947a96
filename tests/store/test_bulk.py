"""BulkInsert stores what SQLAlchemy would, skips conflicts, and writes a batch atomically."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from pilothouse.errors import StoreUnavailable
from pilothouse.gateway.recorder import UsageRecorder
from pilothouse.gateway.tables import usage_records
from pilothouse.services import Services
from pilothouse.store.bulk import BulkInsert

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


async def test_rows_read_back_as_sqlalchemys_own_rows_do(services: Services) -> None:
    org = await _org(services)
    bulk = BulkInsert(services.store, usage_records, key="request_id")
    try:
        await bulk([_row(org, "req_bulk")])
    finally:
        await bulk.close()
    async with services.store.write() as conn:
        await conn.execute(insert(usage_records).values(_row(org, "req_orm")))
    bulk_row, orm_row = await _rows(services)
    assert bulk_row == {**orm_row, "request_id": "req_bulk"}
    assert bulk_row["created_at"] == WHEN
    # Stored alike, so range queries and ordering treat both rows the same.
    async with services.store.read() as conn:
        since = WHEN - timedelta(microseconds=1)
        found = await conn.execute(
            select(usage_records.c.request_id).where(usage_records.c.created_at > since)
        )
        assert sorted(found.scalars()) == ["req_bulk", "req_orm"]


async def test_a_row_whose_key_exists_is_skipped(services: Services) -> None:
    org = await _org(services)
    bulk = BulkInsert(services.store, usage_records, key="request_id")
    try:
        await bulk([_row(org, "req_1"), _row(org, "req_2")])
        await bulk([_row(org, "req_2", output_tokens=1), _row(org, "req_3")])
    finally:
        await bulk.close()
    rows = await _rows(services)
    assert [r["request_id"] for r in rows] == ["req_1", "req_2", "req_3"]
    assert rows[1]["output_tokens"] == 2**40


async def test_a_batch_with_a_bad_row_writes_nothing_and_says_so(services: Services) -> None:
    org = await _org(services)
    bulk = BulkInsert(services.store, usage_records, key="request_id")
    try:
        with pytest.raises(StoreUnavailable, match="cannot be written"):
            await bulk([_row(org, "req_good"), _row("org_missing", "req_bad")])
        assert await _count(services) == 0
        await bulk([_row(org, "req_good")])  # the writer is still usable afterwards
    finally:
        await bulk.close()
    assert await _count(services) == 1


async def test_batches_interleave_with_the_stores_own_writers(services: Services) -> None:
    org = await _org(services)
    bulk = BulkInsert(services.store, usage_records, key="request_id")

    async def orm_writes(n: int) -> None:
        for i in range(n):
            async with services.store.write() as conn:
                await conn.execute(insert(usage_records).values(_row(org, f"orm_{i:03}")))

    async def bulk_writes(n: int) -> None:
        for i in range(n):
            await bulk([_row(org, f"bulk_{i:03}_{j}") for j in range(5)])

    try:
        await asyncio.gather(orm_writes(40), bulk_writes(40))
    finally:
        await bulk.close()
    assert await _count(services) == 40 + 40 * 5


async def test_the_recorder_survives_a_batch_it_cannot_build(services: Services) -> None:
    org = await _org(services)
    recorder = UsageRecorder(services.store)
    recorder.start()
    try:
        broken = _row(org, "req_broken")
        del broken["latency_ms"]
        with pytest.raises(StoreUnavailable, match="usage rows not written"):
            await recorder.record(broken)
        await recorder.record(_row(org, "req_fine"))  # the writer still runs
    finally:
        await recorder.stop()
    assert [r["request_id"] for r in await _rows(services)] == ["req_fine"]

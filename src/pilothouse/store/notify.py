"""Cache invalidation across replicas.

A change that makes cached state stale calls :meth:`Invalidations.publish` inside its write
transaction. Local subscribers run right after that transaction commits (so the node that made
the change never serves the old state again); on PostgreSQL a ``NOTIFY`` sent in the same
transaction reaches every other replica when it commits. If a replica's listening connection
drops, it drops all its caches and serves uncached until it is listening again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.store.engine import Store, after_commit

CHANNEL = "pilothouse_invalidate"
ALL = "*"

log = logging.getLogger(__name__)

Subscriber = Callable[[str, str], None]
"""Called with (kind, ref); kind ``*`` means drop everything."""


class Invalidations:
    """Publishes invalidations locally after commit and, on PostgreSQL, to other replicas."""

    def __init__(self, store: Store, *, reconnect_seconds: float = 0.5) -> None:
        self._store = store
        self._subscribers: list[Subscriber] = []
        self._reconnect_seconds = reconnect_seconds
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._stopping = False
        if store.dialect == "sqlite":
            self._listening.set()

    @property
    def listening(self) -> bool:
        """Whether remote invalidations are being received (always true on SQLite)."""
        return self._listening.is_set()

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber`` for every invalidation, local or remote."""
        self._subscribers.append(subscriber)

    async def publish(self, conn: AsyncConnection, kind: str, ref: str) -> None:
        """Mark ``kind``/``ref`` stale once the transaction on ``conn`` commits."""
        after_commit(conn, lambda: self._deliver(kind, ref))
        if self._store.dialect == "postgresql":
            payload = json.dumps({"kind": kind, "ref": ref})
            await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})

    def _deliver(self, kind: str, ref: str) -> None:
        for subscriber in self._subscribers:
            subscriber(kind, ref)

    async def start(self) -> None:
        """Begin listening for other replicas' invalidations (PostgreSQL only)."""
        if self._store.dialect != "postgresql":
            return
        self._task = asyncio.create_task(self._listen_forever(), name="pilothouse-invalidations")
        try:
            await asyncio.wait_for(self._listening.wait(), timeout=10)
        except TimeoutError:
            log.warning("not yet listening for invalidations; caches are bypassed until then")

    async def stop(self) -> None:
        """Stop listening."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen_forever(self) -> None:
        import asyncpg

        url = make_url(self._store.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self._stopping:
            conn = None
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                # Anything published while we were not listening is unknown: drop it all.
                self._deliver(ALL, ALL)
                self._listening.set()
                await lost.wait()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("invalidation listener lost its connection: %s", exc)
            finally:
                self._listening.clear()
                self._deliver(ALL, ALL)
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(self._reconnect_seconds)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
            self._deliver(str(data["kind"]), str(data["ref"]))
        except (ValueError, KeyError, TypeError):
            self._deliver(ALL, ALL)

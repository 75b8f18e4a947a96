"""Group commit: callers hand in items and resume once the transaction holding theirs commits.

Under load many callers share one transaction; alone, a caller waits only for its own (and for
``gather_turns`` turns of the event loop, in which callers made ready alongside it join). A batch
that fails for any reason fails each of its callers with StoreUnavailable (no caller waits
forever) and the writer goes on with the next batch. Subclasses say how a batch is written.

An item nobody needs to wait for (``enqueue``) may be held apart (``lazy_seconds``,
``lazy_batch``) and written with the others held, in a batch larger than the callers who wait
make; ``drained`` waits until every item queued before it has been written.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Generic, TypeVar

from pilothouse.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 256


class GroupCommit(Generic[T]):
    """Batches submitted items into one write each; ``await submit(item)`` returns once the
    batch holding ``item`` has committed."""

    name = "group-commit"
    # Turns of the event loop the writer lets pass between being woken by an item and taking
    # the batch: callers made ready in the same turn as the writer (the calls that arrived or
    # ended in one read of the sockets, or that one batch's commit woke) queue theirs first
    # and share the batch instead of each paying for a write of their own.
    gather_turns = 0

    # Items handed in with ``enqueue`` (which nobody waits for) are held apart until
    # ``lazy_batch`` of them are held or the first has been held ``lazy_seconds``; then they all
    # join the queue and wake the writer, so that they are written together (0 seconds: each
    # joins at once).
    lazy_seconds = 0.0
    lazy_batch = 1

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self._max_batch = max_batch
        # Each item with its caller's future (None: nobody waits for it).
        self._pending: list[tuple[T, asyncio.Future[None] | None]] = []
        self._lazies: list[tuple[T, None]] = []  # enqueued, not yet queued (see lazy_seconds)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._lazy: asyncio.TimerHandle | None = None
        self._flushing = False
        self._flushes = 0  # batches finished, written or failed
        self._drains: list[tuple[int, asyncio.Future[None]]] = []  # (batches to wait for, ...)

    def start(self) -> None:
        """Begin the writer task."""
        self._stopping = False
        # Kept: on Python 3.11 ``asyncio.get_running_loop()`` asks the kernel for the pid.
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Write what is queued, then stop (a batch being written is finished, not cancelled:
        its callers would never hear how it ended)."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._release()
        while self._pending:
            await self._flush()
        await self._close()

    async def submit(self, item: T) -> None:
        """Queue ``item``; return once it is committed (raise StoreUnavailable if not)."""
        if self._task is None or self._loop is None:
            raise StoreUnavailable(f"the {self.name} writer is not running")
        # A caller that goes away (a cancelled request) cancels only its future: the item is
        # written with its batch all the same. If the outcome came first, nobody reads it.
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending.append((item, future))
        self._wake.set()
        try:
            await future
        except asyncio.CancelledError:
            _consume(future)  # cancelled after its outcome came: nobody reads it
            raise

    def enqueue(self, item: T) -> None:
        """Queue ``item`` without waiting for it, held with the others so enqueued until
        ``lazy_batch`` are held or ``lazy_seconds`` passed. A failure is logged by the writer;
        ``drained`` waits for it."""
        if self._task is None or self._loop is None:
            raise StoreUnavailable(f"the {self.name} writer is not running")
        if not self.lazy_seconds:  # nothing is ever held: straight to the queue (per call)
            self._pending.append((item, None))
            self._wake.set()
            return
        self._lazies.append((item, None))
        if len(self._lazies) >= self.lazy_batch:
            self._release()
        elif self._lazy is None:
            self._lazy = self._loop.call_later(self.lazy_seconds, self._release)

    def _release(self) -> None:
        """Queue the held items and wake the writer."""
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        if self._lazies:
            self._pending += self._lazies
            self._lazies = []
            self._wake.set()

    async def drained(self) -> None:
        """Return once every item queued before this call has been written, or its batch has
        failed (what a read that must see the items handed to ``enqueue`` waits for)."""
        self._release()
        ahead = len(self._pending)
        # Batches are taken first in, first out, at most ``max_batch`` items each.
        target = self._flushes + (1 if self._flushing else 0) + -(-ahead // self._max_batch)
        if target == self._flushes or self._loop is None:
            return
        future = self._loop.create_future()
        self._drains.append((target, future))
        if ahead:
            self._wake.set()
        await future

    def _enqueue(self, item: T) -> None:
        """Queue ``item``, which nobody awaits, for a batch of its own now."""
        self._pending.append((item, None))
        self._wake.set()

    def _abandoned(self, items: list[T]) -> None:
        """``items`` were written, but their callers went away before hearing so."""

    async def _write(self, items: list[T]) -> None:
        """Write ``items`` in one transaction (raise StoreUnavailable if it did not commit)."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Release what the writer holds (connections, threads) once it has stopped."""

    async def _run(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            for _ in range(self.gather_turns):
                await asyncio.sleep(0)
            self._wake.clear()
            while self._pending:
                await self._flush()

    async def _flush(self) -> None:
        batch = self._pending[: self._max_batch]
        self._pending = self._pending[self._max_batch :]
        self._flushing = True
        try:
            await self._write([item for item, _ in batch])
        except Exception as exc:  # the writer must outlive any batch, and no caller may hang
            if not isinstance(exc, StoreUnavailable):
                log.exception("%s: batch not written (%d items)", self.name, len(batch))
                exc = StoreUnavailable(f"{self.name} not written: {type(exc).__name__}")
            else:
                log.error("%s: batch not written (%d items): %s", self.name, len(batch), exc)
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._flushing = False
            self._flushes += 1
            if self._drains:
                self._release_drains()
        abandoned = []
        for item, future in batch:
            if future is None:
                continue
            if future.cancelled():
                abandoned.append(item)
            elif not future.done():
                future.set_result(None)
        if abandoned:
            self._abandoned(abandoned)

    def _release_drains(self) -> None:
        """Resolve the ``drained`` callers whose batches are all finished."""
        waiting = []
        for target, future in self._drains:
            if target > self._flushes:
                waiting.append((target, future))
            elif not future.done():
                future.set_result(None)
        self._drains = waiting


def _consume(future: asyncio.Future[None]) -> None:
    if future.done() and not future.cancelled():
        future.exception()

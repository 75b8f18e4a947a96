"""Group commit: callers share a batch, each hears how its batch ended, and stopping finishes
what is being written."""

from __future__ import annotations

import asyncio

from pilothouse.store.group import GroupCommit


class Gated(GroupCommit[str]):
    """Writes a batch only once the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()
        self.written: list[list[str]] = []

    async def _write(self, items: list[str]) -> None:
        self.writing.set()
        await self.gate.wait()
        self.written.append(items)


async def test_stop_finishes_the_batch_being_written_and_its_callers_hear_so() -> None:
    writer = Gated()
    writer.start()
    first = asyncio.create_task(writer.submit("a"))
    await writer.writing.wait()  # "a" is being written
    later = asyncio.create_task(writer.submit("b"))  # queued behind it
    stopping = asyncio.create_task(writer.stop())
    await asyncio.sleep(0.01)
    assert not stopping.done()  # the batch in flight is waited for, not cancelled
    writer.gate.set()
    await asyncio.wait_for(asyncio.gather(first, later, stopping), timeout=5)
    assert writer.written == [["a"], ["b"]]

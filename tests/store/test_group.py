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


class Recording(GroupCommit[str]):
    """Records each batch it writes."""

    def __init__(self, gather_turns: int) -> None:
        super().__init__()
        self.gather_turns = gather_turns
        self.written: list[list[str]] = []

    async def _write(self, items: list[str]) -> None:
        self.written.append(items)


async def _submitted_a_turn_apart(writer: Recording) -> list[list[str]]:
    """``a``, then ``b`` from a caller made ready in the turn the writer wakes up in."""
    writer.start()
    await asyncio.sleep(0)  # the writer waits for its first item

    async def one_turn_later() -> None:
        await asyncio.sleep(0)
        await writer.submit("b")

    await asyncio.gather(writer.submit("a"), one_turn_later())
    await writer.stop()
    return writer.written


async def test_a_caller_made_ready_alongside_the_writer_joins_its_batch() -> None:
    """The ledger's writer lets a turn of the event loop pass before it takes a batch, so the
    callers made ready with it share the batch (fewer, larger transactions); without that
    turn the second caller pays for a transaction of its own."""
    assert await _submitted_a_turn_apart(Recording(gather_turns=1)) == [["a", "b"]]
    assert await _submitted_a_turn_apart(Recording(gather_turns=0)) == [["a"], ["b"]]


async def test_items_nobody_waits_for_are_held_and_written_together() -> None:
    """Held apart until ``lazy_batch`` of them are (not riding one by one with the callers who
    wait), or a read wants them."""
    writer = Recording(gather_turns=0)
    writer.lazy_seconds = 60  # longer than the test: only the count or a read releases them
    writer.lazy_batch = 3
    writer.start()
    writer.enqueue("settled 1")
    writer.enqueue("settled 2")
    await writer.submit("reserved")
    assert writer.written == [["reserved"]]
    writer.enqueue("settled 3")  # the third held: all three are queued
    await asyncio.wait_for(writer.drained(), timeout=5)
    assert writer.written == [["reserved"], ["settled 1", "settled 2", "settled 3"]]
    writer.enqueue("alone")
    await asyncio.wait_for(writer.drained(), timeout=5)  # a read takes what is held at once
    assert writer.written[-1] == ["alone"]
    await writer.stop()


class Signalling(Recording):
    """Records each batch and says when one was written."""

    def __init__(self) -> None:
        super().__init__(gather_turns=0)
        self.wrote = asyncio.Event()

    async def _write(self, items: list[str]) -> None:
        await super()._write(items)
        self.wrote.set()


async def test_an_item_held_alone_is_written_once_it_has_waited_lazy_seconds() -> None:
    writer = Signalling()
    writer.lazy_seconds = 0.05
    writer.lazy_batch = 64
    writer.start()
    writer.enqueue("late")
    await asyncio.sleep(0)
    assert writer.written == []  # not a batch of its own at once
    await asyncio.wait_for(writer.wrote.wait(), timeout=5)  # nothing else came: it goes alone
    assert writer.written == [["late"]]
    await writer.stop()


async def test_drained_waits_for_what_was_queued_before_it_even_when_its_batch_fails() -> None:
    writer = Gated()
    writer.start()
    await asyncio.wait_for(writer.drained(), timeout=5)  # nothing queued: at once
    writer.enqueue("a")
    await writer.writing.wait()  # "a" is being written
    writer.enqueue("b")
    drained = asyncio.create_task(writer.drained())
    await asyncio.sleep(0.01)
    assert not drained.done()  # "a" and "b" are not written yet
    writer.gate.set()
    await asyncio.wait_for(drained, timeout=5)
    assert writer.written == [["a"], ["b"]]
    await writer.stop()

    failing = Failing()
    failing.start()
    failing.enqueue("x")
    await asyncio.wait_for(failing.drained(), timeout=5)  # failed, logged: not waited forever
    assert failing.tried == [["x"]]
    await asyncio.wait_for(failing.submit("y"), timeout=5)  # the writer went on
    assert failing.tried == [["x"], ["y"]]
    await failing.stop()


class Failing(GroupCommit[str]):
    """Fails every batch holding ``x``."""

    def __init__(self) -> None:
        super().__init__()
        self.tried: list[list[str]] = []

    async def _write(self, items: list[str]) -> None:
        self.tried.append(items)
        if "x" in items:
            raise RuntimeError("the store went away")


async def test_stopping_writes_what_is_held() -> None:
    writer = Recording(gather_turns=0)
    writer.lazy_seconds = 60  # far longer than the test: only stopping can write it
    writer.lazy_batch = 10
    writer.start()
    writer.enqueue("settled")
    await asyncio.sleep(0)
    assert writer.written == []
    await asyncio.wait_for(writer.stop(), timeout=5)
    assert writer.written == [["settled"]]

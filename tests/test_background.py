"""Background work (the roll-up pass, the sweeper, ...): a round that fails is logged and the
next round still runs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pilothouse.services import Services


async def test_a_failing_round_is_logged_and_the_work_goes_on(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    rounds: list[int] = []
    done = asyncio.Event()

    async def flaky() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("a bug in the first round")
        done.set()

    with caplog.at_level(logging.ERROR, logger="pilothouse.services"):
        services._every("flaky work", 0.01, flaky)
        await asyncio.wait_for(done.wait(), timeout=5)
    assert len(rounds) >= 2
    (failed,) = [r for r in caplog.records if "flaky work failed" in r.getMessage()]
    assert failed.exc_info is not None and "a bug in the first round" in str(failed.exc_info[1])

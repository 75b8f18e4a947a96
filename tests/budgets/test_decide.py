"""Deciding a tick's reservations in arrival order (``budgets/reserve.py`` ``decide``), also when
the calls are summed per set of budgets because all of them fit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pilothouse.budgets.contexts import Context
from pilothouse.budgets.limits import LimitHit, LimitKind
from pilothouse.budgets.model import Budget, Enforcement, ScopeKind, Window
from pilothouse.budgets.reserve import Ask, BudgetKey, Counter, RateAsk, decide
from pilothouse.errors import BudgetExceeded, RateLimited

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PROJECT = Budget(
    "bud_p", "org_1", "project", ScopeKind.PROJECT, "p", Window.DAY, 1000, Enforcement.HARD
)
ORG = Budget("bud_o", "org_1", "org", ScopeKind.ORG, "", Window.DAY, 1500, Enforcement.HARD)
SOFT = Budget("bud_s", "org_1", "soft", ScopeKind.ORG, "", Window.DAY, 1, Enforcement.SOFT)
BOTH = [(ORG, ("bud_o", 0)), (PROJECT, ("bud_p", 0)), (SOFT, ("bud_s", 0))]
ORG_ONLY = [(ORG, ("bud_o", 0))]
CONTEXT = Context("ctx_test", "{}")  # deciding does not read it


def ask(request_id: str, charged: list[tuple[Budget, BudgetKey]], amount: int) -> Ask:
    keys = tuple(key for _, key in charged)
    return Ask(request_id, amount, keys, (), (), False, charged, [], (), NOW, CONTEXT)


def counters(org: int = 0, project: int = 0) -> dict[BudgetKey, Counter]:
    """Each budget's counter: [spent, reserved, calls]."""
    return {("bud_o", 0): [org, 0, 0], ("bud_p", 0): [project, 0, 0], ("bud_s", 0): [0, 0, 0]}


def test_calls_that_all_fit_are_all_admitted_and_each_counter_moves_by_their_sum() -> None:
    asks = [ask("a", BOTH, 300), ask("b", ORG_ONLY, 400), ask("c", BOTH, 200)]
    asks[1].refusal = BudgetExceeded("from a transaction run before")  # decided again
    spent = counters(org=100)
    decide(asks, spent, {})
    assert [a.refusal for a in asks] == [None, None, None]
    assert spent == {  # a soft budget is over its limit and refuses nothing
        ("bud_o", 0): [100, 900, 0],
        ("bud_p", 0): [0, 500, 0],
        ("bud_s", 0): [0, 500, 0],
    }


def test_calls_that_do_not_all_fit_are_decided_one_by_one_in_arrival_order() -> None:
    # the project has room for 700 of the 800 asked: b is refused, c (after it) fits
    asks = [ask("a", BOTH, 500), ask("b", BOTH, 250), ask("c", BOTH, 50)]
    spent = counters(project=300)
    decide(asks, spent, {})
    assert [type(a.refusal) for a in asks] == [type(None), BudgetExceeded, type(None)]
    assert spent[("bud_p", 0)] == [300, 550, 0]
    assert spent[("bud_o", 0)] == [0, 550, 0]


def test_a_budget_shared_by_two_sets_of_budgets_holds_their_sum() -> None:
    # each set alone fits the org's 1500; together they do not: the last call is refused
    asks = [ask("a", BOTH, 800), ask("b", ORG_ONLY, 800)]
    spent = counters()
    decide(asks, spent, {})
    assert asks[0].refusal is None
    assert isinstance(asks[1].refusal, BudgetExceeded)
    assert spent[("bud_o", 0)] == [0, 800, 0]


@pytest.mark.parametrize("deleted", [("bud_o", 0), ("bud_p", 0)])
def test_a_budget_deleted_since_the_cache_read_it_holds_no_call(deleted: BudgetKey) -> None:
    asks = [ask("a", BOTH, 1200), ask("b", BOTH, 1200)]  # over either limit
    spent = counters()
    del spent[deleted]
    decide(asks, spent, {})
    assert isinstance(asks[1].refusal, BudgetExceeded)  # the other budget still holds
    assert deleted not in spent


def test_calls_that_take_a_rate_limit_are_each_told_the_count_they_left() -> None:
    hit = LimitHit(LimitKind.RPM, "org", 2)
    asks = [ask(rid, ORG_ONLY, 1) for rid in ("a", "b", "c")]
    for one in asks:
        one.rates = [RateAsk(hit, "org_1|rpm|org|0", 1, 120, 60)]
    spent, rates = counters(), {"org_1|rpm|org|0": 0}
    decide(asks, spent, rates)
    assert [a.counts for a in asks] == [[1], [2], []]
    assert isinstance(asks[2].refusal, RateLimited)
    assert rates == {"org_1|rpm|org|0": 2}
    assert spent[("bud_o", 0)] == [0, 2, 0]
